//! Storage faults: a data dir that cannot be written, is not a directory, is
//! locked by another relay, or fills up gets a clear error at start-up or a
//! clean stop; never a panic, never a corrupt store.

use crate::child::{all_events, api, free_port, start};
use crate::support::*;
use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Run `serve` to completion with `dir` and an optional file-size limit (KiB).
fn serve_once(up_url: &str, dir: &str, fsize_kib: Option<u32>, rooms: &str) -> std::process::Child {
    let bin = env!("CARGO_BIN_EXE_verriflo-relay");
    // SIGXFSZ is ignored so that a full "disk" is an error the relay sees.
    let script = match fsize_kib {
        Some(k) => format!("trap '' XFSZ; ulimit -f {k}; exec \"{bin}\" serve"),
        None => format!("exec \"{bin}\" serve"),
    };
    Command::new("bash")
        .args(["-c", &script])
        .env("VERRIFLO_ORG_ID", ORG)
        .env("VERRIFLO_API_URL", up_url)
        .env("RELAY_ADMIN_TOKEN", TOKEN)
        .env("RELAY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RELAY_DATA_DIR", dir)
        .env("RELAY_ROOMS", rooms)
        .env("RELAY_POLL_INTERVAL", "10ms")
        // What is checked is the exit line, printed whatever the log level.
        .env("RELAY_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for the child to exit (reading its stderr meanwhile, so a full pipe
/// never blocks it), failing at the deadline.
fn finished(child: std::process::Child) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(DEADLINE)
        .expect("the relay stopped in time")
        .unwrap()
}

fn assert_clear_start_error(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains("RELAY_DATA_DIR"), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: one line, not {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_dirs_are_a_clear_start_up_error() {
    let up = spawn_upstream().await;
    // Read-only: /proc refuses new directories, even to root.
    let out = finished(serve_once(&up.url, "/proc/verriflo-relay-data", None, "a"));
    assert_clear_start_error(&out, "read-only");
    // Not a directory: a file stands where the directory should be.
    let tmp = tempfile::TempDir::new().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = finished(serve_once(
        &up.url,
        file.join("data").to_str().unwrap(),
        None,
        "a",
    ));
    assert_clear_start_error(&out, "not a directory");
    // Locked: another relay holds the store.
    let dir = tmp.path().join("held");
    let first = start(&up, &dir, &[]).await;
    let out = finished(serve_once(&up.url, dir.to_str().unwrap(), None, "a"));
    assert_clear_start_error(&out, "locked");
    drop(first);
    // Missing: a directory that does not exist yet is created.
    let fresh = tmp.path().join("new/nested/data");
    let relay = start(&up, &fresh, &[]).await;
    assert!(fresh.join("db").exists());
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_cleanly_and_the_store_reopens_intact() {
    let up = spawn_upstream().await;
    let rooms: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    for r in &rooms {
        up.mock.set_room(idle(r));
    }
    // Rooms change all the time, so the store grows until it cannot.
    let running = Arc::new(AtomicBool::new(true));
    let driver = {
        let (mock, rooms, running) = (up.mock.clone(), rooms.clone(), running.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                n += 1;
                for r in &rooms {
                    mock.update_room(r, |s| s.participant_count = Some(n));
                }
                // The simulated classrooms' pace, not a wait for a result.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let child = serve_once(&up.url, data.to_str().unwrap(), Some(96), &rooms.join(","));
    let out = tokio::task::spawn_blocking(move || finished(child))
        .await
        .unwrap();
    running.store(false, Ordering::SeqCst);
    driver.await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write to disk"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Without the limit the same store opens, intact, and goes on.
    let relay = start(&up, &data, &[("RELAY_ROOMS", rooms.join(","))]).await;
    let before = all_events(&relay.base).await;
    assert!(!before.is_empty());
    let mut by_room: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &before {
        by_room
            .entry(e["data"]["roomId"].as_str().unwrap().into())
            .or_default()
            .push(e["data"]["sequence"].as_u64().unwrap());
    }
    for (room, seqs) in &by_room {
        assert_eq!(
            *seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "room {room}"
        );
    }
    up.mock
        .update_room("f0", |s| s.title = Some("After the disk filled".into()));
    let got = eventually("a new event after the restart", || async {
        let events = api(
            &relay.base,
            reqwest::Method::GET,
            "/v1/events?roomId=f0&type=room.updated",
            None,
        )
        .await;
        events["data"]["events"]
            .as_array()
            .and_then(|a| a.first().cloned())
    })
    .await;
    let last = by_room.get("f0").map_or(0, |s| *s.last().unwrap());
    assert!(got["data"]["sequence"].as_u64().unwrap() > last);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_created_private_and_an_open_one_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let up = spawn_upstream().await;
    let tmp = tempfile::TempDir::new().unwrap();
    let fresh = tmp.path().join("fresh");
    let relay = start(&up, &fresh, &[]).await;
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "created as {mode:o}");
    drop(relay);

    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tmp.path().join("log");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verriflo-relay"))
        .arg("serve")
        .env("VERRIFLO_ORG_ID", ORG)
        .env("VERRIFLO_API_URL", &up.url)
        .env("RELAY_ADMIN_TOKEN", TOKEN)
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_DATA_DIR", &open)
        .env("RELAY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually("the relay to come up", || async {
        http.get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("readable by other users"), "{text}");
}
