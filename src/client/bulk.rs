//! `q2c bulk`: one action on many workflows, in two moves: a dry run that
//! lists exactly which workflows at which versions, then a run of exactly
//! that list.

use serde_json::{Value, json};

use super::http::{Client, Conditions, segment};
use super::table::{Table, cell};
use super::workflows::{Filter, items};
use super::{Error, json_object, print};

/// What to do with bulk jobs.
// Parsed once and dropped at exit: the size of the filter flags costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Plan a bulk action and list the workflows it would touch; nothing
    /// is done until `q2c bulk run`.
    DryRun(DryRunArgs),
    /// Run a planned job, at its rate.
    Run {
        /// The job id the dry run printed.
        id: i64,
    },
    /// A job's progress and what came of each workflow.
    Show {
        /// The job id.
        id: i64,
    },
    /// Stop what is left of a planned or running job.
    Cancel {
        /// The job id.
        id: i64,
    },
}

/// A dry run's action and filter.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    /// resume, retry, skip, cancel, terminate, pause or unpause.
    #[arg(long)]
    action: String,
    /// Why, for the audit trail of every workflow touched.
    #[arg(long)]
    reason: String,
    /// With resume: a JSON merge patch to each halted step's input.
    #[arg(long)]
    input: Option<String>,
    /// With skip: the output each halted step is declared done with.
    #[arg(long)]
    output: Option<String>,
    /// With resume and an input, or skip: what became of each earlier
    /// attempt that may have taken effect: `undo`, `not_done` or (skip)
    /// `done`.
    #[arg(long)]
    earlier: Option<String>,
    /// Workflows per second when it runs (the server's default otherwise).
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    filter: Filter,
}

/// Runs a `bulk` command.
pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), Error> {
    let answer = match command {
        Command::DryRun(args) => {
            let mut filter = serde_json::Map::new();
            for (name, value) in args.filter.pairs() {
                // The API's filter is the list's query as JSON: `paused`
                // is a boolean there, everything else text.
                let value = match name {
                    "paused" => json!(value == "true"),
                    _ => json!(value),
                };
                filter.insert(name.to_owned(), value);
            }
            let mut body = json!({
                "action": args.action,
                "reason": args.reason,
                "filter": filter,
            });
            if let Some(input) = args.input {
                body["input"] = json_object("--input", &input)?;
            }
            if let Some(output) = args.output {
                body["output"] = json_object("--output", &output)?;
            }
            if let Some(earlier) = args.earlier {
                body["earlier"] = json!(earlier);
            }
            if let Some(rate) = args.rate {
                body["rate_per_second"] = json!(rate);
            }
            client
                .post("/bulk-actions", &body, &Conditions::default())
                .await?
        }
        Command::Run { id } => {
            client
                .post(
                    &format!("/bulk-actions/{}/run", segment(&id.to_string())),
                    &json!({}),
                    &Conditions::default(),
                )
                .await?
        }
        Command::Cancel { id } => {
            client
                .post(
                    &format!("/bulk-actions/{}/cancel", segment(&id.to_string())),
                    &json!({}),
                    &Conditions::default(),
                )
                .await?
        }
        Command::Show { id } => {
            client
                .get(
                    &format!("/bulk-actions/{}", segment(&id.to_string())),
                    &[],
                    "application/json",
                )
                .await?
        }
    };
    if json {
        return print(&answer.body);
    }
    print(&render_job(&answer.json()?))
}

/// A job for people: what it does, how far it is, and (when the answer
/// has them) its workflows.
fn render_job(job: &Value) -> String {
    let mut out = format!(
        "bulk job {}: {} ({}), {} workflow(s) at {}/s\nreason: {}\n",
        cell(job, "id"),
        cell(job, "action"),
        cell(job, "status"),
        cell(job, "total"),
        cell(job, "rate_per_second"),
        cell(job, "reason"),
    );
    if let Some(progress) = job["progress"].as_object() {
        let counts: Vec<String> = progress
            .iter()
            .map(|(result, count)| format!("{result} {count}"))
            .collect();
        out.push_str(&format!("progress: {}\n", counts.join(", ")));
    }
    if job.get("items").is_some() {
        let mut table = Table::new(&["#", "WORKFLOW", "VERSION", "RESULT", "DETAIL"]);
        for item in items(job) {
            table.row(vec![
                cell(item, "position"),
                cell(item, "workflow_id"),
                cell(item, "version"),
                cell(item, "result"),
                cell(item, "detail"),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if job["status"] == "planned" {
        out.push_str(&format!(
            "\nnothing done yet: `q2c bulk run {}` acts on exactly this list\n",
            cell(job, "id")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_job_says_how_to_run_it() {
        let job = json!({
            "id": 7, "action": "resume", "status": "planned", "total": 1,
            "rate_per_second": 2.0, "reason": "ERP is back",
            "progress": {"pending": 1},
            "items": [{"position": 1, "workflow_id": "w1", "version": 4,
                       "result": "pending", "detail": null}],
        });
        let text = render_job(&job);
        assert!(text.starts_with("bulk job 7: resume (planned), 1 workflow(s) at 2.0/s\n"));
        assert!(text.contains("1  w1        4        pending  -"), "{text}");
        assert!(text.contains("`q2c bulk run 7`"), "{text}");
    }
}
