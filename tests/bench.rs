//! `q2c bench` as a user runs it: a short run whose report must account
//! for every workflow, effect and message. Counts, never times: speed is
//! the benchmark's business, not the test suite's.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;

/// Runs `q2c bench` with `args` against the machine's services, the
/// database URL possibly changed by `url`.
async fn bench(args: &[&str], url: impl Fn(&str) -> String) -> std::process::Output {
    let database_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let amqp_url = std::env::var("AMQP_URL").expect("AMQP_URL");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_q2c"))
        .arg("bench")
        .args(args)
        .env("DATABASE_URL", url(&database_url))
        .env("AMQP_URL", amqp_url)
        .env(
            "Q2C_WORKFLOWS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"),
        )
        .output()
        .await
        .expect("q2c bench runs")
}

#[tokio::test]
async fn a_short_run_accounts_for_every_workflow_effect_and_message() {
    let output = bench(
        &[
            "--workflows",
            "240",
            "--concurrency",
            "16",
            "--warm-up",
            "30",
            "--serial",
            "30",
            "--floors",
            "--json",
        ],
        str::to_owned,
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");

    let verified = &report["verified"];
    assert_eq!(verified["workflows"], 300);
    assert_eq!(verified["outcome"], "completed");
    assert_eq!(verified["effects"], 300 * 4);
    assert_eq!(verified["deliveries"], verified["persistent_deliveries"]);
    assert_eq!(verified["replies"], verified["deliveries"]);

    let throughput = &report["throughput"];
    assert_eq!(throughput["workflows"], 240);
    assert_eq!(throughput["workflow_latency"]["count"], 240);
    // Every command after the first of each workflow is a handoff.
    assert_eq!(throughput["handoff_latency"]["count"], 240 * 3);
    assert_eq!(throughput["round_trip_latency"]["count"], 240 * 4);
    assert_eq!(throughput["intake_latency"]["count"], 240);
    assert_eq!(throughput["broker_messages_per_workflow"], 8.0);
    // At least the acceptance and the four replies commit.
    assert!(throughput["commits_per_workflow"].as_f64().unwrap() >= 1.0);
    assert_eq!(report["serial"]["workflows"], 30);
    assert_eq!(report["serial"]["broker_messages_per_workflow"], 8.0);
    assert!(report["serial"]["commits_per_workflow"].as_f64().unwrap() >= 5.0);

    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        assert_eq!(report["durability"][setting], "on", "{setting}");
    }
    assert!(report["orchestrator_peak_rss_bytes"].as_u64().unwrap() > 0);
    let floors = &report["floors"];
    assert_eq!(floors["transition_1_client"]["latency"]["count"], 500);
    assert_eq!(
        floors["transition_16_clients"]["latency"]["count"],
        16 * 200
    );
    assert_eq!(floors["request_reply"]["count"], 500);
    assert!(report["ratios"]["serial_p50_to_floor_path"].is_number());
    assert!(report["ratios"]["steps_per_second_to_transition_floor"].is_number());
}

#[tokio::test]
async fn no_figures_when_commits_may_be_lost() {
    let output = bench(
        &["--workflows", "10", "--serial", "0", "--warm-up", "0"],
        |url| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}options=-c%20synchronous_commit%3Doff")
        },
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "figures printed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("no figures"), "{stderr}");
    assert!(stderr.contains("synchronous_commit is `off`"), "{stderr}");
}
