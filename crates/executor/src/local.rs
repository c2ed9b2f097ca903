//! The local executor: a job's tasks as child processes, `parallel` at a time.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{Error, Executor, Failure, Job, Result, io};

/// A pool of processes on this machine (one machine with many cores uses them all this way).
#[derive(Clone, Copy, Debug)]
pub struct Local {
    /// Tasks running at once (at least one).
    pub parallel: usize,
}

impl Executor for Local {
    fn run(&self, jobs: &[Job], logs: &Path) -> Result<()> {
        for job in jobs {
            let dir = logs.join(&job.name);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let mut queue: VecDeque<usize> = job.pending.iter().copied().collect();
            let mut running: Vec<(usize, Child)> = Vec::new();
            let mut failed = Vec::new();
            while !queue.is_empty() || !running.is_empty() {
                while running.len() < self.parallel.max(1)
                    && let Some(task) = queue.pop_front()
                {
                    let log = job.log(logs, task);
                    let out = File::create(&log).map_err(io(&log))?;
                    let err = out.try_clone().map_err(io(&log))?;
                    let child = Command::new(&job.program)
                        .args(job.args_of(task))
                        .env("LMFORGE_TASK", task.to_string())
                        .env("LMFORGE_TASKS", job.tasks.to_string())
                        .stdin(Stdio::null())
                        .stdout(out)
                        .stderr(err)
                        .spawn()
                        .map_err(io(&job.program))?;
                    running.push((task, child));
                }
                // Poll rather than block on one child: tasks finish in any order.
                let mut still = Vec::with_capacity(running.len());
                for (task, mut child) in running {
                    match child.try_wait().map_err(io(&job.program))? {
                        None => still.push((task, child)),
                        Some(status) if status.success() => {}
                        Some(status) => failed.push(Failure {
                            task,
                            why: status.to_string(),
                            log: job.log(logs, task),
                        }),
                    }
                }
                running = still;
                // 2 ms: a short step's tasks take tens of milliseconds, and six chained
                // arrays each waited half a 20 ms poll on average at their end.
                if !running.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            if !failed.is_empty() {
                failed.sort_by_key(|f| f.task);
                return Err(Error::Failed {
                    job: job.name.clone(),
                    failed,
                });
            }
        }
        Ok(())
    }
}
