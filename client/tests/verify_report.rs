//! `vouch verify-report` on the genuine AMD vectors: authentic reports exit 0 and print
//! their decoded fields; every tampered, truncated or mismatched input exits 1 with a
//! reason; unreadable files and bad flags exit 2.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a test failure

mod common;
use common::*;

const NOW_S: &str = "1788220800";

/// VLEKs are short-lived; their vectors verify at a time inside their validity.
fn now_for(name: &str) -> &'static str {
    if name.contains("vlek") {
        "1750000000"
    } else {
        NOW_S
    }
}

fn run_vector(dv: &Vectors, v: &serde_json::Value, extra: &[&str]) -> std::process::Output {
    let now = now_for(v["name"].as_str().unwrap());
    let report = dv.arg(v["report"].as_str().unwrap());
    let leaf = dv.arg(v["leaf_cert"].as_str().unwrap());
    let chain = dv.arg(v["chain"].as_str().unwrap());
    let mut args =
        vec!["verify-report", "--report", &report, "--vcek", &leaf, "--chain", &chain, "--now", now];
    args.extend_from_slice(extra);
    vouch(&args)
}

#[test]
fn every_genuine_report_verifies_and_prints_its_measurement() {
    let Some(dv) = Vectors::dev() else { return };
    let m = dv.manifest();
    let positives = m["positive"].as_array().unwrap();
    assert!(positives.len() >= 27);
    for v in positives {
        let name = v["name"].as_str().unwrap();
        let json: serde_json::Value = dv.fields_of(v);
        let measurement = json["report"]["measurement"].as_str().unwrap();
        let o = run_vector(&dv, v, &["--authenticity-only"]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(measurement), "{name}: measurement missing:\n{out}");
        assert!(out.contains("AUTHENTIC") && out.contains("NO POLICY APPLIED"), "{name}");
        assert!(out.contains(v["generation"].as_str().unwrap()), "{name}");
        assert!(out.contains(v["signer"].as_str().unwrap()), "{name}");
        assert!(!out.contains("SIMULATED"), "{name}");
        for field in [
            "TCB reported",
            "TCB committed",
            "TCB launch",
            "debug=",
            "migrate_ma=",
            "single_socket=",
            "vmpl",
            "chip id",
            "CRL",
        ] {
            assert!(out.contains(field), "{name}: {field} missing:\n{out}");
        }
    }
}

#[test]
fn json_output_parses_and_matches_the_vector() {
    let Some(dv) = Vectors::dev() else { return };
    let m = dv.manifest();
    for v in m["positive"].as_array().unwrap().iter().filter(|v| {
        let n = v["name"].as_str().unwrap();
        n == "turin_v5_oak" || n == "milan_v2_virtee" || n == "milan_v3_vlek_aws_trustee"
    }) {
        let name = v["name"].as_str().unwrap();
        let expected: serde_json::Value = dv.fields_of(v);
        let o = run_vector(&dv, v, &["--json", "--authenticity-only"]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()["policy"], "none");
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let r = &expected["report"];
        assert_eq!(j["verified"], true);
        assert_eq!(j["simulated"], false);
        assert_eq!(j["root"], "AMD");
        assert_eq!(j["measurement"], r["measurement"]);
        assert_eq!(j["chip_id"], r["chip_id"]);
        assert_eq!(j["report_data"], r["report_data"]);
        assert_eq!(j["version"], r["version"]);
        assert_eq!(j["vmpl"], r["vmpl"]);
        assert_eq!(j["signer"], v["signer"]);
        assert_eq!(j["tcb"]["reported"]["snp"], r["reported_tcb"]["snp"]);
        assert_eq!(j["tcb"]["reported"]["microcode"], r["reported_tcb"]["microcode"]);
        assert_eq!(j["guest_policy"]["debug"], r["policy_decoded"]["debug"] == 1);
        assert_eq!(j["guest_policy"]["smt"], r["policy_decoded"]["smt"] == 1);
        assert_eq!(j["crl"]["checked"], false);
    }
    // Turin decodes its FMC component.
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--now",
        NOW_S,
        "--json",
        "--authenticity-only",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["product"], "Turin");
    assert_eq!(j["tcb"]["reported"]["fmc"], 0);
    assert_eq!(j["tcb"]["reported"]["microcode"], 71);
}

