//! Exact money.
//!
//! Amounts travel between CPQ, ERP, billing and payments; any rounding drift
//! between those systems shows up as a reconciliation break. Everything here is
//! decimal, never floating point, and every amount knows how many minor units
//! its currency allows.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Why an amount or currency was rejected; messages name the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text is not three uppercase ASCII letters.
    #[error("`{code}` is not an ISO 4217 currency code: expected 3 uppercase letters")]
    MalformedCurrency {
        /// The rejected text.
        code: String,
    },
    /// The code is well formed but not in the supported table, so its minor
    /// units are unknown.
    #[error("currency `{code}` is not supported")]
    UnknownCurrency {
        /// The rejected code.
        code: String,
    },
    /// The text is not a plain decimal number.
    #[error(
        "`{text}` is not a decimal number: expected digits with an optional leading `-` and `.` fraction"
    )]
    InvalidDecimal {
        /// The rejected text.
        text: String,
    },
    /// The number cannot be held exactly (too many digits).
    #[error("`{text}` cannot be represented exactly: too many digits")]
    DecimalOutOfRange {
        /// The rejected text.
        text: String,
    },
    /// The amount is finer than the currency's smallest unit.
    #[error("{amount} has {scale} decimal places but {currency} allows at most {max}")]
    TooManyDecimals {
        /// The rejected amount.
        amount: Decimal,
        /// Decimal places of the amount after dropping trailing zeros.
        scale: u32,
        /// The currency it was meant for.
        currency: Currency,
        /// The currency's minor unit count.
        max: u32,
    },
    /// The amount is too large to be shown with the currency's minor units.
    #[error("{amount} is too large to represent in {currency}")]
    AmountOutOfRange {
        /// The rejected amount.
        amount: Decimal,
        /// The currency it was meant for.
        currency: Currency,
    },
}

/// Supported currencies and their minor unit counts. Limited to currencies we
/// have verified with every connected system.
const CURRENCIES: &[(&str, u32)] = &[
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("NZD", 2),
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("CZK", 2),
    ("SGD", 2),
    ("HKD", 2),
    ("MXN", 2),
    ("BRL", 2),
    ("INR", 2),
    ("ZAR", 2),
    ("CNY", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("CLP", 0),
    ("ISK", 0),
    ("KWD", 3),
    ("BHD", 3),
    ("OMR", 3),
    ("JOD", 3),
    ("TND", 3),
];

/// An ISO 4217 currency that carries its minor unit count, so rounding and
/// formatting can never use the wrong precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    /// Validates a currency code from an external system; unknown codes are
    /// rejected because their precision is unknown.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(MoneyError::MalformedCurrency {
                code: code.to_owned(),
            });
        }
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|&(code, minor_units)| Self { code, minor_units })
            .ok_or_else(|| MoneyError::UnknownCurrency {
                code: code.to_owned(),
            })
    }

    /// The ISO code, as every external API expects it.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimal places of the smallest unit (2 for cents, 0 for yen).
    #[must_use]
    pub const fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// Rounds half-even (banker's rounding) to the minor unit: the rule CPQ
    /// and the ERP agree on, and unbiased over many lines.
    #[must_use]
    pub fn round(&self, amount: Decimal) -> Decimal {
        amount.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointNearestEven)
    }

    /// Whether `amount` is expressible in this currency without rounding.
    #[must_use]
    pub fn fits(&self, amount: Decimal) -> bool {
        amount.normalize().scale() <= self.minor_units
    }

    /// Renders `amount` with at least the minor unit decimals ("1200.00") but
    /// never rounds, so a wrong input is shown as it is in error messages.
    #[must_use]
    pub fn format(&self, amount: Decimal) -> String {
        let mut shown = amount.normalize();
        if shown.scale() < self.minor_units {
            shown.rescale(self.minor_units);
        }
        shown.to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.code.to_owned()
    }
}

/// Parses decimal text exactly, accepting only `-?digits(.digits)?`; rejects
/// exponents, signs like `+`, separators and anything that would round, so
/// what CPQ sent is exactly what we compare.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !frac.is_none_or(digits) {
        return Err(MoneyError::InvalidDecimal {
            text: text.to_owned(),
        });
    }
    let mut value = Decimal::from_str_exact(text).map_err(|_| MoneyError::DecimalOutOfRange {
        text: text.to_owned(),
    })?;
    if value.is_zero() {
        value.set_sign_positive(true);
    }
    Ok(value)
}

/// An amount in a currency, guaranteed to be expressible in that currency's
/// minor units, so it can be sent to any downstream system without rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Checks `amount` fits the currency's minor units; trailing zeros are
    /// fine (10.50 USD), extra precision is not (10.505 USD).
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let normalized = amount.normalize();
        if normalized.scale() > currency.minor_units {
            return Err(MoneyError::TooManyDecimals {
                amount,
                scale: normalized.scale(),
                currency,
                max: currency.minor_units,
            });
        }
        let mut scaled = normalized;
        scaled.rescale(currency.minor_units);
        if scaled.scale() != currency.minor_units {
            return Err(MoneyError::AmountOutOfRange { amount, currency });
        }
        if scaled.is_zero() {
            scaled.set_sign_positive(true);
        }
        Ok(Self {
            amount: scaled,
            currency,
        })
    }

    /// The amount, scaled to exactly the currency's minor units.
    #[must_use]
    pub const fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency the amount is denominated in.
    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Wire shape of [`Money`]: the amount as a string so no JSON consumer ever
/// turns it into a float.
#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: String,
    currency: Currency,
}

