//! The caller's deadline, carried from the gRPC `grpc-timeout` header down to every upstream call.

use std::time::Duration;
use tokio::time::Instant;

/// When the answer must be ready; `None` means the caller set no deadline. A caller's wait also ends
/// when the server stops (it is answered with what there is); a job's wait does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Option<Instant>,
    outlives_stop: bool,
}

impl Deadline {
    /// A caller that set no deadline.
    pub const NONE: Deadline = Deadline {
        at: None,
        outlives_stop: false,
    };

    /// A job's: waits for its work to end, through a server stop too.
    pub const JOB: Deadline = Deadline {
        at: None,
        outlives_stop: true,
    };

    pub fn at(instant: Instant) -> Self {
        Deadline {
            at: Some(instant),
            outlives_stop: false,
        }
    }

    pub fn after(timeout: Duration) -> Self {
        Deadline::at(Instant::now() + timeout)
    }

    /// Whether the wait goes on when the server stops (a job's), rather than ending with what there is.
    pub fn outlives_stop(&self) -> bool {
        self.outlives_stop
    }

    /// The caller's `grpc-timeout` less `margin`, kept back to build and send the answer. The margin
    /// takes at most half of a short timeout, so upstreams always get some of the caller's time.
    pub fn from_grpc_metadata(metadata: &tonic::metadata::MetadataMap, margin: Duration) -> Self {
        match metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
        {
            Some(timeout) => Deadline::after(timeout - margin.min(timeout / 2)),
            None => Deadline::NONE,
        }
    }

    pub fn instant(&self) -> Option<Instant> {
        self.at
    }

    /// Time left; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    pub fn is_expired(&self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }

    /// `limit`, shortened to the time left.
    pub fn cap(&self, limit: Duration) -> Duration {
        self.remaining().map_or(limit, |left| left.min(limit))
    }
}

/// Parses the gRPC wire format: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_margin_never_takes_more_than_half_the_callers_time() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", "100m".parse().unwrap());
        let short = Deadline::from_grpc_metadata(&metadata, Duration::from_millis(200));
        assert_eq!(short.remaining(), Some(Duration::from_millis(50)));
        metadata.insert("grpc-timeout", "10S".parse().unwrap());
        let long = Deadline::from_grpc_metadata(&metadata, Duration::from_millis(200));
        assert_eq!(long.remaining(), Some(Duration::from_millis(9_800)));
        assert_eq!(
            Deadline::from_grpc_metadata(&tonic::metadata::MetadataMap::new(), Duration::ZERO),
            Deadline::NONE
        );
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
