//! Checkpoints: everything needed to continue a run exactly, written atomically, the
//! newest K kept, and verified on load (a damaged one is skipped for the previous one).

use crate::early_stop::EarlyStopping;
use crate::evaluate::Tally;
use crate::{EpochReport, Error, Optimizer, Result};
use kiln_package::{atomic, decode_tensors, encode_tensors, sha256_hex};
use kiln_tensor::{nn, tch, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const STATE_FILE: &str = "state.json";
const TENSORS_FILE: &str = "tensors.safetensors";
const FORMAT: u32 = 1;

/// Where a run is: everything but the tensors. The data order, augmentation and dropout
/// draws are functions of the seed and these counters, so no generator state is needed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Checkpoint format version.
    pub format: u32,
    /// Batches trained on so far.
    pub batches_done: u64,
    /// Optimizer steps taken so far (the schedule's position).
    pub optimizer_steps: u64,
    /// The epoch in progress, from 0.
    pub epoch: usize,
    /// Batches of that epoch already done (the data order position).
    pub batch_in_epoch: usize,
    /// The epoch's running loss and accuracy sums.
    pub tally: Tally,
    /// Reports of the finished epochs.
    pub epochs: Vec<EpochReport>,
    /// The best monitored value and its epoch (from 1).
    pub best: Option<(f64, usize)>,
    /// Early stopping's state.
    pub early_stopping: Option<EarlyStopping>,
    /// Training wall time so far, in seconds.
    pub seconds: f64,
    /// sha256 of the tensors file.
    pub tensors_sha256: String,
}

/// A checkpoint read back from disk.
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// The run state.
    pub state: RunState,
    /// Model (`model/<name>`) and optimizer (`optim/...`) tensors.
    pub tensors: HashMap<String, Tensor>,
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Checkpoint folders of a run, oldest first.
pub fn list(run: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(checkpoints_dir(run))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ckpt-")))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Writes a checkpoint of `net` and `opt` at `state`, then deletes all but the newest `keep`.
pub fn save(run: &Path, state: &RunState, vars: &nn::VarStore, opt: &Optimizer, keep: usize) -> Result<PathBuf> {
    let mut tensors: Vec<(String, Tensor)> = vars
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model/{n}"), t))
        .collect();
    tensors.extend(opt.state_tensors());
    let dir = checkpoints_dir(run).join(format!("ckpt-{:012}", state.batches_done));
    let bytes = encode_tensors(tensors).map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
    let mut state = state.clone();
    state.format = FORMAT;
    state.tensors_sha256 = sha256_hex(&bytes);
    let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?;
    atomic::write_dir(&dir, &[(STATE_FILE, &json), (TENSORS_FILE, &bytes)]).map_err(|e| Error::io(&dir, e))?;
    let all = list(run);
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    // What writes cut short by a crash left (`.ckpt-*` folders, never read).
    let leftovers = std::fs::read_dir(checkpoints_dir(run))
        .map_err(|e| Error::io(checkpoints_dir(run), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".ckpt-")));
    for p in leftovers {
        std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    Ok(dir)
}

fn load_one(dir: &Path) -> std::result::Result<Checkpoint, String> {
    let state_bytes = std::fs::read(dir.join(STATE_FILE)).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    let state: RunState = serde_json::from_slice(&state_bytes).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    if state.format != FORMAT {
        return Err(format!("format {} is not {FORMAT}", state.format));
    }
    let bytes = std::fs::read(dir.join(TENSORS_FILE)).map_err(|e| format!("{TENSORS_FILE}: {e}"))?;
    let sha = sha256_hex(&bytes);
    if sha != state.tensors_sha256 {
        return Err(format!(
            "{TENSORS_FILE} has sha256 {sha}, {STATE_FILE} records {}",
            state.tensors_sha256
        ));
    }
    let tensors = decode_tensors(&bytes).map_err(|e| e.to_string())?.into_iter().collect();
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        tensors,
    })
}

/// The newest checkpoint of `run` that reads back intact, with a warning for each newer
/// one that did not. `Ok(None)` when the run has no checkpoints at all; an error when it
/// has some but none is usable.
pub fn load_latest(run: &Path) -> Result<Option<(Checkpoint, Vec<String>)>> {
    let all = list(run);
    if all.is_empty() {
        return Ok(None);
    }
    let mut warnings = Vec::new();
    for dir in all.iter().rev() {
        match load_one(dir) {
            Ok(c) => return Ok(Some((c, warnings))),
            Err(e) => warnings.push(format!(
                "checkpoint {} is damaged ({e}); falling back to the previous one",
                dir.display()
            )),
        }
    }
    Err(Error::Checkpoint(format!(
        "none of the {} checkpoints in {} is usable: {}",
        all.len(),
        checkpoints_dir(run).display(),
        warnings.join("; ")
    )))
}

/// Copies the checkpoint's model tensors into `net`; every variable must be present with
/// its shape.
pub fn restore_model(ckpt: &Checkpoint, vars: &nn::VarStore) -> Result<()> {
    tch::no_grad(|| {
        for (name, var) in vars.variables() {
            let key = format!("model/{name}");
            let src = ckpt
                .tensors
                .get(&key)
                .ok_or_else(|| Error::Checkpoint(format!("{} lacks {key}", ckpt.dir.display())))?;
            if src.size() != var.size() {
                return Err(Error::Checkpoint(format!(
                    "{}: {key} has shape {:?}, the model has {:?}",
                    ckpt.dir.display(),
                    src.size(),
                    var.size()
                )));
            }
            let mut var = var;
            var.f_copy_(src)?;
        }
        Ok(())
    })
}
