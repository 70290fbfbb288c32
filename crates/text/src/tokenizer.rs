//! `Tokenizer`: a Hugging Face `tokenizer.json` (byte-level BPE when kiln trains one), with
//! the roles of its special tokens and the hash that packages and caches are keyed by.

use crate::byte_level;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// kiln's padding token when it trains a tokenizer (id 0).
pub const PAD: &str = "<|pad|>";
/// kiln's beginning-of-sequence token when it trains a tokenizer (id 1).
pub const BOS: &str = "<|bos|>";
/// kiln's end-of-sequence and document-separator token when it trains a tokenizer (id 2).
pub const EOS: &str = "<|eos|>";

/// Which token ids play which role. Stored beside the tokenizer (in a package's manifest),
/// because `tokenizer.json` itself does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialTokens {
    /// Put before each document and each prompt.
    pub bos: Option<u32>,
    /// Ends each document (the separator between packed documents) and ends generation.
    pub eos: Option<u32>,
    /// Fills the unused places of a batch.
    pub pad: Option<u32>,
}

/// A tokenizer: encodes text to token ids and decodes them back.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    json: String,
    sha256: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Tokenizer {
    /// Trains a byte-level BPE tokenizer on `texts` with `vocab_size` tokens in all: the
    /// three special tokens ([`PAD`], [`BOS`], [`EOS`], ids 0-2), the 256 byte symbols (so
    /// every input, valid UTF-8 or not, round-trips), and the merges learnt from the texts.
    /// Deterministic: the same texts and size give the same tokenizer.
    pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let least = 256 + 3;
        if vocab_size < least {
            return Err(Error::Invalid(format!(
                "vocab_size {vocab_size} is too small: a byte-level BPE tokenizer needs at least {least} (3 special tokens and 256 byte symbols)"
            )));
        }
        let specials = [PAD, BOS, EOS].map(|s| AddedToken::from(s, true)).to_vec();
        let trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut inner = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        inner
            .train(&mut TrainerWrapper::BpeTrainer(trainer), texts)
            .map_err(Error::tokenizer)?;
        let json = inner.to_string(false).map_err(Error::tokenizer)?;
        Tokenizer::from_json(json, None)
    }

    /// Reads a `tokenizer.json`. Without `special`, the roles are found by kiln's token
    /// names ([`BOS`], [`EOS`], [`PAD`]); a tokenizer from elsewhere names its roles.
    pub fn from_file(path: &Path, special: Option<SpecialTokens>) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let json = String::from_utf8(bytes)
            .map_err(|e| Error::format(path, format!("a tokenizer.json must be UTF-8 JSON: {e}")))?;
        Tokenizer::from_json(json, special).map_err(|e| match e {
            Error::Tokenizer(reason) => Error::format(path, format!("not a tokenizer.json: {reason}")),
            other => other,
        })
    }

    /// Parses the text of a `tokenizer.json`; see [`Tokenizer::from_file`] for `special`.
    pub fn from_json(json: String, special: Option<SpecialTokens>) -> Result<Tokenizer> {
        let inner: tokenizers::Tokenizer = json.parse().map_err(Error::tokenizer)?;
        let special = match special {
            Some(s) => s,
            None => SpecialTokens {
                bos: inner.token_to_id(BOS),
                eos: inner.token_to_id(EOS),
                pad: inner.token_to_id(PAD),
            },
        };
        let vocab = inner.get_vocab_size(true);
        for (role, id) in [("bos", special.bos), ("eos", special.eos), ("pad", special.pad)] {
            if let Some(id) = id.filter(|&i| i as usize >= vocab) {
                return Err(Error::Invalid(format!(
                    "the {role} token id {id} is outside the tokenizer's vocabulary of {vocab}"
                )));
            }
        }
        let sha256 = hex(&Sha256::digest(json.as_bytes()));
        Ok(Tokenizer {
            inner,
            special,
            json,
            sha256,
        })
    }

    /// Writes `tokenizer.json` (exactly the bytes [`Tokenizer::sha256`] hashes), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::cache::write_atomically(path, self.json.as_bytes())
    }

    /// The `tokenizer.json` text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The SHA-256 of the `tokenizer.json` text, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The roles of the special tokens.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// The number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The Hugging Face tokenizer inside, for what this type does not wrap.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, with the BOS token first when `add_bos` and the tokenizer has
    /// one. Special tokens written in the text are recognised as such.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(Error::tokenizer)?;
        let bos = self.special.bos.filter(|_| add_bos);
        Ok(bos.into_iter().chain(enc.get_ids().iter().copied()).collect())
    }

    /// The text of `ids`; special tokens left out when `skip_special`. Bytes that do not
    /// form valid UTF-8 (a character cut between tokens) come out as U+FFFD: stream with
    /// [`StreamDecoder`](crate::StreamDecoder) to hold them back instead.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let vocab = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the tokenizer's vocabulary of {vocab}"
            )));
        }
        self.inner.decode(ids, skip_special).map_err(Error::tokenizer)
    }

    /// The id of a token, e.g. `"<|eos|>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The bytes whose byte-level symbol is not a token: text holding them loses them when
    /// encoded (published tokenizers lack a few; kiln's own have all 256).
    pub fn missing_bytes(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|&b| self.inner.token_to_id(&byte_level::symbol_of(b).to_string()).is_none())
            .collect()
    }

    /// How many bytes of text each token id stands for: 0 for special tokens, the byte
    /// count for the rest. Bits per byte divides a loss by these.
    pub fn byte_lengths(&self) -> Vec<u32> {
        let specials = self.inner.get_added_tokens_decoder();
        (0..self.vocab_size() as u32)
            .map(|id| {
                if specials.get(&id).is_some_and(|t| t.special) {
                    return 0;
                }
                match self.inner.id_to_token(id) {
                    Some(tok) => byte_level::decoded_len(&tok).unwrap_or(tok.len()) as u32,
                    None => 0,
                }
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
