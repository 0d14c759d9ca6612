//! The token endpoint: both flows, their refusals, and token expiry.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use q2c_local_salesforce::{DEFAULT_CLIENT_ID, DEFAULT_USERNAME, LocalSalesforce};
use serde_json::json;

use crate::common::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assertion(key: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(fixture(key).as_bytes()).unwrap(),
    )
    .unwrap()
}

fn good_claims(aud: &str) -> serde_json::Value {
    json!({"iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_USERNAME, "aud": aud, "exp": now() + 180})
}

async fn jwt(sf: &LocalSalesforce, assertion: &str) -> (u16, serde_json::Value) {
    token_request(sf, &[("grant_type", JWT_BEARER), ("assertion", assertion)]).await
}

#[tokio::test]
async fn client_credentials_answer_like_salesforce() {
    let sf = start().await;
    let (status, body) = token_request(
        &sf,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", q2c_local_salesforce::DEFAULT_CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with(sf.org_id())
    );
    assert_eq!(body["instance_url"], sf.instance_url());
    assert_eq!(
        body["id"],
        format!("{}/id/{}/{}", sf.instance_url(), sf.org_id(), sf.user_id())
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api");
    let issued_at: i64 = body["issued_at"].as_str().unwrap().parse().unwrap();
    assert!(issued_at > 1_700_000_000_000);
    assert_eq!(sf.status().tokens_issued, 1);
}

#[tokio::test]
async fn client_credentials_refusals() {
    let sf = start().await;
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", "wrong"),
            ],
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "someone-else"),
                ("client_secret", q2c_local_salesforce::DEFAULT_CLIENT_SECRET),
            ],
            "invalid_client",
        ),
        (&[("grant_type", "password")], "unsupported_grant_type"),
        (&[], "unsupported_grant_type"),
    ];
    for (form, error) in cases {
        let (status, body) = token_request(&sf, form).await;
        assert_eq!(status, 400, "{form:?}: {body}");
        assert_eq!(body["error"], error, "{form:?}: {body}");
        assert!(body["error_description"].is_string());
    }
    assert_eq!(sf.status().tokens_issued, 0);
}

#[tokio::test]
async fn jwt_bearer_accepts_the_three_audiences() {
    let sf = start().await;
    for aud in [
        "https://login.salesforce.com".to_owned(),
        "https://test.salesforce.com".to_owned(),
        sf.login_url(),
    ] {
        let (status, body) = jwt(&sf, &assertion("jwt-private.pem", good_claims(&aud))).await;
        assert_eq!(status, 200, "{aud}: {body}");
        assert_eq!(body["instance_url"], sf.instance_url());
        // The token is good for the Pub/Sub API.
        let auth = Auth {
            token: body["access_token"].as_str().unwrap().to_owned(),
            instance_url: sf.instance_url(),
            tenant_id: sf.org_id().to_owned(),
        };
        client(&sf)
            .await
            .get_topic(auth.request(topic_request(ACCEPTED)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn jwt_bearer_refusals() {
    let sf = start().await;
    let login = "https://login.salesforce.com";
    let cases = [
        (
            "signed by another key",
            assertion("other-private.pem", good_claims(login)),
            "invalid_grant",
        ),
        (
            "wrong audience",
            assertion(
                "jwt-private.pem",
                json!({"iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_USERNAME, "aud": "https://example.com", "exp": now() + 180}),
            ),
            "invalid_grant",
        ),
        (
            "wrong issuer",
            assertion(
                "jwt-private.pem",
                json!({"iss": "another-app", "sub": DEFAULT_USERNAME, "aud": login, "exp": now() + 180}),
            ),
            "invalid_client",
        ),
        (
            "wrong subject",
            assertion(
                "jwt-private.pem",
                json!({"iss": DEFAULT_CLIENT_ID, "sub": "someone@else", "aud": login, "exp": now() + 180}),
            ),
            "invalid_grant",
        ),
        (
            "expired",
            assertion(
                "jwt-private.pem",
                json!({"iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_USERNAME, "aud": login, "exp": now() - 5}),
            ),
            "invalid_grant",
        ),
        ("not a JWT", "not-a-jwt".to_owned(), "invalid_grant"),
    ];
    for (case, assertion, error) in cases {
        let (status, body) = jwt(&sf, &assertion).await;
        assert_eq!(status, 400, "{case}: {body}");
        assert_eq!(body["error"], error, "{case}: {body}");
    }
    assert_eq!(sf.status().tokens_issued, 0);
}

#[tokio::test]
async fn jwt_bearer_needs_a_configured_key() {
    let sf = start_with(|c| c.jwt_public_key_pem = None).await;
    let (status, body) = jwt(
        &sf,
        &assertion(
            "jwt-private.pem",
            good_claims("https://login.salesforce.com"),
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn an_expiring_token_ends_its_stream_and_is_refused_after() {
    let (_sf, auth, mut client) = connect_with(|c| c.token_ttl = Duration::from_millis(1500)).await;
    let mut sub = subscribe(&mut client, &auth, accepted_latest(1)).await;
    let status = sub.error().await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(error_code(&status), "service.auth.error");

    let refused = client
        .get_topic(auth.request(topic_request(ACCEPTED)))
        .await
        .unwrap_err();
    assert_eq!(error_code(&refused), "service.auth.error");
}
