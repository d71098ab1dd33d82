//! A query's records as one FOCUS 1.2 file, CSV or Parquet, written a row group at a time. The rows
//! come from an iterator and the bytes go to a sink as each group is written, so memory holds one
//! group whatever the file's size, and a sink that blocks (a slow reader) stops the writer.

mod csv;
mod focus;
mod parquet;

pub use focus::{COLUMNS, Cell, FOCUS_VERSION, FocusRow, Kind, cell, column_count, columns};

use crate::domain::CostRecord;

/// Rows per group when the caller does not say.
pub const DEFAULT_ROWS_PER_GROUP: usize = 16_384;
/// The most rows one group may hold: a group is what memory holds at once.
pub const MAX_ROWS_PER_GROUP: usize = 65_536;
/// The most bytes one piece handed to the sink carries: a gRPC client's default limit is 4 MiB a
/// message, and a group of wide rows is larger.
pub const MAX_PIECE_BYTES: usize = 1 << 20;

/// Messages a streamed export writes ahead of its reader: with at most [`MAX_PIECE_BYTES`] each,
/// what one export buffers beyond the group being written. A writer with this many unread waits.
pub const MESSAGES_AHEAD: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "a {column} value of account `{account}` cannot be written exactly (more than 18 decimal places or 20 integer digits)"
    )]
    Inexact {
        column: &'static str,
        account: String,
    },
    #[error("the Parquet writer failed: {0}")]
    Parquet(String),
    #[error("the CSV writer failed: {0}")]
    Csv(String),
    /// The reader went away; nothing more is wanted.
    #[error("the reader stopped reading")]
    Stopped,
}

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    FocusCsv,
    FocusParquet,
}

impl FileFormat {
    pub fn content_type(&self) -> &'static str {
        match self {
            FileFormat::FocusCsv => "text/csv; charset=utf-8",
            FileFormat::FocusParquet => "application/vnd.apache.parquet",
        }
    }
}

/// What an export writes and how.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub format: FileFormat,
    /// Between 1 and [`MAX_ROWS_PER_GROUP`].
    pub rows_per_group: usize,
}

/// Writes one group's rows as the format's bytes.
trait GroupWriter {
    fn write_group(&mut self, rows: &[FocusRow]) -> Result<Vec<u8>, ExportError>;
    fn finish(self: Box<Self>) -> Result<Vec<u8>, ExportError>;
}

/// Writes `records` as the plan's file. `sink` gets the file's bytes in order, in pieces of at most
/// [`MAX_PIECE_BYTES`], each with the number of rows whose bytes are complete once it is sent; an
/// error from it (the reader is gone) stops the export. Returns the rows written.
pub fn write_file(
    records: impl Iterator<Item = (CostRecord, bool)>,
    plan: &ExportPlan,
    sink: &mut dyn FnMut(Vec<u8>, u64) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let rows_per_group = plan.rows_per_group.clamp(1, MAX_ROWS_PER_GROUP);
    let mut writer: Box<dyn GroupWriter> = match plan.format {
        FileFormat::FocusCsv => Box::new(csv::CsvWriter::default()),
        FileFormat::FocusParquet => Box::new(parquet::ParquetWriter::new()?),
    };
    let mut group = Vec::with_capacity(rows_per_group.min(1024));
    let mut written = 0u64;
    let mut send = |bytes: Vec<u8>, rows_before: u64, rows_after: u64| {
        send_in_pieces(bytes, rows_before, rows_after, sink)
    };
    for (record, estimated) in records {
        group.push(FocusRow::new(record, estimated)?);
        if group.len() == rows_per_group {
            let bytes = writer.write_group(&group)?;
            let after = written + group.len() as u64;
            send(bytes, written, after)?;
            written = after;
            group.clear();
        }
    }
    // A file is written even without rows: a header, or a Parquet file with its schema.
    if !group.is_empty() || written == 0 {
        let bytes = writer.write_group(&group)?;
        let after = written + group.len() as u64;
        send(bytes, written, after)?;
        written = after;
    }
    send(writer.finish()?, written, written)?;
    Ok(written)
}

/// Hands `bytes` over in pieces; only the last says the group's rows are complete.
fn send_in_pieces(
    bytes: Vec<u8>,
    rows_before: u64,
    rows_after: u64,
    sink: &mut dyn FnMut(Vec<u8>, u64) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    if bytes.len() <= MAX_PIECE_BYTES {
        return if bytes.is_empty() {
            Ok(())
        } else {
            sink(bytes, rows_after)
        };
    }
    let pieces = bytes.len().div_ceil(MAX_PIECE_BYTES);
    for (index, piece) in bytes.chunks(MAX_PIECE_BYTES).enumerate() {
        let rows = if index + 1 == pieces {
            rows_after
        } else {
            rows_before
        };
        sink(piece.to_vec(), rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
