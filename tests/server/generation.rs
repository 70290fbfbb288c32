//! Language models over the OpenAI-compatible API: a real `kiln-serve` serving a small
//! decoder beside a classifier; completions and chat, whole and streamed; stop strings;
//! seeds; many streams at once against each one's solo answer; a client hanging up;
//! overload; and every bad request answered in OpenAI's error shape.

use crate::util::{lm_repository, wait_for, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};

/// The JSON events of a Server-Sent Events body, and whether it ended with `[DONE]`.
fn events(body: &Value) -> (Vec<Value>, bool) {
    let text = body.as_str().expect("an event stream, not JSON");
    let mut out = Vec::new();
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let data = block.strip_prefix("data: ").expect("every event is one data line");
        assert!(!done, "an event after [DONE]: {data}");
        if data == "[DONE]" {
            done = true;
        } else {
            out.push(serde_json::from_str(data).unwrap());
        }
    }
    (out, done)
}

/// The streamed text of completion or chat chunks, and the last finish reason.
fn streamed_text(chunks: &[Value]) -> (String, Option<String>) {
    let mut text = String::new();
    let mut finish = None;
    for c in chunks {
        for choice in c["choices"].as_array().unwrap() {
            let piece = choice["text"]
                .as_str()
                .or_else(|| choice["delta"]["content"].as_str())
                .unwrap_or("");
            text.push_str(piece);
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (text, finish)
}

fn complete(s: &Server, body: Value) -> (u16, Value) {
    s.post("/v1/completions", &body)
}

fn greedy(prompt: &str, max_tokens: u64) -> Value {
    json!({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn completions_and_chat_answer_in_openai_shape_and_stream_the_same_text() {
    let s = Server::start_on(lm_repository(), &[]);
    let (status, list) = s.get("/v1/models");
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny"], "only language models are listed: {list}");

    let (status, whole) = complete(&s, greedy("And God said", 12));
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["model"], "tiny");
    let choice = &whole["choices"][0];
    let text = choice["text"].as_str().unwrap();
    assert_eq!(whole["usage"]["completion_tokens"], 12, "{whole}");
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(
        whole["usage"]["total_tokens"].as_u64().unwrap(),
        whole["usage"]["prompt_tokens"].as_u64().unwrap() + 12
    );

    let mut body = greedy("And God said", 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, _, sse) = s.post_raw(
        "/v1/completions",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(status, 200);
    let (chunks, done) = events(&sse);
    assert!(done, "the stream ends with [DONE]");
    let (streamed, finish) = streamed_text(&chunks);
    assert_eq!(streamed, text, "the streamed text is the whole answer's");
    assert_eq!(finish.as_deref(), Some("length"));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk has no choices");
    assert_eq!(last["usage"], whole["usage"]);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));

    // Chat: the template renders the messages; whole and streamed agree.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "Let there be light"}],
                      "max_tokens": 10, "temperature": 0});
    let (status, whole) = s.post("/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let answer = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let mut streaming = chat.clone();
    streaming["stream"] = json!(true);
    let (_, _, sse) = s.post_raw(
        "/v1/chat/completions",
        "application/json",
        serde_json::to_vec(&streaming).unwrap(),
    );
    let (chunks, done) = events(&sse);
    assert!(done);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks).0, answer);
    // The chat prompt is longer than the message: the template's tokens are in it.
    assert!(whole["usage"]["prompt_tokens"].as_u64().unwrap() > 6, "{whole}");
    assert!(s.healthy());
}

