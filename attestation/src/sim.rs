//! A SIMULATED AMD secure processor, for machines without SEV-SNP (development, CI,
//! demos).
//!
//! Enclave side (it stands in for the hardware the enclave asks for reports), but it is
//! NOT a root of trust: its keys live in ordinary memory and files. Its PKI has AMD's
//! shape — ARK and ASK are RSA-4096 signing with RSASSA-PSS/SHA-384, the VCEK is ECDSA
//! P-384 with AMD's KDS extensions — and its reports are byte-exact SNP reports, so
//! verifiers run one code path for both. Its names say SIMULATED, and a verifier trusts
//! its root only through [`crate::TrustAnchors::dangerous_add_simulated_root`].

use crate::cert::{
    OID_BL_SPL, OID_FMC_SPL, OID_HWID, OID_PRODUCT_NAME, OID_SNP_SPL, OID_TEE_SPL, OID_UCODE_SPL,
};
use crate::product::{Product, Tcb};
use crate::report::{FirmwareVersion, ReportBuilder, REPORT_LEN};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PSS_SHA384};
use const_oid::ObjectIdentifier;
use der::asn1::{BitString, Ia5StringRef, OctetString, UtcTime};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::time::Duration;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// Marker in every simulated certificate's organisation name.
pub const SIMULATED_MARK: &str = "Vouch SIMULATED secure processor - NOT AMD";

/// Errors from the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Key generation, signing or encoding failed.
    #[error("simulated secure processor: {0}")]
    Crypto(String),
    /// Stored key material could not be loaded.
    #[error("simulated secure processor keys are invalid: {0}")]
    BadKeys(String),
}

fn c<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> SimError {
    move |e| SimError::Crypto(format!("{what}: {e}"))
}

/// Serialisable key material of a simulated secure processor (PKCS#8 + DER certs).
/// Treat as secret: whoever holds it can forge simulated reports.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SimKeyMaterial {
    /// Product the chain imitates.
    pub product: Product,
    /// ARK private key, PKCS#8.
    #[serde(with = "serde_bytes")]
    pub ark_pkcs8: Vec<u8>,
    /// ASK private key, PKCS#8.
    #[serde(with = "serde_bytes")]
    pub ask_pkcs8: Vec<u8>,
    /// VCEK private key, PKCS#8.
    #[serde(with = "serde_bytes")]
    pub vcek_pkcs8: Vec<u8>,
    /// Chip id (64 bytes; 8 significant on Turin).
    #[serde(with = "serde_bytes")]
    pub chip_id: Vec<u8>,
    /// Raw TCB (also the VCEK's SPLs).
    pub tcb: u64,
}

impl std::fmt::Debug for SimKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("SimKeyMaterial").field("product", &self.product).finish_non_exhaustive()
    }
}

impl SimKeyMaterial {
    /// Generates fresh keys (two RSA-4096 keys: seconds in release builds).
    pub fn generate(product: Product) -> Result<SimKeyMaterial, SimError> {
        let ark = RsaKeyPair::generate(KeySize::Rsa4096).map_err(c("ARK keygen"))?;
        let ask = RsaKeyPair::generate(KeySize::Rsa4096).map_err(c("ASK keygen"))?;
        let rng = SystemRandom::new();
        let vcek =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).map_err(c("VCEK keygen"))?;
        let mut chip_id = vec![0u8; 64];
        aws_lc_rs::rand::fill(&mut chip_id[..product.hwid_len()]).map_err(c("chip id"))?;
        Ok(SimKeyMaterial {
            product,
            ark_pkcs8: ark.as_der().map_err(c("ARK pkcs8"))?.as_ref().to_vec(),
            ask_pkcs8: ask.as_der().map_err(c("ASK pkcs8"))?.as_ref().to_vec(),
            vcek_pkcs8: vcek.as_ref().to_vec(),
            chip_id,
            tcb: Tcb::encode(product, 1, 9, 0, 22, 0xd5),
        })
    }
}

