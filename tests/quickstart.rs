//! The quick start, run as a newcomer runs it: `deploy/quickstart.sh
//! --exit-when-done` against real Postgres and RabbitMQ, with the real
//! binary, publishing its sample quotes on a local Salesforce that `q2c
//! serve` subscribes to over the Pub/Sub API, and summing up how each ended.
//! Its database and broker prefix are its own, and are dropped after.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::World;

/// Longer than the script's own deadline, well within nextest's.
const DEADLINE: Duration = Duration::from_secs(100);

/// Settings the script reads that must not leak in from the environment.
const INHERITED: &[&str] = &[
    "Q2C_API_TOKEN",
    "Q2C_QUICKSTART_QUOTES",
    "Q2C_QUICKSTART_EXIT",
    "Q2C_SIM_LATENCY",
    "Q2C_SIM_FAILURE_RATE",
    "Q2C_SIM_IGNORE_FIRST_ATTEMPT",
    "Q2C_SIM_SEED",
    "Q2C_SIM_LEDGER",
    "Q2C_WORKFLOWS_DIR",
    "Q2C_INTAKE_WORKFLOW",
    "Q2C_READY_FILE",
    "Q2C_CRASH_AT",
    // The local Salesforce's settings.
    "Q2C_LOCAL_SF_GRPC_ADDR",
    "Q2C_LOCAL_SF_HTTP_ADDR",
    "Q2C_LOCAL_SF_ORG_ID",
    "Q2C_LOCAL_SF_USER_ID",
    "Q2C_LOCAL_SF_USERNAME",
    "Q2C_LOCAL_SF_CLIENT_ID",
    "Q2C_LOCAL_SF_CLIENT_SECRET",
    "Q2C_LOCAL_SF_JWT_PUBLIC_KEY",
    "Q2C_LOCAL_SF_TOKEN_TTL",
    "Q2C_LOCAL_SF_KEEPALIVE",
    "Q2C_LOCAL_SF_IDLE_TIMEOUT",
    "Q2C_LOCAL_SF_RETENTION",
    // The subscriber's, in `q2c serve`.
    "Q2C_SALESFORCE_PUBSUB_URL",
    "Q2C_SALESFORCE_LOGIN_URL",
    "Q2C_SALESFORCE_CLIENT_ID",
    "Q2C_SALESFORCE_CLIENT_SECRET",
    "Q2C_SALESFORCE_CLIENT_SECRET_FILE",
    "Q2C_SALESFORCE_JWT_KEY_FILE",
    "Q2C_SALESFORCE_USERNAME",
    "Q2C_SALESFORCE_JWT_AUDIENCE",
    "Q2C_SALESFORCE_FIRST_START",
    "Q2C_SALESFORCE_ON_EXPIRED_REPLAY_ID",
    "Q2C_SALESFORCE_OUTSTANDING",
    "Q2C_SALESFORCE_ACCEPTED_TOPIC",
    "Q2C_SALESFORCE_CANCELLED_TOPIC",
    "Q2C_SALESFORCE_STALL_AFTER",
    "Q2C_SALESFORCE_RECONNECT_MIN",
    "Q2C_SALESFORCE_RECONNECT_MAX",
    "Q2C_SALESFORCE_LIMIT_BACKOFF",
];

