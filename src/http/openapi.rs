//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API,
//! generated from the handlers' own annotations and types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, calls, device, events, observe, recordings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "siprelay",
        description = "Calls, live events, recordings and metrics of a siprelay daemon. \
            When a token is configured every route needs `Authorization: Bearer TOKEN` or `?token=TOKEN`.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        calls::place, calls::list, calls::get_one, calls::answer, calls::reject,
        calls::hangup, calls::delete, calls::play, calls::dtmf,
        events::stream,
        recordings::list, recordings::sidecar, recordings::wav, recordings::delete,
        observe::metrics, observe::healthz, observe::readyz,
        device::list,
        accounts::list, accounts::get_one,
        document,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "calls", description = "Place, answer, reject, hang up and play to calls"),
        (name = "events", description = "Call events as Server-Sent Events"),
        (name = "recordings", description = "Recorded calls"),
        (name = "observe", description = "Metrics, liveness and readiness"),
        (name = "devices", description = "Hardware endpoints and their presence"),
        (name = "accounts", description = "SIP accounts and their registration"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "observe",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
