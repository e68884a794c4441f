//! Money as integer minor units plus an ISO 4217 code. Never `f64`.
//!
//! Parsing accepts the reference data's decimal strings ("35.5", "35.50") and
//! rejects anything with more fraction digits than the currency has, so no
//! rounding ever happens silently on input.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor unit (cents for USD/EUR).
    pub minor: i64,
    /// ISO 4217 alphabetic code, upper case.
    pub currency: Currency,
}

/// An ISO 4217 alphabetic code, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let b = code.as_bytes();
        if b.len() != 3 || !b.iter().all(|c| c.is_ascii_uppercase()) {
            return Err(MoneyError::Currency(code.to_string()));
        }
        Ok(Currency([b[0], b[1], b[2]]))
    }
    pub fn as_str(&self) -> &str {
        // Constructed only from three ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
    /// Number of minor-unit digits (ISO 4217). The table lists the
    /// exceptions to 2 that an operator is likely to bill in.
    pub fn exponent(&self) -> u32 {
        match self.as_str() {
            "JPY" | "KRW" | "CLP" | "ISK" | "VND" | "XAF" | "XOF" | "UGX" | "PYG" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => 3,
            _ => 2,
        }
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("{0:?} is not an ISO 4217 code (three upper-case letters)")]
    Currency(String),
    #[error("{0:?} is not a decimal amount like 35.00")]
    Amount(String),
    #[error("{amount:?} has more than {exponent} decimal places for {currency}")]
    Precision { amount: String, exponent: u32, currency: String },
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// Parse a decimal string such as `"35.5"` or `"-2.05"` in `currency`.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let bad = || MoneyError::Amount(amount.to_string());
        let t = amount.trim();
        let (neg, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if digits.contains('.') && frac.is_empty() {
            return Err(bad());
        }
        let exp = currency.exponent();
        if frac.len() as u32 > exp {
            return Err(MoneyError::Precision {
                amount: amount.to_string(),
                exponent: exp,
                currency: currency.to_string(),
            });
        }
        let scale = 10i64.pow(exp);
        let int: i64 = int.parse().map_err(|_| bad())?;
        let mut f: i64 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| bad())? };
        f *= 10i64.pow(exp - frac.len() as u32);
        let minor = int.checked_mul(scale).and_then(|v| v.checked_add(f)).ok_or_else(bad)?;
        Ok(Money::new(if neg { -minor } else { minor }, currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.exponent();
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        write!(f, "{sign}{}.{:0w$} {}", abs / scale, abs % scale, self.currency, w = exp as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn parses_decimal_strings_to_minor_units() {
        assert_eq!(Money::parse("35.00", usd()).unwrap().minor, 3500);
        assert_eq!(Money::parse("35.5", usd()).unwrap().minor, 3550);
        assert_eq!(Money::parse("35", usd()).unwrap().minor, 3500);
        assert_eq!(Money::parse("-2.05", usd()).unwrap().minor, -205);
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::parse("1200", jpy).unwrap().minor, 1200);
    }

    #[test]
    fn rejects_bad_amounts_and_hidden_rounding() {
        assert!(matches!(Money::parse("35.001", usd()), Err(MoneyError::Precision { .. })));
        assert!(Money::parse("3,50", usd()).is_err());
        assert!(Money::parse("", usd()).is_err());
        assert!(Money::parse("1.", usd()).is_err());
        assert!(Money::parse("1e3", usd()).is_err());
        assert!(Money::parse("99999999999999999999", usd()).is_err());
        assert!(Currency::parse("usd").is_err());
    }

    #[test]
    fn displays_with_currency_exponent() {
        assert_eq!(Money::new(-205, usd()).to_string(), "-2.05 USD");
        assert_eq!(Money::new(7, usd()).to_string(), "0.07 USD");
    }
}
