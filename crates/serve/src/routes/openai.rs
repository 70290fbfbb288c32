//! The OpenAI-compatible API for language models: `GET /v1/models`,
//! `POST /v1/completions` and `POST /v1/chat/completions`, streamed as Server-Sent Events
//! (`data: {...}` chunks ending with `data: [DONE]`) when `stream` is true. Errors are in
//! OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so that its client
//! libraries raise them with our message. A translation only: the text comes from
//! [`AppState::generate`].

use super::auth::Caller;
use crate::{AppState, Error, Piece, Prompt, TextRequest, TextStream, TokenInfo};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse, ResponseError};
use futures_util::StreamExt;
use kiln_model::Finish;
use kiln_package::Task;
use kiln_text::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/models", web::get().to(models))
        .route("/v1/completions", web::post().to(completions))
        .route("/v1/chat/completions", web::post().to(chat_completions));
}

/// An error answered in OpenAI's shape; `param` names the request field at fault.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    error: Error,
    param: Option<&'static str>,
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<Error> for OpenAiError {
    fn from(error: Error) -> Self {
        OpenAiError { error, param: None }
    }
}

fn bad(param: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError {
        error: Error::BadRequest(message.into()),
        param: Some(param),
    }
}

impl OpenAiError {
    fn body(&self) -> Value {
        let status = self.error.status_code();
        let (kind, code) = match status {
            StatusCode::NOT_FOUND => ("invalid_request_error", Some("model_not_found")),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", Some("rate_limit_exceeded")),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ("authentication_error", None),
            s if s.is_client_error() => ("invalid_request_error", None),
            _ => ("server_error", None),
        };
        json!({"error": {"message": self.error.to_string(), "type": kind, "param": self.param, "code": code}})
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self.error, Error::Overloaded(_)) {
            r.insert_header((header::RETRY_AFTER, "1"));
        }
        r.json(self.body())
    }
}

type Result<T, E = OpenAiError> = std::result::Result<T, E>;

/// The most choices (`n`) one request may ask for: each is a sequence of its own.
const MAX_CHOICES: usize = 16;

/// `stop`: one string or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// What completions and chat completions share: sampling, limits, streaming, and the
/// fields kiln refuses rather than ignores.
#[derive(Deserialize, Default)]
struct Common {
    model: String,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    /// Not in OpenAI's schema; vLLM and llama.cpp take it (0 or -1: all tokens).
    top_k: Option<i64>,
    /// Not in OpenAI's schema; vLLM takes it.
    repetition_penalty: Option<f64>,
    seed: Option<i64>,
    stop: Option<Stop>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<serde_json::Map<String, Value>>,
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    prompt: Value,
    logprobs: Option<Value>,
    echo: Option<bool>,
    best_of: Option<i64>,
    suffix: Option<String>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    messages: Vec<Value>,
    max_completion_tokens: Option<i64>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
    #[serde(flatten)]
    common: Common,
}

/// Parses a JSON body into `T`, answering what is wrong with it in OpenAI's shape.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's messages name the field ("unknown field `x`", "missing field `model`").
        bad("body", format!("the request body is not a valid request: {e}"))
    })
}

