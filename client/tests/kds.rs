//! KDS: URL construction for every product (Turin's FMC and 8-byte hwID), VLEK
//! paths, the on-disk cache keyed by the full TCB, back-off on rate limiting, and the
//! offline mode. No network: a fake fetcher serves the genuine vector certificates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a test failure

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vouch_attestation::{Product, Report, SigningKey, Tcb};
use vouch_client::kds::*;

fn report(dv: &Vectors, name: &str) -> Report {
    Report::parse(&dv.read(&format!("reports/{name}.bin"))).unwrap()
}

#[test]
fn turin_url_has_fmc_and_an_8_byte_hwid() {
    let Some(dv) = Vectors::dev() else { return };
    let r = report(&dv, "turin_v5_oak");
    let tcb = r.tcb(r.reported_tcb_raw(), Product::Turin);
    let chip = r.chip_id();
    let hwid = hwid_from_chip_id(Product::Turin, &chip);
    assert_eq!(hwid.len(), 8);
    assert_eq!(
        vcek_url(KDS_BASE, Product::Turin, hwid, &tcb).unwrap(),
        "https://kdsintf.amd.com/vcek/v1/Turin/3b42092f69c656d3?fmcSPL=0&blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=71"
    );
    // A full 64-byte CHIP_ID is not a Turin hwID.
    assert!(matches!(
        vcek_url(KDS_BASE, Product::Turin, &chip, &tcb),
        Err(KdsError::HwidLength { expected: 8, actual: 64, .. })
    ));
    let t = Tcb::decode(Tcb::encode(Product::Turin, 7, 1, 2, 3, 200), Product::Turin);
    assert!(vcek_url(KDS_BASE, Product::Turin, &[0xab; 8], &t)
        .unwrap()
        .ends_with("/vcek/v1/Turin/abababababababab?fmcSPL=7&blSPL=1&teeSPL=2&snpSPL=3&ucodeSPL=200"));
}

#[test]
fn milan_and_genoa_urls_use_the_64_byte_hwid_and_no_fmc() {
    let Some(dv) = Vectors::dev() else { return };
    for (name, product) in [("milan_v3_mstav", Product::Milan), ("genoa_v3_mstav", Product::Genoa)] {
        let r = report(&dv, name);
        let tcb = r.tcb(r.reported_tcb_raw(), product);
        let chip = r.chip_id();
        let url = vcek_url(KDS_BASE, product, hwid_from_chip_id(product, &chip), &tcb).unwrap();
        assert_eq!(
            url,
            format!(
                "https://kdsintf.amd.com/vcek/v1/{}/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
                product.kds_name(),
                hex::encode(chip),
                tcb.bootloader,
                tcb.tee,
                tcb.snp,
                tcb.microcode
            )
        );
        assert!(!url.contains("fmcSPL"));
        assert!(vcek_url(KDS_BASE, product, &chip[..8], &tcb).is_err());
    }
    let t = Tcb::decode(Tcb::encode(Product::Milan, 0, 3, 0, 8, 115), Product::Milan);
    assert_eq!(
        vcek_url("https://kds.test/", Product::Milan, &[0x11; 64], &t).unwrap(),
        format!("https://kds.test/vcek/v1/Milan/{}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115", "11".repeat(64))
    );
}

#[test]
fn chain_and_crl_urls_for_vcek_and_vlek() {
    assert_eq!(
        cert_chain_url(KDS_BASE, Product::Milan, SigningKey::Vcek),
        "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"
    );
    assert_eq!(
        cert_chain_url(KDS_BASE, Product::Genoa, SigningKey::Vlek),
        "https://kdsintf.amd.com/vlek/v1/Genoa/cert_chain"
    );
    assert_eq!(
        crl_url(KDS_BASE, Product::Turin, SigningKey::Vcek),
        "https://kdsintf.amd.com/vcek/v1/Turin/crl"
    );
    assert_eq!(
        crl_url(KDS_BASE, Product::Milan, SigningKey::Vlek),
        "https://kdsintf.amd.com/vlek/v1/Milan/crl"
    );
}