#[test]
fn every_tampered_vector_exits_1_with_a_reason() {
    let Some(dv) = Vectors::dev() else { return };
    let m = dv.manifest();
    for v in m["negative"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let o = run_vector(&dv, v, &[]);
        assert_eq!(code(&o), 1, "{name}: stdout {} stderr {}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("NOT AUTHENTIC"), "{name}: {err}");
        let expect = v["expect_failure"].as_str().unwrap();
        if expect == "report signature" {
            assert!(
                err.contains("report signature does not verify") || err.contains("padding"),
                "{name}: {err}"
            );
        } else {
            assert!(err.contains("signature") || err.contains("issuer"), "{name}: {err}");
        }
        // --json failures are JSON too.
        let o = run_vector(&dv, v, &["--json"]);
        assert_eq!(code(&o), 1);
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(j["verified"], false);
        assert!(j["error"].as_str().unwrap().contains("NOT AUTHENTIC"));
    }
}

#[test]
fn truncated_and_garbage_reports_exit_1() {
    let Some(dv) = Vectors::dev() else { return };
    let dir = tempfile::tempdir().unwrap();
    let genuine = dv.read("reports/genoa_v3_mstav.bin");
    for (label, bytes) in [
        ("truncated", genuine[..genuine.len() - 1].to_vec()),
        ("half", genuine[..600].to_vec()),
        ("empty", vec![]),
        ("extended", [genuine.clone(), vec![0]].concat()),
    ] {
        let p = dir.path().join(label);
        std::fs::write(&p, &bytes).unwrap();
        let o = vouch(&[
            "verify-report",
            "--report",
            p.to_str().unwrap(),
            "--vcek",
            &dv.arg("reports/genoa_v3_mstav.vcek.der"),
            "--now",
            NOW_S,
        ]);
        assert_eq!(code(&o), 1, "{label}: {}", stderr(&o));
        assert!(stderr(&o).contains("report is"), "{label}: {}", stderr(&o));
    }
    // A reserved field set: the strict parser names it.
    let mut bad = genuine.clone();
    bad[0x4C] = 1;
    let p = dir.path().join("reserved");
    std::fs::write(&p, &bad).unwrap();
    let o = vouch(&[
        "verify-report",
        "--report",
        p.to_str().unwrap(),
        "--vcek",
        &dv.arg("reports/genoa_v3_mstav.vcek.der"),
        "--now",
        NOW_S,
    ]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("reserved"), "{}", stderr(&o));
}

#[test]
fn certificate_time_and_crl_are_checked() {
    let Some(dv) = Vectors::dev() else { return };
    // Long after the VCEK expired.
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--now",
        "4102444800",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not valid at"), "{}", stderr(&o));
    // With the product's CRL (current at NOW): checked, not revoked.
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--crl",
        &dv.arg("crl/turin_2026-08-19.crl"),
        "--now",
        NOW_S,
        "--json",
        "--authenticity-only",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["crl"]["checked"], true);
    // Another product's CRL is refused.
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--crl",
        &dv.arg("crl/milan_2026-08-19.crl"),
        "--now",
        NOW_S,
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("CRL"), "{}", stderr(&o));
}

#[test]
fn policy_is_applied_when_given() {
    let Some(dv) = Vectors::dev() else { return };
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("strict.toml");
    // turin_v5_oak reports SNP SPL 2; demand 3, and a specific measurement.
    std::fs::write(&strict, "[snp]\nmeasurements = [\"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000aaaa\"]\n[snp.min_tcb.turin]\nsnp = 3\n").unwrap();
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--now",
        NOW_S,
        "--policy",
        strict.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("REJECTED by policy")
            && err.contains("snp is 2, minimum 3")
            && err.contains("measurement"),
        "{err}"
    );
    let ok = dir.path().join("ok.toml");
    let measurement = {
        let j: serde_json::Value = dv.fields_of(
            dv.manifest()["positive"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "turin_v5_oak")
                .unwrap(),
        );
        j["report"]["measurement"].as_str().unwrap().to_owned()
    };
    std::fs::write(&ok, format!("[snp]\nmeasurements = [\"{measurement}\"]\n[snp.min_tcb.turin]\nsnp = 2\n"))
        .unwrap();
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--now",
        NOW_S,
        "--policy",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("policy         {}: passed", ok.display())), "{}", stdout(&o));
    // An unreadable policy is an I/O error.
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/turin_v5_oak.bin"),
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
        "--now",
        NOW_S,
        "--policy",
        "/nonexistent/policy.toml",
    ]);
    assert_eq!(code(&o), 2);
}

