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
