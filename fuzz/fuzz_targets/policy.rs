//! The client's policy file (TOML, `vouch … --policy FILE`): the real loader,
//! `ClientPolicy::from_toml`, and then the parsed policy applied to a simulated report,
//! so that every value a file can hold also reaches `validate` and `warnings`. A
//! policy file is the client's own input, but it is often copied from elsewhere: a
//! malformed one must be an error, never a panic or a silently weaker policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vouch_client::policy::ClientPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(p) = ClientPolicy::from_toml(text, Path::new("fuzz.toml")) else { return };
    // A file can never switch off the code-identity requirement.
    assert!(!p.snp.dangerous_allow_any_code);
    if let Some(v) = vouch_fuzz::sim_report() {
        let _ = vouch_attestation::validate(v, &p.snp);
        let _ = vouch_attestation::warnings(v, &p.snp);
        let _ = p.check_model(&[0; 32], "m");
    }
});
