//! Which task this process is: from flags, or from the launcher's environment.

use crate::{Error, Result};

/// This process's task index: `--rank` when given, else Slurm's `SLURM_ARRAY_TASK_ID`, else
/// the local executor's `LMFORGE_TASK`. The task count is the plan's, never the launcher's: a
/// re-run submits only the missing indices, so Slurm's `SLURM_ARRAY_TASK_COUNT` is smaller.
pub fn from_env(rank: Option<usize>) -> Result<usize> {
    if let Some(rank) = rank {
        return Ok(rank);
    }
    for name in ["SLURM_ARRAY_TASK_ID", "LMFORGE_TASK"] {
        if let Ok(v) = std::env::var(name) {
            return v
                .trim()
                .parse()
                .map_err(|_| Error::Rank(format!("{name}={v:?} is not a task index")));
        }
    }
    Err(Error::Rank(
        "no task index: pass --rank, or run under a Slurm job array (SLURM_ARRAY_TASK_ID)".into(),
    ))
}
