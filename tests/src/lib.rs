//! End-to-end test harness: starts the real `vouch-enclave`, `vouch-host` and `vouch`
//! binaries on loopback (port 0), waits for their readiness lines — never a fixed
//! sleep — and kills them when dropped. Client side of every trust boundary: these
//! tests only observe what a real client or operator would.

// Test harness: panicking with a message is the right failure mode here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod mitm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The workspace's target directory holding the built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/e2e-xxxx -> target/debug
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is not built; run `cargo test --workspace`", p.display());
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The default model (fetched by scripts/fetch-model.sh).
pub fn model() -> PathBuf {
    let p = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "model missing: run scripts/fetch-model.sh");
    p
}

/// The second model, Gemma 3 270M Q4_K_M (a base model: no chat template), when
/// scripts/fetch-model.sh has fetched it (`all` or `gemma3-270m`; the test command does);
/// `None`, said on stderr, when it is absent.
pub fn gemma_model() -> Option<PathBuf> {
    let p = repo().join("models/gemma-3-270m-q4_k_m.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED the Gemma 3 270M part: {} is absent (run scripts/fetch-model.sh all)",
            p.display()
        );
        None
    }
}

/// A running child process whose output lines are collected.
pub struct Proc {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Name for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `program` with `args`.
    pub fn spawn(program: &Path, args: &[&str]) -> Proc {
        Proc::spawn_env(program, args, &[])
    }

