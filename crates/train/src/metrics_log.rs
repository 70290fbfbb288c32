//! `metrics.jsonl`: one JSON object per line.

use crate::{Error, Result};
use kiln_package::atomic;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// An append-only log of JSON records, buffered and flushed at epoch ends, checkpoints
/// and the end of a run.
pub struct MetricsLog {
    path: PathBuf,
    /// `None`: records are dropped (the ranks other than 0 of a data-parallel run).
    file: Option<BufWriter<File>>,
}

impl MetricsLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<MetricsLog> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file: Some(BufWriter::new(file)),
        })
    }

    /// A log that writes nothing: in a data-parallel run, rank 0 alone writes metrics.
    pub fn discard() -> MetricsLog {
        MetricsLog {
            path: PathBuf::new(),
            file: None,
        }
    }

    /// Reopens the log of a resumed run, keeping only the records `keep` accepts (those
    /// up to the checkpoint), so the log reads as one uninterrupted run.
    pub fn resume(path: &Path, keep: impl Fn(&serde_json::Value) -> bool) -> Result<MetricsLog> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut kept = String::new();
        for line in text.lines() {
            if serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| keep(&v)) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        atomic::write_file(path, kept.as_bytes()).map_err(|e| Error::io(path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file: Some(BufWriter::new(file)),
        })
    }

    /// Appends one record as a line of JSON.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        serde_json::to_writer(&mut *file, record)
            .map_err(|e| Error::Internal(format!("cannot record metrics: {e}")))?;
        file.write_all(b"\n").map_err(|e| Error::io(&self.path, e))
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush().map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }
}
