//! The bounds of the sampling parameters (trusted side, inside the enclave); the sampler
//! itself is [`super::sampler`].

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
    params.controls.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_p: Option<f64>) -> SamplingParams {
        SamplingParams { temperature, top_p, seed: 1, ..SamplingParams::greedy(1) }
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
