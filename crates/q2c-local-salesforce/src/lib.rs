//! A faithful local Salesforce for development and tests: the Pub/Sub API
//! (gRPC, `eventbus.v1.PubSub`), the OAuth token endpoint, the REST API q2c
//! writes workflow statuses to, and a console to publish platform events,
//! set up records and inject the faults real Salesforce shows.
//!
//! It shares only the `.proto` and the events' Avro schemas (both from
//! `q2c-pubsub`) with q2c's subscriber, so the subscriber is tested against
//! an independent reading of Salesforce's contract, not against itself.
//!
//! # Layout
//!
//! - `config`: [`Config`], what a local Salesforce is started with.
//! - `catalog`: the org's platform events, their schemas, stable schema ids
//!   ([`schema_id`]) and the Avro encoding of events given as JSON.
//! - `bus`: one log per topic: replay ids, retention, wake-ups, counters.
//! - `auth`: access tokens, client-credentials and JWT bearer flows.
//! - `grpc`: the service: metadata checks, GetTopic, GetSchema, Publish, and
//!   Salesforce-shaped errors. `subscription`: one Subscribe stream.
//! - `sobjects`: the org's sObjects for REST (objects, fields, the status
//!   platform event), the one place they are defined. `org`: their records
//!   and published events, and the rules a write meets (field names and
//!   types, the ordering rule, unique external ids). `limits`: the daily
//!   API budget.
//! - `rest`: the REST API: admission (switches, token, budget), routes,
//!   Salesforce-shaped errors (`rest/error.rs`), composites
//!   (`rest/composite.rs`).
//! - `faults`: [`Fault`], the switches. `status`: [`StatusReport`].
//! - `http`: the token endpoint, the REST routes and the console. `client`: a Rust client of
//!   the console. `cli`: `serve` and `publish`. `server`: [`start`] and the
//!   [`LocalSalesforce`] handle.
//!
//! # The Pub/Sub API
//!
//! Topics `/event/Q2C_Quote_Accepted__e` and `/event/Q2C_Quote_Cancelled__e`.
//! Every RPC needs metadata `accesstoken` (issued here, not expired),
//! `instanceurl` (the HTTP base URL) and `tenantid` (the org id), or fails
//! with `service.auth.error`. Errors are a status whose trailers carry
//! `error-code: sfdc.platform.eventbus.grpc.<code>` and `rpc-id`.
//!
//! Replay ids are 8-byte big-endian counters per topic from 1. Subscribe
//! reads the preset from the first FetchRequest only: LATEST delivers what is
//! published after subscribing, EARLIEST starts at the oldest retained event,
//! CUSTOM after the given replay id (none: `replayid.validation.failed`; not
//! 8 bytes, never given out, or left retention: `replayid.corrupted`).
//! `num_requested` adds up to at most 100 outstanding
//! (`fetch.requested.events.invalid` otherwise). A stream with events
//! requested and none to deliver gets an empty response carrying the topic's
//! latest replay id every keepalive interval; one with nothing requested and
//! no FetchRequest for the idle timeout is closed (it ends without an error). A stream ends with
//! `service.auth.error` when its token expires, and with
//! `subscription.fetch.replayid.corrupted` if the events it was about to
//! receive left retention. The `unavailable` switch refuses a Subscribe call
//! once its first FetchRequest has named the topic (the call itself
//! succeeds; its stream's first item is the error). `GetSchema` of an unknown
//! id answers `NotFound` with code `schema.not.found`. `PublishStream` and
//! `ManagedSubscribe` answer `Unimplemented`.
//!
//! # HTTP
//!
//! - `POST /services/oauth2/token`: form `grant_type=client_credentials`
//!   with `client_id` and `client_secret`, or
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256
//!   `assertion` (`iss` client id, `sub` username, `aud`
//!   `https://login.salesforce.com`, `https://test.salesforce.com` or the
//!   server's own URL, `exp` in the future). 200 with `access_token`,
//!   `instance_url`, `id`, `token_type`, `issued_at`, `scope`; 400 with
//!   `error` (`invalid_grant`, `invalid_client`, `unsupported_grant_type`)
//!   and `error_description`.
//!
//! # The REST API
//!
//! Under `/services/data/vNN.N/` (any version of that shape; anything else
//! is 404 `NOT_FOUND`). Every call needs `Authorization: Bearer <token>`
//! (or `OAuth <token>`) with a token issued here and not expired, else 401
//! `INVALID_SESSION_ID`. Errors are Salesforce's JSON array of
//! `{"message", "errorCode"[, "fields"]}`.
//!
//! | call | answer |
//! |---|---|
//! | `GET sobjects/{Object}/{Id}` | 200 `{"attributes": {"type", "url"}, "Id", <every field, null when unset>}`; 404 `NOT_FOUND` |
//! | `PATCH sobjects/{Object}/{Id}` with a JSON object of fields | 204; 404 when there is no such record |
//! | `PATCH sobjects/{Object}/{ExternalIdField}/{value}` | upsert: 201 `{"id", "success": true, "errors": [], "created": true}` or 200 with `"created": false`; 404 `NOT_FOUND` when the field is no external id |
//! | `GET sobjects/{Object}/{ExternalIdField}/{value}` | the record, as by id |
//! | `POST sobjects/{Object}` | creates a record: 201 `{"id", "success": true, "errors": []}` |
//! | `POST sobjects/{Event__e}` | publishes a platform event: 201 `{"id": "e00…", "success": true, "errors": []}`; kept for [`LocalSalesforce::published`] and `GET /local/published/{Event__e}` (not streamed over Pub/Sub) |
//! | `POST composite` `{"allOrNone", "compositeRequest": [{"method", "url", "referenceId", "body"}]}` | 200 `{"compositeResponse": [{"body", "httpHeaders", "httpStatusCode", "referenceId"}]}`; more than 25 subrequests: 400 `LIMIT_EXCEEDED`. With `allOrNone`, the first failure rolls back the others (events published in it too), which answer 400 `PROCESSING_HALTED`. One API call however many subrequests; no `@{ref}` references |
//! | `GET limits` | `{"DailyApiRequests": {"Max", "Remaining"}}` |
//!
//! The objects and fields (in `sobjects`): `Opportunity` (`Name`,
//! `StageName`, `Amount`) and the custom object `Q2C_Quote_Status__c`
//! (external id `Q2C_Quote_Id__c`), both with q2c's status fields
//! `Q2C_Status__c`, `Q2C_ERP_Order_Number__c`, `Q2C_Invoice_Number__c`,
//! `Q2C_Payment_Reference__c`, `Q2C_Failure_Reason__c`,
//! `Q2C_Status_Updated_At__c`, `Q2C_Status_Sequence__c`,
//! `Q2C_Workflow_Id__c`; and the platform event `Q2C_Order_Status__e`
//! (`Quote_Id__c`, `Opportunity_Id__c`, `Status__c`, `ERP_Order_Number__c`,
//! `Invoice_Number__c`, `Payment_Reference__c`, `Failure_Reason__c`,
//! `Sequence__c`, `Workflow_Id__c`, `Status_Updated_At__c`). Names match in
//! any case. A write naming another field is 400 `INVALID_FIELD` (`No such
//! column 'X' on sobject of type Opportunity`), one with a value of the
//! wrong JSON type 400 `JSON_PARSER_ERROR`, one setting `Id` 400
//! `INVALID_FIELD_FOR_INSERT_UPDATE`, one giving an external id another
//! record holds 400 `DUPLICATE_VALUE`; an unknown object is 404. Date-times
//! read back as Salesforce writes them (`2026-11-27T10:00:00.000+0000`).
//! New records get 18-character ids (`006…`, `a1S…`; a 15-character id
//! finds the same record).
//!
//! **The ordering rule.** On `Opportunity` and `Q2C_Quote_Status__c`, an
//! update that changes `Q2C_Status_Sequence__c` to a smaller value (or
//! blanks it) fails with 400 `[{"message": "Q2C_Status_Sequence__c: an
//! older status cannot overwrite a newer one", "errorCode":
//! "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": ["Q2C_Status_Sequence__c"]}]`;
//! an update that leaves it alone or writes the same value passes. Real
//! orgs get this from a validation rule shipped with q2c's setup, whose
//! error condition is `Q2C_Status_Sequence__c <
//! PRIORVALUE(Q2C_Status_Sequence__c)`, guarded so it skips new records,
//! records without a sequence yet, and edits that do not change it (the full formula is in `org.rs`).
//!
//! **API limits.** Every REST answer, refusals included, carries
//! `Sforce-Limit-Info: api-usage=<used>/<max>`. Each call that passes the
//! token check counts one (a composite is one); once used ≥ max, calls
//! answer 403 `REQUEST_LIMIT_EXCEEDED` (`TotalRequests Limit exceeded.`).
//! The budget starts at [`Config::api_daily_limit`] (15,000) and never
//! resets by itself.
//!
//! # The console
//!
//! The console needs no token, and what it does is no API call:
//!
//! - `POST /local/events/{event}[?id=<uuid>]` with a JSON object of fields
//!   in Salesforce names: 201 `{"id", "replay_id", "topic"}`; a field not in
//!   the schema is a 400 naming it. `CreatedDate` (RFC 3339) and
//!   `CreatedById` are filled in when absent. A quote-accepted event also
//!   creates its Opportunity (`Opportunity_Id__c` as its id, `Name` from
//!   `Quote_Number__c`, `StageName` `Closed Won`, `Amount` from
//!   `Net_Amount__c`) unless it exists, so a status can be written to it.
//! - `POST /local/records/{Object}` with a JSON object of fields (optional
//!   `Id`): 201 `{"id"}`; 404 for an unknown object, 409 when the id is
//!   taken, 400 for fields the object refuses. Switches and rules do not
//!   apply. `GET /local/records/{Object}/{Id}` reads one back.
//! - `GET /local/published/{Event__e}`: the platform events published over
//!   REST, oldest first, each with `Id`, `CreatedDate`, `CreatedById`.
//! - `POST /local/limits` `{"used": n, "max": m}` (either optional): sets
//!   the API budget; answers `{"used", "max"}`.
//! - `GET /local/status`: per topic, events retained and published, latest
//!   replay id, open streams and the most ever open at once, Subscribe calls;
//!   tokens issued; REST calls counted, the budget, calls refused by code,
//!   writes, records and published events per object; the switches.
//!
//! # Fault switches
//!
//! `POST /local/faults/<name>` (or [`LocalSalesforce::apply`] with a
//! [`Fault`]):
//!
//! | name | body | effect |
//! |---|---|---|
//! | `expire-tokens` | | every token issued so far expires; open streams end with `service.auth.error`; REST calls answer 401 `INVALID_SESSION_ID` |
//! | `unavailable` | `{"count": n}` | open streams end with `service.unavailable`; the next n Subscribe calls are refused with it |
//! | `stall` | `{"on": bool}` | streams send nothing (no events, keepalives or idle close) yet stay open |
//! | `duplicate` | `{"on": bool}` | each delivered event comes twice in its response (same id, same replay id) |
//! | `garble` | `{"on": bool}` | events published meanwhile are stored with their Avro payload cut short (they no longer decode) |
//! | `expire-replay-ids` | | every event so far leaves retention: CUSTOM from their ids is `replayid.corrupted` |
//! | `rest-unavailable` | `{"count": n}` | the next n REST calls answer 503 `SERVER_UNAVAILABLE` |
//! | `rest-down` | `{"on": bool}` | every REST call answers 503 `SERVER_UNAVAILABLE` |
//! | `lock-row` | `{"count": n}` | the next n record writes over REST (not event publishes) answer 400 `UNABLE_TO_LOCK_ROW` |
//! | `validation` | `{"object": "Opportunity", "message": "...", "on": bool}` | REST writes to the object fail with 400 `FIELD_CUSTOM_VALIDATION_EXCEPTION` carrying the message (`fields` empty) |
//! | `clear` | | stall, duplicate, garble, refusals and the REST switches off (limits stay) |

mod auth;
mod bus;
mod catalog;
mod cli;
mod client;
mod config;
mod error;
mod faults;
mod grpc;
mod http;
mod limits;
mod org;
mod rest;
mod server;
mod sobjects;
mod status;
mod subscription;

pub use bus::{decode_replay_id, encode_replay_id};
pub use catalog::{EVENT_NAMES, schema_id};
pub use cli::{Args, Command, EventKind, PublishArgs, run};
pub use client::{
    Published, apply_fault, create_record, publish, published, record, set_limits, status,
};
pub use config::{
    Config, DEFAULT_API_DAILY_LIMIT, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_GRPC_ADDR,
    DEFAULT_HTTP_ADDR, DEFAULT_ORG_ID, DEFAULT_USER_ID, DEFAULT_USERNAME, Secret,
};
pub use error::Error;
pub use faults::Fault;
pub use grpc::ERROR_CODE_PREFIX;
pub use server::{LocalSalesforce, start};
pub use status::{FaultStatus, RestStatus, StatusReport, TopicStatus};
pub use subscription::MAX_OUTSTANDING;
