//! Where this process sits in a multi-process run, read from the launcher's environment, as
//! Megatron-LM reads it from torchrun or Slurm: its rank, the world size and its rank on this
//! node (which picks its device). The launchers are `mpirun` and `srun`: the collectives are
//! MPI's, and torchrun starts no MPI world.
//!
//! Launchers, first match wins (an `mpirun` started inside a Slurm job sets both, and its own
//! numbering is the one MPI uses):
//! - Open MPI's `mpirun`: `OMPI_COMM_WORLD_RANK`, `_SIZE`, `_LOCAL_RANK`;
//! - a Slurm job step (`srun`, also `srun --mpi=pmix`): `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`
//!   (falling back to `SLURM_NTASKS`), `SLURM_LOCALID`. Only inside a step: a batch script
//!   itself is one process whatever `--ntasks` the job has, and Slurm marks it with
//!   `SLURM_STEP_ID` absent or the batch step's id;
//! - none of these: one process. torchrun's `RANK` and `WORLD_SIZE` with a world past one are
//!   refused, with the `mpirun` and `srun` commands to run instead (each process would
//!   otherwise train alone, as a world of one, and write over the others' checkpoints).

use serde::Serialize;

use crate::{Error, Result};

/// Who started the processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// No launcher: one process.
    Alone,
    /// Open MPI's `mpirun` / `mpiexec`.
    Mpirun,
    /// A Slurm job step (`srun`).
    Slurm,
}

/// This process's place in the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Place {
    /// Rank among all processes, `0..world`.
    pub rank: usize,
    /// Processes in the run.
    pub world: usize,
    /// Rank among the processes on this node: which of the node's devices is this process's.
    pub local_rank: usize,
    /// Where the numbers came from.
    pub launcher: Launcher,
}

impl Place {
    /// One process.
    pub fn alone() -> Place {
        Place {
            rank: 0,
            world: 1,
            local_rank: 0,
            launcher: Launcher::Alone,
        }
    }

    /// Reads the place from this process's environment.
    pub fn from_env() -> Result<Place> {
        Place::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the place from the variables `get` returns (the environment, or a test's table).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Place> {
        let number = |name: &str| -> Result<Option<usize>> {
            match get(name) {
                None => Ok(None),
                Some(text) => text.trim().parse().map(Some).map_err(|_| Error::Config {
                    field: "launcher",
                    reason: format!("the environment variable {name}={text:?} is not a number"),
                }),
            }
        };
        let triple = |launcher, rank: &str, world: &str, local: &str| -> Result<Option<Place>> {
            let (Some(rank), Some(world)) = (number(rank)?, number(world)?) else {
                return Ok(None);
            };
            let local_rank = number(local)?.unwrap_or(0);
            let place = Place {
                rank,
                world,
                local_rank,
                launcher,
            };
            place.check()?;
            Ok(Some(place))
        };
        if let Some(place) = triple(
            Launcher::Mpirun,
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK",
        )? {
            return Ok(place);
        }
        // The batch script of an sbatch job is no step; its SLURM_NTASKS is the job's, not its own.
        let in_step = get("SLURM_STEP_ID").is_some_and(|id| id != "batch" && id != "4294967294");
        if in_step {
            let world = if get("SLURM_STEP_NUM_TASKS").is_some() {
                "SLURM_STEP_NUM_TASKS"
            } else {
                "SLURM_NTASKS"
            };
            if let Some(place) = triple(Launcher::Slurm, "SLURM_PROCID", world, "SLURM_LOCALID")? {
                return Ok(place);
            }
        }
        if let (Some(rank), Some(world @ 2..)) = (number("RANK")?, number("WORLD_SIZE")?) {
            return Err(Error::Config {
                field: "launcher",
                reason: format!(
                    "torchrun's RANK={rank} WORLD_SIZE={world}: lmforge's collectives run over \
                     MPI, which torchrun does not start; launch with `mpirun -n {world} lmforge \
                     …` or, under Slurm, `srun --mpi=pmix -n {world} lmforge …`"
                ),
            });
        }
        Ok(Place::alone())
    }

    fn check(&self) -> Result<()> {
        if self.world == 0 || self.rank >= self.world {
            return Err(Error::Config {
                field: "launcher",
                reason: format!(
                    "{:?} gave rank {} of a world of {}",
                    self.launcher, self.rank, self.world
                ),
            });
        }
        Ok(())
    }

    /// Whether this is rank 0, which writes checkpoints, logs and reports.
    pub fn is_first(&self) -> bool {
        self.rank == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn place(vars: &[(&str, &str)]) -> Result<Place> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Place::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn each_launcher_is_read() {
        assert_eq!(place(&[]).unwrap(), Place::alone());
        let mpirun = place(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            // mpirun inside an allocation: its numbers win.
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!(
            (
                mpirun.rank,
                mpirun.world,
                mpirun.local_rank,
                mpirun.launcher
            ),
            (3, 4, 1, Launcher::Mpirun)
        );
        let srun = place(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ])
        .unwrap();
        assert_eq!(
            (srun.rank, srun.world, srun.local_rank, srun.launcher),
            (5, 8, 1, Launcher::Slurm)
        );
        let err = place(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")]).unwrap_err();
        assert!(err.to_string().contains("`mpirun -n 2 lmforge …`"), "{err}");
        assert!(err.to_string().contains("srun --mpi=pmix -n 2"), "{err}");
        // A world of one is one process, whoever set it.
        let one = place(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap();
        assert_eq!(one, Place::alone());
    }

    #[test]
    fn a_batch_script_is_one_process() {
        let batch = place(&[
            ("SLURM_STEP_ID", "batch"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
        ])
        .unwrap();
        assert_eq!(batch, Place::alone());
        assert_eq!(
            place(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")]).unwrap(),
            Place::alone()
        );
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = place(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(err.to_string().contains("RANK=\"x\""), "{err}");
        let err =
            place(&[("OMPI_COMM_WORLD_RANK", "2"), ("OMPI_COMM_WORLD_SIZE", "2")]).unwrap_err();
        assert!(err.to_string().contains("rank 2 of a world of 2"), "{err}");
    }
}
