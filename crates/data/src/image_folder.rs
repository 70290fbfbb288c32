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

/// How much an image may declare before it is decoded: the header is read first, and an
/// image over the limit is refused without allocating its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width x height) an image may have.
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// The default: 64 Mpx (8192 x 8192), far above a photo (12 Mpx) and any training image.
    pub const DEFAULT_MAX_PIXELS: u64 = 1 << 26;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Decodes a PNG or JPEG into `out` as `[C, H, W]` values in `[0, 1]`, converting the
/// channel count and resizing as `layout` says. `what` names the source in errors.
/// Images over [`DecodeLimits::default`] are refused ([`Error::TooLarge`]).
pub fn decode_image(bytes: &[u8], layout: ImageLayout, what: &str, out: &mut [f32]) -> Result<()> {
    decode_image_within(bytes, layout, DecodeLimits::default(), what, out)
}

/// [`decode_image`] with the given limits: the image's header is read first, and one
/// declaring more than `limits.max_pixels` is [`Error::TooLarge`] before any pixel is
/// allocated; the decoder itself is held to that size too.
pub fn decode_image_within(
    bytes: &[u8],
    layout: ImageLayout,
    limits: DecodeLimits,
    what: &str,
    out: &mut [f32],
) -> Result<()> {
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
    let undecodable =
        |e: image::ImageError| Error::format(what, format!("cannot decode the image (expected PNG or JPEG): {e}"));
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| undecodable(e.into()))
    };
    let (iw, ih) = reader()?.into_dimensions().map_err(undecodable)?;
    let pixels = u64::from(iw) * u64::from(ih);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge(format!(
            "{what}: the image is {iw}x{ih} ({pixels} pixels); at most {} pixels are accepted",
            limits.max_pixels
        )));
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(iw);
    decoder_limits.max_image_height = Some(ih);
    // 16-bit RGBA is the widest pixel PNG and JPEG decode to, plus the decoders' own buffers.
    decoder_limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(16 << 20));
    let mut r = reader()?;
    r.limits(decoder_limits);
    let img = r.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => Error::TooLarge(format!("{what}: {l}")),
        other => undecodable(other),
    })?;
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

    /// A real PNG of `w`x`h` grey pixels whose header is then rewritten to declare
    /// `dw`x`dh` (CRC fixed): a small file that claims a huge image.
    fn png_declaring(w: u32, h: u32, dw: u32, dh: u32) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let mut png = out.into_inner();
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, ... CRC over type+data.
        png[16..20].copy_from_slice(&dw.to_be_bytes());
        png[20..24].copy_from_slice(&dh.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        png
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused_before_decoding() {
        let layout = ImageLayout {
            channels: 1,
            height: 4,
            width: 4,
        };
        let mut out = [0f32; 16];
        // 16,000 x 16,000 declared in a file of a few hundred bytes: refused from the header.
        let huge = png_declaring(8, 8, 16_000, 16_000);
        assert!(huge.len() < 1000);
        let err = decode_image(&huge, layout, "req", &mut out).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("16000x16000 (256000000 pixels)"), "{err}");
        // A real image over a tighter limit, and the same image within it.
        let real = png_declaring(40, 30, 40, 30);
        let tight = DecodeLimits { max_pixels: 1000 };
        let err = decode_image_within(&real, layout, tight, "req", &mut out).unwrap_err();
        assert!(err.to_string().contains("40x30 (1200 pixels); at most 1000"), "{err}");
        decode_image_within(&real, layout, DecodeLimits { max_pixels: 1200 }, "req", &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 7.0 / 255.0).abs() < 1e-6));
    }
}
