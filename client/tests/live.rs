//! The live path (attest, chat, proxy) against an in-test fake enclave that speaks the
//! wire protocol with a TEST-ONLY simulated secure processor: TLS with a self-signed
//! rcgen key, evidence binding that key, receipts for every answer. Hostile variants
//! check that a mis-bound key and a wrong receipt are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a test failure

mod common;
use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Digest;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use vouch_attestation::binding;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Honest,
    /// Evidence binds a different TLS key (a relayed or MITM'd attestation).
    WrongKey,
    /// Receipts commit to a different output than the one sent.
    WrongOutput,
    /// Evidence and receipts without the VCEK (and no CRL), as from a host that
    /// installed no extended-report certificate table: the client must complete them
    /// from KDS. (The simulated ASK stays: unlike AMD's, it is compiled in nowhere.)
    NoVcek,
}

/// Drops the VCEK from an encoded evidence or receipt bundle ([`Mode::NoVcek`]).
fn strip_vcek(cbor: Vec<u8>) -> Vec<u8> {
    use vouch_attestation::receipt::{Evidence, Receipt};
    if let Ok(mut r) = binding::from_cbor::<Receipt>(&cbor) {
        r.bundle.leaf_cert.clear();
        return binding::to_cbor(&r);
    }
    let mut e: Evidence = binding::from_cbor(&cbor).unwrap();
    e.bundle.leaf_cert.clear();
    binding::to_cbor(&e)
}

const ANSWER: [&str; 3] = ["Hello", " there", "!"];

async fn fake_enclave(mode: Mode) -> (String, tempfile::TempDir) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki: [u8; 32] = sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)).into();
    let cert =
        rcgen::CertificateParams::new(vec!["vouch-enclave".into()]).unwrap().self_signed(&key).unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sp = Arc::new(sim());
    std::fs::write(dir.path().join("sim-ark.pem"), sp.ark_pem()).unwrap();
    // The code identity these fake reports carry (measurement 09…09), pinned as the
    // real sim enclave's sim-policy.toml pins its own.
    std::fs::write(
        dir.path().join("sim-policy.toml"),
        format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode([9u8; 48])),
    )
    .unwrap();
    let bound = if mode == Mode::WrongKey { [0xEE; 32] } else { spki };
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let sp = sp.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let sp = sp.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let query = req.uri().query().unwrap_or("").to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let (ct, out): (&str, Vec<u8>) = match path.as_str() {
                            "/v1/attestation" => {
                                let nonce = hex::decode(query.strip_prefix("nonce=").unwrap()).unwrap();
                                let ev = evidence(&sp, &nonce, &bound);
                                ("application/cbor", if mode == Mode::NoVcek { strip_vcek(ev) } else { ev })
                            }
                            // The dishonest modes also list the model under another digest.
                            "/v1/models" => (
                                "application/json",
                                serde_json::json!({"object": "list", "data": [{
                                    "id": "test-model",
                                    "object": "model",
                                    "vouch_model_sha256": hex::encode(match mode {
                                        Mode::Honest | Mode::NoVcek => MODEL_SHA256,
                                        _ => [9; 32],
                                    }),
                                }]})
                                .to_string()
                                .into_bytes(),
                            ),
                            _ => {
                                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                let text: String = ANSWER.concat();
                                let committed = if mode == Mode::WrongOutput {
                                    "Goodbye".to_owned()
                                } else {
                                    text.clone()
                                };
                                let r = receipt(&sp, &body, &committed, &spki);
                                let r = if mode == Mode::NoVcek { strip_vcek(r) } else { r };
                                let r = base64::engine::general_purpose::STANDARD.encode(r);
                                if req["stream"] == true {
                                    let mut s = String::new();
                                    for d in ANSWER {
                                        let c = serde_json::json!({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":d},"finish_reason":null}]});
                                        s.push_str(&format!("data: {c}\n\n"));
                                    }
                                    let c = serde_json::json!({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"vouch_receipt":r});
                                    s.push_str(&format!("data: {c}\n\ndata: [DONE]\n\n"));
                                    ("text/event-stream", s.into_bytes())
                                } else {
                                    let v = serde_json::json!({"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":text},"finish_reason":"stop"}],"vouch_receipt":r});
                                    ("application/json", v.to_string().into_bytes())
                                }
                            }
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(out)));
                        resp.headers_mut().insert("content-type", ct.parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (url, dir)
}

async fn run(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(args)
        .env("RUST_LOG", "off")
        .env("VOUCH_STATE_DIR", common::fresh_state_dir())
        .output()
        .await
        .unwrap()
}

fn root(dir: &tempfile::TempDir) -> String {
    dir.path().join("sim-ark.pem").to_string_lossy().into_owned()
}

