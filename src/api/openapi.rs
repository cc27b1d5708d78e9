//! The OpenAPI document, generated from the handlers' annotations; this file
//! only adds what every route shares (auth, the error envelope).

use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "verriflo-relay admin API",
        description = "Push events for Verriflo's poll-only Room Status API. Every answer uses the upstream's envelope.",
    ),
    components(schemas(super::schema::ErrorEnvelope, crate::event::EventType)),
    tags(
        (name = "rooms", description = "Watched rooms and the drop-in status route"),
        (name = "events", description = "Stored events"),
        (name = "subscriptions", description = "Webhook subscriptions"),
        (name = "deliveries", description = "Deliveries, retries and replays"),
    )
)]
pub struct ApiDoc;

const DROP_IN: &str = "/v1/room/{room_id}/status";

/// Add the security schemes, the bearer requirement of the admin routes, and
/// the error answers every route can give.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "org_id",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("VF-ORG-ID"))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            if path != DROP_IN {
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
            add_errors(op);
        }
    }
    doc
}

fn add_errors(op: &mut Operation) {
    for (status, why) in [
        ("400", "Bad input: validation_failed or invalid_json"),
        ("401", "Missing or wrong credentials"),
        ("408", "The request took longer than RELAY_REQUEST_TIMEOUT"),
        ("500", "An unexpected error (details are logged, not shown)"),
    ] {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                let body = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                    .build();
                ResponseBuilder::new()
                    .description(why)
                    .content("application/json", body)
                    .build()
                    .into()
            });
    }
}

pub async fn serve(doc: Arc<OpenApi>) -> Response {
    axum::Json(doc.as_ref().clone()).into_response()
}
