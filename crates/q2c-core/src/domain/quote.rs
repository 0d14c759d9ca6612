//! The accepted CPQ quote, validated at construction.
//!
//! A quote is the input to every downstream system: the ERP order, the
//! subscription, the invoice and the payment. Arithmetic errors in CPQ data
//! would be copied into all of them, so the quote is checked once, completely,
//! before any workflow starts, and every problem is reported at once so the
//! sales-ops fix is a single round trip.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::{AccountId, OpportunityId, QuoteId};
use super::money::{Currency, Money, parse_decimal};

/// Longest single-line text field accepted; matches the Salesforce text field
/// limit so nothing valid in CPQ is rejected here.
const MAX_TEXT_CHARS: usize = 255;
/// Longest line description accepted; descriptions are free text.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// One problem with a draft, addressed by the serialized field path (e.g.
/// `lines[2].net_total`) so a person can find it in the CPQ record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field, in serialized names.
    pub field: String,
    /// What is wrong and, where useful, what was expected.
    pub message: String,
}

/// Every problem found in a draft; a rejected quote reports all of them so the
/// source record can be fixed in one go. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteErrors(Vec<FieldError>);

impl QuoteErrors {
    /// The individual problems, in field order.
    #[must_use]
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Whether any problem concerns `field`; lets callers and tests route
    /// errors without parsing messages.
    #[must_use]
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }

    /// Takes ownership of the problems, e.g. to embed them in a report.
    #[must_use]
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

impl fmt::Display for QuoteErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for QuoteErrors {}

/// An unvalidated quote line exactly as received; all fields are text so that
/// nothing is lost or rounded before validation sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLineDraft {
    /// CPQ product code (SKU).
    pub product_code: String,
    /// Free-text line description; may be empty.
    pub description: String,
    /// Quantity as decimal text.
    pub quantity: String,
    /// Unit list price as decimal text.
    pub unit_price: String,
    /// Discount as a percentage (0 to 100) in decimal text.
    pub discount_percent: String,
    /// Line total after discount as decimal text.
    pub net_total: String,
}

/// An unvalidated quote exactly as received; it is also the persisted wire
/// shape of [`Quote`], so its field names are a storage contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteDraft {
    /// Salesforce id of the quote record.
    pub quote_id: String,
    /// Human-facing quote number.
    pub quote_number: String,
    /// Salesforce id of the customer account.
    pub account_id: String,
    /// Customer name as shown on documents.
    pub account_name: String,
    /// Salesforce id of the opportunity.
    pub opportunity_id: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Quote total as decimal text.
    pub net_amount: String,
    /// Payment terms, e.g. "Net 30".
    pub payment_terms: String,
    /// Payment method token, e.g. "pm_card_visa".
    pub payment_method: String,
    /// The quote lines.
    pub lines: Vec<QuoteLineDraft>,
}

/// A validated quote line; its net total is proven consistent with quantity,
/// price and discount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLine {
    product_code: String,
    description: String,
    quantity: Decimal,
    unit_price: Decimal,
    discount_percent: Decimal,
    net_total: Decimal,
}

impl QuoteLine {
    /// The SKU downstream systems map to their own catalog.
    #[must_use]
    pub fn product_code(&self) -> &str {
        &self.product_code
    }

    /// Free-text description copied to order and invoice lines.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Ordered quantity; always greater than zero.
    #[must_use]
    pub const fn quantity(&self) -> Decimal {
        self.quantity
    }

    /// Unit list price before discount; never negative, may be finer than
    /// the currency's minor unit.
    #[must_use]
    pub const fn unit_price(&self) -> Decimal {
        self.unit_price
    }

    /// Discount percentage in 0..=100.
    #[must_use]
    pub const fn discount_percent(&self) -> Decimal {
        self.discount_percent
    }

    /// Line total after discount, in the quote currency's minor units.
    #[must_use]
    pub const fn net_total(&self) -> Decimal {
        self.net_total
    }
}

/// The accepted CPQ quote. It can only be obtained through validation (also
/// when deserialized), so every holder can trust its ids and arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "QuoteDraft", into = "QuoteDraft")]
pub struct Quote {
    quote_id: QuoteId,
    quote_number: String,
    account_id: AccountId,
    account_name: String,
    opportunity_id: OpportunityId,
    net_amount: Money,
    payment_terms: String,
    payment_method: String,
    lines: Vec<QuoteLine>,
}

