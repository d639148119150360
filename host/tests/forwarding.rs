//! Integration tests for `vouch-host`, the UNTRUSTED forwarder: each test starts the real
//! binary on `127.0.0.1:0`, waits for its readiness log line, and drives it with small
//! backend servers standing in for enclaves. No fixed ports, no fixed sleeps for readiness.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags that make health checking fast enough for tests.
const FAST_HEALTH: [&str; 8] = [
    "--health-interval-ms",
    "100",
    "--health-timeout-ms",
    "500",
    "--unhealthy-after",
    "1",
    "--healthy-after",
    "1",
];

fn args<'a>(extra: &[&'a str], backends: &'a [String]) -> Vec<&'a str> {
    let mut v: Vec<&str> = extra.to_vec();
    for b in backends {
        v.push("--enclave");
        v.push(b);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_exactly_including_8_mib() {
    let backend = Backend::start(Behavior::Echo).await;
    let enclaves = [backend.enclave_arg()];
    let host = Host::start(&args(&[], &enclaves));

    let mut c = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut c, b"hello enclave").await, b"hello enclave");

    // 8 MiB each way, written and read concurrently (an echo cannot buffer it all).
    let payload = pattern(8 << 20, 0x5eed);
    let (mut r, mut w) = c.into_split();
    let to_send = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        w.shutdown().await.unwrap(); // half-close must propagate through the host
    });
    let mut back = Vec::with_capacity(payload.len());
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back))
        .await
        .expect("8 MiB echo timed out")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ from sent bytes");
    // The host never logs payload: no line contains our greeting.
    assert_eq!(host.count_log("hello enclave"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_enclave_round_trip() {
    let path = std::env::temp_dir().join(format!(
        "vouch-host-test-{}-{}.sock",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let enclaves = [format!("unix:{}", path.display())];
    let host = Host::start(&args(&[], &enclaves));
    let mut c = TcpStream::connect(host.addr).await.unwrap();
    let msg = pattern(100_000, 7);
    let back = ping(&mut c, &msg).await;
    assert!(back == msg);
    server.abort();
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_closes_its_clients_traffic_moves_and_returns() {
    let a = Backend::start(Behavior::Named("A")).await;
    let b = Backend::start(Behavior::Named("B")).await;
    let enclaves = [a.enclave_arg(), b.enclave_arg()];
    let host = Host::start(&args(&FAST_HEALTH, &enclaves));

    let mut c1 = TcpStream::connect(host.addr).await.unwrap();
    let first = read_name(&mut c1).await;
    assert_eq!(ping(&mut c1, b"before").await, b"before");
    let (victim, survivor) = if first == "A" { (&a, &b) } else { (&b, &a) };
    let survivor_name = if first == "A" { "B" } else { "A" };
    let victim_addr = victim.addr;
    let victim_label = victim.label();
    victim.kill();

    // The client of the dead backend gets a clean close (EOF or reset), promptly.
    assert_closed_within(&mut c1, PROMPT).await;

    // New clients all reach the survivor (fail-over even before the health check ejects).
    for _ in 0..4 {
        let mut c = TcpStream::connect(host.addr).await.unwrap();
        assert_eq!(read_name(&mut c).await, survivor_name);
        assert_eq!(ping(&mut c, b"after").await, b"after");
    }
    let healthy = format!("vouch_host_enclave_healthy{victim_label}");
    wait_until("victim ejected", Duration::from_secs(10), || async { host.metric(&healthy).await == 0 })
        .await;
    assert_eq!(host.admin_get("/readyz").await.0, 200, "survivor keeps us ready");

    // The victim comes back on the same port; health checks return it to rotation.
    let revived = Backend::start_on(victim_addr, Behavior::Named(if first == "A" { "A" } else { "B" })).await;
    wait_until("victim back in rotation", Duration::from_secs(10), || async {
        host.metric(&healthy).await == 1
    })
    .await;
    // Least-loaded routing: with one connection held on one backend, the next goes to
    // the other — so two held connections cover both backends, the revived one included.
    let mut h1 = TcpStream::connect(host.addr).await.unwrap();
    let n1 = read_name(&mut h1).await;
    let mut h2 = TcpStream::connect(host.addr).await.unwrap();
    let n2 = read_name(&mut h2).await;
    let mut names = [n1, n2];
    names.sort();
    assert_eq!(names, ["A", "B"], "logs:\n{}", host.logs());
    assert!(host.find_log("enclave ejected").is_some());
    assert!(host.find_log("back in rotation").is_some());
    let _ = survivor;
    drop(revived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_closes_promptly_and_readyz_is_503() {
    let port = dead_port().await;
    let enclaves = [format!("tcp:{port}")];
    let host = Host::start(&args(&FAST_HEALTH, &enclaves));

    assert_eq!(host.admin_get("/healthz").await.0, 200);
    let (status, body) = host.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");

    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(host.addr).await.unwrap();
    c.write_all(b"\x16\x03\x01 pretend ClientHello").await.unwrap();
    assert_closed_within(&mut c, PROMPT).await;
    assert!(started.elapsed() < PROMPT);
    assert_eq!(host.metric("vouch_host_connections_rejected_total{reason=\"no_healthy_enclave\"}").await, 1);
    host.wait_for_log("no healthy enclave", PROMPT);

    // An enclave appearing makes the host ready and usable.
    let backend = Backend::start_on(port, Behavior::Echo).await;
    wait_until("readyz 200", Duration::from_secs(10), || async { host.admin_get("/readyz").await.0 == 200 })
        .await;
    let mut c = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut c, b"ok now").await, b"ok now");
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_half_open_and_slow_clients_do_not_disturb_others() {
    let backend = Backend::start(Behavior::Echo).await;
    let enclaves = [backend.enclave_arg()];
    let host = Host::start(&args(&["--idle-timeout-ms", "1500"], &enclaves));

    // Half-open: connect and say nothing.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(host.addr).await.unwrap());
    }
    // Garbage: random bytes, never read back.
    let mut garbage = Vec::new();
    for i in 0..5 {
        let mut g = TcpStream::connect(host.addr).await.unwrap();
        g.write_all(&pattern(64 * 1024, i)).await.unwrap();
        garbage.push(g);
    }
    // Slow: one byte every 20 ms.
    let slow_addr = host.addr;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(slow_addr).await.unwrap();
        for b in b"slowly but surely" {
            s.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut back = [0u8; 17];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"slowly but surely");
    });

    // A well-behaved client is unaffected: many quick round trips.
    let mut good = TcpStream::connect(host.addr).await.unwrap();
    for i in 0..100u32 {
        let msg = format!("request {i}");
        let t = std::time::Instant::now();
        assert_eq!(ping(&mut good, msg.as_bytes()).await, msg.as_bytes());
        assert!(t.elapsed() < Duration::from_millis(500), "round trip {i} slow");
    }
    slow.await.unwrap();

    // Idle connections are closed by the idle timeout, not left to pile up.
    for s in &mut silent {
        assert_closed_within(s, Duration::from_secs(5)).await;
    }
    assert!(host.metric("vouch_host_errors_total{kind=\"idle_timeout\"}").await >= 5);
    // ...while the good client, still active, keeps working.
    assert_eq!(ping(&mut good, b"still here").await, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_enforced() {
    let backend = Backend::start(Behavior::Echo).await;
    let enclaves = [backend.enclave_arg()];
    let host = Host::start(&args(&["--max-connections", "2"], &enclaves));

    let mut c1 = TcpStream::connect(host.addr).await.unwrap();
    let mut c2 = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut c1, b"one").await, b"one");
    assert_eq!(ping(&mut c2, b"two").await, b"two");

    let mut c3 = TcpStream::connect(host.addr).await.unwrap();
    assert_closed_within(&mut c3, PROMPT).await;
    assert_eq!(host.metric("vouch_host_connections_rejected_total{reason=\"connection_limit\"}").await, 1);
    assert_eq!(host.metric("vouch_host_connections_open").await, 2);

    // Freeing a slot lets the next client in.
    drop(c1);
    wait_until("slot freed", Duration::from_secs(5), || async {
        host.metric("vouch_host_connections_open").await == 1
    })
    .await;
    let mut c4 = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut c4, b"four").await, b"four");
    assert_eq!(ping(&mut c2, b"two again").await, b"two again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_and_refuses_new() {
    let backend = Backend::start(Behavior::Echo).await;
    let enclaves = [backend.enclave_arg()];
    let mut host = Host::start(&args(&["--drain-timeout-ms", "20000"], &enclaves));

    let mut inflight = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut inflight, b"before").await, b"before");

    host.sigterm();
    host.wait_for_log("draining", Duration::from_secs(5));

    // New clients are refused by the kernel: the listener is closed.
    let refused = TcpStream::connect(host.addr).await;
    assert!(refused.is_err(), "connect after SIGTERM should be refused");
    assert_eq!(host.admin_get("/readyz").await.0, 503);

    // The in-flight connection keeps working until the client is done.
    assert_eq!(ping(&mut inflight, b"during drain").await, b"during drain");
    inflight.shutdown().await.unwrap();
    let mut rest = Vec::new();
    inflight.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let status = host.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(host.find_log("all connections drained").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_stragglers() {
    let backend = Backend::start(Behavior::Echo).await;
    let enclaves = [backend.enclave_arg()];
    let mut host = Host::start(&args(&["--drain-timeout-ms", "300"], &enclaves));
    let mut straggler = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut straggler, b"hi").await, b"hi");
    host.sigterm();
    assert_closed_within(&mut straggler, Duration::from_secs(5)).await;
    let status = host.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success());
    assert!(host.find_log("drain deadline reached").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_bytes_and_connections() {
    const RESPONSE: usize = 1000;
    const REQUEST: usize = 12_345;
    let backend = Backend::start(Behavior::Fixed(RESPONSE)).await;
    let enclaves = [backend.enclave_arg()];
    let host = Host::start(&args(&[], &enclaves));

    for i in 0..2 {
        let mut c = TcpStream::connect(host.addr).await.unwrap();
        c.write_all(&pattern(REQUEST, i)).await.unwrap();
        c.shutdown().await.unwrap();
        let mut resp = Vec::new();
        c.read_to_end(&mut resp).await.unwrap();
        assert_eq!(resp.len(), RESPONSE);
    }
    wait_until("connections closed", Duration::from_secs(5), || async {
        host.metric("vouch_host_connections_open").await == 0
    })
    .await;
    let (_, m) = host.admin_get("/metrics").await;
    let v = |s: &str| metric_value(&m, s).unwrap_or_else(|| panic!("{s} missing:\n{m}"));
    assert_eq!(v("vouch_host_connections_total"), 2);
    assert_eq!(v("vouch_host_bytes_total{direction=\"client_to_enclave\"}"), 2 * REQUEST as u64);
    assert_eq!(v("vouch_host_bytes_total{direction=\"enclave_to_client\"}"), 2 * RESPONSE as u64);
    assert_eq!(v(&format!("vouch_host_enclave_connections_total{}", backend.label())), 2);
    assert_eq!(v(&format!("vouch_host_enclave_active_connections{}", backend.label())), 0);
    assert_eq!(v(&format!("vouch_host_enclave_healthy{}", backend.label())), 1);
    assert_eq!(v("vouch_host_errors_total{kind=\"client_io\"}"), 0);
    assert!(m.contains("# TYPE vouch_host_bytes_total counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_bounds_requests() {
    let backend = Backend::start(Behavior::Echo).await;
    let enclaves = [backend.enclave_arg()];
    let host = Host::start(&args(&[], &enclaves));
    assert_eq!(host.admin_get("/nope").await.0, 404);
    assert_eq!(host.admin_get("/readyz").await.0, 200);

    // An oversized request head is refused, not buffered.
    let mut s = TcpStream::connect(host.admin).await.unwrap();
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = s.write_all(huge.as_bytes()).await;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(PROMPT, s.read_to_end(&mut resp)).await;
    assert!(resp.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&resp));

    // A silent client is dropped after the read timeout; the endpoint stays responsive.
    let mut silent = TcpStream::connect(host.admin).await.unwrap();
    assert_eq!(host.admin_get("/healthz").await.0, 200);
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut resp))
        .await
        .expect("silent admin client not dropped")
        .unwrap();
    assert!(resp.starts_with(b"HTTP/1.1 408"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_from_toml_file() {
    let backend = Backend::start(Behavior::Echo).await;
    let dir = std::env::temp_dir().join(format!("vouch-host-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("host.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nenclaves = [\"tcp:{}\"]\nmax_connections = 1\n",
            backend.addr
        ),
    )
    .unwrap();
    let host = Host::start_raw(&["--config", file.to_str().unwrap()]);
    let mut c = TcpStream::connect(host.addr).await.unwrap();
    assert_eq!(ping(&mut c, b"from toml").await, b"from toml");
    // max_connections = 1 from the file applies.
    let mut extra = TcpStream::connect(host.addr).await.unwrap();
    assert_closed_within(&mut extra, PROMPT).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_enclave_address_is_a_clear_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vouch-host"))
        .args(["--listen", "127.0.0.1:0", "--enclave", "vsock:three:5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid vsock CID"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vouch-host"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no enclave"));
}
