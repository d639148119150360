//! A hostile host, for tests only. It stands where `vouch-host` would — between the
//! client and the enclave — and does what a malicious operator can:
//!
//! ```text
//!  vouch (client) ──TCP──► Mitm ──TCP──► vouch-enclave (or vouch-host)
//!                           │
//!        relay:     forwards TLS records, records every byte it sees
//!        tamper:    flips, truncates, duplicates, reorders or drops one record
//!        terminate: its OWN TLS certificate to the client, real TLS to the enclave,
//!                   plaintext relayed (and recorded) in between
//!        serve:     its own TLS, answers HTTP itself (replayed or forged evidence)
//!        replay:    answers any connection with bytes recorded from an earlier one
//! ```
//!
//! Untrusted side of every boundary: nothing here holds an enclave key. Tests assert
//! what the client does when faced with it, and what it could observe. Each `Mitm` owns
//! a small tokio runtime; dropping it stops everything it started.
//!
//! Also here: raw TLS client helpers (the same "accept any key" handshake the real
//! client does before attestation) for sending malformed or slow requests, and the
//! TEST-ONLY simulated keys a forging host would use.

// Test harness: panicking with a message is the right failure mode here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// TLS record content type of application data (everything after the handshake's
/// first flight in TLS 1.3 is sent as this type).
pub const APPLICATION_DATA: u8 = 23;
/// Largest TLS record a peer may send (2^14 plus expansion).
const MAX_RECORD: usize = (1 << 14) + 2048;
/// Bound on one request head in `serve` mode.
const MAX_HEAD: usize = 64 * 1024;

/// Which way bytes were travelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client towards the enclave.
    ToEnclave,
    /// From the enclave towards the client.
    ToClient,
}

/// One TLS record seen by a relay.
#[derive(Clone, Debug)]
pub struct RecordEvent {
    /// Connection number (accept order, from 0).
    pub conn: usize,
    /// Direction.
    pub dir: Dir,
    /// TLS content type.
    pub content_type: u8,
    /// Payload length.
    pub len: usize,
    /// Index among this connection's application-data records in this direction.
    pub app_index: Option<usize>,
}

/// What to do to one enclave→client application-data record (index from 0, counted
/// per connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one bit in the middle of the record.
    Flip(usize),
    /// Forward half of the record, then close the connection.
    Truncate(usize),
    /// Send the record twice.
    Duplicate(usize),
    /// Swap the record with the next one.
    Reorder(usize),
    /// Drop the record.
    Drop(usize),
}

impl Tamper {
    fn index(self) -> usize {
        match self {
            Tamper::Flip(i)
            | Tamper::Truncate(i)
            | Tamper::Duplicate(i)
            | Tamper::Reorder(i)
            | Tamper::Drop(i) => i,
        }
    }
}

/// A plain HTTP/1.1 request received in `serve` mode (over the Mitm's own TLS).
#[derive(Clone, Debug)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Body.
    pub body: Vec<u8>,
}

/// The answer a `serve` handler gives.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

type Handler = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// A TLS server identity of the attacker's own (the enclave's key never leaves it).
#[derive(Clone)]
pub struct Identity {
    config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the DER SubjectPublicKeyInfo — what evidence would have to bind.
    pub spki_sha256: [u8; 32],
}

impl Identity {
    /// A fresh self-signed P-256 certificate named like the enclave's.
    pub fn generate() -> Identity {
        let key = rcgen::KeyPair::generate().expect("keygen");
        let cert = rcgen::CertificateParams::new(vec!["vouch-enclave".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("self-sign");
        let spki_sha256: [u8; 32] =
            Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)).into();
        let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der_key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Identity { config: Arc::new(config), spki_sha256 }
    }
}

enum Mode {
    Relay { upstream: String, tamper: Option<Tamper> },
    Terminate { upstream: String, identity: Identity },
    Serve { identity: Identity, handler: Handler },
    Replay { to_client: Arc<Vec<u8>> },
}

#[derive(Default)]
struct Recorder {
    /// Per connection: (client→enclave bytes, enclave→client bytes), as seen by the Mitm
    /// (ciphertext for relays, plaintext for terminating modes).
    conns: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    events: Mutex<Vec<RecordEvent>>,
}

