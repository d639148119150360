//! Helpers the benchmark drivers share: command-line flags, starting a server process and
//! waiting for its readiness line, and reading a process's memory figures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vouch_client::client::{ClientConfig, VouchClient};
use vouch_client::policy::ClientPolicy;

/// The value after flag `name` on the command line, else `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// Starts a process and returns it with the first word after `needle` on its output
/// (stdout or stderr); the rest of its output is drained in the background.
pub fn start(bin: &Path, args: &[&str], needle: &str) -> (Child, String) {
    let mut child =
        Command::new(bin).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (tx, rx) = mpsc::channel();
    for s in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(s).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let l = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("readiness line");
        if let Some(i) = l.find(needle) {
            let rest = l[i + needle.len()..].split_whitespace().next().unwrap_or("").to_owned();
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, rest);
        }
    }
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn vm_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A client for the simulated enclave whose sim directory is `sim`, through the host at
/// `host_addr`: it pins the policy the simulator publishes (its measurement) and trusts
/// only the simulated root the simulator wrote.
pub fn sim_client(sim: &Path, host_addr: &str) -> VouchClient {
    let policy = ClientPolicy::load(&sim.join("sim-policy.toml")).expect("sim policy");
    let mut cfg = ClientConfig::new(&format!("https://{host_addr}"), policy);
    let root = std::fs::read(sim.join("sim-ark.pem")).expect("sim root");
    for p in vouch_attestation::Product::ALL {
        // Only the product the simulated root names is accepted; the others refuse.
        let _ = cfg.anchors.dangerous_add_simulated_root(&root, p);
    }
    VouchClient::new(cfg).expect("client")
}
