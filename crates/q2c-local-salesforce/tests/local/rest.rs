//! The REST API as q2c's Salesforce connector meets it: tokens, records,
//! upserts, platform events, composites, the ordering rule, API limits and
//! the REST fault switches, each answer in Salesforce's shape.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use q2c_local_salesforce::{Error, Fault, LocalSalesforce};
use serde_json::{Value, json};

use crate::common::*;

const V: &str = "/services/data/v62.0";
const SEQUENCE_REFUSED: &str =
    "Q2C_Status_Sequence__c: an older status cannot overwrite a newer one";

/// A REST answer: status, `Sforce-Limit-Info`, `Location`, JSON body (null
/// when empty).
#[derive(Debug)]
struct Answer {
    status: u16,
    limit: Option<String>,
    location: Option<String>,
    body: Value,
}

impl Answer {
    /// The first error's code.
    fn code(&self) -> &str {
        self.body[0]["errorCode"].as_str().unwrap_or_default()
    }
}

/// A REST client with a token of the server.
struct Rest {
    http: reqwest::Client,
    base: String,
    authorization: Option<String>,
}

impl Rest {
    async fn new(sf: &LocalSalesforce) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: sf.instance_url(),
            authorization: Some(format!("Bearer {}", token(sf).await)),
        }
    }

    fn with_authorization(&self, authorization: Option<&str>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            authorization: authorization.map(str::to_owned),
        }
    }

    /// A call to `path` under `/services/data/v62.0`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.raw(method, &format!("{V}{path}"), body.map(|b| b.to_string()))
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call("PATCH", path, Some(body)).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    async fn raw(&self, method: &str, path: &str, body: Option<String>) -> Answer {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (limit, location) = (header("sforce-limit-info"), header("location"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        Answer {
            status,
            limit,
            location,
            body,
        }
    }
}

fn opportunity(sf: &LocalSalesforce) -> String {
    sf.create_record(
        "Opportunity",
        &json!({"Name": "Q-00042", "StageName": "Closed Won", "Amount": 1250.5}),
    )
    .unwrap()
}

fn not_found() -> Value {
    json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
}

#[tokio::test]
async fn every_call_needs_a_live_token_of_this_org() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let expected =
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);

    for authorization in [None, Some("Bearer made-up"), Some("Basic abc")] {
        let answer = rest
            .with_authorization(authorization)
            .get(&format!("/sobjects/Opportunity/{id}"))
            .await;
        assert_eq!(answer.status, 401, "{authorization:?}");
        assert_eq!(answer.body, expected);
        assert_eq!(answer.limit.as_deref(), Some("api-usage=0/15000"));
    }
    assert_eq!(
        rest.get(&format!("/sobjects/Opportunity/{id}"))
            .await
            .status,
        200
    );
    // Salesforce's older scheme works too.
    let token = rest
        .authorization
        .as_deref()
        .unwrap()
        .replace("Bearer ", "OAuth ");
    let answer = rest
        .with_authorization(Some(&token))
        .get(&format!("/sobjects/Opportunity/{id}"))
        .await;
    assert_eq!(answer.status, 200);

    sf.apply(Fault::ExpireTokens);
    let answer = rest.get(&format!("/sobjects/Opportunity/{id}")).await;
    assert_eq!((answer.status, answer.body), (401, expected));
    let fresh = Rest::new(&sf).await;
    assert_eq!(
        fresh
            .get(&format!("/sobjects/Opportunity/{id}"))
            .await
            .status,
        200
    );

    let status = sf.status();
    assert_eq!(status.rest.refused["INVALID_SESSION_ID"], 4);
    assert_eq!(status.rest.api_calls, 3, "refused calls are not counted");
}

