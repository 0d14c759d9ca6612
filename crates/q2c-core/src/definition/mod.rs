//! Declarative workflow definitions: what steps a saga runs, and how.
//!
//! A definition is TOML text (see `workflows/quote-to-cash.toml`) parsed into
//! a validated [`Definition`]. The text and its content hash travel with every
//! workflow instance, so editing a file never changes the path of an instance
//! already in flight.
//!
//! Steps come in two kinds. *Action* steps move money or goods and can be
//! undone by a compensation; they run in order until one fails for good.
//! *Notification* steps run after the money flow has ended, whatever its
//! outcome; they never compensate, and their definitive failure suspends the
//! workflow for an operator.

mod input;
mod raw;
mod validate;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use input::{InputContext, InputSource, InputSpec};

/// A validated workflow definition together with the exact text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    name: String,
    description: String,
    steps: Vec<StepDefinition>,
    source: String,
    hash: DefinitionHash,
}

impl Definition {
    /// Parses and validates definition text. `origin` names where the text
    /// came from (usually a file path) and starts every error message.
    pub fn parse(origin: &str, text: &str) -> Result<Self, Error> {
        let raw: raw::RawDefinition = toml::from_str(text).map_err(|error| Error::Syntax {
            origin: origin.to_owned(),
            message: error.to_string(),
        })?;
        let (name, description, steps) =
            validate::validate(raw).map_err(|problems| Error::Invalid {
                origin: origin.to_owned(),
                problems,
            })?;
        Ok(Self {
            name,
            description,
            steps,
            source: text.to_owned(),
            hash: DefinitionHash::of(text),
        })
    }

    /// The workflow's name, unique among the loaded definitions.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free text for operators.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Steps in definition order: action steps first, then notifications.
    pub fn steps(&self) -> &[StepDefinition] {
        &self.steps
    }

    /// The step at `index`, if any.
    pub fn step(&self, index: usize) -> Option<&StepDefinition> {
        self.steps.get(index)
    }

    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.name == name)
    }

    /// Whether any step or compensation of this definition answers with
    /// `reply_type`: a reply of any other type cannot concern it.
    pub fn knows_reply_type(&self, reply_type: &str) -> bool {
        self.steps.iter().any(|step| {
            std::iter::once(&step.command)
                .chain(step.compensation.as_ref())
                .any(|command| {
                    command.success_reply == reply_type || command.failure_reply == reply_type
                })
        })
    }

    /// The exact text this definition was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The content hash of [`Definition::source`].
    pub fn hash(&self) -> &DefinitionHash {
        &self.hash
    }
}

/// SHA-256 of a definition's text, lowercase hex: identifies the exact
/// version an instance runs, whatever happens to the file afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DefinitionHash(String);

impl DefinitionHash {
    /// Hashes definition text.
    pub fn of(text: &str) -> Self {
        let digest = Sha256::digest(text.as_bytes());
        Self(digest.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DefinitionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDefinition {
    /// Unique name within the definition; persisted records refer to it.
    pub name: String,
    /// Action or notification.
    pub kind: StepKind,
    /// How the step's command is sent and answered.
    pub command: CommandSpec,
    /// What happens when the step fails for good.
    pub on_failure: FailurePolicy,
    /// How to undo the step, if it can be undone.
    pub compensation: Option<CommandSpec>,
    /// When the step has taken too long and who should hear about it.
    pub deadline: Option<DeadlinePolicy>,
    /// The fields a success reply's output must have; the output is kept.
    pub output: OutputSpec,
}

/// A command type with its replies, timing and input.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Message type of the command, also its routing key (`erp.create_order`).
    pub command_type: String,
    /// Reply type that means the command succeeded.
    pub success_reply: String,
    /// Reply type that means the command failed (retryable or not).
    pub failure_reply: String,
    /// How long one attempt may go unanswered.
    pub timeout: Duration,
    /// How often and how patiently to try again.
    pub retry: RetryPolicy,
    /// How the command's payload is built.
    pub input: InputSpec,
}

/// Whether a step moves the money flow or only reports on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Part of the money flow; may be compensated.
    Action,
    /// Runs after every outcome; never compensates.
    Notification,
}

/// What a definitive failure of an action step leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Undo the completed steps in reverse order.
    Compensate,
    /// Stop and wait for an operator.
    Suspend,
}

