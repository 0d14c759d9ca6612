//! `q2c audit export`: every operator action, oldest first, as a table,
//! as JSON, or as the CSV auditors get.

use super::http::Client;
use super::table::{Table, cell};
use super::workflows::{items, with_next};
use super::{Error, print, write_raw};

/// What to do with the audit trail.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Export a page of the audit trail, oldest first.
    Export(ExportArgs),
}

/// The export's filters and paging.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write the CSV as the API gives it (wins over --json).
    #[arg(long)]
    csv: bool,
    /// Only this workflow's rows.
    #[arg(long)]
    workflow_id: Option<String>,
    /// Only this token name's rows.
    #[arg(long)]
    actor: Option<String>,
    /// At or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// The `next_after` of the previous page.
    #[arg(long)]
    after: Option<i64>,
    /// Rows per page (1 to 10000; the API's default is 500).
    #[arg(long)]
    limit: Option<i64>,
}

/// Runs an `audit` command.
pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), Error> {
    let Command::Export(args) = command;
    let query: Vec<(&str, String)> = [
        ("workflow_id", args.workflow_id),
        ("actor", args.actor),
        ("since", args.since),
        ("until", args.until),
        ("after", args.after.map(|after| after.to_string())),
        ("limit", args.limit.map(|limit| limit.to_string())),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name, value)))
    .collect();
    let accept = if args.csv {
        "text/csv"
    } else {
        "application/json"
    };
    let answer = client.get("/audit", &query, accept).await?;
    if args.csv {
        // stdout is the CSV, byte for byte; that the export stopped at its
        // limit goes to stderr, so it is seen and never mistaken for a row.
        if let Some(next) = answer.header("q2c-next-after") {
            eprintln!("q2c: more rows follow: pass --after {next}");
        }
        return write_raw(&answer.body);
    }
    if json {
        return print(&answer.body);
    }
    let page = answer.json()?;
    let mut table = Table::new(&[
        "ID", "AT", "ACTOR", "ACTION", "WORKFLOW", "RESULT", "REASON",
    ]);
    for row in items(&page) {
        table.row(vec![
            cell(row, "id"),
            cell(row, "at"),
            cell(row, "actor"),
            cell(row, "action"),
            cell(row, "workflow_id"),
            cell(row, "result"),
            cell(row, "reason"),
        ]);
    }
    print(&with_next(table.render(), &page, "next_after"))
}
