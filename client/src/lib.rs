//! # vouch-client
//!
//! The CLIENT side of Vouch: everything a user runs to decide whether an answer came
//! from a genuine AMD SEV-SNP enclave running the expected model. It trusts exactly two
//! things: AMD's root keys (compiled into `vouch-attestation`) and its own policy file.
//! The host, the hypervisor and the network in between are the adversary.
//!
//! ```text
//!   vouch CLI / proxy / your code
//!        │ ClientConfig { url, ClientPolicy, TrustAnchors, KDS }
//!        ▼
//!   VouchClient ── TLS 1.3 (tls) ── host (untrusted) ── enclave
//!        │  1. GET /v1/attestation?nonce  → verify_evidence + TLS key binding → pin
//!        │  2. POST /v1/chat/completions  → JSON | SSE (sse)
//!        ▼
//!   receipts::check_receipt (chain, signature, policy, Merkle, request/output hashes)
//!        ▼
//!   Verdict (verified, SIMULATED or AMD, product, TCB, measurement, model)
//! ```
//!
//! Modules: [`policy`] (the TOML policy), [`kds`] (AMD KDS URLs, cache, back-off —
//! pluggable, offline-capable), [`tls`] (attestation-bound TLS), [`client`] (the
//! attested HTTPS client), [`sse`], [`receipts`] (offline receipt checks and receipt
//! files), [`verdict`], [`report_view`] (`verify-report`), [`proxy`] (local verifying
//! OpenAI endpoint), [`cli`].
//!
//! What it does not do: trust any certificate because it arrived (VCEKs, chains and
//! CRLs are verified against the roots), send a prompt before the connection's key is
//! attested, or report success for a simulated enclave without saying SIMULATED.
//!
//! From Rust:
//!
//! ```no_run
//! # async fn demo() -> Result<(), vouch_client::client::ClientError> {
//! use vouch_client::client::{ChatRequest, ClientConfig, VouchClient};
//! use vouch_client::policy::ClientPolicy;
//! let client = VouchClient::new(ClientConfig::new("https://127.0.0.1:8443", ClientPolicy::default()))?;
//! let attestation = client.attest().await?;            // fresh nonce, key pinned
//! println!("{}", attestation.verdict());
//! let answer = client.chat(&ChatRequest::prompt("Hello"), &mut |delta| print!("{delta}")).await?;
//! println!("\n{}", answer.verdict);                     // receipt verified
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod client;
pub mod kds;
pub mod policy;
pub mod proxy;
pub mod receipts;
pub mod replay;
pub mod report_view;
pub mod seen;
pub mod sse;
pub mod tls;
pub mod verdict;

pub use client::{ChatOutcome, ChatRequest, ClientConfig, ClientError, GenerationApi, VouchClient};
pub use policy::ClientPolicy;
pub use verdict::Verdict;
