//! The decoder-only transformer: causal masking, the KV cache (alone and batched with
//! padding) against full forward passes, parameter names, and input errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_model::{Decoder, DecoderSpec, FeedForward, Norm, Positions};
use kiln_tensor::{tch, Device, Kind, Tensor};

fn llama_like() -> DecoderSpec {
    DecoderSpec {
        vocab: 97,
        width: 48,
        layers: 3,
        heads: 6,
        kv_heads: 2,
        ffn_width: 96,
        context: 64,
        tie_embeddings: false,
        ..DecoderSpec::default()
    }
}

fn gpt2_like() -> DecoderSpec {
    DecoderSpec {
        vocab: 50,
        width: 32,
        layers: 2,
        heads: 4,
        kv_heads: 4,
        feed_forward: FeedForward::Gelu,
        ffn_width: 64,
        norm: Norm::Layer,
        positions: Positions::Learned,
        context: 40,
        ..DecoderSpec::default()
    }
}

fn model(spec: DecoderSpec) -> Decoder {
    tch::manual_seed(7);
    Decoder::new(spec, Device::Cpu).unwrap()
}

fn tokens(ids: &[i64]) -> Tensor {
    Tensor::from_slice(ids).view([1, -1])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_change_to_a_future_token_does_not_change_earlier_logits() {
    for spec in [llama_like(), gpt2_like()] {
        let m = model(spec);
        let a: Vec<i64> = (0..20).map(|i| (i * 7 + 3) % 40).collect();
        let mut b = a.clone();
        b[12] = 39;
        let (la, lb) = tch::no_grad(|| {
            (
                m.forward(&tokens(&a), false).unwrap(),
                m.forward(&tokens(&b), false).unwrap(),
            )
        });
        assert_eq!(la.size(), vec![1, 20, m.spec().vocab]);
        let before = max_diff(&la.narrow(1, 0, 12), &lb.narrow(1, 0, 12));
        assert_eq!(before, 0.0, "positions before the change moved by {before}");
        let at = max_diff(&la.narrow(1, 12, 8), &lb.narrow(1, 12, 8));
        assert!(at > 1e-4, "the changed position and later ones must change ({at})");
    }
}

#[test]
fn cached_generation_equals_full_forward_passes() {
    for spec in [llama_like(), gpt2_like()] {
        let m = model(spec);
        let seq: Vec<i64> = (0..24).map(|i| (i * 5 + 1) % 37).collect();
        let full = tch::no_grad(|| m.forward(&tokens(&seq), false).unwrap());
        let mut cache = m.new_cache(1);
        let prefill = m.forward_cached(&tokens(&seq[..10]), None, &mut cache).unwrap();
        assert!(max_diff(&prefill, &full.narrow(1, 0, 10)) < 1e-5);
        for i in 10..24 {
            let step = m.forward_cached(&tokens(&seq[i..i + 1]), None, &mut cache).unwrap();
            let d = max_diff(&step, &full.narrow(1, i as i64, 1));
            assert!(d < 1e-5, "step {i}: {d}");
        }
        assert_eq!(cache.lengths(), &[24]);
        assert!(cache.bytes() > 0);
        // The last position alone, as generation asks for it, prefill and step.
        let mut cache = m.new_cache(1);
        let next = m.next_logits(&tokens(&seq[..10]), None, &mut cache).unwrap();
        assert_eq!(next.size(), [1, full.size()[2]]);
        assert!(max_diff(&next, &full.select(1, 9)) < 1e-5);
        let next = m.next_logits(&tokens(&seq[10..11]), None, &mut cache).unwrap();
        assert!(max_diff(&next, &full.select(1, 10)) < 1e-5);
    }
}

#[test]
fn sequences_of_different_lengths_batch_with_left_padding_as_if_alone() {
    let m = model(llama_like());
    let prompts: [Vec<i64>; 3] = [vec![5, 9, 2, 33, 4, 8, 1], vec![11, 3], vec![7, 7, 7, 20]];
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    // Left-pad the prompts with token 0 and mark the padding.
    let mut ids = Vec::new();
    let mut valid = Vec::new();
    for p in &prompts {
        for _ in p.len()..longest {
            ids.push(0);
            valid.push(false);
        }
        ids.extend(p);
        valid.extend(std::iter::repeat_n(true, p.len()));
    }
    let ids = Tensor::from_slice(&ids).view([3, longest as i64]);
    let valid = Tensor::from_slice(&valid).view([3, longest as i64]);
    let mut cache = m.new_cache(3);
    let prefill = m.forward_cached(&ids, Some(&valid), &mut cache).unwrap();
    assert_eq!(cache.lengths(), &[7, 2, 4]);
    // Then three steps with different tokens per sequence.
    let steps = [[40i64, 41, 42], [50, 51, 52], [60, 61, 62]];
    let mut step_logits = Vec::new();
    for s in steps {
        step_logits.push(
            m.forward_cached(&Tensor::from_slice(&s).view([3, 1]), None, &mut cache)
                .unwrap(),
        );
    }
    for (b, p) in prompts.iter().enumerate() {
        let mut alone: Vec<i64> = p.clone();
        alone.extend(steps.iter().map(|s| s[b]));
        let full = tch::no_grad(|| m.forward(&tokens(&alone), false).unwrap());
        let last_prompt = prefill.get(b as i64).get(longest as i64 - 1);
        let d = max_diff(&last_prompt, &full.get(0).get(p.len() as i64 - 1));
        assert!(d < 1e-5, "sequence {b} prefill: {d}");
        for (k, l) in step_logits.iter().enumerate() {
            let d = max_diff(&l.get(b as i64).get(0), &full.get(0).get((p.len() + k) as i64));
            assert!(d < 1e-5, "sequence {b} step {k}: {d}");
        }
    }
}

#[test]
fn parameters_follow_the_llama_layout() {
    let m = model(llama_like());
    let mut names: Vec<String> = m.var_store().variables().into_keys().collect();
    names.sort();
    let shape = |n: &str| m.var_store().variables()[n].size();
    assert!(names.contains(&"lm_head.weight".to_string()));
    assert_eq!(shape("model.embed_tokens.weight"), vec![97, 48]);
    assert_eq!(shape("model.layers.2.self_attn.q_proj.weight"), vec![48, 48]);
    assert_eq!(shape("model.layers.2.self_attn.k_proj.weight"), vec![16, 48]);
    assert_eq!(shape("model.layers.0.mlp.gate_proj.weight"), vec![96, 48]);
    assert_eq!(shape("model.layers.0.mlp.down_proj.weight"), vec![48, 96]);
    assert_eq!(shape("model.layers.1.input_layernorm.weight"), vec![48]);
    assert_eq!(shape("model.layers.1.post_attention_layernorm.weight"), vec![48]);
    assert_eq!(shape("model.norm.weight"), vec![48]);
    // 3 layers × (4 attention + 3 feed-forward + 2 norms) + embedding + final norm + head.
    assert_eq!(names.len(), 3 * 9 + 3);
    let tied = model(DecoderSpec {
        tie_embeddings: true,
        ..llama_like()
    });
    assert!(!tied.var_store().variables().contains_key("lm_head.weight"));
    let g = model(gpt2_like());
    let vars = g.var_store().variables();
    assert!(vars.contains_key("model.embed_positions.weight"));
    assert!(vars.contains_key("model.layers.0.input_layernorm.bias"));
    assert!(!vars.contains_key("model.layers.0.mlp.gate_proj.weight"));
}

#[test]
fn bad_specs_and_inputs_are_errors_that_say_what_is_wrong() {
    let bad = |spec: DecoderSpec, want: &str| {
        let err = Decoder::new(spec, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    };
    bad(DecoderSpec::default(), "vocab is 0");
    bad(
        DecoderSpec {
            kv_heads: 4,
            ..llama_like()
        },
        "not a multiple of kv_heads 4",
    );
    bad(
        DecoderSpec {
            width: 50,
            ..llama_like()
        },
        "not a multiple of heads",
    );
    bad(
        DecoderSpec {
            dropout: 1.0,
            ..llama_like()
        },
        "dropout",
    );
    let m = model(llama_like());
    let err = m.forward(&tokens(&[1, 2, 97]), false).unwrap_err().to_string();
    assert!(
        err.contains("token id 97 is outside the model's vocabulary of 97"),
        "{err}"
    );
    let err = m.forward(&tokens(&[1; 65]), false).unwrap_err().to_string();
    assert!(err.contains("longer than the model's context of 64"), "{err}");
    let err = m
        .forward(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("int64"), "{err}");
    let mut cache = m.new_cache(1);
    let _ = m.forward_cached(&tokens(&[1; 60]), None, &mut cache).unwrap();
    let err = m
        .forward_cached(&tokens(&[1; 5]), None, &mut cache)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would hold 65 tokens, past the model's context of 64"),
        "{err}"
    );
    let err = m
        .forward_cached(&Tensor::ones([2, 1], (Kind::Int64, Device::Cpu)), None, &mut cache)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match the cache's 1"), "{err}");
}

/// Every parameter's gradient, by name, after `backward` on `objective`; zeroes them.
fn grads_of(m: &Decoder, objective: &Tensor) -> Vec<(String, Tensor)> {
    objective.backward();
    let mut out: Vec<(String, Tensor)> = m
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, v)| {
            let g = v.grad().detach().copy();
            let _ = v.grad().zero_();
            (name, g)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_chunked_loss_and_its_gradients_equal_plain_cross_entropy() {
    // 13 × 128 = 1,664 tokens over a 4,096-word vocabulary: four chunks of logits, the
    // last one partial; tied and separate output projections; with and without smoothing.
    for (tie, smoothing) in [(true, 0.0), (false, 0.1)] {
        let m = model(DecoderSpec {
            vocab: 4096,
            width: 32,
            layers: 1,
            heads: 4,
            kv_heads: 2,
            ffn_width: 64,
            context: 128,
            tie_embeddings: tie,
            ..DecoderSpec::default()
        });
        let ids = Tensor::randint(4096, [13, 129], (Kind::Int64, Device::Cpu));
        let (inputs, targets) = (ids.narrow(1, 0, 128), ids.narrow(1, 1, 128));
        let logits = m.forward(&inputs, false).unwrap().view([-1, 4096]);
        let flat = targets.reshape([-1]);
        let plain = logits.cross_entropy_loss::<Tensor>(&flat, None, tch::Reduction::Mean, -100, smoothing);
        let plain_correct = logits
            .argmax(-1, false)
            .eq_tensor(&flat)
            .sum(Kind::Int64)
            .int64_value(&[]);
        let plain_value = plain.double_value(&[]);
        let plain_grads = grads_of(&m, &plain);

        let loss = m.loss(&inputs, &targets, false, smoothing, true).unwrap();
        assert_eq!(loss.tokens, 13 * 128);
        assert!(
            (loss.mean() - plain_value).abs() < 1e-5,
            "{} vs {plain_value}",
            loss.mean()
        );
        assert!((loss.objective.double_value(&[]) - plain_value).abs() < 1e-5);
        assert_eq!(loss.correct, plain_correct);
        let chunked_grads = grads_of(&m, &loss.objective);
        assert_eq!(chunked_grads.len(), plain_grads.len());
        for ((name, a), (_, b)) in plain_grads.iter().zip(&chunked_grads) {
            let scale = a.abs().max().double_value(&[]).max(1e-12);
            assert!(
                max_diff(a, b) / scale < 1e-4,
                "{name}: gradients differ by {} (largest {scale})",
                max_diff(a, b)
            );
        }
        // Without gradients the objective is the plain mean loss.
        let eval = tch::no_grad(|| m.loss(&inputs, &targets, false, smoothing, false).unwrap());
        assert!((eval.objective.double_value(&[]) - plain_value).abs() < 1e-5);
        assert!(!eval.objective.requires_grad());
    }
}

#[test]
fn the_loss_refuses_targets_outside_the_vocabulary_or_of_the_wrong_shape() {
    let m = model(llama_like());
    let inputs = tokens(&[1, 2, 3]);
    let err = m.loss(&inputs, &tokens(&[1, 2, 97]), false, 0.0, false).unwrap_err();
    assert!(
        err.to_string().contains("target 97 is outside the vocabulary of 97"),
        "{err}"
    );
    let err = m.loss(&inputs, &tokens(&[1, 2]), false, 0.0, false).unwrap_err();
    assert!(err.to_string().contains("do not match tokens"), "{err}");
}

/// The last logits of `seq` computed alone, without a cache.
fn alone_last(m: &Decoder, seq: &[i64]) -> Tensor {
    let full = tch::no_grad(|| m.forward(&tokens(seq), false).unwrap());
    full.get(0).get(seq.len() as i64 - 1)
}

#[test]
fn sequences_join_and_leave_a_row_cache_and_each_computes_what_it_would_alone() {
    for spec in [llama_like(), gpt2_like()] {
        let m = model(spec);
        let mut cache = m.new_row_cache(3, 32).unwrap();
        assert_eq!(cache.capacity(), Some(32));
        assert_eq!(cache.bytes(), 3 * 32 * m.bytes_per_token());
        let mut seqs: Vec<Vec<i64>> = vec![vec![5, 9, 2, 33, 4, 8, 1], vec![11, 3, 17], vec![7, 7, 7, 20, 2]];
        let check = |m: &Decoder, logits: &Tensor, row: i64, seq: &[i64], what: &str| {
            let d = max_diff(&logits.get(row), &alone_last(m, seq));
            assert!(d < 1e-5, "{what}: {d}");
        };
        // A and B join (one prompt per call), then decode together.
        for (row, s) in seqs.iter().take(2).enumerate() {
            let l = m.next_logits_rows(&tokens(s), row, &mut cache).unwrap();
            check(&m, &l, 0, s, "prefill");
        }
        let step = |m: &Decoder, cache: &mut kiln_model::KvCache, seqs: &mut [Vec<i64>], next: &[i64]| {
            for (s, &t) in seqs.iter_mut().zip(next) {
                s.push(t);
            }
            m.next_logits_rows(&Tensor::from_slice(next).view([next.len() as i64, 1]), 0, cache)
                .unwrap()
        };
        let l = step(&m, &mut cache, &mut seqs[..2], &[40, 41]);
        for (r, s) in seqs.iter().take(2).enumerate() {
            check(&m, &l, r as i64, s, "decode A, B");
        }
        // C joins in row 2 while A and B are mid-way; all three decode together.
        let l = m.next_logits_rows(&tokens(&seqs[2]), 2, &mut cache).unwrap();
        check(&m, &l, 0, &seqs[2], "prefill C");
        for next in [[12i64, 13, 14], [22, 23, 24]] {
            let l = step(&m, &mut cache, &mut seqs, &next);
            for (r, s) in seqs.iter().enumerate() {
                check(&m, &l, r as i64, s, "decode A, B, C");
            }
        }
        assert_eq!(cache.lengths(), &[10, 6, 7]);
        // A leaves: C moves into its row, and B and C go on in rows 0..2.
        cache.move_row(2, 0).unwrap();
        seqs.swap(0, 2);
        seqs.pop();
        assert_eq!(cache.lengths(), &[7, 6, 0]);
        let l = step(&m, &mut cache, &mut seqs, &[30, 31]);
        for (r, s) in seqs.iter().enumerate() {
            check(&m, &l, r as i64, s, "after a row moved");
        }
        // D takes row 2, where C's old keys still lie past D's length: never read.
        let d = vec![3i64, 1, 4];
        let l = m.next_logits_rows(&tokens(&d), 2, &mut cache).unwrap();
        check(&m, &l, 0, &d, "a new sequence in a used row");
        cache.clear_row(1).unwrap();
        assert_eq!(cache.lengths(), &[8, 0, 3]);
    }
}

#[test]
fn a_row_cache_refuses_what_does_not_fit() {
    let m = model(llama_like());
    assert!(m.new_row_cache(0, 8).is_err());
    let err = m.new_row_cache(2, 65).unwrap_err();
    assert!(err.to_string().contains("1..=64"), "{err}");
    let mut cache = m.new_row_cache(2, 8).unwrap();
    let err = m.next_logits_rows(&tokens(&[1; 9]), 0, &mut cache).unwrap_err();
    assert!(err.to_string().contains("past the cache's capacity of 8"), "{err}");
    let err = m.next_logits_rows(&tokens(&[1, 2]), 2, &mut cache).unwrap_err();
    assert!(err.to_string().contains("outside the cache's 2 rows"), "{err}");
    assert!(cache.move_row(0, 5).is_err());
    // Each layout is fed through its own call.
    assert!(m.forward_cached(&tokens(&[1]), None, &mut cache).is_err());
    let mut shared = m.new_cache(1);
    assert!(m.next_logits_rows(&tokens(&[1]), 0, &mut shared).is_err());
    assert!(shared.clear_row(0).is_err());
}

/// A spec whose every projection the 4-bit kernel takes (inputs in groups of 32, outputs
/// in multiples of 16).
fn quantizable(tie_embeddings: bool) -> DecoderSpec {
    DecoderSpec {
        vocab: 128,
        width: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        ffn_width: 128,
        context: 64,
        tie_embeddings,
        ..DecoderSpec::default()
    }
}

/// Puts every matrix of `m` in GGUF `Q4_1` form (`w = m + d·q` in groups of 32, `d` a
/// power of two, both `q = 0` and `q = 15` in each group), so that quantizing them loses
/// nothing and what is left to compare is the bf16 rounding of the activations.
fn to_q4_1_form(m: &Decoder) {
    tch::no_grad(|| {
        for (name, mut w) in m.var_store().variables() {
            if w.dim() != 2 {
                continue;
            }
            let (rows, cols) = (w.size()[0], w.size()[1]);
            let q = Tensor::randint(16, [rows, cols / 32, 32], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
            let _ = q.narrow(2, 0, 1).fill_(0.0);
            let _ = q.narrow(2, 1, 1).fill_(15.0);
            let low = Tensor::randint(16, [rows, cols / 32, 1], (Kind::Int64, Device::Cpu))
                .to_kind(Kind::Float)
                .g_sub_scalar(8.0)
                .g_div_scalar(256.0);
            let grouped = q.g_mul_scalar(1.0 / 128.0).g_add(&low).reshape([rows, cols]);
            w.copy_(&grouped);
            assert_eq!(w.size(), vec![rows, cols], "{name}");
        }
    });
}

#[test]
fn four_bit_weights_compute_what_the_f32_model_does_up_to_bf16_activations() {
    for tie in [true, false] {
        let mut m = model(quantizable(tie));
        to_q4_1_form(&m);
        let seq: Vec<i64> = (0..40).map(|i| (i * 37 + 11) % 128).collect();
        let want = tch::no_grad(|| m.forward(&tokens(&seq), false).unwrap());
        let f32_bytes = m.weight_bytes_per_step();
        m.quantize_int4(32, false).unwrap();
        assert!(m.is_quantized());
        // Per layer: q, o 64x64, k, v 32x64, gate, up 128x64, down 64x128 at 5 bits a
        // weight (half a byte, and a bf16 scale and zero per 32); the output projection
        // 128x64 in bf16; 5 norms of 64 in f32.
        let layer: usize = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64;
        assert_eq!(f32_bytes, 4 * (2 * layer + 128 * 64 + 5 * 64), "tie {tie}");
        assert_eq!(
            m.weight_bytes_per_step(),
            2 * (layer / 2 + layer / 32 * 4) + 2 * 128 * 64 + 4 * 5 * 64,
            "tie {tie}"
        );
        let got = tch::no_grad(|| m.forward(&tokens(&seq), false).unwrap());
        let scale = want.abs().max().double_value(&[]);
        let err = max_diff(&got, &want);
        assert!(err < 0.03 * scale, "tie {tie}: logits moved by {err} (largest {scale})");
        let agree = got.argmax(-1, false).eq_tensor(&want.argmax(-1, false));
        let agree = agree.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!(
            agree >= 0.9,
            "tie {tie}: the most likely token agrees at only {agree:.2} of positions"
        );
        // The cache paths use the same 4-bit weights: a prompt then steps, row by row,
        // compute what the quantized model's full forward does.
        let mut cache = m.new_row_cache(1, 64).unwrap();
        let mut l = m.next_logits_rows(&tokens(&seq[..30]), 0, &mut cache).unwrap();
        for (i, &t) in seq[30..].iter().enumerate() {
            let d = max_diff(&l.get(0), &got.get(0).get(29 + i as i64));
            assert!(
                d < 0.01 * scale,
                "tie {tie}: step {i} differs from the full pass by {d}"
            );
            l = m.next_logits_rows(&tokens(&[t]), 0, &mut cache).unwrap();
        }
        // Quantized weights are for inference only.
        let targets = tokens(&seq[1..]);
        let err = m.loss(&tokens(&seq[..39]), &targets, true, 0.0, true).unwrap_err();
        assert!(err.to_string().contains("train the f32 model"), "{err}");
        assert!(m.loss(&tokens(&seq[..39]), &targets, false, 0.0, false).is_ok());
    }
}

#[test]
fn bf16_copies_of_four_bit_weights_compute_what_the_four_bit_weights_do() {
    let seq: Vec<i64> = (0..40).map(|i| (i * 37 + 11) % 128).collect();
    // One model (to_q4_1_form draws in the var store's hash order), quantized twice.
    let mut m = model(quantizable(true));
    to_q4_1_form(&m);
    let mut run = |keep_bf16: bool| {
        m.quantize_int4(32, keep_bf16).unwrap();
        // A 30-token prompt, then one-row steps, then a step of 8 rows.
        let mut cache = m.new_row_cache(8, 64).unwrap();
        let mut out = vec![m.next_logits_rows(&tokens(&seq[..30]), 0, &mut cache).unwrap()];
        for &t in &seq[30..34] {
            out.push(m.next_logits_rows(&tokens(&[t]), 0, &mut cache).unwrap());
        }
        for row in 1..8 {
            let _ = m.next_logits_rows(&tokens(&seq[..34]), row, &mut cache).unwrap();
        }
        let wide = Tensor::from_slice(&[seq[34]; 8]).view([8, 1]);
        out.push(m.next_logits_rows(&wide, 0, &mut cache).unwrap());
        (m.bf16_copy_bytes(), out)
    };
    let (none, four_bit) = run(false);
    let (bytes, with_copy) = run(true);
    assert_eq!(none, 0);
    // Every projection's weights once more in bf16: 2 layers of 2 * 64 * 64 + 2 * 32 * 64
    // + 3 * 128 * 64 weights.
    assert_eq!(bytes, 2 * 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64));
    let scale = four_bit[0].abs().max().double_value(&[]);
    // The prompt went through the bf16 copies: the same weights, another kernel (which
    // `kiln_tensor`'s int4 tests show is taken), the same logits up to rounding.
    let d = max_diff(&with_copy[0], &four_bit[0]);
    assert!(d < 0.02 * scale, "the prompt's logits moved by {d} (largest {scale})");
    // One-row steps read the 4-bit weights: what the 4-bit model computes, up to the
    // rounding of the cache the prompt left.
    for (i, (a, b)) in with_copy[1..5].iter().zip(&four_bit[1..5]).enumerate() {
        let d = max_diff(a, b);
        assert!(d < 0.02 * scale, "step {i} moved by {d}");
    }
    // A step of 8 rows (through the copies): rows of the same prompt and token compute the
    // same, and what the 4-bit model does up to rounding.
    let wide = &with_copy[5];
    for row in 1..8 {
        assert!(max_diff(&wide.get(row), &wide.get(1)) < 1e-6, "row {row}");
    }
    assert!(max_diff(&wide.get(1), &four_bit[5].get(1)) < 0.02 * scale);
}

#[test]
fn a_reused_prefix_continues_as_a_whole_prefill_would() {
    let m = model(llama_like());
    let seq: Vec<i64> = (0..40).map(|i| (i * 37 + 11) % 97).collect();
    let mut cache = m.new_row_cache(3, 64).unwrap();
    let whole = m.next_logits_rows(&tokens(&seq), 0, &mut cache).unwrap();
    let scale = whole.abs().max().double_value(&[]);
    // Row 1 starts from row 0's first 30 slots and computes only the rest.
    cache.reuse_prefix(0, 1, 30).unwrap();
    let part = m.next_logits_rows(&tokens(&seq[30..]), 1, &mut cache).unwrap();
    let d = max_diff(&part, &whole);
    assert!(d < 1e-5 * (1.0 + scale), "moved by {d} (largest {scale})");
    // A cleared row keeps its slots: it can start again from them, without a copy.
    cache.clear_row(0).unwrap();
    cache.reuse_prefix(0, 0, 35).unwrap();
    let again = m.next_logits_rows(&tokens(&seq[35..]), 0, &mut cache).unwrap();
    let d = max_diff(&again, &whole);
    assert!(d < 1e-5 * (1.0 + scale), "moved by {d} (largest {scale})");
    assert_eq!(cache.lengths(), &[40, 40, 0]);
    // Slots that hold nothing give other logits: the reused ones really are read.
    cache.clear_row(2).unwrap();
    cache.reuse_prefix(2, 2, 30).unwrap();
    let stale = m.next_logits_rows(&tokens(&seq[30..]), 2, &mut cache).unwrap();
    assert!(max_diff(&stale, &whole) > 1e-3 * scale);
    // Rows outside the cache, a prefix leaving no room, a cache without rows.
    assert!(cache.reuse_prefix(0, 3, 5).unwrap_err().to_string().contains("outside"));
    assert!(cache.reuse_prefix(0, 2, 64).unwrap_err().to_string().contains("room"));
    let mut grow = m.new_cache(1);
    assert!(grow.reuse_prefix(0, 0, 1).is_err());
}

#[test]
fn a_model_the_four_bit_kernel_cannot_take_is_refused_and_left_as_it_was() {
    // Width 48 is not a whole number of groups of 32.
    let mut m = model(llama_like());
    let before = tch::no_grad(|| m.forward(&tokens(&[1, 2, 3]), false).unwrap());
    let err = m.quantize_int4(32, true).unwrap_err();
    assert!(err.to_string().contains("divisible by the group size 32"), "{err}");
    assert!(!m.is_quantized());
    let after = tch::no_grad(|| m.forward(&tokens(&[1, 2, 3]), false).unwrap());
    assert_eq!(before, after);
    let mut m = model(quantizable(true));
    assert!(m
        .quantize_int4(48, false)
        .unwrap_err()
        .to_string()
        .contains("one of [32, 64, 128, 256]"));
}
