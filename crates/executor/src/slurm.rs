//! The Slurm executor: each job an sbatch job array (`--array=LIST%P`), chained with
//! `--dependency=afterok`, one log per task. It needs no accounting database: every task's
//! script writes its exit status beside its log, which is how failures are found once the
//! jobs have left the queue.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Error, Executor, Failure, Job, Result, io};

/// Submits job arrays with `sbatch` and waits for them with `squeue`.
#[derive(Clone, Debug, Default)]
pub struct Slurm {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (Slurm's `D-HH:MM:SS` forms).
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<usize>,
    /// `--mem` (`16G`, …).
    pub mem: Option<String>,
    /// Tasks of one array running at once (`%P`; `None`: as many as Slurm allows).
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` flags, verbatim (`--account=x`, `--qos=y`).
    pub extra: Vec<String>,
    /// How often `squeue` is asked.
    pub poll: Duration,
}

/// Single quotes for a shell word.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Task indices as Slurm's array list: `0-3,7,9-10`.
pub fn array_list(tasks: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            tasks[i].to_string()
        } else {
            format!("{}-{}", tasks[i], tasks[j])
        });
        i = j + 1;
    }
    out.join(",")
}

impl Slurm {
    /// The batch script of `job` (its pending tasks), logs under `logs`.
    pub fn script(&self, job: &Job, logs: &Path) -> Result<String> {
        let dir = absolute(&logs.join(&job.name))?;
        let mut s = String::from("#!/bin/bash\n");
        let mut flag = |f: String| {
            s.push_str("#SBATCH ");
            s.push_str(&f);
            s.push('\n');
        };
        flag(format!("--job-name=lmforge-{}", job.name));
        let mut array = array_list(&job.pending);
        if let Some(p) = self.max_parallel {
            array.push_str(&format!("%{p}"));
        }
        flag(format!("--array={array}"));
        flag(format!("--output={}/task-%5a.log", dir.display()));
        flag("--open-mode=truncate".into());
        flag("--kill-on-invalid-dep=yes".into());
        if let Some(p) = &self.partition {
            flag(format!("--partition={p}"));
        }
        if let Some(t) = &self.time {
            flag(format!("--time={t}"));
        }
        if let Some(c) = self.cpus_per_task {
            flag(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            flag(format!("--mem={m}"));
        }
        for e in &self.extra {
            flag(e.clone());
        }
        let mut command = vec![quote(&job.program.display().to_string())];
        if job.args.iter().any(String::is_empty) {
            return Err(Error::Rank(format!(
                "job `{}`: an empty argument",
                job.name
            )));
        }
        for arg in &job.args {
            // `{task}` becomes the array index, outside the quotes.
            let pieces: Vec<String> = arg
                .split("{task}")
                .map(|p| {
                    if p.is_empty() {
                        String::new()
                    } else {
                        quote(p)
                    }
                })
                .collect();
            command.push(pieces.join("\"$SLURM_ARRAY_TASK_ID\""));
        }
        let exit = format!(
            "{}/task-$(printf %05d \"$SLURM_ARRAY_TASK_ID\").exit",
            dir.display()
        );
        s.push_str(&format!(
            "export LMFORGE_TASK=\"$SLURM_ARRAY_TASK_ID\" LMFORGE_TASKS={}\n\
             rm -f \"{exit}\"\n\
             {}\n\
             status=$?\n\
             echo \"$status\" > \"{exit}\"\n\
             exit \"$status\"\n",
            job.tasks,
            command.join(" ")
        ));
        Ok(s)
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(path).map_err(io(path))?;
    std::fs::canonicalize(path).map_err(io(path))
}

fn run_tool(command: &mut Command) -> Result<String> {
    let name = format!("{:?}", command.get_program());
    let out = command.output().map_err(|source| Error::Io {
        file: PathBuf::from(&name),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Rank(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Executor for Slurm {
    fn run(&self, jobs: &[Job], logs: &Path) -> Result<()> {
        let mut submitted: Vec<(&Job, String)> = Vec::new();
        let mut previous: Option<String> = None;
        for job in jobs.iter().filter(|j| !j.pending.is_empty()) {
            let dir = absolute(&logs.join(&job.name))?;
            for &task in &job.pending {
                let _ = std::fs::remove_file(dir.join(format!("task-{task:05}.exit")));
            }
            let path = dir.join("job.sbatch");
            std::fs::write(&path, self.script(job, logs)?).map_err(io(&path))?;
            let mut sbatch = Command::new("sbatch");
            sbatch.arg("--parsable");
            if let Some(id) = &previous {
                sbatch.arg(format!("--dependency=afterok:{id}"));
            }
            let out = run_tool(sbatch.arg(&path))?;
            // `--parsable` prints `id` or `id;cluster`.
            let id = out.split(';').next().unwrap_or_default().to_string();
            eprintln!(
                "submitted job `{}` as Slurm job {id} (tasks {}; script {})",
                job.name,
                array_list(&job.pending),
                path.display()
            );
            previous = Some(id.clone());
            submitted.push((job, id));
        }
        if submitted.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = submitted.iter().map(|(_, id)| id.as_str()).collect();
        loop {
            let out = Command::new("squeue")
                .args(["-h", "-o", "%i", "-j", &ids.join(",")])
                .output()
                .map_err(|source| Error::Io {
                    file: "squeue".into(),
                    source,
                })?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Jobs gone from the controller's memory are "invalid" ids: finished.
            let gone = !out.status.success() && stderr.contains("Invalid job id");
            if !out.status.success() && !gone {
                return Err(Error::Rank(format!("squeue failed: {}", stderr.trim())));
            }
            if gone || String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                break;
            }
            std::thread::sleep(self.poll.max(Duration::from_millis(100)));
        }
        for (job, _) in &submitted {
            let dir = absolute(&logs.join(&job.name))?;
            let mut failed = Vec::new();
            for &task in &job.pending {
                let exit = dir.join(format!("task-{task:05}.exit"));
                let why = match std::fs::read_to_string(&exit) {
                    Ok(code) if code.trim() == "0" => continue,
                    Ok(code) => format!("exit status {}", code.trim()),
                    Err(_) => "did not finish (killed, timed out, or cancelled because \
                               an earlier job failed)"
                        .into(),
                };
                failed.push(Failure {
                    task,
                    why,
                    log: job.log(logs, task),
                });
            }
            if !failed.is_empty() {
                return Err(Error::Failed {
                    job: job.name.clone(),
                    failed,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists_compress_runs() {
        assert_eq!(array_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_list(&[1, 3, 4, 5, 9]), "1,3-5,9");
        assert_eq!(array_list(&[]), "");
    }

    #[test]
    fn scripts_carry_the_settings_and_the_task_index() {
        let logs = std::env::temp_dir().join(format!("lmforge-slurm-unit-{}", std::process::id()));
        let job = Job {
            name: "clean-filter".into(),
            program: "/opt/lm forge/lmforge".into(),
            args: vec![
                "--rank".into(),
                "{task}".into(),
                "--work".into(),
                "w d".into(),
            ],
            pending: vec![0, 2, 3],
            tasks: 4,
        };
        let slurm = Slurm {
            partition: Some("cpu".into()),
            time: Some("02:00:00".into()),
            cpus_per_task: Some(40),
            mem: Some("64G".into()),
            max_parallel: Some(2),
            extra: vec!["--account=lm".into()],
            poll: Duration::from_secs(1),
        };
        let s = slurm.script(&job, &logs).unwrap();
        for needle in [
            "#SBATCH --array=0,2-3%2\n",
            "#SBATCH --partition=cpu\n",
            "#SBATCH --time=02:00:00\n",
            "#SBATCH --cpus-per-task=40\n",
            "#SBATCH --mem=64G\n",
            "#SBATCH --account=lm\n",
            "/task-%5a.log\n",
            "'/opt/lm forge/lmforge' --rank \"$SLURM_ARRAY_TASK_ID\" --work 'w d'\n",
        ] {
            assert!(s.contains(needle), "{needle:?} not in\n{s}");
        }
        std::fs::remove_dir_all(&logs).unwrap();
    }
}