#[test]
fn a_stop_string_ends_the_text_before_it_whole_or_streamed() {
    let s = Server::start_on(lm_repository(), &[]);
    let (_, whole) = complete(&s, greedy("In the beginning", 40));
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    // A stop string taken from the middle of the answer (whole characters).
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 8, "the answer is too short to cut: {text:?}");
    let at = chars.len() / 2;
    let stop: String = chars[at..at + 3].iter().collect();
    let before: String = text[..text.find(&stop).unwrap()].to_string();
    let mut body = greedy("In the beginning", 40);
    body["stop"] = json!([stop]);
    let (status, cut) = complete(&s, body.clone());
    assert_eq!(status, 200, "{cut}");
    assert_eq!(cut["choices"][0]["text"], before, "cut at {stop:?}");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let (_, _, sse) = s.post_raw(
        "/v1/completions",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    let (chunks, done) = events(&sse);
    assert!(done);
    let (streamed, finish) = streamed_text(&chunks);
    assert_eq!(streamed, before, "no part of the stop string is streamed");
    assert_eq!(finish.as_deref(), Some("stop"));
}

#[test]
fn the_same_seed_gives_the_same_text() {
    let s = Server::start_on(lm_repository(), &[]);
    let sampled = |seed: u64| {
        let body =
            json!({"model": "tiny", "prompt": "And God said", "max_tokens": 24, "temperature": 2.0, "seed": seed});
        let (status, r) = complete(&s, body);
        assert_eq!(status, 200, "{r}");
        r["choices"][0]["text"].as_str().unwrap().to_string()
    };
    assert_eq!(sampled(7), sampled(7));
    let others: Vec<String> = (100..104).map(sampled).collect();
    assert!(
        others.iter().any(|t| *t != sampled(7)),
        "four other seeds all gave the same text"
    );
}

#[test]
fn n_choices_are_separate_sequences_seeded_in_turn_whole_and_streamed() {
    let s = Server::start_on(lm_repository(), &[]);
    let body = |seed: u64, n: u64| json!({"model": "tiny", "prompt": "And God said", "max_tokens": 12, "temperature": 2.0, "seed": seed, "n": n});
    // Choice i is what one request with seed 7 + i makes.
    let (status, one) = complete(&s, body(7, 1));
    assert_eq!(status, 200, "{one}");
    let alone: Vec<Value> = (7..10)
        .map(|seed| {
            let (status, r) = complete(&s, body(seed, 1));
            assert_eq!(status, 200, "{r}");
            r
        })
        .collect();
    let made: u64 = alone
        .iter()
        .map(|r| r["usage"]["completion_tokens"].as_u64().unwrap())
        .sum();
    let alone: Vec<&Value> = alone.iter().map(|r| &r["choices"][0]).collect();
    let (status, r) = complete(&s, body(7, 3));
    assert_eq!(status, 200, "{r}");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{r}");
    for (i, (c, a)) in choices.iter().zip(alone).enumerate() {
        assert_eq!(c["index"], i, "{r}");
        assert_eq!(c["text"], a["text"], "choice {i}");
        assert_eq!(c["finish_reason"], a["finish_reason"], "choice {i}");
    }
    assert_ne!(choices[0]["text"], choices[1]["text"], "the choices are drawn apart");
    // The prompt counts once, the completions together.
    assert_eq!(r["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"]);
    assert_eq!(r["usage"]["completion_tokens"], made, "{r}");

    // Streamed: each chunk is one choice's piece; each choice's pieces make its text and
    // end with one finish reason; usage and [DONE] come after all of them.
    let mut streamed = body(7, 3);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, raw) = complete(&s, streamed);
    assert_eq!(status, 200);
    let (chunks, done) = events(&raw);
    assert!(done);
    let (usage, pieces) = chunks.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], made, "{usage}");
    for (i, c) in choices.iter().enumerate() {
        let mine: Vec<Value> = pieces
            .iter()
            .filter(|p| p["choices"][0]["index"] == i)
            .cloned()
            .collect();
        assert!(pieces.iter().all(|p| p["choices"].as_array().unwrap().len() == 1));
        let (text, finish) = streamed_text(&mine);
        assert_eq!(text, c["text"].as_str().unwrap(), "choice {i}");
        assert_eq!(finish.as_deref(), c["finish_reason"].as_str(), "choice {i}");
        let ends = mine
            .iter()
            .filter(|p| !p["choices"][0]["finish_reason"].is_null())
            .count();
        assert_eq!(ends, 1, "choice {i} ends once");
    }

    // Chat: every choice's first delta opens the assistant's turn.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "Let there be light"}],
                      "max_tokens": 6, "temperature": 0, "n": 2, "stream": true});
    let (status, raw) = s.post("/v1/chat/completions", &chat);
    assert_eq!(status, 200);
    let (chunks, done) = events(&raw);
    assert!(done);
    for i in 0..2 {
        let first = chunks.iter().find(|c| c["choices"][0]["index"] == i).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
    }
    let (status, health) = s.get("/v2/health/ready");
    assert_eq!(status, 200, "{health}");
}

