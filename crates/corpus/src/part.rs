//! Parts: the pieces a corpus is cut into so that many tasks can read it, each its own.
//!
//! A part is a whole file, the lines of an uncompressed jsonl or text file that start in a
//! byte range, or a range of a parquet file's row groups. The cut depends only on the files
//! and the target size, never on how many tasks will read them, so a job's output can be
//! named by part and come out the same for any number of ranks. A line belongs to the part
//! its first byte is in: a part that starts inside a line skips to the next one, and the part
//! before reads past its end to finish it (Hadoop's rule for text splits).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Format, Result};

/// Which records of a file a part holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Span {
    /// Every record (compressed files, which cannot be entered in the middle, and small ones).
    Whole,
    /// The lines whose first byte is in `start..end` of an uncompressed file.
    Bytes {
        /// First byte.
        start: u64,
        /// One past the last byte a line may start at.
        end: u64,
    },
    /// Row groups `start..end` of a parquet file, whose first row is row `first_row` + 1.
    RowGroups {
        /// First row group.
        start: usize,
        /// One past the last row group.
        end: usize,
        /// Rows in the groups before `start`.
        first_row: u64,
    },
}

/// One piece of the input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The file.
    pub file: PathBuf,
    /// What of it.
    pub span: Span,
    /// Stored bytes this part covers (for balancing and progress).
    pub bytes: u64,
}

/// Cuts `files` into parts of about `part_bytes` stored bytes each, in input order.
/// Compressed files are one part each; a parquet file is cut between row groups.
pub fn split(files: &[PathBuf], part_bytes: u64) -> Result<Vec<Part>> {
    let part_bytes = part_bytes.max(1);
    let mut parts = Vec::new();
    for file in files {
        let size = std::fs::metadata(file)
            .map_err(|source| Error::Io {
                file: file.clone(),
                source,
            })?
            .len();
        let whole = Part {
            file: file.clone(),
            span: Span::Whole,
            bytes: size,
        };
        let name = file.to_string_lossy();
        if size <= part_bytes || name.ends_with(".gz") || name.ends_with(".zst") {
            parts.push(whole);
        } else if Format::of(file) == Format::Parquet {
            let groups = row_groups(file)?;
            if groups.len() < 2 {
                parts.push(whole);
                continue;
            }
            let (mut start, mut bytes, mut rows, mut first_row) = (0, 0u64, 0u64, 0u64);
            for (at, &(group_bytes, group_rows)) in groups.iter().enumerate() {
                bytes += group_bytes;
                rows += group_rows;
                if bytes >= part_bytes || at + 1 == groups.len() {
                    parts.push(Part {
                        file: file.clone(),
                        span: Span::RowGroups {
                            start,
                            end: at + 1,
                            first_row,
                        },
                        bytes,
                    });
                    (start, bytes, first_row) = (at + 1, 0, rows);
                }
            }
        } else {
            let mut start = 0;
            while start < size {
                let end = (start + part_bytes).min(size);
                parts.push(Part {
                    file: file.clone(),
                    span: Span::Bytes { start, end },
                    bytes: end - start,
                });
                start = end;
            }
        }
    }
    Ok(parts)
}

/// Compressed bytes and rows of each row group.
fn row_groups(file: &Path) -> Result<Vec<(u64, u64)>> {
    let open = std::fs::File::open(file).map_err(|source| Error::Io {
        file: file.to_path_buf(),
        source,
    })?;
    let reader =
        parquet::file::reader::SerializedFileReader::new(open).map_err(|e| Error::File {
            file: file.to_path_buf(),
            reason: format!("not a readable parquet file ({e})"),
        })?;
    use parquet::file::reader::FileReader;
    Ok(reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| {
            (
                g.compressed_size().max(0) as u64,
                g.num_rows().max(0) as u64,
            )
        })
        .collect())
}

/// Splits `parts` into `ranks` contiguous runs of about equal bytes: rank `r` reads
/// `parts[ranges[r].clone()]`. A rank may get none when there are fewer parts than ranks.
pub fn assign(parts: &[Part], ranks: usize) -> Vec<std::ops::Range<usize>> {
    let ranks = ranks.max(1);
    let total: u128 = parts.iter().map(|p| u128::from(p.bytes.max(1))).sum();
    let mut ranges = Vec::with_capacity(ranks);
    let (mut start, mut seen) = (0usize, 0u128);
    let mut cumulative = parts.iter().scan(0u128, |acc, p| {
        *acc += u128::from(p.bytes.max(1));
        Some(*acc)
    });
    let mut end = 0;
    for rank in 0..ranks {
        // Rank r ends at the first part whose cumulative bytes reach (r + 1) / ranks of all.
        let goal = total * (rank as u128 + 1) / ranks as u128;
        while seen < goal {
            match cumulative.next() {
                Some(c) => {
                    seen = c;
                    end += 1;
                }
                None => break,
            }
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(bytes: u64) -> Part {
        Part {
            file: "f".into(),
            span: Span::Whole,
            bytes,
        }
    }

    #[test]
    fn assignment_covers_every_part_once_in_order() {
        for n in 0..20 {
            let parts: Vec<Part> = (0..n).map(|i| part(1 + (i * 37 % 11))).collect();
            for ranks in 1..9 {
                let ranges = assign(&parts, ranks);
                assert_eq!(ranges.len(), ranks);
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, parts.len());
            }
        }
    }

    #[test]
    fn equal_parts_are_shared_evenly() {
        let parts: Vec<Part> = (0..8).map(|_| part(10)).collect();
        let sizes: Vec<usize> = assign(&parts, 4).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 2]);
        let sizes: Vec<usize> = assign(&parts, 3).iter().map(|r| r.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|&s| (2..=3).contains(&s)), "{sizes:?}");
    }
}
