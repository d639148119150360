//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 signatures, and the
//! witness cosignatures of C2SP tlog-cosignature (<https://c2sp.org/tlog-cosignature>).
//!
//! Both sides: the enclave signs its log's checkpoints, a witness cosigns them, and
//! verifiers check either. Written here rather than taken from the `signed_note` crate
//! because that crate brings a second Ed25519 implementation (ed25519-dalek) into the
//! attested code base, which already verifies and signs with aws-lc-rs; the format
//! itself is a few lines of text.
//!
//! ```text
//!  note text (UTF-8, ends in "\n")
//!  "\n"
//!  "— <key name> <base64(key id ‖ signature)>\n"   one line per signature
//! ```
//!
//! The key id is the first 4 bytes of SHA-256(name ‖ "\n" ‖ type ‖ public key), type
//! 0x01 for a plain Ed25519 note signature and 0x04 for a timestamped cosignature, whose
//! signature field is `timestamp (8 bytes, big-endian) ‖ Ed25519 signature` over
//! `"cosignature/v1\ntime <timestamp>\n" ‖ checkpoint body`.

use aws_lc_rs::signature::{self, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Key type byte of an Ed25519 note signature.
pub const ALG_ED25519: u8 = 0x01;
/// Key type byte of an Ed25519 timestamped cosignature (tlog-cosignature v1).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Largest signed note read; anything larger is refused unread.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Most signature lines read on one note.
pub const MAX_SIGNATURES: usize = 64;

const DASH: &str = "\u{2014} ";

/// Why a signed note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Not a signed note: the reason says which rule it breaks.
    #[error("malformed signed note: {0}")]
    Malformed(String),
    /// No signature by the expected key.
    #[error("the note carries no signature by {0}")]
    Unsigned(String),
    /// A signature by the expected key does not verify.
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
}

/// One signature line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The first 4 bytes of the key hash.
    pub key_id: [u8; 4],
    /// The signature bytes after the key id.
    pub sig: Vec<u8>,
}

/// A parsed signed note: its text and signature lines (unverified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// The signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

/// An Ed25519 public key with its note name: what verifies one signer's lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    /// The key name (no spaces, no `+`).
    pub name: String,
    /// The Ed25519 public key.
    pub key: [u8; 32],
}

/// Checks a key name: non-empty, no whitespace, no `+` (C2SP signed-note).
pub fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::Malformed(format!("bad key name {name:?}")));
    }
    Ok(())
}

/// The 4-byte key id of (`name`, `alg`, `key`).
pub fn key_id(name: &str, alg: u8, key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl NoteVerifier {
    /// The verifier key in the C2SP `vkey` text form: `name+hex(key id)+base64(0x01 ‖ key)`.
    pub fn vkey(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, ALG_ED25519, &self.key)),
            B64.encode(raw)
        )
    }

    /// Parses a `vkey` (an Ed25519 note key), checking its key id.
    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let bad = |why: &str| NoteError::Malformed(format!("verifier key {vkey:?}: {why}"));
        let mut parts = vkey.splitn(3, '+');
        let (name, id, key) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("not name+id+key")),
        };
        check_name(name)?;
        let raw = B64.decode(key).map_err(|_| bad("key is not base64"))?;
        let (alg, key) = raw.split_first().ok_or_else(|| bad("empty key"))?;
        if *alg != ALG_ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad("key is not 32 bytes"))?;
        if hex::encode(key_id(name, ALG_ED25519, &key)) != id {
            return Err(bad("key id does not match the key"));
        }
        Ok(NoteVerifier { name: name.to_owned(), key })
    }

    /// Verifies `note`'s plain Ed25519 signature by this key.
    pub fn verify(&self, note: &SignedNote) -> Result<(), NoteError> {
        let id = key_id(&self.name, ALG_ED25519, &self.key);
        let sig = note
            .signatures
            .iter()
            .find(|s| s.name == self.name && s.key_id == id)
            .ok_or_else(|| NoteError::Unsigned(self.name.clone()))?;
        UnparsedPublicKey::new(&signature::ED25519, &self.key)
            .verify(note.text.as_bytes(), &sig.sig)
            .map_err(|_| NoteError::BadSignature(self.name.clone()))
    }

    /// Verifies this key's cosignature (tlog-cosignature v1) on a checkpoint note and
    /// returns its timestamp (Unix seconds).
    pub fn verify_cosignature(&self, note: &SignedNote) -> Result<u64, NoteError> {
        let id = key_id(&self.name, ALG_COSIGNATURE_V1, &self.key);
        let sig = note
            .signatures
            .iter()
            .find(|s| s.name == self.name && s.key_id == id)
            .ok_or_else(|| NoteError::Unsigned(self.name.clone()))?;
        if sig.sig.len() != 8 + 64 {
            return Err(NoteError::BadSignature(self.name.clone()));
        }
        let (time, ed) = sig.sig.split_at(8);
        let time = u64::from_be_bytes(time.try_into().unwrap_or([0; 8]));
        UnparsedPublicKey::new(&signature::ED25519, &self.key)
            .verify(&cosigned_message(&note.text, time), ed)
            .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
        Ok(time)
    }
}

