//! Text generation as the protocols see it: a prompt (text, token ids or chat messages)
//! and sampling settings in; a stream of text pieces out, in whole UTF-8 characters, cut
//! at the first stop string (never let out even in part), with token counts and why it
//! ended. Protocol-independent: the OpenAI and KServe routes only translate.

use crate::engine::LanguageModel;
use crate::generator::{Event, GenerateRequest};
use crate::{AppState, Error, Model, Result};
use kiln_model::{Finish, Sampling};
use kiln_text::{ChatMessage, StopStrings, StreamDecoder, Tokenizer};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// What to continue.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Text, tokenized with the model's tokenizer (BOS added when it has one).
    Text(String),
    /// Token ids as they are.
    Tokens(Vec<u32>),
    /// A conversation, rendered by the model's chat template with the assistant's turn
    /// opened.
    Chat(Vec<ChatMessage>),
}

/// A generation request; `None` fields take the package's defaults.
#[derive(Clone, Debug)]
pub struct TextRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// Tokens to generate at most.
    pub max_tokens: Option<usize>,
    /// 0 for greedy.
    pub temperature: Option<f64>,
    /// Sample among the most likely whose probabilities add up to p.
    pub top_p: Option<f64>,
    /// Sample among the k most likely (0: all).
    pub top_k: Option<usize>,
    /// Above 1 discourages repeating tokens.
    pub repetition_penalty: Option<f64>,
    /// The seed of the draws; without one, each request draws its own.
    pub seed: Option<u64>,
    /// Texts that end generation (left out of the text); added to the package's.
    pub stop: Vec<String>,
    /// With `Some(n)`, every token's log-probability and the `n` most likely tokens'.
    pub logprobs: Option<usize>,
}

/// A generated token with its log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    /// The token as text (alone; a piece of a character shows as U+FFFD).
    pub text: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens at its position, as text, and theirs.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// A piece of generated text.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// The text (may be empty on the last piece).
    pub text: String,
    /// Set on the last piece: why it ended.
    pub finish: Option<Finish>,
    /// The tokens this piece's text came from, when log-probabilities were asked for.
    pub tokens: Vec<TokenInfo>,
}

/// A generation under way: its pieces in order (see [`TextStream::next`]).
pub struct TextStream {
    events: Option<UnboundedReceiver<Event>>,
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    decoder: StreamDecoder,
    stop: StopStrings,
    first: Option<std::time::Duration>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated so far.
    pub completion_tokens: usize,
    finished: bool,
    /// Tokens (with log-probabilities) not yet handed out with a piece.
    pending: Vec<TokenInfo>,
}

impl AppState {
    /// Starts generating for `req` with `model` (a language model, else a 400): checks
    /// and completes the request from the package's defaults, tokenizes the prompt,
    /// queues it (429 when the queue is full), and returns its stream.
    pub fn generate(&self, model: Arc<Model>, req: TextRequest) -> Result<TextStream> {
        let lm = model.engine.generator(&model.name)?;
        let d = &lm.defaults;
        let sampling = Sampling {
            temperature: req.temperature.unwrap_or(d.sampling.temperature),
            top_k: req.top_k.unwrap_or(d.sampling.top_k),
            top_p: req.top_p.unwrap_or(d.sampling.top_p),
            repetition_penalty: req.repetition_penalty.unwrap_or(d.sampling.repetition_penalty),
            seed: req.seed.unwrap_or_else(random_seed),
        };
        sampling.validate().map_err(|e| Error::BadRequest(e.to_string()))?;
        let prompt = tokenize(lm, &model.name, &req.prompt)?;
        let capacity = lm.generator.capacity;
        if prompt.len() >= capacity {
            return Err(Error::BadRequest(format!(
                "the prompt is {} tokens; model {} holds at most {capacity} tokens a sequence here \
                 (its context, or less under --kv-cache-bytes), prompt and completion together",
                prompt.len(),
                model.name
            )));
        }
        let room = capacity - prompt.len();
        let max_tokens = req.max_tokens.unwrap_or(d.max_tokens.min(room));
        if max_tokens == 0 {
            return Err(Error::BadRequest("max_tokens must be at least 1".into()));
        }
        if max_tokens > room {
            return Err(Error::BadRequest(format!(
                "max_tokens {max_tokens} is more than the {room} tokens left after the prompt of {} \
                 (model {} holds {capacity} a sequence here)",
                prompt.len(),
                model.name
            )));
        }
        let stops: Vec<String> = d
            .stop
            .iter()
            .chain(&req.stop)
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let prompt_tokens = prompt.len();
        let tokenizer = lm.tokenizer.clone();
        let events = lm.generator.submit(
            GenerateRequest {
                prompt,
                max_tokens,
                sampling,
                stop_tokens: lm.tokenizer.special().eos.into_iter().collect(),
                logprobs: req.logprobs,
            },
            &model.name,
        )?;
        Ok(TextStream {
            events: Some(events),
            first: Some(self.config.request_timeout),
            decoder: StreamDecoder::new(true),
            stop: StopStrings::new(&stops),
            model,
            tokenizer,
            prompt_tokens,
            completion_tokens: 0,
            finished: false,
            pending: Vec::new(),
        })
    }
}

