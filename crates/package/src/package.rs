//! `Package`: saving a trained network as a package folder, and loading one back.

use crate::manifest::READS_FORMATS;
use crate::{atomic, decode_weights, encode_weights, sha256_hex, Error, Manifest, Result, Task, FORMAT_VERSION};
use kiln_model::{ModelSpec, Network};
use kiln_tensor::{Device, Tensor};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a package.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The weights' file name inside a package.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The TorchScript module's file name inside a package of a model trained elsewhere.
pub const TORCHSCRIPT_FILE: &str = "model.pt";

/// A loaded package: its manifest and the network with the verified weights.
#[derive(Debug)]
pub struct Package {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The model, in evaluation mode use via [`Network::infer`].
    pub network: Network,
}

impl Package {
    /// Writes `net` and `manifest` as a package folder at `dir`, atomically: a crash
    /// leaves either the previous package or the new one, never a half-written folder.
    /// Returns the manifest as written (with the weights' hash filled in).
    pub fn save(dir: impl AsRef<Path>, mut manifest: Manifest, net: &Network) -> Result<Manifest> {
        let dir = dir.as_ref();
        if net.is_torchscript() {
            return Err(Error::invalid(
                dir,
                "a TorchScript network is saved from its archive's bytes with Package::save_torchscript",
            ));
        }
        manifest.model = net.spec().clone();
        manifest.format_version = FORMAT_VERSION;
        let weights = encode_weights(net).map_err(|e| Error::invalid(dir.join(WEIGHTS_FILE), e.to_string()))?;
        manifest.weights.file = WEIGHTS_FILE.into();
        manifest.weights.sha256 = sha256_hex(&weights);
        manifest.weights.bytes = weights.len() as u64;
        manifest
            .check()
            .map_err(|e| Error::invalid(dir.join(MANIFEST_FILE), e.to_string()))?;
        let mut json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::invalid(dir.join(MANIFEST_FILE), e.to_string()))?;
        json.push(b'\n');
        atomic::write_dir(dir, &[(MANIFEST_FILE, &json), (WEIGHTS_FILE, &weights)]).map_err(|e| Error::io(dir, e))?;
        Ok(manifest)
    }

    /// Writes a package at `dir` holding the TorchScript module whose archive is `module`
    /// (from `torch.jit.script(m).save(...)` or `torch.jit.trace`), atomically. The
    /// manifest's model must be `arch = "torchscript"`, a classifier (input shape and
    /// classes) or a module of named tensors (inputs and outputs); the module is loaded
    /// and run once on zeros of the declared inputs first, and must give float logits
    /// `[1, classes]` or the declared outputs. Returns the manifest as written.
    pub fn save_torchscript(dir: impl AsRef<Path>, mut manifest: Manifest, module: &[u8]) -> Result<Manifest> {
        let dir = dir.as_ref();
        let ModelSpec::Torchscript(spec) = &manifest.model else {
            return Err(Error::Manifest(format!(
                "model.arch is {:?}; a TorchScript package's is \"torchscript\"",
                manifest.model.arch()
            )));
        };
        Network::from_torchscript(spec.clone(), module, Device::Cpu)?;
        manifest.format_version = FORMAT_VERSION;
        manifest.weights.file = TORCHSCRIPT_FILE.into();
        manifest.weights.sha256 = sha256_hex(module);
        manifest.weights.bytes = module.len() as u64;
        manifest.check()?;
        let mut json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::invalid(dir.join(MANIFEST_FILE), e.to_string()))?;
        json.push(b'\n');
        atomic::write_dir(dir, &[(MANIFEST_FILE, &json), (TORCHSCRIPT_FILE, module)]).map_err(|e| Error::io(dir, e))?;
        Ok(manifest)
    }

    /// Writes the package's model to `path` as a TorchScript module that
    /// `torch.jit.load(path)` runs in PyTorch, atomically. Its `forward` takes samples as
    /// the package's own requests carry them (a float batch `[B, ...input]`, pixels in
    /// 0..1), applies the package's normalisation, and gives the logits: the numbers
    /// kiln-serve's v2 `logits` output gives for the same inputs.
    pub fn export_torchscript(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let device = self.network.device();
        let norm = match &self.manifest.input.normalize {
            Some(n) => {
                let k = n.mean.len() as i64;
                let mean = Tensor::f_from_slice(&n.mean)?.f_to_device(device)?.f_view([1, k, 1])?;
                let inv: Vec<f32> = n.std.iter().map(|s| 1.0 / s).collect();
                let inv = Tensor::f_from_slice(&inv)?.f_to_device(device)?.f_view([1, k, 1])?;
                Some((k, mean, inv))
            }
            None => None,
        };
        // The same arithmetic as Normalize::apply: (v - mean) * (1 / std) per channel.
        // Shapes with -1 for the batch, so that the traced module takes any batch size.
        let input: Vec<i64> = std::iter::once(-1)
            .chain(self.manifest.model.input().iter().copied())
            .collect();
        let per_channel = self.manifest.sample_len() as i64 / norm.as_ref().map_or(1, |n| n.0.max(1));
        let prepare = |x: &Tensor| match &norm {
            Some((k, mean, inv)) => x
                .f_reshape([-1, *k, per_channel])?
                .f_sub(mean)?
                .f_mul(inv)?
                .f_reshape(input.as_slice()),
            None => Ok(x.shallow_clone()),
        };
        // libtorch writes to a path; the bytes then go to `path` atomically.
        // (libtorch names the archive's root folder after the file, so the name is plain.)
        let tmp = tempfile::tempdir().map_err(|e| Error::io(path, e))?;
        let file = tmp.path().join(TORCHSCRIPT_FILE);
        self.network
            .save_torchscript(&prepare, &file)
            .map_err(|e| Error::invalid(path, format!("cannot write the TorchScript module: {e}")))?;
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        atomic::write_file(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// Reads and checks `dir/manifest.json` without loading the weights.
    pub fn read_manifest(dir: impl AsRef<Path>) -> Result<Manifest> {
        let path = dir.as_ref().join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::invalid(
                    &path,
                    "is missing; a kiln package is a folder holding manifest.json and weights.safetensors",
                )
            } else {
                Error::io(&path, e)
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::invalid(&path, format!("is not valid JSON: {e}")))?;
        // The version is checked before the schema, so that a newer format says so
        // rather than failing on a field this kiln does not know.
        match value.get("format_version").and_then(serde_json::Value::as_u64) {
            Some(v) if READS_FORMATS.iter().any(|&r| r as u64 == v) => {}
            Some(v) => {
                return Err(Error::invalid(
                    &path,
                    format!("format version {v} is not supported; this kiln reads versions {READS_FORMATS:?}"),
                ))
            }
            None => return Err(Error::invalid(&path, "has no numeric format_version field")),
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| Error::invalid(&path, format!("does not match the manifest schema: {e}")))?;
        manifest.check().map_err(|e| Error::invalid(&path, e.to_string()))?;
        Ok(manifest)
    }

    /// Loads the package at `dir` onto `device`, verifying the format version, the
    /// weights' sha256 and every tensor's name, shape and dtype against the architecture.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Package> {
        let dir = dir.as_ref();
        let manifest = Package::read_manifest(dir)?;
        if manifest.task == Task::LanguageModel {
            return Err(Error::invalid(
                dir.join(MANIFEST_FILE),
                "holds a language model (task \"language-model\"); load it with LanguagePackage::load, or `kiln-train generate`",
            ));
        }
        let wpath = dir.join(&manifest.weights.file);
        let bytes = read_verified(&wpath, &manifest.weights.sha256, manifest.weights.bytes, "weights")?;
        let network = match &manifest.model {
            ModelSpec::Torchscript(spec) => Network::from_torchscript(spec.clone(), &bytes, device)
                .map_err(|e| Error::invalid(&wpath, e.to_string()))?,
            spec => {
                let mut network = Network::new(spec.clone(), device)?;
                decode_weights(&bytes, &mut network).map_err(|e| Error::invalid(&wpath, e.to_string()))?;
                network
            }
        };
        Ok(Package {
            dir: dir.to_path_buf(),
            manifest,
            network,
        })
    }
}

/// Reads a file a manifest names and checks it against the recorded sha256.
pub(crate) fn read_verified(path: &Path, sha256: &str, recorded_bytes: u64, what: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(path, format!("is missing; manifest.json names it as the {what} file"))
        } else {
            Error::io(path, e)
        }
    })?;
    let sha = sha256_hex(&bytes);
    if sha != sha256 {
        return Err(Error::invalid(
            path,
            format!(
                "sha256 is {sha} but manifest.json records {sha256} ({recorded_bytes} bytes recorded, {} found): the file is corrupt or was changed",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
