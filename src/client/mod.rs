//! The operator CLI: `q2c workflows`, `q2c bulk`, `q2c dead-letters` and
//! `q2c audit` are clients of a running server's admin HTTP API, so an
//! operator repairs quotes without SQL and every action is audited by the
//! server exactly as if it came over `curl`.
//!
//! # Layout
//!
//! - [`http`]: where the API is, the token, requests, and how answers
//!   become [`Error`]s;
//! - [`table`]: aligned columns for people;
//! - [`workflows`], [`bulk`], [`dead_letters`], [`audit`]: one module per
//!   command group, each turning its flags into requests and answers into
//!   lines.
//!
//! Output goes to stdout; `--json` prints the API's JSON as it came, for
//! scripts. Exit codes are part of the interface ([`Error::exit_code`]).

pub mod audit;
pub mod bulk;
pub mod dead_letters;
pub mod http;
pub mod table;
pub mod workflows;

/// A client command, by group.
#[derive(Debug)]
pub enum Command {
    /// `q2c workflows …`
    Workflows(workflows::Command),
    /// `q2c bulk …`
    Bulk(bulk::Command),
    /// `q2c dead-letters …`
    DeadLetters(dead_letters::Command),
    /// `q2c audit …`
    Audit(audit::Command),
}

/// Runs a client command against the API the connection names.
pub async fn run(connection: &http::Connection, command: Command) -> Result<(), Error> {
    let client = http::Client::new(connection)?;
    let json = connection.json;
    match command {
        Command::Workflows(command) => workflows::run(&client, command, json).await,
        Command::Bulk(command) => bulk::run(&client, command, json).await,
        Command::DeadLetters(command) => dead_letters::run(&client, command, json).await,
        Command::Audit(command) => audit::run(&client, command, json).await,
    }
}

/// Why a client command failed. Each kind has its own exit code, so a
/// script can tell "the API said no" from "the API was not there".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command's settings or arguments cannot make a request (no
    /// token, `--input` that is not JSON).
    #[error("{0}")]
    Usage(String),
    /// The API refused the request (4xx); `detail` is the problem's.
    #[error("{detail} ({status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The problem's `detail`, or the body when it has none.
        detail: String,
    },
    /// The server could not be reached, or did not answer in time.
    #[error("cannot reach the API at {url}")]
    Unreachable {
        /// The URL asked for.
        url: String,
        /// What the HTTP client met.
        #[source]
        source: reqwest::Error,
    },
    /// The server failed (5xx), or answered something that is not the
    /// API's.
    #[error("the server failed: {detail} ({status})")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The problem's `detail`, or what was wrong with the answer.
        detail: String,
    },
    /// Writing to stdout failed (a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// 1: the API refused; 2: usage or settings; 3: the server could not
    /// be reached or failed. Clap's own usage errors are 2 as well.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Refused { .. } | Error::Output(_) => 1,
            Error::Usage(_) => 2,
            Error::Unreachable { .. } | Error::Server { .. } => 3,
        }
    }
}

/// Parses a flag's JSON object (`--input`, `--output`).
fn json_object(flag: &str, text: &str) -> Result<serde_json::Value, Error> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err(Error::Usage(format!("{flag}: must be a JSON object"))),
        Err(error) => Err(Error::Usage(format!("{flag}: not JSON: {error}"))),
    }
}

/// Writes text to stdout, reporting a closed pipe as an error rather than
/// a panic (`println!` panics).
fn print(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes text to stdout exactly as it is (the CSV export).
fn write_raw(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
