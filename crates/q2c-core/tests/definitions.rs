//! Tests of workflow definitions: the shipped quote-to-cash file and its
//! model, every rule that rejects a definition (each message must name the
//! file, the step and the problem), output checks, input building and retry
//! delays.
//!
//! Rejection tests start from [`VALID`], a small definition that parses, and
//! break it in one place with [`edit`] or [`append`], so each test shows
//! exactly what is wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use q2c_core::definition::{
    DeadlinePolicy, Definition, DefinitionHash, Error, Escalation, FailurePolicy, InputContext,
    InputSource, InputSpec, OutputSpec, Problem, RetryPolicy, StepKind, ValueType,
};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::fixtures;
use serde_json::{Value, json};

const SHIPPED_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../workflows/quote-to-cash.toml"
);

/// The origin passed for inline definitions; every message must start with it.
const ORIGIN: &str = "workflows/under-test.toml";

/// A small definition that passes validation: two action steps (one with a
/// compensation, one with a deadline) and a notification. The last table is
/// the `notify` step, so [`append`]ed keys land in it.
const VALID: &str = r#"
name = "test-flow"
description = "A small valid workflow that each test breaks in one place"

[[steps]]
name = "reserve"
command = "erp.create_order"
timeout = "30s"
retry = { max_attempts = 3, initial_backoff = "1s", max_backoff = "1m", multiplier = 2, jitter = 0.2 }
on_failure = "compensate"
input = { quote_id = "quote.quote_id", amount = "quote.net_amount" }
output = { order_id = "string" }
compensation = { command = "erp.cancel_order", input = { order_id = "steps.reserve.output.order_id?" } }

[[steps]]
name = "charge"
command = "payment.collect"
timeout = "2m"
retry = { max_attempts = 5, initial_backoff = "2s", max_backoff = "5m" }
on_failure = "suspend"
deadline = { after = "1h", escalation = "flag" }
input = { order_id = "steps.reserve.output.order_id" }
output = { payment_id = "string" }

[[steps]]
name = "notify"
kind = "notification"
command = "salesforce.report_status"
timeout = "1m"
retry = { max_attempts = 8, initial_backoff = "5s", max_backoff = "10m" }
input = { outcome = "workflow.outcome", workflow = "workflow.id", payment_id = "steps.charge.output.payment_id?" }
"#;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn shipped_text() -> String {
    std::fs::read_to_string(SHIPPED_PATH)
        .unwrap_or_else(|error| panic!("cannot read {SHIPPED_PATH}: {error}"))
}

fn shipped() -> Definition {
    Definition::parse(SHIPPED_PATH, &shipped_text()).unwrap_or_else(|error| panic!("{error}"))
}

fn parse(text: &str) -> Result<Definition, Error> {
    Definition::parse(ORIGIN, text)
}

fn parse_ok(text: &str) -> Definition {
    parse(text).unwrap_or_else(|error| panic!("expected a valid definition, got: {error}"))
}

/// [`VALID`] with the one occurrence of `from` replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        VALID.matches(from).count(),
        1,
        "`{from}` must occur exactly once in VALID"
    );
    VALID.replacen(from, to, 1)
}

/// [`VALID`] with `lines` added at the end, i.e. to the `notify` step or, if
/// they start a `[[steps]]` table, as a new last step.
fn append(lines: &str) -> String {
    format!("{VALID}{lines}\n")
}

/// A self-contained action step without references, for definitions built
/// from scratch.
fn action_step(name: &str) -> String {
    format!(
        r#"
[[steps]]
name = "{name}"
command = "erp.create_order"
timeout = "30s"
retry = {{ max_attempts = 3, initial_backoff = "1s", max_backoff = "1m" }}
on_failure = "suspend"
output = {{ order_id = "string" }}
"#
    )
}

/// A self-contained notification step without references.
fn notification_step(name: &str) -> String {
    format!(
        r#"
[[steps]]
name = "{name}"
kind = "notification"
command = "salesforce.report_status"
timeout = "1m"
retry = {{ max_attempts = 3, initial_backoff = "1s", max_backoff = "1m" }}
output = {{ status = "string" }}
"#
    )
}

/// The display and the problems of a definition that must be invalid.
fn invalid(text: &str) -> (String, Vec<Problem>) {
    match parse(text) {
        Err(error @ Error::Invalid { .. }) => {
            let display = error.to_string();
            let Error::Invalid { origin, problems } = error else {
                unreachable!("matched as Invalid above")
            };
            assert_eq!(origin, ORIGIN);
            assert!(
                display.starts_with(&format!("{ORIGIN}: ")),
                "the message must start with the origin: {display}"
            );
            assert!(!problems.is_empty(), "Invalid with no problems: {display}");
            (display, problems)
        }
        Err(error) => panic!("expected a validation error, got a syntax error: {error}"),
        Ok(_) => panic!("expected the definition to be rejected:\n{text}"),
    }
}

/// Asserts that `text` is rejected with exactly one problem, in `step` (or
/// general when `None`), whose message contains every phrase; the display
/// must name the origin, the step in backticks and the phrases.
fn rejects(text: &str, step: Option<&str>, phrases: &[&str]) -> Problem {
    let (display, problems) = invalid(text);
    assert_eq!(
        problems.len(),
        1,
        "expected exactly one problem, got {}: {display}",
        problems.len()
    );
    let problem = problems[0].clone();
    assert_eq!(problem.step.as_deref(), step, "wrong step in: {display}");
    if let Some(step) = step {
        assert!(
            display.contains(&format!("step `{step}`: ")),
            "the message must name step `{step}`: {display}"
        );
    }
    for phrase in phrases {
        assert!(
            problem.message.contains(phrase),
            "problem message lacks {phrase:?}: {display}"
        );
        assert!(
            display.contains(phrase),
            "display lacks {phrase:?}: {display}"
        );
    }
    problem
}

/// Asserts that `text` is rejected and that among its problems is one in
/// `step` containing every phrase; returns all problems.
fn rejects_among(text: &str, step: Option<&str>, phrases: &[&str]) -> Vec<Problem> {
    let (display, problems) = invalid(text);
    let found = problems.iter().any(|problem| {
        problem.step.as_deref() == step
            && phrases
                .iter()
                .all(|phrase| problem.message.contains(phrase))
    });
    assert!(
        found,
        "no problem in {step:?} containing {phrases:?}: {display}"
    );
    if let Some(step) = step {
        assert!(display.contains(&format!("step `{step}`: ")), "{display}");
    }
    problems
}

/// Asserts that `text` is rejected by the TOML reader, with a message that
/// starts with the origin and contains every phrase.
fn rejects_syntax(text: &str, phrases: &[&str]) {
    match parse(text) {
        Err(error @ Error::Syntax { .. }) => {
            let display = error.to_string();
            assert!(
                display.starts_with(&format!("{ORIGIN}: ")),
                "the message must start with the origin: {display}"
            );
            for phrase in phrases {
                assert!(display.contains(phrase), "lacks {phrase:?}: {display}");
            }
        }
        Err(error) => panic!("expected a syntax error, got: {error}"),
        Ok(_) => panic!("expected a syntax error for:\n{text}"),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn retry(
    max_attempts: u32,
    initial: Duration,
    max: Duration,
    multiplier: u32,
    jitter: f64,
) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: initial,
        max_backoff: max,
        multiplier,
        jitter,
    }
}

