//! The OpenAPI document: it lists every route (the list written out here by
//! hand), says which need a token and what each answers when refused, and
//! passes `openapi-spec-validator` (the PyPI package; `deploy/test.sh`
//! installs it and names it in `Q2C_OPENAPI_VALIDATOR`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use support::*;

/// Every route of the API.
const ROUTES: [(&str, &str); 20] = [
    ("post", "/api/v1/events"),
    ("get", "/api/v1/workflows"),
    ("get", "/api/v1/workflows/counts"),
    ("get", "/api/v1/workflows/{id}"),
    ("get", "/api/v1/workflows/{id}/history"),
    ("post", "/api/v1/workflows/{id}/actions/{action}"),
    ("post", "/api/v1/bulk-actions"),
    ("get", "/api/v1/bulk-actions/{id}"),
    ("post", "/api/v1/bulk-actions/{id}/run"),
    ("post", "/api/v1/bulk-actions/{id}/cancel"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/dead-letters"),
    ("get", "/api/v1/dead-letters/{id}"),
    ("post", "/api/v1/dead-letters/{id}/replay"),
    ("post", "/api/v1/dead-letters/{id}/discard"),
    ("get", "/api/v1/salesforce/subscriptions"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The routes anyone may call.
const OPEN: [&str; 4] = ["/api/v1/openapi.json", "/healthz", "/readyz", "/metrics"];

async fn document(pool: PgPool) -> Value {
    let app = app(pool);
    let request = Request::builder()
        .uri("/api/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(answer.status, StatusCode::OK, "needs no token");
    answer.body
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_document_lists_every_route_with_its_security_and_refusals(pool: PgPool) {
    let document = document(pool).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut listed = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            listed.insert((method.clone(), path.clone()));
            let responses = operation["responses"].as_object().unwrap();
            let open = OPEN.contains(&path.as_str());
            assert_eq!(
                operation["security"] == serde_json::json!([{}]),
                open,
                "{method} {path}: security"
            );
            if !open {
                for refusal in ["401", "403"] {
                    let schema = &responses[refusal]["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{method} {path}: {refusal}"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in ["Problem", "ActionRequestBody", "PlanBody", "ReasonBody"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_document_passes_openapi_spec_validator(pool: PgPool) {
    let document = document(pool).await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("openapi.json");
    std::fs::write(&path, document.to_string()).unwrap();
    let validator = std::env::var("Q2C_OPENAPI_VALIDATOR")
        .unwrap_or_else(|_| "openapi-spec-validator".to_owned());
    let output = std::process::Command::new(&validator)
        .arg(&path)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `{validator}` ({error}): install the PyPI package \
                 openapi-spec-validator, or run ./deploy/test.sh, which does"
            )
        });
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