impl Recorder {
    fn open(&self) -> usize {
        let mut c = self.conns.lock().unwrap();
        c.push((Vec::new(), Vec::new()));
        c.len() - 1
    }
    fn append(&self, conn: usize, dir: Dir, bytes: &[u8]) {
        let mut c = self.conns.lock().unwrap();
        match dir {
            Dir::ToEnclave => c[conn].0.extend_from_slice(bytes),
            Dir::ToClient => c[conn].1.extend_from_slice(bytes),
        }
    }
    fn event(&self, e: RecordEvent) {
        self.events.lock().unwrap().push(e);
    }
}

/// The hostile host. Listens on `127.0.0.1:0`.
pub struct Mitm {
    addr: SocketAddr,
    rec: Arc<Recorder>,
    spki_sha256: Option<[u8; 32]>,
    rt: Option<tokio::runtime::Runtime>,
}

/// `tcp:HOST:PORT` (as the enclave prints it) or `HOST:PORT`, as `HOST:PORT`.
pub fn tcp_addr(addr: &str) -> String {
    addr.strip_prefix("tcp:").unwrap_or(addr).to_owned()
}

impl Mitm {
    /// A plain forwarder (what an honest `vouch-host` does), recording every byte.
    pub fn relay(upstream: &str) -> Mitm {
        Mitm::start(Mode::Relay { upstream: tcp_addr(upstream), tamper: None })
    }

    /// A forwarder that tampers with one enclave→client record of every connection.
    pub fn tamper(upstream: &str, tamper: Tamper) -> Mitm {
        Mitm::start(Mode::Relay { upstream: tcp_addr(upstream), tamper: Some(tamper) })
    }

    /// A man in the middle: TLS with its own certificate towards the client, TLS to
    /// the real enclave, plaintext relayed (real evidence passes through unchanged).
    pub fn terminate(upstream: &str) -> Mitm {
        let identity = Identity::generate();
        Mitm::start(Mode::Terminate { upstream: tcp_addr(upstream), identity })
    }

    /// A fake enclave: TLS with `identity`, every request answered by `handler`.
    pub fn serve(
        identity: Identity,
        handler: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> Mitm {
        Mitm::start(Mode::Serve { identity, handler: Arc::new(handler) })
    }

    /// Answers every connection with `to_client`, bytes recorded from an earlier one.
    pub fn replay(to_client: Vec<u8>) -> Mitm {
        Mitm::start(Mode::Replay { to_client: Arc::new(to_client) })
    }

    fn start(mode: Mode) -> Mitm {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let rec = Arc::new(Recorder::default());
        let spki_sha256 = match &mode {
            Mode::Terminate { identity, .. } | Mode::Serve { identity, .. } => Some(identity.spki_sha256),
            _ => None,
        };
        let mode = Arc::new(mode);
        let r = rec.clone();
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let _ = client.set_nodelay(true);
                let conn = r.open();
                let (mode, r) = (mode.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = handle(&mode, client, conn, r).await;
                });
            }
        });
        Mitm { addr, rec, spki_sha256, rt: Some(rt) }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, for `vouch --url`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// SHA-256 of the SPKI of the certificate this Mitm presents (terminate and serve).
    pub fn spki_sha256(&self) -> Option<[u8; 32]> {
        self.spki_sha256
    }

    /// Number of connections accepted so far.
    pub fn connections(&self) -> usize {
        self.rec.conns.lock().unwrap().len()
    }

    /// Bytes of connection `i`: (client→enclave, enclave→client).
    pub fn connection(&self, i: usize) -> (Vec<u8>, Vec<u8>) {
        self.rec.conns.lock().unwrap()[i].clone()
    }

    /// Every byte seen, all connections, both directions, concatenated.
    pub fn seen(&self) -> Vec<u8> {
        let c = self.rec.conns.lock().unwrap();
        c.iter().flat_map(|(a, b)| a.iter().chain(b.iter()).copied()).collect()
    }

    /// TLS records seen by a relay, in the order they completed.
    pub fn events(&self) -> Vec<RecordEvent> {
        self.rec.events.lock().unwrap().clone()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(mode: &Mode, client: TcpStream, conn: usize, rec: Arc<Recorder>) -> std::io::Result<()> {
    match mode {
        Mode::Relay { upstream, tamper } => {
            let up = TcpStream::connect(upstream).await?;
            let _ = up.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = up.into_split();
            let a = tokio::spawn(pump_records(cr, uw, rec.clone(), conn, Dir::ToEnclave, None));
            let b = tokio::spawn(pump_records(ur, cw, rec, conn, Dir::ToClient, *tamper));
            let _ = tokio::join!(a, b);
        }
        Mode::Terminate { upstream, identity } => {
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
            let tls_c = acceptor.accept(client).await?;
            let up = TcpStream::connect(upstream).await?;
            let tls_u = tokio_rustls::TlsConnector::from(client_config())
                .connect(ServerName::try_from("vouch-enclave").expect("name"), up)
                .await?;
            let (cr, cw) = tokio::io::split(tls_c);
            let (ur, uw) = tokio::io::split(tls_u);
            let a = tokio::spawn(pump_plain(cr, uw, rec.clone(), conn, Dir::ToEnclave));
            let b = tokio::spawn(pump_plain(ur, cw, rec, conn, Dir::ToClient));
            let _ = tokio::join!(a, b);
        }
        Mode::Serve { identity, handler } => {
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
            let tls = acceptor.accept(client).await?;
            serve_http(tls, handler, &rec, conn).await?;
        }
        Mode::Replay { to_client } => {
            let mut client = client;
            let mut hello = vec![0u8; 8192];
            let n = client.read(&mut hello).await?;
            rec.append(conn, Dir::ToEnclave, &hello[..n]);
            client.write_all(to_client).await?;
            rec.append(conn, Dir::ToClient, to_client);
            // Let the client read it all and give up on its own.
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                let mut b = [0u8; 4096];
                while matches!(client.read(&mut b).await, Ok(n) if n > 0) {}
            })
            .await;
        }
    }
    Ok(())
}