/// A step's deadline: it escalates, it never fails or compensates the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// Measured from the start of each run of the step.
    pub after: Duration,
    /// What happens when it passes.
    pub escalation: Escalation,
}

/// How a passed deadline escalates a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// Flag it for attention and suspend it as soon as no command is in flight.
    Suspend,
    /// Flag it for attention only.
    Flag,
}

/// Retry with exponential backoff, capped, with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per run, the first included; at least one.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound on any delay.
    pub max_backoff: Duration,
    /// Growth factor between consecutive delays.
    pub multiplier: u32,
    /// Fraction (0 to 1) of each delay that may be shaved off at random, so
    /// that many workflows failing together do not retry in lockstep.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The delay after the `failures`-th failed attempt of a run (from 1),
    /// before jitter: `initial × multiplier^(failures−1)`, capped.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let mut delay = self.initial_backoff;
        for _ in 1..failures {
            delay = delay.saturating_mul(self.multiplier);
            if delay >= self.max_backoff {
                return self.max_backoff;
            }
        }
        delay.min(self.max_backoff)
    }

    /// The delay with jitter applied; `unit` is a number in `[0, 1)` that the
    /// caller derives deterministically, so that a decision can be replayed.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let base = self.base_delay(failures);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let shave = (self.jitter * unit).clamp(0.0, 1.0);
        base.saturating_sub(base.mul_f64(shave))
    }
}

/// The fields a step's output must contain, each with its JSON type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSpec {
    fields: Vec<(String, ValueType)>,
}

impl OutputSpec {
    /// Declared fields, sorted by name.
    pub fn fields(&self) -> &[(String, ValueType)] {
        &self.fields
    }

    /// Whether `name` is a declared output field.
    pub fn declares(&self, name: &str) -> bool {
        self.fields.iter().any(|(field, _)| field == name)
    }

    /// Checks a reply's output before it is kept for later steps; the error
    /// names the first field that is missing or of the wrong type.
    pub fn check(&self, output: &serde_json::Value) -> Result<(), String> {
        let Some(object) = output.as_object() else {
            return Err("the output is not a JSON object".to_owned());
        };
        for (name, expected) in &self.fields {
            match object.get(name) {
                None | Some(serde_json::Value::Null) => {
                    return Err(format!("output field `{name}` is missing"));
                }
                Some(value) if !expected.admits(value) => {
                    return Err(format!("output field `{name}` is not {expected}"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// JSON types an output field can be declared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A JSON string.
    String,
    /// An exact decimal, written as a string or a number.
    Decimal,
    /// A JSON integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl ValueType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "string" => Self::String,
            "decimal" => Self::Decimal,
            "integer" => Self::Integer,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            _ => return None,
        })
    }

    fn admits(self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, value) {
            (Self::String, Value::String(_)) => true,
            (Self::Decimal, Value::String(text)) => text.parse::<rust_decimal::Decimal>().is_ok(),
            (Self::Decimal, Value::Number(number)) => {
                number.to_string().parse::<rust_decimal::Decimal>().is_ok()
            }
            (Self::Integer, Value::Number(number)) => number.is_i64() || number.is_u64(),
            (Self::Boolean, Value::Bool(_)) => true,
            (Self::Object, Value::Object(_)) => true,
            (Self::Array, Value::Array(_)) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "a string",
            Self::Decimal => "a decimal",
            Self::Integer => "an integer",
            Self::Boolean => "a boolean",
            Self::Object => "an object",
            Self::Array => "an array",
        })
    }
}

/// Why a definition was rejected. Every message starts with the origin.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The text is not TOML of the expected shape.
    #[error("{origin}: {message}")]
    Syntax {
        /// Where the text came from.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The text parsed but describes an unusable workflow.
    #[error("{origin}: {}", problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// Every problem found, in definition order.
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a definition, tied to its step where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The step the problem is in, if it is in one.
    pub step: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step `{step}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
