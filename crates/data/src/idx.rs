//! The IDX format of MNIST and Fashion-MNIST: images and labels, raw or gzipped.

use crate::dataset::check_read;
use crate::{Dataset, Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An image dataset read from an IDX image file and an IDX label file.
#[derive(Clone, Debug)]
pub struct IdxDataset {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    shape: [usize; 3],
    classes: Vec<String>,
}

/// One parsed IDX file: its dimensions and its unsigned-byte payload.
struct IdxFile {
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl IdxDataset {
    /// Reads `images` (IDX, 3 dimensions) and `labels` (IDX, 1 dimension), each raw or
    /// gzipped; `classes` names the labels, which must all be below its length.
    pub fn load(images: &Path, labels: &Path, classes: Vec<String>) -> Result<IdxDataset> {
        let img = read_idx(images, 3)?;
        let lab = read_idx(labels, 1)?;
        let n = img.dims[0];
        if lab.dims[0] != n {
            return Err(Error::format(
                labels,
                format!("holds {} labels but {} has {n} images", lab.dims[0], images.display()),
            ));
        }
        if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, &l)| l as usize >= classes.len()) {
            return Err(Error::format(
                labels,
                format!(
                    "label {l} at position {i} is not below the class count {}",
                    classes.len()
                ),
            ));
        }
        Ok(IdxDataset {
            pixels: img.data,
            labels: lab.data,
            shape: [1, img.dims[1], img.dims[2]],
            classes,
        })
    }

    /// The raw pixels of sample `index` (row-major, one byte each).
    pub fn raw_pixels(&self, index: usize) -> Option<&[u8]> {
        let n = self.shape[1] * self.shape[2];
        self.pixels.get(index * n..(index + 1) * n)
    }
}

/// Reads a file whole, decompressing it when its name ends in `.gz`.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn read_idx(path: &Path, want_dims: usize) -> Result<IdxFile> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(
            path,
            "not an IDX file: it does not start with two zero bytes",
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported; expected 0x08 (unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims != want_dims {
        return Err(Error::format(
            path,
            format!("IDX file has {ndims} dimensions, expected {want_dims}"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::format(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let payload = bytes.len() - header;
    if want != Some(payload) {
        return Err(Error::format(
            path,
            format!(
                "IDX dimensions {dims:?} need {want:?} bytes of data, the file has {payload} (truncated or corrupt?)"
            ),
        ));
    }
    let mut data = bytes;
    data.drain(..header);
    Ok(IdxFile { dims, data })
}

/// Finds `stem` or `stem.gz` in `dir`.
pub(crate) fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(format!("{stem}.gz")), dir.join(stem)]
        .into_iter()
        .find(|p| p.is_file())
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, index: usize) -> Result<i64> {
        check_read(self.len(), 0, index, &[])?;
        Ok(self.labels[index] as i64)
    }
    fn is_in_memory(&self) -> bool {
        true
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        check_read(self.len(), self.sample_len(), index, out)?;
        let n = out.len();
        for (o, &p) in out.iter_mut().zip(&self.pixels[index * n..(index + 1) * n]) {
            *o = p as f32 / 255.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_idx(dir: &Path, name: &str, dims: &[u32], data: &[u8]) -> PathBuf {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    }

    fn classes(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn reads_raw_idx_and_scales_pixels() {
        let d = tempfile::tempdir().unwrap();
        let img = write_idx(d.path(), "i", &[2, 2, 2], &[0, 255, 51, 102, 1, 2, 3, 4]);
        let lab = write_idx(d.path(), "l", &[2], &[3, 1]);
        let ds = IdxDataset::load(&img, &lab, classes(4)).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.sample_shape(), &[1, 2, 2]);
        let mut out = [0f32; 4];
        ds.read_into(0, &mut out).unwrap();
        assert_eq!(out, [0.0, 1.0, 0.2, 0.4]);
        assert_eq!(ds.label(0).unwrap(), 3);
        assert!(ds
            .read_into(2, &mut out)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn rejects_truncated_mismatched_and_out_of_range_files() {
        let d = tempfile::tempdir().unwrap();
        let img = write_idx(d.path(), "i", &[2, 2, 2], &[0; 7]);
        let lab = write_idx(d.path(), "l", &[2], &[0, 1]);
        let err = IdxDataset::load(&img, &lab, classes(2)).unwrap_err().to_string();
        assert!(err.contains("need Some(8) bytes") && err.contains("has 7"), "{err}");

        let img = write_idx(d.path(), "i", &[2, 2, 2], &[0; 8]);
        let lab3 = write_idx(d.path(), "l3", &[3], &[0, 1, 1]);
        let err = IdxDataset::load(&img, &lab3, classes(2)).unwrap_err().to_string();
        assert!(err.contains("holds 3 labels") && err.contains("has 2 images"), "{err}");

        let err = IdxDataset::load(&img, &lab, classes(1)).unwrap_err().to_string();
        assert!(err.contains("label 1 at position 1"), "{err}");

        let err = IdxDataset::load(&lab, &lab, classes(2)).unwrap_err().to_string();
        assert!(err.contains("1 dimensions, expected 3"), "{err}");

        let gz = d.path().join("x.gz");
        std::fs::write(&gz, b"not gzip").unwrap();
        let err = IdxDataset::load(&gz, &lab, classes(2)).unwrap_err().to_string();
        assert!(err.contains("not a valid gzip"), "{err}");
    }
}
