//! Training checkpoints, laid out as Megatron-LM lays them out: `SAVE/iter_0000100/` per save and
//! `SAVE/latest_checkpointed_iteration.txt` naming the newest. An iteration folder is a model
//! checkpoint any lmforge command loads (`lmforge.json` + `model.safetensors`, the tokenizer
//! beside them) plus what resuming needs: `optimizer.safetensors` (AdamW's `exp_avg.PATH` and
//! `exp_avg_sq.PATH`) and `trainer.json` (iteration, consumed samples, scheduler and optimizer
//! steps, loss scaler, seed, the run's arguments). A run with a sharded optimizer
//! (`--use-distributed-optimizer`) writes one `optimizer-RRRRR-of-WWWWW.safetensors` per rank
//! instead, each holding the pieces of the moments its rank owns ([`crate::zero::Layout`]); any
//! world size, sharded or not, reads either form.
//!
//! A save is built in a hidden temporary folder and renamed into place, then the `latest` file
//! is replaced atomically: an interrupted save leaves the previous checkpoint intact and never a
//! half-written one under a real name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use lmforge_executor::task::fault_point;
use serde::{Deserialize, Serialize};

use crate::collective::Collective;
use crate::optim::{AdamW, AdamWConfig, Moments};
use crate::scaler::LossScaler;
use crate::zero::{Layout, Shard};
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
    /// The training losses since the last logged line: a resumed run's next line averages
    /// the iterations the uninterrupted run's did. Older checkpoints have none.
    #[serde(default)]
    pub log_window: LogWindow,
}

/// The losses of the iterations since the last `metrics.jsonl` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogWindow {
    /// Their sum (serde_json writes an f64 so that it reads back the same).
    pub loss_sum: f64,
    /// Iterations in the sum.
    pub counted: u64,
    /// Iterations skipped on an overflow.
    pub skipped: u64,
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

