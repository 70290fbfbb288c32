//! Generation: the KV cache gives the same tokens as recomputing, batching gives each
//! sequence what it gets alone, stops and limits, and the sampler's rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_model::{argmax, generate, Decoder, DecoderSpec, Finish, GenerateConfig, Sampler, Sampling};
use kiln_tensor::{tch, Device};

fn model() -> Decoder {
    tch::manual_seed(11);
    Decoder::new(
        DecoderSpec {
            vocab: 64,
            width: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ffn_width: 64,
            context: 48,
            tie_embeddings: false,
            ..DecoderSpec::default()
        },
        Device::Cpu,
    )
    .unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![1, 5, 9, 14, 3, 22, 7], vec![1, 40], vec![1, 8, 8, 30]]
}

fn sampled() -> Sampling {
    Sampling {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.95,
        repetition_penalty: 1.1,
        seed: 5,
    }
}

#[test]
fn the_kv_cache_gives_the_same_tokens_as_recomputing_every_step() {
    let m = model();
    for sampling in [Sampling::default(), sampled()] {
        let mut config = GenerateConfig {
            max_tokens: 24,
            sampling,
            ..GenerateConfig::default()
        };
        let cached = generate(&m, &prompts(), &config, |_, _| true).unwrap();
        config.use_cache = false;
        let recomputed = generate(&m, &prompts(), &config, |_, _| true).unwrap();
        assert_eq!(cached, recomputed);
        assert!(cached
            .iter()
            .all(|g| g.tokens.len() == 24 && g.finish == Finish::Length));
        // The tokens are not all the same one: the test compares real generations.
        let distinct: std::collections::BTreeSet<_> = cached[0].tokens.iter().collect();
        assert!(distinct.len() > 3, "{:?}", cached[0].tokens);
    }
}

#[test]
fn each_sequence_of_a_batch_gets_what_it_gets_alone() {
    let m = model();
    let config = GenerateConfig {
        max_tokens: 16,
        sampling: sampled(),
        ..GenerateConfig::default()
    };
    let batch = generate(&m, &prompts(), &config, |_, _| true).unwrap();
    for (i, p) in prompts().into_iter().enumerate() {
        // Sequence i of a batch draws with seed + i.
        let alone_config = GenerateConfig {
            sampling: Sampling {
                seed: config.sampling.seed + i as u64,
                ..config.sampling.clone()
            },
            ..config.clone()
        };
        let alone = generate(&m, &[p], &alone_config, |_, _| true).unwrap();
        assert_eq!(alone[0], batch[i], "sequence {i}");
    }
}

#[test]
fn stop_tokens_the_caller_max_tokens_and_the_context_end_sequences() {
    let m = model();
    let greedy = GenerateConfig {
        max_tokens: 12,
        ..GenerateConfig::default()
    };
    let free = generate(&m, &prompts(), &greedy, |_, _| true).unwrap();
    // Stop at the third token generated for sequence 0, whatever it is.
    let stop = free[0].tokens[2];
    let first = free[0].tokens.iter().position(|&t| t == stop).unwrap();
    let stopped = generate(
        &m,
        &prompts(),
        &GenerateConfig {
            stop_tokens: vec![stop],
            ..greedy.clone()
        },
        |_, _| true,
    )
    .unwrap();
    assert_eq!(stopped[0].tokens, free[0].tokens[..=first]);
    assert_eq!(stopped[0].finish, Finish::Stop);
    // The caller stops sequence 1 after 4 tokens; the others go on.
    let mut seen = [0usize; 3];
    let called = generate(&m, &prompts(), &greedy, |i, _| {
        seen[i] += 1;
        !(i == 1 && seen[i] == 4)
    })
    .unwrap();
    assert_eq!(called[1].tokens, free[1].tokens[..4]);
    assert_eq!(called[1].finish, Finish::Stop);
    assert_eq!(called[2], free[2]);
    // The context (48) ends a long generation.
    let long = generate(
        &m,
        &[vec![1; 40]],
        &GenerateConfig {
            max_tokens: 100,
            ..greedy.clone()
        },
        |_, _| true,
    )
    .unwrap();
    assert_eq!((long[0].tokens.len(), long[0].finish), (8, Finish::Length));
    let err = generate(&m, &[vec![1; 48]], &greedy, |_, _| true).unwrap_err();
    assert!(
        err.to_string().contains("leaves no room in the model's context of 48"),
        "{err}"
    );
    assert!(generate(&m, &[vec![]], &greedy, |_, _| true).is_err());
}

#[test]
fn the_sampler_follows_its_settings() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 / 10.0).collect();
    let best = argmax(&logits);
    assert_eq!(Sampler::new(Sampling::default()).next(&logits, &[]), best);
    let top1 = Sampling {
        temperature: 1.0,
        top_k: 1,
        ..Sampling::default()
    };
    assert_eq!(Sampler::new(top1).next(&logits, &[]), best);
    // A strong repetition penalty moves greedy off a token already used.
    let penalised = Sampling {
        repetition_penalty: 100.0,
        ..Sampling::default()
    };
    assert_ne!(Sampler::new(penalised).next(&logits, &[best]), best);
    let draws = |s: Sampling| {
        let mut sampler = Sampler::new(s);
        (0..200).map(|_| sampler.next(&logits, &[])).collect::<Vec<_>>()
    };
    let hot = Sampling {
        temperature: 1.0,
        seed: 3,
        ..Sampling::default()
    };
    assert_eq!(draws(hot.clone()), draws(hot.clone()));
    assert_ne!(draws(hot.clone()), draws(Sampling { seed: 4, ..hot.clone() }));
    // top_k = 3 draws only among the three most likely tokens, and uses all three.
    let k3: std::collections::BTreeSet<u32> = draws(Sampling {
        top_k: 3,
        ..hot.clone()
    })
    .into_iter()
    .collect();
    let mut ranked: Vec<u32> = (0..50).collect();
    ranked.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    assert_eq!(k3, ranked[..3].iter().copied().collect());
    // A small top_p keeps only the most likely token here.
    let p: std::collections::BTreeSet<u32> = draws(Sampling {
        top_p: 0.05,
        ..hot.clone()
    })
    .into_iter()
    .collect();
    assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![best]);
    for bad in [
        Sampling {
            temperature: -1.0,
            ..Sampling::default()
        },
        Sampling {
            top_p: 0.0,
            ..Sampling::default()
        },
        Sampling {
            repetition_penalty: 0.0,
            ..Sampling::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}
