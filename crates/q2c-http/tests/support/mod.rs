//! What the API's in-process tests share: a router over a real database
//! with an operator and an admin token, workflows seeded and driven there by
//! real replies, and requests through `tower::ServiceExt::oneshot`.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use q2c_contract::Envelope;
use q2c_core::definition::Definition;
use q2c_core::domain::ids::{IdempotencyKey, WorkflowId};
use q2c_core::domain::quote::{Quote, fixtures};
use q2c_core::saga::{Event, Reply, ReplyResult, TimerId, TimerKind};
use q2c_http::auth::{self, Role};
use q2c_http::{AppState, Tokens};
use q2c_store::{Store, Trigger};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

pub const OPERATOR: &str = "operator-token-0123456789abcdef";
pub const ADMIN: &str = "admin-token-0123456789abcdef";

pub fn tokens() -> Tokens {
    let entries = [
        auth::entry_line("otto", Role::Operator, OPERATOR).unwrap(),
        auth::entry_line("ada", Role::Admin, ADMIN).unwrap(),
    ]
    .join("\n");
    Tokens::builder()
        .list("Q2C_API_TOKENS", &entries)
        .unwrap()
        .build()
}

pub fn shipped() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    ))
    .unwrap()
}

pub fn parse(text: &str) -> Arc<Definition> {
    Arc::new(Definition::parse("test.toml", text).unwrap())
}

/// The shipped definition: every action step compensates on failure.
pub fn compensating() -> Arc<Definition> {
    parse(&shipped())
}

/// The shipped definition with `collect_payment` suspending on failure.
pub fn suspending_at_payment() -> Arc<Definition> {
    let text = shipped().replace(
        "on_failure = \"compensate\"\ndeadline",
        "on_failure = \"suspend\"\ndeadline",
    );
    assert!(text.contains("on_failure = \"suspend\""));
    parse(&text)
}

