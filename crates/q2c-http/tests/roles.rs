//! Who may call what: every caller against every `/api/v1` route, through
//! the real router and a real database, with the expected answers written
//! out by hand so that a change to a route's access shows up here.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use q2c_core::definition::Definition;
use q2c_http::auth::{self, Role};
use q2c_http::{AppState, Tokens};
use q2c_store::Store;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

const INGEST: &str = "ingest-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const LEGACY: &str = "legacy-token-0123456789abcdef";

/// The callers, in the order of the matrix's columns.
const CALLERS: [(&str, Option<&str>); 7] = [
    ("no token", None),
    ("wrong token", Some("wrong-token-0123456789abcdef")),
    ("ingest", Some(INGEST)),
    ("viewer", Some(VIEWER)),
    ("operator", Some(OPERATOR)),
    ("admin", Some(ADMIN)),
    ("legacy Q2C_API_TOKEN", Some(LEGACY)),
];

/// What a caller gets from a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 401: no known token.
    Unauthorized,
    /// 403: a known token whose role lacks the route's access.
    Forbidden,
    /// Past authorization, answered by the handler with this status.
    Allowed(u16),
}

use Expect::{Allowed, Forbidden as F, Unauthorized as U};

const UNKNOWN_WORKFLOW: &str = "/api/v1/workflows/00000000-0000-0000-0000-000000000000";
const HISTORY_UNKNOWN: &str = "/api/v1/workflows/00000000-0000-0000-0000-000000000000/history";
const PAUSE_UNKNOWN: &str = "/api/v1/workflows/00000000-0000-0000-0000-000000000000/actions/pause";

/// Every `/api/v1` route × the callers above. An event with an empty body
/// is invalid (422), a workflow nobody started is not found (404), an
/// action without a body lacks its reason (400).
#[rustfmt::skip]
const MATRIX: [(Method, &str, [Expect; 7]); 16] = [
    //                                               none wrong ingest         viewer         operator       admin          legacy
    (Method::POST, "/api/v1/events",                   [U, U, Allowed(422), F,             F,             Allowed(422), Allowed(422)]),
    (Method::GET,  "/api/v1/workflows",                [U, U, F,            Allowed(200), Allowed(200), Allowed(200), Allowed(200)]),
    (Method::GET,  UNKNOWN_WORKFLOW,                   [U, U, F,            Allowed(404), Allowed(404), Allowed(404), Allowed(404)]),
    (Method::GET,  HISTORY_UNKNOWN,                    [U, U, F,            Allowed(404), Allowed(404), Allowed(404), Allowed(404)]),
    (Method::GET,  "/api/v1/workflows/counts",         [U, U, F,            Allowed(200), Allowed(200), Allowed(200), Allowed(200)]),
    (Method::GET,  "/api/v1/salesforce/subscriptions", [U, U, F,            Allowed(200), Allowed(200), Allowed(200), Allowed(200)]),
    (Method::POST, PAUSE_UNKNOWN,                      [U, U, F,            F,             Allowed(400), Allowed(400), Allowed(400)]),
    (Method::GET,  "/api/v1/audit",                    [U, U, F,            F,             F,             Allowed(200), Allowed(200)]),
    (Method::POST, "/api/v1/bulk-actions",             [U, U, F,            F,             F,             Allowed(400), Allowed(400)]),
    (Method::GET,  "/api/v1/bulk-actions/1",           [U, U, F,            F,             F,             Allowed(404), Allowed(404)]),
    (Method::POST, "/api/v1/bulk-actions/1/run",       [U, U, F,            F,             F,             Allowed(404), Allowed(404)]),
    (Method::POST, "/api/v1/bulk-actions/1/cancel",    [U, U, F,            F,             F,             Allowed(404), Allowed(404)]),
    (Method::GET,  "/api/v1/dead-letters",             [U, U, F,            F,             F,             Allowed(200), Allowed(200)]),
    (Method::GET,  "/api/v1/dead-letters/1",           [U, U, F,            F,             F,             Allowed(404), Allowed(404)]),
    (Method::POST, "/api/v1/dead-letters/1/replay",    [U, U, F,            F,             F,             Allowed(400), Allowed(400)]),
    (Method::POST, "/api/v1/dead-letters/1/discard",   [U, U, F,            F,             F,             Allowed(400), Allowed(400)]),
];

/// What needs no token, whoever calls: `/readyz` is 503 because the
/// broker's URL leads nowhere; the API's description is public.
const HEALTH: [(&str, u16); 4] = [
    ("/healthz", 200),
    ("/readyz", 503),
    ("/metrics", 200),
    ("/api/v1/openapi.json", 200),
];

fn tokens() -> Tokens {
    let entry = |name: &str, role: Role, token: &str| auth::entry_line(name, role, token).unwrap();
    let entries = [
        entry("ingest-bot", Role::Ingest, INGEST),
        entry("vera", Role::Viewer, VIEWER),
        entry("otto", Role::Operator, OPERATOR),
        entry("ada", Role::Admin, ADMIN),
    ]
    .join(",\n");
    Tokens::builder()
        .legacy("Q2C_API_TOKEN", LEGACY)
        .unwrap()
        .list("Q2C_API_TOKENS", &entries)
        .unwrap()
        .build()
}

fn state(pool: PgPool) -> AppState {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    AppState {
        store: Store::new(pool),
        definition: Arc::new(Definition::parse(path, &text).unwrap()),
        tokens: tokens(),
        amqp_url: "amqp://127.0.0.1:1/%2f".into(),
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        counts: Default::default(),
        bulk: Default::default(),
        salesforce: None,
    }
}

async fn call(
    app: &axum::Router,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, challenge, body)
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn every_caller_gets_exactly_what_its_role_grants(pool: PgPool) {
    let app = q2c_http::router(state(pool));
    let mut wrong = Vec::new();
    for (method, path, row) in &MATRIX {
        for ((caller, token), expected) in CALLERS.iter().zip(row) {
            let (status, challenge, body) = call(&app, method, path, *token).await;
            let problem = body["type"].as_str().unwrap_or_default();
            let as_expected = match expected {
                Expect::Unauthorized => {
                    status == StatusCode::UNAUTHORIZED
                        && challenge.as_deref() == Some("Bearer")
                        && problem.ends_with("/unauthorized")
                }
                Expect::Forbidden => {
                    status == StatusCode::FORBIDDEN
                        && problem.ends_with("/forbidden")
                        && body["role"] == *caller
                        && !body.to_string().contains("-token-")
                }
                Expect::Allowed(code) => status.as_u16() == *code,
            };
            if !as_expected {
                wrong.push(format!(
                    "{method} {path} as {caller}: expected {expected:?}, got {status} {body}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn health_and_metrics_need_no_token(pool: PgPool) {
    let app = q2c_http::router(state(pool));
    for (path, code) in HEALTH {
        for (caller, token) in CALLERS {
            let (status, _, _) = call(&app, &Method::GET, path, token).await;
            assert_eq!(status.as_u16(), code, "GET {path} as {caller}");
        }
    }
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_forbidden_caller_is_told_its_role_and_what_the_route_needs(pool: PgPool) {
    let app = q2c_http::router(state(pool));
    let (status, _, body) = call(&app, &Method::POST, "/api/v1/events", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["role"], "viewer");
    assert_eq!(body["access"], "ingest");
    assert_eq!(
        body["detail"],
        "role `viewer` may not do this: the route needs `ingest` access, which ingest and admin tokens have"
    );
}
