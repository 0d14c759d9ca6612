//! Where each field of a command's input comes from.
//!
//! A step's input is declared as `field = "source"` pairs, so that a workflow
//! author can say what a connector receives without writing code, and so that
//! the validator can prove every reference points at data that will exist.
//!
//! Sources:
//! - `quote.<field>`: a field of the accepted quote (see [`Quote::FIELDS`]);
//! - `workflow.id`: the workflow's id;
//! - `workflow.outcome`: how the money flow ended (notification steps only);
//! - `workflow.failure_reason`: why it did not complete, null when it did
//!   (notification steps only);
//! - `workflow.outcome_at`: when the outcome was set (the first notification
//!   step only: its input is built in the very transition that set it, and
//!   the record keeps no time of its own);
//! - `steps.<step>.output.<field>`: a field of an earlier step's output. A
//!   trailing `?` makes it optional (null when that output does not exist),
//!   which is required wherever the step may not have produced one.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::domain::ids::WorkflowId;
use crate::domain::quote::Quote;

/// One source of an input field, resolved against the definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// A top-level field of the quote, by its serialized name.
    Quote(String),
    /// The workflow's own id.
    WorkflowId,
    /// The outcome of the money flow, once it has one.
    WorkflowOutcome,
    /// Why the money flow did not complete; null when it did.
    WorkflowFailureReason,
    /// When the outcome was set, as RFC 3339 UTC with milliseconds.
    WorkflowOutcomeAt,
    /// A field of a step's validated output.
    StepOutput {
        /// Index of the step in the definition.
        step: usize,
        /// Name of the step, for messages.
        step_name: String,
        /// Output field.
        field: String,
        /// Whether a missing output yields null instead of an error.
        optional: bool,
    },
}

/// A reference as written, before the definition resolves step names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    Quote(String),
    WorkflowId,
    WorkflowOutcome,
    WorkflowFailureReason,
    WorkflowOutcomeAt,
    StepOutput {
        step: String,
        field: String,
        optional: bool,
    },
}

impl Reference {
    /// Parses the source syntax; the error says what was expected.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (body, optional) = match text.strip_suffix('?') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let parts: Vec<&str> = body.split('.').collect();
        let reference = match parts.as_slice() {
            ["quote", field] => Reference::Quote((*field).to_owned()),
            ["workflow", "id"] => Reference::WorkflowId,
            ["workflow", "outcome"] => Reference::WorkflowOutcome,
            ["workflow", "failure_reason"] => Reference::WorkflowFailureReason,
            ["workflow", "outcome_at"] => Reference::WorkflowOutcomeAt,
            ["steps", step, "output", field] if !step.is_empty() && !field.is_empty() => {
                Reference::StepOutput {
                    step: (*step).to_owned(),
                    field: (*field).to_owned(),
                    optional,
                }
            }
            _ => {
                return Err(format!(
                    "`{text}` is not a known source: expected `quote.<field>`, `workflow.id`, \
                     `workflow.outcome`, `workflow.failure_reason`, `workflow.outcome_at` or \
                     `steps.<step>.output.<field>[?]`"
                ));
            }
        };
        if optional && !matches!(reference, Reference::StepOutput { .. }) {
            return Err(format!("`{text}`: only step outputs can be optional (`?`)"));
        }
        Ok(reference)
    }
}

/// The declared input of a step or compensation: ordered field sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputSpec {
    fields: Vec<(String, InputSource)>,
}

/// What an input is built from at the moment a command is first sent.
#[derive(Debug, Clone, Copy)]
pub struct InputContext<'a> {
    /// The workflow the command belongs to.
    pub workflow_id: WorkflowId,
    /// The quote being fulfilled.
    pub quote: &'a Quote,
    /// The money flow's outcome, if it has ended.
    pub outcome: Option<&'a str>,
    /// Why the money flow did not complete, if it has ended otherwise.
    pub failure_reason: Option<&'a str>,
    /// When the outcome was set, if the input is built in the transition
    /// that set it; at any other moment it is unknown.
    pub outcome_at: Option<DateTime<Utc>>,
    /// Each step's kept output, by step index.
    pub outputs: &'a [Option<&'a Value>],
}