fn quote_source(field: &str) -> InputSource {
    InputSource::Quote(field.to_owned())
}

fn output_source(step: usize, step_name: &str, field: &str, optional: bool) -> InputSource {
    InputSource::StepOutput {
        step,
        step_name: step_name.to_owned(),
        field: field.to_owned(),
        optional,
    }
}

/// Input fields by name; the order of declaration is not compared.
fn inputs(spec: &InputSpec) -> BTreeMap<String, InputSource> {
    let map: BTreeMap<String, InputSource> = spec.fields().iter().cloned().collect();
    assert_eq!(map.len(), spec.fields().len(), "duplicate input names");
    map
}

fn expected_inputs(pairs: &[(&str, InputSource)]) -> BTreeMap<String, InputSource> {
    pairs
        .iter()
        .map(|(name, source)| ((*name).to_owned(), source.clone()))
        .collect()
}

/// Output fields by name; the order of declaration is not compared.
fn outputs(spec: &OutputSpec) -> BTreeMap<String, ValueType> {
    spec.fields().iter().cloned().collect()
}

/// 2026-11-27T10:00:01.234567891Z: an outcome's time with sub-millisecond
/// digits that the payload does not carry.
fn outcome_at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::UNIX_EPOCH
        + chrono::TimeDelta::seconds(1_795_773_601)
        + chrono::TimeDelta::nanoseconds(234_567_891)
}

fn workflow_id() -> WorkflowId {
    WorkflowId::new(uuid::Uuid::from_u128(0x42))
}

// ---------------------------------------------------------------------------
// 1. The shipped definition
// ---------------------------------------------------------------------------

#[test]
fn shipped_definition_has_its_name_and_steps_in_order() {
    let definition = shipped();
    assert_eq!(definition.name(), "quote-to-cash");
    assert_eq!(
        definition.description(),
        "Accepted CPQ quote to ERP order, invoice, payment and status report"
    );
    let names: Vec<&str> = definition
        .steps()
        .iter()
        .map(|step| step.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "create_order",
            "issue_invoice",
            "collect_payment",
            "report_status"
        ]
    );
    for (index, name) in names.iter().enumerate() {
        assert_eq!(definition.step_index(name), Some(index));
        assert_eq!(
            definition.step(index).map(|step| step.name.as_str()),
            Some(*name)
        );
    }
    assert_eq!(definition.step(4), None);
    assert_eq!(definition.step_index("refund"), None);
}

#[test]
fn shipped_definition_commands_compensations_and_policies() {
    let definition = shipped();
    let expected = [
        (
            "erp.create_order",
            Some("erp.cancel_order"),
            StepKind::Action,
            FailurePolicy::Compensate,
        ),
        (
            "billing.issue_invoice",
            Some("billing.void_invoice"),
            StepKind::Action,
            FailurePolicy::Compensate,
        ),
        (
            "payment.collect",
            Some("payment.refund"),
            StepKind::Action,
            FailurePolicy::Compensate,
        ),
        (
            "salesforce.report_status",
            None,
            StepKind::Notification,
            FailurePolicy::Suspend,
        ),
    ];
    assert_eq!(definition.steps().len(), expected.len());
    for (step, (command, compensation, kind, on_failure)) in definition.steps().iter().zip(expected)
    {
        assert_eq!(step.command.command_type, command, "{}", step.name);
        assert_eq!(step.kind, kind, "{}", step.name);
        assert_eq!(step.on_failure, on_failure, "{}", step.name);
        assert_eq!(
            step.command.success_reply,
            format!("{command}.succeeded"),
            "{}",
            step.name
        );
        assert_eq!(
            step.command.failure_reply,
            format!("{command}.failed"),
            "{}",
            step.name
        );
        assert_eq!(
            step.compensation
                .as_ref()
                .map(|spec| spec.command_type.as_str()),
            compensation,
            "{}",
            step.name
        );
        if let Some(spec) = &step.compensation {
            assert_eq!(
                spec.success_reply,
                format!("{}.succeeded", spec.command_type)
            );
            assert_eq!(spec.failure_reply, format!("{}.failed", spec.command_type));
        }
    }
}

#[test]
fn shipped_definition_timeouts_retries_and_deadlines() {
    let definition = shipped();
    let steps = definition.steps();
    let fast = retry(5, secs(1), secs(60), 2, 0.2);
    let payment = retry(5, secs(2), secs(300), 2, 0.2);
    let notify = retry(8, secs(5), secs(600), 2, 0.2);
    let expected = [
        (secs(30), fast, None),
        (secs(30), fast, None),
        (
            secs(120),
            payment,
            Some(DeadlinePolicy {
                after: secs(3600),
                escalation: Escalation::Flag,
            }),
        ),
        (
            secs(60),
            notify,
            Some(DeadlinePolicy {
                after: secs(4 * 3600),
                escalation: Escalation::Suspend,
            }),
        ),
    ];
    for (step, (timeout, retry, deadline)) in steps.iter().zip(expected) {
        assert_eq!(step.command.timeout, timeout, "{}", step.name);
        assert_eq!(step.command.retry, retry, "{}", step.name);
        assert_eq!(step.deadline, deadline, "{}", step.name);
        // Compensations declare no timing of their own: they inherit the step's.
        if let Some(compensation) = &step.compensation {
            assert_eq!(compensation.timeout, timeout, "{}", step.name);
            assert_eq!(compensation.retry, retry, "{}", step.name);
        }
    }
}

#[test]
fn shipped_definition_outputs() {
    let definition = shipped();
    let expected: [&[(&str, ValueType)]; 4] = [
        &[("order_id", ValueType::String)],
        &[("invoice_id", ValueType::String)],
        &[("payment_id", ValueType::String)],
        &[],
    ];
    for (step, fields) in definition.steps().iter().zip(expected) {
        let fields: Vec<(String, ValueType)> = fields
            .iter()
            .map(|(name, value_type)| ((*name).to_owned(), *value_type))
            .collect();
        assert_eq!(step.output.fields(), fields.as_slice(), "{}", step.name);
    }
    assert!(definition.steps()[0].output.declares("order_id"));
    assert!(!definition.steps()[0].output.declares("invoice_id"));
}

