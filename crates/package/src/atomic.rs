//! Atomic writes: a reader sees the old contents or the new, never a half-written file.
//!
//! Each write goes to a temporary sibling, is flushed to disk with fsync, and is renamed
//! into place; the parent folder is fsynced so that the rename itself survives a crash.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

fn sibling(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(path.with_file_name(format!(
        ".{}.{tag}-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a folder so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically, creating the parent folder if needed.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = parent_of(path);
    fs::create_dir_all(parent)?;
    let tmp = sibling(path, "tmp")?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a folder of `files` (name, contents) at `dir` atomically: the folder is built
/// under a temporary name and renamed into place. An existing folder at `dir` is replaced;
/// a reader then sees the old folder, the new one, or (for an instant) none, never a mix.
pub fn write_dir(dir: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    let parent = parent_of(dir);
    fs::create_dir_all(parent)?;
    let tmp = sibling(dir, "tmp")?;
    let result = (|| {
        fs::create_dir(&tmp)?;
        for (name, bytes) in files {
            let mut f = File::create(tmp.join(name))?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        sync_dir(&tmp)?;
        if dir.exists() {
            let old = sibling(dir, "old")?;
            fs::rename(dir, &old)?;
            fs::rename(&tmp, dir)?;
            sync_dir(parent)?;
            fs::remove_dir_all(&old)?;
        } else {
            fs::rename(&tmp, dir)?;
        }
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_files_and_folders_and_leaves_no_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a/b.txt");
        write_file(&f, b"one").unwrap();
        write_file(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        let p = d.path().join("pkg");
        write_dir(&p, &[("x", b"1"), ("y", b"2")]).unwrap();
        write_dir(&p, &[("x", b"3")]).unwrap();
        assert_eq!(fs::read(p.join("x")).unwrap(), b"3");
        assert!(!p.join("y").exists(), "the old folder is replaced whole");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "only a/ and pkg/ remain: {names:?}");
    }
}
