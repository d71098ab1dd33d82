//! Identifiers that every layer shares.

use std::{fmt, str::FromStr, sync::Arc};

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit")]
    AccountId,
    #[error("unknown provider kind; expected one of atlas, elastic, team_billing")]
    ProviderKind,
}

/// The upstream a provider account talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    fn provider_kinds_round_trip_through_text() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        assert_eq!("aws".parse::<ProviderKind>(), Err(IdError::ProviderKind));
    }
}
