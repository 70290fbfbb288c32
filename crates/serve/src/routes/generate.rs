//! The KServe v2 generate extension, as Triton has it for language models:
//! `POST /v2/models/{name}[/versions/{v}]/generate` answers
//! `{"model_name", "model_version", "text_output", "finish_reason"}` for a request
//! `{"text_input": "...", "parameters": {...}}`, and `.../generate_stream` sends the same
//! objects as Server-Sent Events, one per piece of text. Errors are kiln's
//! `{"error": "..."}`, like the rest of v2.

use super::auth::Caller;
use super::v2::ModelPath;
use crate::{AppState, Error, Prompt, Result, TextRequest};
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use kiln_model::Finish;
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v2/models/{name}/generate", web::post().to(generate))
        .route(
            "/v2/models/{name}/versions/{version}/generate",
            web::post().to(generate),
        )
        .route("/v2/models/{name}/generate_stream", web::post().to(generate_stream))
        .route(
            "/v2/models/{name}/versions/{version}/generate_stream",
            web::post().to(generate_stream),
        );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    text_input: String,
    #[serde(default)]
    parameters: GenerateParameters,
    /// Echoed, as v2 does for infer.
    id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GenerateParameters {
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<usize>,
    repetition_penalty: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    stop: Vec<String>,
    /// Triton's vLLM backend takes `stream` here; the route decides.
    stream: Option<bool>,
}

fn request(body: GenerateRequest) -> Result<(TextRequest, Option<String>)> {
    let p = body.parameters;
    if p.max_tokens == Some(0) {
        return Err(Error::BadRequest("parameters.max_tokens must be at least 1".into()));
    }
    let _ = p.stream;
    Ok((
        TextRequest {
            prompt: Prompt::Text(body.text_input),
            max_tokens: p.max_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            repetition_penalty: p.repetition_penalty,
            seed: p.seed,
            stop: p.stop,
            logprobs: None,
        },
        body.id,
    ))
}

fn output(model: &str, version: u64, id: &Option<String>, text: &str, finish: Option<Finish>) -> Value {
    let mut o = json!({"model_name": model, "model_version": version.to_string(), "text_output": text});
    if let Some(f) = finish {
        o["finish_reason"] = json!(match f {
            Finish::Stop => "stop",
            Finish::Length => "length",
        });
    }
    if let Some(id) = id {
        o["id"] = json!(id);
    }
    o
}

/// The model version asked for, its name and version, the request's id, and its stream.
fn start(
    state: &AppState,
    path: &ModelPath,
    body: GenerateRequest,
) -> Result<(String, u64, Option<String>, crate::TextStream)> {
    let m = state.get(&path.name, path.version.as_deref())?;
    let (req, id) = request(body)?;
    let (name, version) = (m.name.clone(), m.version);
    Ok((name, version, id, state.generate(m, req)?))
}

async fn generate(
    _: Caller,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    body: web::Json<GenerateRequest>,
) -> Result<HttpResponse> {
    let (name, version, id, mut stream) = start(&state, &path, body.into_inner())?;
    let (text, finish, _) = stream.collect().await?;
    Ok(HttpResponse::Ok().json(output(&name, version, &id, &text, Some(finish))))
}

async fn generate_stream(
    _: Caller,
    _: super::JsonOnly,
    state: web::Data<AppState>,
    path: web::Path<ModelPath>,
    body: web::Json<GenerateRequest>,
) -> Result<HttpResponse> {
    let (name, version, id, mut stream) = start(&state, &path, body.into_inner())?;
    // The first piece before the headers: a failure to start is still a status code.
    let first = match stream.next().await {
        Some(p) => p?,
        None => return Err(Error::Internal("the generation ended before it began".into())),
    };
    let event = move |v: Value| web::Bytes::from(format!("data: {v}\n\n"));
    let body = futures_util::stream::unfold((stream, Some(Ok(first)), false), move |(mut s, pending, ended)| {
        let (name, id) = (name.clone(), id.clone());
        async move {
            if ended {
                return None;
            }
            let piece = match pending {
                Some(p) => p,
                None => s.next().await?,
            };
            Some(match piece {
                Ok(p) => {
                    let last = p.finish.is_some();
                    let e = event(output(&name, version, &id, &p.text, p.finish));
                    (Ok::<_, actix_web::Error>(e), (s, None, last))
                }
                Err(e) => (Ok(event(json!({"error": e.to_string()}))), (s, None, true)),
            })
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body))
}
