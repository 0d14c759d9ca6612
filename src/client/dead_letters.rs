//! `q2c dead-letters`: messages that could not be processed, to read,
//! replay or discard.

use serde_json::{Value, json};

use super::http::{Client, Conditions, segment};
use super::table::{Table, cell};
use super::workflows::{items, with_next};
use super::{Error, print};

/// What to do with dead letters.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List dead letters, newest first (open ones unless --state says
    /// otherwise).
    List(ListArgs),
    /// Show one letter whole: where it was published, its body, its
    /// history.
    Show {
        /// The letter id.
        id: i64,
    },
    /// Publish the letter again to where it was first published.
    Replay(ActionArgs),
    /// Set the letter aside for good (it is kept, and audited).
    Discard(ActionArgs),
}

/// The list's filters and paging.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// open (the default), replayed, discarded or all.
    #[arg(long)]
    state: Option<String>,
    /// A part of the reason it was set aside, any case.
    #[arg(long)]
    reason: Option<String>,
    /// The message type (its routing key).
    #[arg(long = "type")]
    message_type: Option<String>,
    /// Set aside longer ago than this, e.g. 2h.
    #[arg(long)]
    older_than: Option<String>,
    /// Set aside more recently than this, e.g. 30m.
    #[arg(long)]
    newer_than: Option<String>,
    /// Letters per page (1 to 1000).
    #[arg(long)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

/// What replay and discard take.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The letter id.
    id: i64,
    /// Why, for the audit trail.
    #[arg(long)]
    reason: String,
}

/// Runs a `dead-letters` command.
pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), Error> {
    match command {
        Command::List(args) => {
            let query: Vec<(&str, String)> = [
                ("state", args.state),
                ("reason", args.reason),
                ("type", args.message_type),
                ("older_than", args.older_than),
                ("newer_than", args.newer_than),
                ("limit", args.limit.map(|limit| limit.to_string())),
                ("cursor", args.cursor),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value)))
            .collect();
            let answer = client
                .get("/dead-letters", &query, "application/json")
                .await?;
            if json {
                return print(&answer.body);
            }
            let page = answer.json()?;
            if items(&page).is_empty() {
                return print("no dead letters");
            }
            let mut table = Table::new(&["ID", "RECEIVED", "TYPE", "STATE", "REPLAYS", "REASON"]);
            for letter in items(&page) {
                table.row(vec![
                    cell(letter, "id"),
                    cell(letter, "received_at"),
                    cell(letter, "type"),
                    cell(letter, "state"),
                    cell(letter, "replay_count"),
                    cell(letter, "reason"),
                ]);
            }
            print(&with_next(table.render(), &page, "next_cursor"))
        }
        Command::Show { id } => {
            let answer = client
                .get(
                    &format!("/dead-letters/{}", segment(&id.to_string())),
                    &[],
                    "application/json",
                )
                .await?;
            if json {
                return print(&answer.body);
            }
            print(&render_letter(&answer.json()?))
        }
        Command::Replay(args) => act(client, "replay", args, json).await,
        Command::Discard(args) => act(client, "discard", args, json).await,
    }
}

async fn act(client: &Client, action: &str, args: ActionArgs, json: bool) -> Result<(), Error> {
    let answer = client
        .post(
            &format!("/dead-letters/{}/{action}", segment(&args.id.to_string())),
            &json!({"reason": args.reason}),
            &Conditions::default(),
        )
        .await?;
    if json {
        return print(&answer.body);
    }
    let letter = answer.json()?;
    print(&format!(
        "{action}: dead letter {} is {} (replayed {} time(s))",
        args.id,
        cell(&letter, "state"),
        cell(&letter, "replay_count"),
    ))
}

/// One letter for people: its standing, then its body as text (or
/// base64 when it is not UTF-8), then what operators did with it.
fn render_letter(letter: &Value) -> String {
    let mut out = String::new();
    for name in [
        "id",
        "received_at",
        "message_id",
        "exchange",
        "routing_key",
        "reason",
        "state",
        "replay_count",
        "replayable",
        "size",
    ] {
        out.push_str(&format!("{name:<13} {}\n", cell(letter, name)));
    }
    let body = &letter["body"];
    let text = match (&body["json"], body["text"].as_str()) {
        (Value::Null, Some(text)) => text.to_owned(),
        (Value::Null, None) => format!("(base64) {}", cell(body, "base64")),
        (parsed, _) => serde_json::to_string_pretty(parsed).unwrap_or_default(),
    };
    out.push_str(&format!("\nbody:\n{text}\n"));
    let history = items_named(letter, "history");
    if !history.is_empty() {
        let mut table = Table::new(&["AT", "ACTION", "ACTOR", "RESULT", "REASON"]);
        for entry in history {
            table.row(vec![
                cell(entry, "at"),
                cell(entry, "action"),
                cell(entry, "actor"),
                cell(entry, "result"),
                cell(entry, "reason"),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

fn items_named<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    value[name]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}
