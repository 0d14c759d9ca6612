//! The OpenAPI 3.1 document of the whole API, generated from the handlers'
//! annotations, so it cannot drift from the routes and their types.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;
use crate::{actions, audit, bulk, counts, dead_letters, events, health, salesforce, workflows};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "q2c",
        description = "Quote-to-cash workflow orchestrator: event intake, workflows, operator \
                       actions, bulk actions, dead letters and the audit trail."
    ),
    paths(
        events::accept,
        workflows::list,
        counts::live,
        workflows::detail,
        workflows::history,
        actions::act,
        bulk::plan,
        bulk::show,
        bulk::run,
        bulk::cancel,
        audit::export,
        dead_letters::list,
        dead_letters::inspect,
        dead_letters::replay,
        dead_letters::discard,
        salesforce::subscriptions,
        health::healthz,
        health::readyz,
        health::metrics,
        document,
    ),
    components(schemas(
        Problem,
        actions::ActionRequestBody,
        bulk::PlanBody,
        dead_letters::ReasonBody
    )),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// What every route behind a token may answer before its handler runs.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// No valid token.
    #[response(status = 401, description = "No valid token")]
    Unauthorized(Problem),
    /// The token's role does not reach the route.
    #[response(
        status = 403,
        description = "The token's role does not reach this route"
    )]
    Forbidden(Problem),
}

/// Every `/api/v1` route takes a bearer token; its role decides the rest.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A named token; its role (ingest, viewer, operator, admin) decides \
                         which routes it reaches",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi_document",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)),
    security(())
)]
pub async fn document() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}
