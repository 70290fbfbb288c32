//! Generating text with a language-model package: the prompt tokenized, tokens made one
//! at a time and written out as they come, in whole UTF-8 characters, until EOS, a stop
//! string or the token limit.

use crate::{Error, Result};
use kiln_model::{generate, Finish, GenerateConfig, Sampling};
use kiln_package::LanguagePackage;
use kiln_text::{StopStrings, StreamDecoder};
use serde::Serialize;
use std::io::Write;
use std::time::Instant;

/// What to generate; `None` fields take the package's generation defaults.
#[derive(Clone, Debug, Default)]
pub struct TextRequest {
    /// The text to continue.
    pub prompt: String,
    /// Tokens to generate at most.
    pub max_tokens: Option<usize>,
    /// 0 for greedy.
    pub temperature: Option<f64>,
    /// Sample among the k most likely (0: all).
    pub top_k: Option<usize>,
    /// Sample among the most likely whose probabilities add up to p.
    pub top_p: Option<f64>,
    /// Above 1 discourages repeating tokens.
    pub repetition_penalty: Option<f64>,
    /// The seed of the draws.
    pub seed: Option<u64>,
    /// Texts that end generation (left out of the output); added to the package's.
    pub stop: Vec<String>,
    /// Recompute every token each step instead of keeping the KV cache.
    pub no_cache: bool,
}

/// What a generation did.
#[derive(Clone, Debug, Serialize)]
pub struct TextReport {
    /// Tokens in the prompt (BOS included).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Why it stopped: `stop` (EOS or a stop string) or `length`.
    pub finish: Finish,
    /// Seconds from the prompt to the first generated token (prefill included).
    pub seconds_to_first_token: f64,
    /// Seconds in all.
    pub seconds: f64,
    /// Generated tokens per second, over the whole generation.
    pub tokens_per_sec: f64,
    /// The text generated, as written out.
    pub text: String,
}

/// Continues `req.prompt` with `pkg`'s model, writing the text to `out` as it is made.
pub fn generate_text(pkg: &LanguagePackage, req: &TextRequest, out: &mut dyn Write) -> Result<TextReport> {
    let defaults = pkg.manifest.generation.clone().unwrap_or_default();
    let sampling = Sampling {
        temperature: req.temperature.unwrap_or(defaults.sampling.temperature),
        top_k: req.top_k.unwrap_or(defaults.sampling.top_k),
        top_p: req.top_p.unwrap_or(defaults.sampling.top_p),
        repetition_penalty: req.repetition_penalty.unwrap_or(defaults.sampling.repetition_penalty),
        seed: req.seed.unwrap_or(defaults.sampling.seed),
    };
    sampling.validate().map_err(|e| Error::Config(e.to_string()))?;
    let tok = &pkg.tokenizer;
    let prompt = tok.encode(&req.prompt, true)?;
    if prompt.is_empty() {
        return Err(Error::Config(
            "the prompt is empty and the tokenizer has no BOS token to start from".into(),
        ));
    }
    let config = GenerateConfig {
        max_tokens: req.max_tokens.unwrap_or(defaults.max_tokens),
        sampling,
        stop_tokens: tok.special().eos.into_iter().collect(),
        use_cache: !req.no_cache,
    };
    let stops: Vec<String> = defaults.stop.iter().chain(&req.stop).cloned().collect();
    let mut stop = StopStrings::new(&stops);
    let mut decoder = StreamDecoder::new(true);
    let mut text = String::new();
    let mut failure: Option<Error> = None;
    let mut first_token: Option<f64> = None;
    let started = Instant::now();
    let generated = generate(&pkg.model, std::slice::from_ref(&prompt), &config, |_, id| {
        first_token.get_or_insert_with(|| started.elapsed().as_secs_f64());
        let written = match decoder.step(tok, id) {
            Ok(Some(piece)) => emit(out, &stop.push(&piece), &mut text),
            Ok(None) => Ok(()),
            Err(e) => Err(e.into()),
        };
        match written {
            Ok(()) => !stop.stopped(),
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !stop.stopped() {
        let tail = decoder.finish(tok)?.unwrap_or_default();
        let mut rest = stop.push(&tail);
        if !stop.stopped() {
            rest.push_str(&stop.finish());
        }
        emit(out, &rest, &mut text)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let g = generated
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("no sequence generated".into()))?;
    Ok(TextReport {
        prompt_tokens: prompt.len(),
        generated_tokens: g.tokens.len(),
        finish: g.finish,
        seconds_to_first_token: first_token.unwrap_or(seconds),
        seconds,
        tokens_per_sec: g.tokens.len() as f64 / seconds.max(1e-9),
        text,
    })
}

fn emit(out: &mut dyn Write, piece: &str, text: &mut String) -> Result<()> {
    text.push_str(piece);
    out.write_all(piece.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("standard output", e))
}
