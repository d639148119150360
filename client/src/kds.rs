//! AMD's Key Distribution Service (KDS): where a client gets the VCEK, the ARK/ASK
//! chain and the CRL when evidence does not carry them.
//!
//! CLIENT side. Nothing fetched here is trusted by itself: every certificate and CRL is
//! handed to the attestation crate, which checks it against the compiled-in AMD roots.
//! KDS only saves the enclave from shipping certificates. The network is pluggable
//! ([`KdsFetcher`]) so tests — and `--offline` — never touch it; fetched VCEKs are
//! cached on disk keyed by product, hwID and the full TCB (FMC included on Turin),
//! because a VCEK is a pure function of those. KDS rate-limits aggressively (HTTP 429
//! with `Retry-After`), so retries follow a bounded exponential [`Backoff`].
//!
//! ```text
//!  report (CHIP_ID, REPORTED_TCB) ─► vcek_url ─► cache? ─► fetcher (HTTPS) ─► cache
//!                                                               └─ 429/503: back off
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use vouch_attestation::{Product, SigningKey, Tcb};

/// AMD's KDS base URL.
pub const KDS_BASE: &str = "https://kdsintf.amd.com";
/// Largest KDS response accepted (certificates and CRLs are a few KiB).
pub const MAX_KDS_RESPONSE_BYTES: usize = 256 * 1024;
/// Timeout of one KDS request, connect to last byte.
pub const KDS_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a KDS fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KdsError {
    /// The client is offline (policy `offline` or `--offline`) and the item is not cached.
    #[error("offline: not fetching {url} (evidence must carry this certificate, or allow KDS access)")]
    Offline {
        /// What would have been fetched.
        url: String,
    },
    /// The hwID has the wrong length for the product.
    #[error("hwID is {actual} bytes, {product} uses {expected}")]
    HwidLength {
        /// The product.
        product: Product,
        /// Its hwID length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// VLEKs are not served per chip by KDS.
    #[error("KDS does not serve VLEK leaf certificates; the evidence must carry the VLEK")]
    VlekNotServed,
    /// KDS answered with a non-success status that is not retried.
    #[error("KDS {url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// KDS kept rate-limiting (or failing) after every retry.
    #[error("KDS {url} still failing after {attempts} attempts (last: {last})")]
    GaveUp {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Network or TLS failure.
    #[error("cannot fetch {url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// Detail.
        reason: String,
    },
    /// The response is larger than [`MAX_KDS_RESPONSE_BYTES`].
    #[error("KDS response from {url} exceeds {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The on-disk cache failed.
    #[error("KDS cache {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The first `hwid_len` bytes of CHIP_ID: the hwID KDS and the VCEK use (64 bytes on
/// Milan/Genoa, 8 on Turin).
pub fn hwid_from_chip_id(product: Product, chip_id: &[u8; 64]) -> &[u8] {
    &chip_id[..product.hwid_len()]
}

/// `…/vcek/v1/{product}/{hwid}?[fmcSPL=..&]blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`.
/// `tcb` is the report's REPORTED_TCB decoded for `product`; Turin adds `fmcSPL`.
pub fn vcek_url(base: &str, product: Product, hwid: &[u8], tcb: &Tcb) -> Result<String, KdsError> {
    if hwid.len() != product.hwid_len() {
        return Err(KdsError::HwidLength { product, expected: product.hwid_len(), actual: hwid.len() });
    }
    let fmc = match (product.has_fmc(), tcb.fmc) {
        (true, Some(f)) => format!("fmcSPL={f}&"),
        (true, None) => "fmcSPL=0&".to_owned(),
        (false, _) => String::new(),
    };
    let base = base.trim_end_matches('/');
    Ok(format!(
        "{base}/vcek/v1/{}/{}?{fmc}blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        product.kds_name(),
        hex::encode(hwid),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    ))
}

fn kind_path(signer: SigningKey) -> &'static str {
    match signer {
        SigningKey::Vcek => "vcek",
        SigningKey::Vlek => "vlek",
    }
}

/// `…/{vcek|vlek}/v1/{product}/cert_chain`: ASK (or ASVK) then ARK, PEM.
pub fn cert_chain_url(base: &str, product: Product, signer: SigningKey) -> String {
    format!("{}/{}/v1/{}/cert_chain", base.trim_end_matches('/'), kind_path(signer), product.kds_name())
}

/// `…/{vcek|vlek}/v1/{product}/crl`: the ARK's CRL, DER.
pub fn crl_url(base: &str, product: Product, signer: SigningKey) -> String {
    format!("{}/{}/v1/{}/crl", base.trim_end_matches('/'), kind_path(signer), product.kds_name())
}

/// Retry schedule for rate limiting (429) and unavailability (503, transport errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Upper bound on any delay, including a server's `Retry-After`.
    pub max_delay: Duration,
    /// Total attempts, the first included.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 1 s, doubling, at most 60 s per wait, 5 attempts: KDS asks clients to slow down,
    /// and a verifier that hammers it gets blocked for longer.
    fn default() -> Self {
        Backoff { initial: Duration::from_secs(1), max_delay: Duration::from_secs(60), max_attempts: 5 }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (attempts count from 0), or `None` when
    /// attempts are exhausted. A server's `Retry-After` wins over the schedule, capped.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt + 1 >= self.max_attempts {
            return None;
        }
        let scheduled = self.initial.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX));
        Some(retry_after.unwrap_or(scheduled).min(self.max_delay))
    }
}

