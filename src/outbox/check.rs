//! The outbox's invariants, checked from scratch against its disk (tests only).

use super::index::LaneId;
use super::model::DeliveryStatus;
use super::{history, keys, Outbox};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every invariant that ties the disk to the index, read from scratch.
pub(crate) fn check(outbox: &Outbox) -> Result<(), String> {
    let tree = &outbox.inner.tree;
    let state = outbox.lock();
    let subs: BTreeSet<String> = state.subs.keys().cloned().collect();
    let mut records = HashMap::new();
    for item in tree.scan_prefix([keys::DELIVERY]) {
        let (k, v) = item.unwrap();
        let (sub, first) = keys::split_delivery_key(&k).ok_or("bad delivery key")?;
        let sub = sub.to_string();
        let page = history::Page::decode(k, v).map_err(|e| e.to_string())?;
        let ids: Vec<_> = page.ids().collect();
        // A page: keyed by its smallest id, in order, one bucket; a
        // pending record only ever on its own.
        let sorted = ids.windows(2).all(|w| w[0].0 < w[1].0);
        let one_bucket = ids
            .iter()
            .all(|(i, _)| history::bucket(*i) == history::bucket(first));
        let lone_pending = ids.len() == 1 || ids.iter().all(|(_, s)| *s != DeliveryStatus::Pending);
        if ids.first().map(|i| i.0) != Some(first) || !sorted || !one_bucket || !lone_pending {
            return Err(format!("bad delivery page at {first}: {ids:?}"));
        }
        for (dk, _) in ids {
            let d = page.get(dk).unwrap().unwrap();
            if !subs.contains(&sub) || d.subscription_id != sub {
                return Err(format!("orphan delivery {}", d.id));
            }
            if records.insert(dk, d).is_some() {
                return Err(format!("two records of {dk}"));
            }
        }
    }
    let mut lanes: BTreeMap<LaneId, Vec<super::index::Entry>> = BTreeMap::new();
    let mut events_needed = BTreeSet::new();
    let mut deliveries = HashMap::new();
    let mut entries = Vec::new();
    for item in tree.scan_prefix([keys::LANE]) {
        let (k, v) = item.unwrap();
        let (lane, at) = keys::split_lane_key(&k).ok_or("bad lane key")?;
        let run = keys::decode_run(at, &v).ok_or("bad lane run")?;
        // A run is never empty, holds its entries in order from its key's,
        // and ends before the lane's next run starts.
        let Some(first) = run.first() else {
            return Err(format!("empty run in {lane:?}"));
        };
        // Finished entries wait only in runs with more to send.
        if run.iter().all(|e| state.index.is_done(&lane, e.order)) {
            return Err(format!("run at {at} of {lane:?} has nothing to send"));
        }
        let after_last = entries
            .last()
            .is_some_and(|(l, e): &(LaneId, super::index::Entry)| l == &lane && e.order >= at);
        if first.order < at || after_last || run.windows(2).any(|w| w[0].order >= w[1].order) {
            return Err(format!("run at {at} of {lane:?} out of order: {run:?}"));
        }
        entries.extend(run.into_iter().map(|e| (lane.clone(), e)));
    }
    let on_disk: BTreeSet<(LaneId, u128)> =
        entries.iter().map(|(l, e)| (l.clone(), e.order)).collect();
    if let Some(gone) = state
        .index
        .done_entries()
        .into_iter()
        .find(|d| !on_disk.contains(d))
    {
        return Err(format!(
            "the index holds {gone:?} finished, and no run does"
        ));
    }
    for (lane, e) in entries {
        if !subs.contains(&*lane.sub) {
            return Err("orphan lane entry".into());
        }
        if state.index.is_done(&lane, e.order) {
            match records.get(&e.delivery) {
                Some(d) if d.status != DeliveryStatus::Pending => continue,
                other => return Err(format!("finished entry {e:?} whose record is {other:?}")),
            }
        }
        let d = match records.get(&e.delivery) {
            Some(d) => d.clone(),
            None => super::pending_delivery(&lane, &e),
        };
        if d.status != DeliveryStatus::Pending || super::lane_of(&d) != lane {
            return Err(format!("lane entry for {} which is {:?}", d.id, d.status));
        }
        events_needed.insert(e.event);
        lanes.entry(lane.clone()).or_default().push(e);
        if let Some(other) = deliveries.insert(e.delivery, d) {
            return Err(format!(
                "two lane entries of delivery {} ({lane:?}, {other:?})",
                e.delivery
            ));
        }
    }
    for (dk, d) in records {
        if d.status == DeliveryStatus::Pending && !deliveries.contains_key(&dk) {
            return Err(format!("pending delivery {} is in no lane", d.id));
        }
        deliveries.entry(dk).or_insert(d);
    }
    let pending: Vec<_> = deliveries
        .values()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    let in_lanes: usize = lanes.values().map(Vec::len).sum();
    if pending.len() != in_lanes {
        return Err(format!("{} pending, {} in lanes", pending.len(), in_lanes));
    }
    if state.index.pending() != pending.len() as u64 {
        return Err(format!(
            "pending figure {} but {} pending",
            state.index.pending(),
            pending.len()
        ));
    }
    for s in &subs {
        let n = pending.iter().filter(|d| &d.subscription_id == s).count() as u64;
        if state.index.pending_of(s) != n {
            return Err(format!(
                "pending of {s}: {} vs {n}",
                state.index.pending_of(s)
            ));
        }
    }
    let oldest = pending.iter().map(|d| super::ms(d.created_at)).min();
    let oldest_index = state.index.oldest_ms();
    if oldest.is_some() != oldest_index.is_some() {
        return Err("oldest figure disagrees".into());
    }
    for ek in &events_needed {
        if !state.index.needs(*ek) {
            return Err("an event a delivery needs is not marked needed".into());
        }
    }
    let mut seen = 0;
    for (lane, head, len, due) in state.index.lanes() {
        seen += 1;
        let on_disk = lanes.get(lane).map(Vec::as_slice).unwrap_or(&[]);
        if on_disk.len() as u64 != len {
            return Err(format!("lane {lane:?}: len {len} vs {}", on_disk.len()));
        }
        let in_flight = state.index.is_in_flight(lane);
        let enabled = state.subs.get(&*lane.sub).is_some_and(|t| t.sub.enabled);
        match (head, on_disk.first()) {
            (Some(h), Some(first)) if in_flight => {
                if !on_disk.contains(&h) {
                    return Err("in-flight head not on disk".into());
                }
                let _ = first;
            }
            (Some(h), Some(first)) if h == *first => {}
            (None, None) if in_flight => {}
            other => return Err(format!("lane {lane:?}: head {other:?}")),
        }
        // Reachable: due, in flight, or held with a disabled subscription.
        if due != (enabled && !in_flight) {
            return Err(format!(
                "lane {lane:?}: due {due}, enabled {enabled}, in flight {in_flight}"
            ));
        }
    }
    if seen < lanes.len() {
        return Err("a lane on disk is missing from the index".into());
    }
    Ok(())
}
