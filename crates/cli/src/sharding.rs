//! The flags every sharded stage shares: how many ranks, the shared work folder, which
//! executor runs the job arrays (a local process pool or Slurm) and Slurm's settings; and
//! [`FilePlan`], the plan of the stages whose ranks each take whole files (tokenizer
//! counting, conversion).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lmforge_executor::input::{self, Input};
use lmforge_executor::task::{Pending, marker};
use lmforge_executor::{Executor, Job, Local, Slurm};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    Ok((share(&files, rank, ranks)?, Some((rank, ranks))))
}

/// Rank `rank` of `ranks`'s whole files: a contiguous run of about `1/ranks` of the bytes.
fn share(files: &[PathBuf], rank: usize, ranks: usize) -> Result<Vec<PathBuf>> {
    let parts = lmforge_corpus::split(files, u64::MAX)?;
    let range = lmforge_corpus::assign(&parts, ranks)[rank].clone();
    Ok(parts[range].iter().map(|p| p.file.clone()).collect())
}

/// A small file (a tokenizer) for a plan's parameters: its absolute path and content hash, so
/// that a tokenizer retrained between a run and its re-run is a different plan.
pub fn fingerprint_file(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(serde_json::json!({ "file": path, "xxh3": lmforge_executor::plan::bytes_id(&bytes) }))
}

/// The plan of a stage whose ranks each take a contiguous share of whole input files:
/// written once to `WORK/plan.json`; every task checks it is the plan it was started for,
/// and commits `WORK/STAGE/task-NNNNN/` with a marker naming it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilePlan {
    /// The stage (`bpe-count`, `convert`): the task folders' parent.
    pub stage: String,
    /// Ranks sharing the input.
    pub ranks: usize,
    /// What the tasks' output depends on besides their files.
    pub params: Value,
    /// Every input file as it was at planning time, in input order.
    pub inputs: Vec<Input>,
}

/// What a finished task's folder says about itself (the plan's id covers its rank count).
#[derive(Serialize, Deserialize)]
struct FileMarker {
    plan: String,
    rank: usize,
}

/// One running task of a [`FilePlan`]: its files, and the hidden folder it writes into
/// until [`FileTask::commit`].
pub struct FileTask {
    plan: FilePlan,
    pending: Pending,
    rank: usize,
}

impl FileTask {
    /// This rank's files.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        self.plan.files_of(self.rank)
    }

    /// Where the task writes.
    pub fn dir(&self) -> &Path {
        self.pending.dir()
    }

    /// (rank, ranks), for reports.
    pub fn rank_of(&self) -> RankOf {
        (self.rank, self.plan.ranks)
    }

    /// Commits the folder with its marker.
    pub fn commit(self) -> Result<()> {
        self.plan.commit(self.pending, self.rank)
    }
}

impl FilePlan {
    /// The plan of `stage` over `files` (made absolute: Slurm tasks may start elsewhere).
    pub fn new(stage: &str, ranks: usize, params: Value, files: &[PathBuf]) -> Result<FilePlan> {
        if ranks == 0 {
            bail!("--ranks must be at least 1");
        }
        let inputs = files
            .iter()
            .map(|file| {
                let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
                Ok(Input::stat(&file)?)
            })
            .collect::<Result<_>>()?;
        Ok(FilePlan {
            stage: stage.into(),
            ranks,
            params,
            inputs,
        })
    }

    /// Writes the plan, or checks that `work` already holds this plan (a re-run): a work
    /// folder of another plan is refused, naming what differs.
    pub fn write(&self, work: &Path) -> Result<()> {
        Ok(lmforge_executor::plan::write(
            work,
            self,
            FilePlan::differences,
        )?)
    }

    /// The plan in `work`.
    pub fn read(work: &Path) -> Result<FilePlan> {
        Ok(lmforge_executor::plan::read(
            work,
            "a plan of whole input files",
        )?)
    }

    fn differences(&self, other: &FilePlan) -> Option<String> {
        let mut out = Vec::new();
        if self.stage != other.stage {
            out.push(format!(
                "stage `{}` there, `{}` here",
                self.stage, other.stage
            ));
        }
        if self.ranks != other.ranks {
            out.push(format!("{} ranks there, {} here", self.ranks, other.ranks));
        }
        if self.params != other.params {
            out.push("different parameters".into());
        }
        if let Some(why) = input::differences(&self.inputs, &other.inputs) {
            out.push(why);
        }
        (!out.is_empty()).then(|| out.join(", "))
    }

    /// The plan's identity in markers.
    fn id(&self) -> String {
        lmforge_executor::plan::id(self)
    }

    /// `WORK/STAGE/task-NNNNN`.
    pub fn task_dir(&self, work: &Path, rank: usize) -> PathBuf {
        work.join(&self.stage).join(format!("task-{rank:05}"))
    }

    /// The ranks that get a task: at most one per input file, since files are not split,
    /// so that ranks beyond the files start no process.
    pub fn working(&self) -> usize {
        self.ranks.min(self.inputs.len()).max(1)
    }

    /// The ranks without a completion marker of this plan; a marker of another plan is an
    /// error naming its folder.
    pub fn pending(&self, work: &Path) -> Result<Vec<usize>> {
        let id = self.id();
        let mut pending = Vec::new();
        for rank in 0..self.working() {
            let dir = self.task_dir(work, rank);
            match marker::<FileMarker>(&dir)? {
                None => pending.push(rank),
                Some(m) if m.plan == id && m.rank == rank => {}
                Some(_) => bail!(
                    "{}: a finished task of another plan (not {})",
                    dir.display(),
                    lmforge_executor::plan::path(work).display()
                ),
            }
        }
        Ok(pending)
    }

