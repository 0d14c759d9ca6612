//! The simulated systems: which command types each domain knows, and how
//! their sandboxes answer a command performed for the first time.
//!
//! Pure functions of the command; deduplication, caching and tombstones are
//! the [decision](crate::decision)'s job.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::ledger::EffectKind;

/// The payment method the payment sandbox accepts.
pub(crate) const CARD_VISA: &str = "pm_card_visa";
/// The payment method the payment sandbox declines, as Stripe's test mode.
pub(crate) const CARD_DECLINED: &str = "pm_card_chargeDeclined";
/// An account whose name contains this is on credit hold in the ERP.
pub(crate) const CREDIT_HOLD: &str = "Credit Hold";

/// A command type a simulated connector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    CreateOrder,
    CancelOrder,
    IssueInvoice,
    VoidInvoice,
    Collect,
    Refund,
    ReportStatus,
}

impl Command {
    /// The command `command_type` as the `domain` connector knows it; `None`
    /// for a type it does not know (or another domain's).
    pub(crate) fn parse(domain: &str, command_type: &str) -> Option<Self> {
        let command = match command_type {
            "erp.create_order" => Self::CreateOrder,
            "erp.cancel_order" => Self::CancelOrder,
            "billing.issue_invoice" => Self::IssueInvoice,
            "billing.void_invoice" => Self::VoidInvoice,
            "payment.collect" => Self::Collect,
            "payment.refund" => Self::Refund,
            "salesforce.report_status" => Self::ReportStatus,
            _ => return None,
        };
        command_type
            .strip_prefix(domain)
            .is_some_and(|rest| rest.starts_with('.'))
            .then_some(command)
    }

    /// Whether it undoes another command (and so is never failed at random).
    pub(crate) fn is_compensation(self) -> bool {
        matches!(self, Self::CancelOrder | Self::VoidInvoice | Self::Refund)
    }

    /// The effect it has when performed.
    pub(crate) fn effect(self) -> EffectKind {
        match self {
            Self::CreateOrder => EffectKind::OrderCreated,
            Self::CancelOrder => EffectKind::OrderCancelled,
            Self::IssueInvoice => EffectKind::InvoiceIssued,
            Self::VoidInvoice => EffectKind::InvoiceVoided,
            Self::Collect => EffectKind::PaymentCollected,
            Self::Refund => EffectKind::PaymentRefunded,
            Self::ReportStatus => EffectKind::StatusReported,
        }
    }
}

/// What a sandbox does with an action or notification performed for the
/// first time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// It took effect; the success payload.
    Done {
        /// The success reply's payload.
        output: Value,
        /// For a status report, the outcome reported.
        reported: Option<String>,
    },
    /// Refused for good, with the reason.
    Refused(String),
}

/// Performs `command` (not a compensation) with `payload`; `key` names what
/// the sandbox creates, as a real system given it as an external reference.
pub(crate) fn perform(command: Command, key: &str, payload: &Value) -> Outcome {
    match command {
        Command::CreateOrder => match text(payload, "account_name") {
            Err(refused) => refused,
            Ok(name) if name.contains(CREDIT_HOLD) => Outcome::Refused("credit hold".into()),
            Ok(_) => done(json!({"order_id": reference("SO", key)})),
        },
        Command::IssueInvoice => done(json!({"invoice_id": reference("INV", key)})),
        Command::Collect => match text(payload, "payment_method") {
            Err(refused) => refused,
            Ok(CARD_VISA) => done(json!({"payment_id": reference("PAY", key)})),
            Ok(CARD_DECLINED) => Outcome::Refused("card declined: generic_decline".into()),
            Ok(other) => Outcome::Refused(format!(
                "card declined: `{other}` is not a test payment method of this sandbox"
            )),
        },
        Command::ReportStatus => match text(payload, "outcome") {
            Err(refused) => refused,
            Ok(outcome) => Outcome::Done {
                output: json!({}),
                reported: Some(outcome.to_owned()),
            },
        },
        // Compensations succeed whenever they run: nothing in the sandbox
        // refuses to cancel, void or refund what it did.
        Command::CancelOrder | Command::VoidInvoice | Command::Refund => done(json!({})),
    }
}

fn done(output: Value) -> Outcome {
    Outcome::Done {
        output,
        reported: None,
    }
}

/// A string field of the payload, or the refusal a real system would give.
fn text<'p>(payload: &'p Value, field: &str) -> Result<&'p str, Outcome> {
    payload[field]
        .as_str()
        .ok_or_else(|| Outcome::Refused(format!("invalid payload: `{field}` must be a string")))
}

/// A stable id derived from the key: the same key always names the same
/// order, invoice or payment.
fn reference(prefix: &str, key: &str) -> String {
    let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).simple();
    format!("{prefix}-{}", id.to_string()[..12].to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_domain_knows_its_own_commands_only() {
        assert_eq!(
            Command::parse("erp", "erp.create_order"),
            Some(Command::CreateOrder)
        );
        assert_eq!(Command::parse("billing", "erp.create_order"), None);
        assert_eq!(Command::parse("erp", "erp.teleport_order"), None);
        assert_eq!(
            Command::parse("salesforce", "salesforce.report_status"),
            Some(Command::ReportStatus)
        );
        assert!(Command::Refund.is_compensation());
        assert!(!Command::ReportStatus.is_compensation());
    }

    #[test]
    fn credit_hold_is_case_sensitive() {
        let refused = perform(
            Command::CreateOrder,
            "k",
            &json!({"account_name": "Acme Credit Hold Ltd"}),
        );
        assert_eq!(refused, Outcome::Refused("credit hold".into()));
        let Outcome::Done { output, .. } = perform(
            Command::CreateOrder,
            "k",
            &json!({"account_name": "Acme credit hold Ltd"}),
        ) else {
            panic!("lowercase is not a credit hold");
        };
        assert!(output["order_id"].as_str().unwrap().starts_with("SO-"));
    }

    #[test]
    fn only_the_visa_test_card_pays() {
        let pay = |method: &str| {
            perform(
                Command::Collect,
                "k",
                &json!({"payment_method": method, "amount": "1.00"}),
            )
        };
        assert!(matches!(pay(CARD_VISA), Outcome::Done { .. }));
        for method in [CARD_DECLINED, "pm_card_mastercard", "cash"] {
            let Outcome::Refused(reason) = pay(method) else {
                panic!("{method} is declined");
            };
            assert!(reason.contains("declined"), "{reason}");
        }
    }

    #[test]
    fn ids_are_stable_per_key() {
        let payload = json!({"account_name": "Acme"});
        let first = perform(Command::CreateOrder, "a", &payload);
        assert_eq!(first, perform(Command::CreateOrder, "a", &payload));
        assert_ne!(first, perform(Command::CreateOrder, "b", &payload));
    }

    #[test]
    fn a_report_records_its_outcome_and_a_missing_field_is_refused() {
        assert_eq!(
            perform(
                Command::ReportStatus,
                "k",
                &json!({"outcome": "compensated"})
            ),
            Outcome::Done {
                output: json!({}),
                reported: Some("compensated".into())
            }
        );
        let Outcome::Refused(reason) = perform(Command::Collect, "k", &json!({})) else {
            panic!("no payment method");
        };
        assert!(reason.contains("payment_method"), "{reason}");
    }
}