#[test]
fn shipped_definition_inputs() {
    let definition = shipped();
    let steps = definition.steps();
    let quote = |names: &[&'static str]| -> Vec<(&'static str, InputSource)> {
        names
            .iter()
            .map(|name| (*name, quote_source(name)))
            .collect()
    };

    let create_order = quote(&[
        "quote_id",
        "quote_number",
        "account_id",
        "account_name",
        "opportunity_id",
        "currency",
        "net_amount",
        "payment_terms",
        "lines",
    ]);
    assert_eq!(
        inputs(&steps[0].command.input),
        expected_inputs(&create_order)
    );
    let cancel_order = [
        ("quote_id", quote_source("quote_id")),
        (
            "order_id",
            output_source(0, "create_order", "order_id", true),
        ),
    ];
    let compensation = steps[0].compensation.as_ref().expect("cancel_order");
    assert_eq!(inputs(&compensation.input), expected_inputs(&cancel_order));

    let mut issue_invoice = quote(&[
        "quote_number",
        "account_id",
        "account_name",
        "currency",
        "net_amount",
        "payment_terms",
        "lines",
    ]);
    issue_invoice.push((
        "order_id",
        output_source(0, "create_order", "order_id", false),
    ));
    assert_eq!(
        inputs(&steps[1].command.input),
        expected_inputs(&issue_invoice)
    );
    let void_invoice = [
        (
            "invoice_id",
            output_source(1, "issue_invoice", "invoice_id", true),
        ),
        (
            "order_id",
            output_source(0, "create_order", "order_id", true),
        ),
    ];
    let compensation = steps[1].compensation.as_ref().expect("void_invoice");
    assert_eq!(inputs(&compensation.input), expected_inputs(&void_invoice));

    let collect = [
        (
            "invoice_id",
            output_source(1, "issue_invoice", "invoice_id", false),
        ),
        ("account_id", quote_source("account_id")),
        ("currency", quote_source("currency")),
        ("amount", quote_source("net_amount")),
        ("payment_method", quote_source("payment_method")),
    ];
    assert_eq!(inputs(&steps[2].command.input), expected_inputs(&collect));
    let refund = [
        (
            "payment_id",
            output_source(2, "collect_payment", "payment_id", true),
        ),
        ("currency", quote_source("currency")),
        ("amount", quote_source("net_amount")),
    ];
    let compensation = steps[2].compensation.as_ref().expect("refund");
    assert_eq!(inputs(&compensation.input), expected_inputs(&refund));

    let report = [
        ("workflow_id", InputSource::WorkflowId),
        ("quote_id", quote_source("quote_id")),
        ("quote_number", quote_source("quote_number")),
        ("opportunity_id", quote_source("opportunity_id")),
        ("outcome", InputSource::WorkflowOutcome),
        ("failure_reason", InputSource::WorkflowFailureReason),
        ("outcome_at", InputSource::WorkflowOutcomeAt),
        (
            "order_id",
            output_source(0, "create_order", "order_id", true),
        ),
        (
            "invoice_id",
            output_source(1, "issue_invoice", "invoice_id", true),
        ),
        (
            "payment_id",
            output_source(2, "collect_payment", "payment_id", true),
        ),
    ];
    assert_eq!(inputs(&steps[3].command.input), expected_inputs(&report));
}

#[test]
fn shipped_definition_keeps_its_source_and_hash() {
    let text = shipped_text();
    let definition = shipped();
    assert_eq!(definition.source(), text);
    assert_eq!(definition.hash(), &DefinitionHash::of(&text));
    let hex = definition.hash().as_str();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{hex}"
    );
    assert_eq!(definition.hash().to_string(), hex);
    // Parsing the same text again gives the same definition and hash.
    assert_eq!(shipped(), definition);
}

#[test]
fn one_changed_byte_changes_the_hash_but_not_the_model() {
    let text = shipped_text();
    // A byte in the first comment line: the workflow is the same, its text is not.
    let changed = text.replacen("quote-to-cash saga", "quote-to-cash Saga", 1);
    assert_ne!(changed, text);
    assert_eq!(changed.len(), text.len());
    let original = shipped();
    let edited = Definition::parse(SHIPPED_PATH, &changed).expect("still valid");
    assert_eq!(edited.steps(), original.steps());
    assert_ne!(edited.hash(), original.hash());
    assert_eq!(edited.hash(), &DefinitionHash::of(&changed));
    assert_eq!(edited.source(), changed);
}