#[tokio::test]
async fn records_are_read_and_updated_by_id() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("006"), "{id}");

    let answer = rest.get(&format!("/sobjects/Opportunity/{id}")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body["attributes"],
        json!({"type": "Opportunity", "url": format!("{V}/sobjects/Opportunity/{id}")})
    );
    assert_eq!(answer.body["Id"], id);
    assert_eq!(answer.body["Name"], "Q-00042");
    assert_eq!(answer.body["Amount"], 1250.5);
    assert_eq!(answer.body["Q2C_Status__c"], Value::Null);
    assert_eq!(
        answer.body.as_object().unwrap().len(),
        13,
        "every field is shown"
    );
    // The 15-character form finds the same record.
    let short = rest
        .get(&format!("/sobjects/Opportunity/{}", &id[..15]))
        .await;
    assert_eq!(short.body["Id"], id);

    let answer = rest
        .patch(
            &format!("/sobjects/opportunity/{id}"),
            json!({
                "q2c_status__c": "completed",
                "Q2C_ERP_Order_Number__c": "SO-1001",
                "Q2C_Invoice_Number__c": null,
                "Q2C_Status_Updated_At__c": "2026-11-27T10:00:00.123Z",
                "Q2C_Status_Sequence__c": 1_795_773_600_123_i64,
                "attributes": {"type": "Opportunity"},
            }),
        )
        .await;
    assert_eq!((answer.status, &answer.body), (204, &Value::Null));
    let record = sf.record("Opportunity", &id).unwrap();
    assert_eq!(record["Q2C_Status__c"], "completed");
    assert_eq!(record["Q2C_ERP_Order_Number__c"], "SO-1001");
    assert_eq!(
        record["Q2C_Status_Updated_At__c"],
        "2026-11-27T10:00:00.123+0000"
    );
    assert_eq!(record["Q2C_Status_Sequence__c"], 1_795_773_600_123_i64);
    assert_eq!(record["Name"], "Q-00042", "fields not written are kept");

    let missing = "006LC0000000ZZZAAA";
    for answer in [
        rest.get(&format!("/sobjects/Opportunity/{missing}")).await,
        rest.patch(
            &format!("/sobjects/Opportunity/{missing}"),
            json!({"Name": "x"}),
        )
        .await,
        rest.get(&format!("/sobjects/Account/{id}")).await,
        rest.raw(
            "GET",
            &format!("/services/data/62.0/sobjects/Opportunity/{id}"),
            None,
        )
        .await,
        rest.raw(
            "GET",
            &format!("/services/data/latest/sobjects/Opportunity/{id}"),
            None,
        )
        .await,
        rest.get("/query").await,
        rest.raw("GET", "/services/data", None).await,
        rest.raw("GET", "/services/data/", None).await,
    ] {
        assert_eq!((answer.status, answer.body), (404, not_found()));
    }
    // Any version of the right shape is accepted.
    let answer = rest
        .raw(
            "GET",
            &format!("/services/data/v58.0/sobjects/Opportunity/{id}"),
            None,
        )
        .await;
    assert_eq!(
        answer.body["attributes"]["url"],
        format!("/services/data/v58.0/sobjects/Opportunity/{id}")
    );

    let answer = rest
        .patch(
            &format!("/sobjects/Opportunity/{id}"),
            json!({"Q2C_Colour__c": "red"}),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        json!([{"message": "No such column 'Q2C_Colour__c' on sobject of type Opportunity", "errorCode": "INVALID_FIELD", "fields": []}])
    );
    let answer = rest
        .patch(
            &format!("/sobjects/Opportunity/{id}"),
            json!({"Amount": "a lot"}),
        )
        .await;
    assert_eq!((answer.status, answer.code()), (400, "JSON_PARSER_ERROR"));
    let answer = rest
        .raw(
            "PATCH",
            &format!("{V}/sobjects/Opportunity/{id}"),
            Some("{not json".into()),
        )
        .await;
    assert_eq!((answer.status, answer.code()), (400, "JSON_PARSER_ERROR"));
    let answer = rest
        .patch(&format!("/sobjects/Opportunity/{id}"), json!({"Id": id}))
        .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "INVALID_FIELD_FOR_INSERT_UPDATE")
    );
    assert_eq!(answer.body[0]["fields"], json!(["Id"]));
    let answer = rest
        .call("DELETE", &format!("/sobjects/Opportunity/{id}"), None)
        .await;
    assert_eq!((answer.status, answer.code()), (405, "METHOD_NOT_ALLOWED"));

    assert_eq!(sf.record("Opportunity", &id).unwrap()["Amount"], 1250.5);
    let status = sf.status();
    assert_eq!(
        status.rest.writes["Opportunity"], 1,
        "only the write that happened"
    );
    assert_eq!(status.rest.records["Opportunity"], 1);
}

