//! The `q2c` binary, run as users run it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn q2c(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_q2c"))
        .args(args)
        .env_remove("Q2C_WORKFLOWS_DIR")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("q2c runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_shipped_workflows() {
    let output = q2c(&["check"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains(
            "workflow `quote-to-cash` (4 steps: create_order → issue_invoice → collect_payment → report_status)"
        ),
        "{stdout}"
    );
}

#[test]
fn check_names_the_file_step_and_problem_of_an_invalid_definition() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/quote-to-cash.toml"),
    )
    .expect("shipped definition");
    let broken = shipped.replacen("max_attempts = 5", "max_attempts = 0", 1);
    let path = directory.path().join("broken.toml");
    std::fs::write(&path, broken).expect("write");

    let output = q2c(&[
        "check",
        "--workflows",
        &directory.path().display().to_string(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("step `create_order`"), "{stderr}");
    assert!(stderr.contains("max_attempts is zero"), "{stderr}");
}

#[test]
fn check_refuses_two_files_defining_one_workflow() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/quote-to-cash.toml"),
    )
    .expect("shipped definition");
    std::fs::write(directory.path().join("a.toml"), &shipped).expect("write");
    std::fs::write(directory.path().join("b.toml"), &shipped).expect("write");

    let output = q2c(&[
        "check",
        "--workflows",
        &directory.path().display().to_string(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("b.toml: workflow `quote-to-cash` is already defined in"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_an_empty_directory() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let output = q2c(&[
        "check",
        "--workflows",
        &directory.path().display().to_string(),
    ]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("holds no workflow definitions"));
}

/// `q2c migrate` applies the schema to the database `DATABASE_URL` names.
#[tokio::test]
async fn migrate_applies_the_schema() {
    let scratch = ScratchDatabase::create().await;
    let url = scratch.url.clone();

    let output = Command::new(env!("CARGO_BIN_EXE_q2c"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .expect("q2c runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let database = sqlx::PgPool::connect(&url).await.expect("connect");
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN \
         ('workflows', 'outbox', 'inbox', 'timers', 'dead_letters', 'intake_events')",
    )
    .fetch_one(&database)
    .await
    .expect("count tables");
    assert_eq!(tables, 6);
    database.close().await;
    scratch.drop().await;
}

#[test]
fn serve_refuses_to_start_without_an_api_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_q2c"))
        .arg("serve")
        .env_remove("Q2C_API_TOKEN")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("AMQP_URL", "amqp://127.0.0.1:1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("q2c runs");
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Q2C_API_TOKEN: is not set"), "{stderr}");
}

#[test]
fn the_salesforce_connector_names_a_bad_setting_before_connecting() {
    let run = |name: &str, value: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_q2c"))
            .args(["connect", "salesforce"])
            .env("AMQP_URL", "amqp://127.0.0.1:1")
            .env("Q2C_SALESFORCE_LOGIN_URL", "https://login.salesforce.com")
            .env("Q2C_SALESFORCE_CLIENT_ID", "client")
            .env(
                "Q2C_SALESFORCE_CLIENT_SECRET",
                "a-secret-that-must-not-print",
            )
            .env(name, value)
            .output()
            .expect("q2c runs");
        assert!(!output.status.success());
        text(&output.stderr)
    };
    let stderr = run("Q2C_SALESFORCE_STATUS_FIELDS", "stage=StageName");
    assert!(
        stderr.contains("Q2C_SALESFORCE_STATUS_FIELDS: `stage` is not one of status"),
        "{stderr}"
    );
    let stderr = run("Q2C_SALESFORCE_STATUS_TARGETS", "opportunity,queue:Foo");
    assert!(
        stderr.contains("Q2C_SALESFORCE_STATUS_TARGETS: `queue:Foo` is not"),
        "{stderr}"
    );
    let stderr = run("Q2C_SALESFORCE_API_RESERVE", "1.5");
    assert!(
        stderr.contains("Q2C_SALESFORCE_API_RESERVE: `1.5`"),
        "{stderr}"
    );
    assert!(!stderr.contains("a-secret-that-must-not-print"), "{stderr}");
}

#[test]
fn serve_names_the_step_and_problem_of_an_invalid_definition() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/quote-to-cash.toml"),
    )
    .expect("shipped definition");
    let broken = shipped.replacen("max_attempts = 5", "max_attempts = 0", 1);
    std::fs::write(directory.path().join("quote-to-cash.toml"), broken).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_q2c"))
        .args([
            "serve",
            "--workflows",
            &directory.path().display().to_string(),
        ])
        .env("Q2C_API_TOKEN", "test-token-0123456789abcdef")
        .output()
        .expect("q2c runs");
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("quote-to-cash.toml"), "{stderr}");
    assert!(stderr.contains("step `create_order`"), "{stderr}");
    assert!(stderr.contains("max_attempts is zero"), "{stderr}");
}

/// `q2c salesforce position set` moves a topic's position and records who
/// did it; `show` prints both.
#[tokio::test]
async fn an_operator_moves_a_salesforce_position_from_the_command_line() {
    let scratch = ScratchDatabase::create().await;
    let url = scratch.url.clone();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_q2c"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("USER", "ops-anna")
            .output()
            .expect("q2c runs")
    };
    assert!(run(&["migrate"]).status.success());
    let topic = "/event/Q2C_Quote_Accepted__e";
    let set = run(&["salesforce", "position", "set", topic, "000000000000002a"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(text(&set.stdout).contains("moved from none to 000000000000002a by ops-anna"));
    let bad = run(&["salesforce", "position", "set", topic, "latest-ish"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("is not EARLIEST, LATEST or a replay id in hex"));
    let show = run(&["salesforce", "position", "show", topic]);
    let shown = text(&show.stdout);
    assert!(
        shown.contains(&format!("{topic}: 000000000000002a")),
        "{shown}"
    );
    assert!(shown.contains("to 000000000000002a by ops-anna"), "{shown}");
    scratch.drop().await;
}

/// An empty database of the test's own, beside the one `DATABASE_URL` names.
struct ScratchDatabase {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create() -> ScratchDatabase {
        let Ok(admin_url) = std::env::var("DATABASE_URL") else {
            panic!("DATABASE_URL is set (deploy/test.sh sets it)");
        };
        let name = format!("cli_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(head, _)| head);
        let url = format!("{base}/{name}");
        ScratchDatabase { admin, name, url }
    }

    async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop database");
    }
}