/// Forwards TLS records one at a time (so that one can be tampered with), recording
/// the bytes and one event per record. Non-TLS bytes are forwarded unparsed.
async fn pump_records<R, W>(
    mut r: R,
    mut w: W,
    rec: Arc<Recorder>,
    conn: usize,
    dir: Dir,
    tamper: Option<Tamper>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut app = 0usize;
    let mut held: Option<Vec<u8>> = None;
    let mut raw = false;
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        rec.append(conn, dir, &chunk[..n]);
        if raw {
            w.write_all(&chunk[..n]).await?;
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 5 {
            if !(20..=24).contains(&buf[0]) {
                // Not TLS: a plain relay from here on.
                raw = true;
                w.write_all(&buf).await?;
                buf.clear();
                break;
            }
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if len > MAX_RECORD || buf.len() < 5 + len {
                break;
            }
            let mut record: Vec<u8> = buf.drain(..5 + len).collect();
            let content_type = record[0];
            let app_index = (content_type == APPLICATION_DATA).then(|| {
                app += 1;
                app - 1
            });
            rec.event(RecordEvent { conn, dir, content_type, len, app_index });
            let action = match (tamper, app_index) {
                (Some(t), Some(i)) if t.index() == i => Some(t),
                _ => None,
            };
            match action {
                None => {
                    w.write_all(&record).await?;
                    if let Some(h) = held.take() {
                        w.write_all(&h).await?;
                    }
                }
                Some(Tamper::Flip(_)) => {
                    record[5 + len / 2] ^= 0x01;
                    w.write_all(&record).await?;
                }
                Some(Tamper::Truncate(_)) => {
                    w.write_all(&record[..5 + len / 2]).await?;
                    w.flush().await?;
                    let _ = w.shutdown().await;
                    return Ok(());
                }
                Some(Tamper::Duplicate(_)) => {
                    w.write_all(&record).await?;
                    w.write_all(&record).await?;
                }
                Some(Tamper::Reorder(_)) => held = Some(record),
                Some(Tamper::Drop(_)) => {}
            }
        }
    }
    if let Some(h) = held.take() {
        w.write_all(&h).await?;
    }
    if !buf.is_empty() {
        w.write_all(&buf).await?;
    }
    let _ = w.shutdown().await;
    Ok(())
}

/// Copies bytes, recording them.
async fn pump_plain<R, W>(
    mut r: R,
    mut w: W,
    rec: Arc<Recorder>,
    conn: usize,
    dir: Dir,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        rec.append(conn, dir, &chunk[..n]);
        w.write_all(&chunk[..n]).await?;
        w.flush().await?;
    }
    let _ = w.shutdown().await;
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Minimal HTTP/1.1 server loop (keep-alive, Content-Length bodies only).
async fn serve_http<S>(mut s: S, handler: &Handler, rec: &Recorder, conn: usize) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_HEAD {
                return Ok(());
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_owned();
        let path = first.next().unwrap_or("").to_owned();
        let len: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request: Vec<u8> = buf.drain(..head_end + len).collect();
        rec.append(conn, Dir::ToEnclave, &request);
        let req = HttpRequest { method, path, body: request[head_end..].to_vec() };
        let resp = handler(&req);
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
            resp.status,
            resp.content_type,
            resp.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&resp.body);
        rec.append(conn, Dir::ToClient, &out);
        s.write_all(&out).await?;
        s.flush().await?;
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Client TLS configuration that accepts any enclave key (TLS 1.3, http/1.1): the real
/// client's own pre-attestation configuration.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    vouch_client::tls::enclave_tls_config().expect("TLS 1.3 client configuration")
}

