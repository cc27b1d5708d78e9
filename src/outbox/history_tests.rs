//! Pages of delivery records: found, read newest first, taken apart.

use super::*;
use crate::outbox::model::Attempt;
use chrono::Utc;

fn id(ms: u64, n: u128) -> u128 {
    crate::ids::floor_of_ms(ms) + n
}

fn delivery(dk: u128, status: DeliveryStatus) -> Delivery {
    Delivery {
        id: crate::ids::delivery_id(dk),
        subscription_id: "s".into(),
        event_id: crate::ids::event_id(dk),
        event_type: "room.started".into(),
        room_id: Some("r".into()),
        sequence: Some(1),
        status,
        attempts: vec![Attempt {
            at: Utc::now(),
            status_code: Some(200),
            error: None,
            duration_ms: 1,
            response: None,
        }],
        schedule_start: 0,
        created_at: Utc::now(),
        next_attempt_at: None,
    }
}

fn put(tree: &sled::Tree, ids: &[u128]) {
    let mut batch = sled::Batch::default();
    let records = ids
        .iter()
        .map(|&i| Record::of(i, &delivery(i, DeliveryStatus::Succeeded)))
        .collect();
    put_new(&mut batch, "s", records);
    tree.apply_batch(batch).unwrap();
}

fn newest(tree: &sled::Tree, before: u128) -> Vec<u128> {
    let mut it = Newest::new(tree, "s", before);
    let mut out = Vec::new();
    while let Some(d) = it.next_record().unwrap() {
        out.push(crate::ids::delivery_key(&d.id).unwrap());
    }
    out
}

#[test]
fn pages_split_by_bucket_find_each_record_and_read_newest_first() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let b = BUCKET_MS;
    // Two batches whose records interleave within a bucket, one that
    // spans two buckets, and another subscription's page between.
    put(&tree, &[id(10 * b, 1), id(10 * b, 5), id(11 * b + 3, 0)]);
    put(&tree, &[id(10 * b, 3), id(10 * b + 9, 0)]);
    let mut other = sled::Batch::default();
    put_new(
        &mut other,
        "t",
        vec![Record::of(
            id(10 * b, 2),
            &delivery(1, DeliveryStatus::Failed),
        )],
    );
    tree.apply_batch(other).unwrap();
    assert_eq!(tree.scan_prefix(keys::deliveries_prefix("s")).count(), 3);
    let all = [
        id(11 * b + 3, 0),
        id(10 * b + 9, 0),
        id(10 * b, 5),
        id(10 * b, 3),
        id(10 * b, 1),
    ];
    assert_eq!(newest(&tree, u128::MAX), all);
    assert_eq!(newest(&tree, id(10 * b, 5)), all[3..]);
    for i in all {
        let d = record(&tree, "s", i).unwrap().expect("found");
        assert_eq!(d.id, crate::ids::delivery_id(i));
    }
    assert!(record(&tree, "s", id(10 * b, 2)).unwrap().is_none());
    assert!(record(&tree, "s", id(10 * b, 4)).unwrap().is_none());

    // Taking a record out leaves the rest under its smallest id.
    let page = find(&tree, "s", id(10 * b, 1)).unwrap().unwrap();
    let mut batch = sled::Batch::default();
    let left = page.keep(|i, _| i == id(10 * b, 1));
    rewrite(&mut batch, "s", &page, left);
    let moved = delivery(id(10 * b, 1), DeliveryStatus::Pending);
    let moved = Record::of(id(10 * b, 1), &moved);
    put_single(&mut batch, "s", moved);
    tree.apply_batch(batch).unwrap();
    assert_eq!(newest(&tree, u128::MAX), all);
    let single = find(&tree, "s", id(10 * b, 1)).unwrap().unwrap();
    assert_eq!(
        (single.len(), single.status(id(10 * b, 1))),
        (1, Some(DeliveryStatus::Pending))
    );
    assert_eq!(find(&tree, "s", id(10 * b, 5)).unwrap().unwrap().len(), 1);
}

#[test]
fn a_record_from_before_pages_reads_as_a_page_of_one() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let dk = id(5 * BUCKET_MS, 7);
    let d = delivery(dk, DeliveryStatus::Failed);
    tree.insert(keys::delivery_key("s", dk), crate::db::encode(&d))
        .unwrap();
    let page = find(&tree, "s", dk).unwrap().unwrap();
    assert_eq!(page.status(dk), Some(DeliveryStatus::Failed));
    assert_eq!(page.get(dk).unwrap(), Some(d));
    assert_eq!(newest(&tree, u128::MAX), [dk]);
}

#[test]
fn a_long_batch_goes_in_pages_of_at_most_max_page() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let ids: Vec<u128> = (0..150).map(|n| id(BUCKET_MS, n)).collect();
    put(&tree, &ids);
    assert_eq!(tree.scan_prefix(keys::deliveries_prefix("s")).count(), 3);
    let mut rev = ids.clone();
    rev.reverse();
    assert_eq!(newest(&tree, u128::MAX), rev);
}
