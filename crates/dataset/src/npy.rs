//! NumPy `.npy` (format 1.0) for 1-D and 2-D integer arrays: the index caches are written as
//! Megatron writes its own, so `numpy.load` reads them.

use std::path::Path;

use crate::{Error, Result};

/// Element types the caches use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// `<i4`
    I32,
    /// `<i8`
    I64,
    /// `<u4`
    U32,
}

impl Elem {
    fn descr(self) -> &'static str {
        match self {
            Elem::I32 => "<i4",
            Elem::I64 => "<i8",
            Elem::U32 => "<u4",
        }
    }

    fn size(self) -> usize {
        match self {
            Elem::I32 | Elem::U32 => 4,
            Elem::I64 => 8,
        }
    }
}

/// The bytes of a C-order array of `shape` holding `values` as `elem`.
pub fn to_bytes(elem: Elem, shape: &[usize], values: &[i64]) -> Vec<u8> {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        elem.descr()
    );
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * elem.size());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in values {
        match elem {
            Elem::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            Elem::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
            Elem::I64 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

/// Reads an array written by [`to_bytes`] (or NumPy, same types): its shape and values.
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&data).map_err(|reason| Error::Format {
        file: path.to_path_buf(),
        reason,
    })
}

fn parse(data: &[u8]) -> std::result::Result<(Vec<usize>, Vec<i64>), String> {
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" || data[6] != 1 {
        return Err("not a version-1 .npy file".into());
    }
    let header_len = u16::from_le_bytes([data[8], data[9]]) as usize;
    let body = data
        .get(10 + header_len..)
        .ok_or("header runs past the end")?;
    let header = std::str::from_utf8(&data[10..10 + header_len]).map_err(|_| "header not UTF-8")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header
            .find(&format!("'{key}':"))
            .ok_or_else(|| format!("header has no {key}"))?;
        Ok(header[at + key.len() + 3..].trim_start())
    };
    let descr = field("descr")?;
    let elem = [Elem::I32, Elem::I64, Elem::U32]
        .into_iter()
        .find(|e| descr.starts_with(&format!("'{}'", e.descr())))
        .ok_or_else(|| format!("element type {descr:.6} is not <i4, <i8 or <u4"))?;
    if !field("fortran_order")?.starts_with("False") {
        return Err("Fortran-order arrays are not read".into());
    }
    let shape = field("shape")?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("malformed shape entry {s:?}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if body.len() != count * elem.size() {
        return Err(format!(
            "{} data bytes for {count} elements of {} bytes (truncated?)",
            body.len(),
            elem.size()
        ));
    }
    let values = body
        .chunks_exact(elem.size())
        .map(|c| match elem {
            Elem::I32 => i64::from(i32::from_le_bytes(c.try_into().expect("4"))),
            Elem::U32 => i64::from(u32::from_le_bytes(c.try_into().expect("4"))),
            Elem::I64 => i64::from_le_bytes(c.try_into().expect("8")),
        })
        .collect();
    Ok((dims, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_alignment() {
        for (elem, shape, values) in [
            (Elem::I32, vec![3], vec![1, -2, 3]),
            (Elem::I64, vec![2, 2], vec![0, 5, 1, i64::MAX]),
            (Elem::U32, vec![0], vec![]),
        ] {
            let bytes = to_bytes(elem, &shape, &values);
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(parse(&bytes).unwrap(), (shape, values));
        }
        let bytes = to_bytes(Elem::I64, &[4], &[1, 2, 3, 4]);
        assert!(
            parse(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(parse(b"garbage").is_err());
    }
}
