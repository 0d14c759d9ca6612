//! Turns a parsed definition file into the model, or says everything that is
//! wrong with it. A definition that passes can be run without further checks:
//! every reference resolves and every number is in range.

use std::collections::BTreeMap;
use std::time::Duration;

use super::input::{InputSource, InputSpec, Reference};
use super::raw::{
    RawCompensation, RawDefinition, RawEscalation, RawFailurePolicy, RawKind, RawReplies, RawRetry,
    RawStep,
};
use super::{
    CommandSpec, DeadlinePolicy, Escalation, FailurePolicy, OutputSpec, Problem, RetryPolicy,
    StepDefinition, StepKind, ValueType,
};
use crate::domain::quote::Quote;

/// The longest timeout, backoff or deadline a definition may ask for.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);
const MAX_ATTEMPTS: u32 = 100;
const MAX_MULTIPLIER: u32 = 10;

type Validated = (String, String, Vec<StepDefinition>);

pub(super) fn validate(raw: RawDefinition) -> Result<Validated, Vec<Problem>> {
    let mut problems = Problems::default();
    if !is_identifier(&raw.name, true) {
        problems.general(format!(
            "workflow name `{}` must start with a lowercase letter and contain only \
             lowercase letters, digits, `_` and `-` (at most 64 characters)",
            raw.name
        ));
    }
    if !raw.steps.iter().any(|step| step.kind == RawKind::Action) {
        problems.general("a workflow needs at least one action step".to_owned());
    }

    let outline = outline(&raw.steps, &mut problems);
    let steps: Vec<StepDefinition> = raw
        .steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| {
            let mut scope = problems.step(&step.name);
            let built = build_step(index, step, &outline, &mut scope);
            scope.ok().then_some(built).flatten()
        })
        .collect();

    if problems.is_empty() {
        Ok((raw.name, raw.description, steps))
    } else {
        let mut list = problems.into_inner();
        // Stable: general problems first, then each step's in definition order.
        list.sort_by_key(|problem| {
            let step = problem.step.as_deref()?;
            Some(raw.steps.iter().position(|raw| raw.name == step))
        });
        Err(list)
    }
}

/// What later steps may know of a step before it is fully checked.
struct Outline<'a> {
    index_by_name: BTreeMap<&'a str, usize>,
    kinds: Vec<StepKind>,
    outputs: Vec<OutputSpec>,
    /// Output field names as written, whatever their type's validity.
    declared: Vec<std::collections::BTreeSet<&'a str>>,
    /// Step names as written, by index.
    names: Vec<&'a str>,
    /// The index of the first notification step, if there is one.
    first_notification: Option<usize>,
}

fn outline<'a>(steps: &'a [RawStep], problems: &mut Problems) -> Outline<'a> {
    let mut index_by_name = BTreeMap::new();
    let mut kinds = Vec::with_capacity(steps.len());
    let mut outputs = Vec::with_capacity(steps.len());
    let mut first_notification: Option<&str> = None;
    for (index, step) in steps.iter().enumerate() {
        let mut scope = problems.step(&step.name);
        if !is_identifier(&step.name, false) {
            scope.add(
                "step names must start with a lowercase letter and contain only lowercase \
                 letters, digits and `_` (at most 64 characters)"
                    .to_owned(),
            );
        }
        if index_by_name.contains_key(step.name.as_str()) {
            scope.add("duplicate step name".to_owned());
        } else {
            index_by_name.insert(step.name.as_str(), index);
        }
        let kind = match step.kind {
            RawKind::Action => StepKind::Action,
            RawKind::Notification => StepKind::Notification,
        };
        match (kind, first_notification) {
            (StepKind::Notification, None) => first_notification = Some(&step.name),
            (StepKind::Action, Some(notification)) => scope.add(format!(
                "action step after notification step `{notification}`: notification steps \
                 run once the money flow has ended, so they come last"
            )),
            _ => {}
        }
        kinds.push(kind);
        outputs.push(output_spec(&step.output, &mut scope));
    }
    Outline {
        first_notification: kinds
            .iter()
            .position(|kind| *kind == StepKind::Notification),
        index_by_name,
        kinds,
        outputs,
        declared: steps
            .iter()
            .map(|step| step.output.keys().map(String::as_str).collect())
            .collect(),
        names: steps.iter().map(|step| step.name.as_str()).collect(),
    }
}

