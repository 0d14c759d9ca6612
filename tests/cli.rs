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

/// `q2c serve` with the given token settings (and none inherited), up to
/// where it would connect to Postgres (an address where nothing listens).
fn serve_with_tokens(settings: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_q2c"));
    command
        .arg("serve")
        .env_remove("Q2C_API_TOKEN")
        .env_remove("Q2C_API_TOKENS")
        .env_remove("Q2C_API_TOKENS_FILE")
        .env_remove("Q2C_WORKFLOWS_DIR")
        .env_remove("Q2C_SALESFORCE_PUBSUB_URL")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("AMQP_URL", "amqp://127.0.0.1:1")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, value) in settings {
        command.env(name, value);
    }
    command.output().expect("q2c runs")
}

/// `q2c token <args>` with `stdin` as its input.
fn token_command(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_q2c"))
        .arg("token")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("q2c runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("q2c ends")
}

#[test]
fn serve_refuses_to_start_without_an_api_token() {
    let output = serve_with_tokens(&[]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no API token is configured"), "{stderr}");
    for setting in ["Q2C_API_TOKENS", "Q2C_API_TOKENS_FILE", "Q2C_API_TOKEN"] {
        assert!(stderr.contains(setting), "{stderr}");
    }
}

#[test]
fn serve_names_the_setting_place_and_problem_of_a_bad_token_entry() {
    let hash = "0".repeat(64);
    let secret = "s3cret-0123456789abcdef";

    let output = serve_with_tokens(&[(
        "Q2C_API_TOKENS",
        &format!("ci:ingest:sha256:{hash},\nops:superuser:sha256:{hash}"),
    )]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Q2C_API_TOKENS, entry 2: the role `superuser` is not one of ingest, viewer, operator, admin"),
        "{stderr}"
    );

    let output = serve_with_tokens(&[("Q2C_API_TOKENS", &format!("ci:admin:sha256:{secret}"))]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Q2C_API_TOKENS, entry 1: the hash must be 64 lowercase hex digits"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");

    let directory = tempfile::tempdir().expect("temporary directory");
    let file = directory.path().join("tokens");
    std::fs::write(
        &file,
        format!(
            "# the billing team\n\nci:ingest:sha256:{hash}\nci:viewer:sha256:{}\n",
            "1".repeat(64)
        ),
    )
    .expect("write");
    let output = serve_with_tokens(&[("Q2C_API_TOKENS_FILE", &file.display().to_string())]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "Q2C_API_TOKENS_FILE {}, line 4: the name `ci` is already used (Q2C_API_TOKENS_FILE {}, line 3)",
            file.display(),
            file.display()
        )),
        "{stderr}"
    );

    let missing = directory.path().join("missing");
    let output = serve_with_tokens(&[("Q2C_API_TOKENS_FILE", &missing.display().to_string())]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "Q2C_API_TOKENS_FILE: cannot read {}",
            missing.display()
        )),
        "{stderr}"
    );

    let output = serve_with_tokens(&[("Q2C_API_TOKEN", "short")]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Q2C_API_TOKEN: the token must be at least 16 characters long"),
        "{stderr}"
    );
}

/// A token from `q2c token new` configures `serve`: it gets past the token
/// settings to the next one, a broker URL that is not one.
#[test]
fn a_new_token_entry_is_accepted_by_serve() {
    let output = token_command(&["new", "ci", "ingest"], "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let entry = stdout
        .lines()
        .find_map(|line| line.strip_prefix("entry: "))
        .expect("an entry line");
    let output = serve_with_tokens(&[("Q2C_API_TOKENS", entry), ("AMQP_URL", "not-a-broker")]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(!stderr.contains("Q2C_API_TOKEN"), "{stderr}");
    assert!(stderr.contains("AMQP_URL: not an AMQP URL"), "{stderr}");
}

#[test]
fn token_new_prints_a_token_and_the_entry_that_token_hash_makes_of_it() {
    let output = token_command(&["new", "ci-bot", "operator"], "");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .expect("a token line");
    let entry = stdout
        .lines()
        .find_map(|line| line.strip_prefix("entry: "))
        .expect("an entry line");
    assert_eq!(token.len(), 64, "{stdout}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{stdout}");
    assert!(entry.starts_with("ci-bot:operator:sha256:"), "{stdout}");
    assert!(!entry.contains(token), "{stdout}");

    let again = token_command(&["new", "ci-bot", "operator"], "");
    assert!(!text(&again.stdout).contains(token), "every token is new");

    let hashed = token_command(&["hash", "ci-bot", "operator"], &format!("{token}\n"));
    assert!(hashed.status.success(), "{}", text(&hashed.stderr));
    assert_eq!(text(&hashed.stdout), format!("{entry}\n"));
}

#[test]
fn token_commands_refuse_bad_roles_names_and_tokens() {
    let output = token_command(&["new", "ci", "root"], "");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("role: the role `root` is not one of ingest, viewer, operator, admin"),
        "{stderr}"
    );

    let output = token_command(&["new", "c i", "admin"], "");
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("the name must be"));

    let output = token_command(&["hash", "ci", "admin"], "short\n");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
    assert!(!stderr.contains("short"), "{stderr}");

    let output = token_command(&["hash", "ci", "admin"], "");
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no token on stdin"));
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
