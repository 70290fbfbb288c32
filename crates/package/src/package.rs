//! `Package`: saving a trained network as a package folder, and loading one back.

use crate::{atomic, decode_weights, encode_weights, sha256_hex, Error, Manifest, Result, FORMAT_VERSION};
use kiln_model::Network;
use kiln_tensor::Device;
use std::path::{Path, PathBuf};

/// The manifest's file name inside a package.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The weights' file name inside a package.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

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
            Some(v) if v == FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(Error::invalid(
                    &path,
                    format!("format version {v} is not supported; this kiln reads version {FORMAT_VERSION}"),
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
        let wpath = dir.join(&manifest.weights.file);
        let bytes = std::fs::read(&wpath).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::invalid(&wpath, "is missing; manifest.json names it as the weights file")
            } else {
                Error::io(&wpath, e)
            }
        })?;
        let sha = sha256_hex(&bytes);
        if sha != manifest.weights.sha256 {
            return Err(Error::invalid(
                &wpath,
                format!(
                    "sha256 is {sha} but manifest.json records {} ({} bytes recorded, {} found): the file is corrupt or was changed",
                    manifest.weights.sha256,
                    manifest.weights.bytes,
                    bytes.len()
                ),
            ));
        }
        let mut network = Network::new(manifest.model.clone(), device)?;
        decode_weights(&bytes, &mut network).map_err(|e| Error::invalid(&wpath, e.to_string()))?;
        Ok(Package {
            dir: dir.to_path_buf(),
            manifest,
            network,
        })
    }
}
