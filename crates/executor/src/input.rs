//! The input files a plan was made from, as they were then: a re-run, or a task that starts
//! later, refuses one that changed since, naming it — by its size, its modification time, or
//! a hash of its first and last 64 KiB (an edit that keeps the size and the time, as `cp -p`
//! or a clock set back can, is still caught where it touches either end). Checking costs one
//! `stat` and two 64 KiB reads per file, whatever its size: a full content hash would read
//! the whole corpus again before every task.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::{Result, io};

/// Bytes hashed at each end of a file.
const SAMPLE: u64 = 64 << 10;

/// An input file as a plan saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// The file, as the plan names it.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its modification time, nanoseconds since the epoch (0 where the filesystem has none).
    #[serde(default)]
    pub modified_ns: u64,
    /// XXH3-64 of its first and last 64 KiB, hex.
    #[serde(default)]
    pub sample: String,
}

impl Input {
    /// `file` as it is now.
    pub fn stat(file: &Path) -> Result<Input> {
        let meta = std::fs::metadata(file).map_err(io(file))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Input {
            file: file.to_path_buf(),
            bytes: meta.len(),
            modified_ns,
            sample: sample(file, meta.len())?,
        })
    }

    /// How the file differs from what the plan saw, if it does (it is read again).
    pub fn changed(&self) -> Result<Option<String>> {
        Ok(describe(self, &Input::stat(&self.file)?))
    }
}

/// XXH3-64 of the first and last [`SAMPLE`] bytes of `file` (all of it when it is smaller).
fn sample(file: &Path, bytes: u64) -> Result<String> {
    let mut f = std::fs::File::open(file).map_err(io(file))?;
    let mut buf = Vec::with_capacity(2 * SAMPLE as usize);
    (&mut f)
        .take(SAMPLE)
        .read_to_end(&mut buf)
        .map_err(io(file))?;
    if bytes > SAMPLE {
        let tail = bytes.saturating_sub(SAMPLE).max(SAMPLE);
        f.seek(SeekFrom::Start(tail)).map_err(io(file))?;
        f.take(SAMPLE).read_to_end(&mut buf).map_err(io(file))?;
    }
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&buf)))
}

/// What changed between `was` (the plan's) and `now` (the same file read again), or `None`.
fn describe(was: &Input, now: &Input) -> Option<String> {
    let file = was.file.display();
    if was.bytes != now.bytes {
        Some(format!(
            "{file}: {} bytes now, {} when the run was planned",
            now.bytes, was.bytes
        ))
    } else if was.modified_ns != now.modified_ns {
        Some(format!(
            "{file}: modified since the run was planned (same size, {:.3} s later)",
            (now.modified_ns as f64 - was.modified_ns as f64) / 1e9
        ))
    } else if was.sample != now.sample {
        Some(format!(
            "{file}: its content changed since the run was planned (same size and time)"
        ))
    } else {
        None
    }
}

/// How the inputs a plan was made from (`was`) differ from the same list read now, naming
/// the first changed file; `None` when none did.
pub fn differences(was: &[Input], now: &[Input]) -> Option<String> {
    if was.len() != now.len() {
        return Some(format!(
            "{} input files there, {} here",
            was.len(),
            now.len()
        ));
    }
    was.iter().zip(now).find_map(|(a, b)| {
        if a.file != b.file {
            Some(format!(
                "input {} there, {} here",
                a.file.display(),
                b.file.display()
            ))
        } else {
            describe(a, b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_size_time_or_either_end_is_named() {
        let dir = std::env::temp_dir().join(format!("lmforge-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.txt");
        let text: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &text).unwrap();
        let was = Input::stat(&path).unwrap();
        assert_eq!(was.changed().unwrap(), None);
        assert_eq!(
            differences(std::slice::from_ref(&was), std::slice::from_ref(&was)),
            None
        );

        // The same size, a new time.
        let mut edited = text.clone();
        edited[10] = b'Z';
        std::fs::write(&path, &edited).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        file.set_modified(later).unwrap();
        let why = was.changed().unwrap().unwrap();
        assert!(why.contains("a.txt: modified since"), "{why}");

        // The same size and time, an end changed: the sample catches it.
        let now = Input::stat(&path).unwrap();
        let mut head = now.clone();
        head.sample = was.sample.clone();
        let why = differences(&[head], std::slice::from_ref(&now)).unwrap();
        assert!(why.contains("its content changed"), "{why}");

        // Grown.
        std::fs::write(&path, b"short").unwrap();
        let why = was.changed().unwrap().unwrap();
        assert!(why.contains("5 bytes now, 200000 when"), "{why}");

        // Another list.
        let why = differences(std::slice::from_ref(&was), &[]).unwrap();
        assert!(why.contains("1 input files there, 0 here"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
