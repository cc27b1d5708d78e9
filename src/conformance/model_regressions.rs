//! Fixed operation sequences that once broke a lane, each a test on both backends.

use super::*;

async fn world(h: Harness) -> World {
    World::new(h).await
}

super::super::on_both!(
    a_test_parked_on_a_failing_endpoint_never_holds_up_the_next,
    parked
);
async fn parked(h: Harness) {
    let mut w = world(h).await;
    w.apply(Op::Test(0)).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    w.apply(Op::Complete(0, 2)).await.unwrap(); // retrying in 5 s
    w.apply(Op::Test(0)).await.unwrap();
    let claims = w.db().claim(w.now, 5).await.unwrap();
    assert_eq!(claims.len(), 1, "the new test goes out now");
    assert!(claims[0].delivery.attempts.is_empty());
}

super::super::on_both!(a_retry_behind_a_retrying_head_goes_first, retry_first);
async fn retry_first(h: Harness) {
    let mut w = world(h).await;
    // Event 1 fails for good; event 2 is retrying when 1 is retried by hand.
    w.apply(Op::Poll(0)).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    w.apply(Op::Complete(0, 1)).await.unwrap();
    w.apply(Op::Poll(0)).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    w.apply(Op::Complete(0, 2)).await.unwrap();
    w.apply(Op::Retry(0)).await.unwrap();
    w.apply(Op::Advance(10)).await.unwrap();
    let claims = w.db().claim(w.now, 5).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        claims[0].delivery.sequence,
        Some(1),
        "the retried event goes first"
    );
    w.in_flight.extend(claims);
    w.apply(Op::Complete(0, 0)).await.unwrap();
    w.apply(Op::Advance(10)).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    assert_eq!(w.in_flight[0].delivery.sequence, Some(2));
    w.apply(Op::Complete(0, 0)).await.unwrap();
    assert_eq!(w.db().pending().await.unwrap().0, 0);
}

super::super::on_both!(
    replay_then_retry_of_one_event_leaves_nothing_stuck,
    replay_retry
);
async fn replay_retry(h: Harness) {
    let mut w = world(h).await;
    w.apply(Op::Poll(0)).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    w.apply(Op::Complete(0, 1)).await.unwrap();
    w.apply(Op::Replay(0)).await.unwrap();
    let failed = w
        .all_deliveries()
        .await
        .into_iter()
        .find(|d| d.status == DeliveryStatus::Failed)
        .unwrap();
    assert!(matches!(
        w.db()
            .retry(&failed.subscription_id, &failed.id)
            .await
            .unwrap(),
        crate::outbox::Retried::AlreadyQueued(_)
    ));
    w.apply(Op::Poll(0)).await.unwrap();
    for _ in 0..2 {
        w.apply(Op::Claim(1)).await.unwrap();
        w.apply(Op::Complete(0, 0)).await.unwrap();
    }
    assert_eq!(w.db().pending().await.unwrap().0, 0);
}

super::super::on_both!(
    a_disabled_subscription_does_not_pin_retention,
    disabled_retention
);
async fn disabled_retention(h: Harness) {
    let mut w = world(h).await;
    w.apply(Op::Poll(0)).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    w.apply(Op::Complete(0, 3)).await.unwrap(); // 410: disabled, delivery held
    let s = w.db().subscription("sub_00").await.unwrap().unwrap();
    assert!(!s.enabled);
    w.apply(Op::Poll(0)).await.unwrap(); // not queued for the disabled one
    w.apply(Op::Poll(1)).await.unwrap();
    w.apply(Op::Prune).await.unwrap(); // checks that only the held event stays
    assert_eq!(w.db().pending().await.unwrap().0, 1);
    assert_eq!(w.db().deliverable().await.unwrap(), 0);
}

