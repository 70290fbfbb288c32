//! kiln-text on real text: this repository's own documentation, which is English prose
//! with code, tables and some non-ASCII characters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_text::{
    split_documents, CacheOutcome, Corpus, CorpusSource, Document, Error, Packed, StreamDecoder, TokenLoader,
    TokenizedCorpus, Tokenizer,
};
use std::sync::Arc;

const README: &str = include_str!("../../../README.md");
const BENCHMARKS: &str = include_str!("../../../BENCHMARKS.md");

fn tokenizer() -> Tokenizer {
    Tokenizer::train([README, BENCHMARKS].into_iter(), 1000).unwrap()
}

fn docs(texts: &[&str]) -> Corpus {
    Corpus::from_documents(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Document {
                name: format!("d{i}"),
                text: t.to_string(),
            })
            .collect(),
    )
}

#[test]
fn training_gives_the_vocabulary_asked_for_with_specials_first_and_every_byte() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 1000);
    let s = tok.special();
    assert_eq!((s.pad, s.bos, s.eos), (Some(0), Some(1), Some(2)));
    // Merges were learnt: common words take fewer tokens than bytes.
    let ids = tok.encode("the training loop", false).unwrap();
    assert!(ids.len() < "the training loop".len() / 2, "{ids:?}");
    // The same texts give the same tokenizer.
    assert_eq!(tokenizer().sha256(), tok.sha256());
    let err = Tokenizer::train([README].into_iter(), 100).unwrap_err();
    assert!(err.to_string().contains("at least 259"), "{err}");
}

#[test]
fn real_text_round_trips_exactly() {
    let tok = tokenizer();
    for text in [
        README,
        BENCHMARKS,
        "  leading spaces, tabs\tand\r\nwindows line ends\n\n",
        "naïve café, 日本語のテキスト, emoji 🦀🔥, math ∀x∈ℝ, combining é",
        "\u{0}\u{1}\u{7f} control bytes",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        // Bits per byte counts bytes through the tokens: they must add up to the text.
        let lens = tok.byte_lengths();
        let bytes: u64 = ids.iter().map(|&i| lens[i as usize] as u64).sum();
        assert_eq!(bytes, text.len() as u64, "byte lengths of {text:?}");
    }
}

#[test]
fn special_tokens_are_added_recognised_and_skipped() {
    let tok = tokenizer();
    let ids = tok.encode("hello<|eos|>", true).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|bos|>hello<|eos|>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello");
    assert_eq!(tok.byte_lengths()[2], 0);
    let err = tok.decode(&[5, 1000], false).unwrap_err();
    assert!(err.to_string().contains("token id 1000 is outside"), "{err}");
}

#[test]
fn a_character_split_across_tokens_is_invalid_alone_and_streams_whole() {
    let tok = tokenizer();
    let text = "kiln 日本語 🦀 done";
    let ids = tok.encode(text, false).unwrap();
    // A tokenizer trained on English cuts these characters into byte tokens: some tokens
    // are bytes that are not valid UTF-8 on their own.
    let alone: Vec<String> = ids.iter().map(|&i| tok.decode(&[i], false).unwrap()).collect();
    assert!(alone.iter().any(|s| s.contains('\u{FFFD}')), "{alone:?}");
    let mut stream = StreamDecoder::new(false);
    let mut pieces = Vec::new();
    for &id in &ids {
        if let Some(p) = stream.step(&tok, id).unwrap() {
            pieces.push(p);
        }
    }
    assert_eq!(stream.finish(&tok).unwrap(), None);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert!(pieces.len() > 3, "{pieces:?}");
    assert_eq!(pieces.concat(), text);
    // A stream cut in the middle of a character gives it back, marked, at the end.
    let crab = tok.encode("🦀", false).unwrap();
    assert!(crab.len() > 1);
    let mut cut = StreamDecoder::new(false);
    assert_eq!(cut.step(&tok, crab[0]).unwrap(), None);
    assert_eq!(cut.finish(&tok).unwrap().as_deref(), Some("\u{FFFD}"));
}