fn build_step(
    index: usize,
    step: &RawStep,
    outline: &Outline<'_>,
    problems: &mut StepProblems<'_>,
) -> Option<StepDefinition> {
    let kind = outline.kinds[index];
    let on_failure = match (kind, step.on_failure) {
        (StepKind::Action, Some(RawFailurePolicy::Compensate)) => FailurePolicy::Compensate,
        (StepKind::Action, Some(RawFailurePolicy::Suspend)) => FailurePolicy::Suspend,
        (StepKind::Action, None) => {
            problems.add(
                "`on_failure` is required on an action step: `compensate` or `suspend`".to_owned(),
            );
            FailurePolicy::Suspend
        }
        (StepKind::Notification, Some(RawFailurePolicy::Compensate)) => {
            problems.add(
                "the compensate policy on a notification step: a notification never \
                 compensates; its definitive failure suspends the workflow"
                    .to_owned(),
            );
            FailurePolicy::Suspend
        }
        (StepKind::Notification, _) => FailurePolicy::Suspend,
    };
    if kind == StepKind::Notification && step.compensation.is_some() {
        problems.add(
            "a compensation on a notification step: notifications are never undone".to_owned(),
        );
    }

    let input_scope = match kind {
        StepKind::Action => InputScope::Action { step: index },
        StepKind::Notification => InputScope::Notification { step: index },
    };
    let command = command_spec(
        "",
        &step.command,
        step.replies.as_ref(),
        Some(&step.timeout),
        Some(&step.retry),
        None,
        &step.input,
        input_scope,
        outline,
        problems,
    );
    let compensation = match (&step.compensation, kind) {
        (Some(compensation), StepKind::Action) => {
            compensation_spec(index, compensation, command.as_ref(), outline, problems)
        }
        _ => None,
    };
    let deadline = step.deadline.as_ref().and_then(|deadline| {
        let after = duration("deadline.after", &deadline.after, problems)?;
        let escalation = match deadline.escalation {
            RawEscalation::Suspend => Escalation::Suspend,
            RawEscalation::Flag => Escalation::Flag,
        };
        Some(DeadlinePolicy { after, escalation })
    });

    Some(StepDefinition {
        name: step.name.clone(),
        kind,
        command: command?,
        on_failure,
        compensation,
        deadline,
        output: outline.outputs[index].clone(),
    })
}

fn compensation_spec(
    index: usize,
    raw: &RawCompensation,
    step_command: Option<&CommandSpec>,
    outline: &Outline<'_>,
    problems: &mut StepProblems<'_>,
) -> Option<CommandSpec> {
    command_spec(
        "compensation.",
        &raw.command,
        raw.replies.as_ref(),
        raw.timeout.as_ref(),
        raw.retry.as_ref(),
        step_command,
        &raw.input,
        InputScope::Compensation { step: index },
        outline,
        problems,
    )
}

/// Where an input is used decides which references are sound there.
#[derive(Clone, Copy)]
enum InputScope {
    /// A step's command: earlier action steps have all produced their output.
    Action { step: usize },
    /// A notification: it runs after any outcome, so any output may be absent.
    Notification { step: usize },
    /// A compensation: this step or an earlier one may have produced nothing.
    Compensation { step: usize },
}

#[allow(clippy::too_many_arguments)]
fn command_spec(
    prefix: &str,
    command_type: &str,
    replies: Option<&RawReplies>,
    timeout: Option<&String>,
    retry: Option<&RawRetry>,
    fallback: Option<&CommandSpec>,
    input: &BTreeMap<String, String>,
    scope: InputScope,
    outline: &Outline<'_>,
    problems: &mut StepProblems<'_>,
) -> Option<CommandSpec> {
    let mut valid = true;
    if !is_message_type(command_type) {
        problems.add(format!(
            "{prefix}command `{command_type}` is not a message type like `erp.create_order`"
        ));
        valid = false;
    }
    let (success_reply, failure_reply) = match replies {
        Some(replies) => (replies.success.clone(), replies.failure.clone()),
        None => (
            format!("{command_type}.succeeded"),
            format!("{command_type}.failed"),
        ),
    };
    // Defaulted replies of an invalid command add nothing the author can fix.
    let replies_to_check = if replies.is_some() || valid {
        vec![("success", &success_reply), ("failure", &failure_reply)]
    } else {
        Vec::new()
    };
    for (which, reply) in replies_to_check {
        if !is_message_type(reply) {
            problems.add(format!(
                "{prefix}replies.{which} `{reply}` is not a message type like \
                 `erp.create_order.succeeded`"
            ));
            valid = false;
        }
    }
    if success_reply == failure_reply {
        problems.add(format!(
            "{prefix}replies: success and failure are both `{success_reply}`"
        ));
        valid = false;
    }
    let timeout = match (timeout, fallback) {
        (Some(text), _) => duration(&format!("{prefix}timeout"), text, problems),
        (None, Some(fallback)) => Some(fallback.timeout),
        (None, None) => None,
    };
    let retry = match (retry, fallback) {
        (Some(raw), _) => retry_policy(prefix, raw, problems),
        (None, Some(fallback)) => Some(fallback.retry),
        (None, None) => None,
    };
    let input = input_spec(prefix, input, scope, outline, problems);
    Some(CommandSpec {
        command_type: command_type.to_owned(),
        success_reply,
        failure_reply,
        timeout: timeout?,
        retry: retry?,
        input: input?,
    })
    .filter(|_| valid)
}

