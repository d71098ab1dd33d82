//! The exact cost model: money, periods, identifiers, records and queries. Pure: no IO, no async.

mod columns;
mod decimal;
mod ids;
mod money;
mod period;
mod query;
mod record;
mod redact;
mod stored;
#[cfg(test)]
pub(crate) mod testing;
mod upstream;

pub use columns::{
    ColumnsBuilder, HeldDecimal, KeyIds, NO_TEXT, RecordColumns, RecordRef, ResourceRef, TextId,
};
pub use decimal::{DecimalError, format_decimal, parse_decimal};
pub use ids::{AtlasId, IdError, ProviderAccountId, ProviderKind, UpstreamId};
pub use money::{Currency, Money, MoneyError, NANOS_PER_UNIT};
pub use period::{Period, PeriodError};
pub use query::{CostFilter, CostQuery, Granularity, GroupBy};
pub use record::{
    ChargeCategory, CostRecord, DataQualityWarning, EXTENSION_NAMES, Named, Quantity, Resource,
    Text, UnitPrice,
};
pub use redact::{REDACTED, Redactor};
pub use stored::{STORED_CHUNK_FORMAT, StoredChunk, StoredChunkError};
pub use upstream::{
    AccountRef, CircuitReading, FetchProgress, ProgressObserver, UpstreamError, UpstreamErrorKind,
    UpstreamQuery,
};