impl TryFrom<MoneyRepr> for Money {
    type Error = MoneyError;

    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        Self::new(parse_decimal(&repr.amount)?, repr.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount.to_string(),
            currency: money.currency,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        parse_decimal(text).unwrap()
    }

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn currency_table_knows_minor_units() {
        assert_eq!(usd().minor_units(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert_eq!(Currency::parse("CNY").unwrap().code(), "CNY");
        assert_eq!(usd().to_string(), "USD");
        for (code, _) in CURRENCIES {
            assert_eq!(Currency::parse(code).unwrap().code(), *code);
        }
    }

    #[test]
    fn currency_rejects_unknown_and_malformed_codes_naming_them() {
        assert_eq!(
            Currency::parse("XXX").unwrap_err().to_string(),
            "currency `XXX` is not supported"
        );
        for bad in ["usd", "US", "USDD", "", "U$D"] {
            let err = Currency::parse(bad).unwrap_err();
            assert_eq!(
                err,
                MoneyError::MalformedCurrency {
                    code: bad.to_owned()
                }
            );
        }
    }

    #[test]
    fn currency_serde_is_the_code_and_validates() {
        assert_eq!(serde_json::to_string(&usd()).unwrap(), "\"USD\"");
        assert_eq!(serde_json::from_str::<Currency>("\"USD\"").unwrap(), usd());
        let err = serde_json::from_str::<Currency>("\"ABC\"").unwrap_err();
        assert!(err.to_string().contains("`ABC`"), "{err}");
    }

    #[test]
    fn rounding_is_half_even_to_the_minor_unit() {
        assert_eq!(usd().round(dec("0.125")), dec("0.12"));
        assert_eq!(usd().round(dec("0.135")), dec("0.14"));
        assert_eq!(usd().round(dec("0.1251")), dec("0.13"));
        assert_eq!(usd().round(dec("-0.125")), dec("-0.12"));
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.round(dec("2.5")), dec("2"));
        assert_eq!(jpy.round(dec("3.5")), dec("4"));
        assert_eq!(jpy.round(dec("1234.4")), dec("1234"));
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.round(dec("1.0005")), dec("1.000"));
        assert_eq!(kwd.round(dec("1.0015")), dec("1.002"));
    }

    #[test]
    fn format_pads_but_never_rounds() {
        assert_eq!(usd().format(dec("1200")), "1200.00");
        assert_eq!(usd().format(dec("10.5")), "10.50");
        assert_eq!(usd().format(dec("10.505")), "10.505");
        assert_eq!(usd().format(dec("10.5000")), "10.50");
        assert_eq!(Currency::parse("JPY").unwrap().format(dec("12.0")), "12");
        assert!(usd().fits(dec("10.50")));
        assert!(!usd().fits(dec("10.505")));
    }

    #[test]
    fn parse_decimal_is_exact_and_strict() {
        assert_eq!(dec("1200"), Decimal::from(1200));
        assert_eq!(dec("1200.00").to_string(), "1200.00");
        assert_eq!(dec("-3.5"), Decimal::new(-35, 1));
        assert_eq!(dec("-0").to_string(), "0");
        for bad in [
            "", "-", "1e3", "1E3", "+5", ".5", "5.", "1_000", "1,000", " 1", "1 ", "NaN", "inf",
            "--1", "1.2.3",
        ] {
            assert_eq!(
                parse_decimal(bad),
                Err(MoneyError::InvalidDecimal {
                    text: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_decimal("0.1234567890123456789012345678901"),
            Err(MoneyError::DecimalOutOfRange { .. })
        ));
        assert!(matches!(
            parse_decimal("123456789012345678901234567890123"),
            Err(MoneyError::DecimalOutOfRange { .. })
        ));
    }

    #[test]
    fn money_accepts_amounts_within_minor_units() {
        let m = Money::new(dec("10.5"), usd()).unwrap();
        assert_eq!(m.to_string(), "10.50 USD");
        assert_eq!(m, Money::new(dec("10.50"), usd()).unwrap());
        assert_eq!(m.amount().scale(), 2);
        assert_eq!(m.currency(), usd());
        assert_eq!(
            Money::new(dec("10800"), usd()).unwrap().to_string(),
            "10800.00 USD"
        );
        assert_eq!(
            Money::new(dec("10.500"), usd()).unwrap().to_string(),
            "10.50 USD"
        );
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(
            Money::new(dec("500.0"), jpy).unwrap().to_string(),
            "500 JPY"
        );
    }

    #[test]
    fn money_rejects_excess_precision() {
        let err = Money::new(dec("10.505"), usd()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.505 has 3 decimal places but USD allows at most 2"
        );
        let jpy = Currency::parse("JPY").unwrap();
        assert!(Money::new(dec("1.5"), jpy).is_err());
    }

    #[test]
    fn money_rejects_amounts_too_large_for_the_minor_units() {
        let err = Money::new(Decimal::MAX, usd()).unwrap_err();
        assert!(matches!(err, MoneyError::AmountOutOfRange { .. }), "{err}");
    }

    #[test]
    fn money_serde_uses_string_amounts_with_minor_units() {
        let m = Money::new(dec("10800"), usd()).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"10800.00","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        let err =
            serde_json::from_str::<Money>(r#"{"amount":"1.234","currency":"USD"}"#).unwrap_err();
        assert!(err.to_string().contains("1.234"), "{err}");
        assert!(serde_json::from_str::<Money>(r#"{"amount":1.5,"currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1e3","currency":"USD"}"#).is_err());
    }
}