/// The policy pinning the fake enclave's code identity.
fn pinned(dir: &tempfile::TempDir) -> String {
    dir.path().join("sim-policy.toml").to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attest_refuses_sim_without_opt_in_and_says_simulated_with_it() {
    let (url, dir) = fake_enclave(Mode::Honest).await;
    let o = run(&["attest", "--url", &url, "--offline", "--policy", &pinned(&dir)]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not signed by AMD (simulated root); pass --trust-sim-root"),
        "{}",
        stderr(&o)
    );

    let o = run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir)]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("SIMULATED"), "{}", stdout(&o));
    assert!(stdout(&o).contains(MODEL_NAME));

    let o =
        run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir), "--json"])
            .await;
    assert_eq!(code(&o), 0);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["simulated"], true);
    assert_eq!(j["model_sha256"], hex::encode(MODEL_SHA256));
    assert_eq!(j["enclave_version"], "0.1.0-test");

    // A policy that wants another model refuses.
    let pol = dir.path().join("p.toml");
    std::fs::write(
        &pol,
        format!(
            "accepted_models = [\"{}\"]\n[snp]\nmeasurements = [\"{}\"]\n",
            hex::encode([5u8; 32]),
            hex::encode([9u8; 48])
        ),
    )
    .unwrap();
    let o =
        run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", pol.to_str().unwrap()])
            .await;
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("accepted_models"), "{}", stderr(&o));

    // A policy that pins the model but no code is refused when loaded, with the reason.
    std::fs::write(&pol, format!("accepted_models = [\"{}\"]\n", hex::encode(MODEL_SHA256))).unwrap();
    let o =
        run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", pol.to_str().unwrap()])
            .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("pins models but no code identity"), "{}", stderr(&o));

    // Nobody listening: I/O error.
    let o = run(&[
        "attest",
        "--url",
        "https://127.0.0.1:1",
        "--trust-sim-root",
        &root(&dir),
        "--policy",
        &pinned(&dir),
    ])
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // Plain http is a usage error.
    let o = run(&["attest", "--url", "http://127.0.0.1:1"]).await;
    assert_eq!(code(&o), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_code_is_refused_unless_allowed_and_then_said_first() {
    let (url, dir) = fake_enclave(Mode::Honest).await;
    // The default policy pins no code: refused, saying what to pin (the measurement).
    let o = run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir)]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pins no code identity") && stderr(&o).contains(&hex::encode([9u8; 48])),
        "{}",
        stderr(&o)
    );
    let o = run(&["chat", "--url", &url, "--trust-sim-root", &root(&dir), "hi"]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!stdout(&o).contains("Hello"), "answered with no pinned code: {}", stdout(&o));
    // --allow-any-code: verified, and the first line says the code was not pinned.
    let o = run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--allow-any-code"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let first = stdout(&o).lines().next().unwrap_or_default().to_owned();
    assert!(first.contains("CODE IDENTITY NOT PINNED"), "{first}");
    let o =
        run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--allow-any-code", "--json"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(j["headline"].as_str().unwrap().contains("CODE IDENTITY NOT PINNED"), "{j}");
    assert_eq!(j["code_identity_pinned"], false);
    // The proxy attests before it listens: with no pinned code it never serves.
    let o = run(&["proxy", "--url", &url, "--listen", "127.0.0.1:0", "--trust-sim-root", &root(&dir)]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("pins no code identity"), "{}", stderr(&o));
    // Pinned: no such line.
    let o = run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir)]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stdout(&o).contains("NOT PINNED"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_for_another_tls_key_is_refused() {
    let (url, dir) = fake_enclave(Mode::WrongKey).await;
    let o = run(&["attest", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir)]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("binds TLS key"), "{}", stderr(&o));
    let o =
        run(&["chat", "--url", &url, "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir), "hi"]).await;
    assert_eq!(code(&o), 1);
    assert!(!stdout(&o).contains("Hello"), "a prompt was answered before attestation: {}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_verifies_and_saves_a_re_checkable_receipt() {
    let (url, dir) = fake_enclave(Mode::Honest).await;
    let out = dir.path().join("receipt.json");
    let o = run(&[
        "chat",
        "--url",
        &url,
        "--trust-sim-root",
        &root(&dir),
        "--policy",
        &pinned(&dir),
        "--receipt-out",
        out.to_str().unwrap(),
        "--max-tokens",
        "16",
        "--seed",
        "0",
        "Say hello",
    ])
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.starts_with("Hello there!"), "{s}");
    assert!(s.contains("SIMULATED") && s.contains("request and output match the receipt"), "{s}");
    let o =
        run(&["verify", out.to_str().unwrap(), "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir)])
            .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&[
        "verify",
        out.to_str().unwrap(),
        "--trust-sim-root",
        &root(&dir),
        "--policy",
        &pinned(&dir),
        "--json",
    ])
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["exchange_checked"], true, "{j}");
    // A bare receipt is not an answer: exit 1 unless --receipt-only, which says so.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let bare = dir.path().join("bare.b64");
    std::fs::write(&bare, saved["receipt"].as_str().unwrap()).unwrap();
    let args = ["verify", bare.to_str().unwrap(), "--trust-sim-root", &root(&dir), "--policy", &pinned(&dir)];
    let o = run(&args).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--receipt-only"), "{}", stderr(&o));
    let o = run(&[&args[..], &["--receipt-only"]].concat()).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).lines().next().unwrap_or_default().contains("RECEIPT ONLY"), "{}", stdout(&o));
    let o = run(&[&args[..], &["--receipt-only", "--json"]].concat()).await;
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["exchange_checked"], false, "{j}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(saved["output"], "Hello there!");
    let req =
        base64::engine::general_purpose::STANDARD.decode(saved["request_body"].as_str().unwrap()).unwrap();
    let req: serde_json::Value = serde_json::from_slice(&req).unwrap();
    assert_eq!(req["model"], MODEL_NAME);
    assert_eq!(req["temperature"], 0.0);
    assert_eq!(req["max_tokens"], 16);

    let o = run(&[
        "chat",
        "--url",
        &url,
        "--trust-sim-root",
        &root(&dir),
        "--policy",
        &pinned(&dir),
        "--no-stream",
        "--json",
        "Say hello",
    ])
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["text"], "Hello there!");
    assert_eq!(j["verdict"]["receipt"]["exchange_checked"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_another_output_is_refused() {
    let (url, dir) = fake_enclave(Mode::WrongOutput).await;
    let root = root(&dir);
    let pinned = pinned(&dir);
    for extra in [&[][..], &["--no-stream"][..]] {
        let mut args = vec!["chat", "--url", &url, "--trust-sim-root", &root, "--policy", &pinned];
        args.extend_from_slice(extra);
        args.push("hi");
        let o = run(&args).await;
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(
            stderr(&o).contains("NOT verified") && stderr(&o).contains("output mismatch"),
            "{}",
            stderr(&o)
        );
    }
}

async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

async fn start_proxy(url: &str, dir: &tempfile::TempDir) -> (tokio::process::Child, String) {
    // The fake enclave signs a one-leaf log per answer, not one growing log: a proxy that
    // kept checkpoints would rightly call its second answer a fork. The log is tested
    // against the real enclave (tests/tests/log.rs).
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vouch"))
        .env("VOUCH_STATE_DIR", common::fresh_state_dir())
        .args([
            "proxy",
            "--no-log-state",
            "--url",
            url,
            "--listen",
            "127.0.0.1:0",
            "--trust-sim-root",
            &root(dir),
            "--policy",
            &pinned(dir),
        ])
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let addr =
        line.strip_prefix("vouch proxy listening on ").unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(line.contains("SIMULATED"), "{line}");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_adds_verdicts_and_refuses_unverifiable_answers() {
    let (url, dir) = fake_enclave(Mode::Honest).await;
    let (_child, addr) = start_proxy(&url, &dir).await;
    let body = r#"{"model":"test-model","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text) = http(&addr, "POST", "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{text}");
    let json: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["vouch_verdict"]["verified"], true);
    assert_eq!(json["vouch_verdict"]["simulated"], true);
    assert_eq!(json["choices"][0]["message"]["content"], "Hello there!");

    let body = r#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let (status, text) = http(&addr, "POST", "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("text/event-stream"));
    assert!(text.contains("\"vouch_verdict\"") && text.contains("data: [DONE]"), "{text}");

    let (status, text) = http(&addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("test-model") && text.contains("vouch_verdict"));
    let (status, _) = http(&addr, "GET", "/v1/other", "").await;
    assert_eq!(status, 404);

    let (url, dir) = fake_enclave(Mode::WrongOutput).await;
    let (_child2, addr) = start_proxy(&url, &dir).await;
    let body = r#"{"model":"test-model","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text) = http(&addr, "POST", "/v1/chat/completions", body).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("output mismatch") && !text.contains("Hello there"), "{text}");
    let body = r#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let (_, text) = http(&addr, "POST", "/v1/chat/completions", body).await;
    assert!(text.contains("vouch_verification_error") && !text.contains("[DONE]"), "{text}");
    // A model list that names a digest the attestation does not bind is refused.
    let (status, text) = http(&addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains(
            r#"model list: model \"test-model\" is listed with a digest the attestation does not bind"#
        ),
        "{text}"
    );
}

/// Serves one product's VCEK and CRL at their KDS URLs.
struct FakeKds(std::collections::HashMap<String, Vec<u8>>);

impl vouch_client::kds::KdsFetcher for FakeKds {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> vouch_client::kds::BoxFuture<'a, Result<vouch_client::kds::FetchResponse, vouch_client::kds::KdsError>>
    {
        Box::pin(async move {
            Ok(match self.0.get(url) {
                Some(b) => {
                    vouch_client::kds::FetchResponse { status: 200, retry_after: None, body: b.clone() }
                }
                None => vouch_client::kds::FetchResponse { status: 404, retry_after: None, body: vec![] },
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_without_certificates_are_completed_from_kds_and_verify_offline() {
    use vouch_client::kds::{crl_url, hwid_from_chip_id, vcek_url, Backoff, KdsClient};
    let (url, dir) = fake_enclave(Mode::NoVcek).await;
    let sp = sim();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let base = "https://kds.test";
    let product = sp.product();
    let tcb = vouch_attestation::Tcb::decode(sp.tcb(), product);
    let chip = sp.chip_id();
    let mut routes = std::collections::HashMap::new();
    routes.insert(
        vcek_url(base, product, hwid_from_chip_id(product, &chip), &tcb).unwrap(),
        sp.vcek_der().to_vec(),
    );
    let crl = sp.crl(&[], now - 86_400, now + 30 * 86_400).unwrap();
    routes.insert(crl_url(base, product, vouch_attestation::SigningKey::Vcek), crl);
    let kds = KdsClient::new(base, Arc::new(FakeKds(routes)), None, Backoff::default());

    let mut anchors = vouch_attestation::TrustAnchors::amd();
    anchors.dangerous_add_simulated_root(sp.ark_der(), product).unwrap();
    let mut policy = vouch_client::policy::ClientPolicy::default();
    policy.snp.measurements = vec![vouch_attestation::policy::Hex([9; 48])];
    policy.snp.require_crl = true;

    // Without KDS (offline), neither evidence nor receipt can be checked.
    let mut cfg = vouch_client::client::ClientConfig::new(&url, policy.clone());
    cfg.anchors = anchors.clone();
    let offline = vouch_client::client::VouchClient::new(cfg.clone()).unwrap();
    let err = offline.attest().await.unwrap_err();
    assert!(err.to_string().contains("KDS"), "{err}");

    // With KDS: attestation and the answer's receipt are completed and verify, CRL checked.
    cfg.kds = Some(kds);
    let client = vouch_client::client::VouchClient::new(cfg).unwrap();
    let out = client.chat(&vouch_client::client::ChatRequest::prompt("hi"), &mut |_| {}).await.unwrap();
    assert_eq!(out.text, "Hello there!");
    assert!(out.verdict.crl_checked);
    // The receipt kept is the completed one: it verifies offline, with no network,
    // under require_crl, with the request and output it was issued for.
    let saved = base64::engine::general_purpose::STANDARD.decode(&out.receipt_b64).unwrap();
    let r: vouch_attestation::receipt::Receipt = binding::from_cbor(&saved).unwrap();
    assert!(!r.bundle.leaf_cert.is_empty() && !r.bundle.crl.is_empty());
    let v = vouch_client::receipts::check_receipt(
        &anchors,
        &policy,
        &saved,
        Some((&out.request_body, &out.text)),
        None,
        now,
    )
    .unwrap();
    assert!(v.crl_checked && v.exchange_checked == Some(true));
    // And through the CLI, offline, from a --receipt-out style file.
    let file =
        vouch_client::receipts::ReceiptFile::new(&out.receipt_b64, &out.request_body, &out.text, None, None);
    let path = dir.path().join("completed.json");
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let pol = dir.path().join("crl.toml");
    std::fs::write(
        &pol,
        format!(
            "require_crl = true\noffline = true\n[snp]\nmeasurements = [\"{}\"]\n",
            hex::encode([9u8; 48])
        ),
    )
    .unwrap();
    let o = run(&[
        "verify",
        path.to_str().unwrap(),
        "--trust-sim-root",
        &root(&dir),
        "--policy",
        pol.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("CRL          checked"), "{}", stdout(&o));
    // The receipt as the enclave sent it (no VCEK) does not verify offline.
    let mut bare = r.clone();
    bare.bundle.leaf_cert.clear();
    let err =
        vouch_client::receipts::check_receipt(&anchors, &policy, &binding::to_cbor(&bare), None, None, now)
            .unwrap_err();
    assert!(err.to_string().contains("leaf"), "{err}");
}