/// Why two greedy continuations of `prompt` differ: the first token where they part and
/// the margin between the two most likely tokens there, computed here in f32 from the
/// package. A margin near 0 is a near-tie that batching's rounding may break either way; a
/// clear margin means one sequence saw what it should not (another's cache).
fn explain(prompt: &str, solo: &str, together: &str) -> String {
    use kiln_tensor::{tch, Tensor};
    let pkg = kiln_package::LanguagePackage::load(crate::util::language_package(), kiln_tensor::Device::Cpu).unwrap();
    let ids = |text: &str| pkg.tokenizer.encode(text, false).unwrap();
    let mut context = pkg.tokenizer.encode(prompt, true).unwrap();
    let (a, b) = (ids(solo), ids(together));
    let at = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    context.extend(&a[..at]);
    let x = Tensor::from_slice(&context.iter().map(|&t| i64::from(t)).collect::<Vec<_>>()).view([1, -1]);
    let logits = tch::no_grad(|| pkg.model.forward(&x, false).unwrap())
        .get(0)
        .get(context.len() as i64 - 1);
    let (top, idx) = logits.topk(2, -1, true, true);
    let top: Vec<f32> = Vec::try_from(top).unwrap();
    let idx: Vec<i64> = Vec::try_from(idx).unwrap();
    format!(
        "they part at token {at} ({:?} alone, {:?} together); the two most likely there are {idx:?}, \
         logits {top:?}, margin {:.2e}",
        a.get(at),
        b.get(at),
        top[0] - top[1]
    )
}