/// A TLS connection to `addr` (`tcp:HOST:PORT` or `HOST:PORT`), any server key.
pub async fn tls_connect(addr: &str) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(tcp_addr(addr)).await?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(client_config())
        .connect(ServerName::try_from("vouch-enclave").expect("name"), tcp)
        .await
}

/// A parsed HTTP/1.1 response.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// Status code (0 when the bytes are not an HTTP response).
    pub status: u16,
    /// Header block as text.
    pub head: String,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Body as lossy UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Parses the first HTTP/1.1 response in `raw`.
pub fn parse_response(raw: &[u8]) -> RawResponse {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return RawResponse { status: 0, head: String::from_utf8_lossy(raw).to_string(), body: Vec::new() };
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let rest = &raw[end + 4..];
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut p = rest;
        while let Some(i) = find(p, b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&p[..i]).trim(), 16).unwrap_or(0);
            if n == 0 || p.len() < i + 2 + n {
                break;
            }
            out.extend_from_slice(&p[i + 2..i + 2 + n]);
            p = &p[(i + 4 + n).min(p.len())..];
        }
        out
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    RawResponse { status, head, body }
}

/// Sends `request` (raw bytes; say `Connection: close`) over TLS to `addr` and reads
/// until the server closes or `timeout` passes.
pub async fn https_raw(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(timeout, async {
        let mut tls = tls_connect(addr).await?;
        tls.write_all(request).await?;
        tls.flush().await?;
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                // A peer that closes without close_notify still delivered what it sent.
                Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "https_raw timed out"))?
}

/// `GET path` over TLS to `addr`.
pub async fn https_get(addr: &str, path: &str) -> std::io::Result<RawResponse> {
    let req = format!("GET {path} HTTP/1.1\r\nhost: vouch-enclave\r\nconnection: close\r\n\r\n");
    Ok(parse_response(&https_raw(addr, req.as_bytes(), Duration::from_secs(60)).await?))
}

/// `POST /v1/chat/completions` with `body` over TLS to `addr`.
pub async fn https_post_chat(addr: &str, body: &[u8]) -> std::io::Result<RawResponse> {
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: vouch-enclave\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    Ok(parse_response(&https_raw(addr, &req, Duration::from_secs(120)).await?))
}

/// Runs a future to completion on a fresh multi-threaded runtime (for sync tests).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The committed TEST-ONLY simulated secure-processor keys
/// (attestation/testdata/sim-test-chain). Whoever holds them — here, the hostile host
/// — can forge simulated reports; that is why a simulated root proves nothing.
pub fn test_only_sim_keys() -> PathBuf {
    crate::repo().join("attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor")
}

/// A sim dir under `parent` pre-seeded with the TEST-ONLY keys, so an enclave starts
/// without generating RSA-4096 keys (seconds in debug builds) and a test can forge
/// with the same keys.
pub fn seeded_sim_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("sim");
    std::fs::create_dir_all(&dir).expect("sim dir");
    std::fs::copy(test_only_sim_keys(), dir.join("sim-keys.cbor")).expect("seed sim keys");
    dir
}

/// A second simulated chip beside [`seeded_sim_dir`]'s: the same TEST-ONLY root and
/// signing keys (so one `--trust-sim-root` and one policy accept both), another CHIP_ID.
pub fn second_chip_sim_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("sim-chip-2");
    std::fs::create_dir_all(&dir).expect("sim dir");
    let keys = std::fs::read(test_only_sim_keys()).expect("test-only sim keys");
    let mut keys: vouch_attestation::sim::SimKeyMaterial =
        vouch_attestation::binding::from_cbor(&keys).expect("sim keys decode");
    for b in keys.chip_id.iter_mut() {
        *b ^= 0x5a;
    }
    std::fs::write(dir.join("sim-keys.cbor"), vouch_attestation::binding::to_cbor(&keys))
        .expect("write keys");
    dir
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}