/// A raw HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResponse {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when present.
    pub retry_after: Option<Duration>,
    /// Body (at most [`MAX_KDS_RESPONSE_BYTES`]).
    pub body: Vec<u8>,
}

/// A boxed future, for the object-safe fetcher trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How KDS is reached. Tests and `--offline` plug in implementations without network.
pub trait KdsFetcher: Send + Sync {
    /// GETs `url`.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<FetchResponse, KdsError>>;
}

/// Refuses every fetch: the `offline` policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfflineFetcher;

impl KdsFetcher for OfflineFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<FetchResponse, KdsError>> {
        Box::pin(async move { Err(KdsError::Offline { url: url.to_owned() }) })
    }
}

/// Fetches over HTTPS, verifying KDS's WebPKI certificate against the system's CA
/// bundle (`SSL_CERT_FILE`, else the usual distribution paths).
#[derive(Clone)]
pub struct HttpsFetcher {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpsFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsFetcher").finish_non_exhaustive()
    }
}

const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

impl HttpsFetcher {
    /// Loads the system CA bundle.
    pub fn new() -> Result<HttpsFetcher, KdsError> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut paths: Vec<PathBuf> =
            std::env::var_os("SSL_CERT_FILE").map(PathBuf::from).into_iter().collect();
        paths.extend(CA_BUNDLES.iter().map(PathBuf::from));
        let mut roots = rustls::RootCertStore::empty();
        for p in &paths {
            if let Ok(pem) = std::fs::read(p) {
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    let _ = roots.add(cert);
                }
                if !roots.is_empty() {
                    break;
                }
            }
        }
        if roots.is_empty() {
            return Err(KdsError::Transport {
                url: KDS_BASE.to_owned(),
                reason: "no system CA bundle found (set SSL_CERT_FILE)".into(),
            });
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| KdsError::Transport { url: KDS_BASE.to_owned(), reason: e.to_string() })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsFetcher { tls: Arc::new(tls) })
    }

    async fn get(&self, url: &str) -> Result<FetchResponse, KdsError> {
        let t = |reason: String| KdsError::Transport { url: url.to_owned(), reason };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| t(e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(t("KDS is only fetched over https".into()));
        }
        let host = uri.host().ok_or_else(|| t("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp =
            tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| t(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| t(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| t(e.to_string()))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| t(e.to_string()))?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = http::Request::get(path)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, concat!("vouch/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| t(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| t(e.to_string()))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| t(e.to_string()))?;
            if let Some(d) = frame.data_ref() {
                if out.len() + d.len() > MAX_KDS_RESPONSE_BYTES {
                    return Err(KdsError::TooLarge { url: url.to_owned(), limit: MAX_KDS_RESPONSE_BYTES });
                }
                out.extend_from_slice(d);
            }
        }
        Ok(FetchResponse { status, retry_after, body: out })
    }
}

impl KdsFetcher for HttpsFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<FetchResponse, KdsError>> {
        Box::pin(async move {
            match tokio::time::timeout(KDS_REQUEST_TIMEOUT, self.get(url)).await {
                Ok(r) => r,
                Err(_) => Err(KdsError::Transport { url: url.to_owned(), reason: "timed out".into() }),
            }
        })
    }
}

