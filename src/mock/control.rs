//! `/_control`: script the simulated upstream's rooms and faults over HTTP.

use super::{Fault, MockUpstream};
use crate::room::RoomStatus;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<MockUpstream> {
    Router::new()
        .route("/_control/rooms", get(list_rooms))
        .route(
            "/_control/rooms/{room_id}",
            put(set_room).delete(remove_room),
        )
        .route("/_control/faults", post(add_fault).delete(clear_faults))
        .route("/_control/stats", get(stats))
}

/// A room's state; `roomId` comes from the path, `exists` defaults to true.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomBody {
    #[serde(default = "yes")]
    exists: bool,
    #[serde(default)]
    is_active: bool,
    title: Option<String>,
    participant_count: Option<u64>,
    has_teacher: Option<bool>,
    is_recording: Option<bool>,
    created_at: Option<String>,
    started_at: Option<String>,
}

fn yes() -> bool {
    true
}

async fn list_rooms(State(mock): State<MockUpstream>) -> Json<Value> {
    Json(json!({"success": true, "data": mock.rooms()}))
}

async fn set_room(
    State(mock): State<MockUpstream>,
    Path(room): Path<String>,
    Json(body): Json<RoomBody>,
) -> Json<Value> {
    let status = RoomStatus {
        exists: body.exists,
        is_active: body.exists && body.is_active,
        room_id: room,
        title: body.title,
        participant_count: body.participant_count,
        has_teacher: body.has_teacher,
        is_recording: body.is_recording,
        created_at: body.created_at,
        started_at: body.started_at,
    };
    mock.set_room(status.clone());
    Json(json!({"success": true, "data": status}))
}

async fn remove_room(State(mock): State<MockUpstream>, Path(room): Path<String>) -> StatusCode {
    mock.remove_room(&room);
    StatusCode::NO_CONTENT
}

async fn add_fault(State(mock): State<MockUpstream>, Json(fault): Json<Fault>) -> StatusCode {
    mock.inject(fault);
    StatusCode::CREATED
}

async fn clear_faults(State(mock): State<MockUpstream>) -> StatusCode {
    mock.clear_faults();
    StatusCode::NO_CONTENT
}

async fn stats(State(mock): State<MockUpstream>) -> Json<Value> {
    Json(json!({"success": true, "data": {"requests": mock.requests()}}))
}