#[test]
fn backoff_schedule() {
    let b = Backoff::default();
    assert_eq!(b.delay(0, None), Some(Duration::from_secs(1)));
    assert_eq!(b.delay(1, None), Some(Duration::from_secs(2)));
    assert_eq!(b.delay(3, None), Some(Duration::from_secs(8)));
    assert_eq!(b.delay(4, None), None); // 5 attempts in all
    assert_eq!(b.delay(0, Some(Duration::from_secs(30))), Some(Duration::from_secs(30)));
    assert_eq!(b.delay(0, Some(Duration::from_secs(3600))), Some(Duration::from_secs(60)));
    let long =
        Backoff { initial: Duration::from_secs(1), max_delay: Duration::from_secs(60), max_attempts: 100 };
    assert_eq!(long.delay(40, None), Some(Duration::from_secs(60)));
}

/// Serves fixed URLs; 429 for the first `throttle` requests.
struct FakeKds {
    routes: HashMap<String, Vec<u8>>,
    throttle: usize,
    calls: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

impl KdsFetcher for FakeKds {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<FetchResponse, KdsError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().unwrap().push(url.to_owned());
            if n < self.throttle {
                return Ok(FetchResponse {
                    status: 429,
                    retry_after: Some(Duration::from_millis(5)),
                    body: vec![],
                });
            }
            Ok(match self.routes.get(url) {
                Some(b) => FetchResponse { status: 200, retry_after: None, body: b.clone() },
                None => FetchResponse { status: 404, retry_after: None, body: vec![] },
            })
        })
    }
}

fn fast() -> Backoff {
    Backoff { initial: Duration::from_millis(1), max_delay: Duration::from_millis(10), max_attempts: 4 }
}

