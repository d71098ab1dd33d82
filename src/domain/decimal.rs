//! Exact decimals from their text: upstream JSON numbers never pass through a binary float.

use rust_decimal::Decimal;

/// Why a number's text is not an exact decimal we can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("`{0}` is not a JSON number")]
    Syntax(String),
    #[error("`{0}` has more significant digits than can be held exactly")]
    Precision(String),
}

/// The largest scale `rust_decimal` holds.
const MAX_SCALE: i64 = 28;

/// Parses a JSON number (`-?int(.frac)?([eE][+-]?exp)?`) exactly. Numbers that would need rounding are
/// refused rather than rounded.
pub fn parse_decimal(text: &str) -> Result<Decimal, DecimalError> {
    let syntax = || DecimalError::Syntax(shorten(text));
    let (mantissa_text, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let exponent: i64 = text[at + 1..].parse().map_err(|_| syntax())?;
            (&text[..at], exponent)
        }
        None => (text, 0),
    };
    let (negative, unsigned) = match mantissa_text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa_text),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((int_part, frac_part)) if !frac_part.is_empty() => (int_part, frac_part),
        Some(_) => return Err(syntax()),
        None => (unsigned, ""),
    };
    let digits_ok = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = int_part.len() > 1 && int_part.starts_with('0');
    if int_part.is_empty() || leading_zero || !digits_ok(int_part) || !digits_ok(frac_part) {
        return Err(syntax());
    }
    let precision = || DecimalError::Precision(shorten(text));
    let mut mantissa: i128 = 0;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(digit - b'0')))
            .ok_or_else(precision)?;
    }
    let mut scale = i64::try_from(frac_part.len()).map_err(|_| precision())? - exponent;
    // Trailing zeros carry no information; dropping them keeps large scales representable.
    while scale > MAX_SCALE && mantissa % 10 == 0 && mantissa != 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if mantissa == 0 {
        scale = scale.clamp(0, MAX_SCALE);
    }
    while scale < 0 {
        mantissa = mantissa.checked_mul(10).ok_or_else(precision)?;
        scale += 1;
    }
    if scale > MAX_SCALE {
        return Err(precision());
    }
    let signed = if negative { -mantissa } else { mantissa };
    let scale = u32::try_from(scale).map_err(|_| precision())?;
    Decimal::try_from_i128_with_scale(signed, scale).map_err(|_| precision())
}

/// Formats a decimal as plain text without exponent or trailing zeros, e.g. "19.1808".
pub fn format_decimal(value: Decimal) -> String {
    value.normalize().to_string()
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    #[test]
    fn plain_numbers_keep_every_digit() {
        assert_eq!(
            parse_decimal("19.1808"),
            Ok(Decimal::from_str("19.1808").unwrap())
        );
        assert_eq!(
            parse_decimal("-0.1"),
            Ok(Decimal::from_str("-0.1").unwrap())
        );
        assert_eq!(parse_decimal("0"), Ok(Decimal::ZERO));
        assert_eq!(
            parse_decimal("123456789012345678"),
            Ok(Decimal::from(123_456_789_012_345_678_i64))
        );
    }

    #[test]
    fn exponents_are_applied_exactly() {
        assert_eq!(parse_decimal("1e9"), Ok(Decimal::from(1_000_000_000)));
        assert_eq!(
            parse_decimal("1.5E-3"),
            Ok(Decimal::from_str("0.0015").unwrap())
        );
        assert_eq!(parse_decimal("2.50e+2"), Ok(Decimal::from(250)));
        assert_eq!(parse_decimal("0e-40"), Ok(Decimal::ZERO));
    }

    #[test]
    fn float_noise_is_kept_not_rounded() {
        let noisy = parse_decimal("0.30000000000000004").unwrap();
        assert_ne!(noisy, Decimal::from_str("0.3").unwrap());
    }

    #[test]
    fn non_numbers_are_refused() {
        for text in [
            "", "-", "1.", ".5", "01", "1e", "\"1\"", "NaN", "1.2.3", "+1", "1e5x",
        ] {
            assert!(
                matches!(parse_decimal(text), Err(DecimalError::Syntax(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_needing_rounding_are_refused() {
        assert!(matches!(
            parse_decimal("1e-40"),
            Err(DecimalError::Precision(_))
        ));
        assert!(matches!(
            parse_decimal("1234567890123456789012345678901234567890"),
            Err(DecimalError::Precision(_))
        ));
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(units in any::<i64>(), frac in 0u32..1_000_000_000, scale in 0u32..10) {
            let value = Decimal::from_i128_with_scale(i128::from(units) * 1_000_000_000 + i128::from(frac), 9)
                .round_dp(scale);
            prop_assert_eq!(parse_decimal(&format_decimal(value)), Ok(value.normalize()));
        }
    }
}