impl Quote {
    /// Serialized names of the top-level fields, for workflow definitions
    /// that reference `quote.<field>`.
    pub const FIELDS: &'static [&'static str] = &[
        "quote_id",
        "quote_number",
        "account_id",
        "account_name",
        "opportunity_id",
        "currency",
        "net_amount",
        "payment_terms",
        "payment_method",
        "lines",
    ];

    /// Validates a draft completely, collecting every problem rather than
    /// stopping at the first, so one report covers the whole record.
    pub fn try_from_draft(draft: QuoteDraft) -> Result<Self, QuoteErrors> {
        let mut problems = Problems::default();
        let p = &mut problems;

        let quote_id = p.check("quote_id", QuoteId::parse(&draft.quote_id));
        let quote_number = p.required_text("quote_number", &draft.quote_number);
        let account_id = p.check("account_id", AccountId::parse(&draft.account_id));
        let account_name = p.required_text("account_name", &draft.account_name);
        let opportunity_id = p.check(
            "opportunity_id",
            OpportunityId::parse(&draft.opportunity_id),
        );
        let currency = p.check("currency", Currency::parse(&draft.currency));
        let net_amount_value = p.check("net_amount", parse_decimal(&draft.net_amount));
        let net_amount = match (net_amount_value, currency) {
            (Some(amount), Some(currency)) => p.check("net_amount", Money::new(amount, currency)),
            _ => None,
        };
        let payment_terms = p.required_text("payment_terms", &draft.payment_terms);
        let payment_method = p.required_text("payment_method", &draft.payment_method);

        if draft.lines.is_empty() {
            p.push("lines", "a quote needs at least one line");
        }
        let mut lines = Vec::with_capacity(draft.lines.len());
        let mut stated_totals = Some(Decimal::ZERO);
        for (index, line) in draft.lines.iter().enumerate() {
            let (validated, stated) = validate_line(p, index, line, currency);
            lines.extend(validated);
            stated_totals = match (stated_totals, stated) {
                (Some(sum), Some(total)) => match sum.checked_add(total) {
                    Some(sum) => Some(sum),
                    None => {
                        p.push("net_amount", "the sum of the line net totals overflows");
                        None
                    }
                },
                _ => None,
            };
        }
        if let (Some(sum), Some(stated), false) =
            (stated_totals, net_amount_value, draft.lines.is_empty())
            && sum != stated
        {
            p.push(
                "net_amount",
                format!(
                    "expected {} (sum of line net totals), got {}",
                    show(sum, currency),
                    show(stated, currency)
                ),
            );
        }

        match (
            quote_id,
            quote_number,
            account_id,
            account_name,
            opportunity_id,
            net_amount,
            payment_terms,
            payment_method,
        ) {
            (
                Some(quote_id),
                Some(quote_number),
                Some(account_id),
                Some(account_name),
                Some(opportunity_id),
                Some(net_amount),
                Some(payment_terms),
                Some(payment_method),
            ) if problems.0.is_empty() => Ok(Self {
                quote_id,
                quote_number,
                account_id,
                account_name,
                opportunity_id,
                net_amount,
                payment_terms,
                payment_method,
                lines,
            }),
            _ => Err(problems.into_errors()),
        }
    }

    /// The CPQ record to read back and update.
    #[must_use]
    pub const fn quote_id(&self) -> &QuoteId {
        &self.quote_id
    }

    /// Human-facing number used as external reference on orders and invoices.
    #[must_use]
    pub fn quote_number(&self) -> &str {
        &self.quote_number
    }

    /// The customer account the downstream records belong to.
    #[must_use]
    pub const fn account_id(&self) -> &AccountId {
        &self.account_id
    }

    /// Customer name for documents and notifications.
    #[must_use]
    pub fn account_name(&self) -> &str {
        &self.account_name
    }

    /// The opportunity to mark closed-won.
    #[must_use]
    pub const fn opportunity_id(&self) -> &OpportunityId {
        &self.opportunity_id
    }

    /// Currency of every amount on the quote.
    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.net_amount.currency()
    }

    /// Quote total; equals the sum of the line net totals exactly.
    #[must_use]
    pub const fn net_amount(&self) -> Money {
        self.net_amount
    }

    /// Payment terms passed to billing, e.g. "Net 30".
    #[must_use]
    pub fn payment_terms(&self) -> &str {
        &self.payment_terms
    }

    /// Payment method token passed to the payment provider.
    #[must_use]
    pub fn payment_method(&self) -> &str {
        &self.payment_method
    }

    /// The validated lines; never empty.
    #[must_use]
    pub fn lines(&self) -> &[QuoteLine] {
        &self.lines
    }

    /// The serialized JSON value of one top-level field (see [`Self::FIELDS`]),
    /// so workflow definitions can build command inputs from `quote.<field>`
    /// with exactly the persisted rendering.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<Value> {
        let text = |value: &str| Some(Value::String(value.to_owned()));
        match name {
            "quote_id" => text(self.quote_id.as_str()),
            "quote_number" => text(&self.quote_number),
            "account_id" => text(self.account_id.as_str()),
            "account_name" => text(&self.account_name),
            "opportunity_id" => text(self.opportunity_id.as_str()),
            "currency" => text(self.currency().code()),
            "net_amount" => Some(Value::String(self.net_amount.amount().to_string())),
            "payment_terms" => text(&self.payment_terms),
            "payment_method" => text(&self.payment_method),
            "lines" => Some(Value::Array(
                self.lines
                    .iter()
                    .map(|line| line_json(line_draft(line, self.currency())))
                    .collect(),
            )),
            _ => None,
        }
    }
}