#[test]
fn sixteen_concurrent_streams_each_equal_their_solo_answer() {
    let s = Server::start_on(lm_repository(), &["--max-sequences", "16", "--http-workers", "4"]);
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "{} the face of the {} ",
                ["And", "In", "Let"][i % 3],
                ["deep", "waters", "earth", "light"][i % 4]
            )
            .repeat(1 + i % 3)
        })
        .collect();
    let body = |p: &str| json!({"model": "tiny", "prompt": p, "max_tokens": 32, "temperature": 0, "stream": true});
    let run = |p: &str| {
        let (status, _, sse) = s.post_raw(
            "/v1/completions",
            "application/json",
            serde_json::to_vec(&body(p)).unwrap(),
        );
        assert_eq!(status, 200);
        let (chunks, done) = events(&sse);
        assert!(done);
        streamed_text(&chunks).0
    };
    let solo: Vec<String> = prompts.iter().map(|p| run(p)).collect();
    let steps_before = s.metric("kiln_batch_size_count", "tiny");
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts.iter().map(|p| scope.spawn(move || run(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
        assert!(
            a == b,
            "stream {i} differs from its solo answer: {}",
            explain(&prompts[i], a, b)
        );
    }
    // The explanation a failure would print, on the first stream (whose next token is
    // past its 32): the margins here are far from ties.
    eprintln!("stream 0: {}", explain(&prompts[0], &solo[0], &solo[0]));
    // Decoding steps really held several sequences: fewer steps than tokens.
    let steps = s.metric("kiln_batch_size_count", "tiny") - steps_before;
    let rows = s.metric("kiln_batch_size_sum", "tiny");
    assert!(
        steps > 0.0 && steps < 16.0 * 31.0 / 2.0,
        "{steps} decoding steps for 16 x 31 tokens"
    );
    assert!(rows > steps, "sequences per step never above 1");
    assert_eq!(s.metric("kiln_num_requests_running", "tiny"), 0.0);
    assert!(s.metric("kiln_generation_tokens_total", "tiny") >= 32.0 * 32.0);
    // Every sequence's first token, every later one, every end, timed (solo and together).
    assert!(s.metric("kiln_time_to_first_token_seconds_count", "tiny") >= 32.0);
    assert!(s.metric("kiln_inter_token_latency_seconds_count", "tiny") >= 32.0 * 31.0);
    assert!(s.metric("kiln_e2e_request_latency_seconds_count", "tiny") >= 32.0);
    assert!(s.metric("kiln_queue_duration_seconds_count", "tiny") >= 32.0);
    // Every prompt's tokens, BOS included, once solo and once together.
    let pkg = kiln_package::LanguagePackage::load(crate::util::language_package(), kiln_tensor::Device::Cpu).unwrap();
    let prompt_tokens: usize = prompts
        .iter()
        .map(|p| pkg.tokenizer.encode(p, true).unwrap().len())
        .sum();
    assert_eq!(s.metric("kiln_prompt_tokens_total", "tiny"), 2.0 * prompt_tokens as f64);
    assert!(s.metric("kiln_request_finished_total", "finished_reason=\"length\"") >= 32.0);
}

#[test]
fn prefix_caching_reuses_held_prompts_and_changes_no_text() {
    let base = "In the beginning God created the heaven and the earth. And the earth was without form, and void;";
    let prompts = [
        format!("{base} and darkness"),
        format!("{base} and the Spirit of God"),
        base.to_string(),
        "And God said, Let there be light".to_string(),
    ];
    let text = |s: &Server, p: &str| {
        let (status, r) = complete(s, greedy(p, 24));
        assert_eq!(status, 200, "{r}");
        r["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let plain = Server::start_on(lm_repository(), &[]);
    let want: Vec<String> = prompts.iter().map(|p| text(&plain, p)).collect();
    let cached = Server::start_on(lm_repository(), &["--prefix-cache"]);
    let hits = || cached.metric("kiln_prefix_cache_hits_total", "tiny");
    // Nothing is held yet; then each prompt starting with what a finished sequence held
    // reuses it, and what it generates does not change.
    assert_eq!(text(&cached, &prompts[0]), want[0]);
    assert_eq!(hits(), 0.0);
    let pkg = kiln_package::LanguagePackage::load(crate::util::language_package(), kiln_tensor::Device::Cpu).unwrap();
    let shared = pkg.tokenizer.encode(base, true).unwrap().len();
    assert!(shared >= 16, "the shared start is {shared} tokens");
    for (i, p) in prompts.iter().enumerate().skip(1) {
        let before = hits();
        let got = text(&cached, p);
        assert!(got == want[i], "prompt {i}: {}", explain(p, &want[i], &got));
        if i < 3 {
            assert!(
                hits() - before >= (shared - 1) as f64,
                "prompt {i} reused {}",
                hits() - before
            );
        } else {
            assert_eq!(hits(), before, "an unrelated prompt reuses nothing");
        }
    }
    // Running together, each reusing what the others hold.
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts.iter().map(|p| scope.spawn(|| text(&cached, p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (got, want)) in together.iter().zip(&want).enumerate() {
        assert!(got == want, "prompt {i} together: {}", explain(&prompts[i], want, got));
    }
    assert!(cached.healthy());
}

#[test]
fn a_client_that_hangs_up_mid_stream_frees_its_sequence() {
    let s = Server::start_on(lm_repository(), &["--max-sequences", "2", "--http-workers", "4"]);
    let addr = s.url.trim_start_matches("http://").to_string();
    let (status, _, sse) = std::thread::scope(|scope| {
        // Another client's stream runs all the while and must go on to its end.
        let stayer = scope.spawn(|| {
            let body = json!({"model": "tiny", "prompt": "In the beginning", "max_tokens": 900, "temperature": 0,
                              "stream": true, "stream_options": {"include_usage": true}});
            s.post_raw(
                "/v1/completions",
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
        });
        wait_for("the other stream to run", || {
            s.metric("kiln_num_requests_running", "tiny") == 1.0
        });
        // 1,000 tokens: the sequence is still running when the client goes.
        let body = serde_json::to_vec(&json!({"model": "tiny", "prompt": "And", "max_tokens": 1000,
                                              "temperature": 0, "stream": true}))
        .unwrap();
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            conn,
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(&body).unwrap();
        let mut first = [0u8; 256];
        let n = conn.read(&mut first).unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        drop(conn);
        wait_for("the sequence to be freed", || {
            s.metric("kiln_cancelled_total", "tiny") >= 1.0
        });
        stayer.join().unwrap()
    });
    assert_eq!(status, 200);
    let (chunks, done) = events(&sse);
    assert!(done, "the other stream went on to its end");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 900);
    wait_for("no sequence to run", || {
        s.metric("kiln_num_requests_running", "tiny") == 0.0
    });
    let (status, r) = complete(&s, greedy("And", 8));
    assert_eq!(status, 200, "{r}");
    assert!(s.healthy());
}

#[test]
fn a_full_queue_answers_429_at_once_and_the_server_recovers() {
    let s = Server::start_on(
        lm_repository(),
        &["--max-sequences", "1", "--queue-capacity", "1", "--http-workers", "8"],
    );
    let codes: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let (status, retry, _) = s.post_raw(
                        "/v1/completions",
                        "application/json",
                        serde_json::to_vec(&greedy("And God said", 100)).unwrap(),
                    );
                    (status, retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = codes.iter().filter(|(c, _)| *c == 429).collect();
    assert!(!refused.is_empty(), "no 429 among {codes:?}");
    assert!(
        refused.iter().all(|(_, r)| r.as_deref() == Some("1")),
        "429 without Retry-After: {codes:?}"
    );
    assert!(codes.iter().all(|(c, _)| *c == 200 || *c == 429), "{codes:?}");
    assert_eq!(complete(&s, greedy("And", 4)).0, 200);
    // More choices than the server runs at once would wait on each other: a 400, not a
    // 429 that no retry could end.
    let mut two = greedy("And", 4);
    two["n"] = json!(2);
    let (status, r) = complete(&s, two);
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["param"], "n");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("--max-sequences"),
        "{r}"
    );
    assert!(s.healthy());
}

#[test]
fn bad_requests_get_openai_errors_naming_what_is_wrong() {
    let s = Server::start_on(lm_repository(), &[]);
    let long = "light ".repeat(2000);
    let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (
            "/v1/completions",
            json!({"model": "nope", "prompt": "x"}),
            404,
            "no model named \"nope\"",
            None,
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": long}),
            400,
            "holds at most 1024 tokens",
            None,
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "max_tokens": 0}),
            400,
            "at least 1",
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "max_tokens": 5000}),
            400,
            "tokens left after the prompt",
            None,
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "temperature": 3}),
            400,
            "between 0 and 2",
            Some("temperature"),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "top_p": 0}),
            400,
            "top_p",
            Some("top_p"),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "n": 0}),
            400,
            "n must be from 1 to 16",
            Some("n"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 17}),
            400,
            "n must be from 1 to 16",
            Some("n"),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "bogus": 1}),
            400,
            "unknown field `bogus`",
            Some("body"),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": [99999]}),
            400,
            "outside model tiny's vocabulary",
            None,
        ),
        (
            "/v1/completions",
            json!({"model": "fashion", "prompt": "x"}),
            400,
            "is a classifier",
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"content": "hi"}]}),
            400,
            "has no role",
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}),
            400,
            "role \"robot\"",
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": []}),
            400,
            "messages is empty",
            None,
        ),
    ];
    for (path, body, status, message, param) in cases {
        let (got, r) = s.post(path, &body);
        assert_eq!(got, status, "{body}: {r}");
        let e = &r["error"];
        assert!(e["message"].as_str().unwrap().contains(message), "{body}: {r}");
        assert!(e["type"].is_string() && e.get("code").is_some(), "{r}");
        assert_eq!(e["param"].as_str(), param, "{body}: {r}");
    }
    // A language model addressed as a classifier.
    let (status, r) = s.post("/v2/models/tiny/infer", &json!({"inputs": []}));
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("is a language model"), "{r}");
    // Malformed JSON.
    let (status, _, r) = s.post_raw("/v1/completions", "application/json", b"{".to_vec());
    assert_eq!(status, 400);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("not a valid request"),
        "{r}"
    );
    assert!(s.healthy());
}

