//! The product as a person runs it: `q2c serve` with its HTTP API, `q2c sim`
//! as the connectors, and Salesforce-shaped events sent over HTTP.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use q2c_sim::{LedgerEntry, LedgerEvent};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{TOKEN, World};

/// A running `q2c sim`.
pub struct Sim {
    child: Child,
    /// Its ledger file.
    pub ledger: PathBuf,
}

impl Sim {
    /// Starts `q2c sim` on `world` with extra flags; waits until consuming.
    pub async fn start(world: &World, flags: &[&str]) -> Sim {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let ready = world.directory.path().join(format!("sim-ready-{id}"));
        let ledger = world.directory.path().join(format!("ledger-{id}.jsonl"));
        let log = std::fs::File::create(world.directory.path().join(format!("sim-{id}.log")))
            .expect("sim log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_q2c"))
            .arg("sim")
            .args(flags)
            .arg("--ledger")
            .arg(&ledger)
            .env("AMQP_URL", &world.amqp_url)
            .env("Q2C_AMQP_PREFIX", world.topology.prefix())
            .env("Q2C_READY_FILE", &ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn q2c sim");
        let start = tokio::time::Instant::now();
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("q2c sim exited before it was ready: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "q2c sim not ready in 30s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Sim { child, ledger }
    }

    /// Every line of the ledger so far.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        q2c_sim::read_ledger(&self.ledger).unwrap_or_default()
    }

    /// Commands of `command_type` that took effect.
    pub fn effects(&self, command_type: &str) -> Vec<LedgerEntry> {
        self.entries()
            .into_iter()
            .filter(|entry| entry.command_type == command_type)
            .filter(|entry| matches!(entry.event, LedgerEvent::Effect { .. }))
            .collect()
    }

    /// Deliveries, in order.
    pub fn deliveries(&self) -> Vec<LedgerEntry> {
        self.entries()
            .into_iter()
            .filter(|entry| matches!(entry.event, LedgerEvent::Delivery { .. }))
            .collect()
    }

    /// No idempotency key took effect twice.
    pub fn assert_each_effect_once(&self) {
        let mut seen = std::collections::HashSet::new();
        for entry in self.entries() {
            if matches!(entry.event, LedgerEvent::Effect { .. }) {
                assert!(
                    seen.insert(entry.idempotency_key.clone()),
                    "{} took effect twice",
                    entry.idempotency_key
                );
            }
        }
    }

    pub fn stop(mut self) {
        let _ = self.child.start_kill();
    }
}

/// A client of the HTTP API.
pub struct Api {
    base: String,
    client: reqwest::Client,
}

/// A status and a JSON body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub etag: Option<String>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            client: {
                q2c_salesforce_auth::install_crypto_provider();
                reqwest::Client::new()
            },
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let etag = header("etag");
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            content_type,
            body,
            etag,
        }
    }

    pub async fn post_event(&self, event: &Value) -> Answer {
        self.post_event_with(event, Some(TOKEN)).await
    }

    pub async fn post_event_with(&self, event: &Value, token: Option<&str>) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/api/v1/events", self.base))
            .json(event);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(TOKEN),
        )
        .await
    }

    /// An operator action on one workflow, with `token`.
    pub async fn act(&self, workflow: &str, action: &str, body: &Value, token: &str) -> Answer {
        self.send(
            self.client
                .post(format!(
                    "{}/api/v1/workflows/{workflow}/actions/{action}",
                    self.base
                ))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// A POST of a JSON body with the admin token.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .bearer_auth(TOKEN)
                .json(body),
        )
        .await
    }

    /// A GET with another token than the default admin one.
    pub async fn get_as(&self, path: &str, token: &str) -> Answer {
        self.send(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    /// Waits until the workflow's view satisfies `condition`; returns it.
    pub async fn workflow_until(
        &self,
        workflow: &str,
        what: &str,
        deadline: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/v1/workflows/{workflow}");
        let (path_ref, condition) = (&path, &condition);
        super::eventually(what, deadline, || async move {
            condition(&self.get(path_ref).await.body)
        })
        .await;
        self.get(&path).await.body
    }

    pub async fn get_without_token(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// Status of every workflow, from the list endpoint.
    pub async fn statuses(&self) -> Vec<String> {
        let answer = self.get("/api/v1/workflows?limit=1000").await;
        answer.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item["status"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `count` workflows exist and all have `status`.
    pub async fn all_reach(&self, status: &str, count: usize, deadline: Duration) {
        let what = format!("{count} workflows to be {status}");
        super::eventually(&what, deadline, || async {
            let statuses = self.statuses().await;
            statuses.len() == count && statuses.iter().all(|s| s == status)
        })
        .await;
    }
}

/// A quote-accepted event as Salesforce's streaming API delivers it.
pub fn accepted_event(n: u32, account_name: &str, payment_method: &str) -> Value {
    let mut payload = accepted_fields(n, account_name, payment_method);
    payload["CreatedDate"] = json!("2026-11-27T10:00:00.000Z");
    payload["CreatedById"] = json!("0055e00000ABCDEFGH");
    json!({
        "channel": "/event/Q2C_Quote_Accepted__e",
        "data": {
            "schema": "Q2C_Quote_Accepted__e-v1",
            "event": {"replayId": n, "EventUuid": uuid::Uuid::new_v4().to_string()},
            "payload": payload,
        }
    })
}

/// The fields of quote `n`'s acceptance, in Salesforce names, as a Flow
/// publishes them: its own quote id and number, lines that add up.
pub fn accepted_fields(n: u32, account_name: &str, payment_method: &str) -> Value {
    let lines = json!([
        {"product_code": "PLAT-ANNUAL", "description": "Platform, annual", "quantity": 10,
         "unit_price": "1200.00", "discount_percent": "10", "net_total": "10800.00"},
        {"product_code": "ONBOARD", "description": "Onboarding", "quantity": 1,
         "unit_price": 500.00, "discount_percent": 0, "net_total": 500.00}
    ]);
    json!({
        "Quote_Id__c": format!("a0q5e{n:013}"),
        "Quote_Number__c": format!("Q-{n:05}"),
        "Account_Id__c": "0015e00000ABCDEFGH",
        "Account_Name__c": account_name,
        "Opportunity_Id__c": "0065e00000ABCDEFGH",
        "Currency_Iso_Code__c": "USD",
        "Net_Amount__c": 11300.00,
        "Payment_Terms__c": "Net 30",
        "Payment_Method__c": payment_method,
        "Lines__c": lines.to_string(),
    })
}
