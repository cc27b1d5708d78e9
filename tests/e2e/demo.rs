//! The demo binary prints verified events of several types and stops cleanly on SIGINT.

use crate::support::DEADLINE;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

#[test]
fn the_demo_prints_verified_events_and_stops_on_sigint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verriflo-relay"))
        .args(["demo", "--tick", "100ms", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = std::time::Instant::now();
    let mut types = std::collections::BTreeSet::new();
    let mut header = Vec::new();
    while types.len() < 4 {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = rx
            .recv_timeout(left)
            .expect("the demo printed verified events of several types in time");
        assert!(!line.starts_with("REJECTED"), "{line}");
        match line.strip_prefix("verified ") {
            Some(rest) => {
                types.insert(rest.split_whitespace().nth(2).unwrap().to_string());
            }
            None => header.push(line),
        }
    }
    assert!(
        header
            .iter()
            .any(|l| l.contains("admin API") && l.contains("token")),
        "{header:?}"
    );
    // The dashboard's one-time link comes first among the addresses, and it logs in.
    let dashboard = header.iter().position(|l| l.contains("dashboard"));
    let admin = header.iter().position(|l| l.contains("admin API"));
    assert!(dashboard < admin && dashboard.is_some(), "{header:?}");
    let link = header[dashboard.unwrap()]
        .split_whitespace()
        .find(|w| w.contains("/ui/login/"))
        .expect("a login link")
        .to_string();
    let opened = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(&link).await.unwrap() });
    assert_eq!(opened.status(), 200);
    assert!(opened.headers().contains_key("set-cookie"));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE * 2, "the demo did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{types:?}");
}