#[test]
fn saved_tokenizers_load_with_the_same_hash_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    let back = Tokenizer::from_file(&path, None).unwrap();
    assert_eq!(back.sha256(), tok.sha256());
    assert_eq!(back.special(), tok.special());
    assert_eq!(back.encode(README, true).unwrap(), tok.encode(README, true).unwrap());
    std::fs::write(&path, b"{\"not\": \"a tokenizer\"}").unwrap();
    let err = Tokenizer::from_file(&path, None).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("not a tokenizer.json"), "{err}");
    std::fs::write(&path, [0xff, 0xfe]).unwrap();
    assert!(Tokenizer::from_file(&path, None)
        .unwrap_err()
        .to_string()
        .contains("UTF-8"));
}

#[test]
fn corpora_read_from_a_folder_a_text_file_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("b/nested")).unwrap();
    std::fs::write(root.join("b/nested/2.txt"), "second").unwrap();
    std::fs::write(root.join("a.txt"), "first").unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    std::fs::write(root.join("skip.md"), "not text").unwrap();
    let folder = Corpus::read(&CorpusSource::Folder {
        path: root.to_path_buf(),
        extension: ".txt".into(),
    })
    .unwrap();
    let names: Vec<&str> = folder.documents.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "b/nested/2.txt"]);

    std::fs::write(root.join("one.text"), "one\n\ntwo\n\nthree").unwrap();
    let text = Corpus::read(&CorpusSource::Text {
        path: root.join("one.text"),
        separator: Some("\n\n".into()),
    })
    .unwrap();
    assert_eq!(text.documents.len(), 3);
    assert_eq!(text.bytes(), 11);

    std::fs::write(
        root.join("c.jsonl"),
        "{\"text\": \"alpha\"}\n\n{\"text\": \"beta\", \"id\": 2}\n",
    )
    .unwrap();
    let jsonl = Corpus::read(&CorpusSource::Jsonl {
        path: root.join("c.jsonl"),
        field: "text".into(),
    })
    .unwrap();
    assert_eq!(jsonl.documents[1].text, "beta");
    assert!(jsonl.documents[1].name.ends_with("c.jsonl:3"));

    std::fs::write(root.join("bad.jsonl"), "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n").unwrap();
    let err = Corpus::read(&CorpusSource::Jsonl {
        path: root.join("bad.jsonl"),
        field: "text".into(),
    })
    .unwrap_err();
    assert!(err.to_string().contains("line 2 has no \"text\" field"), "{err}");
    std::fs::write(root.join("bad.jsonl"), "{\"text\": 5}\n").unwrap();
    let err = Corpus::read(&CorpusSource::Jsonl {
        path: root.join("bad.jsonl"),
        field: "text".into(),
    })
    .unwrap_err();
    assert!(err.to_string().contains("must be a string, found a number"), "{err}");
    std::fs::write(root.join("latin1.txt"), b"caf\xe9").unwrap();
    let err = Corpus::read(&CorpusSource::Text {
        path: root.join("latin1.txt"),
        separator: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("byte at offset 3"), "{err}");
    // The checksum sees document boundaries, not only the text.
    assert_ne!(docs(&["ab", "c"]).checksum(), docs(&["a", "bc"]).checksum());
}

#[test]
fn the_token_cache_is_reused_rebuilt_when_damaged_and_keyed_by_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let corpus = docs(&[README, BENCHMARKS]);
    let (built, outcome) = TokenizedCorpus::load_or_build(dir.path(), &tok, &corpus).unwrap();
    let CacheOutcome::Built(path, _) = outcome else {
        panic!("expected a build")
    };
    assert_eq!(built.document(0), tok.encode(README, false).unwrap().as_slice());
    assert_eq!(built.document(1), tok.encode(BENCHMARKS, false).unwrap().as_slice());
    let (hit, outcome) = TokenizedCorpus::load_or_build(dir.path(), &tok, &corpus).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit(path.clone()));
    assert_eq!(hit, built);
    // A flipped byte in the body is caught by the checksum and the cache is rebuilt.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (again, outcome) = TokenizedCorpus::load_or_build(dir.path(), &tok, &corpus).unwrap();
    assert!(
        matches!(&outcome, CacheOutcome::Built(_, why) if why.contains("checksum")),
        "{outcome:?}"
    );
    assert_eq!(again, built);
    // Another tokenizer has its own cache file.
    let other = Tokenizer::train([README].into_iter(), 600).unwrap();
    let (_, outcome) = TokenizedCorpus::load_or_build(dir.path(), &other, &corpus).unwrap();
    assert!(matches!(outcome, CacheOutcome::Built(p, _) if p != path));
}

