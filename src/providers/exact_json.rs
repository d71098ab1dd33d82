//! JSON numbers read from their text into exact decimals: `serde_json` never turns them into `f64`.

use crate::domain::parse_decimal;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_json::value::RawValue;

/// A JSON number held exactly as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactNumber(pub Decimal);

impl<'de> Deserialize<'de> for ExactNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Bodies are parsed from a byte slice, so the raw text is borrowed, not copied.
        let raw: &'de RawValue = Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(D::Error::custom(format!(
                "expected a JSON number, found `{}`",
                text.chars().take(20).collect::<String>()
            )));
        }
        parse_decimal(text)
            .map(ExactNumber)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[derive(Deserialize)]
    struct Holder {
        amount: ExactNumber,
    }

    #[test]
    fn numbers_keep_their_text() {
        let holder: Holder = serde_json::from_slice(br#"{"amount": 0.30000000000000004}"#).unwrap();
        assert_eq!(
            holder.amount.0,
            Decimal::from_str("0.30000000000000004").unwrap()
        );
    }

    #[test]
    fn strings_and_nulls_are_not_numbers() {
        assert!(serde_json::from_slice::<Holder>(br#"{"amount": "1"}"#).is_err());
        assert!(serde_json::from_slice::<Holder>(br#"{"amount": null}"#).is_err());
    }
}