impl TryFrom<QuoteDraft> for Quote {
    type Error = QuoteErrors;

    fn try_from(draft: QuoteDraft) -> Result<Self, Self::Error> {
        Self::try_from_draft(draft)
    }
}

impl From<Quote> for QuoteDraft {
    fn from(quote: Quote) -> Self {
        Self::from(&quote)
    }
}

impl From<&Quote> for QuoteDraft {
    fn from(quote: &Quote) -> Self {
        let currency = quote.currency();
        Self {
            quote_id: quote.quote_id.to_string(),
            quote_number: quote.quote_number.clone(),
            account_id: quote.account_id.to_string(),
            account_name: quote.account_name.clone(),
            opportunity_id: quote.opportunity_id.to_string(),
            currency: currency.code().to_owned(),
            net_amount: quote.net_amount.amount().to_string(),
            payment_terms: quote.payment_terms.clone(),
            payment_method: quote.payment_method.clone(),
            lines: quote
                .lines
                .iter()
                .map(|line| line_draft(line, currency))
                .collect(),
        }
    }
}

/// Renders a validated line in its persisted shape: money with the currency's
/// minor units, quantity and discount normalized.
fn line_draft(line: &QuoteLine, currency: Currency) -> QuoteLineDraft {
    QuoteLineDraft {
        product_code: line.product_code.clone(),
        description: line.description.clone(),
        quantity: line.quantity.normalize().to_string(),
        unit_price: currency.format(line.unit_price),
        discount_percent: line.discount_percent.normalize().to_string(),
        net_total: currency.format(line.net_total),
    }
}

/// JSON object of a line draft, with the same keys serde derives.
fn line_json(draft: QuoteLineDraft) -> Value {
    let mut object = Map::new();
    object.insert("product_code".into(), Value::String(draft.product_code));
    object.insert("description".into(), Value::String(draft.description));
    object.insert("quantity".into(), Value::String(draft.quantity));
    object.insert("unit_price".into(), Value::String(draft.unit_price));
    object.insert(
        "discount_percent".into(),
        Value::String(draft.discount_percent),
    );
    object.insert("net_total".into(), Value::String(draft.net_total));
    Value::Object(object)
}

/// Shows an amount for a message, in the currency's rendering when known.
fn show(amount: Decimal, currency: Option<Currency>) -> String {
    match currency {
        Some(currency) => currency.format(amount),
        None => amount.normalize().to_string(),
    }
}

/// The CPQ line rule: quantity × unit price × (1 − discount/100), rounded
/// half-even to the minor unit. `None` on arithmetic overflow.
fn expected_net_total(
    quantity: Decimal,
    unit_price: Decimal,
    discount_percent: Decimal,
    currency: Currency,
) -> Option<Decimal> {
    let gross = quantity.checked_mul(unit_price)?;
    let kept_percent = Decimal::ONE_HUNDRED.checked_sub(discount_percent)?;
    let net = gross
        .checked_mul(kept_percent)?
        .checked_div(Decimal::ONE_HUNDRED)?;
    Some(currency.round(net))
}