    /// The finished task folders in rank order, checking that every rank finished.
    pub fn finished(&self, work: &Path) -> Result<Vec<PathBuf>> {
        let pending = self.pending(work)?;
        if !pending.is_empty() {
            bail!(
                "{}: ranks {pending:?} of {} have not finished",
                work.display(),
                self.working()
            );
        }
        Ok((0..self.working())
            .map(|r| self.task_dir(work, r))
            .collect())
    }

    /// Rank `rank`'s files: contiguous runs of whole files of about equal bytes.
    pub fn files_of(&self, rank: usize) -> Result<Vec<PathBuf>> {
        if rank >= self.working() {
            bail!(
                "--rank {rank} is not below the plan's {} ranks with files",
                self.working()
            );
        }
        let files: Vec<PathBuf> = self.inputs.iter().map(|i| i.file.clone()).collect();
        share(&files, rank, self.working())
    }

    /// Starts task `rank` of the plan in `work`, after checking that `self` (what the task
    /// was started with) is that plan and that none of its files changed since it was made.
    pub fn begin(&self, work: &Path, rank: usize) -> Result<Pending> {
        let there = Self::read(work)?;
        if let Some(why) = there.differences(self) {
            bail!(
                "task {rank}: {} is another plan ({why})",
                lmforge_executor::plan::path(work).display()
            );
        }
        let mine = self.files_of(rank)?;
        for input in self.inputs.iter().filter(|i| mine.contains(&i.file)) {
            if let Some(why) = input.changed()? {
                bail!("task {rank}: {why}");
            }
        }
        Ok(Pending::begin(&self.task_dir(work, rank))?)
    }

    /// Commits task `rank`'s folder with its marker.
    pub fn commit(&self, pending: Pending, rank: usize) -> Result<()> {
        let marker = FileMarker {
            plan: self.id(),
            rank,
        };
        Ok(pending.commit(&marker)?)
    }

    /// Task `rank` of this plan in `work`, begun (see [`FilePlan::begin`]).
    pub fn task(self, work: &Path, rank: usize) -> Result<FileTask> {
        let pending = self.begin(work, rank)?;
        Ok(FileTask {
            plan: self,
            pending,
            rank,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_in(dir: &Path, ranks: usize) -> (FilePlan, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let mut files = Vec::new();
        for (i, size) in [10usize, 30, 20].iter().enumerate() {
            let file = dir.join(format!("in-{i}.txt"));
            std::fs::write(&file, "x".repeat(*size)).unwrap();
            files.push(file);
        }
        let plan = FilePlan::new("count", ranks, serde_json::json!({"k": 1}), &files).unwrap();
        (plan, dir.join("work"))
    }

    #[test]
    fn a_rerun_keeps_finished_ranks_and_another_plan_is_refused() {
        let dir = std::env::temp_dir().join(format!("lmforge-fileplan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (plan, work) = plan_in(&dir, 2);
        plan.write(&work).unwrap();
        plan.write(&work).unwrap();
        assert_eq!(plan.pending(&work).unwrap(), vec![0, 1]);
        let pending = plan.begin(&work, 1).unwrap();
        std::fs::write(pending.dir().join("out"), b"1").unwrap();
        plan.commit(pending, 1).unwrap();
        assert_eq!(plan.pending(&work).unwrap(), vec![0]);
        assert!(plan.finished(&work).is_err());
        // A killed task leaves nothing that counts as finished.
        drop(plan.begin(&work, 0).unwrap());
        assert_eq!(plan.pending(&work).unwrap(), vec![0]);

        let mut other = plan.clone();
        other.ranks = 3;
        let error = format!("{:#}", other.write(&work).unwrap_err());
        assert!(error.contains("2 ranks there, 3 here"), "{error}");
        let mut other = plan.clone();
        other.params = serde_json::json!({"k": 2});
        let error = format!("{:#}", other.begin(&work, 0).unwrap_err());
        assert!(error.contains("different parameters"), "{error}");

        // An edit that keeps the size is refused too, naming the file; so is a new size.
        let first = &plan.inputs[0].file;
        let mut text = std::fs::read(first).unwrap();
        text[0] ^= 1;
        std::fs::write(first, &text).unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(3);
        std::fs::File::options()
            .write(true)
            .open(first)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let error = format!("{:#}", plan.begin(&work, 0).unwrap_err());
        let name = first.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            error.contains(&name) && error.contains("modified since the run was planned"),
            "{error}"
        );
        // A re-run plans again and finds the file changed.
        let files: Vec<PathBuf> = plan.inputs.iter().map(|i| i.file.clone()).collect();
        let again = FilePlan::new(&plan.stage, plan.ranks, plan.params.clone(), &files).unwrap();
        let error = format!("{:#}", again.write(&work).unwrap_err());
        assert!(
            error.contains(&name) && error.contains("modified since"),
            "{error}"
        );
        std::fs::write(first, "longer than before").unwrap();
        let error = format!("{:#}", plan.begin(&work, 0).unwrap_err());
        assert!(error.contains("when the run was planned"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ranks_share_whole_files_in_order() {
        let dir = std::env::temp_dir().join(format!("lmforge-fileplan-o-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for ranks in 1..6 {
            let (plan, _) = plan_in(&dir, ranks);
            // Ranks beyond the files get no task.
            assert_eq!(plan.working(), ranks.min(plan.inputs.len()));
            assert!(plan.files_of(plan.working()).is_err());
            let all: Vec<PathBuf> = (0..plan.working())
                .flat_map(|r| plan.files_of(r).unwrap())
                .collect();
            let inputs: Vec<PathBuf> = plan.inputs.iter().map(|i| i.file.clone()).collect();
            assert_eq!(all, inputs, "{ranks} ranks");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
