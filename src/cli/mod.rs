//! Client commands. They talk to a costd server only through its gRPC client.

mod connection;
mod export;
mod jobs;
mod output;
mod query;

pub use connection::{Connected, Connection};
pub use export::{ExportArgs, run_export};
pub use jobs::{JobsCommand, run_jobs};
pub use output::OutputFormat;
pub use query::{QueryArgs, run_query};

/// Parses `2026-01-01` (midnight UTC) or an RFC 3339 date-time.
pub fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("`{text}` is neither a date (2026-01-31) nor an RFC 3339 date-time"))
}
