//! A LYING enclave, for tests only: with the cargo feature `lying-for-tests` and
//! `VOUCH_TEST_LIE_AFTER=N` in its environment, the engine replaces the completion token at
//! index N of every answer with another one and carries on from it — while still issuing
//! receipts that commit the altered tokens, as a compromised enclave could. The replay and
//! the cross-operator audit tests need an enclave that lies in exactly this way, and must
//! catch it every time.
//!
//! Only the test build has it: the enclave crate's own dev-dependency turns the feature on
//! (so `cargo test --workspace` builds the binary the end-to-end tests start with it); the
//! demo, the guest image and release builds do not. A build without the feature refuses to
//! start when the variable is set ([`check_environment`]), so a lie asked for is never
//! silently not told either.

/// The environment variable naming the completion index to alter.
pub const LIE_ENV: &str = "VOUCH_TEST_LIE_AFTER";

#[cfg(feature = "lying-for-tests")]
fn lie_at() -> Option<usize> {
    static AT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| std::env::var(LIE_ENV).ok().and_then(|v| v.trim().parse().ok()))
}

/// The token to emit at completion index `index`, given the engine's honest choice `next`:
/// `next` itself, unless this is a lying test build told to lie there — then the next id
/// up that is neither a stop token nor out of the vocabulary.
#[cfg(feature = "lying-for-tests")]
pub(crate) fn tamper(tokenizer: &super::GgufTokenizer, index: usize, next: u32) -> u32 {
    if lie_at() != Some(index) || tokenizer.is_stop(next) {
        return next;
    }
    let vocab = tokenizer.vocab_size() as u32;
    (1..vocab).map(|k| (next + k) % vocab).find(|&t| !tokenizer.is_stop(t)).unwrap_or(next)
}

/// The honest build: every token is the engine's own.
#[cfg(not(feature = "lying-for-tests"))]
#[inline(always)]
pub(crate) fn tamper(_tokenizer: &super::GgufTokenizer, _index: usize, next: u32) -> u32 {
    next
}

/// Refuses to start a build without the feature when the variable asks for a lie, and
/// says loudly when a lying build will lie. Call once at start-up.
pub fn check_environment() -> Result<(), String> {
    let Ok(v) = std::env::var(LIE_ENV) else { return Ok(()) };
    #[cfg(feature = "lying-for-tests")]
    {
        let at: usize = v.trim().parse().map_err(|_| format!("{LIE_ENV}={v:?}: expected a token index"))?;
        tracing::warn!(at, "LYING ENCLAVE (test build): completion token {at} of every answer is altered");
        eprintln!(
            "vouch-enclave: LYING ENCLAVE (test build): completion token {at} of every answer is altered"
        );
        Ok(())
    }
    #[cfg(not(feature = "lying-for-tests"))]
    {
        Err(format!(
            "{LIE_ENV}={v:?} is set, but this build has no lying-for-tests feature (it never lies); unset it"
        ))
    }
}
