//! `Corpus`: the documents of a text file, a folder of text files or a JSON Lines file,
//! and the checksum that token caches are keyed by.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where a corpus comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CorpusSource {
    /// One text file; one document, or several cut at `separator` (e.g. `"\n\n"`).
    Text {
        /// The file.
        path: PathBuf,
        /// Cut the file into documents at each occurrence of this.
        #[serde(default)]
        separator: Option<String>,
    },
    /// A folder: every file whose name ends in `extension`, below it at any depth, is a
    /// document, in the order of their paths.
    Folder {
        /// The folder.
        path: PathBuf,
        /// Which files (default `.txt`).
        #[serde(default = "default_extension")]
        extension: String,
    },
    /// JSON Lines: one JSON object per line, its text under `field`.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// The key of the text (default `text`).
        #[serde(default = "default_field")]
        field: String,
    },
}

fn default_extension() -> String {
    ".txt".into()
}

fn default_field() -> String {
    "text".into()
}

/// One document: a unit that is never cut between training and validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Where it came from: the file's path under the folder, or `file:line`.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// A corpus read into memory.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The documents, in a fixed order.
    pub documents: Vec<Document>,
    checksum: String,
}

impl Corpus {
    /// Reads a corpus. Empty documents are left out; text must be UTF-8 (the error names
    /// the file and the byte where it is not).
    pub fn read(source: &CorpusSource) -> Result<Corpus> {
        let documents = match source {
            CorpusSource::Text { path, separator } => {
                let text = read_utf8(path)?;
                let name = path.display().to_string();
                match separator.as_deref() {
                    Some("") => return Err(Error::Invalid("a text corpus's separator must not be empty".into())),
                    Some(sep) => text
                        .split(sep)
                        .enumerate()
                        .map(|(i, t)| Document {
                            name: format!("{name}#{}", i + 1),
                            text: t.to_string(),
                        })
                        .collect(),
                    None => vec![Document { name, text }],
                }
            }
            CorpusSource::Folder { path, extension } => {
                let mut files = Vec::new();
                walk(path, extension, &mut files)?;
                if files.is_empty() {
                    return Err(Error::format(
                        path,
                        format!("the folder holds no files ending in {extension:?}"),
                    ));
                }
                files.sort();
                files
                    .iter()
                    .map(|f| {
                        Ok(Document {
                            name: f.strip_prefix(path).unwrap_or(f).display().to_string(),
                            text: read_utf8(f)?,
                        })
                    })
                    .collect::<Result<_>>()?
            }
            CorpusSource::Jsonl { path, field } => read_jsonl(path, field)?,
        };
        Ok(Corpus::from_documents(documents))
    }

    /// A corpus of documents already in memory (empty ones are left out).
    pub fn from_documents(documents: Vec<Document>) -> Corpus {
        let documents: Vec<Document> = documents.into_iter().filter(|d| !d.text.is_empty()).collect();
        let mut h = Sha256::new();
        for d in &documents {
            // Lengths first, so that moving text between documents changes the checksum.
            h.update((d.text.len() as u64).to_le_bytes());
            h.update(d.text.as_bytes());
        }
        let checksum = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Corpus { documents, checksum }
    }

    /// The SHA-256 of the documents' texts and boundaries, in hex.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The total size of the text in bytes.
    pub fn bytes(&self) -> usize {
        self.documents.iter().map(|d| d.text.len()).sum()
    }
}

fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path,
            format!(
                "text must be UTF-8; the byte at offset {} is not (convert the file, e.g. with iconv)",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn walk(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            walk(&path, extension, out)?;
        } else if path.to_string_lossy().ends_with(extension) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_jsonl(path: &Path, field: &str) -> Result<Vec<Document>> {
    let text = read_utf8(path)?;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::format(path, format!("line {n} is not JSON: {e}")))?;
        let text = match value.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::format(
                    path,
                    format!("line {n}: {field:?} must be a string, found {}", kind_of(other)),
                ))
            }
            None => {
                return Err(Error::format(
                    path,
                    format!("line {n} has no {field:?} field (set the corpus's field to the key that holds the text)"),
                ))
            }
        };
        docs.push(Document {
            name: format!("{}:{n}", path.display()),
            text,
        });
    }
    Ok(docs)
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
