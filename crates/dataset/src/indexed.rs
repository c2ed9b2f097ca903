//! Megatron-LM's `MMapIndexedDataset` files, byte for byte (`megatron/core/datasets/
//! indexed_dataset.py`): a `.bin` of token ids, nothing else, and an `.idx`:
//!
//! ```text
//! offset        size   field
//! 0             9      magic  b"MMIDIDX\x00\x00"
//! 9             8      version, u64 = 1
//! 17            1      dtype code (1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16)
//! 18            8      S, the sequence count, u64
//! 26            8      D + 1, the length of the document index, u64
//! 34            4·S    sequence lengths in tokens, i32
//! 34+4S         8·S    sequence pointers: byte offsets into .bin, i64
//! 34+12S        8(D+1) document index: document d is sequences [doc[d], doc[d+1]), i64
//! (34+12S+8(D+1) S     sequence modes, i8: multimodal files only)
//! ```
//!
//! Everything little-endian and unpadded, so the `.idx` arrays are not aligned; they are read
//! from the mapping field by field. The `.bin` is mapped and cast to the token type whole
//! (pointers are multiples of the item size and a mapping starts on a page), so a sequence is
//! a slice of the file: no copy.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `_INDEX_HEADER`.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only version Megatron writes or reads.
pub const VERSION: u64 = 1;
/// Bytes before the arrays.
pub const HEADER_LEN: usize = 34;

/// The element type of the `.bin`, Megatron's `DType` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 1
    U8,
    /// 2
    I8,
    /// 3
    I16,
    /// 4: vocabularies of 65,500 tokens or more.
    I32,
    /// 5
    I64,
    /// 6 (no token ids; readable as a file, not as tokens)
    F64,
    /// 7 (no token ids)
    F32,
    /// 8: vocabularies under 65,500 tokens.
    U16,
}

impl DType {
    /// Megatron's code for it.
    pub fn code(self) -> u8 {
        match self {
            DType::U8 => 1,
            DType::I8 => 2,
            DType::I16 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::F64 => 6,
            DType::F32 => 7,
            DType::U16 => 8,
        }
    }