#[test]
fn the_openai_python_client_drives_the_server() {
    let s = Server::start_on(lm_repository(), &[]);
    let out = crate::python::run("tests/server/openai_check.py", &[&format!("{}/v1", s.url)], b"")
        .unwrap_or_else(|e| panic!("the openai client: {e}"));
    let r: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(r["models"], json!(["tiny"]));
    assert_eq!(r["completion_finish"], "length");
    assert_eq!(r["completion_tokens"], 8);
    assert_eq!(r["logprobs"], 8);
    assert!(r["chat_logprobs"].as_array().unwrap().iter().all(|n| n == 2), "{r}");
    assert_eq!(r["streamed"], r["completion"], "{r}");
    assert_eq!(r["chat_streamed"], r["chat"], "{r}");
    assert_eq!(r["stop_finish"], "stop");
    assert!(
        r["completion"]
            .as_str()
            .unwrap()
            .starts_with(r["stopped"].as_str().unwrap()),
        "{r}"
    );
    assert_eq!(r["seeded_a"], r["seeded_b"]);
    assert_eq!(r["n_choices"], json!([0, 1]));
    assert_eq!(r["not_found"]["status"], 404);
    assert!(
        r["not_found"]["message"].as_str().unwrap().contains("no model named"),
        "{r}"
    );
    assert_eq!(r["bad_request"]["status"], 400);
    assert!(
        r["bad_request"]["message"]
            .as_str()
            .unwrap()
            .contains("temperature must be between 0 and 2"),
        "{r}"
    );
}