fn retry_policy(
    prefix: &str,
    raw: &RawRetry,
    problems: &mut StepProblems<'_>,
) -> Option<RetryPolicy> {
    let mut valid = true;
    if raw.max_attempts == 0 {
        problems.add(format!(
            "{prefix}retry.max_attempts is zero: a command needs at least one attempt"
        ));
        valid = false;
    } else if raw.max_attempts > MAX_ATTEMPTS {
        problems.add(format!(
            "{prefix}retry.max_attempts is {}: at most {MAX_ATTEMPTS}",
            raw.max_attempts
        ));
        valid = false;
    }
    let initial = duration(
        &format!("{prefix}retry.initial_backoff"),
        &raw.initial_backoff,
        problems,
    );
    let max = duration(
        &format!("{prefix}retry.max_backoff"),
        &raw.max_backoff,
        problems,
    );
    if let (Some(initial), Some(max)) = (initial, max)
        && max < initial
    {
        problems.add(format!(
            "{prefix}retry.max_backoff ({}) is shorter than retry.initial_backoff ({})",
            raw.max_backoff, raw.initial_backoff
        ));
        valid = false;
    }
    if !(1..=MAX_MULTIPLIER).contains(&raw.multiplier) {
        problems.add(format!(
            "{prefix}retry.multiplier is {}: expected 1 to {MAX_MULTIPLIER}",
            raw.multiplier
        ));
        valid = false;
    }
    if !(raw.jitter.is_finite() && (0.0..=1.0).contains(&raw.jitter)) {
        problems.add(format!(
            "{prefix}retry.jitter is {}: expected a fraction from 0 to 1",
            raw.jitter
        ));
        valid = false;
    }
    Some(RetryPolicy {
        max_attempts: raw.max_attempts,
        initial_backoff: initial?,
        max_backoff: max?,
        multiplier: raw.multiplier,
        jitter: raw.jitter,
    })
    .filter(|_| valid)
}

fn input_spec(
    prefix: &str,
    input: &BTreeMap<String, String>,
    scope: InputScope,
    outline: &Outline<'_>,
    problems: &mut StepProblems<'_>,
) -> Option<InputSpec> {
    let mut fields = Vec::with_capacity(input.len());
    let mut valid = true;
    for (name, text) in input {
        let place = format!("{prefix}input.{name}");
        match Reference::parse(text).and_then(|reference| resolve(reference, scope, outline)) {
            Ok(source) => fields.push((name.clone(), source)),
            Err(message) => {
                problems.add(format!("{place}: {message}"));
                valid = false;
            }
        }
    }
    valid.then(|| InputSpec::new(fields))
}

