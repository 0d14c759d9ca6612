//! What an operator can ask of one workflow, and how each request reaches
//! the saga as an event.
//!
//! Which actions a workflow takes depends on where it stands; the saga
//! says so itself ([`Saga::allowed_actions`](super::Saga::allowed_actions)),
//! and the same rules decide what the machine refuses, so a caller can
//! check before acting and tell the operator what would be allowed.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::event::{Event, Resume};
use super::progress::Earlier;

/// An operator's action, by its name in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Retry the step a suspended workflow halted at, perhaps with a
    /// changed input.
    Resume,
    /// Skip the rest of a backoff and try again now.
    Retry,
    /// Declare the halted step done, with the operator's output.
    Skip,
    /// Stop and undo the completed steps in reverse order.
    Cancel,
    /// Stop at once, undoing nothing and notifying no one.
    Terminate,
    /// Hold every command, timer and reply until unpaused.
    Pause,
    /// Release a paused workflow.
    Unpause,
}

impl Action {
    /// Every action, in the order the API lists them.
    pub const ALL: [Self; 7] = [
        Self::Resume,
        Self::Retry,
        Self::Skip,
        Self::Cancel,
        Self::Terminate,
        Self::Pause,
        Self::Unpause,
    ];

    /// The action's name in URLs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resume => "resume",
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::Cancel => "cancel",
            Self::Terminate => "terminate",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an action; the actions are resume, retry, skip, cancel, terminate, pause and unpause"
)]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
            .ok_or_else(|| UnknownAction(name.to_owned()))
    }
}

/// An action with what it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Retry the halted step; with a JSON merge patch (RFC 7386) applied
    /// to its input, which then starts a new input revision.
    Resume {
        /// The patch, if the input changes.
        input_patch: Option<Value>,
        /// What became of the attempt a changed input replaces, where it
        /// may have taken effect.
        earlier: Option<Earlier>,
    },
    /// Skip the remaining backoff.
    Retry,
    /// Treat the halted step as done with this output (checked against the
    /// definition like a connector's), or the halted compensation as done
    /// by hand.
    Skip {
        /// The step's output; later steps receive it.
        output: Value,
        /// What became of the attempt the skip replaces, where it may have
        /// taken effect.
        earlier: Option<Earlier>,
    },
    /// Stop and compensate.
    Cancel,
    /// Stop without compensating.
    Terminate,
    /// Hold everything.
    Pause,
    /// Release.
    Unpause,
}

impl Request {
    /// The action this request is.
    pub fn action(&self) -> Action {
        match self {
            Self::Resume { .. } => Action::Resume,
            Self::Retry => Action::Retry,
            Self::Skip { .. } => Action::Skip,
            Self::Cancel => Action::Cancel,
            Self::Terminate => Action::Terminate,
            Self::Pause => Action::Pause,
            Self::Unpause => Action::Unpause,
        }
    }

    /// The event the saga is handed.
    pub fn event(&self) -> Event {
        match self {
            Self::Resume {
                input_patch: None,
                earlier: None,
            } => Event::ResumeRequested(Resume::Retry),
            // An empty patch changes nothing, so the saga can say that
            // `earlier` means nothing for a plain retry.
            Self::Resume {
                input_patch,
                earlier,
            } => Event::ResumeRequested(Resume::Patch {
                patch: input_patch
                    .clone()
                    .unwrap_or_else(|| Value::Object(Map::new())),
                earlier: *earlier,
            }),
            Self::Retry => Event::RetryRequested,
            Self::Skip { output, earlier } => Event::ResumeRequested(Resume::Skip {
                output: output.clone(),
                earlier: *earlier,
            }),
            Self::Cancel => Event::CancelRequested,
            Self::Terminate => Event::TerminateRequested,
            Self::Pause => Event::PauseRequested,
            Self::Unpause => Event::UnpauseRequested,
        }
    }
}

/// Applies a JSON merge patch (RFC 7386): members of an object patch
/// replace the target's, `null` removes one, and anything else replaces
/// the whole target.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(changes) = patch else {
        return patch.clone();
    };
    let mut merged = match target {
        Value::Object(members) => members.clone(),
        _ => Map::new(),
    };
    for (name, change) in changes {
        if change.is_null() {
            merged.remove(name);
        } else {
            let current = merged.get(name).cloned().unwrap_or(Value::Null);
            merged.insert(name.clone(), merge_patch(&current, change));
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386, appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(merge_patch(&target, &patch), expected, "{target} + {patch}");
        }
    }

    #[test]
    fn action_names_round_trip_and_unknown_ones_are_named() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
        let error = "restart".parse::<Action>().unwrap_err();
        assert!(error.to_string().contains("`restart` is not an action"));
    }
}