#[tokio::test]
async fn upserts_by_external_id_create_then_update() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let path = "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q5e00000ABCDEFGH";

    let created = rest
        .patch(
            path,
            json!({"Q2C_Status__c": "failed", "Q2C_Status_Sequence__c": 1}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body,
        json!({"id": id, "success": true, "errors": [], "created": true})
    );
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("a1S"), "{id}");
    assert_eq!(
        created.location.as_deref(),
        Some(format!("{V}/sobjects/Q2C_Quote_Status__c/{id}").as_str())
    );

    let updated = rest
        .patch(
            path,
            json!({"Q2C_Status__c": "completed", "Q2C_Status_Sequence__c": 2}),
        )
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.body,
        json!({"id": id, "success": true, "errors": [], "created": false})
    );

    let record = sf
        .record_by(
            "Q2C_Quote_Status__c",
            "Q2C_Quote_Id__c",
            "a0q5e00000ABCDEFGH",
        )
        .unwrap();
    assert_eq!(record["Id"], id);
    assert_eq!(record["Q2C_Status__c"], "completed");
    assert_eq!(
        sf.record_by("Q2C_Quote_Status__c", "Q2C_Status_Sequence__c", "2")
            .unwrap()["Id"],
        id
    );
    assert!(
        sf.record_by("Q2C_Quote_Status__c", "Q2C_Quote_Id__c", "other")
            .is_none()
    );
    assert_eq!(rest.get(path).await.body["Id"], id);
    assert_eq!(sf.status().rest.writes["Q2C_Quote_Status__c"], 2);

    // Only external ids key an upsert.
    let answer = rest
        .patch(
            "/sobjects/Opportunity/Name/Q-00042",
            json!({"Q2C_Status__c": "completed"}),
        )
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.body,
        json!([{"errorCode": "NOT_FOUND", "message": "Provided external ID field does not exist or is not accessible: Name"}])
    );
    // By Id, an upsert only updates.
    let opportunity = opportunity(&sf);
    let answer = rest
        .patch(
            &format!("/sobjects/Opportunity/Id/{opportunity}"),
            json!({"Q2C_Status__c": "completed"}),
        )
        .await;
    assert_eq!(answer.body["created"], false);
    let answer = rest
        .patch(
            "/sobjects/Opportunity/Id/006LC0000000ZZZAAA",
            json!({"Q2C_Status__c": "x"}),
        )
        .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn platform_events_are_published_and_kept() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let fields = json!({
        "Quote_Id__c": "a0q5e00000ABCDEFGH",
        "Opportunity_Id__c": "0065e00000ABCDEFGH",
        "Status__c": "completed",
        "ERP_Order_Number__c": "SO-1001",
        "Invoice_Number__c": null,
        "Sequence__c": 1_795_773_600_123_i64,
        "Status_Updated_At__c": "2026-11-27T10:00:00.123Z",
        "Workflow_Id__c": "01a2b3c4-0000-7000-8000-000000000001",
    });
    let answer = rest.post("/sobjects/Q2C_Order_Status__e", fields).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer.body,
        json!({"id": id, "success": true, "errors": []})
    );
    assert!(id.starts_with("e00") && id.len() == 18, "{id}");

    let published = sf.published("Q2C_Order_Status__e");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["Id"], id);
    assert_eq!(published[0]["Status__c"], "completed");
    assert_eq!(published[0]["CreatedById"], sf.user_id());
    assert!(
        published[0]["CreatedDate"]
            .as_str()
            .unwrap()
            .ends_with("+0000")
    );
    let console = q2c_local_salesforce::published(&sf.http_url(), "Q2C_Order_Status__e")
        .await
        .unwrap();
    assert_eq!(console, published);
    assert!(sf.published("Nope__e").is_empty());
    let refused = q2c_local_salesforce::published(&sf.http_url(), "Opportunity")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Refused { status: 404, .. }),
        "{refused}"
    );

    let answer = rest
        .post("/sobjects/Q2C_Order_Status__e", json!({"Colour__c": "red"}))
        .await;
    assert_eq!(
        answer.body,
        json!([{"message": "No such column 'Colour__c' on sobject of type Q2C_Order_Status__e", "errorCode": "INVALID_FIELD", "fields": []}])
    );
    assert_eq!(
        rest.get(&format!("/sobjects/Q2C_Order_Status__e/{id}"))
            .await
            .status,
        404
    );
    assert_eq!(rest.post("/sobjects/Nope__e", json!({})).await.status, 404);
    assert_eq!(sf.status().rest.published["Q2C_Order_Status__e"], 1);
}

