//! Importing a Llama-architecture language model from a GGUF file (llama.cpp's format):
//! the architecture from its metadata, the weights dequantised to f32 and renamed to the
//! Llama layout, the tokenizer rebuilt as a `tokenizer.json`, and the chat template.

use crate::{Error, Result};
use kiln_gguf::{GgufFile, Value};
use kiln_model::{Decoder, DecoderSpec, FeedForward, Norm, Positions};
use kiln_package::{GenerationDefaults, LanguagePackage, Manifest};
use kiln_tensor::{tch, Device, Tensor};
use kiln_text::{SpecialTokens, Tokenizer};
use std::collections::BTreeSet;
use std::path::Path;

/// What was imported.
#[derive(Debug)]
pub struct GgufImport {
    /// The manifest written.
    pub manifest: Manifest,
    /// Trainable scalars.
    pub parameters: usize,
    /// Byte symbols (of 256) the tokenizer's vocabulary lacks: each such byte in a text
    /// becomes the unknown token, as with the model's own tokenizer (transformers').
    pub missing_bytes: usize,
}

/// Reads `gguf` and writes a language-model package at `out` named `name`, version
/// `version`.
pub fn import_gguf(gguf: &Path, out: &Path, name: &str, version: u64) -> Result<GgufImport> {
    let file = GgufFile::open(gguf)?;
    let arch = text(&file, "general.architecture")?;
    if arch != "llama" {
        return Err(Error::Input(format!(
            "{}: architecture {arch:?} is not one kiln imports (it reads \"llama\")",
            gguf.display()
        )));
    }
    let spec = spec(&file)?;
    let (tokenizer, missing_bytes) = tokenizer(&file)?;
    if tokenizer.vocab_size() as i64 != spec.vocab {
        return Err(Error::Input(format!(
            "{}: the tokenizer has {} tokens, the model's embedding {}",
            gguf.display(),
            tokenizer.vocab_size(),
            spec.vocab
        )));
    }
    let model = Decoder::new(spec.clone(), Device::Cpu)?;
    load_weights(&file, &model)?;
    let mut manifest = Manifest::language_model(name, version, &model, tokenizer.special());
    manifest.chat_template = file
        .get("tokenizer.chat_template")
        .and_then(Value::as_str)
        .map(str::to_string);
    manifest.generation = Some(GenerationDefaults::default());
    let manifest = LanguagePackage::save(out, manifest, &model, &tokenizer)?;
    Ok(GgufImport {
        manifest,
        parameters: model.parameter_count(),
        missing_bytes,
    })
}

fn text<'a>(file: &'a GgufFile, key: &str) -> Result<&'a str> {
    file.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Input(format!("the GGUF file has no text {key:?}")))
}

fn number(file: &GgufFile, key: &str) -> Result<f64> {
    file.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| Error::Input(format!("the GGUF file has no number {key:?}")))
}

fn count(file: &GgufFile, key: &str) -> Result<i64> {
    file.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| Error::Input(format!("the GGUF file has no count {key:?}")))
}

fn spec(file: &GgufFile) -> Result<DecoderSpec> {
    let vocab = match file.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
        Some(tokens) => tokens.len() as i64,
        None => count(file, "llama.vocab_size")?,
    };
    let width = count(file, "llama.embedding_length")?;
    let heads = count(file, "llama.attention.head_count")?;
    if let Ok(rope) = count(file, "llama.rope.dimension_count") {
        if heads > 0 && rope != width / heads {
            return Err(Error::Input(format!(
                "rotary embeddings over {rope} of each head's {} dimensions are not supported (kiln rotates whole heads)",
                width / heads
            )));
        }
    }
    let spec = DecoderSpec {
        vocab,
        width,
        layers: count(file, "llama.block_count")?,
        heads,
        kv_heads: count(file, "llama.attention.head_count_kv").unwrap_or(heads),
        feed_forward: FeedForward::Swiglu,
        ffn_width: count(file, "llama.feed_forward_length")?,
        norm: Norm::Rms,
        norm_eps: number(file, "llama.attention.layer_norm_rms_epsilon")?,
        positions: Positions::Rotary,
        rope_theta: number(file, "llama.rope.freq_base").unwrap_or(10_000.0),
        tie_embeddings: file.tensor("output.weight").is_none(),
        dropout: 0.0,
        context: count(file, "llama.context_length")?,
    };
    spec.validate()?;
    Ok(spec)
}