fn resolve(
    reference: Reference,
    scope: InputScope,
    outline: &Outline<'_>,
) -> Result<InputSource, String> {
    match reference {
        Reference::Quote(field) => {
            if Quote::FIELDS.contains(&field.as_str()) {
                Ok(InputSource::Quote(field))
            } else {
                Err(format!(
                    "the quote has no field `{field}` (it has {})",
                    Quote::FIELDS.join(", ")
                ))
            }
        }
        Reference::WorkflowId => Ok(InputSource::WorkflowId),
        Reference::WorkflowOutcome => match scope {
            InputScope::Notification { .. } => Ok(InputSource::WorkflowOutcome),
            _ => Err(only_notifications("workflow.outcome")),
        },
        Reference::WorkflowFailureReason => match scope {
            InputScope::Notification { .. } => Ok(InputSource::WorkflowFailureReason),
            _ => Err(only_notifications("workflow.failure_reason")),
        },
        Reference::WorkflowOutcomeAt => match scope {
            InputScope::Notification { step } if outline.first_notification == Some(step) => {
                Ok(InputSource::WorkflowOutcomeAt)
            }
            InputScope::Notification { .. } => Err(format!(
                "`workflow.outcome_at` is only known to the first notification step{}, whose \
                 input is built as the money flow ends; a later one starts after it, when \
                 that time is no longer known",
                outline
                    .first_notification
                    .map(|first| format!(" (`{}`)", outline.names[first]))
                    .unwrap_or_default()
            )),
            _ => Err(only_notifications("workflow.outcome_at")),
        },
        Reference::StepOutput {
            step,
            field,
            optional,
        } => {
            let Some(&target) = outline.index_by_name.get(step.as_str()) else {
                return Err(format!("unknown step `{step}`"));
            };
            let target_kind = outline.kinds[target];
            match scope {
                InputScope::Action { step: own } | InputScope::Notification { step: own }
                    if target >= own =>
                {
                    return Err(format!(
                        "refers to the output of `{step}`, which runs {}",
                        if target == own {
                            "as this step"
                        } else {
                            "later"
                        }
                    ));
                }
                InputScope::Compensation { step: own } if target > own => {
                    return Err(format!(
                        "refers to the output of `{step}`, which runs later"
                    ));
                }
                InputScope::Compensation { .. } if target_kind == StepKind::Notification => {
                    return Err(format!(
                        "refers to notification step `{step}`, which runs after compensations"
                    ));
                }
                InputScope::Notification { .. } | InputScope::Compensation { .. } if !optional => {
                    return Err(format!(
                        "`steps.{step}.output.{field}` must be optional (end it with `?`): \
                         that step may not have produced an output when this runs"
                    ));
                }
                _ => {}
            }
            if !outline.declared[target].contains(field.as_str()) {
                return Err(format!("step `{step}` declares no output field `{field}`"));
            }
            Ok(InputSource::StepOutput {
                step: target,
                step_name: step,
                field,
                optional,
            })
        }
    }
}

fn only_notifications(source: &str) -> String {
    format!(
        "`{source}` is only known to notification steps, which run after the money flow \
         has ended"
    )
}

fn output_spec(output: &BTreeMap<String, String>, problems: &mut StepProblems<'_>) -> OutputSpec {
    let mut fields = Vec::with_capacity(output.len());
    for (name, type_name) in output {
        match ValueType::parse(type_name) {
            Some(value_type) => fields.push((name.clone(), value_type)),
            None => problems.add(format!(
                "output.{name}: unknown type `{type_name}` (expected string, decimal, integer, \
                 boolean, object or array)"
            )),
        }
    }
    OutputSpec { fields }
}

fn duration(place: &str, text: &str, problems: &mut StepProblems<'_>) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(value) if value.is_zero() => {
            problems.add(format!("{place} is zero"));
            None
        }
        Ok(value) if value > MAX_DURATION => {
            problems.add(format!("{place} `{text}` is longer than a year"));
            None
        }
        Ok(value) => Some(value),
        Err(error) => {
            problems.add(format!(
                "{place} `{text}` is not a duration like `30s`, `5m` or `7days`: {error}"
            ));
            None
        }
    }
}

fn is_identifier(text: &str, allow_dash: bool) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_lowercase())
        && text.len() <= 64
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (allow_dash && c == '-')
        })
}

fn is_message_type(text: &str) -> bool {
    let segments: Vec<&str> = text.split('.').collect();
    segments.len() >= 2 && text.len() <= 128 && segments.iter().all(|s| is_identifier(s, false))
}

/// Collects problems in definition order, tagged with their step.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    fn general(&mut self, message: String) {
        self.list.push(Problem {
            step: None,
            message,
        });
    }

    fn step<'p>(&'p mut self, name: &str) -> StepProblems<'p> {
        StepProblems {
            step: name.to_owned(),
            problems: self,
            added: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn into_inner(self) -> Vec<Problem> {
        self.list
    }
}

/// Problems of one step; knows whether the step is clean.
struct StepProblems<'p> {
    step: String,
    problems: &'p mut Problems,
    added: usize,
}

impl StepProblems<'_> {
    fn add(&mut self, message: String) {
        self.added += 1;
        self.problems.list.push(Problem {
            step: Some(self.step.clone()),
            message,
        });
    }

    fn ok(&self) -> bool {
        self.added == 0
    }
}
