//! Supply-chain rules checked against the committed Cargo.lock, so CI enforces them
//! without network access to an advisory database:
//! - one crypto provider (aws-lc-rs, via rustls): no `ring`, no OpenSSL;
//! - no `serde_cbor` (archived; RUSTSEC-2021-0127) — CBOR is `ciborium`;
//! - no `rsa` crate (RUSTSEC-2023-0071, Marvin, no fixed version): AMD's RSA-PSS
//!   signatures are verified with aws-lc-rs, and the `sev` crate is used without its
//!   `crypto_nossl` feature (which is what would bring `rsa` in).

use vouch_e2e::repo;

fn locked_packages() -> Vec<String> {
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock is committed");
    lock.lines().filter_map(|l| l.strip_prefix("name = \"")).map(|n| n.trim_end_matches('"').to_owned()).collect()
}

#[test]
fn banned_crates_are_not_in_the_lock_file() {
    let pkgs = locked_packages();
    assert!(pkgs.len() > 100, "lock file looks empty");
    for banned in ["ring", "openssl", "openssl-sys", "serde_cbor", "rsa"] {
        assert!(!pkgs.iter().any(|p| p == banned), "{banned} must not be a dependency");
    }
    for required in ["aws-lc-rs", "ciborium", "rustls", "sev"] {
        assert!(pkgs.iter().any(|p| p == required), "{required} expected in the tree");
    }
}
