//! Folders of PNG or JPEG images, one sub-folder per class, decoded on demand.

use crate::dataset::check_read;
use crate::{Dataset, Error, Result};
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The size and channel count images are brought to before they reach a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLayout {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageLayout {
    /// The sample shape `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// Decodes a PNG or JPEG into `out` as `[C, H, W]` values in `[0, 1]`, converting the
/// channel count and resizing as `layout` says. `what` names the source in errors.
pub fn decode_image(bytes: &[u8], layout: ImageLayout, what: &str, out: &mut [f32]) -> Result<()> {
    let [c, h, w] = layout.shape();
    if out.len() != c * h * w {
        return Err(Error::Invalid(format!(
            "output buffer holds {} values, the layout needs {}",
            out.len(),
            c * h * w
        )));
    }
    if c != 1 && c != 3 {
        return Err(Error::Invalid(format!("images can have 1 or 3 channels, not {c}")));
    }
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::format(what, format!("cannot decode the image (expected PNG or JPEG): {e}")))?;
    let img = if img.width() as usize != w || img.height() as usize != h {
        img.resize_exact(w as u32, h as u32, FilterType::Triangle)
    } else {
        img
    };
    let plane = h * w;
    if c == 1 {
        for (o, p) in out.iter_mut().zip(img.to_luma8().as_raw()) {
            *o = *p as f32 / 255.0;
        }
    } else {
        for (i, px) in img.to_rgb8().pixels().enumerate() {
            for ch in 0..3 {
                out[ch * plane + i] = px.0[ch] as f32 / 255.0;
            }
        }
    }
    Ok(())
}

/// A labelled image dataset laid out as `root/<class>/<image>.{png,jpg,jpeg}`.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    files: Vec<(PathBuf, i64)>,
    layout: ImageLayout,
    shape: [usize; 3],
    classes: Vec<String>,
}

impl ImageFolder {
    /// Lists `root`: each sub-folder (sorted by name) is a class; images are decoded when read.
    pub fn load(root: &Path, layout: ImageLayout) -> Result<ImageFolder> {
        let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        let mut class_dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(Error::format(
                root,
                "has no sub-folders; expected one sub-folder of images per class",
            ));
        }
        let mut files = Vec::new();
        let mut classes = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            classes.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let mut imgs: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
                })
                .collect();
            imgs.sort();
            files.extend(imgs.into_iter().map(|p| (p, label as i64)));
        }
        if files.is_empty() {
            return Err(Error::format(
                root,
                "holds no .png, .jpg or .jpeg files in its class folders",
            ));
        }
        Ok(ImageFolder {
            files,
            layout,
            shape: layout.shape(),
            classes,
        })
    }

    /// The image file of sample `index`.
    pub fn path(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(|(p, _)| p.as_path())
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, index: usize) -> Result<i64> {
        check_read(self.len(), 0, index, &[])?;
        Ok(self.files[index].1)
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        check_read(self.len(), self.sample_len(), index, out)?;
        let path = &self.files[index].0;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        decode_image(&bytes, self.layout, &path.to_string_lossy(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classes_from_folders_and_resizes() {
        let d = tempfile::tempdir().unwrap();
        for (class, shade) in [("cats", 0u8), ("dogs", 255u8)] {
            std::fs::create_dir(d.path().join(class)).unwrap();
            let img = image::RgbImage::from_pixel(8, 6, image::Rgb([shade, shade, shade]));
            img.save(d.path().join(class).join("a.png")).unwrap();
        }
        std::fs::write(d.path().join("dogs/notes.txt"), "ignored").unwrap();
        let layout = ImageLayout {
            channels: 3,
            height: 4,
            width: 4,
        };
        let ds = ImageFolder::load(d.path(), layout).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.classes(), &["cats".to_string(), "dogs".to_string()]);
        let mut out = vec![0f32; 48];
        ds.read_into(1, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert_eq!(ds.label(1).unwrap(), 1);
    }

    #[test]
    fn undecodable_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("x")).unwrap();
        std::fs::write(d.path().join("x/bad.png"), b"not a png").unwrap();
        let ds = ImageFolder::load(
            d.path(),
            ImageLayout {
                channels: 1,
                height: 2,
                width: 2,
            },
        )
        .unwrap();
        let err = ds.read_into(0, &mut [0.0; 4]).unwrap_err().to_string();
        assert!(err.contains("bad.png") && err.contains("cannot decode"), "{err}");
    }
}
