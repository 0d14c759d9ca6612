//! Writing one status to Salesforce: paced by the API budget, retried
//! through passing failures for as long as the step allows, with a new
//! token when the old one is refused. What cannot be done in that time goes
//! back to the workflow as a retryable failure, whose retry policy waits far
//! longer than a connector should hold a message.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use q2c_salesforce_auth::{Session, Tokens};
use serde_json::Value;

use crate::limits::{Reserve, Usage};
use crate::mapping::{Write, composite};
use crate::response::{Verdict, judge};

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Salesforce holds the status (or a newer one).
    Done,
    /// Not now: the workflow should try again later.
    Retryable(String),
    /// Never as it is: a person must look.
    Definitive(String),
}

/// Pacing of retries inside one write.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// Writes statuses over REST.
pub struct Writer {
    http: reqwest::Client,
    tokens: Arc<Tokens>,
    api_version: String,
    sequence_field: String,
    reserve: Reserve,
    /// The usage Salesforce reported last, and when that call was made.
    usage: Mutex<Option<(Usage, Instant)>>,
}

impl Writer {
    /// A writer for `api_version` (e.g. `v62.0`); `sequence_field` is the
    /// field the org's ordering rule guards.
    pub fn new(
        tokens: Arc<Tokens>,
        api_version: &str,
        sequence_field: &str,
        reserve: Reserve,
    ) -> Result<Self, reqwest::Error> {
        q2c_salesforce_auth::install_crypto_provider();
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            tokens,
            api_version: api_version.to_owned(),
            sequence_field: sequence_field.to_owned(),
            reserve,
            usage: Mutex::new(None),
        })
    }

    /// The API usage Salesforce reported last.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|(usage, _)| usage)
    }

    /// When the next call may go, by the budget: calls inside the reserve
    /// are spaced from the last one.
    fn next_call_at(&self) -> Option<Instant> {
        let (usage, at) = (*self.usage.lock().unwrap_or_else(PoisonError::into_inner))?;
        Some(at + self.reserve.pace(usage))
    }

    /// Writes `writes` (one request, or one composite for several) by
    /// `deadline`.
    pub async fn write(&self, writes: &[Write], deadline: Instant) -> Written {
        let mut wait = FIRST_RETRY;
        let mut renewed = false;
        loop {
            if let (Some(ready_at), Some(usage)) = (self.next_call_at(), self.usage()) {
                let now = Instant::now();
                if ready_at > deadline {
                    return Written::Retryable(format!(
                        "the org's daily API budget is low ({} of {} used): writes are paced",
                        usage.used, usage.max
                    ));
                }
                if ready_at > now {
                    tokio::time::sleep(ready_at - now).await;
                }
            }
            let session = match self.tokens.session().await {
                Ok(session) => session,
                Err(error) => return Written::Retryable(error.to_string()),
            };
            let verdict = match self.send(&session, writes).await {
                Ok(verdict) => verdict,
                Err(error) => Verdict::Retry {
                    code: "transport".into(),
                    message: error.without_url().to_string(),
                },
            };
            metrics::counter!("q2c_salesforce_api_calls_total").increment(1);
            match verdict {
                Verdict::Written | Verdict::AlreadyNewer => return Written::Done,
                Verdict::Definitive { code, message } => {
                    metrics::counter!("q2c_salesforce_write_errors_total", "code" => code.clone())
                        .increment(1);
                    return Written::Definitive(format!(
                        "Salesforce refused the status ({code}): {message}"
                    ));
                }
                Verdict::OverBudget { message } => {
                    metrics::counter!("q2c_salesforce_write_errors_total", "code" => "REQUEST_LIMIT_EXCEEDED")
                        .increment(1);
                    return Written::Retryable(format!(
                        "the org's daily API budget is used up: {message}"
                    ));
                }
                Verdict::Reauthenticate if !renewed => {
                    renewed = true;
                    if let Err(error) = self.tokens.renew(&session).await {
                        return Written::Retryable(error.to_string());
                    }
                }
                Verdict::Reauthenticate => {
                    return Written::Retryable("Salesforce refused a fresh access token".into());
                }
                Verdict::Retry { code, message } => {
                    metrics::counter!("q2c_salesforce_write_errors_total", "code" => code.clone())
                        .increment(1);
                    if Instant::now() + wait > deadline {
                        return Written::Retryable(format!(
                            "Salesforce did not take the status in time ({code}): {message}"
                        ));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_RETRY);
                }
            }
        }
    }

    /// One REST call; several writes go as one composite.
    async fn send(&self, session: &Session, writes: &[Write]) -> Result<Verdict, reqwest::Error> {
        let base = format!(
            "{}/services/data/{}",
            session.instance_url.trim_end_matches('/'),
            self.api_version
        );
        let (method, url, body) = match writes {
            [single] => (
                single.method,
                format!("{base}{}", single.path),
                single.body.clone(),
            ),
            many => (
                "POST",
                format!("{base}/composite"),
                composite(many, &self.api_version),
            ),
        };
        let method = if method == "PATCH" {
            reqwest::Method::PATCH
        } else {
            reqwest::Method::POST
        };
        let sent_at = Instant::now();
        let response = self
            .http
            .request(method, url)
            .bearer_auth(session.access_token.expose())
            .json(&body)
            .send()
            .await?;
        if let Some(usage) = response
            .headers()
            .get("sforce-limit-info")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| Usage::parse(value).ok())
        {
            metrics::gauge!("q2c_salesforce_api_remaining").set(usage.remaining() as f64);
            *self.usage.lock().unwrap_or_else(PoisonError::into_inner) = Some((usage, sent_at));
        }
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        if writes.len() > 1 && status == 200 {
            return Ok(self.judge_composite(&bytes));
        }
        Ok(judge(status, &bytes, &self.sequence_field))
    }

    /// The worst verdict among a composite's subresponses.
    fn judge_composite(&self, body: &[u8]) -> Verdict {
        let parsed: Value = serde_json::from_slice(body).unwrap_or_default();
        let mut worst = Verdict::Written;
        for sub in parsed["compositeResponse"].as_array().into_iter().flatten() {
            let status = sub["httpStatusCode"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500);
            let body = serde_json::to_vec(&sub["body"]).unwrap_or_default();
            let verdict = judge(status, &body, &self.sequence_field);
            if rank(&verdict) > rank(&worst) {
                worst = verdict;
            }
        }
        worst
    }
}

/// How bad a verdict is, to pick a composite's overall one.
fn rank(verdict: &Verdict) -> u8 {
    match verdict {
        Verdict::Written | Verdict::AlreadyNewer => 0,
        Verdict::Retry { .. } => 1,
        Verdict::Reauthenticate => 2,
        Verdict::OverBudget { .. } => 3,
        Verdict::Definitive { .. } => 4,
    }
}