/// Validates line `index`; returns the line when fully valid, and the stated
/// net total whenever it parsed (for the quote-level sum check).
fn validate_line(
    p: &mut Problems,
    index: usize,
    line: &QuoteLineDraft,
    currency: Option<Currency>,
) -> (Option<QuoteLine>, Option<Decimal>) {
    let at = |field: &str| format!("lines[{index}].{field}");

    let product_code = p.required_text(&at("product_code"), &line.product_code);
    let description = p.text(
        &at("description"),
        &line.description,
        false,
        MAX_DESCRIPTION_CHARS,
    );
    let quantity = p.decimal(&at("quantity"), &line.quantity).filter(|q| {
        let ok = q.is_sign_positive() && !q.is_zero();
        if !ok {
            p.push(at("quantity"), format!("must be greater than 0, got {q}"));
        }
        ok
    });
    let unit_price = p.decimal(&at("unit_price"), &line.unit_price).filter(|u| {
        let ok = !u.is_sign_negative() || u.is_zero();
        if !ok {
            p.push(at("unit_price"), format!("must not be negative, got {u}"));
        }
        ok
    });
    let discount_percent = p
        .decimal(&at("discount_percent"), &line.discount_percent)
        .filter(|d| {
            let ok = *d >= Decimal::ZERO && *d <= Decimal::ONE_HUNDRED;
            if !ok {
                p.push(
                    at("discount_percent"),
                    format!("must be between 0 and 100, got {d}"),
                );
            }
            ok
        });
    let stated = p.decimal(&at("net_total"), &line.net_total);
    let net_total = match (stated, currency) {
        (Some(total), Some(currency)) => p
            .check(&at("net_total"), Money::new(total, currency))
            .map(|money| money.amount()),
        _ => None,
    };

    if let (Some(quantity), Some(unit_price), Some(discount_percent), Some(net_total), Some(cur)) =
        (quantity, unit_price, discount_percent, net_total, currency)
    {
        match expected_net_total(quantity, unit_price, discount_percent, cur) {
            None => p.push(
                at("net_total"),
                format!(
                    "cannot compute the expected net total: {} × {} less {}% overflows",
                    quantity.normalize(),
                    cur.format(unit_price),
                    discount_percent.normalize()
                ),
            ),
            Some(expected) if expected != net_total => p.push(
                at("net_total"),
                format!(
                    "expected {} ({} × {} less {}%), got {}",
                    cur.format(expected),
                    quantity.normalize(),
                    cur.format(unit_price),
                    discount_percent.normalize(),
                    cur.format(net_total)
                ),
            ),
            Some(_) => {}
        }
    }

    let validated = match (
        product_code,
        description,
        quantity,
        unit_price,
        discount_percent,
        net_total,
    ) {
        (
            Some(product_code),
            Some(description),
            Some(quantity),
            Some(unit_price),
            Some(discount_percent),
            Some(net_total),
        ) => Some(QuoteLine {
            product_code,
            description,
            quantity: quantity.normalize(),
            unit_price,
            discount_percent: discount_percent.normalize(),
            net_total,
        }),
        _ => None,
    };
    (validated, stated)
}

/// Accumulates field errors while validation carries on past the first.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl fmt::Display) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.to_string(),
        });
    }

    /// Records the error of `result`, if any, against `field`.
    fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.push(field, e)).ok()
    }

    fn decimal(&mut self, field: &str, text: &str) -> Option<Decimal> {
        self.check(field, parse_decimal(text))
    }

    /// Trims and length-checks free text; `required` rejects blank values.
    fn text(&mut self, field: &str, value: &str, required: bool, max: usize) -> Option<String> {
        let trimmed = value.trim();
        if required && trimmed.is_empty() {
            self.push(field, "must not be empty");
            return None;
        }
        let len = trimmed.chars().count();
        if len > max {
            self.push(
                field,
                format!("is {len} characters long, at most {max} are allowed"),
            );
            return None;
        }
        Some(trimmed.to_owned())
    }

    fn required_text(&mut self, field: &str, value: &str) -> Option<String> {
        self.text(field, value, true, MAX_TEXT_CHARS)
    }

    /// Finishes validation; guarantees a non-empty report even if a caller
    /// bug dropped a value without recording why.
    fn into_errors(mut self) -> QuoteErrors {
        if self.0.is_empty() {
            self.push("quote", "incomplete quote");
        }
        QuoteErrors(self.0)
    }
}

/// Shared known-good quote for tests across the crate; not part of the
/// product API.
#[doc(hidden)]
pub mod fixtures {
    use super::{Quote, QuoteDraft, QuoteLineDraft};

