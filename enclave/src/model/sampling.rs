//! Token selection (trusted side, inside the enclave): greedy argmax at temperature 0,
//! otherwise seeded sampling with candle's `LogitsProcessor`, so identical parameters and
//! seed pick identical tokens.

use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::{ModelError, SamplingParams};

/// Highest temperature accepted; beyond this sampling is noise (OpenAI caps at 2).
const MAX_TEMPERATURE: f64 = 2.0;

pub(crate) fn validate(params: &SamplingParams) -> Result<(), ModelError> {
    if !params.temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&params.temperature) {
        return Err(ModelError::InvalidRequest(format!(
            "temperature {} is outside [0, {MAX_TEMPERATURE}]",
            params.temperature
        )));
    }
    if let Some(p) = params.top_p {
        if !p.is_finite() || p <= 0.0 || p > 1.0 {
            return Err(ModelError::InvalidRequest(format!("top_p {p} is outside (0, 1]")));
        }
    }
    Ok(())
}

/// The sampling rule for `params` (validated first).
pub(crate) fn sampling_rule(params: &SamplingParams) -> Result<Sampling, ModelError> {
    validate(params)?;
    Ok(if params.temperature == 0.0 {
        Sampling::ArgMax
    } else {
        match params.top_p {
            Some(p) if p < 1.0 => Sampling::TopP { p, temperature: params.temperature },
            _ => Sampling::All { temperature: params.temperature },
        }
    })
}

/// A fresh, seeded logits processor for one request.
pub(crate) fn logits_processor(params: &SamplingParams) -> Result<LogitsProcessor, ModelError> {
    Ok(LogitsProcessor::from_sampling(params.seed, sampling_rule(params)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_p: Option<f64>) -> SamplingParams {
        SamplingParams { temperature, top_p, seed: 1, max_tokens: 1 }
    }

    #[test]
    fn zero_temperature_is_greedy() {
        assert_eq!(sampling_rule(&params(0.0, Some(0.5))).unwrap(), Sampling::ArgMax);
    }

    #[test]
    fn top_p_one_samples_from_all() {
        assert_eq!(sampling_rule(&params(0.7, Some(1.0))).unwrap(), Sampling::All { temperature: 0.7 });
        assert_eq!(
            sampling_rule(&params(0.7, Some(0.9))).unwrap(),
            Sampling::TopP { p: 0.9, temperature: 0.7 }
        );
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for p in [
            params(-0.1, None),
            params(f64::NAN, None),
            params(3.0, None),
            params(0.5, Some(0.0)),
            params(0.5, Some(1.5)),
        ] {
            assert!(matches!(validate(&p), Err(ModelError::InvalidRequest(_))), "{p:?}");
        }
    }
}