#[test]
fn a_character_split_across_tokens_streams_whole() {
    let tiny = kiln_package::LanguagePackage::load(crate::util::language_package(), kiln_tensor::Device::Cpu).unwrap();
    // A four-byte character the tokenizer splits across tokens, then a one-byte one.
    let emoji = tiny.tokenizer.encode("\u{1f600}", false).unwrap();
    assert!(emoji.len() >= 2, "the emoji is one token: {emoji:?}");
    let a = tiny.tokenizer.encode("A", false).unwrap();
    assert_eq!(a.len(), 1);
    let cycle: Vec<u32> = a.iter().chain(&emoji).copied().collect();
    let package = crate::util::scripted_package("script", &cycle);
    let repo = tempfile::tempdir().unwrap();
    crate::util::copy_dir(&package.path().join("package"), &repo.path().join("script").join("1"));
    let s = Server::start_on(repo, &[]);
    let per_round = cycle.len() as u64;
    // Two whole rounds, then one cut inside the character (after its first token).
    for max_tokens in [2 * per_round, 2 * per_round + 1] {
        let body = json!({"model": "script", "prompt": "A", "max_tokens": max_tokens, "temperature": 0, "logprobs": 0});
        let (status, whole) = complete(&s, body.clone());
        assert_eq!(status, 200, "{whole}");
        let text = whole["choices"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("\u{1f600}A\u{1f600}A"), "{max_tokens}: {text:?}");
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let (status, raw) = complete(&s, streamed);
        assert_eq!(status, 200);
        let (chunks, done) = events(&raw);
        assert!(done);
        let (joined, _) = streamed_text(&chunks);
        assert_eq!(joined, text, "{max_tokens}");
        let pieces: Vec<(&str, usize)> = chunks
            .iter()
            .map(|c| {
                let choice = &c["choices"][0];
                (
                    choice["text"].as_str().unwrap(),
                    choice["logprobs"]["tokens"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        // The character's tokens are held back and come out together, as one piece; no
        // piece holds a replacement character for half of one (only the last may, for a
        // character the length limit cut).
        let n = emoji.len();
        assert_eq!(
            &pieces[..4],
            &[("\u{1f600}", n), ("A", 1), ("\u{1f600}", n), ("A", 1)],
            "{max_tokens}"
        );
        let (_, before_last) = pieces.split_last().unwrap();
        assert!(before_last.iter().all(|(t, _)| !t.contains('\u{fffd}')), "{pieces:?}");
        let tokens: usize = pieces.iter().map(|p| p.1).sum();
        assert_eq!(tokens as u64, max_tokens, "every token is accounted for in some piece");
    }
}

#[test]
fn the_kserve_generate_extension_answers_whole_and_streamed() {
    let s = Server::start_on(lm_repository(), &[]);
    let body = json!({"text_input": "And God said", "parameters": {"max_tokens": 10, "temperature": 0}, "id": "r1"});
    let (status, whole) = s.post("/v2/models/tiny/generate", &body);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(
        (whole["model_name"].as_str(), whole["model_version"].as_str()),
        (Some("tiny"), Some("1"))
    );
    assert_eq!(whole["finish_reason"], "length");
    assert_eq!(whole["id"], "r1");
    // The same text as the OpenAI route gives.
    let (_, openai) = complete(&s, greedy("And God said", 10));
    assert_eq!(whole["text_output"], openai["choices"][0]["text"]);
    let (status, _, sse) = s.post_raw(
        "/v2/models/tiny/versions/1/generate_stream",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(status, 200);
    let (pieces, done) = events(&sse);
    assert!(!done, "the generate extension has no [DONE]");
    let text: String = pieces.iter().map(|p| p["text_output"].as_str().unwrap()).collect();
    assert_eq!(text, whole["text_output"].as_str().unwrap());
    assert_eq!(pieces.last().unwrap()["finish_reason"], "length");
    assert!(pieces[..pieces.len() - 1]
        .iter()
        .all(|p| p.get("finish_reason").is_none()));
    // Errors are v2's.
    let (status, r) = s.post("/v2/models/fashion/generate", &body);
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("is a classifier"), "{r}");
    let (status, r) = s.post(
        "/v2/models/tiny/generate",
        &json!({"text_input": "x", "parameters": {"beams": 2}}),
    );
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("unknown field `beams`"), "{r}");
    assert!(s.healthy());
}

#[test]
fn log_probabilities_are_the_models_whole_or_streamed() {
    use kiln_tensor::{tch, Kind, Tensor};
    let s = Server::start_on(lm_repository(), &[]);
    let mut body = greedy("And God said", 6);
    body["logprobs"] = json!(3);
    let (status, whole) = complete(&s, body.clone());
    assert_eq!(status, 200, "{whole}");
    let lp = &whole["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let chosen: Vec<f64> = lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(tokens.len(), 6);
    assert_eq!(tokens.concat(), whole["choices"][0]["text"].as_str().unwrap());
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(top.len() <= 3 && !top.is_empty(), "{top:?}");
        // Greedy: the chosen token is the most likely one.
        let best = top.values().map(|v| v.as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert!(
            (best - chosen[i]).abs() < 1e-6 && chosen[i] <= 0.0,
            "{i}: {chosen:?} {top:?}"
        );
    }
    // The first token's log-probability is the model's, computed here.
    let pkg = kiln_package::LanguagePackage::load(crate::util::language_package(), kiln_tensor::Device::Cpu).unwrap();
    let ids: Vec<i64> = pkg
        .tokenizer
        .encode("And God said", true)
        .unwrap()
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    let x = Tensor::from_slice(&ids).view([1, -1]);
    let logits = tch::no_grad(|| pkg.model.forward(&x, false).unwrap())
        .get(0)
        .get(ids.len() as i64 - 1);
    let ours = logits.log_softmax(-1, Kind::Float).max().double_value(&[]);
    assert!((ours - chosen[0]).abs() < 1e-4, "{ours} here, {} served", chosen[0]);
    // Streamed: the same tokens and log-probabilities, piece by piece.
    body["stream"] = json!(true);
    let (_, _, sse) = s.post_raw(
        "/v1/completions",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    let (chunks, _) = events(&sse);
    let streamed: Vec<f64> = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["logprobs"]["token_logprobs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(streamed, chosen);
    // Chat: OpenAI's content list.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "Let there be light"}],
                      "max_tokens": 5, "temperature": 0, "logprobs": true, "top_logprobs": 2});
    let (status, r) = s.post("/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{r}");
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, r["usage"]["completion_tokens"].as_u64().unwrap());
    for t in content {
        assert!(
            t["token"].is_string() && t["bytes"].is_array() && t["logprob"].as_f64().unwrap() <= 0.0,
            "{t}"
        );
        assert_eq!(t["top_logprobs"].as_array().unwrap().len(), 2, "{t}");
    }
    // Not asked for: null.
    let (_, r) = complete(&s, greedy("And", 3));
    assert!(r["choices"][0]["logprobs"].is_null());
}

#[test]
fn sigterm_lets_running_streams_finish_then_exits_0() {
    let mut s = Server::start_on(lm_repository(), &["--http-workers", "4"]);
    let body = json!({"model": "tiny", "prompt": "And", "max_tokens": 300, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}});
    let answers = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let (s, body) = (&s, &body);
                scope
                    .spawn(move || s.post_raw("/v1/completions", "application/json", serde_json::to_vec(body).unwrap()))
            })
            .collect();
        wait_for("three streams to run", || {
            s.metric("kiln_num_requests_running", "tiny") == 3.0
        });
        // The cache holds their tokens: at least the three prompts, within its capacity.
        let held = s.metric("kiln_kv_cache_tokens", "tiny");
        let capacity = s.metric("kiln_kv_cache_capacity_tokens", "tiny");
        assert!(held >= 3.0 * 2.0 && held < capacity, "{held} of {capacity} tokens");
        let usage = s.metric("kiln_kv_cache_usage_perc", "tiny");
        assert!(usage > 0.0 && usage < 1.0, "usage {usage}");
        assert_eq!(s.metric("kiln_queue_depth", "tiny"), 0.0, "nobody waits");
        s.sigterm();
        clients.into_iter().map(|c| c.join().unwrap()).collect::<Vec<_>>()
    });
    for (status, _, sse) in answers {
        assert_eq!(status, 200);
        let (chunks, done) = events(&sse);
        assert!(done, "a stream running at SIGTERM is finished, [DONE] included");
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 300);
        assert_eq!(streamed_text(&chunks).1.as_deref(), Some("length"));
    }
    wait_for("kiln-serve to exit", || s.try_wait().is_some());
    assert!(
        s.try_wait().unwrap().success(),
        "kiln-serve did not exit 0 after SIGTERM"
    );
}
