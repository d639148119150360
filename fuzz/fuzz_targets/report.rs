//! Raw SNP reports (1184 bytes from the host, or a receipt): strict parsing, every
//! accessor, then signature and certificate-consistency checks under the genuine
//! vectors' verified chains (the chain whose hwID matches CHIP_ID first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_attestation::{verify::verify_report_with_chain, validate, Policy, Report};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Report::parse(data) else { return };
    let _ = (r.version(), r.guest_svn(), r.policy(), r.policy_abi(), r.vmpl(), r.flags(), r.signing_key());
    let _ = (r.report_data(), r.measurement(), r.host_data(), r.chip_id(), r.cpuid(), r.signature_rs_be());
    let _ = (r.current_version(), r.committed_version(), r.launch_mit_vector(), r.current_mit_vector());
    if let Ok(Some(p)) = r.cpuid_product() {
        let _ = r.tcb(r.reported_tcb_raw(), p);
    }
    let chains = vouch_fuzz::genuine_chains();
    let chip = r.chip_id();
    let best = chains.iter().find(|c| c.hwid().is_some_and(|h| chip.starts_with(h))).or(chains.first());
    if let Some(chain) = best {
        if let Ok(v) = verify_report_with_chain(chain, data) {
            let _ = validate(&v, &Policy::default());
            let _ = validate(&v, &vouch_fuzz::deep_policy());
            let _ = vouch_attestation::warnings(&v, &vouch_fuzz::deep_policy());
            let _ = (v.reported_tcb(), v.current_tcb(), v.committed_tcb(), v.launch_tcb());
        }
    }
});
