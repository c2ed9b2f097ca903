//! The flags every sharded stage shares: how many ranks, the shared work folder, which
//! executor runs the job arrays (a local process pool or Slurm) and Slurm's settings; and
//! the flags a single task takes (`--step`, `--rank`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lmforge_executor::{Executor, Job, Local, Slurm};

/// Running a stage as rank-sharded job arrays.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ShardArgs {
    /// Run sharded over N ranks (job arrays over a shared --work folder); the output is the
    /// same bytes as one process's.
    #[arg(long)]
    pub ranks: Option<usize>,
    /// The shared work folder (default: the output's path with `.work` appended).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Who runs the tasks: `local` (processes on this machine) or `slurm` (sbatch job arrays).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    pub executor: String,
    /// Tasks at once: local processes (default: one per core, up to the ranks), or Slurm's
    /// array throttle `%P`.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Slurm partition.
    #[arg(long)]
    pub slurm_partition: Option<String>,
    /// Slurm time limit per task (`HH:MM:SS`, `D-HH:MM:SS`).
    #[arg(long)]
    pub slurm_time: Option<String>,
    /// Slurm CPUs per task.
    #[arg(long)]
    pub slurm_cpus_per_task: Option<usize>,
    /// Slurm memory per task (`16G`).
    #[arg(long)]
    pub slurm_mem: Option<String>,
    /// Another #SBATCH flag, verbatim (`--account=lm`); repeat.
    #[arg(long)]
    pub slurm_extra: Vec<String>,
    /// Run one task only: this step of the plan in --work.
    #[arg(long)]
    pub step: Option<String>,
    /// The task's index (default: SLURM_ARRAY_TASK_ID, or the local executor's LMFORGE_TASK).
    #[arg(long)]
    pub rank: Option<usize>,
}

impl ShardArgs {
    /// The work folder for `output`.
    pub fn work_for(&self, output: &Path) -> PathBuf {
        self.work.clone().unwrap_or_else(|| {
            let mut name = output.as_os_str().to_owned();
            name.push(".work");
            PathBuf::from(name)
        })
    }

    /// Threads each local task should use so that the tasks share the cores.
    pub fn threads_per_task(&self, ranks: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.executor.as_str() {
            "slurm" => self.slurm_cpus_per_task.unwrap_or(0),
            _ => (cores / self.local_parallel(ranks)).max(1),
        }
    }

    fn local_parallel(&self, ranks: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.parallel.unwrap_or(cores.min(ranks)).max(1)
    }

    /// Runs `jobs` with the chosen executor, logs under `WORK/logs`.
    pub fn run(&self, jobs: &[Job], work: &Path, ranks: usize) -> Result<()> {
        let logs = work.join("logs");
        let executor: Box<dyn Executor> = match self.executor.as_str() {
            "slurm" => Box::new(Slurm {
                partition: self.slurm_partition.clone(),
                time: self.slurm_time.clone(),
                cpus_per_task: self.slurm_cpus_per_task,
                mem: self.slurm_mem.clone(),
                max_parallel: self.parallel,
                extra: self.slurm_extra.clone(),
                poll: Duration::from_millis(500),
            }),
            "local" => Box::new(Local {
                parallel: self.local_parallel(ranks),
            }),
            other => bail!("--executor {other}: not local or slurm"),
        };
        for job in jobs {
            if job.pending.is_empty() {
                eprintln!("{}: all {} tasks finished earlier", job.name, job.tasks);
            } else {
                eprintln!(
                    "{}: {} of {} tasks to run",
                    job.name,
                    job.pending.len(),
                    job.tasks
                );
            }
        }
        executor
            .run(jobs, &logs)
            .with_context(|| format!("the job arrays (logs in {})", logs.display()))
    }
}

/// This binary, for the tasks to run.
pub fn program() -> Result<PathBuf> {
    std::env::current_exe().context("finding the lmforge binary for the tasks")
}

/// An absolute path (Slurm tasks may start elsewhere).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

/// (rank, ranks) of a sharded command.
pub type RankOf = (usize, usize);

/// A rank's share of whole input files (`--rank`/`--ranks`; the rank may come from Slurm):
/// contiguous runs of about equal bytes, in input order, so that the ranks' outputs in rank
/// order are the whole input's. Without `--ranks`, every file.
pub fn rank_files(
    files: Vec<PathBuf>,
    rank: Option<usize>,
    ranks: Option<usize>,
) -> Result<(Vec<PathBuf>, Option<RankOf>)> {
    let Some(ranks) = ranks else {
        if rank.is_some() {
            bail!("--rank needs --ranks");
        }
        return Ok((files, None));
    };
    if ranks == 0 {
        bail!("--ranks must be at least 1");
    }
    let rank = lmforge_executor::rank::from_env(rank)?;
    if rank >= ranks {
        bail!("--rank {rank} is not below --ranks {ranks}");
    }
    let parts = lmforge_corpus::split(&files, u64::MAX)?;
    let range = lmforge_corpus::assign(&parts, ranks)[rank].clone();
    Ok((
        parts[range].iter().map(|p| p.file.clone()).collect(),
        Some((rank, ranks)),
    ))
}
