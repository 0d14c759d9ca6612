//! `q2c`: the quote-to-cash workflow orchestrator.
//!
//! Today the binary validates workflow definitions; the orchestrator's
//! commands (`migrate`, `serve`, `sim`) build on the same core.

mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Quote-to-cash workflow orchestrator: Salesforce CPQ to ERP, billing and
/// payments, as durable sagas.
#[derive(Debug, Parser)]
#[command(name = "q2c", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the workflow definitions and print what each one runs.
    Check {
        /// Directory of `*.toml` workflow definitions.
        #[arg(long, env = "Q2C_WORKFLOWS_DIR", default_value = "workflows")]
        workflows: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("q2c: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { workflows } => check(&workflows),
    }
}

fn check(directory: &std::path::Path) -> anyhow::Result<()> {
    let definitions = workflows::load_dir(directory)?;
    for (path, definition) in &definitions {
        let steps: Vec<&str> = definition
            .steps()
            .iter()
            .map(|step| step.name.as_str())
            .collect();
        println!(
            "{}: workflow `{}` ({} steps: {}), sha256 {}",
            path.display(),
            definition.name(),
            steps.len(),
            steps.join(" → "),
            definition.hash()
        );
    }
    println!("{} workflow definition(s) valid", definitions.len());
    Ok(())
}