/// The simulated secure processor: signs reports, and holds its certificate chain.
pub struct SimulatedSp {
    product: Product,
    vcek: EcdsaKeyPair,
    chip_id: [u8; 64],
    tcb: u64,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
    ark_key: RsaKeyPair,
    ark_name: Name,
    rng: SystemRandom,
    /// Stands in for the chip's key-derivation secret ([`SimulatedSp::derived_key`]).
    derive_secret: [u8; 32],
}

impl std::fmt::Debug for SimulatedSp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedSp").field("product", &self.product).finish_non_exhaustive()
    }
}

fn oid(s: &str) -> Result<ObjectIdentifier, SimError> {
    ObjectIdentifier::from_str(s).map_err(c("oid"))
}

/// The RSASSA-PSS/SHA-384/MGF1-SHA-384/salt-48 AlgorithmIdentifier AMD uses.
pub(crate) fn pss_sha384_alg() -> Result<AlgorithmIdentifierOwned, SimError> {
    let sha384 = AlgorithmIdentifierOwned { oid: oid("2.16.840.1.101.3.4.2.2")?, parameters: None };
    let mgf = AlgorithmIdentifierOwned {
        oid: oid("1.2.840.113549.1.1.8")?,
        parameters: Some(der::Any::encode_from(&sha384).map_err(c("mgf"))?),
    };
    // RSASSA-PSS-params with explicit [0] hash, [1] mgf, [2] salt 48.
    let mut body = Vec::new();
    let explicit = |tag: u8, inner: Vec<u8>| -> Result<Vec<u8>, SimError> {
        let mut v = vec![0xA0 | tag];
        der::Length::try_from(inner.len()).map_err(c("len"))?.encode_to_vec(&mut v).map_err(c("len"))?;
        v.extend_from_slice(&inner);
        Ok(v)
    };
    body.extend(explicit(0, sha384.to_der().map_err(c("hash"))?)?);
    body.extend(explicit(1, mgf.to_der().map_err(c("mgf"))?)?);
    body.extend(explicit(2, 48u32.to_der().map_err(c("salt"))?)?);
    let mut seq = vec![0x30];
    der::Length::try_from(body.len()).map_err(c("len"))?.encode_to_vec(&mut seq).map_err(c("len"))?;
    seq.extend_from_slice(&body);
    Ok(AlgorithmIdentifierOwned {
        oid: crate::cert::OID_RSASSA_PSS,
        parameters: Some(der::Any::from_der(&seq).map_err(c("pss params"))?),
    })
}

fn name(cn: &str) -> Result<Name, SimError> {
    Name::from_str(&format!("CN={cn},O={SIMULATED_MARK},C=ZZ")).map_err(c("name"))
}

fn utc(secs: u64) -> Result<Time, SimError> {
    Ok(Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).map_err(c("time"))?))
}

/// Validity of simulated certificates: 2020-01-01 to 2049-12-31 (UTCTime's range).
const NOT_BEFORE: u64 = 1_577_836_800;
const NOT_AFTER: u64 = 2_524_521_599;

fn ext(id: &str, value: Vec<u8>) -> Result<Extension, SimError> {
    Ok(Extension {
        extn_id: oid(id)?,
        critical: false,
        extn_value: OctetString::new(value).map_err(c("ext"))?,
    })
}

fn rsa_sign(key: &RsaKeyPair, msg: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(&RSA_PSS_SHA384, &SystemRandom::new(), msg, &mut sig).map_err(c("RSA sign"))?;
    Ok(sig)
}