/// What a tlog-cosignature v1 signs: a header with the time, then the checkpoint body.
pub fn cosigned_message(checkpoint_text: &str, time: u64) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(checkpoint_text.as_bytes());
    m
}

/// An Ed25519 signer with its note name (the enclave's log key, a witness's key).
pub struct NoteSigner {
    name: String,
    pair: signature::Ed25519KeyPair,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner").field("name", &self.name).finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (the caller derives it; nothing is random here).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let pair = signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| NoteError::Malformed("bad Ed25519 seed".into()))?;
        Ok(NoteSigner { name: name.to_owned(), pair })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half.
    pub fn verifier(&self) -> NoteVerifier {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        NoteVerifier { name: self.name.clone(), key }
    }

    /// Signs `text` (which must end in a newline) and returns the signed note.
    pub fn sign(&self, text: &str) -> Result<SignedNote, NoteError> {
        check_text(text)?;
        let v = self.verifier();
        Ok(SignedNote {
            text: text.to_owned(),
            signatures: vec![NoteSignature {
                name: self.name.clone(),
                key_id: key_id(&self.name, ALG_ED25519, &v.key),
                sig: self.pair.sign(text.as_bytes()).as_ref().to_vec(),
            }],
        })
    }

    /// This key's tlog-cosignature v1 line for `checkpoint_text` at `time`.
    pub fn cosign(&self, checkpoint_text: &str, time: u64) -> NoteSignature {
        let v = self.verifier();
        let mut sig = time.to_be_bytes().to_vec();
        sig.extend_from_slice(self.pair.sign(&cosigned_message(checkpoint_text, time)).as_ref());
        NoteSignature { name: self.name.clone(), key_id: key_id(&self.name, ALG_COSIGNATURE_V1, &v.key), sig }
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text does not end in a newline".into()));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed("the text has a blank line".into()));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("the text has a control character".into()));
    }
    Ok(())
}

