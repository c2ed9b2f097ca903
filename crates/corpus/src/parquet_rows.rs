//! Parquet files read a record batch at a time, only the requested columns decoded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::{Error, Record, Result};

const BATCH_ROWS: usize = 1024;

pub(crate) struct Rows {
    batches: ParquetRecordBatchReader,
    keys: Vec<String>,
    /// Optional keys the file has a column for (the others are always `None`).
    optional: Vec<Option<String>>,
    batch: Option<RecordBatch>,
    /// Column index in `batch` of each key.
    columns: Vec<usize>,
    optional_columns: Vec<Option<usize>>,
    at: usize,
    row: u64,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::File {
        file: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl Rows {
    /// Opens `path` for `keys`; only `groups` of its row groups when given, their first row
    /// numbered `first_row + 1`.
    pub(crate) fn open(
        path: &Path,
        keys: &[String],
        optional_keys: &[String],
        groups: Option<std::ops::Range<usize>>,
        first_row: u64,
    ) -> Result<Rows> {
        let file = File::open(path).map_err(|source| Error::Io {
            file: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| file_error(path, format!("not a readable parquet file ({e})")))?;
        let schema = builder.schema().clone();
        let mut roots = Vec::with_capacity(keys.len());
        for key in keys {
            let (index, field) = schema.column_with_name(key).ok_or_else(|| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                file_error(
                    path,
                    format!("no column {key:?} (columns: {})", names.join(", ")),
                )
            })?;
            use arrow_schema::DataType;
            if !matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Err(file_error(
                    path,
                    format!("column {key:?} is {}, not a string", field.data_type()),
                ));
            }
            roots.push(index);
        }
        let mut optional = Vec::with_capacity(optional_keys.len());
        for key in optional_keys {
            use arrow_schema::DataType;
            match schema.column_with_name(key) {
                Some((index, field))
                    if matches!(
                        field.data_type(),
                        DataType::Utf8
                            | DataType::LargeUtf8
                            | DataType::Utf8View
                            | DataType::Int32
                            | DataType::Int64
                            | DataType::UInt32
                            | DataType::UInt64
                    ) =>
                {
                    if !roots.contains(&index) {
                        roots.push(index);
                    }
                    optional.push(Some(key.clone()));
                }
                Some((_, field)) => {
                    return Err(file_error(
                        path,
                        format!(
                            "column {key:?} is {}, not a string or integer",
                            field.data_type()
                        ),
                    ));
                }
                None => optional.push(None),
            }
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let builder = match groups {
            Some(groups) => {
                let available = builder.metadata().num_row_groups();
                if groups.end > available {
                    return Err(file_error(
                        path,
                        format!(
                            "has {available} row groups, not the {} the plan expects",
                            groups.end
                        ),
                    ));
                }
                builder.with_row_groups(groups.collect())
            }
            None => builder,
        };
        let batches = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| file_error(path, e))?;
        Ok(Rows {
            batches,
            keys: keys.to_vec(),
            optional,
            batch: None,
            columns: Vec::new(),
            optional_columns: Vec::new(),
            at: 0,
            row: first_row,
        })
    }

    /// The row number of the last row read.
    pub(crate) fn row(&self) -> u64 {
        self.row
    }

    pub(crate) fn next_record(&mut self, file: &Arc<PathBuf>) -> Option<Result<Record>> {
        loop {
            if let Some(batch) = &self.batch
                && self.at < batch.num_rows()
            {
                break;
            }
            let batch = match self.batches.next()? {
                Ok(batch) => batch,
                Err(e) => {
                    return Some(Err(file_error(
                        file,
                        format!("after row {}: {e}", self.row),
                    )));
                }
            };
            // The projected batch keeps the file's column order, not the keys'.
            let schema = batch.schema();
            let columns: std::result::Result<Vec<usize>, _> =
                self.keys.iter().map(|k| schema.index_of(k)).collect();
            self.optional_columns = self
                .optional
                .iter()
                .map(|k| k.as_ref().and_then(|k| schema.index_of(k).ok()))
                .collect();
            match columns {
                Ok(columns) => self.columns = columns,
                Err(e) => {
                    return Some(Err(file_error(
                        file,
                        format!("after row {}: {e}", self.row),
                    )));
                }
            }
            self.batch = Some(batch);
            self.at = 0;
        }
        let batch = self.batch.as_ref()?;
        let at = self.at;
        self.at += 1;
        self.row += 1;
        let mut fields = Vec::with_capacity(self.keys.len());
        let mut bytes = 0;
        for (key, &column) in self.keys.iter().zip(&self.columns) {
            let array = batch.column(column);
            if array.is_null(at) {
                return Some(Err(Error::Record {
                    file: file.to_path_buf(),
                    line: self.row,
                    reason: format!("field {key:?} is null"),
                }));
            }
            let text = if let Some(a) = array.as_string_opt::<i32>() {
                a.value(at)
            } else if let Some(a) = array.as_string_opt::<i64>() {
                a.value(at)
            } else if let Some(a) = array.as_string_view_opt() {
                a.value(at)
            } else {
                return Some(Err(file_error(
                    file,
                    format!("column {key:?} is {}, not a string", array.data_type()),
                )));
            };
            bytes += text.len() as u64;
            fields.push(text.to_string());
        }
        let optional = self
            .optional_columns
            .iter()
            .map(|&column| column.and_then(|c| optional_value(batch.column(c).as_ref(), at)))
            .collect();
        Some(Ok(Record {
            file: file.clone(),
            line: self.row,
            fields,
            optional,
            bytes,
        }))
    }
}

fn optional_value(array: &dyn Array, at: usize) -> Option<String> {
    use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
    if array.is_null(at) {
        return None;
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        Some(a.value(at).to_string())
    } else if let Some(a) = array.as_string_opt::<i64>() {
        Some(a.value(at).to_string())
    } else if let Some(a) = array.as_string_view_opt() {
        Some(a.value(at).to_string())
    } else if let Some(a) = array.as_primitive_opt::<Int64Type>() {
        Some(a.value(at).to_string())
    } else if let Some(a) = array.as_primitive_opt::<Int32Type>() {
        Some(a.value(at).to_string())
    } else if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
        Some(a.value(at).to_string())
    } else {
        array
            .as_primitive_opt::<UInt32Type>()
            .map(|a| a.value(at).to_string())
    }
}