    /// The type of a code, `None` for codes Megatron does not define.
    pub fn from_code(code: u8) -> Option<DType> {
        Some(match code {
            1 => DType::U8,
            2 => DType::I8,
            3 => DType::I16,
            4 => DType::I32,
            5 => DType::I64,
            6 => DType::F64,
            7 => DType::F32,
            8 => DType::U16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// `DType.optimal_dtype(vocab_size)`: u16 below 65,500 tokens, else i32.
    pub fn for_vocab_size(vocab_size: usize) -> DType {
        if vocab_size < 65_500 {
            DType::U16
        } else {
            DType::I32
        }
    }

    /// Whether `id` is representable.
    fn holds(self, id: u32) -> bool {
        match self {
            DType::U8 => id <= u8::MAX as u32,
            DType::I8 => id <= i8::MAX as u32,
            DType::I16 => id <= i16::MAX as u32,
            DType::U16 => id <= u16::MAX as u32,
            DType::I32 => id <= i32::MAX as u32,
            DType::I64 | DType::F64 | DType::F32 => true,
        }
    }

    fn put(self, id: u32, out: &mut Vec<u8>) {
        match self {
            DType::U8 | DType::I8 => out.push(id as u8),
            DType::I16 | DType::U16 => out.extend_from_slice(&(id as u16).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&id.to_le_bytes()),
            DType::I64 => out.extend_from_slice(&u64::from(id).to_le_bytes()),
            DType::F32 => out.extend_from_slice(&(id as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&f64::from(id).to_le_bytes()),
        }
    }
}

/// `{prefix}.bin` and `{prefix}.idx`, Megatron's `get_bin_path`/`get_idx_path`.
pub fn paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let mut bin = prefix.as_os_str().to_owned();
    bin.push(".bin");
    let mut idx = prefix.as_os_str().to_owned();
    idx.push(".idx");
    (PathBuf::from(bin), PathBuf::from(idx))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    PathBuf::from(name)
}

/// Writes a dataset as Megatron's `IndexedDatasetBuilder` does, into temporary files that
/// [`Builder::finish`] renames into place (`.bin` first, then `.idx`): until then nothing at
/// the prefix changes, and a dropped builder removes its temporary files.
pub struct Builder {
    bin: Option<BufWriter<File>>,
    bin_path: PathBuf,
    idx_path: PathBuf,
    bin_tmp: PathBuf,
    dtype: DType,
    lengths: Vec<i32>,
    document_index: Vec<i64>,
    tokens: u64,
    scratch: Vec<u8>,
}

/// What a finished dataset holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// The `.bin` written.
    pub bin: PathBuf,
    /// The `.idx` written.
    pub idx: PathBuf,
    /// Element type.
    pub dtype: DType,
    /// Sequences (S).
    pub sequences: u64,
    /// Documents (D).
    pub documents: u64,
    /// Token ids in the `.bin`.
    pub tokens: u64,
}

impl Builder {
    /// Starts `{prefix}.bin`/`{prefix}.idx` with token type `dtype` (see
    /// [`DType::for_vocab_size`]). The directory must exist.
    pub fn create(prefix: impl AsRef<Path>, dtype: DType) -> Result<Builder> {
        let (bin_path, idx_path) = paths(prefix.as_ref());
        let bin_tmp = tmp_path(&bin_path);
        let file = File::create(&bin_tmp).map_err(|e| Error::io(&bin_tmp, e))?;
        Ok(Builder {
            bin: Some(BufWriter::with_capacity(1 << 20, file)),
            bin_path,
            idx_path,
            bin_tmp,
            dtype,
            lengths: Vec::new(),
            document_index: vec![0],
            tokens: 0,
            scratch: Vec::new(),
        })
    }

    /// The token type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Appends one sequence (`add_item`); [`Builder::end_document`] closes the document.
    pub fn add_item(&mut self, ids: &[u32]) -> Result<()> {
        self.write_ids(ids)?;
        self.push_length(ids.len())
    }

    /// Closes the document begun by the items since the last one (`end_document`).
    pub fn end_document(&mut self) {
        self.document_index.push(self.lengths.len() as i64);
    }

    /// Appends a whole document (`add_document`): its ids and the lengths of its sequences,
    /// which must add up to `ids.len()`. No lengths is an empty document, as Megatron writes
    /// one.
    pub fn add_document(&mut self, ids: &[u32], lengths: &[usize]) -> Result<()> {
        let total: usize = lengths.iter().sum();
        if total != ids.len() {
            return Err(Error::Invalid(format!(
                "document of {} ids given sequence lengths adding up to {total}",
                ids.len()
            )));
        }
        self.write_ids(ids)?;
        for &len in lengths {
            self.push_length(len)?;
        }
        self.end_document();
        Ok(())
    }

    /// Appends every document of another dataset (`add_index`, what Megatron's
    /// `merge_datasets.py` does), copying its `.bin` bytes. Token types must match.
    pub fn add_dataset(&mut self, other: &IndexedDataset) -> Result<()> {
        if other.dtype != self.dtype {
            return Err(Error::Invalid(format!(
                "{}: dtype {:?} cannot be merged into a {:?} dataset",
                other.idx_path.display(),
                other.dtype,
                self.dtype
            )));
        }
        let offset = self.lengths.len() as i64;
        for i in 0..other.len() {
            self.push_length(other.length(i))?;
        }
        for d in 1..=other.num_documents() {
            self.document_index
                .push(offset + other.document_boundary(d) as i64);
        }
        let bin = self.bin.as_mut().ok_or(Error::Finished)?;
        bin.write_all(other.bin_bytes())
            .map_err(|e| Error::io(&self.bin_tmp, e))?;
        self.tokens += (other.bin_bytes().len() / self.dtype.size()) as u64;
        Ok(())
    }

    fn write_ids(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&id| !self.dtype.holds(id)) {
            return Err(Error::Invalid(format!(
                "token id {bad} does not fit the dataset's {:?}",
                self.dtype
            )));
        }
        self.scratch.clear();
        match self.dtype {
            DType::U16 => {
                for &id in ids {
                    self.scratch.extend_from_slice(&(id as u16).to_le_bytes());
                }
            }
            DType::I32 => {
                for &id in ids {
                    self.scratch.extend_from_slice(&id.to_le_bytes());
                }
            }
            dtype => {
                for &id in ids {
                    dtype.put(id, &mut self.scratch);
                }
            }
        }
        let bin = self.bin.as_mut().ok_or(Error::Finished)?;
        bin.write_all(&self.scratch)
            .map_err(|e| Error::io(&self.bin_tmp, e))?;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    fn push_length(&mut self, len: usize) -> Result<()> {
        let len = i32::try_from(len).map_err(|_| {
            Error::Invalid(format!(
                "a sequence of {len} tokens exceeds the i32 length field"
            ))
        })?;
        self.lengths.push(len);
        Ok(())
    }

    /// Writes the `.idx`, flushes and syncs both files and renames them into place.
    pub fn finish(mut self) -> Result<Summary> {
        let mut bin = self.bin.take().ok_or(Error::Finished)?;
        bin.flush().map_err(|e| Error::io(&self.bin_tmp, e))?;
        let file = bin
            .into_inner()
            .map_err(|e| Error::io(&self.bin_tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.bin_tmp, e))?;
        drop(file);

        let idx = index_bytes(self.dtype, &self.lengths, &self.document_index);
        let idx_tmp = tmp_path(&self.idx_path);
        let write_idx = || -> std::io::Result<()> {
            let mut f = File::create(&idx_tmp)?;
            f.write_all(&idx)?;
            f.sync_all()
        };
        if let Err(e) = write_idx() {
            let _ = std::fs::remove_file(&idx_tmp);
            return Err(Error::io(&idx_tmp, e));
        }
        std::fs::rename(&self.bin_tmp, &self.bin_path).map_err(|e| Error::io(&self.bin_path, e))?;
        std::fs::rename(&idx_tmp, &self.idx_path).map_err(|e| {
            let _ = std::fs::remove_file(&idx_tmp);
            Error::io(&self.idx_path, e)
        })?;
        Ok(Summary {
            bin: self.bin_path.clone(),
            idx: self.idx_path.clone(),
            dtype: self.dtype,
            sequences: self.lengths.len() as u64,
            documents: self.document_index.len() as u64 - 1,
            tokens: self.tokens,
        })
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        if self.bin.take().is_some() {
            let _ = std::fs::remove_file(&self.bin_tmp);
        }
    }
}

/// The `.idx` of a dataset (what `_IndexWriter` writes).
pub fn index_bytes(dtype: DType, lengths: &[i32], document_index: &[i64]) -> Vec<u8> {
    let s = lengths.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 12 * s + 8 * document_index.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(dtype.code());
    out.extend_from_slice(&(s as u64).to_le_bytes());
    out.extend_from_slice(&(document_index.len() as u64).to_le_bytes());
    for &len in lengths {
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut pointer = 0i64;
    for &len in lengths {
        out.extend_from_slice(&pointer.to_le_bytes());
        pointer += i64::from(len) * dtype.size() as i64;
    }
    for &d in document_index {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Bytes of a file: mapped, or (empty files, which cannot be mapped) none.
enum Bytes {
    Mapped(memmap2::Mmap),
    Empty,
}

impl Bytes {
    fn open(path: &Path) -> Result<Bytes> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Bytes::Empty);
        }
        Ok(Bytes::Mapped(map(&file).map_err(|e| Error::io(path, e))?))
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Empty => &[],
        }
    }
}

/// The one `unsafe` of the crate: mapping a file read-only.
#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and private to this process. What memmap2 cannot rule
    // out is another process truncating or rewriting the file while it is mapped; datasets are
    // written to a temporary name and renamed (a rename never changes a mapped inode), which
    // is the same contract Megatron's numpy.memmap and every mmap reader live with.
    unsafe { memmap2::Mmap::map(file) }
}

