//! FOCUS as Parquet through the `arrow` and `parquet` crates: money and quantities as
//! DECIMAL(38, 18) (exact: a value needing more places is refused, never rounded), times as UTC
//! timestamps in seconds, one row group per group of rows, Snappy-compressed.

use super::{Cell, ExportError, FocusRow, GroupWriter, Kind, cell, columns};
use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{BooleanBuilder, Decimal128Builder, StringBuilder, TimestampSecondBuilder},
};
use arrow_schema::{DataType, Field, TimeUnit};
use parquet::{arrow::ArrowWriter, basic::Compression, file::properties::WriterProperties};
use rust_decimal::Decimal;
use std::sync::Arc;

/// Digits of every decimal column, and how many of them follow the point: nanodollars need 9,
/// a 4-place ECU quantity times a 9-place unit price 13; 20 integer digits are left.
const PRECISION: u8 = 38;
const SCALE: u32 = 18;

pub struct ParquetWriter {
    arrow_schema: Arc<arrow_schema::Schema>,
    writer: ArrowWriter<Vec<u8>>,
}

fn parquet_error(error: impl std::fmt::Display) -> ExportError {
    ExportError::Parquet(error.to_string())
}

impl ParquetWriter {
    pub fn new() -> Result<Self, ExportError> {
        let fields: Vec<Field> = columns()
            .map(|(name, kind)| Field::new(name, data_type(kind), true))
            .collect();
        let arrow_schema = Arc::new(arrow_schema::Schema::new(fields));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), arrow_schema.clone(), Some(properties))
            .map_err(parquet_error)?;
        Ok(ParquetWriter {
            arrow_schema,
            writer,
        })
    }
}

fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Decimal => DataType::Decimal128(PRECISION, SCALE as i8),
        Kind::DateTime => DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
        Kind::Text => DataType::Utf8,
        Kind::Bool => DataType::Boolean,
    }
}

/// `value` as an integer count of 10^-18, when that is exact and fits 38 digits.
fn scaled(value: Decimal) -> Option<i128> {
    let value = value.normalize();
    let shift = SCALE.checked_sub(value.scale())?;
    let scaled = value.mantissa().checked_mul(10i128.checked_pow(shift)?)?;
    (scaled.unsigned_abs() < 10u128.pow(u32::from(PRECISION))).then_some(scaled)
}

enum Builder {
    Decimal(Decimal128Builder),
    DateTime(TimestampSecondBuilder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Decimal => Builder::Decimal(Decimal128Builder::with_capacity(rows)),
            Kind::DateTime => Builder::DateTime(TimestampSecondBuilder::with_capacity(rows)),
            Kind::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
        }
    }

    /// Appends `cell`; false when the cell cannot be held exactly.
    fn append(&mut self, cell: Cell<'_>) -> bool {
        match (self, cell) {
            (Builder::Decimal(b), Cell::Decimal(value)) => match scaled(value) {
                Some(scaled) => b.append_value(scaled),
                None => return false,
            },
            (Builder::DateTime(b), Cell::DateTime(at)) => b.append_value(at.timestamp()),
            (Builder::Text(b), Cell::Text(text)) => b.append_value(text),
            (Builder::Bool(b), Cell::Bool(flag)) => b.append_value(flag),
            (Builder::Decimal(b), _) => b.append_null(),
            (Builder::DateTime(b), _) => b.append_null(),
            (Builder::Text(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
        }
        true
    }

    fn finish(self) -> Result<ArrayRef, ExportError> {
        Ok(match self {
            Builder::Decimal(mut b) => Arc::new(
                b.finish()
                    .with_precision_and_scale(PRECISION, SCALE as i8)
                    .map_err(parquet_error)?,
            ),
            Builder::DateTime(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
        })
    }
}

impl GroupWriter for ParquetWriter {
    fn write_group(&mut self, rows: &[FocusRow]) -> Result<Vec<u8>, ExportError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut builders: Vec<Builder> = columns()
            .map(|(_, kind)| Builder::new(kind, rows.len()))
            .collect();
        for row in rows {
            for (index, builder) in builders.iter_mut().enumerate() {
                if !builder.append(cell(row, index)) {
                    let column = columns().nth(index).map_or("?", |(name, _)| name);
                    return Err(ExportError::Inexact {
                        column,
                        account: row.record.provider_account.to_string(),
                    });
                }
            }
        }
        let arrays = builders
            .into_iter()
            .map(Builder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        let batch =
            RecordBatch::try_new(self.arrow_schema.clone(), arrays).map_err(parquet_error)?;
        self.writer.write(&batch).map_err(parquet_error)?;
        // Each group is its own row group, written out now rather than buffered.
        self.writer.flush().map_err(parquet_error)?;
        self.writer.sync().map_err(parquet_error)?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, ExportError> {
        self.writer.finish().map_err(parquet_error)?;
        self.writer.sync().map_err(parquet_error)?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }
}
