//! AMD's SEV-SNP roots of trust, compiled in.
//!
//! Verifier side: these are the only certificates a verifier trusts by themselves.
//! ARK (root), ASK (VCEK intermediate) and ASVK (VLEK intermediate) for Milan, Genoa
//! and Turin, as served by AMD's KDS (`https://kdsintf.amd.com/{vcek,vlek}/v1/<product>/cert_chain`)
//! and shipped byte-identical by virtee/sev (`src/certs/snp/builtin/`), go-sev-guest
//! (`verify/trust/`), Oak and Microsoft's TAV. Their SHA-256 digests are pinned in
//! tests, so an accidental edit cannot go unnoticed.

use crate::cert::{certs_from_pem_or_der, AmdCert};
use crate::error::CertRole;
use crate::product::Product;
use std::sync::OnceLock;

const PEMS: [(Product, &str, &str, &str); 3] = [
    (
        Product::Milan,
        include_str!("../roots/ark_milan.pem"),
        include_str!("../roots/ask_milan.pem"),
        include_str!("../roots/asvk_milan.pem"),
    ),
    (
        Product::Genoa,
        include_str!("../roots/ark_genoa.pem"),
        include_str!("../roots/ask_genoa.pem"),
        include_str!("../roots/asvk_genoa.pem"),
    ),
    (
        Product::Turin,
        include_str!("../roots/ark_turin.pem"),
        include_str!("../roots/ask_turin.pem"),
        include_str!("../roots/asvk_turin.pem"),
    ),
];

/// One product's compiled-in AMD certificates.
#[derive(Debug)]
pub struct AmdRoots {
    /// The product.
    pub product: Product,
    /// AMD Root Key.
    pub ark: AmdCert,
    /// AMD SEV Key (certifies VCEKs).
    pub ask: AmdCert,
    /// AMD SEV VLEK Key (certifies VLEKs).
    pub asvk: AmdCert,
}

fn one(pem: &str, role: CertRole) -> Option<AmdCert> {
    certs_from_pem_or_der(pem.as_bytes(), role).ok()?.into_iter().next()
}

/// The compiled-in roots of every product. Parsed once per process.
pub fn amd_roots() -> &'static [AmdRoots] {
    static ROOTS: OnceLock<Vec<AmdRoots>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        PEMS.iter()
            .filter_map(|(product, ark, ask, asvk)| {
                // Invariant: the embedded PEMs are constants whose parsing is tested
                // (`roots_parse_and_are_pinned`); a failure would drop the product,
                // which that test catches.
                Some(AmdRoots {
                    product: *product,
                    ark: one(ark, CertRole::Ark)?,
                    ask: one(ask, CertRole::Ask)?,
                    asvk: one(asvk, CertRole::Asvk)?,
                })
            })
            .collect()
    })
}

/// Intermediates AMD has revoked, by product, role and serial (big-endian, as encoded),
/// refused on every chain whether or not a CRL is supplied: a host that withholds the CRL
/// must not be able to bring back a retired intermediate. Source: AMD KDS
/// `/vcek/v1/Genoa/crl` (crlNumber 10, thisUpdate 2026-08-19) revokes serial 0x020001,
/// the first Genoa ASK (revocationDate 2022-10-31); the Milan and Turin CRLs of the same
/// date revoke nothing. `tests/vectors.rs` (`crls_verify_inside_their_window_and_are_stale_today`)
/// checks every serial AMD's published CRLs revoke is in this list.
pub const REVOKED_INTERMEDIATES: &[(Product, CertRole, &[u8])] =
    &[(Product::Genoa, CertRole::Ask, &[0x02, 0x00, 0x01])];

/// Whether `serial` of a `role` intermediate of `product` is in [`REVOKED_INTERMEDIATES`].
pub fn is_revoked_builtin(product: Product, role: CertRole, serial: &[u8]) -> bool {
    let strip = |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|&b| b == 0).collect() };
    REVOKED_INTERMEDIATES.iter().any(|(p, r, s)| *p == product && *r == role && strip(s) == strip(serial))
}

/// The compiled-in roots of `product`.
pub fn amd_roots_for(product: Product) -> Option<&'static AmdRoots> {
    amd_roots().iter().find(|r| r.product == product)
}

#[cfg(test)]
mod tests {
    use super::*;

    // SHA-256 of each certificate's DER, pinned when the roots were added.
    const PINNED: [(Product, &str, &str, &str); 3] = [
        (
            Product::Milan,
            "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
            "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
            "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
        ),
        (
            Product::Genoa,
            "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
            "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
            "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
        ),
        (
            Product::Turin,
            "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
            "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
            "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
        ),
    ];

    #[test]
    fn roots_parse_and_are_pinned() {
        assert_eq!(amd_roots().len(), 3);
        for r in amd_roots() {
            let (_, ark, ask, asvk) = PINNED.iter().find(|p| p.0 == r.product).unwrap();
            assert_eq!(&hex::encode(r.ark.sha256()), ark, "{:?} ARK", r.product);
            assert_eq!(&hex::encode(r.ask.sha256()), ask, "{:?} ASK", r.product);
            assert_eq!(&hex::encode(r.asvk.sha256()), asvk, "{:?} ASVK", r.product);
        }
    }

    #[test]
    fn builtin_revocations_match_serials_and_not_the_current_asks() {
        assert!(is_revoked_builtin(Product::Genoa, CertRole::Ask, &[0x02, 0x00, 0x01]));
        assert!(is_revoked_builtin(Product::Genoa, CertRole::Ask, &[0x00, 0x02, 0x00, 0x01]));
        assert!(!is_revoked_builtin(Product::Genoa, CertRole::Asvk, &[0x02, 0x00, 0x01]));
        assert!(!is_revoked_builtin(Product::Milan, CertRole::Ask, &[0x02, 0x00, 0x01]));
        for r in amd_roots() {
            assert!(!is_revoked_builtin(r.product, CertRole::Ask, r.ask.serial()), "{:?}", r.product);
            assert!(!is_revoked_builtin(r.product, CertRole::Asvk, r.asvk.serial()), "{:?}", r.product);
        }
    }

    #[test]
    fn roots_are_self_signed_and_sign_their_intermediates() {
        for r in amd_roots() {
            r.ark.verify_signed_by(&r.ark, CertRole::Ark, CertRole::Ark).unwrap();
            r.ask.verify_signed_by(&r.ark, CertRole::Ask, CertRole::Ark).unwrap();
            r.asvk.verify_signed_by(&r.ark, CertRole::Asvk, CertRole::Ark).unwrap();
            assert!(r.ark.subject().contains(&format!("ARK-{}", r.product)), "{}", r.ark.subject());
        }
    }
}