/// What a cache entry holds; its file name is derived from every field that
/// determines the content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheKey {
    /// A VCEK: product, hwID and the full TCB (FMC on Turin).
    Vcek {
        /// Product.
        product: Product,
        /// hwID.
        hwid: Vec<u8>,
        /// REPORTED_TCB decoded.
        tcb: Tcb,
    },
    /// ASK/ASVK + ARK chain of a product.
    CertChain {
        /// Product.
        product: Product,
        /// VCEK (ASK) or VLEK (ASVK) chain.
        signer: SigningKey,
    },
    /// A product's CRL (short-lived: re-fetched when stale).
    Crl {
        /// Product.
        product: Product,
        /// VCEK or VLEK CRL.
        signer: SigningKey,
    },
}

impl CacheKey {
    /// The file name of this entry.
    pub fn file_name(&self) -> String {
        match self {
            CacheKey::Vcek { product, hwid, tcb } => format!(
                "vcek-{}-{}-fmc{}-bl{}-tee{}-snp{}-ucode{}.der",
                product.kds_name(),
                hex::encode(hwid),
                tcb.fmc.map(|f| f.to_string()).unwrap_or_else(|| "none".into()),
                tcb.bootloader,
                tcb.tee,
                tcb.snp,
                tcb.microcode
            ),
            CacheKey::CertChain { product, signer } => {
                format!("{}-{}-cert_chain.pem", kind_path(*signer), product.kds_name())
            }
            CacheKey::Crl { product, signer } => {
                format!("{}-{}-crl.der", kind_path(*signer), product.kds_name())
            }
        }
    }
}

/// A directory of cached KDS answers. Entries are written atomically (temp file then
/// rename) so a crash never leaves a half-written certificate behind; contents are
/// still verified against AMD's roots on every use.
#[derive(Clone, Debug)]
pub struct KdsCache {
    dir: PathBuf,
}

impl KdsCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> KdsCache {
        KdsCache { dir: dir.into() }
    }
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The cached bytes for `key`, if any.
    pub fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, KdsError> {
        let path = self.dir.join(key.file_name());
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KdsError::Cache { path, source }),
        }
    }
    /// Stores `bytes` under `key`.
    pub fn put(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), KdsError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| KdsError::Cache { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let path = self.dir.join(key.file_name());
        let tmp = self.dir.join(format!(".{}.tmp{}", key.file_name(), std::process::id()));
        std::fs::write(&tmp, bytes).map_err(err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(err(&path))
    }
    /// Drops `key` (e.g. a stale CRL).
    pub fn remove(&self, key: &CacheKey) -> Result<(), KdsError> {
        let path = self.dir.join(key.file_name());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KdsError::Cache { path, source }),
        }
    }
}

/// KDS access: URL construction, cache, fetcher, back-off.
#[derive(Clone)]
pub struct KdsClient {
    base: String,
    fetcher: Arc<dyn KdsFetcher>,
    cache: Option<KdsCache>,
    backoff: Backoff,
}