/// Writes iteration `state.iteration`'s checkpoint under `save`, every rank of `collective`
/// taking part: rank 0 fills the temporary folder with the model's files (`write_model`), each
/// rank then adds its optimizer shard when the optimizer is sharded (else rank 0 writes the
/// whole of it), and rank 0 writes the state, renames the folder into place and updates
/// `latest`. `tag` names the temporary folder and must be the same on every rank (rank 0's pid).
/// A failure on any rank fails the save on every rank, and nothing but the temporary folder is
/// touched until every file is complete. Returns the folder.
pub fn save(
    save: &Path,
    state: &TrainerState,
    optimizer: &AdamW,
    collective: &dyn Collective,
    tag: u64,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let first = collective.rank() == 0;
    let dir = iteration_dir(save, state.iteration);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = save.join(format!(".{name}.tmp-{tag}"));
    let what = format!("the checkpoint of iteration {}", state.iteration);
    let agree = |result: Result<()>, part: &str| -> Result<()> {
        let failed = collective.any(result.is_err(), &what)?;
        match result {
            Err(e) => Err(e),
            Ok(()) if failed => Err(Error::Distributed {
                reason: format!("{what}: another rank failed to write {part}"),
            }),
            Ok(()) => Ok(()),
        }
    };
    let result = (|| {
        let model = if first {
            (|| {
                fs::create_dir_all(save).map_err(|e| Error::io(save, e))?;
                remove_leftovers(save, &name)?;
                fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
                write_model(&tmp)
            })()
        } else {
            Ok(())
        };
        agree(model, "the model")?;
        let shards = match &optimizer.shard {
            Some(shard) => {
                if tmp.is_dir() {
                    write_optimizer_shard(&tmp, optimizer, shard)
                } else {
                    Err(Error::Checkpoint {
                        path: tmp.clone(),
                        reason: format!(
                            "rank {} cannot see the folder rank 0 made: --save must be on a \
                             filesystem every node shares",
                            collective.rank()
                        ),
                    })
                }
            }
            None if first => write_optimizer(&tmp.join(OPTIMIZER_FILE), optimizer),
            None => Ok(()),
        };
        agree(shards, "its optimizer shard")?;
        let finish = if first {
            (|| -> Result<()> {
                // `cargo xtask faults` aborts here with the weights written (cut in half for
                // `mid-write`), or with every file written (`before-rename`).
                fault_point(&dir, "mid-write", &tmp);
                let json = serde_json::to_string_pretty(state).unwrap_or_default();
                lmforge_model::checkpoint::write_atomic(&tmp.join(STATE_FILE), json.as_bytes())?;
                fault_point(&dir, "before-rename", &tmp);
                if dir.exists() {
                    // Saving the same iteration again (a resumed run that is interrupted at
                    // once): the old folder goes only once the new one is complete.
                    let old = save.join(format!(".{name}.old-{tag}"));
                    fs::rename(&dir, &old).map_err(|e| Error::io(&dir, e))?;
                    fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
                    let _ = fs::remove_dir_all(&old);
                } else {
                    fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
                }
                Ok(lmforge_model::checkpoint::write_atomic(
                    &save.join(LATEST_FILE),
                    state.iteration.to_string().as_bytes(),
                )?)
            })()
        } else {
            Ok(())
        };
        agree(finish, "the trainer state")?;
        Ok(dir.clone())
    })();
    if result.is_err() && first {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Removes what a killed save of the iteration folder `name` left in `save`: its temporary
/// folder (named by that process's pid, so never this one's) and an old folder it was replacing.
/// One process saves into a folder at a time.
fn remove_leftovers(save: &Path, name: &str) -> Result<()> {
    let (tmp, old) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    for entry in fs::read_dir(save)
        .map_err(|e| Error::io(save, e))?
        .flatten()
    {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&tmp) || file.starts_with(&old) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
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

/// The file of rank `rank`'s optimizer shard in a run of `world` sharded ranks.
pub fn shard_file(rank: usize, world: usize) -> String {
    format!("optimizer-{rank:05}-of-{world:05}.safetensors")
}

fn write_optimizer_shard(dir: &Path, optimizer: &AdamW, shard: &Shard) -> Result<()> {
    write_optimizer(
        &dir.join(shard_file(shard.rank, shard.layout.world)),
        optimizer,
    )
}

/// The optimizer files of an iteration folder and the world size they were cut for: the whole
/// state (`optimizer.safetensors`, which is the one shard of a world of 1), or every shard.
fn optimizer_files(dir: &Path) -> Result<(Vec<PathBuf>, usize)> {
    let whole = dir.join(OPTIMIZER_FILE);
    if whole.is_file() {
        return Ok((vec![whole], 1));
    }
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut world = None;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(w) = name
            .strip_prefix("optimizer-")
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|n| n.split_once("-of-"))
            .and_then(|(_, w)| w.parse::<usize>().ok())
        else {
            continue;
        };
        match world {
            Some(seen) if seen != w => {
                return Err(Error::Checkpoint {
                    path: dir.to_path_buf(),
                    reason: format!("optimizer shards of two world sizes ({seen} and {w})"),
                });
            }
            _ => world = Some(w),
        }
    }
    let Some(world) = world.filter(|&w| w > 0) else {
        return Err(Error::Checkpoint {
            path: whole,
            reason: "missing, and no optimizer shard (optimizer-*-of-*.safetensors) either".into(),
        });
    };
    let files: Vec<PathBuf> = (0..world).map(|r| dir.join(shard_file(r, world))).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::Checkpoint {
            path: missing.clone(),
            reason: format!("missing: the checkpoint's optimizer is sharded over {world} ranks"),
        });
    }
    Ok((files, world))
}