#[tokio::test]
async fn the_ordering_rule_keeps_the_newer_status() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let path = format!("/sobjects/Opportunity/{id}");
    let refused = json!([{
        "message": SEQUENCE_REFUSED,
        "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "fields": ["Q2C_Status_Sequence__c"],
    }]);

    let write = |status: &str, sequence: Value| json!({"Q2C_Status__c": status, "Q2C_Status_Sequence__c": sequence});
    assert_eq!(
        rest.patch(&path, write("failed", json!(100))).await.status,
        204
    );
    // The same status again, or an edit that leaves the sequence alone,
    // is not the rule's business.
    assert_eq!(
        rest.patch(&path, write("failed", json!(100))).await.status,
        204
    );
    assert_eq!(
        rest.patch(&path, json!({"StageName": "Closed Won"}))
            .await
            .status,
        204
    );
    for older in [
        write("completed", json!(99)),
        write("completed", Value::Null),
    ] {
        let answer = rest.patch(&path, older.clone()).await;
        assert_eq!((answer.status, &answer.body), (400, &refused), "{older}");
    }
    assert_eq!(
        rest.patch(&path, write("compensated", json!(101)))
            .await
            .status,
        204
    );
    let record = sf.record("Opportunity", &id).unwrap();
    assert_eq!(record["Q2C_Status__c"], "compensated");
    assert_eq!(record["Q2C_Status_Sequence__c"], 101);

    // The status object has the same rule; creating one always passes.
    let upsert = "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q1";
    assert_eq!(
        rest.patch(upsert, write("failed", json!(5))).await.status,
        201
    );
    let answer = rest.patch(upsert, write("failed", json!(4))).await;
    assert_eq!((answer.status, &answer.body), (400, &refused));
    assert_eq!(
        rest.patch(upsert, write("completed", json!(6)))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_composite_is_one_call_and_all_or_none_rolls_back() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let sub = |method: &str, path: &str, reference: &str, body: Value| json!({"method": method, "url": format!("{V}{path}"), "referenceId": reference, "body": body});

    let answer = rest
        .post(
            "/composite",
            json!({"allOrNone": false, "compositeRequest": [
                sub("PATCH", &format!("/sobjects/Opportunity/{id}"), "opp", json!({"Q2C_Status__c": "completed", "Q2C_Status_Sequence__c": 10})),
                sub("POST", "/sobjects/Q2C_Order_Status__e", "event", json!({"Status__c": "completed"})),
                sub("PATCH", &format!("/sobjects/Opportunity/{id}"), "bad", json!({"Nope__c": 1})),
                sub("PATCH", "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q1", "upsert", json!({"Q2C_Status__c": "completed"})),
                {"method": "GET", "url": format!("{V}/sobjects/Opportunity/{id}"), "referenceId": "read"},
            ]}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.limit.as_deref(), Some("api-usage=1/15000"));
    let responses = answer.body["compositeResponse"].as_array().unwrap();
    let codes: Vec<_> = responses
        .iter()
        .map(|r| r["httpStatusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [204, 201, 400, 201, 200]);
    let references: Vec<_> = responses
        .iter()
        .map(|r| r["referenceId"].as_str().unwrap())
        .collect();
    assert_eq!(references, ["opp", "event", "bad", "upsert", "read"]);
    assert_eq!(responses[0]["body"], Value::Null);
    assert_eq!(responses[0]["httpHeaders"], json!({}));
    assert_eq!(responses[2]["body"][0]["errorCode"], "INVALID_FIELD");
    assert_eq!(responses[3]["body"]["created"], true);
    let upserted = responses[3]["body"]["id"].as_str().unwrap();
    assert_eq!(
        responses[3]["httpHeaders"],
        json!({"Location": format!("{V}/sobjects/Q2C_Quote_Status__c/{upserted}")})
    );
    assert_eq!(responses[4]["body"]["Q2C_Status__c"], "completed");
    assert_eq!(sf.status().rest.api_calls, 1);

    // All or none: the third fails (an older sequence), so nothing stays.
    let answer = rest
        .post(
            "/composite",
            json!({"allOrNone": true, "compositeRequest": [
                sub("POST", "/sobjects/Q2C_Order_Status__e", "event", json!({"Status__c": "failed"})),
                sub("PATCH", "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q2", "upsert", json!({"Q2C_Status__c": "failed"})),
                sub("PATCH", &format!("/sobjects/Opportunity/{id}"), "older", json!({"Q2C_Status__c": "failed", "Q2C_Status_Sequence__c": 9})),
                sub("PATCH", &format!("/sobjects/Opportunity/{id}"), "never", json!({"Name": "renamed"})),
            ]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let responses = answer.body["compositeResponse"].as_array().unwrap();
    let halted = json!([{
        "message": "The transaction was rolled back since another operation in the same transaction failed.",
        "errorCode": "PROCESSING_HALTED",
    }]);
    for index in [0, 1, 3] {
        assert_eq!(responses[index]["httpStatusCode"], 400);
        assert_eq!(responses[index]["body"], halted, "{index}");
    }
    assert_eq!(responses[2]["body"][0]["message"], SEQUENCE_REFUSED);
    assert_eq!(responses[3]["referenceId"], "never");
    assert!(
        sf.record_by("Q2C_Quote_Status__c", "Q2C_Quote_Id__c", "a0q2")
            .is_none()
    );
    assert_eq!(
        sf.published("Q2C_Order_Status__e").len(),
        1,
        "the rolled-back event is gone"
    );
    let record = sf.record("Opportunity", &id).unwrap();
    assert_eq!(
        (record["Q2C_Status__c"].as_str(), record["Name"].as_str()),
        (Some("completed"), Some("Q-00042"))
    );
    let status = sf.status();
    assert_eq!(status.rest.api_calls, 2);
    assert_eq!(status.rest.writes["Opportunity"], 1);
    assert_eq!(status.rest.writes["Q2C_Quote_Status__c"], 1);

    // At most 25 subrequests; each URL must be a REST path; the body must be a composite.
    let many: Vec<Value> = (0..26)
        .map(|i| {
            sub(
                "GET",
                &format!("/sobjects/Opportunity/{id}"),
                &format!("r{i}"),
                Value::Null,
            )
        })
        .collect();
    let answer = rest
        .post("/composite", json!({"compositeRequest": many}))
        .await;
    assert_eq!((answer.status, answer.code()), (400, "LIMIT_EXCEEDED"));
    let answer = rest
        .post("/composite", json!({"compositeRequest": [
            {"method": "GET", "url": "/elsewhere", "referenceId": "x"},
            {"method": "POST", "url": format!("{V}/composite"), "referenceId": "nested", "body": {}},
        ]}))
        .await;
    let responses = answer.body["compositeResponse"].as_array().unwrap();
    assert!(
        responses
            .iter()
            .all(|r| r["httpStatusCode"] == 400 && r["body"][0]["errorCode"] == "INVALID_INPUT")
    );
    let answer = rest.post("/composite", json!({"requests": []})).await;
    assert_eq!((answer.status, answer.code()), (400, "JSON_PARSER_ERROR"));
    assert_eq!(rest.get("/composite").await.status, 405);
}

#[tokio::test]
async fn api_limits_are_reported_and_enforced() {
    let sf = start_with(|c| c.api_daily_limit = 5).await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let path = format!("/sobjects/Opportunity/{id}");

    assert_eq!(
        rest.get(&path).await.limit.as_deref(),
        Some("api-usage=1/5")
    );
    let missing = rest.get("/sobjects/Opportunity/006LC0000000ZZZAAA").await;
    assert_eq!(
        (missing.status, missing.limit.as_deref()),
        (404, Some("api-usage=2/5"))
    );

    sf.set_limits(Some(4), None);
    assert_eq!(
        rest.get(&path).await.limit.as_deref(),
        Some("api-usage=5/5")
    );
    let answer = rest.get(&path).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(answer.limit.as_deref(), Some("api-usage=5/5"));
    let answer = rest
        .post("/composite", json!({"compositeRequest": []}))
        .await;
    assert_eq!(answer.code(), "REQUEST_LIMIT_EXCEEDED");

    // The console raises the limit.
    let raised: Value = reqwest::Client::new()
        .post(format!("{}/local/limits", sf.http_url()))
        .json(&json!({"max": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raised, json!({"used": 5, "max": 10}));
    let answer = rest.get("/limits").await;
    assert_eq!(
        answer.body,
        json!({"DailyApiRequests": {"Max": 10, "Remaining": 4}})
    );
    q2c_local_salesforce::set_limits(&sf.http_url(), Some(0), Some(100))
        .await
        .unwrap();
    assert_eq!(
        rest.get(&path).await.limit.as_deref(),
        Some("api-usage=1/100")
    );

    let status = sf.status();
    assert_eq!((status.rest.api_usage, status.rest.api_max), (1, 100));
    assert_eq!(status.rest.api_calls, 5);
    assert_eq!(status.rest.refused["REQUEST_LIMIT_EXCEEDED"], 2);

    let refused = q2c_local_salesforce::start({
        let mut config = q2c_local_salesforce::Config::for_tests();
        config.api_daily_limit = 0;
        config
    })
    .await
    .err()
    .unwrap();
    assert!(refused.to_string().contains("api_daily_limit"), "{refused}");
}

async fn switch(sf: &LocalSalesforce, fault: Fault) {
    q2c_local_salesforce::apply_fault(&sf.http_url(), fault)
        .await
        .unwrap();
}

#[tokio::test]
async fn rest_unavailable_refuses_the_next_calls_and_rest_down_all_of_them() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let path = format!("/sobjects/Opportunity/{id}");

    switch(&sf, Fault::RestUnavailable { count: 2 }).await;
    assert_eq!(sf.status().faults.rest_unavailable, 2);
    for _ in 0..2 {
        let answer = rest.get(&path).await;
        assert_eq!((answer.status, answer.code()), (503, "SERVER_UNAVAILABLE"));
        assert!(
            answer.body[0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(answer.limit.as_deref(), Some("api-usage=0/15000"));
    }
    assert_eq!(rest.get(&path).await.status, 200);

    switch(&sf, Fault::RestDown { on: true }).await;
    for _ in 0..3 {
        assert_eq!(rest.get(&path).await.status, 503);
    }
    // Even without a token: the server is down before it checks.
    assert_eq!(rest.with_authorization(None).get(&path).await.status, 503);
    switch(&sf, Fault::RestDown { on: false }).await;
    assert_eq!(rest.get(&path).await.status, 200);

    let status = sf.status();
    assert_eq!(status.rest.refused["SERVER_UNAVAILABLE"], 6);
    assert_eq!(status.rest.api_calls, 2);
    assert_eq!(status.faults.rest_unavailable, 0);
    assert!(!status.faults.rest_down);
}

#[tokio::test]
async fn lock_row_fails_the_next_record_writes() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let path = format!("/sobjects/Opportunity/{id}");
    let locked = json!([{"message": "unable to obtain exclusive access to this record", "errorCode": "UNABLE_TO_LOCK_ROW", "fields": []}]);

    switch(&sf, Fault::LockRow { count: 2 }).await;
    // Reads, events and refused bodies spend nothing.
    assert_eq!(rest.get(&path).await.status, 200);
    assert_eq!(
        rest.post("/sobjects/Q2C_Order_Status__e", json!({}))
            .await
            .status,
        201
    );
    assert_eq!(
        rest.patch(&path, json!({"Nope__c": 1})).await.code(),
        "INVALID_FIELD"
    );
    assert_eq!(sf.status().faults.lock_row, 2);

    let answer = rest
        .patch(&path, json!({"Q2C_Status__c": "completed"}))
        .await;
    assert_eq!((answer.status, &answer.body), (400, &locked));
    let answer = rest
        .patch(
            "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q1",
            json!({}),
        )
        .await;
    assert_eq!((answer.status, &answer.body), (400, &locked));
    assert_eq!(
        rest.patch(&path, json!({"Q2C_Status__c": "completed"}))
            .await
            .status,
        204
    );
    assert_eq!(
        sf.record("Opportunity", &id).unwrap()["Q2C_Status__c"],
        "completed"
    );
    assert!(
        sf.record_by("Q2C_Quote_Status__c", "Q2C_Quote_Id__c", "a0q1")
            .is_none()
    );
}

#[tokio::test]
async fn the_validation_switch_refuses_writes_to_its_object() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    let path = format!("/sobjects/Opportunity/{id}");
    let message = "Closed opportunities cannot change";

    switch(
        &sf,
        Fault::Validation {
            object: "opportunity".into(),
            message: message.into(),
            on: true,
        },
    )
    .await;
    assert_eq!(sf.status().faults.validation["Opportunity"], message);
    let answer = rest
        .patch(&path, json!({"Q2C_Status__c": "completed"}))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        json!([{"message": message, "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}])
    );
    // Other objects are not refused.
    let upsert = "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q1";
    assert_eq!(
        rest.patch(upsert, json!({"Q2C_Status_Sequence__c": 2}))
            .await
            .status,
        201
    );

    // Every failing rule is reported.
    sf.apply(Fault::Validation {
        object: "Q2C_Quote_Status__c".into(),
        message: String::new(),
        on: true,
    });
    let answer = rest
        .patch(upsert, json!({"Q2C_Status_Sequence__c": 1}))
        .await;
    let codes: Vec<_> = answer
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["FIELD_CUSTOM_VALIDATION_EXCEPTION"; 2]);
    assert!(!answer.body[0]["message"].as_str().unwrap().is_empty());
    assert_eq!(answer.body[1]["message"], SEQUENCE_REFUSED);

    switch(
        &sf,
        Fault::Validation {
            object: "Opportunity".into(),
            message: String::new(),
            on: false,
        },
    )
    .await;
    assert_eq!(
        rest.patch(&path, json!({"Q2C_Status__c": "completed"}))
            .await
            .status,
        204
    );

    let response = reqwest::Client::new()
        .post(format!("{}/local/faults/validation", sf.http_url()))
        .json(&json!({"object": "Account", "on": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn clear_turns_the_rest_switches_off_but_keeps_the_limits() {
    let sf = start().await;
    let rest = Rest::new(&sf).await;
    let id = opportunity(&sf);
    sf.set_limits(Some(10), None);
    switch(&sf, Fault::RestUnavailable { count: 3 }).await;
    switch(&sf, Fault::RestDown { on: true }).await;
    switch(&sf, Fault::LockRow { count: 3 }).await;
    switch(
        &sf,
        Fault::Validation {
            object: "Opportunity".into(),
            message: "no".into(),
            on: true,
        },
    )
    .await;

    switch(&sf, Fault::Clear).await;
    let faults = sf.status().faults;
    assert_eq!(
        (faults.rest_unavailable, faults.rest_down, faults.lock_row),
        (0, false, 0)
    );
    assert!(faults.validation.is_empty());
    let answer = rest
        .patch(
            &format!("/sobjects/Opportunity/{id}"),
            json!({"Q2C_Status__c": "completed"}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.limit.as_deref()),
        (204, Some("api-usage=11/15000"))
    );
}

#[tokio::test]
async fn the_console_creates_records_and_accepted_quotes_their_opportunity() {
    let sf = start().await;
    let url = sf.http_url();

    let id = q2c_local_salesforce::create_record(
        &url,
        "Opportunity",
        json!({"Id": "0065e00000ABCDEFGH", "Name": "Existing"}),
    )
    .await
    .unwrap();
    assert_eq!(id, "0065e00000ABCDEFGH");
    let record = q2c_local_salesforce::record(&url, "Opportunity", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record["Name"], "Existing");
    assert!(
        q2c_local_salesforce::record(&url, "Opportunity", "006nope")
            .await
            .unwrap()
            .is_none()
    );

    let refusal = |object: &'static str, fields: Value| {
        let url = url.clone();
        async move {
            match q2c_local_salesforce::create_record(&url, object, fields).await {
                Err(Error::Refused { status, .. }) => status,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(
        refusal("Opportunity", json!({"Id": "0065e00000ABCDEFGH"})).await,
        409
    );
    assert_eq!(refusal("Account", json!({})).await, 404);
    assert_eq!(refusal("Q2C_Order_Status__e", json!({})).await, 404);
    assert_eq!(refusal("Opportunity", json!({"Colour": "red"})).await, 400);
    assert_eq!(refusal("Opportunity", json!({"Id": 7})).await, 400);
    let status_id = sf
        .create_record("Q2C_Quote_Status__c", &json!({"Q2C_Quote_Id__c": "a0q1"}))
        .unwrap();
    assert!(status_id.starts_with("a1S"));
    assert!(matches!(
        sf.create_record("Q2C_Quote_Status__c", &json!({"Q2C_Quote_Id__c": "a0q1"})),
        Err(Error::InvalidRecord(message)) if message.contains("duplicate value")
    ));

    // An accepted quote brings its Opportunity, unless it exists.
    let mut fields = accepted_fields("a0q1");
    fields["Opportunity_Id__c"] = json!("006LC00000000A1");
    sf.publish("Q2C_Quote_Accepted__e", &fields, None).unwrap();
    let created = sf.record("Opportunity", "006LC00000000A1").unwrap();
    assert_eq!(
        created["Id"].as_str().unwrap().len(),
        18,
        "a 15-character id gains its checksum"
    );
    assert_eq!(created["Name"], "Q-00042");
    assert_eq!(created["StageName"], "Closed Won");
    assert_eq!(created["Amount"], 1250.5);

    fields["Opportunity_Id__c"] = json!("0065e00000ABCDEFGH");
    q2c_local_salesforce::publish(&url, "Q2C_Quote_Accepted__e", fields, None)
        .await
        .unwrap();
    assert_eq!(
        sf.record("Opportunity", "0065e00000ABCDEFGH").unwrap()["Name"],
        "Existing"
    );
    sf.publish("Q2C_Quote_Accepted__e", &accepted_fields("a0q2"), None)
        .unwrap();

    let status = sf.status();
    assert_eq!(status.rest.records["Opportunity"], 2);
    assert!(
        status.rest.writes.is_empty(),
        "the console makes no API writes"
    );
    assert_eq!(status.rest.api_calls, 0);

    // A status can now be written to the accepted quote's Opportunity.
    let rest = Rest::new(&sf).await;
    let answer = rest
        .patch(
            "/sobjects/Opportunity/006LC00000000A1",
            json!({"Q2C_Status__c": "completed", "Q2C_Status_Sequence__c": 1}),
        )
        .await;
    assert_eq!(answer.status, 204);
}
