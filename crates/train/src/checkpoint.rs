//! Training checkpoints, laid out as Megatron-LM lays them out: `SAVE/iter_0000100/` per save and
//! `SAVE/latest_checkpointed_iteration.txt` naming the newest. An iteration folder is a model
//! checkpoint any lmforge command loads (`lmforge.json` + `model.safetensors`, the tokenizer
//! beside them) plus what resuming needs: `optimizer.safetensors` (AdamW's `exp_avg.PATH` and
//! `exp_avg_sq.PATH`) and `trainer.json` (iteration, consumed samples, scheduler and optimizer
//! steps, loss scaler, seed, the run's arguments).
//!
//! A save is built in a hidden temporary folder and renamed into place, then the `latest` file
//! is replaced atomically: an interrupted save leaves the previous checkpoint intact and never a
//! half-written one under a real name.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamW, AdamWConfig, Moments};
use crate::scaler::LossScaler;
use crate::{Error, Result};

/// The file naming the newest iteration folder.
pub const LATEST_FILE: &str = "latest_checkpointed_iteration.txt";
/// The trainer state; its presence marks a complete training checkpoint.
pub const STATE_FILE: &str = "trainer.json";
/// AdamW's moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Everything but the tensors that an exact resume needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Layout version of this file.
    pub format: u32,
    /// Iterations completed.
    pub iteration: u64,
    /// Training samples consumed (all ranks), where the data resumes.
    pub consumed_train_samples: u64,
    /// Successful optimizer steps, the learning-rate schedule's position (skipped fp16 steps
    /// do not advance it, as in Megatron).
    pub scheduler_steps: u64,
    /// Iterations skipped on an overflow.
    pub skipped_iterations: u64,
    /// AdamW's `t`.
    pub adam_step: u64,
    /// AdamW's constants.
    pub adamw: AdamWConfig,
    /// The loss scaler, with its counters.
    pub loss_scaler: LossScaler,
    /// The run's seed. Every random draw of iteration `i` is seeded from (seed, i), so the seed
    /// and the iteration are the whole random state.
    pub seed: u64,
    /// The arguments of the run, as the command recorded them.
    pub args: serde_json::Value,
}

/// The folder of iteration `iteration` under `save` (`iter_0000100`).
pub fn iteration_dir(save: &Path, iteration: u64) -> PathBuf {
    save.join(format!("iter_{iteration:07}"))
}

/// The iteration folder `path` designates: itself when it holds `trainer.json`, else the one its
/// `latest_checkpointed_iteration.txt` names.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join(LATEST_FILE);
    if latest.is_file() {
        let text = fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
        let iteration: u64 = text.trim().parse().map_err(|_| Error::Checkpoint {
            path: latest.clone(),
            reason: format!("{:?} is not an iteration number", text.trim()),
        })?;
        let dir = iteration_dir(path, iteration);
        if !dir.join(STATE_FILE).is_file() {
            return Err(Error::Checkpoint {
                path: dir,
                reason: format!("named by {} but holds no {STATE_FILE}", latest.display()),
            });
        }
        return Ok(dir);
    }
    Err(Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!(
            "neither a training checkpoint ({STATE_FILE}) nor a save folder ({LATEST_FILE})"
        ),
    })
}

/// Writes iteration `state.iteration`'s checkpoint under `save`: `write_model` fills the folder
/// with the model's files first, then the optimizer and the state go in, the folder is renamed
/// into place and `latest` updated. Returns the folder.
pub fn save(
    save: &Path,
    state: &TrainerState,
    optimizer: &AdamW,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    fs::create_dir_all(save).map_err(|e| Error::io(save, e))?;
    let dir = iteration_dir(save, state.iteration);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = save.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let result = (|| {
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        write_model(&tmp)?;
        write_optimizer(&tmp.join(OPTIMIZER_FILE), optimizer)?;
        let json = serde_json::to_string_pretty(state).unwrap_or_default();
        lmforge_model::checkpoint::write_atomic(&tmp.join(STATE_FILE), json.as_bytes())?;
        if dir.exists() {
            // Saving the same iteration again (a resumed run that is interrupted at once):
            // the old folder goes only once the new one is complete.
            let old = save.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(&dir, &old).map_err(|e| Error::io(&dir, e))?;
            fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        }
        lmforge_model::checkpoint::write_atomic(
            &save.join(LATEST_FILE),
            state.iteration.to_string().as_bytes(),
        )?;
        Ok(dir.clone())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads `trainer.json` of an iteration folder.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if state.format != 1 {
        return Err(Error::Checkpoint {
            path,
            reason: format!("format {} (this lmforge reads 1)", state.format),
        });
    }
    Ok(state)
}

fn write_optimizer(path: &Path, optimizer: &AdamW) -> Result<()> {
    let mut tensors = Vec::with_capacity(optimizer.moments.len() * 2);
    for (name, Moments { m, v }) in &optimizer.moments {
        let n = m.shape().num_elements();
        tensors.push((
            format!("exp_avg.{name}"),
            vec![n],
            lmforge_model::host_values(m.clone()),
        ));
        tensors.push((
            format!("exp_avg_sq.{name}"),
            vec![n],
            lmforge_model::host_values(v.clone()),
        ));
    }
    Ok(lmforge_model::hf::write_safetensors(path, &tensors)?)
}

/// Reads AdamW's state from an iteration folder onto `device`.
pub fn read_optimizer(dir: &Path, state: &TrainerState, device: &Device) -> Result<AdamW> {
    let path = dir.join(OPTIMIZER_FILE);
    let mut tensors = lmforge_model::hf::Tensors::read(&path)?;
    let mut optimizer = AdamW::new(state.adamw);
    optimizer.step = state.adam_step;
    let names = tensors.names();
    for name in names {
        let Some(param) = name.strip_prefix("exp_avg.") else {
            continue;
        };
        let take = |tensors: &mut lmforge_model::hf::Tensors, key: &str| -> Result<Tensor<1>> {
            let (shape, values) = tensors.remove(key).ok_or_else(|| Error::Checkpoint {
                path: path.clone(),
                reason: format!("tensor `{key}` is missing"),
            })?;
            let n = values.len();
            if shape.iter().product::<usize>() != n {
                return Err(Error::Checkpoint {
                    path: path.clone(),
                    reason: format!("tensor `{key}` has shape {shape:?} for {n} values"),
                });
            }
            Ok(Tensor::from_data(TensorData::new(values, [n]), device))
        };
        let m = take(&mut tensors, &name)?;
        let v = take(&mut tensors, &format!("exp_avg_sq.{param}"))?;
        if m.dims() != v.dims() {
            return Err(Error::Checkpoint {
                path: path.clone(),
                reason: format!("the two moments of `{param}` differ in size"),
            });
        }
        optimizer
            .moments
            .insert(param.to_string(), Moments { m, v });
    }
    Ok(optimizer)
}
