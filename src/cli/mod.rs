//! The admin command line: talks to a running relay's admin API.

mod client;
mod table;

pub use client::CliError;

use clap::{Args, Subcommand};
use client::{q, seg, Client};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct Target {
    /// The relay's admin API.
    #[arg(
        long,
        env = "RELAY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The admin bearer token.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RoomsCmd {
    /// Watched rooms with their health and last status.
    List,
    /// One watched room.
    Show { room: String },
    /// Start watching a room.
    Watch { room: String },
    /// Stop watching a room (its events stay).
    Unwatch { room: String },
}

#[derive(Subcommand, Debug)]
pub enum SubsCmd {
    /// All subscriptions.
    List,
    /// Subscribe a URL; prints the signing secret once.
    Add {
        /// The receiver's URL.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Event types or patterns (room.*), comma-separated; all when absent.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Rooms, comma-separated; every watched room when absent.
        #[arg(long, value_delimiter = ',')]
        rooms: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Use this whsec_ secret instead of a generated one.
        #[arg(long)]
        secret: Option<String>,
    },
    /// One subscription (without its secret).
    Show { id: String },
    /// Enable it again; deliveries that waited go out in order.
    Enable { id: String },
    /// Stop delivering to it (history and pending deliveries stay).
    Disable { id: String },
    /// Delete it with its pending deliveries.
    Delete { id: String },
    /// The current signing secret.
    Secret { id: String },
    /// A new secret; the old one keeps signing for 24 hours.
    Rotate { id: String },
    /// Queue a webhook.test event.
    Test { id: String },
    /// Deliveries, newest first.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send a failed delivery again.
    Retry { id: String, delivery: String },
    /// Queue again every stored event since a time (RFC 3339).
    Replay {
        id: String,
        #[arg(long)]
        since: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Stored events, oldest first.
    List {
        #[arg(long)]
        room: Option<String>,
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One event, as its webhook body plus its id.
    Show { id: String },
}

#[derive(Subcommand, Debug)]
pub enum Admin {
    /// Watched rooms.
    #[command(subcommand)]
    Rooms(RoomsCmd),
    /// Webhook subscriptions and their deliveries.
    #[command(subcommand)]
    Subs(SubsCmd),
    /// Stored events.
    #[command(subcommand)]
    Events(EventsCmd),
}

/// Run one admin command against the relay.
pub async fn run(target: &Target, cmd: Admin) -> Result<(), CliError> {
    let token = target
        .token
        .clone()
        .ok_or_else(|| CliError::Usage("set RELAY_ADMIN_TOKEN or pass --token".into()))?;
    let c = Client::new(&target.url, &token);
    let (data, show): (Value, Show) = match cmd {
        Admin::Rooms(r) => match r {
            RoomsCmd::List => (c.call(Method::GET, "/v1/rooms", None).await?, Show::Rooms),
            RoomsCmd::Show { room } => (
                c.call(Method::GET, &format!("/v1/rooms/{}", seg(&room)), None)
                    .await?,
                Show::Object,
            ),
            RoomsCmd::Watch { room } => (
                c.call(Method::PUT, &format!("/v1/rooms/{}", seg(&room)), None)
                    .await?,
                Show::Done("watching"),
            ),
            RoomsCmd::Unwatch { room } => (
                c.call(Method::DELETE, &format!("/v1/rooms/{}", seg(&room)), None)
                    .await?,
                Show::Done("no longer watching"),
            ),
        },
        Admin::Subs(s) => subs(&c, s).await?,
        Admin::Events(e) => match e {
            EventsCmd::List {
                room,
                kind,
                after,
                limit,
            } => {
                let mut path = format!("/v1/events?limit={limit}");
                for (k, v) in [("roomId", room), ("type", kind), ("after", after)] {
                    if let Some(v) = v {
                        path.push_str(&format!("&{k}={}", q(&v)));
                    }
                }
                (c.call(Method::GET, &path, None).await?, Show::Events)
            }
            EventsCmd::Show { id } => (
                c.call(Method::GET, &format!("/v1/events/{}", seg(&id)), None)
                    .await?,
                Show::Json,
            ),
        },
    };
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
    } else {
        show.print(&data);
    }
    Ok(())
}

async fn subs(c: &Client, cmd: SubsCmd) -> Result<(Value, Show), CliError> {
    let one = |id: &str| format!("/v1/subscriptions/{}", seg(id));
    Ok(match cmd {
        SubsCmd::List => (
            c.call(Method::GET, "/v1/subscriptions", None).await?,
            Show::Subs,
        ),
        SubsCmd::Add {
            endpoint,
            events,
            rooms,
            description,
            secret,
        } => {
            let body = json!({"url": endpoint, "events": events, "rooms": rooms, "description": description, "secret": secret});
            (
                c.call(Method::POST, "/v1/subscriptions", Some(body))
                    .await?,
                Show::Object,
            )
        }
        SubsCmd::Show { id } => (c.call(Method::GET, &one(&id), None).await?, Show::Object),
        SubsCmd::Enable { id } => (
            c.call(Method::PATCH, &one(&id), Some(json!({"enabled": true})))
                .await?,
            Show::Done("enabled"),
        ),
        SubsCmd::Disable { id } => (
            c.call(Method::PATCH, &one(&id), Some(json!({"enabled": false})))
                .await?,
            Show::Done("disabled"),
        ),
        SubsCmd::Delete { id } => (
            c.call(Method::DELETE, &one(&id), None).await?,
            Show::Done("deleted"),
        ),
        SubsCmd::Secret { id } => (
            c.call(Method::GET, &format!("{}/secret", one(&id)), None)
                .await?,
            Show::Object,
        ),
        SubsCmd::Rotate { id } => (
            c.call(Method::POST, &format!("{}/rotate-secret", one(&id)), None)
                .await?,
            Show::Object,
        ),
        SubsCmd::Test { id } => (
            c.call(Method::POST, &format!("{}/test", one(&id)), None)
                .await?,
            Show::Done("test event queued"),
        ),
        SubsCmd::Deliveries { id, limit } => (
            c.call(
                Method::GET,
                &format!("{}/deliveries?limit={limit}", one(&id)),
                None,
            )
            .await?,
            Show::Deliveries,
        ),
        SubsCmd::Retry { id, delivery } => {
            let path = format!("{}/deliveries/{}/retry", one(&id), seg(&delivery));
            (
                c.call(Method::POST, &path, None).await?,
                Show::Done("queued again"),
            )
        }
        SubsCmd::Replay { id, since } => {
            let path = format!("{}/replay", one(&id));
            (
                c.call(Method::POST, &path, Some(json!({"since": since})))
                    .await?,
                Show::Object,
            )
        }
    })
}

/// How a command's `data` is shown to a person.
enum Show {
    Rooms,
    Subs,
    Events,
    Deliveries,
    Object,
    Json,
    Done(&'static str),
}

impl Show {
    fn print(&self, data: &Value) {
        let rows = |items: &str| {
            data.get(items)
                .or(Some(data))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let c = table::cell;
        match self {
            Show::Rooms => table::print(
                &[
                    "ROOM",
                    "HEALTH",
                    "EXISTS",
                    "LIVE",
                    "TEACHER",
                    "REC",
                    "PEOPLE",
                    "TITLE",
                    "LAST CHANGE",
                ],
                &rows("rooms")
                    .iter()
                    .map(|r| {
                        let s = &r["status"];
                        vec![
                            c(&r["roomId"]),
                            c(&r["health"]),
                            c(&s["exists"]),
                            c(&s["isActive"]),
                            c(&s["hasTeacher"]),
                            c(&s["isRecording"]),
                            c(&s["participantCount"]),
                            c(&s["title"]),
                            c(&r["lastChangedAt"]),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            Show::Subs => table::print(
                &["ID", "ENABLED", "URL", "EVENTS", "ROOMS", "DESCRIPTION"],
                &rows("subscriptions")
                    .iter()
                    .map(|s| {
                        vec![
                            c(&s["id"]),
                            c(&s["enabled"]),
                            c(&s["url"]),
                            c(&s["events"]),
                            c(&s["rooms"]),
                            c(&s["description"]),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            Show::Events => table::print(
                &["ID", "TIME", "ROOM", "TYPE", "SEQ"],
                &rows("events")
                    .iter()
                    .map(|e| {
                        vec![
                            c(&e["id"]),
                            c(&e["timestamp"]),
                            c(&e["data"]["roomId"]),
                            c(&e["type"]),
                            c(&e["data"]["sequence"]),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            Show::Deliveries => table::print(
                &[
                    "ID",
                    "STATUS",
                    "EVENT",
                    "TYPE",
                    "ROOM",
                    "ATTEMPTS",
                    "LAST ANSWER",
                ],
                &rows("deliveries")
                    .iter()
                    .map(|d| {
                        let last = d["attempts"]
                            .as_array()
                            .and_then(|a| a.last())
                            .cloned()
                            .unwrap_or(Value::Null);
                        let answer = if last["statusCode"].is_null() {
                            c(&last["error"])
                        } else {
                            c(&last["statusCode"])
                        };
                        let n = d["attempts"].as_array().map_or(0, Vec::len).to_string();
                        vec![
                            c(&d["id"]),
                            c(&d["status"]),
                            c(&d["eventId"]),
                            c(&d["eventType"]),
                            c(&d["roomId"]),
                            n,
                            answer,
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            Show::Object => table::print_object(data),
            Show::Json => println!("{}", serde_json::to_string_pretty(data).unwrap_or_default()),
            Show::Done(what) => {
                let id = ["id", "roomId", "eventId"]
                    .iter()
                    .find_map(|k| data[*k].as_str())
                    .unwrap_or("");
                println!("{what} {id}");
            }
        }
    }
}
