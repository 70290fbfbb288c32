//! kiln's text data: tokenizers, corpora, and the packed token sequences a language model
//! trains on.
//!
//! A [`Tokenizer`] is a Hugging Face `tokenizer.json` (kiln trains byte-level BPE ones with
//! [`Tokenizer::train`]) with the roles of its special tokens and its SHA-256. A [`Corpus`]
//! is read from a text file, a folder of text files or JSON Lines ([`CorpusSource`]);
//! [`TokenizedCorpus::load_or_build`] tokenizes its documents in parallel and caches the
//! ids on disk under the tokenizer's hash and the corpus's checksum; [`split_documents`]
//! holds out whole documents by seed; [`Packed`] lays documents end to end between BOS and
//! EOS and cuts the stream into fixed-length sequences; [`TokenLoader`] batches them in an
//! order that depends only on the seed, the epoch and the position, so that a resumed run
//! reads what an uninterrupted one would. [`StreamDecoder`] turns generated tokens back
//! into text in whole UTF-8 characters.
//!
//! ```
//! use kiln_text::{Corpus, Document, Packed, TokenizedCorpus, Tokenizer};
//! let text = "In the beginning God created the heaven and the earth. ".repeat(20);
//! let tok = Tokenizer::train([text.as_str()].into_iter(), 300)?;
//! let ids = tok.encode("the heaven and the earth", false)?;
//! assert_eq!(tok.decode(&ids, false)?, "the heaven and the earth");
//! let corpus = Corpus::from_documents(vec![Document { name: "gen".into(), text }]);
//! let tokens = TokenizedCorpus::tokenize(&tok, &corpus)?;
//! let packed = Packed::new(&tokens, &[0], tok.special(), 16)?;
//! assert_eq!(packed.sequence(0).len(), 17);
//! # Ok::<(), kiln_text::Error>(())
//! ```

mod byte_level;
mod cache;
mod chat;
mod corpus;
mod error;
mod loader;
mod pack;
mod split;
mod stop;
mod stream;
mod tokenizer;

pub use cache::{CacheOutcome, TokenizedCorpus};
pub use chat::{ChatMessage, ChatTemplate};
pub use corpus::{Corpus, CorpusSource, Document};
pub use error::{Error, Result};
pub use loader::{TokenBatch, TokenLoader};
pub use pack::Packed;
pub use split::{split_documents, DocumentSplit};
pub use stop::StopStrings;
pub use stream::StreamDecoder;
pub use tokenizer::{SpecialTokens, Tokenizer, BOS, EOS, PAD};