const ACCEPTED_TOPIC: &str = "/event/Q2C_Quote_Accepted__e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_every_sample_quote_to_its_expected_outcome() {
    let world = World::new().await;
    let run_dir = tempfile::tempdir().expect("run directory");
    let transcript = run_dir.path().join("quickstart.out");

    let (status, output) = run_quickstart(&world, run_dir.path(), &transcript).await;
    assert!(status.success(), "quickstart failed ({status}):\n{output}");

    // The quotes were published on the local Salesforce, never sent to
    // q2c's HTTP API: q2c took each in over its Pub/Sub subscription.
    assert!(
        output.contains(
            "==> Publishing 8 quote-accepted events on the local Salesforce (Pub/Sub API → q2c serve)"
        ),
        "{output}"
    );
    assert!(
        output.contains("published 8 events on /event/Q2C_Quote_Accepted__e, replay ids 1 to 8"),
        "{output}"
    );
    assert!(
        output.contains("q2c serve started a workflow for each within"),
        "{output}"
    );
    assert!(
        output.contains(
            "/event/Q2C_Quote_Accepted__e: streaming, 8 events received, position 0000000000000008"
        ),
        "the subscription's state, as GET /api/v1/salesforce/subscriptions tells it:\n{output}"
    );
    // Where q2c stands in the topic: after the last event, committed with
    // its workflow's start.
    let position: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT replay_id FROM salesforce_positions WHERE topic = $1")
            .bind(ACCEPTED_TOPIC)
            .fetch_one(&world.pool)
            .await
            .expect("a stored position for the accepted-quote topic");
    assert_eq!(position, Some(8u64.to_be_bytes().to_vec()));
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM intake_events \
                 WHERE channel = '/event/Q2C_Quote_Accepted__e' AND workflow_id IS NOT NULL"
            )
            .await,
        8,
        "each event admitted from the topic started a workflow"
    );

    // The live view, printed as new lines since stdout is not a terminal.
    assert!(output.contains("==> Watching them move"), "{output}");
    assert!(output.contains("elapsed  QUOTE"), "{output}");
    assert!(
        output.contains("All 8 workflows finished in"),
        "every workflow reached a terminal status:\n{output}"
    );

    // The summary: one row per sample quote, each as its sample expects.
    let summary = output
        .split("==> Summary")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{output}"));
    let rows: Vec<Vec<&str>> = summary
        .lines()
        .map(str::split_whitespace)
        .map(Iterator::collect)
        .filter(|cells: &Vec<&str>| cells.first().is_some_and(|cell| cell.starts_with("Q-")))
        .filter(|cells| !cells[0].ends_with(':'))
        .collect();
    assert_eq!(rows.len(), 8, "eight quotes in the summary:\n{summary}");
    let ended = |outcome: &str| {
        rows.iter()
            .filter(|cells| {
                cells.windows(2).any(|pair| pair == [outcome, outcome])
                    && cells.last() == Some(&"yes")
            })
            .collect::<Vec<_>>()
    };
    let failed = ended("failed");
    assert_eq!(failed.len(), 1, "one quote failed:\n{summary}");
    assert!(
        failed[0].join(" ").contains("[Credit Hold]"),
        "the credit-hold account's order is refused:\n{summary}"
    );
    assert_eq!(ended("compensated").len(), 1, "one was undone:\n{summary}");
    assert_eq!(
        ended("completed").len(),
        6,
        "the rest completed:\n{summary}"
    );
    assert!(
        summary.contains("collect_payment failed for good: card declined"),
        "the declined card is why the compensated one was undone:\n{summary}"
    );
    assert!(
        summary
            .contains("All 8 workflows ended as expected: 6 completed, 1 failed, 1 compensated."),
        "{summary}"
    );

    // It stopped what it started.
    assert!(output.contains("Stopped. Logs are in"), "{output}");
    for ready in ["serve.ready", "sim.ready", "local-salesforce.ready"] {
        let announced = std::fs::read_to_string(run_dir.path().join(ready)).expect(ready);
        let pid = serde_json::from_str::<serde_json::Value>(&announced).expect("JSON")["pid"]
            .as_u64()
            .expect("a pid");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{ready}: process {pid} still runs"
        );
    }
    world.cleanup().await;
}

/// Runs the script to its end, or stops it (SIGTERM: it stops its processes)
/// after `DEADLINE`. Returns how it exited and what it printed.
async fn run_quickstart(
    world: &World,
    run_dir: &Path,
    transcript: &Path,
) -> (std::process::ExitStatus, String) {
    let out = std::fs::File::create(transcript).expect("transcript");
    let err = out.try_clone().expect("transcript");
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("deploy/quickstart.sh")
        .arg("--exit-when-done")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("Q2C_BIN", env!("CARGO_BIN_EXE_q2c"))
        .env("DATABASE_URL", &world.database_url)
        .env("AMQP_URL", &world.amqp_url)
        .env("Q2C_AMQP_PREFIX", world.topology.prefix())
        .env("Q2C_HTTP_ADDR", "127.0.0.1:0")
        .env("Q2C_RUN_DIR", run_dir)
        .env("Q2C_QUICKSTART_TIMEOUT", "80")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for name in INHERITED {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("bash runs");
    let status = match tokio::time::timeout(DEADLINE, child.wait()).await {
        Ok(status) => status.expect("wait for the quickstart"),
        Err(_) => {
            let pid = child.id().expect("still running");
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
            let _ = child.kill().await;
            panic!(
                "quickstart did not finish in {DEADLINE:?}:\n{}",
                std::fs::read_to_string(transcript).unwrap_or_default()
            );
        }
    };
    let output = std::fs::read_to_string(transcript).expect("read the transcript");
    (status, output)
}