/// The GGUF name of each of the model's tensors, and how many heads to un-permute by
/// (llama.cpp's converter reorders the rows of the query and key projections so that its
/// rotary embedding can rotate adjacent pairs; the Llama layout rotates halves).
fn gguf_name(name: &str, spec: &DecoderSpec) -> Option<(String, Option<i64>)> {
    let fixed = match name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some((f.to_string(), None));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let (gguf, heads) = match part {
        "input_layernorm.weight" => ("attn_norm.weight", None),
        "self_attn.q_proj.weight" => ("attn_q.weight", Some(spec.heads)),
        "self_attn.k_proj.weight" => ("attn_k.weight", Some(spec.kv_heads)),
        "self_attn.v_proj.weight" => ("attn_v.weight", None),
        "self_attn.o_proj.weight" => ("attn_output.weight", None),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", None),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", None),
        "mlp.up_proj.weight" => ("ffn_up.weight", None),
        "mlp.down_proj.weight" => ("ffn_down.weight", None),
        _ => return None,
    };
    Some((format!("blk.{layer}.{gguf}"), heads))
}

fn load_weights(file: &GgufFile, model: &Decoder) -> Result<()> {
    let spec = model.spec();
    let mut used = BTreeSet::new();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in model.var_store().variables() {
            let (gguf, heads) = gguf_name(&name, spec)
                .ok_or_else(|| Error::Internal(format!("no GGUF name for the model's tensor {name}")))?;
            let (shape, data) = file.tensor_f32(&gguf)?;
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(Error::Input(format!(
                    "GGUF tensor {gguf} has shape {shape:?}, the model's {name} is {:?}",
                    var.size()
                )));
            }
            let mut w = Tensor::f_from_slice(&data)?.f_view(shape.as_slice())?;
            if let Some(h) = heads {
                let (rows, cols) = (shape[0], shape[1]);
                w = w
                    .f_reshape([h, rows / h / 2, 2, cols])?
                    .f_transpose(1, 2)?
                    .f_reshape([rows, cols])?;
            }
            var.shallow_clone().f_copy_(&w)?;
            used.insert(gguf);
        }
        Ok(())
    })?;
    let unused: Vec<&str> = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !used.contains(*n) && !n.starts_with("rope_freqs"))
        .collect();
    if !unused.is_empty() {
        return Err(Error::Input(format!(
            "the GGUF file holds tensors kiln's Llama decoder has no place for: {}",
            unused.join(", ")
        )));
    }
    Ok(())
}

/// The GGUF's GPT-2-style byte-level BPE tokenizer as a `tokenizer.json`, and how many of
/// the 256 byte symbols its vocabulary lacks.
fn tokenizer(file: &GgufFile) -> Result<(Tokenizer, usize)> {
    let model = text(file, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Input(format!(
            "tokenizer model {model:?} is not one kiln imports (it reads byte-level BPE, \"gpt2\")"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>> {
        file.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Input(format!("the GGUF file has no array {key:?}")))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::Input(format!("{key} holds a non-text value")))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    // Token types: 3 control, 4 user-defined; these are matched whole in text.
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3 | 4)))
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": types.get(i) == Some(&3)})
        })
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.clone(), i.into())).collect();
    if vocab.len() != tokens.len() {
        return Err(Error::Input("the GGUF tokenizer lists a token twice".into()));
    }
    // llama.cpp's "smollm" pre-tokenizer splits every digit off, then applies GPT-2's
    // pattern; the other GPT-2 style ones apply the pattern alone.
    let pre = text(file, "tokenizer.ggml.pre").unwrap_or("default");
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre {
        "smollm" => serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level.clone()]}),
        "default" | "gpt2" | "gpt-2" => byte_level.clone(),
        other => {
            return Err(Error::Input(format!(
                "pre-tokenizer {other:?} is not one kiln imports (it reads \"smollm\" and \"gpt2\")"
            )))
        }
    };
    let id = |key: &str| file.get(key).and_then(Value::as_u64).map(|v| v as u32);
    let unk = id("tokenizer.ggml.unknown_token_id")
        .and_then(|i| tokens.get(i as usize))
        .cloned();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    let add_bos = file
        .get("tokenizer.ggml.add_bos_token")
        .is_some_and(|v| matches!(v, Value::Bool(true)));
    let special = SpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id").filter(|_| add_bos),
        eos: id("tokenizer.ggml.eos_token_id"),
        pad: id("tokenizer.ggml.padding_token_id"),
    };
    let text = serde_json::to_string(&json).map_err(|e| Error::Internal(e.to_string()))?;
    let tokenizer = Tokenizer::from_json(text, Some(special))?;
    let missing = tokenizer.missing_bytes().len();
    Ok((tokenizer, missing))
}
