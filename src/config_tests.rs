//! Unit tests of settings: defaults, errors naming their setting, precedence.

use super::*;

fn sources(pairs: &[(&str, &str)]) -> Sources {
    let mut s = Sources::default();
    s.overlay(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    s
}

#[test]
fn defaults_follow_the_spec() {
    let c = Config::from_sources(&Sources::default()).unwrap();
    assert_eq!(c.api_url.as_str(), "https://api.verriflo.com/");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.poll_interval, Duration::from_secs(5));
    assert_eq!(c.delivery_timeout, Duration::from_secs(15));
    assert_eq!(c.retry_schedule.len(), 9);
    assert_eq!(c.retry_schedule[8], Duration::from_secs(24 * 3600));
    assert!(!c.initial_events && !c.allow_private_targets);
    assert!(c.require_serve().is_err());
}

#[test]
fn bad_values_name_their_setting() {
    for (k, v) in [
        ("RELAY_POLL_INTERVAL", "fast"),
        ("RELAY_POLL_INTERVAL", "0s"),
        ("RELAY_LISTEN", "nowhere"),
        ("VERRIFLO_API_URL", "ftp://x"),
        ("RELAY_ADMIN_TOKEN", "short"),
        ("RELAY_MAX_RPS", "-1"),
        ("RELAY_INITIAL_EVENTS", "maybe"),
        ("RELAY_RETRY_SCHEDULE", "5s,,1m"),
        ("RELAY_LOG_FORMAT", "xml"),
    ] {
        let e = Config::from_sources(&sources(&[(k, v)])).unwrap_err();
        assert_eq!(e.setting, k, "{e}");
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn environment_wins_over_the_file() {
    let mut s = Sources::from_toml(
        "poll_interval = \"7s\"\nrooms = [\"a\", \"b\"]\nmax_rps = 3\ninitial_events = true",
    )
    .unwrap();
    s.overlay([("RELAY_POLL_INTERVAL".to_string(), "250ms".to_string())]);
    let c = Config::from_sources(&s).unwrap();
    assert_eq!(c.poll_interval, Duration::from_millis(250));
    assert_eq!(c.rooms, vec!["a", "b"]);
    assert_eq!(c.max_rps, 3);
    assert!(c.initial_events);
}

#[test]
fn unknown_file_keys_are_refused() {
    let e = Sources::from_toml("poll_intervall = \"5s\"").unwrap_err();
    assert_eq!(e.setting, "poll_intervall");
}

#[test]
fn secrets_do_not_debug_print() {
    let c = Config::from_sources(&sources(&[
        ("RELAY_ADMIN_TOKEN", "0123456789abcdef-secret"),
        ("VERRIFLO_ORG_ID", "org-secret-id"),
    ]))
    .unwrap();
    let printed = format!("{c:?}");
    assert!(!printed.contains("secret"), "{printed}");
}

#[test]
fn settings_that_would_hurt_later_are_refused_at_start() {
    for (k, v) in [
        ("RELAY_RETRY_SCHEDULE", "5s,400000years"),
        ("RELAY_DELIVERY_TIMEOUT", "11years"),
        ("VERRIFLO_ORG_ID", "org\u{e9}-\u{1f600}"),
        ("VERRIFLO_API_URL", "https://user:hunter2@api.example.com"),
        ("RELAY_WEBHOOK_PROXY", "socks://x"),
    ] {
        let e = Config::from_sources(&sources(&[(k, v)])).unwrap_err();
        assert_eq!(e.setting, k, "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn secrets_come_from_files_and_errors_never_show_them() {
    let dir = tempfile::TempDir::new().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "from-a-file-0123456789\n").unwrap();
    let org = dir.path().join("org");
    std::fs::write(&org, "org-from-file").unwrap();
    let c = Config::from_sources(&sources(&[
        ("RELAY_ADMIN_TOKEN_FILE", token.to_str().unwrap()),
        ("VERRIFLO_ORG_ID_FILE", org.to_str().unwrap()),
    ]))
    .unwrap();
    let (o, t) = c.require_serve().unwrap();
    assert_eq!(t.expose(), "from-a-file-0123456789");
    assert_eq!(o.expose(), "org-from-file");
    // A bad secret's error names the setting, never the value.
    std::fs::write(&token, "short-secret").unwrap();
    let e = Config::from_sources(&sources(&[(
        "RELAY_ADMIN_TOKEN_FILE",
        token.to_str().unwrap(),
    )]))
    .unwrap_err();
    assert_eq!(e.setting, "RELAY_ADMIN_TOKEN");
    assert!(!e.to_string().contains("short-secret"));
    let e = Config::from_sources(&sources(&[("RELAY_ADMIN_TOKEN_FILE", "/nonexistent/x")]))
        .unwrap_err();
    assert_eq!(e.setting, "RELAY_ADMIN_TOKEN_FILE");
}
