//! Settings from the environment, checked at start: a bad or missing one
//! stops the process with a message naming it.

use std::path::PathBuf;

/// A setting that is missing or unusable.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct Error {
    name: &'static str,
    problem: String,
}

/// Reads a required setting.
pub fn required(name: &'static str, hint: &str) -> Result<String, Error> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(Error {
            name,
            problem: format!("is not set; {hint}"),
        }),
    }
}

/// Reads an optional setting.
pub fn optional(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Reads an optional path setting.
pub fn optional_path(name: &'static str) -> Option<PathBuf> {
    optional(name).map(PathBuf::from)
}

/// Wraps a problem found while checking a setting's value.
pub fn invalid(name: &'static str, problem: impl ToString) -> Error {
    Error {
        name,
        problem: problem.to_string(),
    }
}