#[test]
fn without_a_policy_the_strict_built_in_one_applies() {
    let Some(dv) = Vectors::dev() else { return };
    let run = |name: &str, extra: &[&str]| {
        let v =
            dv.manifest()["positive"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
        run_vector(&dv, &v, extra)
    };
    // A genuine Turin report, no --policy: refused, because no code identity is pinned;
    // the message says what to pin.
    let o = run("turin_v5_oak", &[]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("REJECTED by policy") && stderr(&o).contains("pins no code identity"),
        "{}",
        stderr(&o)
    );
    // --allow-any-code: verified under the built-in policy, which the output names, and
    // the missing TCB floor and code pin are said first.
    let o = run("turin_v5_oak", &["--allow-any-code"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("strict built-in policy: passed"), "{out}");
    let head: Vec<&str> = out.lines().take(4).collect();
    assert!(head.iter().any(|l| l.contains("CODE IDENTITY NOT PINNED")), "{out}");
    assert!(head[0].contains("CODE IDENTITY NOT PINNED"), "{out}");
    assert!(head.iter().any(|l| l.contains("no minimum TCB for Turin")), "{out}");
    // Milan is refused by default, naming the attack; authenticity-only still checks it.
    let o = run("milan_v3_mstav", &["--allow-any-code"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stderr(&o).contains("2605.12990"), "{}", stderr(&o));
    let o = run("milan_v3_mstav", &["--authenticity-only"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("NONE applied"), "{}", stdout(&o));
    // --authenticity-only and --policy together are a usage error.
    let o = run("turin_v5_oak", &["--authenticity-only", "--policy", "/dev/null"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn usage_and_io_errors_exit_2() {
    let Some(dv) = Vectors::dev() else { return };
    // Missing report file.
    let o = vouch(&[
        "verify-report",
        "--report",
        "/nonexistent/r.bin",
        "--vcek",
        &dv.arg("reports/turin_v5_oak.vcek.der"),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/r.bin"));
    // Missing required flag, unknown flag, unknown subcommand, bad number.
    assert_eq!(code(&vouch(&["verify-report", "--report", &dv.arg("reports/turin_v5_oak.bin")])), 2);
    assert_eq!(code(&vouch(&["verify-report", "--bogus"])), 2);
    assert_eq!(code(&vouch(&["frobnicate"])), 2);
    assert_eq!(code(&vouch(&[])), 2);
    assert_eq!(
        code(&vouch(&[
            "verify-report",
            "--report",
            &dv.arg("reports/turin_v5_oak.bin"),
            "--vcek",
            &dv.arg("reports/turin_v5_oak.vcek.der"),
            "--now",
            "yesterday",
        ])),
        2
    );
    assert_eq!(
        code(&vouch(&[
            "verify-report",
            "--report",
            &dv.arg("reports/turin_v5_oak.bin"),
            "--vcek",
            &dv.arg("reports/turin_v5_oak.vcek.der"),
            "--product",
            "Venice",
        ])),
        2
    );
    assert_eq!(code(&vouch(&["chat", "--url", "https://127.0.0.1:1"])), 2); // no prompt
    assert_eq!(code(&vouch(&["--help"])), 0);
}

#[test]
fn product_flag_must_agree() {
    let Some(dv) = Vectors::dev() else { return };
    // A Milan v2 report cannot be verified as Genoa.
    let o = vouch(&[
        "verify-report",
        "--report",
        &dv.arg("reports/milan_v2_virtee.bin"),
        "--vcek",
        &dv.arg("reports/milan_v2_virtee.vcek.der"),
        "--product",
        "Genoa",
        "--now",
        NOW_S,
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("product mismatch"), "{}", stderr(&o));
}
