//! `vouch-enclave generate` (trusted side, but no enclave features): run the model
//! in-process on one prompt, with no network and no attestation. It is the baseline that
//! the attested server's overhead is measured against, and a quick way to check a model.
//!
//! Text streams to stdout as it is produced; a one-line summary goes to stderr. With
//! `--json`, stdout gets one JSON object instead (text, finish reason, model digest, engine
//! version, prompt ids, prefill schedule, counts and timings).

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::model::{
    generate_blocking, hex_digest, init_compute_threads, ChatMessage, FinishReason, GenerateRequest,
    GenerationStats, Model, ModelError, Prompt, Runtime, SamplingParams,
};

/// Arguments of `vouch-enclave generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// The GGUF model file.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// The user message.
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// A system message (default: the model template's own).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Maximum number of tokens to generate.
    #[arg(long, value_name = "N")]
    pub max_tokens: u32,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Compute threads (default: CANDLE_NUM_THREADS, RAYON_NUM_THREADS or all CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Runtime: "native" (default; Vouch's SIMD kernels over the weights as stored),
    /// "candle" (candle's quantized llama, as stored) or "candle-q8_0" (candle, with
    /// Q4_1 re-quantized to Q8_0 in memory); the candle ones only in a build with
    /// `--features candle`.
    #[arg(long, value_name = "RUNTIME", default_value_t = Runtime::Native)]
    pub runtime: Runtime,
    /// Print one JSON object on stdout instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// Why `generate` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// Loading the model or generating failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// Encoding the JSON output failed.
    #[error("cannot encode JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Serialize)]
struct JsonModel<'a> {
    name: &'a str,
    digest: String,
    file_size: u64,
    stored_format: &'a str,
    runtime: Runtime,
    weights_digest: String,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    text: &'a str,
    finish_reason: FinishReason,
    model: JsonModel<'a>,
    engine_version: &'static str,
    kernel: &'static str,
    sampling: &'a SamplingParams,
    prompt_tokens: u32,
    completion_tokens: u32,
    prefill_chunk: &'a str,
    prompt_token_ids: &'a [u32],
    completion_token_ids: &'a [u32],
    timings: JsonTimings,
    threads: usize,
}

#[derive(Serialize)]
struct JsonTimings {
    load_ms: f64,
    prefill_ms: f64,
    decode_ms: f64,
    prompt_tokens_per_s: f64,
    completion_tokens_per_s: f64,
}

/// Runs `generate`.
pub fn run(args: GenerateArgs) -> Result<(), GenerateError> {
    init_compute_threads(args.threads);
    let mut model = Model::load_with(&args.model, args.runtime)?;

    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new("system", system.clone()));
    }
    messages.push(ChatMessage::new("user", args.prompt.clone()));
    let request = GenerateRequest {
        prompt: Prompt::Chat(messages),
        params: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            max_tokens: args.max_tokens,
            controls: Default::default(),
        },
    };
    request.validate()?;

    let stdout = std::io::stdout();
    let mut text = String::new();
    let mut write_error: Option<std::io::Error> = None;
    let (finish_reason, stats) = {
        let mut out = stdout.lock();
        let streaming = !args.json;
        generate_blocking(&mut model, &request, |delta| {
            text.push_str(delta);
            if streaming && write_error.is_none() {
                if let Err(e) = out.write_all(delta.as_bytes()).and_then(|()| out.flush()) {
                    write_error = Some(e);
                }
            }
        })?
    };
    if let Some(e) = write_error {
        return Err(e.into());
    }

    let mut out = stdout.lock();
    if args.json {
        let json = JsonOutput {
            text: &text,
            finish_reason,
            model: JsonModel {
                name: model.name(),
                digest: hex_digest(&model.digest()),
                file_size: model.file_size(),
                stored_format: model.stored_format(),
                runtime: model.runtime(),
                weights_digest: hex_digest(&model.weights_digest()),
            },
            engine_version: model.engine_version(),
            kernel: model.kernel(),
            sampling: &request.params,
            prompt_tokens: stats.prompt_tokens,
            completion_tokens: stats.completion_tokens,
            prefill_chunk: &stats.prefill_chunk,
            prompt_token_ids: &stats.prompt_token_ids,
            completion_token_ids: &stats.completion_token_ids,
            timings: JsonTimings {
                load_ms: stats.load_ms,
                prefill_ms: stats.prefill_ms,
                decode_ms: stats.decode_ms,
                prompt_tokens_per_s: stats.prompt_tokens_per_s,
                completion_tokens_per_s: stats.completion_tokens_per_s,
            },
            threads: stats.threads,
        };
        serde_json::to_writer(&mut out, &json)?;
        writeln!(out)?;
    } else {
        writeln!(out)?;
    }
    out.flush()?;
    eprintln!("{}", summary_line(finish_reason, &stats, &model));
    Ok(())
}

fn summary_line(finish: FinishReason, stats: &GenerationStats, model: &Model) -> String {
    format!(
        "[{}] prompt {} tok ({:.1} tok/s, {:.1} ms) | gen {} tok ({:.1} tok/s, {:.1} ms) | load {:.0} ms | finish {} | threads {} | runtime {} ({}) | sha256 {}",
        model.engine_version(),
        stats.prompt_tokens,
        stats.prompt_tokens_per_s,
        stats.prefill_ms,
        stats.completion_tokens,
        stats.completion_tokens_per_s,
        stats.decode_ms,
        stats.load_ms,
        finish.as_str(),
        stats.threads,
        model.runtime(),
        model.kernel(),
        hex_digest(&model.digest()),
    )
}