/// Builds and signs a certificate.
fn issue(
    serial: &[u8],
    issuer: &Name,
    subject: &Name,
    spki_der: &[u8],
    extensions: Option<Vec<Extension>>,
    signer: &RsaKeyPair,
) -> Result<Vec<u8>, SimError> {
    let alg = pss_sha384_alg()?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(serial).map_err(c("serial"))?,
        signature: alg.clone(),
        issuer: issuer.clone(),
        validity: Validity { not_before: utc(NOT_BEFORE)?, not_after: utc(NOT_AFTER)? },
        subject: subject.clone(),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(c("spki"))?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions,
    };
    let tbs_der = tbs.to_der().map_err(c("tbs"))?;
    let sig = rsa_sign(signer, &tbs_der)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(c("sig"))?,
    };
    cert.to_der().map_err(c("cert"))
}

impl SimulatedSp {
    /// Loads a simulator from key material, (re)issuing its certificates.
    pub fn from_keys(k: &SimKeyMaterial) -> Result<SimulatedSp, SimError> {
        let bad = |what: &'static str| {
            move |e: aws_lc_rs::error::KeyRejected| SimError::BadKeys(format!("{what}: {e}"))
        };
        let ark = RsaKeyPair::from_pkcs8(&k.ark_pkcs8).map_err(bad("ARK"))?;
        let ask = RsaKeyPair::from_pkcs8(&k.ask_pkcs8).map_err(bad("ASK"))?;
        let vcek =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &k.vcek_pkcs8).map_err(bad("VCEK"))?;
        let chip_id: [u8; 64] =
            k.chip_id.clone().try_into().map_err(|_| SimError::BadKeys("chip id is not 64 bytes".into()))?;
        let p = k.product;
        let ark_name = name(&format!("SIMULATED-ARK-{p}"))?;
        let ask_name = name(&format!("SIMULATED-SEV-{p}"))?;
        let vcek_name = name("SEV-VCEK")?;
        let ark_spki = ark.public_key().as_der().map_err(c("ARK spki"))?;
        let ask_spki = ask.public_key().as_der().map_err(c("ASK spki"))?;
        let vcek_spki = vcek.public_key().as_der().map_err(c("VCEK spki"))?;
        let ark_der = issue(&[0x01, 0x00, 0x00], &ark_name, &ark_name, ark_spki.as_ref(), None, &ark)?;
        let ask_der = issue(&[0x01, 0x00, 0x01], &ark_name, &ask_name, ask_spki.as_ref(), None, &ark)?;
        let tcb = Tcb::decode(k.tcb, p);
        let int = |v: u8| der::asn1::Uint::new(&[v]).and_then(|u| u.to_der()).map_err(c("spl"));
        let mut exts = vec![
            ext(
                OID_PRODUCT_NAME,
                Ia5StringRef::new(p.kds_name()).and_then(|s| s.to_der()).map_err(c("name"))?,
            )?,
            ext(OID_BL_SPL, int(tcb.bootloader)?)?,
            ext(OID_TEE_SPL, int(tcb.tee)?)?,
            ext(OID_SNP_SPL, int(tcb.snp)?)?,
            ext(OID_UCODE_SPL, int(tcb.microcode)?)?,
            ext(OID_HWID, chip_id[..p.hwid_len()].to_vec())?,
        ];
        if let Some(f) = tcb.fmc {
            exts.push(ext(OID_FMC_SPL, int(f)?)?);
        }
        let vcek_der = issue(&[0x00], &ask_name, &vcek_name, vcek_spki.as_ref(), Some(exts), &ask)?;
        let mut secret = Sha256::new();
        secret.update(b"vouch/sim/chip-secret/v1\0");
        secret.update(&k.vcek_pkcs8);
        secret.update(&k.chip_id);
        Ok(SimulatedSp {
            derive_secret: secret.finalize().into(),
            product: p,
            vcek,
            chip_id,
            tcb: k.tcb,
            ark_der,
            ask_der,
            vcek_der,
            ark_key: ark,
            ark_name,
            rng: SystemRandom::new(),
        })
    }

    /// The simulator's stand-in for SEV-SNP MSG_KEY_REQ: a key only this chip (its key
    /// material and chip id) running this `measurement` derives, for `context`. Deterministic, so the
    /// same sim directory and measurement give the same key after a restart.
    pub fn derived_key(&self, measurement: &[u8; 48], context: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"vouch/sim/derived-key/v1\0");
        h.update(self.derive_secret);
        h.update(measurement);
        h.update((context.len() as u64).to_le_bytes());
        h.update(context);
        h.finalize().into()
    }

    /// The product imitated.
    pub fn product(&self) -> Product {
        self.product
    }
    /// The simulated ARK (DER): give it to verifiers that choose to trust the simulator.
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }
    /// The simulated ASK (DER).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }
    /// The simulated VCEK (DER).
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }
    /// ASK then ARK as PEM, the shape of KDS's `cert_chain`.
    pub fn chain_pem(&self) -> String {
        let mut s = String::new();
        for der in [&self.ask_der, &self.ark_der] {
            if let Ok(p) = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der) {
                s.push_str(&p);
            }
        }
        s
    }
    /// The ARK as PEM.
    pub fn ark_pem(&self) -> String {
        pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &self.ark_der)
            .unwrap_or_default()
    }

    /// Produces a signed version-5 report over `report_data`, with `measurement` as the
    /// launch digest and `vmpl` as requested.
    pub fn report(
        &self,
        report_data: &[u8; 64],
        measurement: &[u8; 48],
        vmpl: u32,
    ) -> Result<Box<[u8; REPORT_LEN]>, SimError> {
        let mut report_id = [0u8; 32];
        report_id[..8].copy_from_slice(&self.chip_id[..8]);
        let b = ReportBuilder::new(self.product)
            .tcb(self.tcb)
            .vmpl(vmpl)
            .platform_info(0x25)
            .report_data(report_data)
            .measurement(measurement)
            .report_id(&report_id)
            .chip_id(&self.chip_id)
            .firmware(FirmwareVersion { major: 1, minor: 55, build: 42 });
        self.sign(b)
    }

    /// Signs an arbitrary report body (tests use this to build hostile-but-signed reports).
    pub fn sign(&self, b: ReportBuilder) -> Result<Box<[u8; REPORT_LEN]>, SimError> {
        let sig = self.vcek.sign(&self.rng, b.signed_bytes()).map_err(c("report sign"))?;
        let rs: [u8; 96] =
            sig.as_ref().try_into().map_err(|_| SimError::Crypto("signature is not 96 bytes".into()))?;
        Ok(b.finish(&rs))
    }

    /// The raw TCB the VCEK certifies.
    pub fn tcb(&self) -> u64 {
        self.tcb
    }
    /// The chip id.
    pub fn chip_id(&self) -> [u8; 64] {
        self.chip_id
    }

    /// Issues a CRL signed by the simulated ARK revoking `serials` (tests of revocation).
    pub fn crl(&self, serials: &[&[u8]], this_update: u64, next_update: u64) -> Result<Vec<u8>, SimError> {
        use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
        let alg = pss_sha384_alg()?;
        let issuer = self.ark_name.clone();
        let revoked = serials
            .iter()
            .map(|s| {
                Ok(RevokedCert {
                    serial_number: SerialNumber::new(s).map_err(c("serial"))?,
                    revocation_date: utc(this_update)?,
                    crl_entry_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, SimError>>()?;
        let tbs = TbsCertList {
            version: Version::V2,
            signature: alg.clone(),
            issuer,
            this_update: utc(this_update)?,
            next_update: Some(utc(next_update)?),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: None,
        };
        let tbs_der = tbs.to_der().map_err(c("tbs"))?;
        let sig = rsa_sign(&self.ark_key, &tbs_der)?;
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: alg,
            signature: BitString::from_bytes(&sig).map_err(c("sig"))?,
        }
        .to_der()
        .map_err(c("crl"))
    }
}
