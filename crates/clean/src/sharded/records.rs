//! The work folder's binary records and JSON files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
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
    input: BufReader<File>,
}

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
            input: BufReader::with_capacity(1 << 20, file),
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
