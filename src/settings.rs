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

/// The API's tokens, from every setting that may hold some: the legacy
/// plain-text `Q2C_API_TOKEN` (an admin named `api-token`), the entries of
/// `Q2C_API_TOKENS` and those of the file `Q2C_API_TOKENS_FILE`. At least one
/// token is required, or the API could only refuse.
pub fn api_tokens() -> anyhow::Result<q2c_http::Tokens> {
    let mut tokens = q2c_http::Tokens::builder();
    if let Some(token) = optional("Q2C_API_TOKEN") {
        tokens.legacy("Q2C_API_TOKEN", &token)?;
    }
    if let Some(entries) = optional("Q2C_API_TOKENS") {
        tokens.list("Q2C_API_TOKENS", &entries)?;
    }
    if let Some(path) = optional_path("Q2C_API_TOKENS_FILE") {
        let text = std::fs::read_to_string(&path).map_err(|error| {
            invalid(
                "Q2C_API_TOKENS_FILE",
                format!("cannot read {}: {error}", path.display()),
            )
        })?;
        tokens.file(&format!("Q2C_API_TOKENS_FILE {}", path.display()), &text)?;
    }
    let tokens = tokens.build();
    if tokens.is_empty() {
        anyhow::bail!(
            "no API token is configured: set Q2C_API_TOKENS to entries \
             `name:role:sha256:<hex>` (`q2c token new <name> <role>` makes one), \
             Q2C_API_TOKENS_FILE to a file of such entries (one per line), \
             or Q2C_API_TOKEN to a plain admin token of at least 16 characters"
        );
    }
    Ok(tokens)
}
