//! Identifiers that every layer shares.

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr, sync::Arc};

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit")]
    AccountId,
    #[error("unknown provider kind; expected one of atlas, elastic, team_billing")]
    ProviderKind,
    #[error("must be 24 lowercase hexadecimal digits")]
    AtlasId,
    #[error("must be 1 to 128 characters of letters, digits, '-', '_' and '.'")]
    UpstreamId,
}

/// The upstream a provider account talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProviderKind {
    Atlas,
    Elastic,
    TeamBilling,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Atlas,
        ProviderKind::Elastic,
        ProviderKind::TeamBilling,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Atlas => "atlas",
            ProviderKind::Elastic => "elastic",
            ProviderKind::TeamBilling => "team_billing",
        }
    }
}

impl FromStr for ProviderKind {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or(IdError::ProviderKind)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of a configured provider account, e.g. `team-acme`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderAccountId(Arc<str>);

impl ProviderAccountId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let starts_well = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if starts_well && text.len() <= 63 && text.chars().all(valid_char) {
            Ok(ProviderAccountId(Arc::from(text)))
        } else {
            Err(IdError::AccountId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Atlas organization, project or cluster id: 24 lowercase hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtlasId(Arc<str>);

impl AtlasId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if text.len() == 24 && text.bytes().all(hex) {
            Ok(AtlasId(Arc::from(text)))
        } else {
            Err(IdError::AtlasId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AtlasId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id an upstream gave (an Elastic organization, a team), safe as one URL path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(Arc<str>);

impl UpstreamId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        // `.` and `..` are path segments of their own kind: they would move the URL.
        let is_segment = !text.is_empty()
            && text.len() <= 128
            && text.chars().all(valid_char)
            && text != "."
            && text != "..";
        if is_segment {
            Ok(UpstreamId(Arc::from(text)))
        } else {
            Err(IdError::UpstreamId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_short_lowercase_slugs() {
        assert!(ProviderAccountId::parse("team-acme_1").is_ok());
        for bad in ["", "-x", "Team", "a b", "a/b", &"x".repeat(64)] {
            assert_eq!(
                ProviderAccountId::parse(bad),
                Err(IdError::AccountId),
                "{bad}"
            );
        }
    }

    #[test]
    fn atlas_ids_are_24_lowercase_hex_digits() {
        assert!(AtlasId::parse("5f1a2b3c4d5e6f7a8b9c0d1e").is_ok());
        for bad in [
            "",
            "5F1A2B3C4D5E6F7A8B9C0D1E",
            "5f1a2b3c4d5e6f7a8b9c0d1",
            "g".repeat(24).as_str(),
        ] {
            assert_eq!(AtlasId::parse(bad), Err(IdError::AtlasId), "{bad}");
        }
    }

    #[test]
    fn upstream_ids_are_single_path_segments() {
        assert!(UpstreamId::parse("team_acme.1-x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a?b", &"x".repeat(129)] {
            assert_eq!(UpstreamId::parse(bad), Err(IdError::UpstreamId), "{bad}");
        }
    }

    #[test]
    fn provider_kinds_round_trip_through_text() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        assert_eq!("aws".parse::<ProviderKind>(), Err(IdError::ProviderKind));
    }
}