impl Common {
    /// The generation request for `prompt`, or a 400 naming the field at fault.
    fn request(&self, prompt: Prompt, max_tokens: Option<i64>) -> Result<TextRequest> {
        if self.model.is_empty() {
            return Err(bad(
                "model",
                "model is empty; name a served model (GET /v1/models lists them)",
            ));
        }
        self.choices()?;
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(bad(
                    if name == "presence_penalty" {
                        "presence_penalty"
                    } else {
                        "frequency_penalty"
                    },
                    format!("{name} is not supported; use repetition_penalty (above 1 discourages repeats)"),
                ));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(bad("logit_bias", "logit_bias is not supported"));
        }
        let max_tokens = match max_tokens {
            Some(m) if m < 1 => return Err(bad("max_tokens", format!("max_tokens must be at least 1, got {m}"))),
            Some(m) => Some(m as usize),
            None => None,
        };
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(bad(
                    "temperature",
                    format!("temperature must be between 0 and 2, got {t}"),
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(bad("top_p", format!("top_p must be above 0 and at most 1, got {p}")));
            }
        }
        let top_k = match self.top_k {
            Some(k) if k < -1 => {
                return Err(bad(
                    "top_k",
                    format!("top_k must be -1 or 0 (all tokens) or positive, got {k}"),
                ))
            }
            Some(k) => Some(k.max(0) as usize),
            None => None,
        };
        if let Some(r) = self.repetition_penalty {
            if !(r > 0.0 && r.is_finite()) {
                return Err(bad(
                    "repetition_penalty",
                    format!("repetition_penalty must be positive (1 is off), got {r}"),
                ));
            }
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) if v.len() > 4 => {
                return Err(bad("stop", format!("stop holds {} strings; at most 4", v.len())));
            }
            Some(Stop::Many(v)) => v.clone(),
        };
        let _ = &self.user;
        Ok(TextRequest {
            prompt,
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed.map(|s| s as u64),
            stop,
            logprobs: None,
        })
    }

    /// `n`, the choices to make (1 to [`MAX_CHOICES`]).
    fn choices(&self) -> Result<usize> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(bad(
                "n",
                format!("n must be from 1 to {MAX_CHOICES} (the choices to make), got {n}"),
            )),
        }
    }

    fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh id: `prefix` and 24 hex digits.
fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now());
    format!("{prefix}-{:016x}{:08x}", h.finish(), std::process::id())
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

