//! `vouch-enclave serve`: attested TLS terminated inside the enclave, in front of the API.
//!
//! Trusted side. The TLS key is generated here at start-up and never leaves the process;
//! its SPKI digest is bound into every report. Connections arrive through the untrusted
//! host over TCP, a unix socket or vsock; a semaphore bounds them, and the handshake and
//! request headers have deadlines so slow or half-open peers cannot hold resources.

use crate::answer_log::AnswerLog;
use crate::api::{self, AppState};
use crate::model::{Engine, EngineConfig, Runtime};
use crate::models::{ModelEntry, Models};
use crate::notary::Notary;
use crate::provider::AttestationProvider;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

/// Most concurrent connections; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 512;
/// Deadline for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for a request's headers (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A GGUF model file to serve, named from the file; repeat for several (the first is
    /// the default, for requests that name no model). See `--models` to pin digests.
    #[arg(long, required_unless_present = "models", conflicts_with = "models")]
    pub model: Vec<PathBuf>,
    /// A models file (TOML `[[model]]` entries: `name`, `path`, `sha256`, optional
    /// `kv_budget_mib`; see `vouch_enclave::models`): a file whose SHA-256 is not the one
    /// given refuses to start.
    #[arg(long, value_name = "FILE")]
    pub models: Option<PathBuf>,
    /// Where to listen: tcp:HOST:PORT, unix:PATH or vsock:CID:PORT.
    #[arg(long)]
    pub listen: String,
    /// Attestation provider: `sev-guest` (/dev/sev-guest) or `sim` (software, NOT AMD;
    /// only in builds with the cargo feature `sim` — never the guest image).
    #[arg(long, value_parser = ["sim", "sev-guest"])]
    pub attestation: String,
    /// Key directory of the simulated secure processor (created when missing);
    /// its root certificate is written to DIR/sim-ark.pem.
    #[arg(long, default_value = ".vouch-sim")]
    pub sim_dir: PathBuf,
    /// Product the simulator imitates (Genoa by default: verifiers refuse Milan unless
    /// their policy accepts it).
    #[arg(long, default_value = "genoa")]
    pub sim_product: String,
    /// Simulated report latency in milliseconds (~8 ms measured on SNP guests).
    #[arg(long, default_value_t = 0)]
    pub sim_latency_ms: u64,
    /// The MEASUREMENT the simulator reports (96 hex digits): in a dev VM, the value
    /// `vouch measure` computes for the very image it booted, so clients pin what a real
    /// SNP launch would measure. Default: the SHA-384 of this executable.
    #[arg(long, value_name = "HEX")]
    pub sim_measurement: Option<String>,
    /// VMPL at which `sev-guest` requests reports.
    #[arg(long, default_value_t = 0)]
    pub vmpl: u32,
    /// configfs-tsm report directory, preferred by `sev-guest` when it exists and its
    /// provider is `sev_guest`; otherwise reports come from the /dev/sev-guest ioctl.
    #[arg(long, default_value = crate::tsm_provider::DEFAULT_TSM_REPORT_DIR)]
    pub tsm_dir: PathBuf,
    /// Requests that may wait for a batch slot or KV memory, beyond the running batch;
    /// more get 429 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue_depth: usize,
    /// Most requests decoded together in one forward step (default: what the KV budget
    /// fits at 1024 positions each, at least 8 and at most 32; always 1 under candle).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// KV-cache memory all running requests together may reserve, in MiB, across all models
    /// (each gets its own share; see `--models`). Each request reserves prompt + max_tokens
    /// positions of its model's share when it starts; one that does not fit waits.
    #[arg(long, default_value_t = crate::model::DEFAULT_KV_BUDGET_MIB)]
    pub kv_budget_mib: usize,
    /// Most prompt tokens fed per step while other requests decode.
    #[arg(long, default_value_t = crate::model::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Model compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Model runtime: "native" (default), "candle" or "candle-q8_0" (see `generate`; the
    /// candle ones only in a build with `--features candle`).
    #[arg(long, value_name = "RUNTIME", default_value_t = Runtime::Native)]
    pub runtime: Runtime,
    /// Request one report per answer instead of one per batch (benchmark baseline).
    #[arg(long)]
    pub no_group_commit: bool,
    /// Directory of the answer log's store (SQLite): on a persistent disk, so the log
    /// survives restarts. Default with `--attestation sim`: SIM_DIR/answer-log; required
    /// with `sev-guest`.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// The answer log's epoch, mixed into its key: the same code on the same chip derives
    /// the same log key for the same epoch. Start epoch N+1 (with an empty --log-dir) only
    /// when the store of epoch N is lost or refused; clients see a new log, not the old one
    /// continued.
    #[arg(long, default_value_t = 0)]
    pub log_epoch: u32,
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Bad command-line value.
    #[error("{0}")]
    Usage(String),
    /// The set of models cannot be served.
    #[error("{0}")]
    Models(#[from] crate::models::ModelsError),
    /// Provider failed to start.
    #[error("attestation provider: {0}")]
    Provider(#[from] crate::provider::ProviderError),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The answer log cannot be opened or continued.
    #[error("{0}")]
    Log(#[from] crate::answer_log::LogError),
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP `HOST:PORT`.
    Tcp(String),
    /// Unix socket path.
    Unix(PathBuf),
    /// vsock CID and port.
    Vsock(u32, u32),
}

impl std::str::FromStr for ListenAddr {
    type Err = ServeError;
    fn from_str(s: &str) -> Result<Self, ServeError> {
        let bad = || {
            ServeError::Usage(format!(
                "bad address {s:?}: expected tcp:HOST:PORT, unix:PATH or vsock:CID:PORT"
            ))
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
        match scheme {
            "tcp"
                if rest.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Ok(ListenAddr::Tcp(rest.to_owned()))
            }
            "unix" if !rest.is_empty() => Ok(ListenAddr::Unix(PathBuf::from(rest))),
            "vsock" => {
                let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
                Ok(ListenAddr::Vsock(cid.parse().map_err(|_| bad())?, port.parse().map_err(|_| bad())?))
            }
            _ => Err(bad()),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A bound listener of any kind.
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix socket.
    Unix(tokio::net::UnixListener),
    /// vsock.
    Vsock(tokio_vsock::VsockListener),
}

impl Listener {
    /// Binds `addr`.
    pub async fn bind(addr: &ListenAddr) -> Result<Listener, ServeError> {
        Ok(match addr {
            ListenAddr::Tcp(a) => Listener::Tcp(tokio::net::TcpListener::bind(a).await?),
            ListenAddr::Unix(p) => {
                // A stale socket file from a previous run would make bind fail.
                let _ = std::fs::remove_file(p);
                Listener::Unix(tokio::net::UnixListener::bind(p)?)
            }
            ListenAddr::Vsock(cid, port) => {
                Listener::Vsock(tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(*cid, *port))?)
            }
        })
    }

    /// The bound address, printable as an ADDR.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| format!("tcp:{a}")).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_default(),
            Listener::Vsock(l) => {
                l.local_addr().map(|a| format!("vsock:{}:{}", a.cid(), a.port())).unwrap_or_default()
            }
        }
    }

    async fn accept(&mut self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Listener::Unix(l) => Box::new(l.accept().await?.0),
            Listener::Vsock(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// The enclave's TLS identity: generated in memory, never written anywhere.
pub struct TlsIdentity {
    /// rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the DER SubjectPublicKeyInfo, bound into every report.
    pub spki_sha256: [u8; 32],
}

/// Generates a fresh ECDSA P-256 key and self-signed certificate (TLS 1.3 only).
pub fn tls_identity() -> Result<TlsIdentity, ServeError> {
    let t = |e: &dyn std::fmt::Display| ServeError::Tls(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| t(&e))?;
    let params = rcgen::CertificateParams::new(vec!["vouch-enclave".to_owned()]).map_err(|e| t(&e))?;
    let cert = params.self_signed(&key).map_err(|e| t(&e))?;
    let spki_sha256: [u8; 32] = Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)).into();
    let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .map_err(|e| t(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity { config: Arc::new(config), spki_sha256 })
}

/// The real secure processor: configfs-tsm when the guest kernel offers it for SEV-SNP,
/// else the `/dev/sev-guest` ioctl. Says which, and why configfs-tsm was not used.
fn real_provider(args: &ServeArgs) -> Result<Arc<dyn AttestationProvider>, ServeError> {
    match crate::tsm_provider::ConfigFsTsmProvider::open(&args.tsm_dir, args.vmpl) {
        Ok(p) => {
            println!("vouch-enclave: attestation through configfs-tsm ({})", args.tsm_dir.display());
            Ok(Arc::new(p))
        }
        Err(why) => {
            #[cfg(target_os = "linux")]
            {
                println!("vouch-enclave: configfs-tsm not used ({why}); attestation through /dev/sev-guest");
                Ok(Arc::new(crate::provider::SevGuestProvider::open(args.vmpl)?))
            }
            #[cfg(not(target_os = "linux"))]
            {
                Err(why.into())
            }
        }
    }
}

/// A launch measurement given as 96 hex digits (48 bytes, SHA-384 size).
pub fn parse_measurement(hex_digits: &str) -> Result<[u8; 48], ServeError> {
    let bad =
        || ServeError::Usage(format!("--sim-measurement {hex_digits:?}: expected 96 hex digits (48 bytes)"));
    hex::decode(hex_digits.trim()).ok().and_then(|b| <[u8; 48]>::try_from(b).ok()).ok_or_else(bad)
}

/// Loads everything and serves until `shutdown` resolves.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let addr: ListenAddr = args.listen.parse()?;
    let provider: Arc<dyn AttestationProvider> = match args.attestation.as_str() {
        #[cfg(feature = "sim")]
        "sim" => {
            use crate::provider::{SimProvider, SIM_POLICY_FILE};
            use vouch_attestation::Product;
            let product = Product::from_name(&args.sim_product)
                .ok_or_else(|| ServeError::Usage(format!("unknown product {:?}", args.sim_product)))?;
            let measurement = args.sim_measurement.as_deref().map(parse_measurement).transpose()?;
            let p = SimProvider::open(
                &args.sim_dir,
                product,
                Duration::from_millis(args.sim_latency_ms),
                measurement,
            )?;
            println!(
                "vouch-enclave: SIMULATED attestation (not AMD hardware); root certificate: {}",
                SimProvider::ark_path(&args.sim_dir).display()
            );
            println!("vouch-enclave: simulated launch measurement {}", hex::encode(p.measurement()));
            println!(
                "vouch-enclave: client policy pinning it: {}",
                args.sim_dir.join(SIM_POLICY_FILE).display()
            );
            Arc::new(p)
        }
        #[cfg(not(feature = "sim"))]
        "sim" => {
            return Err(ServeError::Usage(
                "this vouch-enclave was built without the simulated secure processor (cargo feature \
                 `sim`); production builds attest with --attestation sev-guest only"
                    .into(),
            ))
        }
        #[cfg(target_os = "linux")]
        "sev-guest" => real_provider(&args)?,
        other => {
            return Err(ServeError::Usage(format!("attestation provider {other:?} is not available here")))
        }
    };
    let entries = match &args.models {
        Some(file) => crate::models::read_models_file(file)?,
        None => args
            .model
            .iter()
            .map(|path| ModelEntry { name: None, path: path.clone(), sha256: None, kv_budget_mib: None })
            .collect(),
    };
    let budgets = crate::models::kv_budgets(&entries, args.kv_budget_mib)?;
    let loaded = crate::models::load_all(&entries, args.runtime)?;
    let threads = args.threads.unwrap_or_else(|| EngineConfig::default().threads);
    let mut engines = Vec::with_capacity(loaded.len());
    let mut resident_mib = 0.0;
    for (model, kv_mib) in loaded.into_iter().zip(budgets) {
        let file_mib = model.file_size() as f64 / f64::from(1 << 20);
        println!(
            "vouch-enclave: model {} sha256 {} {} runtime {} ({}, {})",
            model.name(),
            hex::encode(model.digest()),
            model.architecture(),
            model.runtime(),
            model.engine_version(),
            model.kernel()
        );
        let engine = Engine::start(
            model,
            EngineConfig {
                queue_depth: args.queue_depth,
                threads,
                max_batch: args.max_batch,
                kv_budget_bytes: kv_mib.saturating_mul(1 << 20),
                prefill_chunk: args.prefill_chunk,
            },
        );
        let per_position = engine.kv_bytes_per_position();
        println!(
            "vouch-enclave:   memory {file_mib:.1} MiB file + {kv_mib} MiB KV budget ({} positions at {:.1} KiB \
             each); batch up to {} sequences, queue {}, prefill chunk {}, {} threads",
            engine.kv_budget_bytes() / per_position.max(1),
            per_position as f64 / 1024.0,
            engine.max_batch(),
            engine.queue_depth(),
            args.prefill_chunk,
            engine.threads(),
        );
        resident_mib += file_mib + kv_mib as f64;
        engines.push(engine);
    }
    if engines.len() > 1 {
        println!(
            "vouch-enclave: {} models, {resident_mib:.1} MiB of files and KV budgets in all; the first ({}) is the default",
            engines.len(),
            engines[0].model_name()
        );
    }
    let models = Models::new(engines)?;
    let tls = tls_identity()?;
    let digests = models.iter().map(Engine::model_digest).collect();
    let log = open_log(&args, provider.as_ref())?;
    println!(
        "vouch-enclave: answer log {} (epoch {}), {} entries, store {}",
        log.claim().origin,
        args.log_epoch,
        log.size(),
        args.log_dir.clone().unwrap_or_else(|| args.sim_dir.join(DEFAULT_SIM_LOG_DIR)).display()
    );
    let notary = Notary::start(provider, tls.spki_sha256, digests, log, !args.no_group_commit);
    let listener = Listener::bind(&addr).await?;
    let state = Arc::new(AppState { models, notary, tls_spki_sha256: tls.spki_sha256 });
    serve(listener, tls.config, state, shutdown).await
}

/// The answer log's directory under the sim dir when `--log-dir` is not given.
pub const DEFAULT_SIM_LOG_DIR: &str = "answer-log";

/// What the log key is derived for: the purpose and the epoch.
pub fn log_key_context(epoch: u32) -> Vec<u8> {
    let mut c = b"vouch/answer-log-key/v1\0".to_vec();
    c.extend_from_slice(&epoch.to_le_bytes());
    c
}

/// Opens the answer log with the key the secure processor derives for this code, chip
/// and epoch, refusing a store that fails its check.
fn open_log(args: &ServeArgs, provider: &dyn AttestationProvider) -> Result<AnswerLog, ServeError> {
    let dir = match (&args.log_dir, args.attestation.as_str()) {
        (Some(d), _) => d.clone(),
        (None, "sim") => args.sim_dir.join(DEFAULT_SIM_LOG_DIR),
        (None, _) => {
            return Err(ServeError::Usage(
                "--log-dir is required with --attestation sev-guest: the answer log must live on a persistent disk".into(),
            ))
        }
    };
    let seed = provider
        .derived_key(&log_key_context(args.log_epoch))
        .map_err(|e| ServeError::Usage(format!("the answer log key: {e}")))?;
    Ok(AnswerLog::open(&dir, &seed)?)
}

/// Accepts connections on `listener` until `shutdown`, then drains.
pub async fn serve(
    mut listener: Listener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    use std::io::Write;
    println!("vouch-enclave listening on {}", listener.local_addr());
    let _ = std::io::stdout().flush();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let io = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(io) => { backoff = Duration::from_millis(5); io }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| api::handle(Arc::clone(&state), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, "connection ended with error") },
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!("tcp:127.0.0.1:0".parse::<ListenAddr>().unwrap(), ListenAddr::Tcp("127.0.0.1:0".into()));
        assert_eq!("unix:/tmp/x".parse::<ListenAddr>().unwrap(), ListenAddr::Unix("/tmp/x".into()));
        assert_eq!("vsock:3:5000".parse::<ListenAddr>().unwrap(), ListenAddr::Vsock(3, 5000));
        for bad in ["127.0.0.1:80", "tcp:nohost", "tcp::80", "vsock:x:1", "udp:1:2", "unix:"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_sim_measurement_is_48_bytes_of_hex() {
        let m = "ab".repeat(48);
        assert_eq!(parse_measurement(&m).unwrap(), [0xab; 48]);
        for bad in ["ab".repeat(47), "ab".repeat(49), "zz".repeat(48), String::new()] {
            let e = parse_measurement(&bad).unwrap_err().to_string();
            assert!(e.contains("expected 96 hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_identity_binds_the_certificate_key() {
        let id = tls_identity().unwrap();
        assert_ne!(id.spki_sha256, [0; 32]);
    }
}
