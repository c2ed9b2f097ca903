//! The work folder's binary records and JSON files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, io};

/// Little-endian u64 records.
pub(super) struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Writer {
    pub(super) fn create(path: PathBuf) -> Result<Writer> {
        let file = File::create(&path).map_err(io(&path))?;
        Ok(Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            path,
        })
    }

    pub(super) fn put(&mut self, values: &[u64]) -> Result<()> {
        for v in values {
            self.out
                .write_all(&v.to_le_bytes())
                .map_err(io(&self.path))?;
        }
        Ok(())
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(io(&self.path))
    }

    pub(super) fn finish(self) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| io(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io(&self.path))
    }
}

/// Reads records of `N` u64s; a file whose length is not a whole number of records is
/// damaged (a task killed mid-write cannot leave one: its folder was never committed).
pub(super) struct Records<const N: usize> {
    path: PathBuf,
    input: BufReader<std::io::Take<File>>,
}

/// A reader's buffer: small, since a step may merge up to [`FAN_IN`] files at once.
const READ_BUFFER: usize = 1 << 14;

/// The most record files a task reads at once, whatever the rank count: more are merged in
/// rounds (see `buckets`), so open files and buffers do not grow with the ranks.
pub(super) const FAN_IN: usize = 64;

impl<const N: usize> Records<N> {
    pub(super) fn open(path: PathBuf) -> Result<Records<N>> {
        let file = File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len % (N as u64 * 8) != 0 {
            return Err(Error::Output {
                file: path,
                reason: format!(
                    "{len} bytes is not a whole number of {}-byte records",
                    N * 8
                ),
            });
        }
        Ok(Records {
            input: BufReader::with_capacity(READ_BUFFER, file.take(len)),
            path,
        })
    }

    /// Records `range` of the file at `path` (by record index), which must hold them.
    pub(super) fn slice(path: PathBuf, range: std::ops::Range<u64>) -> Result<Records<N>> {
        let size = N as u64 * 8;
        let mut file = File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len % size != 0 {
            return Err(Error::Output {
                file: path,
                reason: format!("{len} bytes is not a whole number of {size}-byte records"),
            });
        }
        if range.start > range.end || range.end * size > len {
            return Err(Error::Output {
                file: path,
                reason: format!(
                    "records {}..{} asked of a file of {} records",
                    range.start,
                    range.end,
                    len / size
                ),
            });
        }
        file.seek(SeekFrom::Start(range.start * size))
            .map_err(io(&path))?;
        Ok(Records {
            input: BufReader::with_capacity(
                READ_BUFFER,
                file.take((range.end - range.start) * size),
            ),
            path,
        })
    }

    pub(super) fn next(&mut self) -> Result<Option<[u64; N]>> {
        let mut record = [0u64; N];
        let mut buf = [0u8; 8];
        for (i, value) in record.iter_mut().enumerate() {
            match self.input.read_exact(&mut buf) {
                Ok(()) => *value = u64::from_le_bytes(buf),
                Err(e) if i == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None);
                }
                Err(e) => return Err(io(&self.path)(e)),
            }
        }
        Ok(Some(record))
    }
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Output {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub(super) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string(value).map_err(|e| Error::Output {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(lmforge_executor::task::write_synced(
        path,
        (json + "\n").as_bytes(),
    )?)
}

/// Writes `offsets` (record indices, one past the last entry the end) as an index file: the
/// records of entry `i` of the data file beside it are `offsets[i]..offsets[i + 1]`.
pub(super) fn write_index(path: PathBuf, offsets: &[u64]) -> Result<()> {
    let mut w = Writer::create(path)?;
    w.put(offsets)?;
    w.finish()
}

/// Entry `i`'s record range in an index file written by [`write_index`]; a task reads only its
/// own two offsets, so the index's length (one per rank) costs it nothing.
pub(super) fn index_range(path: &Path, i: usize) -> Result<std::ops::Range<u64>> {
    let file = File::open(path).map_err(io(path))?;
    let mut bytes = [0u8; 16];
    file.read_exact_at(&mut bytes, i as u64 * 8)
        .map_err(|e| Error::Output {
            file: path.to_path_buf(),
            reason: format!("no entry {i} ({e})"),
        })?;
    let start = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let end = u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
    if start > end {
        return Err(Error::Output {
            file: path.to_path_buf(),
            reason: format!("entry {i} runs backwards ({start} > {end})"),
        });
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_gives_each_entry_its_slice_and_refuses_damage() {
        let dir = std::env::temp_dir().join(format!("lmforge-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data.bin");
        let mut w = Writer::create(data.clone()).unwrap();
        for v in 0..10u64 {
            w.put(&[v, v * 10]).unwrap();
        }
        w.finish().unwrap();
        write_index(dir.join("data.idx"), &[0, 3, 3, 10]).unwrap();
        let read = |i: usize| {
            let range = index_range(&dir.join("data.idx"), i).unwrap();
            let mut records = Records::<2>::slice(data.clone(), range).unwrap();
            let mut out = Vec::new();
            while let Some([a, _]) = records.next().unwrap() {
                out.push(a);
            }
            out
        };
        assert_eq!(read(0), vec![0, 1, 2]);
        assert!(read(1).is_empty());
        assert_eq!(read(2), (3..10).collect::<Vec<_>>());
        let past = index_range(&dir.join("data.idx"), 3)
            .unwrap_err()
            .to_string();
        assert!(
            past.contains("data.idx") && past.contains("no entry 3"),
            "{past}"
        );
        let beyond = Records::<2>::slice(data.clone(), 8..11)
            .err()
            .unwrap()
            .to_string();
        assert!(beyond.contains("data.bin"), "{beyond}");
        std::fs::write(&data, b"trunc").unwrap();
        let damaged = Records::<2>::slice(data, 0..0).err().unwrap().to_string();
        assert!(damaged.contains("whole number"), "{damaged}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
