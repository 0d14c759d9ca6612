//! `q2c workflows`: find workflows, read one, and act on it.

use serde_json::{Value, json};

use super::http::{Client, Conditions, segment};
use super::table::{Table, cell, show};
use super::{Error, json_object, print};

/// What to do with workflows.
// Parsed once and dropped at exit: the size of the filter flags costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List workflows, newest first, filtered (`GET /api/v1/workflows`).
    List(ListArgs),
    /// Show one workflow: where it stands, what it allows, its steps.
    Show {
        /// The workflow id.
        id: String,
    },
    /// A workflow's history, oldest first, a page at a time.
    History {
        /// The workflow id.
        id: String,
        /// The `next_after` of the previous page.
        #[arg(long)]
        after: Option<i64>,
        /// Entries per page (1 to 1000; the API's default is 100).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Retry the step a suspended workflow halted at, now; `--input` is a
    /// JSON merge patch to the step's input.
    Resume {
        #[command(flatten)]
        action: ActionArgs,
        /// A JSON merge patch to the halted step's input, e.g.
        /// '{"payment_method": "pm_card_visa"}'.
        #[arg(long)]
        input: Option<String>,
        /// With a changed input, where an attempt went unanswered: what
        /// became of it, `undo` or `not_done`.
        #[arg(long)]
        earlier: Option<String>,
    },
    /// Skip the rest of the backoff of a step waiting to retry.
    Retry(ActionArgs),
    /// Declare the halted step done with this output.
    Skip {
        #[command(flatten)]
        action: ActionArgs,
        /// The step's output as JSON, checked against the definition.
        #[arg(long)]
        output: Option<String>,
        /// Where an attempt went unanswered: what became of it, `undo`,
        /// `not_done` or `done` (it is the step's result).
        #[arg(long)]
        earlier: Option<String>,
    },
    /// Stop and undo the completed steps in reverse order.
    Cancel(ActionArgs),
    /// Stop at once; nothing is undone.
    Terminate(ActionArgs),
    /// Hold the workflow: no command leaves, timers freeze.
    Pause(ActionArgs),
    /// Release a paused workflow.
    Unpause(ActionArgs),
}

/// The list's filters and paging, as the API names them.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    filter: Filter,
    /// Workflows per page (1 to 1000; the API's default is 100).
    #[arg(long)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// `newest` (the default) or `oldest`.
    #[arg(long)]
    order: Option<String>,
}

/// Which workflows: the list's filters, shared with bulk actions.
#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    /// running, suspended, compensating, completed, …
    #[arg(long)]
    status: Option<String>,
    /// The step a workflow stands at, e.g. collect_payment.
    #[arg(long)]
    step: Option<String>,
    /// Paused (true) or not (false).
    #[arg(long)]
    paused: Option<bool>,
    /// Live workflows at the same status and step for longer than this,
    /// e.g. 2h.
    #[arg(long)]
    stuck: Option<String>,
    /// Any text value a step returned: an order number, an invoice number.
    #[arg(long)]
    reference: Option<String>,
    /// The output member the reference must be in.
    #[arg(long)]
    reference_field: Option<String>,
    /// The quote's id.
    #[arg(long)]
    quote_id: Option<String>,
    /// The quote's account id.
    #[arg(long)]
    account_id: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    created_from: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long)]
    created_until: Option<String>,
    /// Updated at or after (RFC 3339).
    #[arg(long)]
    updated_from: Option<String>,
    /// Updated before (RFC 3339).
    #[arg(long)]
    updated_until: Option<String>,
}

impl Filter {
    /// The filters given, as the API's query names them.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let texts = [
            ("status", &self.status),
            ("step", &self.step),
            ("stuck", &self.stuck),
            ("reference", &self.reference),
            ("reference_field", &self.reference_field),
            ("quote_id", &self.quote_id),
            ("account_id", &self.account_id),
            ("created_from", &self.created_from),
            ("created_until", &self.created_until),
            ("updated_from", &self.updated_from),
            ("updated_until", &self.updated_until),
        ];
        let mut pairs: Vec<(&'static str, String)> = texts
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
            .collect();
        if let Some(paused) = self.paused {
            pairs.push(("paused", paused.to_string()));
        }
        pairs
    }
}