fn tokenize(lm: &LanguageModel, model: &str, prompt: &Prompt) -> Result<Vec<u32>> {
    let tok = &lm.tokenizer;
    let ids = match prompt {
        Prompt::Text(t) => tok.encode(t, true),
        Prompt::Tokens(ids) => {
            let vocab = tok.vocab_size();
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::BadRequest(format!(
                    "token id {bad} is outside model {model}'s vocabulary of {vocab}"
                )));
            }
            return Ok(ids.clone());
        }
        Prompt::Chat(messages) => {
            let Some(template) = &lm.chat_template else {
                return Err(Error::BadRequest(format!(
                    "model {model} has no chat template; send it text through /v1/completions"
                )));
            };
            if messages.is_empty() {
                return Err(Error::BadRequest("messages is empty; send at least one".into()));
            }
            let text = template
                .render(messages, true)
                .map_err(|e| Error::BadRequest(format!("model {model}: {e}")))?;
            // The template writes the special tokens it wants as text.
            tok.encode(&text, false)
        }
    }
    .map_err(|e| Error::BadRequest(format!("cannot tokenize the prompt: {e}")))?;
    if ids.is_empty() {
        return Err(Error::BadRequest(
            "the prompt is empty and the model's tokenizer has no BOS token to start from".into(),
        ));
    }
    Ok(ids)
}

/// A seed for a request that names none.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl TextStream {
    /// The next piece of text, `None` after the last (the one with `finish` set). The
    /// first token must come within the server's request timeout (a 504 otherwise); later
    /// ones take as long as they take.
    pub async fn next(&mut self) -> Option<Result<Piece>> {
        if self.finished {
            return None;
        }
        loop {
            let events = self.events.as_mut()?;
            let event = match self.first.take() {
                Some(limit) => match tokio::time::timeout(limit, events.recv()).await {
                    Ok(e) => e,
                    Err(_) => {
                        self.finish_now();
                        return Some(Err(Error::Timeout(limit.as_millis())));
                    }
                },
                None => events.recv().await,
            };
            let tok = self.tokenizer.clone();
            match event {
                Some(Event::Token(id, logprobs)) => {
                    self.completion_tokens += 1;
                    if let Some(lp) = logprobs {
                        let piece = |t: u32| {
                            let text = tok.decode(&[t], false).unwrap_or_default();
                            (text.clone(), text.into_bytes())
                        };
                        let (text, bytes) = piece(id);
                        self.pending.push(TokenInfo {
                            text,
                            bytes,
                            logprob: lp.logprob,
                            top: lp
                                .top
                                .iter()
                                .map(|&(t, l)| {
                                    let (s, b) = piece(t);
                                    (s, b, l)
                                })
                                .collect(),
                        });
                    }
                    let piece = match self.decoder.step(&tok, id) {
                        Ok(Some(p)) => p,
                        Ok(None) => continue,
                        Err(e) => {
                            self.finish_now();
                            return Some(Err(Error::Internal(format!("cannot decode token {id}: {e}"))));
                        }
                    };
                    let text = self.stop.push(&piece);
                    if self.stop.stopped() {
                        // Dropping the receiver frees the sequence's row at the next step.
                        self.finish_now();
                        return Some(Ok(Piece {
                            text,
                            finish: Some(Finish::Stop),
                            tokens: std::mem::take(&mut self.pending),
                        }));
                    }
                    if !text.is_empty() {
                        return Some(Ok(Piece {
                            text,
                            finish: None,
                            tokens: std::mem::take(&mut self.pending),
                        }));
                    }
                }
                Some(Event::Done(finish)) => {
                    let tail = self.decoder.finish(&tok).ok().flatten().unwrap_or_default();
                    let mut text = self.stop.push(&tail);
                    if !self.stop.stopped() {
                        text.push_str(&self.stop.finish());
                    }
                    let finish = if self.stop.stopped() { Finish::Stop } else { finish };
                    self.finish_now();
                    return Some(Ok(Piece {
                        text,
                        finish: Some(finish),
                        tokens: std::mem::take(&mut self.pending),
                    }));
                }
                Some(Event::Failed(e)) => {
                    self.finish_now();
                    return Some(Err(if e.caused_by_input {
                        Error::BadRequest(e.message)
                    } else {
                        Error::Internal(e.message)
                    }));
                }
                None => {
                    self.finish_now();
                    return Some(Err(Error::Unavailable(format!(
                        "model {} stopped while generating; retry",
                        self.model.name
                    ))));
                }
            }
        }
    }

    /// Reads the stream to its end: the whole text, why it ended, and its tokens when
    /// log-probabilities were asked for.
    pub async fn collect(&mut self) -> Result<(String, Finish, Vec<TokenInfo>)> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        while let Some(piece) = self.next().await {
            let piece = piece?;
            text.push_str(&piece.text);
            tokens.extend(piece.tokens);
            if let Some(f) = piece.finish {
                return Ok((text, f, tokens));
            }
        }
        Err(Error::Internal("the generation ended without a reason".into()))
    }

    /// The model generating.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn finish_now(&mut self) {
        self.finished = true;
        self.events = None;
    }
}
