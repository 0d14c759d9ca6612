//! A local Salesforce in the test process, and `q2c serve` pointed at it.

use std::time::Duration;

use q2c_local_salesforce::{Config, DEFAULT_CLIENT_SECRET, Fault, LocalSalesforce, Published};
use serde_json::{Value, json};

use super::product::{Api, accepted_fields};

/// The accepted-quote event.
pub const ACCEPTED: &str = "Q2C_Quote_Accepted__e";
/// The cancelled-quote event.
pub const CANCELLED: &str = "Q2C_Quote_Cancelled__e";
/// Their topics.
pub const ACCEPTED_TOPIC: &str = "/event/Q2C_Quote_Accepted__e";
pub const CANCELLED_TOPIC: &str = "/event/Q2C_Quote_Cancelled__e";

/// How q2c logs in.
#[derive(Clone, Copy)]
pub enum Login {
    ClientCredentials,
    JwtBearer,
}

/// A running local Salesforce.
pub struct Salesforce {
    pub local: LocalSalesforce,
    key_directory: tempfile::TempDir,
}

fn deploy_file(name: &str) -> String {
    let path = format!(
        "{}/deploy/local-salesforce/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

impl Salesforce {
    /// Starts one on free ports, with quick keepalives; `tweak` changes the
    /// rest of its configuration.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Salesforce {
        let mut config = Config::for_tests();
        config.keepalive_interval = Duration::from_millis(500);
        config.jwt_public_key_pem = Some(deploy_file("jwt-public.pem"));
        tweak(&mut config);
        let local = q2c_local_salesforce::start(config)
            .await
            .expect("local Salesforce starts");
        let key_directory = tempfile::tempdir().expect("key directory");
        std::fs::write(
            key_directory.path().join("jwt-private.pem"),
            deploy_file("jwt-private.pem"),
        )
        .expect("write key");
        Salesforce {
            local,
            key_directory,
        }
    }

    /// What `q2c serve` needs to subscribe here: fast reconnects and a short
    /// stall time, so tests of recovery stay quick.
    pub fn env(&self, login: Login) -> Vec<(String, String)> {
        let mut env = vec![
            ("Q2C_SALESFORCE_PUBSUB_URL", self.local.grpc_url()),
            ("Q2C_SALESFORCE_LOGIN_URL", self.local.login_url()),
            (
                "Q2C_SALESFORCE_CLIENT_ID",
                self.local.client_id().to_owned(),
            ),
            ("Q2C_SALESFORCE_FIRST_START", "EARLIEST".to_owned()),
            ("Q2C_SALESFORCE_RECONNECT_MIN", "50ms".to_owned()),
            ("Q2C_SALESFORCE_RECONNECT_MAX", "500ms".to_owned()),
            ("Q2C_SALESFORCE_STALL_AFTER", "2s".to_owned()),
        ];
        match login {
            Login::ClientCredentials => env.push((
                "Q2C_SALESFORCE_CLIENT_SECRET",
                DEFAULT_CLIENT_SECRET.to_owned(),
            )),
            Login::JwtBearer => {
                env.push((
                    "Q2C_SALESFORCE_JWT_KEY_FILE",
                    self.key_directory
                        .path()
                        .join("jwt-private.pem")
                        .display()
                        .to_string(),
                ));
                env.push(("Q2C_SALESFORCE_USERNAME", self.local.username().to_owned()));
                env.push(("Q2C_SALESFORCE_JWT_AUDIENCE", self.local.login_url()));
            }
        }
        env.into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    /// Publishes the acceptance of quote `n`.
    pub fn accept(&self, n: u32) -> Published {
        self.publish(
            ACCEPTED,
            &accepted_fields(n, "Acme Corp", "pm_card_visa"),
            None,
        )
    }

    /// Publishes the cancellation of quote `n`.
    pub fn cancel(&self, n: u32) -> Published {
        self.publish(
            CANCELLED,
            &json!({"Quote_Id__c": quote_id(n), "Reason__c": "customer withdrew"}),
            None,
        )
    }

    pub fn publish(&self, event: &str, fields: &Value, id: Option<&str>) -> Published {
        self.local
            .publish(event, fields, id)
            .expect("the local Salesforce publishes")
    }

    pub fn fault(&self, fault: Fault) {
        self.local.apply(fault);
    }

    /// The most streams ever open at once on `topic`.
    pub fn max_open_streams(&self, topic: &str) -> u32 {
        self.local.status().topics[topic].max_open_streams
    }
}

pub fn quote_id(n: u32) -> String {
    format!("a0q5e{n:013}")
}

/// One topic's status from `GET /api/v1/salesforce/subscriptions`.
pub async fn subscription(api: &Api, topic: &str) -> Value {
    let answer = api.get("/api/v1/salesforce/subscriptions").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["subscriptions"]
        .as_array()
        .and_then(|all| all.iter().find(|each| each["topic"] == topic))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Reconnects of `topic` for `cause` so far.
pub async fn reconnects(api: &Api, topic: &str, cause: &str) -> u64 {
    subscription(api, topic).await["reconnects"][cause]
        .as_u64()
        .unwrap_or(0)
}

/// A running `q2c connect salesforce`, writing statuses to `salesforce`.
pub struct StatusConnector {
    child: tokio::process::Child,
    pub log: std::path::PathBuf,
    /// Its `/metrics` URL.
    pub metrics: String,
}

impl StatusConnector {
    /// Starts it on `world`'s broker prefix with extra environment; waits
    /// until it has announced itself ready.
    pub async fn start(
        world: &super::World,
        salesforce: &Salesforce,
        extra: &[(&str, &str)],
    ) -> StatusConnector {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let ready = world.directory.path().join(format!("connector-ready-{id}"));
        let log = world.directory.path().join(format!("connector-{id}.log"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_q2c"));
        command
            .args(["connect", "salesforce"])
            .env("AMQP_URL", &world.amqp_url)
            .env("Q2C_AMQP_PREFIX", world.topology.prefix())
            .env("Q2C_READY_FILE", &ready)
            .env("Q2C_METRICS_ADDR", "127.0.0.1:0")
            .env("Q2C_SALESFORCE_LOGIN_URL", salesforce.local.login_url())
            .env("Q2C_SALESFORCE_CLIENT_ID", salesforce.local.client_id())
            .env("Q2C_SALESFORCE_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("connector log"))
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn q2c connect salesforce");
        let start = tokio::time::Instant::now();
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "q2c connect salesforce exited before it was ready: {status}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "q2c connect salesforce not ready in 30s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let announced: Value =
            serde_json::from_str(&std::fs::read_to_string(&ready).expect("ready file"))
                .expect("ready file is JSON");
        let metrics = format!(
            "http://{}/metrics",
            announced["metrics"].as_str().expect("metrics address")
        );
        StatusConnector {
            child,
            log,
            metrics,
        }
    }

    /// Its metrics, as Prometheus reads them.
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics)
            .await
            .expect("the connector's metrics answer")
            .text()
            .await
            .expect("a body")
    }

    pub fn stop(mut self) {
        let _ = self.child.start_kill();
    }
}
