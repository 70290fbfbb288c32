//! `TokenizedCorpus`: a corpus as token ids, tokenized in parallel and cached on disk under
//! a name made of the tokenizer's hash and the corpus's checksum.

use crate::{Corpus, Error, Result, Tokenizer};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KILNTOK1";
const HEADER: usize = 8 + 8 + 8 + 32;

/// Every document of a corpus as token ids (no BOS or EOS: packing adds those).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedCorpus {
    /// Document `i` is `tokens[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u64>,
    tokens: Vec<u32>,
}

/// Whether [`TokenizedCorpus::load_or_build`] found its cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from this file.
    Hit(PathBuf),
    /// Tokenized and written to this file (the reason is why the file was not used).
    Built(PathBuf, String),
}

impl TokenizedCorpus {
    /// Tokenizes every document, in parallel.
    pub fn tokenize(tokenizer: &Tokenizer, corpus: &Corpus) -> Result<TokenizedCorpus> {
        let docs: Vec<Vec<u32>> = corpus
            .documents
            .par_iter()
            .map(|d| tokenizer.encode(&d.text, false))
            .collect::<Result<_>>()?;
        let mut offsets = Vec::with_capacity(docs.len() + 1);
        offsets.push(0u64);
        let mut tokens = Vec::with_capacity(docs.iter().map(Vec::len).sum());
        for d in docs {
            tokens.extend_from_slice(&d);
            offsets.push(tokens.len() as u64);
        }
        Ok(TokenizedCorpus { offsets, tokens })
    }

    /// The cached token ids of `corpus` under `tokenizer`, from `dir` when a cache of
    /// exactly this pair is there and intact, otherwise tokenized and written there
    /// (atomically, so a crash never leaves a half-written cache).
    pub fn load_or_build(
        dir: &Path,
        tokenizer: &Tokenizer,
        corpus: &Corpus,
    ) -> Result<(TokenizedCorpus, CacheOutcome)> {
        let path = dir.join(format!(
            "{}-{}.tokens",
            &tokenizer.sha256()[..16],
            &corpus.checksum()[..16]
        ));
        let reason = match std::fs::read(&path) {
            Ok(bytes) => match TokenizedCorpus::from_bytes(&bytes) {
                Ok(t) if t.documents() == corpus.documents.len() => return Ok((t, CacheOutcome::Hit(path))),
                Ok(t) => format!(
                    "it holds {} documents where the corpus has {}",
                    t.documents(),
                    corpus.documents.len()
                ),
                Err(why) => why,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "there was none".to_string(),
            Err(e) => e.to_string(),
        };
        let t = TokenizedCorpus::tokenize(tokenizer, corpus)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomically(&path, &t.to_bytes())?;
        Ok((t, CacheOutcome::Built(path, reason)))
    }

    /// The number of documents.
    pub fn documents(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The tokens of document `i` (empty past the end).
    pub fn document(&self, i: usize) -> &[u32] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.tokens.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The number of tokens in all documents.
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.offsets.len() * 8 + self.tokens.len() * 4);
        for o in &self.offsets {
            body.extend_from_slice(&o.to_le_bytes());
        }
        for t in &self.tokens {
            body.extend_from_slice(&t.to_le_bytes());
        }
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.documents() as u64).to_le_bytes());
        out.extend_from_slice(&(self.tokens.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Reads the cache format; the error says what does not hold.
    fn from_bytes(bytes: &[u8]) -> std::result::Result<TokenizedCorpus, String> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err("it is not a kiln token cache".into());
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let (docs, tokens) = (word(8), word(16));
        let body = &bytes[HEADER..];
        let want = docs
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|o| tokens.checked_mul(4).and_then(|t| t.checked_add(o)));
        if want != Some(body.len() as u64) {
            return Err(format!(
                "its header says {docs} documents and {tokens} tokens, which do not fit its {} bytes",
                body.len()
            ));
        }
        if Sha256::digest(body).as_slice() != &bytes[24..56] {
            return Err("its contents do not match their checksum".into());
        }
        let (off_bytes, tok_bytes) = body.split_at((docs as usize + 1) * 8);
        let offsets: Vec<u64> = off_bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if offsets.first() != Some(&0) || offsets.last() != Some(&tokens) || offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err("its document offsets are not in order".into());
        }
        let tokens = tok_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect();
        Ok(TokenizedCorpus { offsets, tokens })
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
