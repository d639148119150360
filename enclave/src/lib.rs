//! `vouch-enclave`: the part of Vouch that runs inside the AMD SEV-SNP guest (the trusted
//! side). It loads the model, runs it, and — in `serve` — binds its outputs to hardware
//! attestation reports.
//!
//! ```text
//!  model file ──► model::Model (digest = SHA-256 of the bytes loaded)
//!                    │
//!  generate ─────────┤  in-process, one prompt, no network, no attestation (baseline)
//!                    │
//!  serve ──► model::Engine (model thread, continuous batching) ──► attested TLS / HTTP API
//! ```
//!
//! What this crate does not do: trust the host. The host only forwards ciphertext; every
//! claim a client checks is produced here.

pub mod generate;
pub mod model;
pub mod models;

pub mod answer_log;
pub mod api;
pub mod notary;
pub mod provider;
pub mod request;
pub mod serve;
#[cfg(feature = "sim")]
pub mod sim_provider;
pub mod tsm_provider;