impl SignedNote {
    /// Parses a signed note (signatures unverified; unknown keys' lines are kept).
    pub fn parse(bytes: &[u8]) -> Result<SignedNote, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::Malformed(format!("{} bytes > {MAX_NOTE_BYTES}", bytes.len())));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8".into()))?;
        let split = s.rfind("\n\n").ok_or_else(|| NoteError::Malformed("no signature block".into()))?;
        let (text, sigs) = (&s[..=split], &s[split + 2..]);
        check_text(text)?;
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("the signature block does not end in a newline".into()));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed(format!("more than {MAX_SIGNATURES} signatures")));
            }
            let rest = line.strip_prefix(DASH).ok_or_else(|| {
                NoteError::Malformed(format!("signature line {line:?} does not start with \"— \""))
            })?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} has no signature")))?;
            check_name(name)?;
            let raw = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed(format!("signature line {line:?} is not base64")))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed(format!("signature line {line:?} is too short")));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: [raw[0], raw[1], raw[2], raw[3]],
                sig: raw[4..].to_vec(),
            });
        }
        Ok(SignedNote { text: text.to_owned(), signatures })
    }

    /// The note as bytes: text, blank line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            let mut raw = s.key_id.to_vec();
            raw.extend_from_slice(&s.sig);
            out.push_str(&format!("{DASH}{} {}\n", s.name, B64.encode(raw)));
        }
        out.into_bytes()
    }

    /// Adds `sig`, replacing an earlier line by the same key.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        self.signatures.retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        self.signatures.push(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("vouch.log/test", &[7; 32]).unwrap()
    }

    #[test]
    fn signs_parses_and_verifies() {
        let s = signer();
        let note = s.sign("vouch.log/test\n3\nAAAA\n").unwrap();
        let bytes = note.to_bytes();
        let parsed = SignedNote::parse(&bytes).unwrap();
        assert_eq!(parsed, note);
        s.verifier().verify(&parsed).unwrap();
        let v = NoteVerifier::from_vkey(&s.verifier().vkey()).unwrap();
        assert_eq!(v, s.verifier());
    }

    #[test]
    fn a_changed_byte_or_another_key_is_refused() {
        let s = signer();
        let mut bytes = s.sign("vouch.log/test\n3\nAAAA\n").unwrap().to_bytes();
        bytes[16] = b'4';
        let parsed = SignedNote::parse(&bytes).unwrap();
        assert_eq!(s.verifier().verify(&parsed), Err(NoteError::BadSignature("vouch.log/test".into())));
        let other = NoteSigner::from_seed("vouch.log/test", &[8; 32]).unwrap();
        let note = s.sign("x\n").unwrap();
        assert_eq!(other.verifier().verify(&note), Err(NoteError::Unsigned("vouch.log/test".into())));
    }

    #[test]
    fn cosignatures_verify_with_their_time() {
        let log = signer();
        let witness = NoteSigner::from_seed("witness.example", &[9; 32]).unwrap();
        let mut note = log.sign("vouch.log/test\n3\nAAAA\n").unwrap();
        note.add_signature(witness.cosign(&note.text, 1_800_000_000));
        let parsed = SignedNote::parse(&note.to_bytes()).unwrap();
        assert_eq!(witness.verifier().verify_cosignature(&parsed), Ok(1_800_000_000));
        // A plain signature is not a cosignature, nor the other way round.
        assert!(log.verifier().verify_cosignature(&parsed).is_err());
        assert!(witness.verifier().verify(&parsed).is_err());
        // The timestamp is signed.
        let mut bad = parsed.clone();
        bad.signatures[1].sig[7] ^= 1;
        assert_eq!(
            witness.verifier().verify_cosignature(&bad),
            Err(NoteError::BadSignature("witness.example".into()))
        );
    }

    #[test]
    fn malformed_notes_are_refused_with_the_rule() {
        let cases: [(&[u8], &str); 5] = [
            (b"no signatures\n", "no signature block"),
            (b"a\n\nnot a signature\n", "does not start with"),
            (b"a\n\n\xe2\x80\x94 name !!!\n", "is not base64"),
            (b"a\n\n\xe2\x80\x94 name AAAA\n", "is too short"),
            (b"a\n\n\xe2\x80\x94 name AAAAAAAA", "does not end in a newline"),
        ];
        for (bytes, why) in cases {
            let e = SignedNote::parse(bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(SignedNote::parse(&vec![b'a'; MAX_NOTE_BYTES + 1]).is_err());
        assert!(NoteSigner::from_seed("has space", &[0; 32]).is_err());
        let vkey = signer().verifier().vkey();
        let tampered = vkey.replacen("+", "+0", 1);
        assert!(NoteVerifier::from_vkey(&tampered).is_err());
    }
}
