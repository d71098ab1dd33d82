//! FOCUS as CSV: RFC 4180 with a header row, decimals as exact plain text with a decimal point, times as
//! `YYYY-MM-DDTHH:MM:SSZ`, null as an empty field.

use super::{Cell, ExportError, FocusRow, GroupWriter, cell, column_count, columns};
use crate::domain::format_decimal;

#[derive(Default)]
pub struct CsvWriter {
    header_written: bool,
}

fn csv_error(error: impl std::fmt::Display) -> ExportError {
    ExportError::Csv(error.to_string())
}

impl GroupWriter for CsvWriter {
    fn write_group(&mut self, rows: &[FocusRow]) -> Result<Vec<u8>, ExportError> {
        let mut bytes = Vec::new();
        {
            let mut writer = ::csv::WriterBuilder::new().from_writer(&mut bytes);
            if !self.header_written {
                writer
                    .write_record(columns().map(|(name, _)| name))
                    .map_err(csv_error)?;
                self.header_written = true;
            }
            let mut field = String::new();
            for row in rows {
                for index in 0..column_count() {
                    field.clear();
                    match cell(row, index) {
                        Cell::Null => {}
                        Cell::Decimal(value) => {
                            field.push_str(&format_decimal(value));
                            // A CSV reader infers types from the text: a decimal column whose
                            // values are all whole would read as integers.
                            if !field.contains('.') {
                                field.push_str(".0");
                            }
                        }
                        Cell::DateTime(at) => {
                            use std::fmt::Write;
                            let _ = write!(field, "{}", at.format("%Y-%m-%dT%H:%M:%SZ"));
                        }
                        Cell::Text(text) => field.push_str(text),
                        Cell::Bool(flag) => field.push_str(if flag { "true" } else { "false" }),
                    }
                    writer.write_field(&field).map_err(csv_error)?;
                }
                writer.write_record(None::<&[u8]>).map_err(csv_error)?;
            }
            writer.flush().map_err(csv_error)?;
        }
        Ok(bytes)
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, ExportError> {
        Ok(Vec::new())
    }
}
