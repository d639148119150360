//! Stands in for the candle reference runtimes in a build without `--features candle`
//! (the default, the demo and the guest image): [`CandleModel`] has no values, so every
//! code path that would run candle is statically unreachable, and asking for a candle
//! runtime is refused at load with [`ModelError::RuntimeNotBuilt`].

use super::gguf::CandleLoaded;
use super::gguf_file::Content;
use super::{ModelBytes, ModelError, Runtime};

/// No candle model can exist in this build.
pub(crate) enum CandleModel {}

/// Refuses: this build has no candle runtime.
pub(crate) fn load(
    runtime: Runtime,
    _content: &Content,
    _bytes: ModelBytes,
    _digest: [u8; 32],
) -> Result<CandleLoaded, ModelError> {
    Err(ModelError::RuntimeNotBuilt { runtime: runtime.as_str() })
}

impl CandleModel {
    pub(crate) fn forward(&mut self, _tokens: &[u32], _position: usize) -> Result<Vec<f32>, ModelError> {
        match *self {}
    }
}