    /// Spawns `program` with `args` and these extra environment variables.
    pub fn spawn_env(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        // `vouch` gets the simulated enclave's published policy as in [`vouch`].
        let args = if program.file_name().is_some_and(|n| n == "vouch") {
            with_sim_policy(args)
        } else {
            args.iter().map(|a| a.to_string()).collect()
        };
        let mut cmd = Command::new(program);
        if program.file_name().is_some_and(|n| n == "vouch") {
            isolate_state(&mut cmd);
        }
        let mut child = cmd
            .args(&args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let (m, cv) = &*lines;
                    m.lock().expect("lock").push(line);
                    cv.notify_all();
                }
            });
        }
        Proc { child, lines, name: program.display().to_string() }
    }

    /// Waits until a line contains `needle`; returns the rest of that line after it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut guard = m.lock().expect("lock");
        loop {
            if let Some(l) = guard.iter().find(|l| l.contains(needle)) {
                let rest = &l[l.find(needle).unwrap_or(0) + needle.len()..];
                return rest.split_whitespace().next().unwrap_or("").trim_matches('"').to_owned();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{}: no line containing {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    guard.join("\n")
                );
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before {needle:?}; output:\n{}", self.name, guard.join("\n"));
            }
            guard = cv.wait_timeout(guard, (deadline - now).min(Duration::from_millis(200))).expect("lock").0;
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.0.lock().expect("lock").join("\n")
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A simulated enclave on loopback; returns the process and its `tcp:` address.
pub fn start_enclave(sim_dir: &Path, extra: &[&str]) -> (Proc, String) {
    start_enclave_env(sim_dir, extra, &[])
}

/// [`start_enclave`] with extra environment variables (e.g. the test build's
/// `VOUCH_TEST_LIE_AFTER`, which makes it a lying enclave).
pub fn start_enclave_env(sim_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    start_enclave_model(sim_dir, &model(), extra, env)
}

/// [`start_enclave_env`] serving `model` instead of the default one.
pub fn start_enclave_model(
    sim_dir: &Path,
    model: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, String) {
    let mut args = vec![
        "serve",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--listen",
        "tcp:127.0.0.1:0",
        "--attestation",
        "sim",
        "--sim-dir",
        sim_dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    // Each enclave its own answer log unless the test names one (a restart or fork test
    // does): several enclaves of one identity on one store are refused, and several with
    // one log key but separate stores are a fork (honest replicas on one chip each take
    // their own --log-epoch, as these do).
    let log_dir = fresh_log_dir(sim_dir);
    let epoch = log_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('-').next())
        .unwrap_or("0")
        .to_owned();
    if !extra.contains(&"--log-dir") {
        args.extend_from_slice(&["--log-dir", log_dir.to_str().expect("utf-8 path"), "--log-epoch", &epoch]);
    }
    let mut p = Proc::spawn_env(&bin("vouch-enclave"), &args, env);
    let addr = p.wait_for("vouch-enclave listening on ", Duration::from_secs(300));
    (p, addr)
}

/// A simulated enclave listening on the unix socket `sock` (a restarted one reuses the
/// address, so a host in front of it finds it again), with `extra` arguments.
pub fn spawn_unix_enclave(sim: &Path, sock: &Path, extra: &[&str]) -> Proc {
    let _ = std::fs::remove_file(sock);
    let listen = format!("unix:{}", sock.display());
    let model = model();
    let mut args = vec![
        "serve",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--listen",
        &listen,
        "--attestation",
        "sim",
        "--sim-dir",
        sim.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(&bin("vouch-enclave"), &args);
    p.wait_for("vouch-enclave listening on ", Duration::from_secs(300));
    p
}

/// A directory under `sim_dir` no enclave of this test process has used.
pub fn fresh_log_dir(sim_dir: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sim_dir.join(format!("answer-log-{}-{n}", std::process::id()))
}

/// A host forwarding to `enclaves`; returns the process and its `HOST:PORT`.
pub fn start_host(enclaves: &[&str]) -> (Proc, String) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    for e in enclaves {
        args.push("--enclave");
        args.push(e);
    }
    let mut p = Proc::spawn(&bin("vouch-host"), &args);
    let addr = p.wait_for("vouch-host listening on ", Duration::from_secs(60));
    (p, addr)
}

/// `vouch proxy` to the host at `host_addr`, trusting the simulated root in `sim`, with
/// `extra` arguments (e.g. `--policy FILE`); returns the process and its `HOST:PORT`.
pub fn start_proxy(host_addr: &str, sim: &Path, extra: &[&str]) -> (Proc, String) {
    let root = sim.join("sim-ark.pem");
    let url = format!("https://{host_addr}");
    let mut args = vec![
        "proxy",
        "--url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--trust-sim-root",
        root.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let mut proxy = Proc::spawn(&bin("vouch"), &args);
    let addr = proxy.wait_for("vouch proxy listening on ", Duration::from_secs(60));
    (proxy, addr)
}

/// Runs `cmd` to completion, killing it (and failing the test) after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Runs `vouch` to completion.
///
/// Code identity must be pinned (or `--allow-any-code` given), so a call that trusts a
/// simulated root `DIR/sim-ark.pem` and names no `--policy` gets `DIR/sim-policy.toml`
/// — the policy a simulated enclave publishes, pinning the measurement it reports —
/// when that file exists, as the demo does. Tests of the refusal itself pass
/// `--policy` or `--allow-any-code`, or use a directory without that file.
pub fn vouch(args: &[&str]) -> Output {
    vouch_command(args).output().expect("run vouch")
}

/// `vouch` with `args` (and the simulated enclave's policy, as at [`vouch`]), not yet
/// started: for callers that spawn it or pipe its output.
pub fn vouch_command(args: &[&str]) -> Command {
    let mut c = Command::new(bin("vouch"));
    isolate_state(&mut c);
    c.args(with_sim_policy(args));
    c
}

/// Gives a `vouch` process a state directory (seen answer-log checkpoints) of its own:
/// every test enclave has the same identity (the TEST-ONLY keys), so clients sharing one
/// store across tests would — rightly — see their separate logs as forks of one. A test
/// that wants a client to remember across runs passes `--state-dir`.
pub fn isolate_state(cmd: &mut Command) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vouch-test-state-{}-{n}", std::process::id()));
    cmd.env("VOUCH_STATE_DIR", dir);
}

/// `args` plus `--policy DIR/sim-policy.toml` as described at [`vouch`].
pub fn with_sim_policy(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let named = |flag: &str| args.contains(&flag);
    if named("--policy") || named("--allow-any-code") {
        return out;
    }
    let root = args.iter().position(|a| *a == "--trust-sim-root").and_then(|i| args.get(i + 1));
    if let Some(policy) = root.and_then(|r| Path::new(r).parent()).map(|d| d.join("sim-policy.toml")) {
        if policy.exists() {
            out.push("--policy".into());
            out.push(policy.to_string_lossy().into_owned());
        }
    }
    out
}

/// stdout + stderr of an output, for assertions and messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A plain-HTTP/1.1 request to `addr` (a `vouch proxy`, on loopback), `connection: close`;
/// the whole response, read for at most `timeout` between bytes.
pub fn plain_http(addr: &str, method: &str, path: &str, body: &str, timeout: Duration) -> mitm::RawResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect proxy");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    mitm::parse_response(&raw)
}

/// A chat answer through `vouch proxy` at `addr` (status 200 asserted): its text (the
/// deltas concatenated, for a stream) and its final JSON — the whole answer, or the
/// stream's last event before `[DONE]` (the one carrying receipt and verdict).
pub fn proxy_answer(addr: &str, body: &serde_json::Value) -> (String, serde_json::Value) {
    use serde_json::Value;
    let r = plain_http(addr, "POST", "/v1/chat/completions", &body.to_string(), Duration::from_secs(300));
    assert_eq!(r.status, 200, "{}", r.text());
    if body["stream"] != true {
        let v: Value = serde_json::from_slice(&r.body).expect("JSON answer");
        let text = v["choices"][0]["message"]["content"].as_str().expect("content").to_owned();
        return (text, v);
    }
    let mut text = String::new();
    let mut last = Value::Null;
    for data in r.text().lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            return (text, last);
        }
        let v: Value = serde_json::from_str(data).expect("JSON chunk");
        text.push_str(v.pointer("/choices/0/delta/content").and_then(Value::as_str).unwrap_or(""));
        last = v;
    }
    panic!("stream without [DONE]: {}", r.text());
}