async fn models(caller: std::result::Result<Caller, Error>, state: web::Data<AppState>) -> Result<HttpResponse> {
    caller?;
    let mut data = Vec::new();
    for name in state.names() {
        if let Ok(m) = state.get(&name, None) {
            if m.manifest.task == Task::LanguageModel {
                data.push(json!({"id": name, "object": "model", "created": 0, "owned_by": "kiln"}));
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// Which API a response is for: the shape of its objects.
#[derive(Clone, Copy)]
enum Api {
    Completions,
    Chat,
}

impl Api {
    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }

    /// A choice carrying `text` (whole, or a streamed piece) and, when they were asked
    /// for, its tokens' log-probabilities.
    fn choice(
        self,
        index: usize,
        text: &str,
        finish: Option<Finish>,
        stream: bool,
        first: bool,
        tokens: Option<&[TokenInfo]>,
    ) -> Value {
        let reason = finish.map(finish_reason);
        let logprobs = tokens.map_or(Value::Null, |t| self.logprobs(t));
        match (self, stream) {
            (Api::Completions, _) => {
                json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason})
            }
            (Api::Chat, false) => json!({
                "index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs, "finish_reason": reason,
            }),
            (Api::Chat, true) => {
                let delta = match (first, finish.is_some() && text.is_empty()) {
                    (true, _) => json!({"role": "assistant", "content": text}),
                    (false, true) => json!({}),
                    (false, false) => json!({"content": text}),
                };
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason})
            }
        }
    }

    /// `tokens` in this API's log-probability shape.
    fn logprobs(self, tokens: &[TokenInfo]) -> Value {
        match self {
            Api::Completions => json!({
                "tokens": tokens.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": tokens
                    .iter()
                    .map(|t| t.top.iter().map(|(s, _, l)| (s.clone(), json!(l))).collect::<serde_json::Map<_, _>>())
                    .collect::<Vec<_>>(),
            }),
            Api::Chat => json!({
                "content": tokens.iter().map(|t| json!({
                    "token": t.text, "logprob": t.logprob, "bytes": t.bytes,
                    "top_logprobs": t.top.iter().map(|(s, b, l)| json!({"token": s, "logprob": l, "bytes": b})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Token counts: the prompt once, the completions of every choice together.
fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

async fn completions(
    caller: std::result::Result<Caller, Error>,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    caller?;
    let req: CompletionRequest = parse(&body)?;
    let logprobs = match &req.logprobs {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n <= 20 => Some(n as usize),
            _ => {
                return Err(bad(
                    "logprobs",
                    format!("logprobs must be an integer from 0 to 20, got {v}"),
                ))
            }
        },
    };
    if req.echo == Some(true) {
        return Err(bad("echo", "echo is not supported; the prompt is yours already"));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(bad("best_of", "best_of is not supported"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(bad("suffix", "suffix (insertion) is not supported"));
    }
    let prompt = match &req.prompt {
        Value::String(s) => Prompt::Text(s.clone()),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            Prompt::Text(items[0].as_str().unwrap_or_default().to_string())
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            let ids: Option<Vec<u32>> = items
                .iter()
                .map(|v| v.as_u64().and_then(|t| u32::try_from(t).ok()))
                .collect();
            Prompt::Tokens(ids.ok_or_else(|| bad("prompt", "a token id is out of range"))?)
        }
        Value::Array(items) if items.len() > 1 => {
            return Err(bad(
                "prompt",
                "several prompts in one request are not supported; send one request each",
            ));
        }
        _ => return Err(bad("prompt", "prompt must be a string or a list of token ids")),
    };
    let mut text = req.common.request(prompt, req.common.max_tokens)?;
    text.logprobs = logprobs;
    answer(state, &req.common, text, Api::Completions).await
}

async fn chat_completions(
    caller: std::result::Result<Caller, Error>,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    caller?;
    let req: ChatRequest = parse(&body)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), None) => Some(0),
        (Some(true), Some(n)) if (0..=20).contains(&n) => Some(n as usize),
        (Some(true), Some(n)) => {
            return Err(bad(
                "top_logprobs",
                format!("top_logprobs must be from 0 to 20, got {n}"),
            ))
        }
        (_, Some(_)) => return Err(bad("top_logprobs", "top_logprobs needs logprobs: true")),
        _ => None,
    };
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        let content = match m.get("content") {
            Some(Value::String(s)) => Some(s.clone()),
            // Content parts: only text ones.
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| {
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => Some(t.to_string()),
                        _ => None,
                    }
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat()),
            _ => None,
        };
        match (role, content) {
            (Some(r @ ("system" | "developer" | "user" | "assistant")), Some(c)) => messages.push(ChatMessage {
                role: if r == "developer" { "system".into() } else { r.into() },
                content: c,
            }),
            (Some(r @ ("system" | "developer" | "user" | "assistant")), None) => {
                return Err(bad(
                    "messages",
                    format!("messages[{i}] ({r}) has no text content: give content as a string or text parts"),
                ));
            }
            (Some(r), _) => {
                return Err(bad(
                    "messages",
                    format!("messages[{i}] has role {r:?}; expected system, user or assistant"),
                ));
            }
            (None, _) => return Err(bad("messages", format!("messages[{i}] has no role"))),
        }
    }
    let max_tokens = req.max_completion_tokens.or(req.common.max_tokens);
    let mut text = req.common.request(Prompt::Chat(messages), max_tokens)?;
    text.logprobs = logprobs;
    answer(state, &req.common, text, Api::Chat).await
}

/// Runs `text` `n` times (choice `i` with seed `seed + i` when the request names one) and
/// answers whole, or streams the choices' pieces as Server-Sent Events as they come, each
/// chunk one choice's.
async fn answer(state: web::Data<AppState>, common: &Common, text: TextRequest, api: Api) -> Result<HttpResponse> {
    let model = state.get(&common.model, None)?;
    let name = model.name.clone();
    let want_logprobs = text.logprobs.is_some();
    let n = common.choices()?;
    let room = state.config.max_sequences.min(state.config.queue_capacity);
    if n > room {
        // More choices than one instance runs at once (or the queue holds) would wait on
        // each other: some would time out, or every try would be a 429.
        return Err(bad(
            "n",
            format!("n = {n} is more than the {room} sequences this server runs at once (--max-sequences, --queue-capacity)"),
        ));
    }
    // All queued or none: dropping the streams made so far frees their sequences.
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut t = text.clone();
        t.seed = text.seed.map(|s| s.wrapping_add(i as u64));
        streams.push(state.generate(model.clone(), t)?);
    }
    let prompt_tokens = streams.first().map_or(0, |s| s.prompt_tokens);
    let (id, created) = (
        new_id(if matches!(api, Api::Chat) { "chatcmpl" } else { "cmpl" }),
        now(),
    );
    if common.stream != Some(true) {
        // The first failure answers at once; dropping the others frees their sequences.
        let done = futures_util::future::try_join_all(streams.iter_mut().map(TextStream::collect)).await?;
        let mut choices = Vec::with_capacity(n);
        for (i, (text, finish, tokens)) in done.into_iter().enumerate() {
            choices.push(api.choice(
                i,
                &text,
                Some(finish),
                false,
                true,
                want_logprobs.then_some(&tokens[..]),
            ));
        }
        let completion = streams.iter().map(|s| s.completion_tokens).sum();
        return Ok(HttpResponse::Ok().json(json!({
            "id": id, "object": api.object(false), "created": created, "model": name,
            "choices": choices,
            "usage": usage(prompt_tokens, completion),
        })));
    }
    // Every choice's pieces as they come, with its index and its token count so far.
    let mut merged = futures_util::stream::select_all(streams.into_iter().enumerate().map(|(i, s)| {
        Box::pin(futures_util::stream::unfold(s, move |mut s| async move {
            let piece = s.next().await?;
            Some(((i, piece, s.completion_tokens), s))
        }))
    }));
    // The first piece before the headers: a failure to start (a timeout, a stopped model)
    // is still a status code.
    let first = match merged.next().await {
        Some((i, p, made)) => (i, p?, made),
        None => return Err(Error::Internal("the generation ended before it began".into()).into()),
    };
    let include_usage = common.include_usage();
    let chunk = move |choices: Vec<Value>, usage: Option<Value>| {
        let mut c =
            json!({"id": id, "object": api.object(true), "created": created, "model": name, "choices": choices});
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        web::Bytes::from(format!("data: {c}\n\n"))
    };
    enum Phase {
        First(usize, Piece, usize),
        Next,
        Usage,
        Done,
        End,
    }
    /// What the stream has seen of each choice: whether it began, its tokens, whether it
    /// ended.
    struct Seen {
        began: Vec<bool>,
        made: Vec<usize>,
        open: usize,
    }
    let seen = Seen {
        began: vec![false; n],
        made: vec![0; n],
        open: n,
    };
    let start = (merged, Phase::First(first.0, first.1, first.2), seen);
    let body = futures_util::stream::unfold(start, move |(mut merged, phase, mut seen)| {
        let chunk = chunk.clone();
        async move {
            let (i, piece, made) = match phase {
                Phase::End => return None,
                Phase::Done => {
                    return Some((
                        Ok::<_, actix_web::Error>(web::Bytes::from_static(b"data: [DONE]\n\n")),
                        (merged, Phase::End, seen),
                    ));
                }
                Phase::Usage => {
                    let u = usage(prompt_tokens, seen.made.iter().sum());
                    return Some((Ok(chunk(Vec::new(), Some(u))), (merged, Phase::Done, seen)));
                }
                Phase::First(i, p, made) => (i, Ok(p), made),
                Phase::Next => match merged.next().await {
                    Some(item) => item,
                    None => {
                        return Some((
                            Ok(web::Bytes::from_static(b"data: [DONE]\n\n")),
                            (merged, Phase::End, seen),
                        ))
                    }
                },
            };
            match piece {
                Ok(p) => {
                    seen.made[i] = made;
                    if p.finish.is_some() {
                        seen.open -= 1;
                    }
                    let next = match (seen.open == 0, include_usage) {
                        (false, _) => Phase::Next,
                        (true, true) => Phase::Usage,
                        (true, false) => Phase::Done,
                    };
                    let tokens = want_logprobs.then_some(&p.tokens[..]);
                    let choice = api.choice(i, &p.text, p.finish, true, !seen.began[i], tokens);
                    seen.began[i] = true;
                    Some((Ok(chunk(vec![choice], None)), (merged, next, seen)))
                }
                Err(e) => {
                    // Mid-stream: the status is sent; the error goes as an event, and the
                    // other choices end with it.
                    let body = OpenAiError::from(e).body();
                    Some((
                        Ok(web::Bytes::from(format!("data: {body}\n\n"))),
                        (merged, Phase::Done, seen),
                    ))
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body))
}
