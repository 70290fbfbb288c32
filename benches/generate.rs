//! Generation speed of a language-model package: a 128-token prompt continued by 128
//! tokens (greedy, not stopped at EOS), batch 1 and 8, with and without the KV cache.
//! Prints one JSON line per case. `benches/lm_generate.sh` runs it beside transformers.
//!
//! With the cache, a batch-1 step reads every weight once, so memory bandwidth bounds it:
//! the first line measures what this machine's memory delivers (a sum over 512 MiB with
//! the same threads) and the ceiling it puts on batch-1 tokens/s for this model's
//! weights. Then the cached cases run again with the weights quantized to 4 bits
//! (`Decoder::quantize_int4`, groups of 32), with their own ceiling.
//!
//! Usage: `cargo bench -p kiln-train --bench generate -- PACKAGE PROMPT_TOKENS.json`, the
//! prompts as token ids (`[[...], ...]`, at least 8 of 128 tokens; the same file is given
//! to transformers). `--skip-uncached-batch8` leaves out batch 8 without the cache.

use kiln_model::{generate, GenerateConfig};
use kiln_package::LanguagePackage;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    // Recomputing every token of 8 sequences is very slow for large models: skippable.
    let skip = args.iter().any(|a| a == "--skip-uncached-batch8");
    args.retain(|a| a != "--skip-uncached-batch8");
    let [package, prompts] = &args[..] else {
        anyhow::bail!("usage: generate PACKAGE PROMPT_TOKENS.json [--skip-uncached-batch8]");
    };
    let all: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(prompts)?)?;
    anyhow::ensure!(all.len() >= 8, "{prompts} holds {} prompts; 8 are needed", all.len());
    let (prompt_len, new_tokens) = (all[0].len(), 128usize);
    let mut pkg = LanguagePackage::load(package, kiln_tensor::Device::Cpu)?;
    let threads = kiln_tensor::tch::get_num_threads();
    let bandwidth = stream_bandwidth()?;
    let memory = |pkg: &LanguagePackage, weights: &str| {
        let weight_bytes = pkg.model.weight_bytes_per_step();
        println!(
            "{}",
            serde_json::json!({
                "engine": "memory", "package": package, "weights": weights, "weight_bytes": weight_bytes,
                "bytes_per_sec": bandwidth, "ceiling_tokens_per_sec": bandwidth / weight_bytes as f64,
                "threads": threads,
            })
        );
    };
    memory(&pkg, "f32");
    let mut cases: Vec<(&str, usize, bool)> = Vec::new();
    for batch in [1usize, 8] {
        for use_cache in [true, false] {
            if !(skip && batch == 8 && !use_cache) {
                cases.push(("f32", batch, use_cache));
            }
        }
    }
    cases.extend([("int4", 1, true), ("int4", 8, true)]);
    for (weights, batch, use_cache) in cases {
        if weights == "int4" && !pkg.model.is_quantized() {
            pkg.model.quantize_int4(32, false)?;
            memory(&pkg, "int4");
        }
        let prompts: Vec<Vec<u32>> = all[..batch].to_vec();
        let config = GenerateConfig {
            max_tokens: new_tokens,
            use_cache,
            ..GenerateConfig::default()
        };
        // One short warm-up, then the measured run.
        generate(
            &pkg.model,
            &prompts,
            &GenerateConfig {
                max_tokens: 4,
                ..config.clone()
            },
            |_, _| true,
        )?;
        let started = Instant::now();
        let out = generate(&pkg.model, &prompts, &config, |_, _| true)?;
        let seconds = started.elapsed().as_secs_f64();
        let made: usize = out.iter().map(|g| g.tokens.len()).sum();
        println!(
            "{}",
            serde_json::json!({
                "engine": "kiln", "package": package, "weights": weights, "batch": batch, "cache": use_cache,
                "prompt_tokens": prompt_len, "new_tokens": new_tokens, "seconds": seconds,
                "tokens_per_sec": made as f64 / seconds, "threads": threads,
            })
        );
    }
    Ok(())
}

/// Bytes per second a reduction over a 512 MiB tensor reads, best of five: what the
/// memory delivers to libtorch's kernels on these threads.
fn stream_bandwidth() -> anyhow::Result<f64> {
    let n: i64 = 128 << 20;
    let big = kiln_tensor::Tensor::f_ones([n], (kiln_tensor::Kind::Float, kiln_tensor::Device::Cpu))?;
    let mut best = f64::MAX;
    for _ in 0..6 {
        let started = Instant::now();
        let _ = big.f_sum(kiln_tensor::Kind::Float)?.f_double_value(&[])?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(n as f64 * 4.0 / best)
}
