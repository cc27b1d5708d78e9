//! Delivery records in pages: one `D` key holds what a completion batch
//! finished at first attempt for one subscription, so a burst writes a key
//! per batch rather than one per webhook.
//!
//! A page is keyed by its smallest delivery id, and every record in it was
//! queued in the same [`BUCKET_MS`] bucket as that id. So a record is found
//! among the pages of its bucket up to its id, and pages of different
//! buckets never interleave: history reads newest first, bucket by bucket.
//! A pending record is always a page of its own keyed at its id, so the
//! completions that update it write it in place and read nothing.

use super::keys;
use super::model::{Delivery, DeliveryStatus};
use crate::db::{decode, Result, StoreError};
use std::ops::Range;

/// Bucket width: 2^8 ms of queueing time (256 ms).
const BUCKET_BITS: u32 = 8;
#[cfg(test)]
pub const BUCKET_MS: u64 = 1 << BUCKET_BITS;
/// A completion batch's records for one bucket go in pages of at most this many.
const MAX_PAGE: usize = 64;
/// A page's first byte; a record on its own from before pages is JSON (`{`).
const PAGE: u8 = 1;

/// Which bucket a delivery id falls in (ids are ULIDs: 48 bits of ms first).
pub fn bucket(id: u128) -> u128 {
    id >> (80 + BUCKET_BITS)
}

/// The smallest id of `id`'s bucket.
fn bucket_floor(id: u128) -> u128 {
    bucket(id) << (80 + BUCKET_BITS)
}

/// One record to write: its delivery id, status and JSON.
pub struct Record {
    pub id: u128,
    pub status: DeliveryStatus,
    pub json: Vec<u8>,
}

impl Record {
    pub fn of(id: u128, d: &Delivery) -> Self {
        Self {
            id,
            status: d.status,
            json: crate::db::encode(d),
        }
    }
}

/// A stored page: its bytes and where each record lies in them, by id.
#[derive(Clone)]
pub struct Page {
    pub key: sled::IVec,
    bytes: sled::IVec,
    slots: Vec<(u128, DeliveryStatus, Range<usize>)>,
}

impl Page {
    pub fn decode(key: sled::IVec, bytes: sled::IVec) -> Result<Self> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            tree: "outbox",
            detail: format!("delivery page: {detail}"),
        };
        let (_, first) = keys::split_delivery_key(&key).ok_or_else(|| corrupt("key"))?;
        if bytes.first() != Some(&PAGE) {
            // One record, as stores before pages wrote it.
            let d: Delivery = decode("outbox", &bytes)?;
            let slots = vec![(first, d.status, 0..bytes.len())];
            return Ok(Self { key, bytes, slots });
        }
        let mut slots = Vec::new();
        let mut at = 1;
        while at < bytes.len() {
            let head = bytes.get(at..at + 21).ok_or_else(|| corrupt("short"))?;
            let id = u128::from_be_bytes(head[..16].try_into().expect("16 bytes"));
            let status = status_of(head[16]).ok_or_else(|| corrupt("status"))?;
            let len = u32::from_be_bytes(head[17..21].try_into().expect("4 bytes")) as usize;
            let json = at + 21..at + 21 + len;
            if json.end > bytes.len() {
                return Err(corrupt("short"));
            }
            slots.push((id, status, json.clone()));
            at = json.end;
        }
        Ok(Self { key, bytes, slots })
    }

    pub fn ids(&self) -> impl Iterator<Item = (u128, DeliveryStatus)> + '_ {
        self.slots.iter().map(|(id, s, _)| (*id, *s))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn position(&self, id: u128) -> Option<usize> {
        self.slots.binary_search_by_key(&id, |s| s.0).ok()
    }

    pub fn status(&self, id: u128) -> Option<DeliveryStatus> {
        self.position(id).map(|i| self.slots[i].1)
    }

    fn json(&self, i: usize) -> &[u8] {
        &self.bytes[self.slots[i].2.clone()]
    }

    pub fn get(&self, id: u128) -> Result<Option<Delivery>> {
        self.position(id)
            .map(|i| decode("outbox", self.json(i)))
            .transpose()
    }

    /// Every record but those `drop` picks, for writing back.
    pub fn keep(&self, drop: impl Fn(u128, DeliveryStatus) -> bool) -> Vec<Record> {
        (0..self.slots.len())
            .filter(|&i| !drop(self.slots[i].0, self.slots[i].1))
            .map(|i| Record {
                id: self.slots[i].0,
                status: self.slots[i].1,
                json: self.json(i).to_vec(),
            })
            .collect()
    }
}

fn status_of(b: u8) -> Option<DeliveryStatus> {
    [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
    ]
    .get(b as usize)
    .copied()
}

