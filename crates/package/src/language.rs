//! `LanguagePackage`: a language model's package: manifest, weights and `tokenizer.json`,
//! each file verified against the manifest's sha256 on load.

use crate::package::read_verified;
use crate::{
    atomic, decode_weights, encode_weights, sha256_hex, Error, Manifest, Result, Task, MANIFEST_FILE, WEIGHTS_FILE,
};
use kiln_model::{Decoder, ModelSpec};
use kiln_tensor::Device;
use kiln_text::Tokenizer;
use std::path::{Path, PathBuf};

/// The tokenizer's file name inside a language-model package.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A loaded language-model package.
#[derive(Debug)]
pub struct LanguagePackage {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The model with the verified weights.
    pub model: Decoder,
    /// The verified tokenizer, with the roles the manifest gives its special tokens.
    pub tokenizer: Tokenizer,
}

impl LanguagePackage {
    /// Writes `model`, `tokenizer` and `manifest` as a package folder at `dir`, atomically.
    /// Returns the manifest as written (hashes filled in).
    pub fn save(
        dir: impl AsRef<Path>,
        mut manifest: Manifest,
        model: &Decoder,
        tokenizer: &Tokenizer,
    ) -> Result<Manifest> {
        let dir = dir.as_ref();
        let mpath = dir.join(MANIFEST_FILE);
        if tokenizer.vocab_size() as i64 > model.spec().vocab {
            return Err(Error::invalid(
                dir.join(TOKENIZER_FILE),
                format!(
                    "the tokenizer has {} tokens, more than the model's vocabulary of {}",
                    tokenizer.vocab_size(),
                    model.spec().vocab
                ),
            ));
        }
        manifest.task = Task::LanguageModel;
        manifest.model = ModelSpec::Decoder(model.spec().clone());
        manifest.format_version = crate::FORMAT_VERSION;
        let weights = encode_weights(model).map_err(|e| Error::invalid(dir.join(WEIGHTS_FILE), e.to_string()))?;
        manifest.weights.file = WEIGHTS_FILE.into();
        manifest.weights.sha256 = sha256_hex(&weights);
        manifest.weights.bytes = weights.len() as u64;
        let json_tok = tokenizer.json().as_bytes();
        let tok = manifest.tokenizer.get_or_insert_with(|| crate::TokenizerRef {
            file: TOKENIZER_FILE.into(),
            sha256: String::new(),
            bytes: 0,
            special: tokenizer.special(),
        });
        tok.file = TOKENIZER_FILE.into();
        tok.sha256 = tokenizer.sha256().to_string();
        tok.bytes = json_tok.len() as u64;
        manifest.check().map_err(|e| Error::invalid(&mpath, e.to_string()))?;
        let mut json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::invalid(&mpath, e.to_string()))?;
        json.push(b'\n');
        atomic::write_dir(
            dir,
            &[
                (MANIFEST_FILE, &json),
                (WEIGHTS_FILE, &weights),
                (TOKENIZER_FILE, json_tok),
            ],
        )
        .map_err(|e| Error::io(dir, e))?;
        Ok(manifest)
    }

    /// Loads the package at `dir` onto `device`, verifying the format, the weights' and
    /// the tokenizer's sha256, and every tensor against the architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<LanguagePackage> {
        let dir = dir.as_ref();
        let manifest = crate::Package::read_manifest(dir)?;
        let spec = decoder_spec(dir, &manifest)?;
        let tokenizer = Self::load_tokenizer(dir, &manifest)?;
        let wpath = dir.join(&manifest.weights.file);
        let weights = read_verified(&wpath, &manifest.weights.sha256, manifest.weights.bytes, "weights")?;
        let mut model = Decoder::new(spec.clone(), device)?;
        decode_weights(&weights, &mut model).map_err(|e| Error::invalid(&wpath, e.to_string()))?;
        Ok(LanguagePackage {
            dir: dir.to_path_buf(),
            manifest,
            model,
            tokenizer,
        })
    }

    /// The tokenizer of the language-model package at `dir` whose manifest is `manifest`,
    /// its sha256 verified: what a server needs besides the model.
    pub fn load_tokenizer(dir: impl AsRef<Path>, manifest: &Manifest) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let mpath = dir.join(MANIFEST_FILE);
        let spec = decoder_spec(dir, manifest)?;
        let Some(tok_ref) = &manifest.tokenizer else {
            return Err(Error::invalid(
                &mpath,
                "names no tokenizer; a language-model package needs one (tokenizer.json)",
            ));
        };
        let tpath = dir.join(&tok_ref.file);
        let tok_bytes = read_verified(&tpath, &tok_ref.sha256, tok_ref.bytes, "tokenizer")?;
        let tok_json =
            String::from_utf8(tok_bytes).map_err(|e| Error::invalid(&tpath, format!("is not UTF-8: {e}")))?;
        let tokenizer = Tokenizer::from_json(tok_json, Some(tok_ref.special))
            .map_err(|e| Error::invalid(&tpath, format!("is not a usable tokenizer: {e}")))?;
        if tokenizer.vocab_size() as i64 > spec.vocab {
            return Err(Error::invalid(
                &tpath,
                format!(
                    "has {} tokens, more than the model's vocabulary of {}",
                    tokenizer.vocab_size(),
                    spec.vocab
                ),
            ));
        }
        Ok(tokenizer)
    }
}

/// The decoder a language-model package at `dir` declares, or an error saying it holds a
/// classifier.
fn decoder_spec<'a>(dir: &Path, manifest: &'a Manifest) -> Result<&'a kiln_model::DecoderSpec> {
    match &manifest.model {
        ModelSpec::Decoder(spec) => Ok(spec),
        other => Err(Error::invalid(
            dir.join(MANIFEST_FILE),
            format!(
                "holds a {} classifier, not a language model; load it with Package::load",
                other.arch()
            ),
        )),
    }
}
