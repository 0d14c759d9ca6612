//! The operator CLI end to end: the real `q2c` binary as a subprocess for
//! each command, against a real `q2c serve` with simulated connectors,
//! checking what scripts rely on: outputs and exit codes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::product::{Api, Sim, accepted_event};
use support::{TOKEN, World, fast_definition};

/// Generous: these tests assert outcomes, not times.
const DEADLINE: Duration = Duration::from_secs(60);

/// What one run of the CLI came to.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!("not JSON ({error}): {}", self.stdout);
        })
    }
}

/// Runs `q2c` as an operator would: the API's URL and token from the
/// settings, nothing else inherited that could change the outcome.
async fn q2c(url: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_q2c"))
        .args(args)
        .env("Q2C_API_URL", url)
        .env("Q2C_CLI_TOKEN", TOKEN)
        .env_remove("Q2C_API_TOKEN")
        .output()
        .await
        .expect("q2c runs");
    Run {
        code: output.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_reads_and_repairs_workflows_from_the_command_line() {
    let world = World::new().await;
    let definition = fast_definition().replace(
        "on_failure = \"compensate\"\ndeadline",
        "on_failure = \"suspend\"\ndeadline",
    );
    assert!(definition.contains("on_failure = \"suspend\""));
    std::fs::write(
        world.directory.path().join("quote-to-cash.toml"),
        definition,
    )
    .unwrap();
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let url = serve.http.as_str();

    let declined = api
        .post_event(&accepted_event(1, "Initech", "pm_card_chargeDeclined"))
        .await;
    let declined = declined.body["workflow_id"].as_str().unwrap().to_owned();
    let paid = api
        .post_event(&accepted_event(2, "Acme Corp", "pm_card_visa"))
        .await;
    let paid = paid.body["workflow_id"].as_str().unwrap().to_owned();
    api.workflow_until(&declined, "the payment to suspend", DEADLINE, |view| {
        view["status"] == "suspended"
    })
    .await;
    api.workflow_until(&paid, "the paid one to complete", DEADLINE, |view| {
        view["status"] == "completed"
    })
    .await;

    // The list, for people: a header and a line per workflow.
    let list = q2c(url, &["workflows", "list"]).await.ok();
    let header = list.stdout.lines().next().unwrap();
    assert!(header.starts_with("ID  "), "{}", list.stdout);
    assert!(header.contains("STATUS") && header.contains("STEP"));
    let line = list
        .stdout
        .lines()
        .find(|line| line.starts_with(&declined))
        .unwrap_or_else(|| panic!("no line for {declined}: {}", list.stdout));
    assert!(
        line.contains("suspended") && line.contains("collect_payment"),
        "{line}"
    );
    assert!(!list.stdout.contains("next_cursor"), "{}", list.stdout);

    // For scripts: the API's JSON, filtered, paged.
    let suspended = q2c(
        url,
        &["workflows", "list", "--status", "suspended", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(suspended["items"].as_array().unwrap().len(), 1);
    assert_eq!(suspended["items"][0]["id"], declined.as_str());
    let page = q2c(
        url,
        &["workflows", "list", "--limit", "1", "--order", "oldest"],
    )
    .await
    .ok();
    assert!(page.stdout.contains("next_cursor: "), "{}", page.stdout);

    let show = q2c(url, &["workflows", "show", &declined]).await.ok();
    assert!(
        show.stdout.contains("status       suspended"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("actions      resume, skip, cancel, terminate, pause"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("card declined: generic_decline"),
        "{}",
        show.stdout
    );
    let version = q2c(url, &["workflows", "show", &declined, "--json"])
        .await
        .ok()
        .json()["version"]
        .as_i64()
        .unwrap();

    let history = q2c(url, &["workflows", "history", &declined]).await.ok();
    assert!(history.stdout.starts_with("ID  "), "{}", history.stdout);
    assert!(
        history.stdout.contains("collect_payment"),
        "{}",
        history.stdout
    );

    // Pause and unpause, the first conditional on the version just read.
    let reason = "checking with the customer";
    let paused = q2c(
        url,
        &[
            "workflows",
            "pause",
            &declined,
            "--reason",
            reason,
            "--if-match",
            &version.to_string(),
        ],
    )
    .await
    .ok();
    assert!(
        paused.stdout.starts_with(&format!(
            "pause: workflow {declined} is suspended at collect_payment, paused"
        )),
        "{}",
        paused.stdout
    );
    let unpaused = q2c(
        url,
        &["workflows", "unpause", &declined, "--reason", reason],
    )
    .await
    .ok();
    assert!(!unpaused.stdout.contains("paused,"), "{}", unpaused.stdout);

    // Refusals: exit 1 with the problem's detail on stderr.
    let stale = q2c(
        url,
        &[
            "workflows",
            "pause",
            &declined,
            "--reason",
            reason,
            "--if-match",
            &version.to_string(),
        ],
    )
    .await;
    assert_eq!(stale.code, 1, "{}", stale.stderr);
    assert!(
        stale.stderr.contains("read it again and decide anew (412)"),
        "{}",
        stale.stderr
    );
    let finished = q2c(url, &["workflows", "cancel", &paid, "--reason", reason]).await;
    assert_eq!(finished.code, 1, "{}", finished.stderr);
    assert!(finished.stderr.contains("(409)"), "{}", finished.stderr);
    assert!(finished.stdout.is_empty());

    // Usage errors are 2, an unreachable server is 3.
    let no_reason = q2c(url, &["workflows", "pause", &declined]).await;
    assert_eq!(no_reason.code, 2, "{}", no_reason.stderr);
    assert!(
        no_reason.stderr.contains("--reason"),
        "{}",
        no_reason.stderr
    );
    let not_json = q2c(
        url,
        &[
            "workflows",
            "resume",
            &declined,
            "--reason",
            reason,
            "--input",
            "{",
        ],
    )
    .await;
    assert_eq!(not_json.code, 2, "{}", not_json.stderr);
    // Port 1 on loopback: nothing listens there. The flag wins over the setting.
    let unreachable = q2c(url, &["workflows", "list", "--url", "http://127.0.0.1:1"]).await;
    assert_eq!(unreachable.code, 3, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("cannot reach the API"),
        "{}",
        unreachable.stderr
    );

    // A bulk dry run lists what it would touch, and does nothing yet.
    let planned = q2c(
        url,
        &[
            "bulk",
            "dry-run",
            "--action",
            "pause",
            "--reason",
            reason,
            "--status",
            "suspended",
            "--rate",
            "2",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(planned["status"], "planned");
    assert_eq!(planned["total"], 1);
    let job = planned["id"].to_string();
    let shown = q2c(url, &["bulk", "show", &job]).await.ok();
    assert!(
        shown.stdout.starts_with(&format!(
            "bulk job {job}: pause (planned), 1 workflow(s) at 2.0/s"
        )),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains(&declined), "{}", shown.stdout);
    assert!(shown.stdout.contains("pending"), "{}", shown.stdout);

    let letters = q2c(url, &["dead-letters", "list"]).await.ok();
    assert_eq!(letters.stdout.trim(), "no dead letters");

    // `--earlier` reaches the API, which says where it means nothing: the
    // card was declined, so nothing about the first charge is uncertain.
    let needless = q2c(
        url,
        &[
            "workflows",
            "resume",
            &declined,
            "--reason",
            reason,
            "--input",
            r#"{"payment_method": "pm_card_visa"}"#,
            "--earlier",
            "undo",
        ],
    )
    .await;
    assert_eq!(needless.code, 1, "{}", needless.stderr);
    assert!(
        needless.stderr.contains("`earlier` means nothing here"),
        "{}",
        needless.stderr
    );
    let bulk_needless = q2c(
        url,
        &[
            "bulk",
            "dry-run",
            "--action",
            "pause",
            "--reason",
            reason,
            "--status",
            "suspended",
            "--earlier",
            "undo",
        ],
    )
    .await;
    assert_eq!(bulk_needless.code, 1, "{}", bulk_needless.stderr);
    assert!(
        bulk_needless
            .stderr
            .contains("`earlier` goes with `resume` and `skip` only"),
        "{}",
        bulk_needless.stderr
    );

    // Resume with a new card: the workflow completes.
    let resumed = q2c(
        url,
        &[
            "workflows",
            "resume",
            &declined,
            "--reason",
            "customer gave a new card",
            "--input",
            r#"{"payment_method": "pm_card_visa"}"#,
            "--idempotency-key",
            "cli-test-resume-1",
        ],
    )
    .await
    .ok();
    assert!(
        resumed.stdout.starts_with("resume: workflow"),
        "{}",
        resumed.stdout
    );
    api.workflow_until(&declined, "the resumed one to complete", DEADLINE, |view| {
        view["status"] == "completed"
    })
    .await;

    // The audit trail as auditors get it: the CSV as it came.
    let csv = q2c(
        url,
        &["audit", "export", "--csv", "--workflow-id", &declined],
    )
    .await
    .ok();
    let mut lines = csv.stdout.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("id,at,actor,role,workflow_id"),
        "{}",
        csv.stdout
    );
    let rows: Vec<&str> = lines.collect();
    for action in ["pause", "unpause", "resume"] {
        assert!(
            rows.iter().any(|row| row.contains(&format!(",{action},"))),
            "no {action} row: {}",
            csv.stdout
        );
    }
    assert!(
        rows.iter()
            .any(|row| row.contains("customer gave a new card"))
    );

    assert!(serve.terminate().await.success());
    sim.stop();
}

/// Runs `q2c` and expects the API to refuse: exit 1, the status on stderr.
async fn refused(url: &str, args: &[&str], status: u16) -> Run {
    let run = q2c(url, args).await;
    assert_eq!(run.code, 1, "{args:?}: {} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("({status})")),
        "{args:?}: {}",
        run.stderr
    );
    run
}

/// The commands the first test does not run: retry, skip, cancel and
/// terminate on suspended workflows, a bulk job cancelled and one run, and
/// the dead-letter commands against a letter that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_command_reaches_its_route() {
    let world = World::new().await;
    let definition = fast_definition().replace(
        "on_failure = \"compensate\"\ndeadline",
        "on_failure = \"suspend\"\ndeadline",
    );
    std::fs::write(
        world.directory.path().join("quote-to-cash.toml"),
        definition,
    )
    .unwrap();
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let url = serve.http.as_str();
    let mut halted = Vec::new();
    for n in 1..=3 {
        let answer = api
            .post_event(&accepted_event(n, "Initech", "pm_card_chargeDeclined"))
            .await;
        let id = answer.body["workflow_id"].as_str().unwrap().to_owned();
        api.workflow_until(&id, "the payment to suspend", DEADLINE, |view| {
            view["status"] == "suspended"
        })
        .await;
        halted.push(id);
    }
    let (skipped, cancelled, terminated) = (&halted[0], &halted[1], &halted[2]);

    // A bulk job planned and cancelled: it cannot run any more.
    let planned = q2c(
        url,
        &[
            "bulk",
            "dry-run",
            "--action",
            "resume",
            "--reason",
            "not now",
            "--status",
            "suspended",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(planned["total"], 3);
    let job = planned["id"].to_string();
    q2c(url, &["bulk", "cancel", &job]).await.ok();
    refused(url, &["bulk", "run", &job], 409).await;
    // A bulk job that matches nothing runs and finishes.
    let empty = q2c(
        url,
        &[
            "bulk",
            "dry-run",
            "--action",
            "pause",
            "--reason",
            "nothing",
            "--reference",
            "NO-SUCH-REF",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(empty["total"], 0);
    let empty_job = empty["id"].to_string();
    q2c(url, &["bulk", "run", &empty_job]).await.ok();
    support::eventually("the empty job to finish", DEADLINE, || async {
        let shown = q2c(url, &["bulk", "show", &empty_job, "--json"]).await;
        shown.code == 0 && shown.json()["status"] == "finished"
    })
    .await;

    // A suspended workflow is not waiting to retry.
    refused(
        url,
        &["workflows", "retry", skipped, "--reason", "try"],
        409,
    )
    .await;
    q2c(
        url,
        &[
            "workflows",
            "skip",
            skipped,
            "--reason",
            "paid by bank transfer",
            "--output",
            r#"{"payment_id": "PAY-BY-TRANSFER"}"#,
        ],
    )
    .await
    .ok();
    q2c(
        url,
        &[
            "workflows",
            "cancel",
            cancelled,
            "--reason",
            "customer withdrew",
        ],
    )
    .await
    .ok();
    q2c(
        url,
        &[
            "workflows",
            "terminate",
            terminated,
            "--reason",
            "handled elsewhere",
        ],
    )
    .await
    .ok();
    for (id, status) in [
        (skipped, "completed"),
        (cancelled, "cancelled"),
        (terminated, "terminated"),
    ] {
        api.workflow_until(id, &format!("{id} to be {status}"), DEADLINE, |view| {
            view["status"] == status
        })
        .await;
    }
    let shown = api.get(&format!("/api/v1/workflows/{skipped}")).await.body;
    assert_eq!(shown["steps"][2]["output"]["payment_id"], "PAY-BY-TRANSFER");

    refused(url, &["dead-letters", "show", "999"], 404).await;
    refused(
        url,
        &["dead-letters", "replay", "999", "--reason", "retry it"],
        404,
    )
    .await;
    refused(
        url,
        &["dead-letters", "discard", "999", "--reason", "noise"],
        404,
    )
    .await;

    assert!(serve.terminate().await.success());
    sim.stop();
}
