//! Receivers in other languages verify real deliveries with the official
//! Standard Webhooks libraries and no code of ours. `scripts/test.sh`
//! installs those libraries and runs these tests.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use tokio::sync::mpsc;

struct Running {
    child: Child,
    /// The receiver's output, awaited: a blocking wait here would stop the
    /// relay that runs on the same runtime.
    lines: mpsc::UnboundedReceiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn(program: &str, script: &str, secret: &str) -> (Running, u16) {
    let path = format!("{}/examples/receivers/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(program)
        .args([path.as_str(), "0"])
        .env("WEBHOOK_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    let (tx, mut lines) = mpsc::unbounded_channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = tokio::time::timeout(DEADLINE, lines.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("{script} did not start: run scripts/test.sh, which installs the standardwebhooks packages")
        });
    let port = first
        .strip_prefix("listening ")
        .expect("the receiver prints its port")
        .parse()
        .unwrap();
    (Running { child, lines }, port)
}

async fn verified_by(program: &str, script: &str) {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    // The secret is needed before the receiver starts: create, read, then point.
    let (sub, secret) = app
        .subscribe(serde_json::json!({"url": "http://127.0.0.1:9/unused", "rooms": ["xl"]}))
        .await;
    let (mut receiver, port) = spawn(program, script, &secret).await;
    let (status, body) = app
        .patch(
            &format!("/v1/subscriptions/{sub}"),
            serde_json::json!({"url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    app.until_snapshot("xl", &not_found("xl")).await;
    for step in class_steps("xl").into_iter().take(3) {
        app.apply(&up, step).await;
    }
    let events = app.events("xl").await;
    let mut verified = Vec::new();
    while verified.len() < events.len() {
        let line = tokio::time::timeout(DEADLINE, receiver.lines.recv())
            .await
            .ok()
            .flatten()
            .expect("the receiver verified every event");
        assert!(!line.starts_with("rejected"), "{script}: {line}");
        verified.push(line);
    }
    for (line, event) in verified.iter().zip(&events) {
        let want = format!(
            "verified {} {} xl",
            event["id"].as_str().unwrap(),
            event["type"].as_str().unwrap()
        );
        assert_eq!(line, &want, "{script}");
    }
}

#[tokio::test]
#[ignore = "needs Python's standardwebhooks: run scripts/test.sh"]
async fn a_python_receiver_verifies_with_the_official_library() {
    verified_by("python3", "receiver.py").await;
}

#[tokio::test]
#[ignore = "needs Node's standardwebhooks: run scripts/test.sh"]
async fn a_node_receiver_verifies_with_the_official_library() {
    verified_by("node", "receiver.js").await;
}