/// What every action takes.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The workflow id.
    id: String,
    /// Why, for the audit trail.
    #[arg(long)]
    reason: String,
    /// Act only if the workflow is still at this version (its ETag).
    #[arg(long)]
    if_match: Option<i64>,
    /// Makes a retried request safe: the same key gets the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs a `workflows` command.
pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), Error> {
    match command {
        Command::List(args) => list(client, args, json).await,
        Command::Show { id } => {
            let answer = client
                .get(
                    &format!("/workflows/{}", segment(&id)),
                    &[],
                    "application/json",
                )
                .await?;
            if json {
                return print(&answer.body);
            }
            print(&render_workflow(&answer.json()?))
        }
        Command::History { id, after, limit } => {
            let mut query = Vec::new();
            if let Some(after) = after {
                query.push(("after", after.to_string()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let answer = client
                .get(
                    &format!("/workflows/{}/history", segment(&id)),
                    &query,
                    "application/json",
                )
                .await?;
            if json {
                return print(&answer.body);
            }
            let page = answer.json()?;
            let mut table = Table::new(&["ID", "AT", "KIND", "STEP", "DETAIL"]);
            for entry in items(&page) {
                table.row(vec![
                    cell(entry, "id"),
                    cell(entry, "at"),
                    cell(entry, "kind"),
                    cell(entry, "step"),
                    cell(entry, "detail"),
                ]);
            }
            print(&with_next(table.render(), &page, "next_after"))
        }
        Command::Resume {
            action,
            input,
            earlier,
        } => {
            let input = input
                .map(|text| json_object("--input", &text))
                .transpose()?;
            let carried = [("input", input), ("earlier", earlier.map(Value::String))];
            act(client, "resume", action, &carried, json).await
        }
        Command::Skip {
            action,
            output,
            earlier,
        } => {
            let output = output
                .map(|text| json_object("--output", &text))
                .transpose()?;
            let carried = [("output", output), ("earlier", earlier.map(Value::String))];
            act(client, "skip", action, &carried, json).await
        }
        Command::Retry(action) => act(client, "retry", action, &[], json).await,
        Command::Cancel(action) => act(client, "cancel", action, &[], json).await,
        Command::Terminate(action) => act(client, "terminate", action, &[], json).await,
        Command::Pause(action) => act(client, "pause", action, &[], json).await,
        Command::Unpause(action) => act(client, "unpause", action, &[], json).await,
    }
}

async fn list(client: &Client, args: ListArgs, json: bool) -> Result<(), Error> {
    let mut query = args.filter.pairs();
    for (name, value) in [
        ("cursor", args.cursor),
        ("order", args.order),
        ("limit", args.limit.map(|limit| limit.to_string())),
    ] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let answer = client.get("/workflows", &query, "application/json").await?;
    if json {
        return print(&answer.body);
    }
    let page = answer.json()?;
    let mut table = Table::new(&[
        "ID", "QUOTE", "STATUS", "STEP", "PAUSED", "SINCE", "UPDATED",
    ]);
    for row in items(&page) {
        table.row(vec![
            cell(row, "id"),
            quote(row),
            cell(row, "status"),
            cell(row, "step"),
            if row["paused"] == json!(true) {
                "paused".to_owned()
            } else {
                "-".to_owned()
            },
            cell(row, "state_since"),
            cell(row, "updated_at"),
        ]);
    }
    print(&with_next(table.render(), &page, "next_cursor"))
}

/// `POST /workflows/{id}/actions/{action}`; `member` names what `extra`
/// goes in (`input` or `output`).
async fn act(
    client: &Client,
    action: &str,
    args: ActionArgs,
    carried: &[(&str, Option<Value>)],
    json: bool,
) -> Result<(), Error> {
    let mut body = json!({"reason": args.reason});
    for (member, value) in carried {
        if let Some(value) = value {
            body[*member] = value.clone();
        }
    }
    let conditions = Conditions {
        if_match: args.if_match,
        idempotency_key: args.idempotency_key.as_deref(),
    };
    let answer = client
        .post(
            &format!("/workflows/{}/actions/{action}", segment(&args.id)),
            &body,
            &conditions,
        )
        .await?;
    if json {
        return print(&answer.body);
    }
    let standing = answer.json()?;
    let replayed = if answer.header("idempotent-replayed") == Some("true") {
        " (the first answer to this idempotency key)"
    } else {
        ""
    };
    print(&format!(
        "{action}: workflow {} is {}{}{}, version {}{replayed}",
        args.id,
        cell(&standing, "status"),
        standing["step"]
            .as_str()
            .map(|step| format!(" at {step}"))
            .unwrap_or_default(),
        if standing["paused"] == json!(true) {
            ", paused"
        } else {
            ""
        },
        cell(&standing, "version"),
    ))
}

/// One workflow for people: where it stands, then its steps.
fn render_workflow(view: &Value) -> String {
    let actions = view["allowed_actions"]
        .as_array()
        .map(|actions| actions.iter().map(show).collect::<Vec<_>>().join(", "))
        .filter(|actions| !actions.is_empty())
        .unwrap_or_else(|| "none".to_owned());
    let mut out = String::new();
    for (label, value) in [
        ("id", cell(view, "id")),
        ("quote", quote(view)),
        ("account", cell(view, "account_name")),
        ("status", cell(view, "status")),
        ("outcome", cell(view, "outcome")),
        ("step", cell(view, "step")),
        ("phase", cell(view, "phase")),
        ("paused", cell(view, "paused")),
        ("held events", cell(view, "held_events")),
        ("attention", cell(view, "attention")),
        ("version", cell(view, "version")),
        ("definition", cell(view, "definition")),
        ("created", cell(view, "created_at")),
        ("updated", cell(view, "updated_at")),
        ("actions", actions),
    ] {
        out.push_str(&format!("{label:<12} {value}\n"));
    }
    out.push('\n');
    let mut steps = Table::new(&[
        "STEP",
        "STATUS",
        "REVISION",
        "ATTEMPTS",
        "COMPENSATION",
        "LAST ERROR",
    ]);
    for step in items_of(view, "steps") {
        steps.row(vec![
            cell(step, "name"),
            cell(step, "status"),
            cell(step, "revision"),
            cell(step, "attempts"),
            cell(&step["compensation"], "status"),
            cell(step, "last_error"),
        ]);
    }
    out.push_str(&steps.render());
    out
}

/// The quote's number when it has one, else its id.
fn quote(row: &Value) -> String {
    match row.get("quote_number") {
        Some(Value::String(number)) if !number.is_empty() => number.clone(),
        _ => cell(row, "quote_id"),
    }
}

/// A page's `items`.
pub fn items(page: &Value) -> &[Value] {
    items_of(page, "items")
}

fn items_of<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    value[name]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The table, then the next page's cursor when there is one, so a person
/// sees that the list goes on.
pub fn with_next(mut text: String, page: &Value, name: &str) -> String {
    if let Some(next) = page.get(name).filter(|next| !next.is_null()) {
        text.push_str(&format!("{name}: {}\n", show(next)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_given_are_sent() {
        let filter = Filter {
            status: Some("suspended".into()),
            step: None,
            paused: Some(false),
            stuck: Some("2h".into()),
            reference: None,
            reference_field: None,
            quote_id: None,
            account_id: None,
            created_from: None,
            created_until: None,
            updated_from: None,
            updated_until: None,
        };
        assert_eq!(
            filter.pairs(),
            vec![
                ("status", "suspended".to_owned()),
                ("stuck", "2h".to_owned()),
                ("paused", "false".to_owned()),
            ]
        );
    }

    #[test]
    fn the_next_cursor_follows_the_table_only_when_there_is_one() {
        let more = json!({"items": [], "next_cursor": "abc"});
        let last = json!({"items": [], "next_cursor": null});
        assert_eq!(
            with_next("T\n".into(), &more, "next_cursor"),
            "T\nnext_cursor: abc\n"
        );
        assert_eq!(with_next("T\n".into(), &last, "next_cursor"), "T\n");
    }
}