    /// Draft of [`quote`], for tests that break one field on purpose.
    #[must_use]
    pub fn draft() -> QuoteDraft {
        QuoteDraft {
            quote_id: "a0q5e00000ABCDEFGH".into(),
            quote_number: "Q-00042".into(),
            account_id: "0015e00000ABCDEFGH".into(),
            account_name: "Acme Corp".into(),
            opportunity_id: "0065e00000ABCDEFGH".into(),
            currency: "USD".into(),
            net_amount: "11300.00".into(),
            payment_terms: "Net 30".into(),
            payment_method: "pm_card_visa".into(),
            lines: vec![
                QuoteLineDraft {
                    product_code: "PLAT-ANNUAL".into(),
                    description: "Platform licence, annual".into(),
                    quantity: "10".into(),
                    unit_price: "1200.00".into(),
                    discount_percent: "10".into(),
                    net_total: "10800.00".into(),
                },
                QuoteLineDraft {
                    product_code: "ONBOARD".into(),
                    description: "Onboarding package".into(),
                    quantity: "1".into(),
                    unit_price: "500.00".into(),
                    discount_percent: "0".into(),
                    net_total: "500.00".into(),
                },
            ],
        }
    }

    /// A valid two-line USD quote (10 × 1200.00 less 10% + 1 × 500.00 =
    /// 11300.00).
    #[must_use]
    // The draft is fixed data proven valid by `fixture_is_valid` in the tests
    // below, so this cannot fail.
    #[allow(clippy::expect_used)]
    pub fn quote() -> Quote {
        Quote::try_from_draft(draft()).expect("fixture quote draft is valid")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::fixtures::draft;
    use super::*;
    use proptest::prelude::*;

    fn errors(draft: QuoteDraft) -> QuoteErrors {
        Quote::try_from_draft(draft).unwrap_err()
    }

    fn message(errors: &QuoteErrors, field: &str) -> String {
        errors
            .errors()
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
            .unwrap_or_else(|| panic!("no error for {field} in:\n{errors}"))
    }

    fn one_line(quantity: &str, unit_price: &str, discount: &str, net: &str) -> QuoteDraft {
        let mut d = draft();
        d.lines.truncate(1);
        d.lines[0].quantity = quantity.into();
        d.lines[0].unit_price = unit_price.into();
        d.lines[0].discount_percent = discount.into();
        d.lines[0].net_total = net.into();
        d.net_amount = net.into();
        d
    }

    #[test]
    fn fixture_is_valid() {
        let q = fixtures::quote();
        assert_eq!(q.quote_id().as_str(), "a0q5e00000ABCDEFGH");
        assert_eq!(q.account_id().as_str(), "0015e00000ABCDEFGH");
        assert_eq!(q.opportunity_id().as_str(), "0065e00000ABCDEFGH");
        assert_eq!(q.quote_number(), "Q-00042");
        assert_eq!(q.account_name(), "Acme Corp");
        assert_eq!(q.currency().code(), "USD");
        assert_eq!(q.net_amount().to_string(), "11300.00 USD");
        assert_eq!(q.payment_terms(), "Net 30");
        assert_eq!(q.payment_method(), "pm_card_visa");
        assert_eq!(q.lines().len(), 2);
        let line = &q.lines()[0];
        assert_eq!(line.product_code(), "PLAT-ANNUAL");
        assert_eq!(line.description(), "Platform licence, annual");
        assert_eq!(line.quantity(), Decimal::from(10));
        assert_eq!(line.unit_price(), Decimal::from(1200));
        assert_eq!(line.discount_percent(), Decimal::from(10));
        assert_eq!(line.net_total(), Decimal::from(10800));
    }

    #[test]
    fn invalid_ids_name_their_fields() {
        let mut d = draft();
        d.quote_id = "nope".into();
        d.account_id = "0015e00000ABCDEFG".into();
        d.opportunity_id = String::new();
        let e = errors(d);
        assert_eq!(
            message(&e, "quote_id"),
            "quote id `nope` is not a Salesforce id: expected 15 or 18 letters and digits"
        );
        assert!(message(&e, "account_id").starts_with("account id"));
        assert!(message(&e, "opportunity_id").starts_with("opportunity id"));
        assert_eq!(e.errors().len(), 3);
    }

    #[test]
    fn required_text_must_not_be_blank() {
        let mut d = draft();
        d.quote_number = "  ".into();
        d.account_name = String::new();
        d.payment_terms = "\t".into();
        d.payment_method = String::new();
        d.lines[1].product_code = " ".into();
        let e = errors(d);
        for field in [
            "quote_number",
            "account_name",
            "payment_terms",
            "payment_method",
            "lines[1].product_code",
        ] {
            assert_eq!(message(&e, field), "must not be empty");
        }
        assert_eq!(e.errors().len(), 5);
    }

    #[test]
    fn text_is_trimmed_and_length_limited() {
        let mut d = draft();
        d.account_name = format!("  {}  ", "a".repeat(255));
        d.lines[0].description = String::new();
        let q = Quote::try_from_draft(d).unwrap();
        assert_eq!(q.account_name(), "a".repeat(255));
        assert_eq!(q.lines()[0].description(), "");

        let mut d = draft();
        d.quote_number = "n".repeat(256);
        d.lines[0].description = "d".repeat(1001);
        let e = errors(d);
        assert_eq!(
            message(&e, "quote_number"),
            "is 256 characters long, at most 255 are allowed"
        );
        assert_eq!(
            message(&e, "lines[0].description"),
            "is 1001 characters long, at most 1000 are allowed"
        );
    }

    #[test]
    fn unknown_currency_is_reported_alongside_other_problems() {
        let mut d = draft();
        d.currency = "XYZ".into();
        d.lines[0].quantity = "ten".into();
        let e = errors(d);
        assert_eq!(message(&e, "currency"), "currency `XYZ` is not supported");
        assert!(message(&e, "lines[0].quantity").contains("`ten` is not a decimal number"));
    }

    #[test]
    fn unparsable_amounts_name_their_fields() {
        let mut d = draft();
        d.net_amount = "11,300.00".into();
        d.lines[0].quantity = "1e1".into();
        d.lines[0].unit_price = String::new();
        d.lines[1].discount_percent = "0.0.0".into();
        d.lines[1].net_total = "500.00 USD".into();
        let e = errors(d);
        for field in [
            "net_amount",
            "lines[0].quantity",
            "lines[0].unit_price",
            "lines[1].discount_percent",
            "lines[1].net_total",
        ] {
            assert!(
                message(&e, field).contains("is not a decimal number"),
                "{field}: {e}"
            );
        }
        assert_eq!(e.errors().len(), 5, "{e}");
    }

    #[test]
    fn quantity_must_be_positive() {
        for q in ["0", "-1", "0.000"] {
            let e = errors(one_line(q, "1.00", "0", "0.00"));
            assert!(
                message(&e, "lines[0].quantity").starts_with("must be greater than 0"),
                "{e}"
            );
        }
    }

    #[test]
    fn unit_price_must_not_be_negative() {
        let e = errors(one_line("1", "-0.01", "0", "-0.01"));
        assert_eq!(
            message(&e, "lines[0].unit_price"),
            "must not be negative, got -0.01"
        );
        assert!(Quote::try_from_draft(one_line("3", "0", "0", "0.00")).is_ok());
    }

    #[test]
    fn discount_must_be_a_percentage() {
        for d in ["-1", "100.01", "250"] {
            let e = errors(one_line("1", "1.00", d, "1.00"));
            assert!(
                message(&e, "lines[0].discount_percent").starts_with("must be between 0 and 100"),
                "{e}"
            );
        }
        assert!(Quote::try_from_draft(one_line("2", "5.00", "100", "0.00")).is_ok());
        assert!(Quote::try_from_draft(one_line("2", "5.00", "2.5", "9.75")).is_ok());
    }

    #[test]
    fn money_fields_respect_minor_units() {
        let mut d = one_line("1", "10.505", "0", "10.505");
        d.lines[0].net_total = "10.505".into();
        let e = errors(d);
        assert_eq!(
            message(&e, "lines[0].net_total"),
            "10.505 has 3 decimal places but USD allows at most 2"
        );
        assert_eq!(
            message(&e, "net_amount"),
            "10.505 has 3 decimal places but USD allows at most 2"
        );
        // Trailing zeros are not extra precision.
        assert!(Quote::try_from_draft(one_line("1", "10.50", "0", "10.5000")).is_ok());
    }

    #[test]
    fn at_least_one_line() {
        let mut d = draft();
        d.lines.clear();
        let e = errors(d);
        assert_eq!(message(&e, "lines"), "a quote needs at least one line");
        assert_eq!(e.errors().len(), 1, "{e}");
    }

    #[test]
    fn line_net_total_must_follow_the_rule() {
        let mut d = draft();
        d.lines[0].net_total = "10800.50".into();
        d.net_amount = "11300.50".into();
        let e = errors(d);
        assert_eq!(
            message(&e, "lines[0].net_total"),
            "expected 10800.00 (10 × 1200.00 less 10%), got 10800.50"
        );
        assert_eq!(e.errors().len(), 1, "{e}");
    }

    #[test]
    fn net_amount_must_equal_the_sum_of_lines() {
        let mut d = draft();
        d.net_amount = "11300.01".into();
        let e = errors(d);
        assert_eq!(
            message(&e, "net_amount"),
            "expected 11300.00 (sum of line net totals), got 11300.01"
        );
        assert_eq!(e.errors().len(), 1, "{e}");
    }

    #[test]
    fn line_rounding_is_half_even() {
        assert!(Quote::try_from_draft(one_line("1", "0.125", "0", "0.12")).is_ok());
        assert!(Quote::try_from_draft(one_line("1", "0.135", "0", "0.14")).is_ok());
        let e = errors(one_line("1", "0.125", "0", "0.13"));
        assert_eq!(
            message(&e, "lines[0].net_total"),
            "expected 0.12 (1 × 0.125 less 0%), got 0.13"
        );
        // 3 × 0.99 less 12.5% = 2.59875 → 2.60
        assert!(Quote::try_from_draft(one_line("3", "0.99", "12.5", "2.60")).is_ok());

        let jpy = |q: &str, p: &str, net: &str| {
            let mut d = one_line(q, p, "0", net);
            d.currency = "JPY".into();
            Quote::try_from_draft(d)
        };
        assert!(jpy("1", "2.5", "2").is_ok());
        assert!(jpy("3", "2.5", "8").is_ok());
        let e = jpy("1", "2.5", "3").unwrap_err();
        assert_eq!(
            message(&e, "lines[0].net_total"),
            "expected 2 (1 × 2.5 less 0%), got 3"
        );
        assert!(
            message(&jpy("1", "2.5", "2.5").unwrap_err(), "lines[0].net_total")
                .contains("JPY allows at most 0")
        );
    }

    #[test]
    fn overflow_is_a_field_error_not_a_panic() {
        let e = errors(one_line(
            "79228162514264337593543950335",
            "2.00",
            "0",
            "1.00",
        ));
        assert!(
            message(&e, "lines[0].net_total").contains("overflows"),
            "{e}"
        );

        let mut d = draft();
        d.lines[0] = d.lines[1].clone();
        d.lines[0].quantity = "79228162514264337593543950335".into();
        d.lines[0].unit_price = "1".into();
        d.lines[0].net_total = "79228162514264337593543950335".into();
        d.currency = "JPY".into();
        d.lines[1].unit_price = "500".into();
        d.lines[1].net_total = "500".into();
        let e = errors(d);
        assert_eq!(
            message(&e, "net_amount"),
            "the sum of the line net totals overflows"
        );
    }

    #[test]
    fn all_problems_are_collected() {
        let mut d = draft();
        d.quote_id = "x".into();
        d.currency = "usd".into();
        d.payment_method = String::new();
        d.lines[0].quantity = "0".into();
        d.lines[1].discount_percent = "101".into();
        let e = errors(d);
        let fields: Vec<&str> = e.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "quote_id",
                "currency",
                "payment_method",
                "lines[0].quantity",
                "lines[1].discount_percent"
            ]
        );
        let text = e.to_string();
        assert_eq!(text.lines().count(), 5);
        assert!(text.starts_with("quote_id: quote id `x`"), "{text}");
        assert!(text.ends_with("lines[1].discount_percent: must be between 0 and 100, got 101"));
        assert!(e.has_field("currency"));
        assert!(!e.has_field("account_id"));
        assert_eq!(e.into_vec().len(), 5);
    }

    #[test]
    fn serde_has_a_stable_shape_and_round_trips() {
        let q = fixtures::quote();
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"quote_id":"a0q5e00000ABCDEFGH","quote_number":"Q-00042","#,
                r#""account_id":"0015e00000ABCDEFGH","account_name":"Acme Corp","#,
                r#""opportunity_id":"0065e00000ABCDEFGH","currency":"USD","#,
                r#""net_amount":"11300.00","payment_terms":"Net 30","#,
                r#""payment_method":"pm_card_visa","lines":["#,
                r#"{"product_code":"PLAT-ANNUAL","description":"Platform licence, annual","#,
                r#""quantity":"10","unit_price":"1200.00","discount_percent":"10","#,
                r#""net_total":"10800.00"},"#,
                r#"{"product_code":"ONBOARD","description":"Onboarding package","#,
                r#""quantity":"1","unit_price":"500.00","discount_percent":"0","#,
                r#""net_total":"500.00"}]}"#
            )
        );
        let back: Quote = serde_json::from_str(&json).unwrap();
        assert_eq!(back, q);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn serde_renders_amounts_canonically() {
        let mut d = one_line("2.50", "0.125", "2.50", "0.30");
        d.lines[0].net_total = "0.3".into();
        d.net_amount = "0.300".into();
        let q = Quote::try_from_draft(d).unwrap();
        let value = serde_json::to_value(&q).unwrap();
        assert_eq!(value["net_amount"], "0.30");
        assert_eq!(value["lines"][0]["quantity"], "2.5");
        assert_eq!(value["lines"][0]["unit_price"], "0.125");
        assert_eq!(value["lines"][0]["discount_percent"], "2.5");
        assert_eq!(value["lines"][0]["net_total"], "0.30");
    }

    #[test]
    fn deserialize_revalidates_and_names_the_field() {
        let mut value = serde_json::to_value(fixtures::quote()).unwrap();
        value["lines"][1]["net_total"] = "499.99".into();
        let err = serde_json::from_value::<Quote>(value).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("lines[1].net_total: expected 500.00"),
            "{text}"
        );
        assert!(text.contains("net_amount: expected 11299.99"), "{text}");

        let mut value = serde_json::to_value(fixtures::quote()).unwrap();
        value["lines"][0]["quantity"] = 10.into();
        assert!(serde_json::from_value::<Quote>(value).is_err());

        let mut value = serde_json::to_value(fixtures::quote()).unwrap();
        value.as_object_mut().unwrap().remove("payment_method");
        let err = serde_json::from_value::<Quote>(value).unwrap_err();
        assert!(err.to_string().contains("payment_method"), "{err}");
    }

    #[test]
    fn field_matches_the_serialized_form() {
        let q = fixtures::quote();
        let value = serde_json::to_value(&q).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), Quote::FIELDS.len());
        for name in Quote::FIELDS {
            assert_eq!(q.field(name).as_ref(), object.get(*name), "{name}");
        }
        assert_eq!(q.field("net_amount"), Some(Value::from("11300.00")));
        assert_eq!(q.field("lines").unwrap().as_array().unwrap().len(), 2);
        assert_eq!(q.field("nope"), None);
        assert_eq!(q.field("lines[0]"), None);
    }

    #[test]
    fn draft_conversion_round_trips() {
        let q = fixtures::quote();
        let d = QuoteDraft::from(&q);
        assert_eq!(d, draft());
        assert_eq!(Quote::try_from(d).unwrap(), q);
    }

    /// Independent oracle for the line rule in integer cents:
    /// quantity × cents × (10000 − basis points) / 10000, half-even.
    fn oracle_cents(quantity: i128, cents: i128, discount_bp: i128) -> i128 {
        let numerator = quantity * cents * (10_000 - discount_bp);
        let (q, r) = (numerator / 10_000, numerator % 10_000);
        match (2 * r).cmp(&10_000) {
            std::cmp::Ordering::Less => q,
            std::cmp::Ordering::Greater => q + 1,
            std::cmp::Ordering::Equal => q + (q % 2),
        }
    }

    fn cents_text(cents: i128) -> String {
        Decimal::from_i128_with_scale(cents, 2).to_string()
    }

    prop_compose! {
        fn line()(quantity in 1_i128..1000, cents in 0_i128..100_000_000, bp in 0_i128..=10_000)
            -> (QuoteLineDraft, i128) {
            let net = oracle_cents(quantity, cents, bp);
            let draft = QuoteLineDraft {
                product_code: "SKU".into(),
                description: String::new(),
                quantity: quantity.to_string(),
                unit_price: cents_text(cents),
                discount_percent: Decimal::from_i128_with_scale(bp, 2).to_string(),
                net_total: cents_text(net),
            };
            (draft, net)
        }
    }

    proptest! {
        #[test]
        fn rule_computed_lines_validate_and_one_cent_off_fails(
            lines in proptest::collection::vec(line(), 1..6),
            pick in any::<proptest::sample::Index>(),
            up in any::<bool>(),
        ) {
            let mut d = draft();
            d.net_amount = cents_text(lines.iter().map(|(_, net)| net).sum());
            d.lines = lines.iter().map(|(line, _)| line.clone()).collect();
            prop_assert!(Quote::try_from_draft(d.clone()).is_ok(), "{:?}", d);

            let i = pick.index(lines.len());
            let net = lines[i].1;
            let altered = if up || net == 0 { net + 1 } else { net - 1 };
            d.lines[i].net_total = cents_text(altered);
            let e = Quote::try_from_draft(d).unwrap_err();
            let field = format!("lines[{i}].net_total");
            prop_assert!(e.has_field(&field), "{}", e);
            prop_assert!(e.errors().iter().all(|f| f.field == field || f.field == "net_amount"), "{}", e);
        }
    }
}