impl std::fmt::Debug for KdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdsClient")
            .field("base", &self.base)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl KdsClient {
    /// A client of `base` (normally [`KDS_BASE`]).
    pub fn new(
        base: &str,
        fetcher: Arc<dyn KdsFetcher>,
        cache: Option<KdsCache>,
        backoff: Backoff,
    ) -> KdsClient {
        KdsClient { base: base.trim_end_matches('/').to_owned(), fetcher, cache, backoff }
    }

    /// A client that never fetches (cache only).
    pub fn offline(cache: Option<KdsCache>) -> KdsClient {
        KdsClient::new(KDS_BASE, Arc::new(OfflineFetcher), cache, Backoff::default())
    }

    async fn fetch_with_backoff(&self, url: &str) -> Result<Vec<u8>, KdsError> {
        let mut attempt = 0u32;
        loop {
            let (last, retry_after) = match self.fetcher.fetch(url).await {
                Ok(r) if r.status == 200 => {
                    if r.body.len() > MAX_KDS_RESPONSE_BYTES {
                        return Err(KdsError::TooLarge {
                            url: url.to_owned(),
                            limit: MAX_KDS_RESPONSE_BYTES,
                        });
                    }
                    return Ok(r.body);
                }
                // Rate limited or temporarily unavailable: worth waiting for.
                Ok(r) if r.status == 429 || r.status == 503 => (format!("HTTP {}", r.status), r.retry_after),
                Ok(r) => return Err(KdsError::Status { url: url.to_owned(), status: r.status }),
                Err(e @ KdsError::Transport { .. }) => (e.to_string(), None),
                Err(e) => return Err(e),
            };
            match self.backoff.delay(attempt, retry_after) {
                Some(d) => {
                    tracing::warn!(%url, attempt, delay_ms = d.as_millis() as u64, %last, "KDS retry");
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                None => return Err(KdsError::GaveUp { url: url.to_owned(), attempts: attempt + 1, last }),
            }
        }
    }

    async fn cached(&self, key: CacheKey, url: String) -> Result<Vec<u8>, KdsError> {
        if let Some(cache) = &self.cache {
            if let Some(b) = cache.get(&key)? {
                return Ok(b);
            }
        }
        let body = self.fetch_with_backoff(&url).await?;
        if let Some(cache) = &self.cache {
            cache.put(&key, &body)?;
        }
        Ok(body)
    }

    /// The VCEK (DER) of chip `hwid` at `tcb`.
    pub async fn vcek(&self, product: Product, hwid: &[u8], tcb: &Tcb) -> Result<Vec<u8>, KdsError> {
        let url = vcek_url(&self.base, product, hwid, tcb)?;
        self.cached(CacheKey::Vcek { product, hwid: hwid.to_vec(), tcb: *tcb }, url).await
    }

    /// The intermediate + ARK chain (PEM).
    pub async fn cert_chain(&self, product: Product, signer: SigningKey) -> Result<Vec<u8>, KdsError> {
        self.cached(CacheKey::CertChain { product, signer }, cert_chain_url(&self.base, product, signer))
            .await
    }

    /// The ARK's CRL (DER), current at `now`: a cached copy past its nextUpdate is
    /// fetched anew (once) instead of failing every verification until someone clears
    /// the cache. Of the cached and the fetched copy, the one with the higher cRLNumber
    /// wins. Its signature is checked later, by the verifier, like every certificate.
    pub async fn current_crl(
        &self,
        product: Product,
        signer: SigningKey,
        now: u64,
    ) -> Result<Vec<u8>, KdsError> {
        let cached = self.crl(product, signer, false).await?;
        let (cached_next, cached_number) = vouch_attestation::crl::unverified_freshness(&cached);
        // Without a cache that copy was just fetched: fetching again gets the same.
        if self.cache.is_none() || cached_next.is_some_and(|next| now < next) {
            return Ok(cached);
        }
        tracing::info!(%product, "cached AMD CRL is past its nextUpdate; fetching a fresh one");
        let fresh = self.crl(product, signer, true).await?;
        let (_, fresh_number) = vouch_attestation::crl::unverified_freshness(&fresh);
        if cached_number > fresh_number {
            // KDS served an older CRL than one already held: keep the newer.
            if let Some(cache) = &self.cache {
                cache.put(&CacheKey::Crl { product, signer }, &cached)?;
            }
            return Ok(cached);
        }
        Ok(fresh)
    }

    /// The ARK's CRL (DER). `refresh` bypasses (and replaces) a cached copy, for when
    /// the cached one turned out stale.
    pub async fn crl(
        &self,
        product: Product,
        signer: SigningKey,
        refresh: bool,
    ) -> Result<Vec<u8>, KdsError> {
        let key = CacheKey::Crl { product, signer };
        if refresh {
            if let Some(cache) = &self.cache {
                cache.remove(&key)?;
            }
        }
        self.cached(key, crl_url(&self.base, product, signer)).await
    }
}
