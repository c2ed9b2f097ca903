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
    batch: Option<RecordBatch>,
    /// Column index in `batch` of each key.
    columns: Vec<usize>,
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
    pub(crate) fn open(path: &Path, keys: &[String]) -> Result<Rows> {
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
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let batches = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| file_error(path, e))?;
        Ok(Rows {
            batches,
            keys: keys.to_vec(),
            batch: None,
            columns: Vec::new(),
            at: 0,
            row: 0,
        })
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
        Some(Ok(Record {
            file: file.clone(),
            line: self.row,
            fields,
            bytes,
        }))
    }
}