/// A page's value: each record's id, status, length and JSON.
fn encode_page(records: &[Record]) -> Vec<u8> {
    let size = records.iter().map(|r| 21 + r.json.len()).sum::<usize>();
    let mut v = Vec::with_capacity(1 + size);
    v.push(PAGE);
    for r in records {
        v.extend_from_slice(&r.id.to_be_bytes());
        v.push(r.status as u8);
        v.extend_from_slice(&(r.json.len() as u32).to_be_bytes());
        v.extend_from_slice(&r.json);
    }
    v
}

/// Write `records` (none stored yet) of `sub`: a page per bucket, in
/// pages of at most [`MAX_PAGE`].
pub fn put_new(batch: &mut sled::Batch, sub: &str, mut records: Vec<Record>) {
    records.sort_by_key(|r| r.id);
    for group in records.chunk_by(|a, b| bucket(a.id) == bucket(b.id)) {
        for page in group.chunks(MAX_PAGE) {
            batch.insert(keys::delivery_key(sub, page[0].id), encode_page(page));
        }
    }
}

/// Write one record as a page of its own at its id (a pending record, or
/// one just taken out of its page).
pub fn put_single(batch: &mut sled::Batch, sub: &str, record: Record) {
    let key = keys::delivery_key(sub, record.id);
    batch.insert(key, encode_page(&[record]));
}

/// Write what is left of `page` after taking records out: under its
/// smallest remaining id, or nothing.
pub fn rewrite(batch: &mut sled::Batch, sub: &str, page: &Page, left: Vec<Record>) {
    if left.len() == page.len() {
        return;
    }
    batch.remove(page.key.clone());
    if let Some(first) = left.first() {
        batch.insert(keys::delivery_key(sub, first.id), encode_page(&left));
    }
}

/// The page that holds `id`'s record, if any.
pub fn find(tree: &sled::Tree, sub: &str, id: u128) -> Result<Option<Page>> {
    let range = keys::delivery_key(sub, bucket_floor(id))..=keys::delivery_key(sub, id);
    for item in tree.range(range).rev() {
        let (k, v) = item?;
        let page = Page::decode(k, v)?;
        if page.position(id).is_some() {
            return Ok(Some(page));
        }
    }
    Ok(None)
}

/// `id`'s record, if it has one.
pub fn record(tree: &sled::Tree, sub: &str, id: u128) -> Result<Option<Delivery>> {
    match find(tree, sub, id)? {
        Some(page) => page.get(id),
        None => Ok(None),
    }
}

/// A subscription's records below `before`, newest first: a bucket's
/// pages are read together and their records sorted.
pub struct Newest {
    pages: std::iter::Rev<sled::Iter>,
    /// The first page of the next bucket, read while finishing this one.
    ahead: Option<Page>,
    before: u128,
    /// The current bucket's records, oldest first (taken from the back).
    records: Vec<(u128, DeliveryStatus, usize)>,
    read: Vec<Page>,
}

impl Newest {
    pub fn new(tree: &sled::Tree, sub: &str, before: u128) -> Self {
        let range = keys::deliveries_prefix(sub)..keys::delivery_key(sub, before);
        Self {
            pages: tree.range(range).rev(),
            ahead: None,
            before,
            records: Vec::new(),
            read: Vec::new(),
        }
    }

    fn next_page(&mut self) -> Result<Option<Page>> {
        if let Some(p) = self.ahead.take() {
            return Ok(Some(p));
        }
        match self.pages.next().transpose()? {
            Some((k, v)) => Ok(Some(Page::decode(k, v)?)),
            None => Ok(None),
        }
    }

    /// Read the next bucket that holds records below `before`.
    fn fill(&mut self) -> Result<()> {
        while self.records.is_empty() {
            self.read.clear();
            let Some(first) = self.next_page()? else {
                return Ok(());
            };
            let b = first.slots.first().map_or(0, |s| bucket(s.0));
            self.read.push(first);
            while let Some(p) = self.next_page()? {
                if p.slots.first().map_or(0, |s| bucket(s.0)) != b {
                    self.ahead = Some(p);
                    break;
                }
                self.read.push(p);
            }
            for (n, page) in self.read.iter().enumerate() {
                let below = page.slots.iter().filter(|s| s.0 < self.before);
                self.records.extend(below.map(|s| (s.0, s.1, n)));
            }
            self.records.sort_unstable_by_key(|r| r.0);
        }
        Ok(())
    }

    /// The next record's id and status, without reading its JSON.
    pub fn next_status(&mut self) -> Result<Option<(u128, DeliveryStatus)>> {
        self.fill()?;
        Ok(self.records.pop().map(|(id, s, _)| (id, s)))
    }

    /// The next record's id and status, left in place.
    pub fn peek(&mut self) -> Result<Option<(u128, DeliveryStatus)>> {
        self.fill()?;
        Ok(self.records.last().map(|r| (r.0, r.1)))
    }

    pub fn next_record(&mut self) -> Result<Option<Delivery>> {
        self.fill()?;
        let Some((id, _, n)) = self.records.pop() else {
            return Ok(None);
        };
        self.read[n].get(id)
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