/// The shipped definition with `create_order` suspending on failure.
pub fn suspending_at_order() -> Arc<Definition> {
    parse(&shipped().replacen("on_failure = \"compensate\"", "on_failure = \"suspend\"", 1))
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn app(pool: PgPool) -> axum::Router {
    q2c_http::router(AppState {
        store: Store::new(pool),
        definition: compensating(),
        tokens: tokens(),
        amqp_url: "amqp://127.0.0.1:1/%2f".into(),
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        counts: Default::default(),
        bulk: Default::default(),
        salesforce: None,
    })
}

/// A quote of its own for workflow `n`, so many can be live at once.
pub fn quote(n: u32) -> Quote {
    let mut draft = fixtures::draft();
    draft.quote_id = format!("a0q5e00000AB{n:06}");
    Quote::try_from_draft(draft).unwrap()
}

/// How the connector answers the command in flight.
#[derive(Debug, Clone, Copy)]
pub enum Say {
    Ok,
    Retryable,
    Declined,
    /// No answer: the attempt's timeout fires (then its backoff, if one
    /// was scheduled), so the step may have taken effect.
    Unanswered,
}

/// Starts workflow `n` and answers its commands as `script` says, through
/// the store as the consumer would; returns its id.
pub async fn seed(store: &Store, n: u32, definition: Arc<Definition>, script: &[Say]) -> Uuid {
    seed_at(store, n, definition, script, t0(), t0()).await
}

/// As [`seed`], started at `started` and answered at `answered`.
pub async fn seed_at(
    store: &Store,
    n: u32,
    definition: Arc<Definition>,
    script: &[Say],
    started: DateTime<Utc>,
    answered: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::from_u128(u128::from(n) + 1000);
    store
        .start_workflow(WorkflowId::new(id), definition, quote(n), started)
        .await
        .unwrap();
    for (index, say) in script.iter().enumerate() {
        answer(store, id, *say, &format!("seed-{n}-{index}"), answered).await;
    }
    id
}

/// Answers the workflow's latest unsent command as its connector would:
/// outputs carry the workflow's number (`ORD-1001`, `INV-1001`, ...).
pub async fn answer(store: &Store, id: Uuid, say: Say, message_id: &str, at: DateTime<Utc>) {
    let (body,): (sqlx::types::Json<Envelope>,) = sqlx::query_as(
        "UPDATE outbox SET sent_at = $2 WHERE id = (SELECT max(id) FROM outbox \
         WHERE workflow_id = $1 AND sent_at IS NULL) RETURNING body",
    )
    .bind(id)
    .bind(at)
    .fetch_one(store.pool())
    .await
    .unwrap_or_else(|error| panic!("workflow {id}, {message_id}: no command: {error}"));
    let command = body.0;
    if let Say::Unanswered = say {
        time_out(store, id, &command, at).await;
        return;
    }
    let number = id.as_u128();
    let result = match say {
        Say::Ok => ReplyResult::Succeeded {
            output: match command.message_type.as_str() {
                "erp.create_order" => json!({"order_id": format!("ORD-{number}")}),
                "billing.issue_invoice" => json!({"invoice_id": format!("INV-{number}")}),
                "payment.collect" => json!({"payment_id": format!("PAY-{number}")}),
                _ => json!({}),
            },
        },
        Say::Retryable => ReplyResult::Failed {
            retryable: true,
            reason: "ERP unavailable".into(),
        },
        Say::Declined => ReplyResult::Failed {
            retryable: false,
            reason: "declined".into(),
        },
        Say::Unanswered => unreachable!("handled above"),
    };
    let kind = if matches!(say, Say::Ok) {
        "succeeded"
    } else {
        "failed"
    };
    let event = Event::ReplyReceived(Reply {
        key: IdempotencyKey::parse(&command.idempotency_key).unwrap(),
        attempt: command.attempt,
        reply_type: format!("{}.{kind}", command.message_type),
        result,
    });
    store
        .apply(
            WorkflowId::new(id),
            &event,
            &Trigger::Message {
                message_id: message_id.to_owned(),
            },
            at,
        )
        .await
        .unwrap();
}

/// Fires the timeout of `command`'s attempt, then the backoff it led to,
/// as the timer loop would.
async fn time_out(store: &Store, id: Uuid, command: &Envelope, at: DateTime<Utc>) {
    let revision: u32 = command
        .idempotency_key
        .rsplit(":r")
        .next()
        .and_then(|revision| revision.parse().ok())
        .unwrap();
    for kind in [TimerKind::StepTimeout, TimerKind::StepBackoff] {
        let timer = TimerId {
            kind,
            step: command.step.clone(),
            revision,
            attempt: command.attempt,
        };
        store
            .apply(
                WorkflowId::new(id),
                &Event::TimerFired(timer.clone()),
                &Trigger::Timer(timer),
                at,
            )
            .await
            .unwrap();
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn send(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

pub async fn post(
    app: &axum::Router,
    id: Uuid,
    action: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/workflows/{id}/actions/{action}"))
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::from(body.to_string())).unwrap()).await
}

/// A POST of a JSON body to any path, as `token`.
pub async fn post_to(app: &axum::Router, path: &str, body: &Value, token: &str) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    send(app, request.body(Body::from(body.to_string())).unwrap()).await
}

pub async fn get(app: &axum::Router, path: &str, token: &str, accept: Option<&str>) -> Answer {
    let mut request = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

pub async fn detail(app: &axum::Router, id: Uuid) -> Value {
    get(app, &format!("/api/v1/workflows/{id}"), OPERATOR, None)
        .await
        .body
}

pub fn reason() -> Value {
    json!({"reason": "on-call repair"})
}

/// As [`app`], but dead-letter replays reach the broker at `amqp_url`.
pub fn app_with_broker(pool: PgPool, amqp_url: &str) -> axum::Router {
    q2c_http::router(AppState {
        store: Store::new(pool),
        definition: compensating(),
        tokens: tokens(),
        amqp_url: amqp_url.to_owned(),
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        counts: Default::default(),
        bulk: Default::default(),
        salesforce: None,
    })
}

/// A POST of a JSON body to `path` with `token`.
pub async fn post_json(app: &axum::Router, path: &str, token: &str, body: &Value) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, request).await
}