/// Reads AdamW's state from an iteration folder onto `device`, for a model whose trainable
/// parameters have `shapes` ([`crate::zero::trainable_shapes`]): whole when `target` is `None`,
/// else the pieces of rank `rank` of `world` sharded ranks (`Some((world, rank))`). The folder
/// may hold the whole state or shards of any world size: each piece is cut out of the files
/// that hold it, one file in memory at a time.
pub fn read_optimizer(
    dir: &Path,
    state: &TrainerState,
    device: &Device,
    shapes: &BTreeMap<String, Vec<usize>>,
    target: Option<(usize, usize)>,
) -> Result<AdamW> {
    let (files, saved_world) = optimizer_files(dir)?;
    let (world, rank) = target.unwrap_or((1, 0));
    let layout = Layout::new(shapes, world);
    let wanted = layout.pieces(rank);
    // Per wanted piece: both moments and how many values were found.
    let mut found: Vec<(Vec<f32>, Vec<f32>, usize)> = wanted
        .iter()
        .map(|p| (vec![0.0; p.values.len()], vec![0.0; p.values.len()], 0))
        .collect();
    let wanted_at: BTreeMap<&str, usize> = wanted
        .iter()
        .enumerate()
        .map(|(i, w)| (w.path.as_str(), i))
        .collect();
    let saved = Layout::new(shapes, saved_world);
    for (saved_rank, path) in files.iter().enumerate() {
        let mut tensors = lmforge_model::hf::Tensors::read(path)?;
        let mut take = |key: &str, len: usize| -> Result<Option<Vec<f32>>> {
            let Some((shape, values)) = tensors.remove(key) else {
                return Ok(None);
            };
            if shape.iter().product::<usize>() != len || values.len() != len {
                return Err(Error::Checkpoint {
                    path: path.clone(),
                    reason: format!(
                        "tensor `{key}` has shape {shape:?}; this shard's piece of the \
                         parameter has {len} values"
                    ),
                });
            }
            Ok(Some(values))
        };
        for piece in saved.pieces(saved_rank) {
            let len = piece.values.len();
            let m = take(&format!("exp_avg.{}", piece.path), len)?;
            let v = take(&format!("exp_avg_sq.{}", piece.path), len)?;
            let (m, v) = match (m, v) {
                (Some(m), Some(v)) => (m, v),
                // A parameter that never had a gradient has no moments.
                (None, None) => continue,
                _ => {
                    return Err(Error::Checkpoint {
                        path: path.clone(),
                        reason: format!("`{}` has one moment but not the other", piece.path),
                    });
                }
            };
            // A layout gives each parameter at most one piece per rank.
            if let Some(&i) = wanted_at.get(piece.path.as_str()) {
                let (w, slot) = (&wanted[i], &mut found[i]);
                let start = w.values.start.max(piece.values.start);
                let end = w.values.end.min(piece.values.end);
                if start >= end {
                    continue;
                }
                let from = start - piece.values.start;
                let to = start - w.values.start;
                slot.0[to..to + end - start].copy_from_slice(&m[from..from + end - start]);
                slot.1[to..to + end - start].copy_from_slice(&v[from..from + end - start]);
                slot.2 += end - start;
            }
        }
        if let Some(extra) = tensors.names().into_iter().next() {
            return Err(Error::Checkpoint {
                path: path.clone(),
                reason: format!(
                    "tensor `{extra}` belongs to no parameter of the model in this shard"
                ),
            });
        }
    }
    let mut optimizer = AdamW::new(state.adamw);
    optimizer.step = state.adam_step;
    for (piece, (m, v, count)) in wanted.iter().zip(found) {
        if count == 0 {
            continue;
        }
        if count != m.len() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "the optimizer files hold {count} of the {} values of `{}` rank {rank} needs",
                    m.len(),
                    piece.path
                ),
            });
        }
        let n = m.len();
        optimizer.moments.insert(
            piece.path.clone(),
            Moments {
                m: Tensor::from_data(TensorData::new(m, [n]), device),
                v: Tensor::from_data(TensorData::new(v, [n]), device),
            },
        );
    }
    if target.is_some() {
        optimizer.shard = Some(Shard { layout, rank });
    }
    Ok(optimizer)
}
