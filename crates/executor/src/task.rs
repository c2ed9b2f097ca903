//! A task's output folder: written hidden, its `done.json` marker last, then renamed into
//! place. A folder with a marker is a finished task; anything else is redone.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, io};

/// The marker's name inside a finished task's folder.
pub const MARKER: &str = "done.json";

/// Test-only fault injection: `LMFORGE_FAULT=DIR:POINT` makes the process committing a folder
/// whose path ends with `DIR` abort at `POINT`, as a `kill -9` there would (nothing is cleaned
/// up): `mid-write` cuts the folder's largest file to half its bytes and stops before the
/// marker; `before-rename` stops with everything written, the marker included, the folder
/// still hidden. The recovery tests name every step's folders with it.
pub const FAULT: &str = "LMFORGE_FAULT";

/// Aborts here if [`FAULT`] names `target` and `point`; `written` is the hidden folder.
pub fn fault_point(target: &Path, point: &str, written: &Path) {
    let Ok(spec) = std::env::var(FAULT) else {
        return;
    };
    let Some((dir, at)) = spec.rsplit_once(':') else {
        return;
    };
    if at != point || !target.ends_with(dir) {
        return;
    }
    if point == "mid-write" {
        let largest = std::fs::read_dir(written)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.len(), e.path())))
            .filter(|(_, path)| path.is_file())
            .max();
        // A new file of the first half, not the old one cut: a file hard-linked from another
        // task's folder (the merge links the ranks' shards) must stay whole, as a real kill
        // would leave it.
        if let Some((bytes, path)) = largest
            && let Ok(data) = std::fs::read(&path)
        {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::write(&path, &data[..(bytes / 2) as usize]);
        }
    }
    eprintln!("{FAULT}: aborting at {point} of {}", target.display());
    std::process::abort();
}

/// Whether process `pid` is alive: a zombie (killed, not yet reaped by its parent or init) is
/// not, though its `/proc` entry stays until it is reaped. Linux's `/proc`; elsewhere nothing
/// is alive.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // After the command name in parentheses (which may hold spaces): the state letter.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z" | "X" | "x"))
    })
}

/// A task's folder being written.
#[derive(Debug)]
pub struct Pending {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Pending {
    /// Starts writing `dir` afresh: an earlier attempt's hidden folders (a killed task's) and
    /// an earlier finished folder are removed when this one commits, not before.
    pub fn begin(dir: &Path) -> Result<Pending> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A killed attempt of this task left its hidden folder: whatever its pid, it is dead
        // or about to be overwritten by this one (one attempt of a task runs at a time).
        let prefix = format!(".{name}.tmp-");
        for entry in std::fs::read_dir(parent).map_err(io(parent))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let temp = parent.join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir(&temp).map_err(io(&temp))?;
        Ok(Pending {
            temp,
            target: dir.to_path_buf(),
            committed: false,
        })
    }

    /// Where the task writes until [`Pending::commit`].
    pub fn dir(&self) -> &Path {
        &self.temp
    }

    /// Writes the marker, then puts the folder in place (replacing an earlier one).
    pub fn commit(mut self, marker: &impl Serialize) -> Result<()> {
        fault_point(&self.target, "mid-write", &self.temp);
        let path = self.temp.join(MARKER);
        let json = serde_json::to_string_pretty(marker).map_err(|e| Error::Marker {
            file: path.clone(),
            reason: e.to_string(),
        })?;
        write_synced(&path, (json + "\n").as_bytes())?;
        fault_point(&self.target, "before-rename", &self.temp);
        if self.target.exists() {
            let old = self.temp.with_extension("old");
            std::fs::rename(&self.target, &old).map_err(io(&self.target))?;
            std::fs::rename(&self.temp, &self.target).map_err(io(&self.target))?;
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&self.temp, &self.target).map_err(io(&self.target))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` and syncs it, so a marker never names data still in the cache
/// when the machine goes down.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// The marker of a finished task in `dir`, or `None` when it has not finished.
pub fn marker<T: DeserializeOwned>(dir: &Path) -> Result<Option<T>> {
    let path = dir.join(MARKER);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Marker {
            file: path,
            reason: format!("not a completion marker ({e})"),
        })
}

/// This process's resident memory now, in bytes (Linux's `VmRSS`); `None` where the system
/// does not say.
pub fn resident() -> Option<u64> {
    status_bytes("VmRSS:")
}

fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's peak resident memory so far, in bytes (Linux's `VmHWM`); `None` where
/// the system does not say. A task records it in its marker, so that a run's report gives
/// each step's largest task as measured, not as estimated.
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Starts [`peak_rss`] over from the current resident memory (Linux 4.0+: `5` written to
/// `/proc/self/clear_refs`), so that a phase's peak can be told from an earlier one's; false
/// where the system does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_child_is_dead_before_it_is_reaped() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(alive(pid));
        child.kill().unwrap();
        // A zombie until waited for: its /proc entry stays meanwhile.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn peak_rss_sees_memory_touched() {
        let before = peak_rss().expect("Linux reports VmHWM");
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = peak_rss().unwrap_or_default();
        assert!(after >= before.max(64 << 20), "{before} then {after}");
        drop(block);
        if reset_peak_rss() {
            let reset = peak_rss().unwrap_or_default();
            assert!(reset < after, "{after} then {reset} after a reset");
        }
    }

    #[test]
    fn only_a_committed_folder_has_a_marker() {
        let root = std::env::temp_dir().join(format!("lmforge-task-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("step/task-00000");
        let pending = Pending::begin(&dir).unwrap();
        std::fs::write(pending.dir().join("out.bin"), b"half").unwrap();
        drop(pending);
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(root.join("step")).unwrap().count(), 0);

        let pending = Pending::begin(&dir).unwrap();
        std::fs::write(pending.dir().join("out.bin"), b"whole").unwrap();
        // A killed attempt's folder (another pid) is swept by the next attempt.
        std::fs::create_dir_all(root.join("step/.task-00000.tmp-1")).unwrap();
        pending.commit(&serde_json::json!({"ok": true})).unwrap();
        let marked: Option<serde_json::Value> = marker(&dir).unwrap();
        assert_eq!(marked.unwrap()["ok"], true);
        let again = Pending::begin(&dir).unwrap();
        assert!(!root.join("step/.task-00000.tmp-1").exists());
        again.commit(&serde_json::json!({"ok": 2})).unwrap();
        assert_eq!(std::fs::read(dir.join("out.bin")).ok(), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
