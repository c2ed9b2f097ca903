//! Job arrays for lmforge's data stages, the way datatrove and NeMo Curator run theirs: a
//! stage is a chain of [`Job`]s, each `tasks` copies of one `lmforge` command that differ
//! only in their task index, run one job after another by an [`Executor`] — [`Local`] (a
//! pool of processes on this machine) or Slurm (job arrays chained with `afterok`).
//!
//! A task's outputs go through [`task::Pending`]: written into a hidden folder, a
//! `done.json` marker last, then renamed into place, so a killed task leaves nothing that
//! looks finished and a re-run redoes exactly the tasks without a marker. [`input::Input`]
//! is an input file as a plan saw it (size, modification time, a hash of both ends): plans
//! keep them, and a re-run or a later task refuses an input that changed, naming it.
//! [`plan`] is where every stage keeps its plan (`WORK/plan.json`) and its identity.
//!
//! ```
//! use lmforge_executor::{Executor, Job, Local};
//!
//! let dir = std::env::temp_dir().join(format!("lmforge-executor-doc-{}", std::process::id()));
//! let job = Job {
//!     name: "hello".into(),
//!     program: "sh".into(),
//!     args: vec!["-c".into(), "echo task {task} of 3".into()],
//!     pending: vec![0, 1, 2],
//!     tasks: 3,
//! };
//! Local { parallel: 2 }.run(&[job], &dir)?;
//! let log = std::fs::read_to_string(dir.join("hello/task-00001.log"))?;
//! assert_eq!(log, "task 1 of 3\n");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod input;
mod local;
pub mod plan;
pub mod rank;
pub mod slurm;
pub mod task;

use std::path::{Path, PathBuf};

pub use local::Local;
pub use slurm::Slurm;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A task's output that is not what a finished task writes.
    #[error("{file}: {reason}")]
    Marker {
        /// The marker.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// Tasks of a job failed: each with its exit and its log.
    #[error("job `{job}`: {} of its tasks failed: {}", failed.len(), failed.iter().map(|f| format!("task {} ({}; log {})", f.task, f.why, f.log.display())).collect::<Vec<_>>().join(", "))]
    Failed {
        /// The job.
        job: String,
        /// The tasks that failed.
        failed: Vec<Failure>,
    },
    /// A rank or task count that does not fit.
    #[error("{0}")]
    Rank(String),
}

/// A task that did not finish.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Its index.
    pub task: usize,
    /// How it ended.
    pub why: String,
    /// Its log file.
    pub log: PathBuf,
}

/// `map_err` for an I/O failure on `file`.
pub(crate) fn io(file: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        file: file.to_path_buf(),
        source,
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// One job array: `tasks` copies of `program args…`, `{task}` in an argument replaced by
/// the task index (Slurm: `$SLURM_ARRAY_TASK_ID`).
#[derive(Clone, Debug)]
pub struct Job {
    /// Its name (logs go to `LOGS/NAME/task-NNNNN.log`).
    pub name: String,
    /// The program, usually the `lmforge` binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The tasks to run: those without a completion marker (a re-run runs only these).
    pub pending: Vec<usize>,
    /// Tasks in the array.
    pub tasks: usize,
}

impl Job {
    /// The arguments of task `task`.
    pub fn args_of(&self, task: usize) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.replace("{task}", &task.to_string()))
            .collect()
    }

    /// Where task `task` writes its log under `logs`.
    pub fn log(&self, logs: &Path, task: usize) -> PathBuf {
        logs.join(&self.name).join(format!("task-{task:05}.log"))
    }
}

/// Runs jobs in order, each once the one before it has succeeded in every task.
pub trait Executor {
    /// Runs `jobs` (their pending tasks), logs under `logs`; the first job with a failed
    /// task ends the run with [`Error::Failed`].
    fn run(&self, jobs: &[Job], logs: &Path) -> Result<()>;
}
