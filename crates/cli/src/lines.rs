//! The line-by-line filters `lmforge bpe` and `lmforge wordpiece` share: `encode` reads text
//! and writes the ids of each line on one line; `decode` reads ids and writes text. Input is
//! a file or standard input; a bad line stops with an error naming it.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The input's name (for errors) and a reader over it.
fn open(input: &Option<PathBuf>) -> Result<(String, Box<dyn BufRead>)> {
    Ok(match input {
        Some(path) => (
            path.display().to_string(),
            Box::new(BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )),
        ),
        None => ("<stdin>".into(), Box::new(BufReader::new(std::io::stdin()))),
    })
}

/// Writes `encode(line)` for each line of `input`, space-separated ids.
pub fn encode(
    input: &Option<PathBuf>,
    mut encode: impl FnMut(&str) -> Result<Vec<u32>>,
) -> Result<()> {
    let (name, mut input) = open(input)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        if line.ends_with(b"\n") {
            line.pop();
        }
        let text = std::str::from_utf8(&line)
            .with_context(|| format!("{name}:{number}: invalid UTF-8"))?;
        let ids = encode(text).with_context(|| format!("{name}:{number}"))?;
        let mut first = true;
        for id in ids {
            if !first {
                out.write_all(b" ")?;
            }
            first = false;
            write!(out, "{id}")?;
        }
        out.write_all(b"\n")?;
    }
    Ok(out.flush()?)
}

/// Writes `decode(ids)` and a newline for each line of space-separated ids in `input`.
pub fn decode(
    input: &Option<PathBuf>,
    mut decode: impl FnMut(&[u32]) -> Result<Vec<u8>>,
) -> Result<()> {
    let (name, input) = open(input)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("{name}:{}", i + 1))?;
        let ids = line
            .split_whitespace()
            .map(|t| t.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{name}:{}: not a list of ids", i + 1))?;
        let bytes = decode(&ids).with_context(|| format!("{name}:{}", i + 1))?;
        out.write_all(&bytes)?;
        out.write_all(b"\n")?;
    }
    Ok(out.flush()?)
}
