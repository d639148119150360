//! Supply-chain rules checked against the resolved dependency tree (`cargo tree` over the
//! committed Cargo.lock; Cargo.lock itself also lists optional dependencies that are never
//! built, such as rustls-webpki's `ring`), so CI enforces them without an advisory database:
//! - one crypto provider (aws-lc-rs, via rustls): no `ring`, no OpenSSL;
//! - no `serde_cbor` (archived; RUSTSEC-2021-0127) — CBOR is `ciborium`;
//! - no `rsa` crate (RUSTSEC-2023-0071, Marvin, no fixed version): AMD's RSA-PSS
//!   signatures are verified with aws-lc-rs, and the `sev` crate is used without its
//!   `crypto_nossl` feature (which is what would bring `rsa` in).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a test failure

use vouch_e2e::repo;

fn locked_packages() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(repo())
        .args([
            "tree",
            "--workspace",
            "--locked",
            "--target",
            "all",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
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