super::super::on_both!(a_retry_among_a_commits_events_joins_their_run, retry_in_run);
async fn retry_in_run(h: Harness) {
    let mut w = world(h).await;
    // Two changes, then the class ends: one commit of three events (3 to 5).
    for _ in 0..3 {
        w.apply(Op::Poll(0)).await.unwrap();
    }
    for v in [0, 0, 0, 1] {
        w.apply(Op::Claim(1)).await.unwrap();
        w.apply(Op::Complete(0, v)).await.unwrap();
    }
    // Event 4 failed for good, 5 waits: 4 goes back among them, first.
    w.apply(Op::Retry(0)).await.unwrap();
    for sequence in [4, 5] {
        w.apply(Op::Claim(1)).await.unwrap();
        assert_eq!(w.in_flight[0].delivery.sequence, Some(sequence));
        w.apply(Op::Complete(0, 0)).await.unwrap();
    }
    assert_eq!(w.db().pending().await.unwrap().0, 0);
}

super::super::on_both!(
    finished_entries_left_in_their_run_stay_finished,
    finished_in_run
);
async fn finished_in_run(h: Harness) {
    let mut w = world(h).await;
    for _ in 0..3 {
        w.apply(Op::Poll(0)).await.unwrap();
    }
    // 3 of the run 3 to 5 is sent; the run still waits for 4 and 5.
    for _ in 0..3 {
        w.apply(Op::Claim(1)).await.unwrap();
        w.apply(Op::Complete(0, 0)).await.unwrap();
    }
    // A crash: 3 is not sent again.
    w.apply(Op::Reopen).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    assert_eq!(w.in_flight[0].delivery.sequence, Some(4));
    w.apply(Op::Complete(0, 0)).await.unwrap();
    // 4's record goes with retention, then a crash: 4 is not sent again.
    w.apply(Op::Advance(29)).await.unwrap();
    w.apply(Op::Prune).await.unwrap();
    w.apply(Op::Reopen).await.unwrap();
    w.apply(Op::Claim(1)).await.unwrap();
    assert_eq!(w.in_flight[0].delivery.sequence, Some(5));
    w.apply(Op::Complete(0, 0)).await.unwrap();
    assert_eq!(w.db().pending().await.unwrap().0, 0);
}

super::super::on_both!(
    retention_cuts_between_deliveries_finished_together,
    cut_between
);
async fn cut_between(h: Harness) {
    let mut w = world(h).await;
    // Two deliveries queued 100 ms apart, 10 ms into a 256 ms span (on
    // sled, one bucket: their records share a page), finished together
    // (one sent, one failed for good).
    let ms = w.now.timestamp_millis() / 256 * 256 + 256 + 10;
    let t0 = DateTime::from_timestamp_millis(ms).unwrap();
    w.now = t0;
    w.apply(Op::Poll(0)).await.unwrap();
    w.now = t0 + Duration::milliseconds(100);
    w.apply(Op::Poll(1)).await.unwrap();
    w.apply(Op::Claim(2)).await.unwrap();
    w.apply(Op::CompleteAll(0)).await.unwrap();
    let sent: Vec<String> = w
        .all_deliveries()
        .await
        .into_iter()
        .filter(|d| d.status != DeliveryStatus::Pending)
        .map(|d| d.room_id.unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    // Retention's cutoff falls between them: the older goes, the newer stays.
    let retention = std::time::Duration::from_secs(86400);
    let at = t0 + Duration::milliseconds(50) + Duration::days(1);
    crate::retention::prune_once(w.db(), at, retention)
        .await
        .unwrap();
    let kept: Vec<Delivery> = w
        .all_deliveries()
        .await
        .into_iter()
        .filter(|d| d.status != DeliveryStatus::Pending)
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].room_id.as_deref(), Some(ROOMS[1]));
    let again = w.db().delivery(&kept[0].subscription_id, &kept[0].id).await;
    assert_eq!(again.unwrap().as_ref(), Some(&kept[0]));
    w.apply(Op::Reopen).await.unwrap();
}