/// The mapped `.bin` as ids of type `T`. A mapping starts on a page boundary and its length
/// was checked to be a multiple of the item size, so the cast cannot fail; an empty file is no
/// mapping at all (its dangling slice has no alignment to speak of), hence the special case.
fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> &[T] {
    if bytes.is_empty() {
        return &[];
    }
    bytemuck::try_cast_slice(bytes).expect("the mapped .bin is aligned and whole")
}

/// The token ids of one sequence, a slice of the mapped `.bin` in its stored type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens<'a> {
    /// dtype u8
    U8(&'a [u8]),
    /// dtype i8
    I8(&'a [i8]),
    /// dtype i16
    I16(&'a [i16]),
    /// dtype u16 (vocabularies under 65,500)
    U16(&'a [u16]),
    /// dtype i32
    I32(&'a [i32]),
    /// dtype i64
    I64(&'a [i64]),
}

impl<'a> Tokens<'a> {
    /// Number of ids.
    pub fn len(&self) -> usize {
        match self {
            Tokens::U8(t) => t.len(),
            Tokens::I8(t) => t.len(),
            Tokens::I16(t) => t.len(),
            Tokens::U16(t) => t.len(),
            Tokens::I32(t) => t.len(),
            Tokens::I64(t) => t.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids `range` of it, still borrowed from the file.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Tokens<'a> {
        match *self {
            Tokens::U8(t) => Tokens::U8(&t[range]),
            Tokens::I8(t) => Tokens::I8(&t[range]),
            Tokens::I16(t) => Tokens::I16(&t[range]),
            Tokens::U16(t) => Tokens::U16(&t[range]),
            Tokens::I32(t) => Tokens::I32(&t[range]),
            Tokens::I64(t) => Tokens::I64(&t[range]),
        }
    }

    /// Id `i` widened to i64.
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Tokens::U8(t) => i64::from(t[i]),
            Tokens::I8(t) => i64::from(t[i]),
            Tokens::I16(t) => i64::from(t[i]),
            Tokens::U16(t) => i64::from(t[i]),
            Tokens::I32(t) => i64::from(t[i]),
            Tokens::I64(t) => t[i],
        }
    }

    /// Appends the ids to `out` as u32 (negative ids, which no tokenizer makes, wrap).
    pub fn extend_u32(&self, out: &mut Vec<u32>) {
        match self {
            Tokens::U16(t) => out.extend(t.iter().map(|&x| u32::from(x))),
            Tokens::I32(t) => out.extend(t.iter().map(|&x| x as u32)),
            Tokens::U8(t) => out.extend(t.iter().map(|&x| u32::from(x))),
            Tokens::I8(t) => out.extend(t.iter().map(|&x| x as u32)),
            Tokens::I16(t) => out.extend(t.iter().map(|&x| x as u32)),
            Tokens::I64(t) => out.extend(t.iter().map(|&x| x as u32)),
        }
    }

    /// Copies the ids into `out` (same length) as u32: the one copy a batch needs.
    pub fn copy_u32(&self, out: &mut [u32]) {
        assert_eq!(out.len(), self.len(), "copy_u32: length mismatch");
        match self {
            Tokens::U16(t) => out.iter_mut().zip(*t).for_each(|(o, &x)| *o = u32::from(x)),
            Tokens::I32(t) => out.iter_mut().zip(*t).for_each(|(o, &x)| *o = x as u32),
            Tokens::U8(t) => out.iter_mut().zip(*t).for_each(|(o, &x)| *o = u32::from(x)),
            Tokens::I8(t) => out.iter_mut().zip(*t).for_each(|(o, &x)| *o = x as u32),
            Tokens::I16(t) => out.iter_mut().zip(*t).for_each(|(o, &x)| *o = x as u32),
            Tokens::I64(t) => out.iter_mut().zip(*t).for_each(|(o, &x)| *o = x as u32),
        }
    }

    /// The ids as u32, copied.
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len());
        self.extend_u32(&mut out);
        out
    }
}

/// A dataset opened read-only: both files mapped, the whole index checked once at open (a
/// damaged file is an [`Error::Format`] naming the file and field, never a read out of
/// bounds later).
pub struct IndexedDataset {
    idx: Bytes,
    bin: Bytes,
    idx_path: PathBuf,
    bin_path: PathBuf,
    dtype: DType,
    sequences: usize,
    /// Length of the document index (D + 1).
    boundaries: usize,
    multimodal: bool,
    idx_sha256: std::sync::OnceLock<String>,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl IndexedDataset {
    /// Opens `{prefix}.idx` and `{prefix}.bin`.
    pub fn open(prefix: impl AsRef<Path>) -> Result<IndexedDataset> {
        let (bin_path, idx_path) = paths(prefix.as_ref());
        let idx = Bytes::open(&idx_path)?;
        let bin = Bytes::open(&bin_path)?;
        let bad = |path: &Path, reason: String| Error::Format {
            file: path.to_path_buf(),
            reason,
        };
        let b = idx.as_slice();
        if b.len() < HEADER_LEN {
            return Err(bad(
                &idx_path,
                format!(
                    "{} bytes, shorter than the {HEADER_LEN}-byte header",
                    b.len()
                ),
            ));
        }
        if &b[..9] != MAGIC {
            return Err(bad(
                &idx_path,
                format!(
                    "magic {:?} is not Megatron's MMIDIDX\\x00\\x00",
                    b[..9].escape_ascii().to_string()
                ),
            ));
        }
        let version = le_u64(b, 9);
        if version != VERSION {
            return Err(bad(
                &idx_path,
                format!("version {version}, only version 1 is read"),
            ));
        }
        let dtype = DType::from_code(b[17])
            .ok_or_else(|| bad(&idx_path, format!("dtype code {} is not one of 1-8", b[17])))?;
        if matches!(dtype, DType::F32 | DType::F64) {
            return Err(bad(
                &idx_path,
                format!("dtype {dtype:?} holds no token ids"),
            ));
        }
        let s = le_u64(b, 18);
        let d = le_u64(b, 26);
        let expected = (s as u128) * 12 + (d as u128) * 8 + HEADER_LEN as u128;
        let multimodal = b.len() as u128 == expected + s as u128 && s > 0;
        if b.len() as u128 != expected && !multimodal {
            return Err(bad(
                &idx_path,
                format!(
                    "{} bytes, but a header of {s} sequences and {d} document-index entries \
                     needs {expected} (truncated or not an index)",
                    b.len()
                ),
            ));
        }
        if d == 0 {
            return Err(bad(
                &idx_path,
                "empty document index (it starts with 0)".into(),
            ));
        }
        let dataset = IndexedDataset {
            idx,
            bin,
            idx_path,
            bin_path,
            dtype,
            sequences: s as usize,
            boundaries: d as usize,
            multimodal,
            idx_sha256: std::sync::OnceLock::new(),
        };
        dataset.check()?;
        Ok(dataset)
    }

    fn check(&self) -> Result<()> {
        let bad = |path: &Path, reason: String| Error::Format {
            file: path.to_path_buf(),
            reason,
        };
        let size = self.dtype.size() as u64;
        let bin_len = self.bin_bytes().len() as u64;
        if !bin_len.is_multiple_of(size) {
            return Err(bad(
                &self.bin_path,
                format!(
                    "{bin_len} bytes is not a whole number of {:?} ids",
                    self.dtype
                ),
            ));
        }
        for i in 0..self.sequences {
            let len = self.length_raw(i);
            let ptr = self.pointer_raw(i);
            if len < 0 {
                return Err(bad(
                    &self.idx_path,
                    format!("sequence {i}: negative length {len}"),
                ));
            }
            if ptr < 0 || !(ptr as u64).is_multiple_of(size) {
                return Err(bad(
                    &self.idx_path,
                    format!(
                        "sequence {i}: pointer {ptr} is not a {:?} offset",
                        self.dtype
                    ),
                ));
            }
            let end = ptr as u64 + len as u64 * size;
            if end > bin_len {
                return Err(bad(
                    &self.idx_path,
                    format!(
                        "sequence {i} ends at byte {end} but {} has {bin_len} \
                         (truncated .bin, or pointer past the end)",
                        self.bin_path.display()
                    ),
                ));
            }
        }
        let mut previous = 0i64;
        for k in 0..self.boundaries {
            let v = self.boundary_raw(k);
            let ok = if k == 0 { v == 0 } else { v >= previous };
            if !ok || v > self.sequences as i64 {
                return Err(bad(
                    &self.idx_path,
                    format!(
                        "document index entry {k} is {v}: entries must rise from 0 to the \
                         sequence count {}",
                        self.sequences
                    ),
                ));
            }
            previous = v;
        }
        if previous != self.sequences as i64 {
            return Err(bad(
                &self.idx_path,
                format!(
                    "document index ends at {previous}, not at the sequence count {}",
                    self.sequences
                ),
            ));
        }
        Ok(())
    }

    fn length_raw(&self, i: usize) -> i32 {
        let at = HEADER_LEN + 4 * i;
        let b = self.idx.as_slice();
        i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn pointer_raw(&self, i: usize) -> i64 {
        let at = HEADER_LEN + 4 * self.sequences + 8 * i;
        let b = self.idx.as_slice();
        i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    fn boundary_raw(&self, k: usize) -> i64 {
        let at = HEADER_LEN + 12 * self.sequences + 8 * k;
        let b = self.idx.as_slice();
        i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The token type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of sequences (S).
    pub fn len(&self) -> usize {
        self.sequences
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.sequences == 0
    }

    /// Number of documents (D).
    pub fn num_documents(&self) -> usize {
        self.boundaries - 1
    }

    /// Whether the index carries per-sequence modes (Megatron's multimodal files).
    pub fn is_multimodal(&self) -> bool {
        self.multimodal
    }

    /// Tokens in sequence `i`.
    pub fn length(&self, i: usize) -> usize {
        assert!(i < self.sequences, "sequence {i} of {}", self.sequences);
        self.length_raw(i) as usize
    }

    /// Every sequence length (a copy; the index field is unaligned on disk).
    pub fn lengths(&self) -> Vec<i32> {
        (0..self.sequences).map(|i| self.length_raw(i)).collect()
    }

    /// Entry `k` of the document index: document `d` is sequences
    /// `document_boundary(d)..document_boundary(d + 1)`.
    pub fn document_boundary(&self, k: usize) -> usize {
        assert!(
            k < self.boundaries,
            "document index entry {k} of {}",
            self.boundaries
        );
        self.boundary_raw(k) as usize
    }

    /// The sequences of document `d`.
    pub fn document(&self, d: usize) -> std::ops::Range<usize> {
        self.document_boundary(d)..self.document_boundary(d + 1)
    }

    /// Sequence `i`, borrowed from the mapped `.bin`.
    pub fn get(&self, i: usize) -> Tokens<'_> {
        let len = self.length(i);
        self.get_part(i, 0, len)
    }

    /// `len` ids of sequence `i` from `offset` (Megatron's `get(idx, offset, length)`).
    pub fn get_part(&self, i: usize, offset: usize, len: usize) -> Tokens<'_> {
        let total = self.length(i);
        assert!(
            offset + len <= total,
            "ids {offset}..{} of a sequence of {total}",
            offset + len
        );
        let start = self.pointer_raw(i) as usize / self.dtype.size() + offset;
        self.tokens().slice(start..start + len)
    }

    /// The whole `.bin` as ids.
    pub fn tokens(&self) -> Tokens<'_> {
        let b = self.bin_bytes();
        match self.dtype {
            DType::U8 => Tokens::U8(b),
            DType::I8 => Tokens::I8(cast(b)),
            DType::I16 => Tokens::I16(cast(b)),
            DType::U16 => Tokens::U16(cast(b)),
            DType::I32 => Tokens::I32(cast(b)),
            DType::I64 | DType::F32 | DType::F64 => Tokens::I64(cast(b)),
        }
    }

    fn bin_bytes(&self) -> &[u8] {
        self.bin.as_slice()
    }

    /// SHA-256 of the `.idx`, hex, what the sample caches are keyed by: hashed once per opened
    /// dataset, however many splits are built over it.
    pub(crate) fn idx_sha256(&self) -> &str {
        self.idx_sha256.get_or_init(|| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(self.idx.as_slice());
            digest.iter().map(|b| format!("{b:02x}")).collect()
        })
    }

    /// The `.idx` file.
    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }

    /// The `.bin` file.
    pub fn bin_path(&self) -> &Path {
        &self.bin_path
    }

    /// Token ids in the `.bin`.
    pub fn num_tokens(&self) -> u64 {
        (self.bin_bytes().len() / self.dtype.size()) as u64
    }
}

/// Megatron's `tools/merge_datasets.py`: the datasets at `inputs`, in order, as one at
/// `output`. All must share a token type.
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<Summary> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::Invalid("nothing to merge".into()))?;
    let dtype = IndexedDataset::open(first)?.dtype();
    let mut builder = Builder::create(output, dtype)?;
    for input in inputs {
        builder.add_dataset(&IndexedDataset::open(input)?)?;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_roundtrip() {
        for code in 1..=8 {
            assert_eq!(DType::from_code(code).unwrap().code(), code);
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(9), None);
        assert_eq!(DType::for_vocab_size(65_499), DType::U16);
        assert_eq!(DType::for_vocab_size(65_500), DType::I32);
    }

    #[test]
    fn empty_files_cast_to_any_id_type() {
        // An empty slice's pointer is dangling (often 0x1): not aligned for u16 or wider.
        let empty: &[u8] = &[];
        assert!(cast::<u16>(empty).is_empty());
        assert!(cast::<i64>(empty).is_empty());
    }

    #[test]
    fn index_layout() {
        let idx = index_bytes(DType::U16, &[3, 2], &[0, 1, 2]);
        assert_eq!(idx.len(), HEADER_LEN + 12 * 2 + 8 * 3);
        assert_eq!(&idx[..9], MAGIC);
        assert_eq!(idx[17], 8);
        // pointers: 0, then 3 ids of 2 bytes.
        assert_eq!(le_u64(&idx, HEADER_LEN + 8), 0);
        assert_eq!(le_u64(&idx, HEADER_LEN + 16), 6);
    }
}