#[test]
fn hash_is_sha256_hex() {
    assert_eq!(
        DefinitionHash::of("abc").as_str(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        DefinitionHash::of("").as_str(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

// ---------------------------------------------------------------------------
// 2. Rejections
// ---------------------------------------------------------------------------

#[test]
fn the_base_definition_is_valid() {
    let definition = parse_ok(VALID);
    assert_eq!(definition.name(), "test-flow");
    assert_eq!(definition.steps().len(), 3);
    assert_eq!(definition.steps()[1].on_failure, FailurePolicy::Suspend);
    // Defaults: replies from the command type, multiplier 2, no jitter.
    let charge = &definition.steps()[1].command;
    assert_eq!(charge.success_reply, "payment.collect.succeeded");
    assert_eq!(charge.failure_reply, "payment.collect.failed");
    assert_eq!(charge.retry, retry(5, secs(2), secs(300), 2, 0.0));
}

#[test]
fn boundary_values_are_accepted() {
    for (from, to) in [
        ("max_attempts = 3", "max_attempts = 1"),
        ("max_attempts = 3", "max_attempts = 100"),
        ("multiplier = 2", "multiplier = 1"),
        ("multiplier = 2", "multiplier = 10"),
        ("jitter = 0.2", "jitter = 0.0"),
        ("jitter = 0.2", "jitter = 1.0"),
        (r#"max_backoff = "1m""#, r#"max_backoff = "1s""#),
        (r#"timeout = "30s""#, r#"timeout = "366days""#),
        (r#"after = "1h""#, r#"after = "1y""#),
        (r#"timeout = "30s""#, r#"timeout = "1ns""#),
    ] {
        let text = edit(from, to);
        if let Err(error) = parse(&text) {
            panic!("`{to}` must be accepted: {error}");
        }
    }
}

#[test]
fn unknown_step_in_an_input() {
    rejects(
        &edit(
            r#""steps.reserve.output.order_id" }"#,
            r#""steps.nope.output.order_id" }"#,
        ),
        Some("charge"),
        &["input.order_id", "unknown step `nope`"],
    );
}

#[test]
fn unknown_step_in_a_compensation_input() {
    rejects(
        &edit(
            "steps.reserve.output.order_id?",
            "steps.nope.output.order_id?",
        ),
        Some("reserve"),
        &["compensation.input.order_id", "unknown step `nope`"],
    );
}

#[test]
fn duplicate_step_names() {
    let text = format!(
        "name = \"dup\"\n{}{}",
        action_step("same"),
        action_step("same")
    );
    rejects(&text, Some("same"), &["duplicate step name"]);
}

#[test]
fn duplicate_step_name_is_the_only_problem_even_when_referenced() {
    // `charge` renamed to `reserve`: its input and `reserve`'s compensation
    // refer to `reserve`, which should still mean the first step.
    rejects(
        &edit(r#"name = "charge""#, r#"name = "reserve""#).replace(
            "steps.charge.output.payment_id?",
            "steps.reserve.output.order_id?",
        ),
        Some("reserve"),
        &["duplicate step name"],
    );
}

#[test]
fn compensation_on_a_notification_step() {
    rejects(
        &append(r#"compensation = { command = "salesforce.retract_status" }"#),
        Some("notify"),
        &["compensation on a notification step"],
    );
}

#[test]
fn compensate_policy_on_a_notification_step() {
    rejects(
        &append(r#"on_failure = "compensate""#),
        Some("notify"),
        &["compensate policy on a notification step"],
    );
    // `suspend` is what a notification does anyway, so it may be spelled out.
    let definition = parse_ok(&append(r#"on_failure = "suspend""#));
    assert_eq!(definition.steps()[2].on_failure, FailurePolicy::Suspend);
}

#[test]
fn output_of_a_later_step() {
    rejects(
        &edit(
            r#"amount = "quote.net_amount" }"#,
            r#"amount = "quote.net_amount", paid = "steps.charge.output.payment_id" }"#,
        ),
        Some("reserve"),
        &["input.paid", "output of `charge`", "runs later"],
    );
}

#[test]
fn output_of_a_later_step_in_a_compensation() {
    rejects(
        &edit(
            "steps.reserve.output.order_id?",
            "steps.charge.output.payment_id?",
        ),
        Some("reserve"),
        &[
            "compensation.input.order_id",
            "output of `charge`",
            "runs later",
        ],
    );
}

#[test]
fn output_of_the_step_itself() {
    rejects(
        &edit(
            r#""steps.reserve.output.order_id" }"#,
            r#""steps.charge.output.payment_id" }"#,
        ),
        Some("charge"),
        &["input.order_id", "output of `charge`", "runs as this step"],
    );
}

#[test]
fn output_of_the_notification_step_itself() {
    rejects(
        &append(r#"output = { status = "string" }"#).replacen(
            r#""steps.charge.output.payment_id?" }"#,
            r#""steps.charge.output.payment_id?", mine = "steps.notify.output.status?" }"#,
            1,
        ),
        Some("notify"),
        &["input.mine", "output of `notify`", "as this step"],
    );
}

#[test]
fn output_of_a_later_notification_in_a_notification() {
    let text = format!(
        "name = \"n\"\n{}{}{}",
        action_step("act"),
        notification_step("first"),
        notification_step("second")
    )
    .replacen(
        r#"output = { status = "string" }"#,
        r#"output = { status = "string" }
input = { next = "steps.second.output.status?" }"#,
        1,
    );
    rejects(
        &text,
        Some("first"),
        &["input.next", "output of `second`", "runs later"],
    );
}

#[test]
fn undeclared_output_field() {
    rejects(
        &edit(
            r#""steps.reserve.output.order_id" }"#,
            r#""steps.reserve.output.order_number" }"#,
        ),
        Some("charge"),
        &[
            "input.order_id",
            "step `reserve` declares no output field `order_number`",
        ],
    );
}

#[test]
fn max_attempts_out_of_range() {
    rejects(
        &edit("max_attempts = 3", "max_attempts = 0"),
        Some("reserve"),
        &["retry.max_attempts is zero"],
    );
    rejects(
        &edit("max_attempts = 5", "max_attempts = 101"),
        Some("charge"),
        &["retry.max_attempts is 101", "at most 100"],
    );
}

#[test]
fn max_attempts_out_of_range_in_a_compensation_retry() {
    rejects(
        &edit(
            r#"compensation = { command = "erp.cancel_order","#,
            r#"compensation = { command = "erp.cancel_order", retry = { max_attempts = 0, initial_backoff = "1s", max_backoff = "1s" },"#,
        ),
        Some("reserve"),
        &["compensation.retry.max_attempts is zero"],
    );
}

#[test]
fn max_backoff_shorter_than_initial_backoff() {
    rejects(
        &edit(
            r#"initial_backoff = "5s", max_backoff = "10m""#,
            r#"initial_backoff = "5s", max_backoff = "4s""#,
        ),
        Some("notify"),
        &["retry.max_backoff (4s) is shorter than retry.initial_backoff (5s)"],
    );
}

#[test]
fn multiplier_out_of_range() {
    for value in [0, 11] {
        rejects(
            &edit("multiplier = 2", &format!("multiplier = {value}")),
            Some("reserve"),
            &[&format!("retry.multiplier is {value}"), "expected 1 to 10"],
        );
    }
}

#[test]
fn jitter_out_of_range() {
    for (value, shown) in [
        ("1.5", "1.5"),
        ("-0.1", "-0.1"),
        ("nan", "NaN"),
        ("inf", "inf"),
    ] {
        rejects(
            &edit("jitter = 0.2", &format!("jitter = {value}")),
            Some("reserve"),
            &[
                &format!("retry.jitter is {shown}"),
                "expected a fraction from 0 to 1",
            ],
        );
    }
}

#[test]
fn bad_durations() {
    // (text to replace, replacement, step, phrases)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            r#"timeout = "30s""#,
            r#"timeout = "0s""#,
            "reserve",
            &["timeout is zero"],
        ),
        (
            r#"timeout = "30s""#,
            r#"timeout = "soon""#,
            "reserve",
            &["timeout `soon` is not a duration"],
        ),
        (
            r#"timeout = "30s""#,
            r#"timeout = "367days""#,
            "reserve",
            &["timeout `367days` is longer than a year"],
        ),
        (
            r#"timeout = "30s""#,
            r#"timeout = "366days 1s""#,
            "reserve",
            &["longer than a year"],
        ),
        (
            r#"timeout = "30s""#,
            r#"timeout = "-5s""#,
            "reserve",
            &["timeout `-5s` is not a duration"],
        ),
        (
            r#"timeout = "30s""#,
            r#"timeout = """#,
            "reserve",
            &["timeout `` is not a duration"],
        ),
        (
            r#"after = "1h""#,
            r#"after = "0m""#,
            "charge",
            &["deadline.after is zero"],
        ),
        (
            r#"after = "1h""#,
            r#"after = "whenever""#,
            "charge",
            &["deadline.after `whenever` is not a duration"],
        ),
        (
            r#"after = "1h""#,
            r#"after = "2years""#,
            "charge",
            &["deadline.after `2years` is longer than a year"],
        ),
        (
            r#"initial_backoff = "2s""#,
            r#"initial_backoff = "0s""#,
            "charge",
            &["retry.initial_backoff is zero"],
        ),
        (
            r#"initial_backoff = "2s""#,
            r#"initial_backoff = "fast""#,
            "charge",
            &["retry.initial_backoff `fast` is not a duration"],
        ),
        (
            r#"max_backoff = "5m""#,
            r#"max_backoff = "400days""#,
            "charge",
            &["retry.max_backoff `400days` is longer than a year"],
        ),
        (
            r#"max_backoff = "5m""#,
            r#"max_backoff = "0s""#,
            "charge",
            &["retry.max_backoff is zero"],
        ),
        (
            r#"max_backoff = "5m""#,
            r#"max_backoff = "99999999999999999999999s""#,
            "charge",
            &["retry.max_backoff `99999999999999999999999s` is not a duration"],
        ),
    ];
    for (from, to, step, phrases) in cases {
        rejects(&edit(from, to), Some(step), phrases);
    }
}

#[test]
fn bad_compensation_timeout() {
    rejects(
        &edit(
            r#"compensation = { command = "erp.cancel_order","#,
            r#"compensation = { command = "erp.cancel_order", timeout = "0s","#,
        ),
        Some("reserve"),
        &["compensation.timeout is zero"],
    );
    rejects(
        &edit(
            r#"compensation = { command = "erp.cancel_order","#,
            r#"compensation = { command = "erp.cancel_order", timeout = "later","#,
        ),
        Some("reserve"),
        &["compensation.timeout `later` is not a duration"],
    );
}

#[test]
fn action_step_after_a_notification_step() {
    rejects(
        &append(&action_step("late")),
        Some("late"),
        &["action step after notification step `notify`"],
    );
}

#[test]
fn no_action_step() {
    let only_notifications = format!("name = \"quiet\"\n{}", notification_step("notify"));
    rejects(
        &only_notifications,
        None,
        &["a workflow needs at least one action step"],
    );
    rejects(
        "name = \"empty\"\n",
        None,
        &["a workflow needs at least one action step"],
    );
}

#[test]
fn missing_on_failure_on_an_action_step() {
    rejects(
        &edit("on_failure = \"suspend\"\n", ""),
        Some("charge"),
        &["`on_failure` is required on an action step"],
    );
}

#[test]
fn workflow_outcome_outside_notifications() {
    rejects(
        &edit(
            r#""steps.reserve.output.order_id" }"#,
            r#""steps.reserve.output.order_id", how = "workflow.outcome" }"#,
        ),
        Some("charge"),
        &[
            "input.how",
            "`workflow.outcome` is only known to notification steps",
        ],
    );
    rejects(
        &edit(
            r#""steps.reserve.output.order_id?" }"#,
            r#""steps.reserve.output.order_id?", how = "workflow.outcome" }"#,
        ),
        Some("reserve"),
        &[
            "compensation.input.how",
            "`workflow.outcome` is only known to notification steps",
        ],
    );
}

#[test]
fn failure_reason_and_outcome_time_outside_notifications() {
    for source in ["workflow.failure_reason", "workflow.outcome_at"] {
        let only = format!("`{source}` is only known to notification steps");
        rejects(
            &edit(
                r#""steps.reserve.output.order_id" }"#,
                &format!(r#""steps.reserve.output.order_id", why = "{source}" }}"#),
            ),
            Some("charge"),
            &["input.why", &only],
        );
        rejects(
            &edit(
                r#""steps.reserve.output.order_id?" }"#,
                &format!(r#""steps.reserve.output.order_id?", why = "{source}" }}"#),
            ),
            Some("reserve"),
            &["compensation.input.why", &only],
        );
    }
}

#[test]
fn failure_reason_and_outcome_time_in_notifications() {
    let definition = parse_ok(&edit(
        r#"input = { outcome = "workflow.outcome","#,
        r#"input = { outcome = "workflow.outcome", why = "workflow.failure_reason", at = "workflow.outcome_at","#,
    ));
    let notify = inputs(&definition.steps()[2].command.input);
    assert_eq!(notify["why"], InputSource::WorkflowFailureReason);
    assert_eq!(notify["at"], InputSource::WorkflowOutcomeAt);

    // A later notification knows why the flow did not complete, but not
    // when it ended: its input is built once the first one has succeeded.
    let second = |input: &str| append(&format!("{}input = {input}\n", notification_step("again")));
    let definition = parse_ok(&second(r#"{ why = "workflow.failure_reason" }"#));
    assert_eq!(
        inputs(&definition.steps()[3].command.input)["why"],
        InputSource::WorkflowFailureReason
    );
    rejects(
        &second(r#"{ at = "workflow.outcome_at" }"#),
        Some("again"),
        &[
            "input.at",
            "`workflow.outcome_at` is only known to the first notification step (`notify`)",
        ],
    );
}

#[test]
fn required_step_output_in_a_notification() {
    rejects(
        &edit(
            "steps.charge.output.payment_id?",
            "steps.charge.output.payment_id",
        ),
        Some("notify"),
        &[
            "input.payment_id",
            "`steps.charge.output.payment_id` must be optional",
        ],
    );
}

#[test]
fn required_step_output_in_a_compensation() {
    rejects(
        &edit(
            "steps.reserve.output.order_id?",
            "steps.reserve.output.order_id",
        ),
        Some("reserve"),
        &[
            "compensation.input.order_id",
            "`steps.reserve.output.order_id` must be optional",
        ],
    );
}

#[test]
fn compensation_referring_to_a_notification_step() {
    // Notifications come last, so from a compensation they run later.
    rejects(
        &append(r#"output = { status = "string" }"#).replacen(
            "steps.reserve.output.order_id?",
            "steps.notify.output.status?",
            1,
        ),
        Some("reserve"),
        &["compensation.input.order_id", "output of `notify`"],
    );
    // Even when (wrongly) placed first, a notification is no source for a
    // compensation: it runs after every compensation.
    let text = format!(
        "name = \"n\"\n{}{}",
        notification_step("early"),
        action_step("act")
    )
    .replace(
        r#"on_failure = "suspend""#,
        r#"on_failure = "compensate"
compensation = { command = "erp.cancel_order", input = { status = "steps.early.output.status?" } }"#,
    );
    let problems = rejects_among(
        &text,
        Some("act"),
        &[
            "compensation.input.status",
            "notification step `early`",
            "runs after compensations",
        ],
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p
            .message
            .contains("action step after notification step `early`")),
        "{problems:?}"
    );
}

#[test]
fn unknown_quote_field() {
    let problem = rejects(
        &edit(r#""quote.net_amount""#, r#""quote.total""#),
        Some("reserve"),
        &["input.amount", "the quote has no field `total`"],
    );
    // The message lists the fields that exist.
    assert!(problem.message.contains("net_amount"), "{problem}");
}

#[test]
fn malformed_sources() {
    let known = "is not a known source";
    let cases: &[(&str, &str)] = &[
        ("steps.reserve.order_id", known),
        ("env.HOME", known),
        ("quote", known),
        ("quote.lines.0", known),
        ("steps..output.order_id", known),
        ("steps.reserve.output.", known),
        ("workflow.name", known),
        ("", known),
        ("quote.net_amount?", "only step outputs can be optional"),
        ("workflow.id?", "only step outputs can be optional"),
        (
            "workflow.failure_reason?",
            "only step outputs can be optional",
        ),
        ("workflow.outcome_at?", "only step outputs can be optional"),
        ("workflow.failed_at", known),
    ];
    for (source, phrase) in cases {
        rejects(
            &edit(
                r#""steps.reserve.output.order_id" }"#,
                &format!(r#""{source}" }}"#),
            ),
            Some("charge"),
            &["input.order_id", &format!("`{source}`"), phrase],
        );
    }
}

#[test]
fn invalid_command_type() {
    rejects_among(
        &edit(r#""payment.collect""#, r#""CreateOrder""#),
        Some("charge"),
        &["command `CreateOrder` is not a message type"],
    );
    rejects(
        &edit(r#""payment.collect""#, r#""erp""#),
        Some("charge"),
        &["command `erp` is not a message type"],
    );
    for command in ["erp.", ".create_order", "erp..create_order", "erp.Create"] {
        rejects_among(
            &edit(r#""payment.collect""#, &format!(r#""{command}""#)),
            Some("charge"),
            &[&format!("command `{command}` is not a message type")],
        );
    }
    rejects(
        &edit(r#""erp.cancel_order""#, r#""cancel""#),
        Some("reserve"),
        &["compensation.command `cancel` is not a message type"],
    );
}

#[test]
fn invalid_command_type_is_reported_once() {
    rejects(
        &edit(r#""payment.collect""#, r#""CreateOrder""#),
        Some("charge"),
        &["command `CreateOrder` is not a message type"],
    );
}

#[test]
fn invalid_reply_types() {
    rejects(
        &edit(
            r#"command = "payment.collect""#,
            r#"command = "payment.collect"
replies = { success = "Done", failure = "payment.collect.failed" }"#,
        ),
        Some("charge"),
        &["replies.success `Done` is not a message type"],
    );
}

#[test]
fn identical_success_and_failure_replies() {
    rejects(
        &edit(
            r#"command = "payment.collect""#,
            r#"command = "payment.collect"
replies = { success = "payment.collect.done", failure = "payment.collect.done" }"#,
        ),
        Some("charge"),
        &["replies: success and failure are both `payment.collect.done`"],
    );
    rejects(
        &edit(
            r#"command = "erp.cancel_order","#,
            r#"command = "erp.cancel_order", replies = { success = "erp.x.y", failure = "erp.x.y" },"#,
        ),
        Some("reserve"),
        &["compensation.replies: success and failure are both `erp.x.y`"],
    );
}

#[test]
fn unknown_keys_are_named() {
    let cases: &[(String, &str)] = &[
        (
            edit("name = \"test-flow\"", "name = \"test-flow\"\nversion = 2"),
            "version",
        ),
        (append("retries = 3"), "retries"),
        (edit("max_attempts = 5", "max_attempt = 5"), "max_attempt"),
        (
            edit(
                r#"command = "erp.cancel_order","#,
                r#"command = "erp.cancel_order", timout = "5s","#,
            ),
            "timout",
        ),
        (
            edit(
                r#"escalation = "flag""#,
                r#"escalation = "flag", notify = true"#,
            ),
            "notify",
        ),
        (
            edit(
                r#"command = "payment.collect""#,
                r#"command = "payment.collect"
replies = { ok = "payment.collect.ok", failure = "payment.collect.failed" }"#,
            ),
            "ok",
        ),
    ];
    for (text, key) in cases {
        rejects_syntax(text, &[&format!("unknown field `{key}`")]);
    }
}

#[test]
fn unknown_enum_values_and_wrong_shapes_are_syntax_errors() {
    rejects_syntax(
        &edit(r#"kind = "notification""#, r#"kind = "notifier""#),
        &["notifier"],
    );
    rejects_syntax(
        &edit(r#"on_failure = "suspend""#, r#"on_failure = "retry""#),
        &["retry"],
    );
    rejects_syntax(
        &edit(r#"escalation = "flag""#, r#"escalation = "page""#),
        &["page"],
    );
    rejects_syntax(
        &edit("max_attempts = 5", "max_attempts = -1"),
        &["max_attempts"],
    );
    rejects_syntax(&edit(r#"timeout = "2m""#, "timeout = 120"), &["timeout"]);
    rejects_syntax(
        &edit("timeout = \"2m\"\n", ""),
        &["missing field `timeout`"],
    );
    rejects_syntax("this is not toml", &[]);
}

#[test]
fn unknown_output_type() {
    rejects(
        &edit(
            r#"output = { payment_id = "string" }"#,
            r#"output = { payment_id = "string", receipt = "blob" }"#,
        ),
        Some("charge"),
        &["output.receipt: unknown type `blob`", "decimal"],
    );
}

#[test]
fn unknown_output_type_is_reported_once_when_referenced() {
    rejects(
        &edit(
            r#"output = { order_id = "string" }"#,
            r#"output = { order_id = "uuid" }"#,
        ),
        Some("reserve"),
        &["output.order_id: unknown type `uuid`"],
    );
}

#[test]
fn bad_workflow_names() {
    for name in [
        "Quote To Cash",
        "",
        "1flow",
        "flow.v2",
        "_flow",
        &"f".repeat(65),
    ] {
        rejects(
            &edit("name = \"test-flow\"", &format!("name = \"{name}\"")),
            None,
            &[&format!(
                "workflow name `{name}` must start with a lowercase letter"
            )],
        );
    }
    parse_ok(&edit("name = \"test-flow\"", "name = \"flow_2-b\""));
    parse_ok(&edit(
        "name = \"test-flow\"",
        &format!("name = \"{}\"", "f".repeat(64)),
    ));
}

#[test]
fn bad_step_names() {
    for name in ["Notify", "notify-me", "", "1notify", "notify.me", "_notify"] {
        rejects(
            &edit(r#"name = "notify""#, &format!(r#"name = "{name}""#)),
            Some(name),
            &["step names must start with a lowercase letter"],
        );
    }
    parse_ok(&edit(r#"name = "notify""#, r#"name = "notify_2""#));
    parse_ok(&edit(
        r#"name = "notify""#,
        &format!(r#"name = "{}""#, "n".repeat(64)),
    ));
}

#[test]
fn overlong_names_say_how_long_a_name_may_be() {
    let long = "n".repeat(65);
    rejects(
        &edit(r#"name = "notify""#, &format!(r#"name = "{long}""#)),
        Some(&long),
        &["64"],
    );
    rejects(
        &edit("name = \"test-flow\"", &format!("name = \"{long}\"")),
        None,
        &["64"],
    );
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let text = edit("name = \"test-flow\"", "name = \"Test Flow\"")
        .replacen("max_attempts = 3", "max_attempts = 0", 1)
        .replacen(
            r#""steps.reserve.output.order_id" }"#,
            r#""quote.total" }"#,
            1,
        )
        .replacen("multiplier = 2", "multiplier = 0", 1)
        + "compensation = { command = \"salesforce.retract_status\" }\n";
    let (display, problems) = invalid(&text);
    assert_eq!(problems.len(), 5, "{display}");
    let count = |step: Option<&str>| {
        problems
            .iter()
            .filter(|problem| problem.step.as_deref() == step)
            .count()
    };
    assert_eq!(count(None), 1, "{display}");
    assert_eq!(count(Some("reserve")), 2, "{display}");
    assert_eq!(count(Some("charge")), 1, "{display}");
    assert_eq!(count(Some("notify")), 1, "{display}");
    for phrase in [
        "workflow name `Test Flow`",
        "step `reserve`: retry.max_attempts is zero",
        "step `reserve`: retry.multiplier is 0",
        "step `charge`: input.order_id: the quote has no field `total`",
        "step `notify`: a compensation on a notification step",
    ] {
        assert!(display.contains(phrase), "lacks {phrase:?}: {display}");
    }
    // One line, problems separated by "; ".
    assert_eq!(display.matches("; ").count(), 4, "{display}");
    assert!(!display.contains('\n'), "{display}");
}

#[test]
fn problems_are_listed_in_definition_order() {
    let text = edit("on_failure = \"suspend\"\n", "").replacen(
        r#"name = "notify""#,
        r#"name = "Notify""#,
        1,
    );
    let (display, problems) = invalid(&text);
    let steps: Vec<Option<&str>> = problems.iter().map(|p| p.step.as_deref()).collect();
    assert_eq!(steps, [Some("charge"), Some("Notify")], "{display}");
}

// ---------------------------------------------------------------------------
// 3. Output checks and input building
// ---------------------------------------------------------------------------

fn typed_output() -> OutputSpec {
    let text = edit(
        r#"output = { payment_id = "string" }"#,
        r#"output = { payment_id = "string", s = "string", d = "decimal", i = "integer", b = "boolean", o = "object", a = "array" }"#,
    );
    parse_ok(&text).steps()[1].output.clone()
}

fn good_output() -> Value {
    json!({
        "payment_id": "pay_1",
        "s": "text",
        "d": "12.50",
        "i": 42,
        "b": false,
        "o": {"nested": 1},
        "a": [1, 2],
        "extra": "ignored"
    })
}

#[test]
fn output_spec_declares_every_type() {
    let spec = typed_output();
    let expected: BTreeMap<String, ValueType> = [
        ("payment_id", ValueType::String),
        ("s", ValueType::String),
        ("d", ValueType::Decimal),
        ("i", ValueType::Integer),
        ("b", ValueType::Boolean),
        ("o", ValueType::Object),
        ("a", ValueType::Array),
    ]
    .into_iter()
    .map(|(name, value_type)| (name.to_owned(), value_type))
    .collect();
    assert_eq!(outputs(&spec), expected);
    assert!(spec.declares("d"));
    assert!(!spec.declares("extra"));
}

#[test]
fn output_check_accepts_well_typed_outputs() {
    let spec = typed_output();
    assert_eq!(spec.check(&good_output()), Ok(()));
    for (field, value) in [
        ("d", json!(12.5)),
        ("d", json!(7)),
        ("d", json!("-0.001")),
        ("i", json!(-3)),
        ("i", json!(u64::MAX)),
        ("o", json!({})),
        ("a", json!([])),
        ("s", json!("")),
    ] {
        let mut output = good_output();
        output[field] = value.clone();
        assert_eq!(spec.check(&output), Ok(()), "{field} = {value}");
    }
}

#[test]
fn output_check_names_the_missing_or_mistyped_field() {
    let spec = typed_output();
    assert_eq!(
        spec.check(&json!(["not", "an", "object"])),
        Err("the output is not a JSON object".to_owned())
    );
    assert_eq!(
        spec.check(&json!("text")),
        Err("the output is not a JSON object".to_owned())
    );

    let mut missing = good_output();
    missing
        .as_object_mut()
        .expect("object")
        .remove("i")
        .expect("had i");
    assert_eq!(
        spec.check(&missing),
        Err("output field `i` is missing".to_owned())
    );
    let mut null = good_output();
    null["s"] = Value::Null;
    assert_eq!(
        spec.check(&null),
        Err("output field `s` is missing".to_owned())
    );

    for (field, value, expected) in [
        ("s", json!(5), "a string"),
        ("d", json!("abc"), "a decimal"),
        ("d", json!(true), "a decimal"),
        ("i", json!(5.5), "an integer"),
        ("i", json!("5"), "an integer"),
        ("b", json!("true"), "a boolean"),
        ("o", json!([]), "an object"),
        ("a", json!({}), "an array"),
    ] {
        let mut output = good_output();
        output[field] = value.clone();
        assert_eq!(
            spec.check(&output),
            Err(format!("output field `{field}` is not {expected}")),
            "{field} = {value}"
        );
    }
}

#[test]
fn an_empty_output_spec_needs_only_an_object() {
    let spec = OutputSpec::default();
    assert_eq!(spec.check(&json!({})), Ok(()));
    assert_eq!(spec.check(&json!({"anything": 1})), Ok(()));
    assert!(spec.check(&Value::Null).is_err());
    // The shipped notification declares no output either.
    assert_eq!(shipped().steps()[3].output, OutputSpec::default());
}

#[test]
fn create_order_input_renders_quote_fields_as_json() {
    let definition = shipped();
    let quote = fixtures::quote();
    let context = InputContext {
        workflow_id: workflow_id(),
        quote: &quote,
        outcome: None,
        failure_reason: None,
        outcome_at: None,
        outputs: &[],
    };
    let input = definition.steps()[0]
        .command
        .input
        .build(&context)
        .expect("builds");
    let object = input.as_object().expect("an object");
    assert_eq!(object.len(), 9, "{input}");
    assert_eq!(input["net_amount"], json!("11300.00"));
    assert_eq!(input["currency"], json!("USD"));
    assert_eq!(input["quote_id"], json!("a0q5e00000ABCDEFGH"));
    assert_eq!(input["quote_number"], json!("Q-00042"));
    assert_eq!(input["account_id"], json!("0015e00000ABCDEFGH"));
    assert_eq!(input["account_name"], json!("Acme Corp"));
    assert_eq!(input["opportunity_id"], json!("0065e00000ABCDEFGH"));
    assert_eq!(input["payment_terms"], json!("Net 30"));
    let lines = input["lines"].as_array().expect("lines is an array");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["product_code"], json!("PLAT-ANNUAL"));
    assert_eq!(lines[0]["net_total"], json!("10800.00"));
    assert_eq!(lines[1]["product_code"], json!("ONBOARD"));
    // Every quote field renders exactly as `Quote::field` does.
    for (name, source) in definition.steps()[0].command.input.fields() {
        let InputSource::Quote(field) = source else {
            panic!("create_order input `{name}` is not from the quote");
        };
        assert_eq!(Some(input[name].clone()), quote.field(field), "{name}");
    }
}

#[test]
fn step_outputs_feed_later_inputs() {
    let definition = shipped();
    let quote = fixtures::quote();
    let order = json!({"order_id": "ORD-1"});
    let outputs = [Some(&order)];
    let context = InputContext {
        workflow_id: workflow_id(),
        quote: &quote,
        outcome: None,
        failure_reason: None,
        outcome_at: None,
        outputs: &outputs,
    };
    let input = definition.steps()[1]
        .command
        .input
        .build(&context)
        .expect("builds");
    assert_eq!(input["order_id"], json!("ORD-1"));
    assert_eq!(input["net_amount"], json!("11300.00"));
}

#[test]
fn a_missing_required_output_is_an_error_naming_step_and_field() {
    let definition = shipped();
    let quote = fixtures::quote();
    let no_field = json!({"other": 1});
    let no_field_outputs = [Some(&no_field)];
    let none_outputs: [Option<&Value>; 1] = [None];
    for outputs in [&[][..], &none_outputs[..], &no_field_outputs[..]] {
        let context = InputContext {
            workflow_id: workflow_id(),
            quote: &quote,
            outcome: None,
            failure_reason: None,
            outcome_at: None,
            outputs,
        };
        let error = definition.steps()[1]
            .command
            .input
            .build(&context)
            .expect_err("order_id is required");
        assert_eq!(
            error,
            "input `order_id`: step `create_order` has no output field `order_id`"
        );
    }
}

#[test]
fn optional_outputs_and_outcome_become_null_when_absent() {
    let definition = shipped();
    let quote = fixtures::quote();
    let order = json!({"order_id": "ORD-1"});
    let outputs = [Some(&order), None];
    let context = InputContext {
        workflow_id: workflow_id(),
        quote: &quote,
        outcome: None,
        failure_reason: None,
        outcome_at: Some(outcome_at()),
        outputs: &outputs,
    };
    let report = &definition.steps()[3].command.input;
    let input = report.build(&context).expect("builds");
    assert_eq!(
        input,
        json!({
            "workflow_id": "00000000-0000-0000-0000-000000000042",
            "quote_id": "a0q5e00000ABCDEFGH",
            "quote_number": "Q-00042",
            "opportunity_id": "0065e00000ABCDEFGH",
            "outcome": null,
            "failure_reason": null,
            "outcome_at": "2026-11-27T10:00:01.234Z",
            "order_id": "ORD-1",
            "invoice_id": null,
            "payment_id": null
        })
    );

    let with_outcome = InputContext {
        outcome: Some("compensated"),
        failure_reason: Some("collect_payment: card declined: generic_decline"),
        ..context
    };
    let input = report.build(&with_outcome).expect("builds");
    assert_eq!(input["outcome"], json!("compensated"));
    assert_eq!(
        input["failure_reason"],
        json!("collect_payment: card declined: generic_decline")
    );

    // A compensation of a step that produced nothing still gets its input.
    let cancel = definition.steps()[0]
        .compensation
        .as_ref()
        .expect("cancel_order");
    let nothing = InputContext {
        outputs: &[],
        outcome_at: None,
        ..context
    };
    assert_eq!(
        cancel.input.build(&nothing).expect("builds"),
        json!({"quote_id": "a0q5e00000ABCDEFGH", "order_id": null})
    );
}

#[test]
fn the_outcome_time_is_utc_with_milliseconds_and_never_guessed() {
    let definition = shipped();
    let quote = fixtures::quote();
    let report = &definition.steps()[3].command.input;
    let context = InputContext {
        workflow_id: workflow_id(),
        quote: &quote,
        outcome: Some("completed"),
        failure_reason: None,
        outcome_at: Some(outcome_at()),
        outputs: &[],
    };
    // Sub-millisecond digits are dropped, never rounded up; whole seconds
    // still carry their milliseconds.
    assert_eq!(
        report.build(&context).expect("builds")["outcome_at"],
        json!("2026-11-27T10:00:01.234Z")
    );
    let whole = InputContext {
        outcome_at: chrono::DateTime::from_timestamp(1_795_773_600, 0),
        ..context
    };
    assert_eq!(
        report.build(&whole).expect("builds")["outcome_at"],
        json!("2026-11-27T10:00:00.000Z")
    );

    // Outside the transition that set the outcome its time is unknown:
    // building fails rather than sending a time that is not the outcome's.
    let unknown = InputContext {
        outcome_at: None,
        ..context
    };
    assert_eq!(
        report.build(&unknown),
        Err(
            "input `outcome_at`: when the outcome was set is known only in the transition \
             that set it"
                .to_owned()
        )
    );
}

#[test]
fn an_empty_input_spec_builds_an_empty_object() {
    let quote = fixtures::quote();
    let context = InputContext {
        workflow_id: workflow_id(),
        quote: &quote,
        outcome: None,
        failure_reason: None,
        outcome_at: None,
        outputs: &[],
    };
    assert_eq!(InputSpec::default().build(&context), Ok(json!({})));
}

// ---------------------------------------------------------------------------
// 4. Retry delays
// ---------------------------------------------------------------------------

#[test]
fn base_delay_grows_exponentially_up_to_the_cap() {
    let policy = retry(5, secs(1), secs(60), 2, 0.2);
    let delays: Vec<Duration> = (1..=8).map(|n| policy.base_delay(n)).collect();
    assert_eq!(
        delays,
        [1, 2, 4, 8, 16, 32, 60, 60].map(secs),
        "1s doubling, capped at 1m"
    );
    assert_eq!(policy.base_delay(0), secs(1));
    assert_eq!(policy.base_delay(u32::MAX), secs(60));

    let triple = retry(5, Duration::from_millis(100), secs(10), 3, 0.0);
    assert_eq!(triple.base_delay(2), Duration::from_millis(300));
    assert_eq!(triple.base_delay(3), Duration::from_millis(900));
    assert_eq!(triple.base_delay(5), Duration::from_millis(8100));
    assert_eq!(triple.base_delay(6), secs(10));

    let flat = retry(5, secs(3), secs(60), 1, 0.0);
    assert_eq!(flat.base_delay(50), secs(3));

    // Long backoffs do not overflow.
    let long = retry(100, secs(365 * 86_400), secs(366 * 86_400), 10, 0.0);
    assert_eq!(long.base_delay(100), secs(366 * 86_400));
}

#[test]
fn shipped_payment_backoff() {
    let retry = shipped().steps()[2].command.retry;
    let delays: Vec<Duration> = (1..=9).map(|n| retry.base_delay(n)).collect();
    assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300].map(secs));
}

#[test]
fn jitter_shaves_a_fraction_of_the_delay() {
    let policy = retry(5, secs(1), secs(60), 2, 0.2);
    assert_eq!(policy.delay(3, 0.0), secs(4));
    assert_eq!(policy.delay(3, 0.5), Duration::from_millis(3600));
    assert_eq!(policy.delay(1, 0.25), Duration::from_millis(950));
    // Out-of-range units are clamped to [0, 1].
    assert_eq!(policy.delay(3, -1.0), secs(4));
    assert_eq!(policy.delay(3, 2.0), Duration::from_millis(3200));

    let no_jitter = RetryPolicy {
        jitter: 0.0,
        ..policy
    };
    assert_eq!(no_jitter.delay(3, 0.99), secs(4));
    let full_jitter = RetryPolicy {
        jitter: 1.0,
        ..policy
    };
    assert_eq!(full_jitter.delay(3, 0.5), secs(2));
}

#[test]
fn delay_never_exceeds_its_base_for_long_backoffs() {
    // Both durations are accepted by the validator (`31000063s 352ms`).
    let long = Duration::from_millis(31_000_063_352);
    let policy = retry(3, long, long, 2, 0.2);
    assert_eq!(policy.base_delay(1), long);
    assert!(
        policy.delay(1, 0.0) <= long,
        "{:?} > {long:?}",
        policy.delay(1, 0.0)
    );
}

#[test]
fn a_nan_unit_does_not_panic() {
    let policy = retry(5, secs(1), secs(60), 2, 0.2);
    let delay = policy.delay(3, f64::NAN);
    assert!(
        delay >= secs(4).mul_f64(0.8) && delay <= secs(4),
        "{delay:?}"
    );
}

fn policies() -> impl Strategy<Value = RetryPolicy> {
    (
        1u32..=100,
        1u64..=60_000,
        0u64..=3_600_000,
        1u32..=10,
        0.0f64..=1.0,
    )
        .prop_map(
            |(attempts, initial_ms, extra_ms, multiplier, jitter)| RetryPolicy {
                max_attempts: attempts,
                initial_backoff: Duration::from_millis(initial_ms),
                max_backoff: Duration::from_millis(initial_ms + extra_ms),
                multiplier,
                jitter,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        rng_seed: RngSeed::Fixed(0x0071_2c0d_ef15),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn base_delay_is_capped_exponential(policy in policies(), failures in 1u32..=100) {
        let base = policy.base_delay(failures);
        prop_assert!(base >= policy.initial_backoff);
        prop_assert!(base <= policy.max_backoff);
        let next = policy.base_delay(failures + 1);
        prop_assert!(next >= base);
        prop_assert_eq!(
            next,
            base.saturating_mul(policy.multiplier).min(policy.max_backoff)
        );
        if failures == 1 {
            prop_assert_eq!(base, policy.initial_backoff);
        }
    }

    #[test]
    fn delay_stays_within_the_jitter_band(
        policy in policies(),
        failures in 1u32..=100,
        unit in 0.0f64..1.0,
    ) {
        let base = policy.base_delay(failures);
        let delay = policy.delay(failures, unit);
        let floor = base.mul_f64(1.0 - policy.jitter);
        prop_assert!(delay <= base, "{:?} > base {:?}", delay, base);
        prop_assert!(delay >= floor, "{:?} < floor {:?}", delay, floor);
        prop_assert_eq!(policy.delay(failures, 0.0), base);
        // The same unit gives the same delay: decisions replay.
        prop_assert_eq!(policy.delay(failures, unit), delay);
    }
}
