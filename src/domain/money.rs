//! Exact money: integer nanos of one currency. Never a float.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Nanos (1e-9) in one whole currency unit.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why an amount cannot be held or combined exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code")]
    Currency(String),
    #[error("cannot add {left} to {right}: different currencies")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("{0} has a fraction smaller than a nano")]
    SubNano(Decimal),
    #[error("amount out of range")]
    Overflow,
}

/// An ISO 4217 currency code: three ASCII uppercase letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollars, the currency of every billed cost.
    pub const USD: Currency = Currency(*b"USD");

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(MoneyError::Currency(code.chars().take(8).collect())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Currency::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exact amount: whole nanos of a currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Money {
    currency: Currency,
    nanos: i128,
}

impl Money {
    pub fn zero(currency: Currency) -> Self {
        Money { currency, nanos: 0 }
    }

    pub fn from_nanos(currency: Currency, nanos: i128) -> Self {
        Money { currency, nanos }
    }

    /// Exact conversion; an amount with a fraction below one nano is refused, not rounded.
    pub fn from_decimal(currency: Currency, amount: Decimal) -> Result<Self, MoneyError> {
        let nanos = amount
            .checked_mul(Decimal::from(NANOS_PER_UNIT as i64))
            .ok_or(MoneyError::Overflow)?;
        if !nanos.fract().is_zero() {
            return Err(MoneyError::SubNano(amount));
        }
        let nanos = nanos.trunc();
        let nanos = i128::try_from(nanos).map_err(|_| MoneyError::Overflow)?;
        Ok(Money { currency, nanos })
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: other.currency,
                right: self.currency,
            });
        }
        let nanos = self
            .nanos
            .checked_add(other.nanos)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { nanos, ..self })
    }

    /// Sums amounts of one currency exactly; an empty input is zero of `currency`.
    pub fn sum<'a>(
        currency: Currency,
        amounts: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), |total, amount| {
                total.checked_add(*amount)
            })
    }

    /// Whole units and the nano remainder, both with the amount's sign (the google.type.Money shape).
    pub fn units_and_nanos(&self) -> Result<(i64, i32), MoneyError> {
        let units = i64::try_from(self.nanos / NANOS_PER_UNIT).map_err(|_| MoneyError::Overflow)?;
        let nanos = i32::try_from(self.nanos % NANOS_PER_UNIT).map_err(|_| MoneyError::Overflow)?;
        Ok((units, nanos))
    }

    pub fn from_units_and_nanos(currency: Currency, units: i64, nanos: i32) -> Self {
        Money {
            currency,
            nanos: i128::from(units) * NANOS_PER_UNIT + i128::from(nanos),
        }
    }

    /// The amount as an exact decimal in whole currency units.
    pub fn to_decimal(&self) -> Result<Decimal, MoneyError> {
        Decimal::try_from_i128_with_scale(self.nanos, 9)
            .map(|d| d.normalize())
            .map_err(|_| MoneyError::Overflow)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let units = magnitude / NANOS_PER_UNIT as u128;
        let fraction = format!("{:09}", magnitude % NANOS_PER_UNIT as u128);
        let fraction = fraction.trim_end_matches('0');
        let fraction = if fraction.len() < 2 {
            format!("{fraction:0<2}")
        } else {
            fraction.to_string()
        };
        write!(f, "{sign}{units}.{fraction} {}", self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn usd(nanos: i128) -> Money {
        Money::from_nanos(Currency::USD, nanos)
    }

    #[test]
    fn decimals_convert_exactly_or_not_at_all() {
        let amount = Decimal::from_str("0.123456789").unwrap();
        assert_eq!(
            Money::from_decimal(Currency::USD, amount),
            Ok(usd(123_456_789))
        );
        let too_fine = Decimal::from_str("0.0000000001").unwrap();
        assert_eq!(
            Money::from_decimal(Currency::USD, too_fine),
            Err(MoneyError::SubNano(too_fine))
        );
    }

    #[test]
    fn currencies_never_mix() {
        let eur = Money::from_nanos(Currency::parse("EUR").unwrap(), 1);
        assert!(matches!(
            usd(1).checked_add(eur),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("USDX").is_err());
    }

    #[test]
    fn units_and_nanos_share_the_sign() {
        assert_eq!(
            usd(-1_500_000_000).units_and_nanos(),
            Ok((-1, -500_000_000))
        );
        assert_eq!(usd(2_000_000_001).units_and_nanos(), Ok((2, 1)));
    }

    #[test]
    fn display_is_exact_and_readable() {
        assert_eq!(usd(1_500_000_000).to_string(), "1.50 USD");
        assert_eq!(usd(-123_456_789).to_string(), "-0.123456789 USD");
        assert_eq!(usd(0).to_string(), "0.00 USD");
    }

    proptest! {
        #[test]
        fn sums_never_lose_a_nano(parts in proptest::collection::vec(-10i128.pow(20)..10i128.pow(20), 0..200)) {
            let amounts: Vec<Money> = parts.iter().map(|n| usd(*n)).collect();
            let total = Money::sum(Currency::USD, &amounts).unwrap();
            prop_assert_eq!(total.nanos(), parts.iter().sum::<i128>());
        }

        #[test]
        fn wire_shape_round_trips(nanos in -(i64::MAX as i128)..(i64::MAX as i128)) {
            let (units, sub) = usd(nanos).units_and_nanos().unwrap();
            prop_assert_eq!(Money::from_units_and_nanos(Currency::USD, units, sub), usd(nanos));
        }

        #[test]
        fn decimal_round_trips(nanos in -(10i128.pow(27))..10i128.pow(27)) {
            let money = usd(nanos);
            prop_assert_eq!(Money::from_decimal(Currency::USD, money.to_decimal().unwrap()), Ok(money));
        }
    }
}