impl InputSpec {
    pub(crate) fn new(fields: Vec<(String, InputSource)>) -> Self {
        Self { fields }
    }

    /// Field names and their sources, sorted by field name.
    pub fn fields(&self) -> &[(String, InputSource)] {
        &self.fields
    }

    /// Builds the JSON object a connector receives. Fails only when a
    /// required value is absent, which validation rules out for normal runs
    /// (an operator's repairs are the exception), so the caller decides.
    pub fn build(&self, context: &InputContext<'_>) -> Result<Value, String> {
        let mut object = Map::with_capacity(self.fields.len());
        for (name, source) in &self.fields {
            let value = match source {
                InputSource::Quote(field) => context
                    .quote
                    .field(field)
                    .ok_or_else(|| format!("input `{name}`: the quote has no field `{field}`"))?,
                InputSource::WorkflowId => Value::String(context.workflow_id.to_string()),
                InputSource::WorkflowOutcome => context
                    .outcome
                    .map_or(Value::Null, |outcome| Value::String(outcome.to_owned())),
                InputSource::WorkflowFailureReason => context
                    .failure_reason
                    .map_or(Value::Null, |reason| Value::String(reason.to_owned())),
                InputSource::WorkflowOutcomeAt => {
                    let at = context.outcome_at.ok_or_else(|| {
                        format!(
                            "input `{name}`: when the outcome was set is known only in the \
                             transition that set it"
                        )
                    })?;
                    Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true))
                }
                InputSource::StepOutput {
                    step,
                    step_name,
                    field,
                    optional,
                } => {
                    let found = context
                        .outputs
                        .get(*step)
                        .copied()
                        .flatten()
                        .and_then(|output| output.get(field));
                    match (found, optional) {
                        (Some(value), _) => value.clone(),
                        (None, true) => Value::Null,
                        (None, false) => {
                            return Err(format!(
                                "input `{name}`: step `{step_name}` has no output field `{field}`"
                            ));
                        }
                    }
                }
            };
            object.insert(name.clone(), value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_source_form() {
        assert_eq!(
            Reference::parse("quote.net_amount"),
            Ok(Reference::Quote("net_amount".into()))
        );
        assert_eq!(Reference::parse("workflow.id"), Ok(Reference::WorkflowId));
        assert_eq!(
            Reference::parse("workflow.outcome"),
            Ok(Reference::WorkflowOutcome)
        );
        assert_eq!(
            Reference::parse("workflow.failure_reason"),
            Ok(Reference::WorkflowFailureReason)
        );
        assert_eq!(
            Reference::parse("workflow.outcome_at"),
            Ok(Reference::WorkflowOutcomeAt)
        );
        assert_eq!(
            Reference::parse("steps.create_order.output.order_id?"),
            Ok(Reference::StepOutput {
                step: "create_order".into(),
                field: "order_id".into(),
                optional: true
            })
        );
    }

    #[test]
    fn rejects_unknown_forms_and_optional_non_outputs() {
        assert!(Reference::parse("quote").is_err());
        assert!(Reference::parse("steps.a.order_id").is_err());
        assert!(Reference::parse("env.HOME").is_err());
        let error = Reference::parse("quote.net_amount?").unwrap_err();
        assert!(error.contains("only step outputs"), "{error}");
        for text in ["workflow.failure_reason?", "workflow.outcome_at?"] {
            let error = Reference::parse(text).unwrap_err();
            assert!(error.contains("only step outputs"), "{error}");
        }
        let error = Reference::parse("workflow.failed_at").unwrap_err();
        assert!(error.contains("`workflow.outcome_at`"), "{error}");
    }
}
