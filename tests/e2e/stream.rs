//! The event stream on the real binary: resumed by id with no gap and no
//! repeat, across a reconnect and a restart, filtered like `/v1/events`.

use crate::child::{all_events, api, start, Relay};
use crate::support::*;
use reqwest::Method;
use serde_json::Value;
use verriflo_relay::room::RoomStatus;

/// One Server-Sent Events message (or a comment).
#[derive(Debug, Default)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
}

/// A consumer of `/v1/events/stream`, reading the raw bytes as a browser
/// `EventSource` would.
struct Consumer {
    response: reqwest::Response,
    buffer: String,
}

impl Consumer {
    async fn open(base: &str, query: &str, last: Option<&str>) -> Consumer {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/v1/events/stream{query}"))
            .bearer_auth(TOKEN);
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let ct = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Consumer {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, skipping heartbeats; a comment other than a
    /// heartbeat comes back too.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(DEADLINE, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut m = Message::default();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            m.id = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("event:") {
                            m.event = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            m.data.push_str(v.trim_start());
                        } else if let Some(v) = line.strip_prefix(':') {
                            m.comment = Some(v.trim().to_string());
                        }
                    }
                    if m.comment.as_deref() == Some("heartbeat") {
                        continue;
                    }
                    return m;
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a message within the deadline")
    }

    /// The next `n` events' ids, checking each message against the store.
    async fn take(&mut self, n: usize, base: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let m = self.next().await;
            let id = m.id.clone().unwrap_or_else(|| panic!("{m:?}"));
            let stored = api(base, Method::GET, &format!("/v1/events/{id}"), None).await;
            let data: Value = serde_json::from_str(&m.data).unwrap();
            assert_eq!(data, stored["data"], "data is the event as GET returns it");
            assert_eq!(m.event.as_deref(), data["type"].as_str());
            ids.push(id);
        }
        ids
    }
}

/// Play `steps` on the upstream, each awaited until the relay stored it.
async fn play(up: &Upstream, relay: &Relay, room: &str, steps: &[RoomStatus]) {
    for s in steps {
        up.mock.set_room(s.clone());
        let want = serde_json::to_value(s).unwrap();
        eventually("the relay to see the step", || async {
            let v = api(&relay.base, Method::GET, &format!("/v1/rooms/{room}"), None).await;
            (v["data"]["status"] == want).then_some(())
        })
        .await;
    }
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_by_id_with_no_gap_and_no_repeat_across_a_restart() {
    let up = spawn_upstream().await;
    let dir = tempfile::TempDir::new().unwrap();
    let relay = start(&up, dir.path(), &[("RELAY_ROOMS", "s-a,s-b".into())]).await;
    let steps_a = class_steps("s-a");
    let steps_b = class_steps("s-b");
    up.mock.set_room(not_found("s-a"));
    up.mock.set_room(not_found("s-b"));
    eventually("the baselines", || async {
        let v = api(&relay.base, Method::GET, "/v1/rooms", None).await;
        let rooms = v["data"].as_array()?;
        rooms.iter().all(|r| !r["status"].is_null()).then_some(())
    })
    .await;

    // Live: a consumer connected before anything happened sees it all.
    let mut live = Consumer::open(&relay.base, "", None).await;
    play(&up, &relay, "s-a", &steps_a[..3]).await;
    let stored = ids_of(&all_events(&relay.base).await);
    assert!(stored.len() >= 3);
    let first = live.take(2, &relay.base).await;
    assert_eq!(first, stored[..2]);
    drop(live);

    // More happens while it is away; it reconnects with its last id.
    play(&up, &relay, "s-b", &steps_b[..2]).await;
    let mut back = Consumer::open(&relay.base, "", Some(&first[1])).await;
    let stored = ids_of(&all_events(&relay.base).await);
    let rest = back.take(stored.len() - 2, &relay.base).await;
    assert_eq!(rest, stored[2..], "resumed at the seam, in order");
    // ...and goes on live, with no repeat at the seam.
    play(&up, &relay, "s-a", &steps_a[3..4]).await;
    let stored = ids_of(&all_events(&relay.base).await);
    let next = back
        .take(stored.len() - first.len() - rest.len(), &relay.base)
        .await;
    assert_eq!(next, stored[first.len() + rest.len()..]);
    let last = next.last().unwrap().clone();
    drop(back);

    // The relay restarts; events keep coming; the consumer resumes.
    drop(relay);
    let relay = start(&up, dir.path(), &[]).await;
    play(&up, &relay, "s-a", &steps_a[4..]).await;
    let stored = ids_of(&all_events(&relay.base).await);
    let seam = stored.iter().position(|id| *id == last).unwrap();
    let mut again = Consumer::open(&relay.base, &format!("?after={last}"), None).await;
    let after = again.take(stored.len() - seam - 1, &relay.base).await;
    assert_eq!(after, stored[seam + 1..], "through the restart");

    // Filters: one room, one type, from the start.
    let mut one = Consumer::open(&relay.base, "?roomId=s-b&type=room.started", None).await;
    let m = one.next().await;
    assert_eq!(m.event.as_deref(), Some("room.started"));
    let data: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(data["data"]["roomId"], "s-b");
}

#[tokio::test]
async fn a_stream_needs_the_token_and_a_real_cursor() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let anonymous = reqwest::get(format!("{}/v1/events/stream", app.base))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    for query in [
        "?after=nope",
        "?type=room.exploded",
        "?roomId=",
        "?colour=red",
    ] {
        let (status, v) = app.get(&format!("/v1/events/stream{query}")).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{query}: {v}");
    }
}
