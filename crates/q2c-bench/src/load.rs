//! The load: accepted quotes posted to the intake API, at most a given
//! number of workflows in flight, the next one started as soon as one
//! ends (a closed loop, so the figures describe a system keeping up, not a
//! queue growing).
//!
//! A workflow counts as ended when the simulated connectors have answered
//! its last command; its terminal commit follows, and the figures read it
//! from the database afterwards.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use q2c_sim::{LedgerEntry, LedgerEvent};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::Error;

/// How long the run may go without a single workflow ending before it is
/// declared stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Statuses a workflow ends in.
pub const TERMINAL: [&str; 5] = [
    "completed",
    "compensated",
    "failed",
    "cancelled",
    "terminated",
];

/// Posts quotes and follows them to their end.
pub struct Load {
    client: reqwest::Client,
    events_url: String,
    token: String,
    /// The reply that answers a workflow's last command.
    last_reply: String,
    next_quote: u32,
    /// Queries the bench itself made on the run's database, so that they
    /// are not counted as the orchestrator's commits.
    pub own_queries: i64,
}

impl Load {
    /// A load against the API at `api`, ingesting with `token`; a workflow
    /// ends with the reply `last_reply`.
    pub fn new(api: &str, token: &str, last_reply: String) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| Error::Http {
                doing: "making the HTTP client",
                source,
            })?;
        Ok(Self {
            client,
            events_url: format!("{api}/api/v1/events"),
            token: token.to_owned(),
            last_reply,
            next_quote: 1,
            own_queries: 0,
        })
    }

    /// Starts `count` workflows with at most `concurrency` in flight and
    /// returns their ids once every one has ended.
    pub async fn run(
        &mut self,
        tap: &mut Receiver<LedgerEntry>,
        count: u32,
        concurrency: u32,
        progress: &ProgressBar,
    ) -> Result<Vec<Uuid>, Error> {
        let mut started = Vec::with_capacity(count as usize);
        let mut in_flight: HashSet<Uuid> = HashSet::new();
        let mut ended_before_answer: HashSet<Uuid> = HashSet::new();
        let mut posting: JoinSet<Result<Uuid, Error>> = JoinSet::new();
        let (mut posted, mut ended) = (0, 0);
        while ended < count {
            while posted < count && (in_flight.len() + posting.len()) < concurrency as usize {
                posting.spawn(self.post());
                posted += 1;
            }
            tokio::select! {
                Some(answer) = posting.join_next(), if !posting.is_empty() => {
                    let id = answer.map_err(|_| Error::Panicked("posting an event"))??;
                    started.push(id);
                    if ended_before_answer.remove(&id) {
                        ended += 1;
                        progress.inc(1);
                    } else {
                        in_flight.insert(id);
                    }
                }
                entry = next_entry(tap) => {
                    let entry = entry?;
                    if self.ends(&entry) {
                        if in_flight.remove(&entry.workflow_id) {
                            ended += 1;
                            progress.inc(1);
                        } else {
                            ended_before_answer.insert(entry.workflow_id);
                        }
                    }
                }
            }
        }
        Ok(started)
    }

    /// Starts `count` workflows one at a time, each only once the previous
    /// one's terminal transition has committed.
    pub async fn run_serially(
        &mut self,
        tap: &mut Receiver<LedgerEntry>,
        pool: &PgPool,
        count: u32,
        progress: &ProgressBar,
    ) -> Result<Vec<Uuid>, Error> {
        let mut started = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = self.post().await?;
            loop {
                let entry = next_entry(tap).await?;
                if self.ends(&entry) && entry.workflow_id == id {
                    break;
                }
            }
            self.await_terminal(pool, &[id]).await?;
            started.push(id);
            progress.inc(1);
        }
        Ok(started)
    }

    /// Waits until every one of `ids` has committed its terminal
    /// transition: its last reply was sent, so this is a short wait.
    pub async fn await_terminal(&mut self, pool: &PgPool, ids: &[Uuid]) -> Result<(), Error> {
        let deadline = Instant::now() + STALL_TIMEOUT;
        loop {
            self.own_queries += 1;
            let (ended,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM workflows WHERE id = ANY($1) AND status = ANY($2)",
            )
            .bind(ids)
            .bind(&TERMINAL[..])
            .fetch_one(pool)
            .await
            .map_err(|source| Error::Database {
                doing: "reading workflow statuses",
                source,
            })?;
            if ended == ids.len() as i64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Stalled {
                    waiting: ids.len() - usize::try_from(ended).unwrap_or_default(),
                    after: STALL_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Continues another load's quote numbers, so no quote is accepted twice.
    pub fn starting_at(mut self, next_quote: u32) -> Self {
        self.next_quote = next_quote;
        self
    }

    /// The next quote number this load would use.
    pub fn next_quote(&self) -> u32 {
        self.next_quote
    }

    fn ends(&self, entry: &LedgerEntry) -> bool {
        matches!(&entry.event, LedgerEvent::Reply { reply_type, .. } if *reply_type == self.last_reply)
    }

    /// Posts the next quote's acceptance; the answer names its workflow.
    fn post(&mut self) -> impl Future<Output = Result<Uuid, Error>> + use<> {
        let event = accepted_event(self.next_quote);
        self.next_quote += 1;
        let request = self
            .client
            .post(&self.events_url)
            .bearer_auth(&self.token)
            .json(&event);
        async move {
            let response = request.send().await.map_err(|source| Error::Http {
                doing: "posting an event",
                source,
            })?;
            let status = response.status();
            let body: Value = response.json().await.map_err(|source| Error::Http {
                doing: "reading the intake's answer",
                source,
            })?;
            body["workflow_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .filter(|_| status == reqwest::StatusCode::ACCEPTED)
                .ok_or_else(|| Error::Refused(format!("{status}: {body}")))
        }
    }
}

/// The next ledger entry; a stall or a missed entry ends the run.
async fn next_entry(tap: &mut Receiver<LedgerEntry>) -> Result<LedgerEntry, Error> {
    match tokio::time::timeout(STALL_TIMEOUT, tap.recv()).await {
        Err(_) => Err(Error::Stalled {
            waiting: 1,
            after: STALL_TIMEOUT,
        }),
        Ok(Ok(entry)) => Ok(entry),
        Ok(Err(RecvError::Lagged(missed))) => Err(Error::LedgerLagged(missed)),
        Ok(Err(RecvError::Closed)) => Err(Error::Panicked("the simulated connectors")),
    }
}

/// Quote `n`'s acceptance as Salesforce publishes it: its own quote id and
/// event id, lines that add up, a card that is accepted.
fn accepted_event(n: u32) -> Value {
    let lines = json!([
        {"product_code": "PLAT-ANNUAL", "description": "Platform, annual", "quantity": 10,
         "unit_price": "1200.00", "discount_percent": "10", "net_total": "10800.00"},
        {"product_code": "ONBOARD", "description": "Onboarding", "quantity": 1,
         "unit_price": "500.00", "discount_percent": "0", "net_total": "500.00"}
    ]);
    json!({
        "channel": "/event/Q2C_Quote_Accepted__e",
        "data": {
            "schema": "Q2C_Quote_Accepted__e-v1",
            "event": {"replayId": n, "EventUuid": Uuid::now_v7().to_string()},
            "payload": {
                "Quote_Id__c": format!("a0q5e{n:013}"),
                "Quote_Number__c": format!("Q-{n:07}"),
                "Account_Id__c": "0015e00000BENCHAAA",
                "Account_Name__c": "Bench Corp",
                "Opportunity_Id__c": "0065e00000BENCHAAA",
                "Currency_Iso_Code__c": "USD",
                "Net_Amount__c": "11300.00",
                "Payment_Terms__c": "Net 30",
                "Payment_Method__c": "pm_card_visa",
                "Lines__c": lines.to_string(),
                "CreatedDate": "2026-11-27T10:00:00.000Z",
                "CreatedById": "0055e00000BENCHAAA",
            }
        }
    })
}