#[tokio::test]
async fn fetched_vcek_verifies_the_report_and_is_cached_by_full_tcb() {
    let Some(dv) = Vectors::dev() else { return };
    let r = report(&dv, "turin_v5_oak");
    let tcb = r.tcb(r.reported_tcb_raw(), Product::Turin);
    let chip = r.chip_id();
    let hwid = hwid_from_chip_id(Product::Turin, &chip).to_vec();
    let vcek = dv.read("reports/turin_v5_oak.vcek.der");
    let url = vcek_url(KDS_BASE, Product::Turin, &hwid, &tcb).unwrap();
    let fake = Arc::new(FakeKds {
        routes: HashMap::from([(url.clone(), vcek.clone())]),
        throttle: 2,
        calls: AtomicUsize::new(0),
        seen: Mutex::new(vec![]),
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = KdsCache::new(dir.path().join("kds"));
    let kds = KdsClient::new(KDS_BASE, fake.clone(), Some(cache.clone()), fast());

    // Rate limited twice, then served.
    let got = kds.vcek(Product::Turin, &hwid, &tcb).await.unwrap();
    assert_eq!(got, vcek);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    // What KDS returned is verified like any other certificate.
    let input = vouch_attestation::ChainInput { leaf: &got, ..Default::default() };
    vouch_attestation::verify_report(&vouch_attestation::TrustAnchors::amd(), &r.as_bytes()[..], &input, NOW)
        .unwrap();

    // Second time: from the cache, no request.
    assert_eq!(kds.vcek(Product::Turin, &hwid, &tcb).await.unwrap(), vcek);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    // The cache key includes every TCB component, FMC too: another FMC is another VCEK.
    let other_fmc = Tcb::decode(
        Tcb::encode(Product::Turin, 1, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        Product::Turin,
    );
    let k1 = CacheKey::Vcek { product: Product::Turin, hwid: hwid.clone(), tcb };
    let k2 = CacheKey::Vcek { product: Product::Turin, hwid: hwid.clone(), tcb: other_fmc };
    assert_ne!(k1.file_name(), k2.file_name());
    assert!(k1.file_name().contains("fmc0") && k2.file_name().contains("fmc1"));
    assert!(k1.file_name().contains("Turin") && k1.file_name().contains("3b42092f69c656d3"));
    assert_eq!(cache.get(&k1).unwrap(), Some(vcek.clone()));
    assert_eq!(cache.get(&k2).unwrap(), None);
    let milan = CacheKey::Vcek { product: Product::Milan, hwid: hwid.clone(), tcb };
    assert_ne!(milan.file_name(), k1.file_name());
    // An unknown TCB is a 404, not retried.
    let before = fake.calls.load(Ordering::SeqCst);
    let err = kds.vcek(Product::Turin, &hwid, &other_fmc).await.unwrap_err();
    assert!(matches!(err, KdsError::Status { status: 404, .. }), "{err}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), before + 1);

    // Offline: the cache still answers; anything else is refused without a request.
    let offline = KdsClient::offline(Some(cache.clone()));
    assert_eq!(offline.vcek(Product::Turin, &hwid, &tcb).await.unwrap(), vcek);
    assert!(matches!(offline.vcek(Product::Turin, &hwid, &other_fmc).await, Err(KdsError::Offline { .. })));
    assert!(matches!(
        offline.crl(Product::Turin, SigningKey::Vcek, false).await,
        Err(KdsError::Offline { .. })
    ));
}

#[tokio::test]
async fn persistent_rate_limiting_gives_up_and_crl_refresh_bypasses_the_cache() {
    let Some(dv) = Vectors::dev() else { return };
    let crl = dv.read("crl/milan_2026-08-19.crl");
    let url = crl_url(KDS_BASE, Product::Milan, SigningKey::Vcek);
    let fake = Arc::new(FakeKds {
        routes: HashMap::from([(url.clone(), crl.clone())]),
        throttle: 100,
        calls: AtomicUsize::new(0),
        seen: Mutex::new(vec![]),
    });
    let kds = KdsClient::new(KDS_BASE, fake.clone(), None, fast());
    let err = kds.crl(Product::Milan, SigningKey::Vcek, false).await.unwrap_err();
    assert!(matches!(err, KdsError::GaveUp { attempts: 4, .. }), "{err}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 4);

    let fake = Arc::new(FakeKds {
        routes: HashMap::from([(url.clone(), crl.clone())]),
        throttle: 0,
        calls: AtomicUsize::new(0),
        seen: Mutex::new(vec![]),
    });
    let dir = tempfile::tempdir().unwrap();
    let kds = KdsClient::new(KDS_BASE, fake.clone(), Some(KdsCache::new(dir.path())), fast());
    assert_eq!(kds.crl(Product::Milan, SigningKey::Vcek, false).await.unwrap(), crl);
    assert_eq!(kds.crl(Product::Milan, SigningKey::Vcek, false).await.unwrap(), crl);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(kds.crl(Product::Milan, SigningKey::Vcek, true).await.unwrap(), crl);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    assert_eq!(fake.seen.lock().unwrap()[0], "https://kdsintf.amd.com/vcek/v1/Milan/crl");
}

/// A fake serving `body` at the Milan VCEK CRL URL.
fn crl_server(body: Vec<u8>) -> Arc<FakeKds> {
    Arc::new(FakeKds {
        routes: HashMap::from([(crl_url(KDS_BASE, Product::Milan, SigningKey::Vcek), body)]),
        throttle: 0,
        calls: AtomicUsize::new(0),
        seen: Mutex::new(vec![]),
    })
}

#[tokio::test]
async fn a_cached_crl_past_its_next_update_is_fetched_anew_and_the_higher_number_kept() {
    let Some(dv) = Vectors::dev() else { return };
    // AMD's Milan CRLs: #9 (2026-06-22, next 2026-08-08) and #11 (2026-08-19, next 2026-10-04).
    let old = dv.read("crl/milan_2026-06-22.crl");
    let new = dv.read("crl/milan_2026-08-19.crl");
    assert_eq!(vouch_attestation::crl::unverified_freshness(&old).1, Some(9));
    assert_eq!(vouch_attestation::crl::unverified_freshness(&new).1, Some(11));
    let sept = 1_788_220_800; // 2026-09-01
    let dir = tempfile::tempdir().unwrap();
    let cache = KdsCache::new(dir.path());
    let key = CacheKey::Crl { product: Product::Milan, signer: SigningKey::Vcek };

    // Cached #9 is stale in September: fetched anew, and the cache now holds #11.
    cache.put(&key, &old).unwrap();
    let fake = crl_server(new.clone());
    let kds = KdsClient::new(KDS_BASE, fake.clone(), Some(KdsCache::new(dir.path())), fast());
    assert_eq!(kds.current_crl(Product::Milan, SigningKey::Vcek, sept).await.unwrap(), new);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get(&key).unwrap().unwrap(), new);
    // Current: served from the cache, no fetch.
    assert_eq!(kds.current_crl(Product::Milan, SigningKey::Vcek, sept).await.unwrap(), new);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);

    // After #11's nextUpdate a KDS (or a cache in front of it) serving the older #9:
    // the higher number is kept, in the cache too.
    let october = 1_791_590_400; // 2026-10-10
    let fake = crl_server(old.clone());
    let kds = KdsClient::new(KDS_BASE, fake.clone(), Some(KdsCache::new(dir.path())), fast());
    assert_eq!(kds.current_crl(Product::Milan, SigningKey::Vcek, october).await.unwrap(), new);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get(&key).unwrap().unwrap(), new);
}
