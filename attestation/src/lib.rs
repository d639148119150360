//! # vouch-attestation
//!
//! Everything a Vouch verifier needs to decide whether an answer came from a genuine
//! AMD SEV-SNP enclave running the expected code and model — as a pure library: no
//! I/O, no async, no clock. Time and trusted roots are arguments; bytes come in, typed
//! verdicts come out. The enclave, the client and any third-party auditor share it.
//!
//! ```text
//!  report bytes + VCEK/VLEK (+ chain, CRL)          receipt (CBOR)
//!        │                                              │
//!        ▼  report::Report::parse (strict)              ▼  receipt::verify_receipt
//!  verify::verify_chain ── TrustAnchors (AMD roots compiled in; sim root only if asked)
//!        ▼
//!  verify::verify_report_with_chain ─► VerifiedReport ─► policy::validate
//!                                            │
//!                                            ▼  binding: REPORT_DATA == H(claims bytes)
//! ```
//!
//! What it does not do: fetch certificates (the client's KDS module does), read
//! files, open devices (the enclave's providers do), or keep a clock.
#![forbid(unsafe_code)]

pub mod binding;
pub mod cert;
pub mod crl;
pub mod error;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod product;
pub mod receipt;
pub mod report;
pub mod roots;
pub mod sim;
pub mod tlog;
pub mod verify;

pub use error::{CertRole, VerifyError};
pub use policy::{validate, warnings, Policy, PolicyViolations, Violation, Warning};
pub use product::{Product, Tcb, TcbComponent};
pub use report::{Report, SigningKey};
pub use verify::{
    verify_chain, verify_report, verify_report_with_chain, ChainInput, RootKind, TrustAnchors, VerifiedChain,
    VerifiedReport,
};