#[test]
fn documents_split_whole_by_seed() {
    let a = split_documents(66, 0.1, 42).unwrap();
    assert_eq!(a.validation.len(), 7);
    assert_eq!(a.train.len(), 59);
    let mut all: Vec<usize> = a.train.iter().chain(&a.validation).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..66).collect::<Vec<_>>());
    assert_eq!(split_documents(66, 0.1, 42).unwrap(), a);
    assert_ne!(split_documents(66, 0.1, 43).unwrap().validation, a.validation);
    assert_eq!(split_documents(5, 0.01, 1).unwrap().validation.len(), 1);
    assert!(split_documents(1, 0.1, 1)
        .unwrap_err()
        .to_string()
        .contains("cannot hold out 1"));
    assert!(split_documents(10, 1.0, 1).is_err());
}

#[test]
fn packing_separates_documents_and_overlaps_sequences_by_one() {
    let tok = tokenizer();
    let corpus = docs(&["alpha beta", "gamma", "delta epsilon zeta"]);
    let tokens = TokenizedCorpus::tokenize(&tok, &corpus).unwrap();
    let packed = Packed::new(&tokens, &[0, 2], tok.special(), 4).unwrap();
    let mut want = vec![1];
    want.extend(tok.encode("alpha beta", false).unwrap());
    want.push(2);
    want.push(1);
    want.extend(tok.encode("delta epsilon zeta", false).unwrap());
    want.push(2);
    assert_eq!(packed.tokens(), want.as_slice());
    assert_eq!(packed.sequences(), (want.len() - 1) / 4);
    for i in 0..packed.sequences() {
        assert_eq!(packed.sequence(i), &want[i * 4..i * 4 + 5]);
    }
    assert!(packed.sequence(packed.sequences()).is_empty());
    let err = Packed::new(&tokens, &[1], tok.special(), 64).unwrap_err();
    assert!(err.to_string().contains("fewer than one sequence"), "{err}");
}

#[test]
fn the_loader_is_a_function_of_seed_epoch_and_position() {
    let tok = tokenizer();
    let tokens = TokenizedCorpus::tokenize(&tok, &docs(&[README, BENCHMARKS])).unwrap();
    let packed = Arc::new(Packed::new(&tokens, &[0, 1], tok.special(), 32).unwrap());
    let loader = TokenLoader::new(packed.clone(), 8, true, 7).unwrap();
    let epoch: Vec<_> = loader.epoch_from(3, 0).map(|b| b.unwrap()).collect();
    assert_eq!(epoch.len(), loader.batches_per_epoch());
    // Resuming at batch 5 reads exactly the batches an uninterrupted epoch reads from 5 on.
    let resumed: Vec<_> = loader.epoch_from(3, 5).map(|b| b.unwrap()).collect();
    assert_eq!(resumed.len(), epoch.len() - 5);
    for (a, b) in epoch[5..].iter().zip(&resumed) {
        assert!(a.inputs.equal(&b.inputs) && a.targets.equal(&b.targets));
    }
    // A new loader with the same seed gives the same order; another epoch another order.
    let again = TokenLoader::new(packed.clone(), 8, true, 7).unwrap();
    assert_eq!(again.order(3), loader.order(3));
    assert_ne!(loader.order(4), loader.order(3));
    assert_ne!(
        TokenLoader::new(packed.clone(), 8, true, 8).unwrap().order(3),
        loader.order(3)
    );
    // Targets are the inputs shifted by one, both from the packed stream.
    let first = &epoch[0];
    assert_eq!(first.inputs.size(), vec![8, 32]);
    let row = loader.order(3)[0];
    let want: Vec<i64> = packed.sequence(row).iter().map(|&x| x as i64).collect();
    assert_eq!(Vec::<i64>::try_from(first.inputs.get(0)).unwrap(), want[..32]);
    assert_eq!(Vec::<i64>::try_from(first.targets.get(0)).unwrap(), want[1..]);
    // Every sequence is read once per epoch.
    let mut seen: Vec<usize> = loader.order(3);
    seen.sort_unstable();
    assert_eq!(seen, (0..packed.sequences()).collect::<Vec<_>>());
}
