//! Test support for the `vouch-host` integration tests: start the real binary on
//! `127.0.0.1:0` and learn its addresses from its readiness log lines; small backend
//! servers standing in for enclaves (which on the real system would only ever see the
//! client's TLS ciphertext — these see whatever the test sends).

#![allow(dead_code)]
// each test file uses a different subset
// Test helpers: a failed step should abort the test with a message, which is what these do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// How long the host may take to print its readiness line (includes one health check
/// round; generous because the test machine is shared with builds).
pub const STARTUP: Duration = Duration::from_secs(30);
/// "Promptly", for closes and refusals the tests assert.
pub const PROMPT: Duration = Duration::from_secs(2);

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running `vouch-host` process, killed on drop.
pub struct Host {
    child: Child,
    /// The client listener's bound address.
    pub addr: SocketAddr,
    /// The admin endpoint's bound address.
    pub admin: SocketAddr,
    lines: Lines,
}

impl Host {
    /// Starts `vouch-host --listen 127.0.0.1:0 --admin 127.0.0.1:0 ARGS...` and waits for
    /// its readiness line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_raw(&[&["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], args].concat())
    }

    /// Starts `vouch-host ARGS...` exactly as given and waits for its readiness line.
    pub fn start_raw(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vouch-host"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vouch-host");
        let stderr = child.stderr.take().expect("stderr piped");
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        // Keep draining stderr for the life of the process so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (store, cv) = &*sink;
                store.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        let mut host =
            Self { child, addr: "0.0.0.0:0".parse().unwrap(), admin: "0.0.0.0:0".parse().unwrap(), lines };
        let ready = host.wait_for_log("vouch-host listening on ", STARTUP);
        host.addr = addr_after(&ready, "vouch-host listening on ");
        if let Some(admin) = host.find_log("vouch-host admin listening on ") {
            host.admin = addr_after(&admin, "vouch-host admin listening on ");
        }
        host
    }

    /// The first log line containing `needle`, if any yet.
    pub fn find_log(&self, needle: &str) -> Option<String> {
        let (store, _) = &*self.lines;
        store.lock().unwrap().iter().find(|l| l.contains(needle)).cloned()
    }

    /// Number of log lines containing `needle` so far.
    pub fn count_log(&self, needle: &str) -> usize {
        let (store, _) = &*self.lines;
        store.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// All log output so far (for failure messages).
    pub fn logs(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// Blocks until a log line contains `needle` (event-driven: wakes on each new line).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (store, cv) = &*self.lines;
        let mut guard = store.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no log line containing {needle:?} within {timeout:?}; logs:\n{}",
                guard.join("\n")
            );
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, polling.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vouch-host did not exit within {timeout:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET path` on the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// The current value of one metric sample, e.g. `vouch_host_connections_open`.
    pub async fn metric(&self, sample: &str) -> u64 {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200);
        metric_value(&body, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{body}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, needle: &str) -> SocketAddr {
    let rest = &line[line.find(needle).unwrap() + needle.len()..];
    let token = rest.split_whitespace().next().unwrap();
    token.parse().unwrap_or_else(|e| panic!("bad address {token:?} in {line:?}: {e}"))
}

/// A one-shot HTTP/1.1 GET with a bounded wait.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        resp
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), fut).await.expect("admin request timed out");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Finds `sample value` in Prometheus text.
pub fn metric_value(body: &str, sample: &str) -> Option<u64> {
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `check` every 20 ms until it is true or `timeout` passes (then panics with `what`).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that the peer closes `s` (EOF or reset) within `within`, without sending data.
pub async fn assert_closed_within(s: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected close, got {n} bytes"),
        Err(_) => panic!("connection not closed within {within:?}"),
    }
}

/// Writes `msg` and reads exactly as many bytes back (for echo backends).
pub async fn ping(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    back
}

/// Deterministic pseudo-random bytes (xorshift64), so payload bugs are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a test backend does with each connection.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Echo every byte back.
    Echo,
    /// Send `NAME\n`, then echo.
    Named(&'static str),
    /// Read until EOF, then send this many `x` bytes and close.
    Fixed(usize),
}

/// A TCP server standing in for an enclave. `kill` drops its listener and every
/// connection, like a crashed enclave.
pub struct Backend {
    /// Bound address.
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Backend {
    /// Starts on a fresh loopback port.
    pub async fn start(behavior: Behavior) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behavior).await
    }

    /// Starts on `addr` (retrying briefly while a just-killed listener is released).
    pub async fn start_on(addr: SocketAddr, behavior: Behavior) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&conns);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let task = tokio::spawn(serve_backend_conn(stream, behavior.clone()));
                registry.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, accept, conns }
    }

    /// The `--enclave` argument for this backend.
    pub fn enclave_arg(&self) -> String {
        format!("tcp:{}", self.addr)
    }

    /// The `enclave="..."` metric label value.
    pub fn label(&self) -> String {
        format!("{{enclave=\"tcp:{}\"}}", self.addr)
    }

    /// Stops accepting and drops every open connection.
    pub fn kill(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve_backend_conn(mut stream: TcpStream, behavior: Behavior) {
    let _ = stream.set_nodelay(true);
    match behavior {
        Behavior::Echo => echo(stream).await,
        Behavior::Named(name) => {
            if stream.write_all(format!("{name}\n").as_bytes()).await.is_ok() {
                echo(stream).await;
            }
        }
        Behavior::Fixed(n) => {
            let mut sink = Vec::new();
            if stream.read_to_end(&mut sink).await.is_ok() {
                let _ = stream.write_all(&vec![b'x'; n]).await;
                let _ = stream.shutdown().await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let (mut r, mut w) = stream.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// A free loopback port with nothing listening on it (bound, then released).
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Reads the backend's `NAME\n` greeting.
pub async fn read_name(s: &mut TcpStream) -> String {
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("greeting timed out")
            .unwrap();
        assert_eq!(n, 1, "closed before greeting");
        if byte[0] == b'\n' {
            return String::from_utf8(name).unwrap();
        }
        name.push(byte[0]);
    }
}
