//! Room ownership across relays: a membership table with heartbeats, and one
//! lease row per room whose epoch grows with every change of owner (the
//! fencing token a poll's commit must still hold).
//!
//! Each round an instance renews what it holds, then moves towards its fair
//! share, `ceil(rooms / live members)`: it hands back what is over, or claims
//! free and expired leases with `FOR UPDATE SKIP LOCKED`, so instances
//! claiming at once never wait on each other. A dead instance's leases
//! expire after the TTL and are claimed by the others; one that stops
//! cleanly hands its rooms back at once.

use std::time::Duration;
use tokio_postgres::Client;

/// One room this instance polls, and the epoch its commits must carry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owned {
    pub room: String,
    pub epoch: i64,
}

/// What one round came to.
#[derive(Debug, Default, PartialEq)]
pub struct Round {
    /// Every room held after the round, in room order.
    pub owned: Vec<Owned>,
    /// Rooms claimed from another instance whose lease had expired.
    pub taken_over: usize,
    /// Rooms handed back because this instance held more than its share.
    pub handed_back: usize,
}

pub struct Leases {
    instance: String,
    ttl: Duration,
}

impl Leases {
    pub fn new(instance: impl Into<String>, ttl: Duration) -> Self {
        Self {
            instance: instance.into(),
            ttl,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Heartbeat, renew, then hand back or claim towards the fair share.
    /// Run it well within the TTL (a third of it, say).
    pub async fn round(&self, client: &mut Client) -> Result<Round, tokio_postgres::Error> {
        let me = self.instance.as_str();
        let ttl = self.ttl.as_secs_f64();
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO relay_members (instance, heartbeat_at, started_at) VALUES ($1, now(), now())
             ON CONFLICT (instance) DO UPDATE SET heartbeat_at = now()",
            &[&me],
        )
        .await?;
        let members: i64 = tx
            .query_one(
                "SELECT count(*) FROM relay_members WHERE heartbeat_at > now() - make_interval(secs => $1)",
                &[&ttl],
            )
            .await?
            .get(0);
        let rooms: i64 = tx
            .query_one("SELECT count(*) FROM relay_leases", &[])
            .await?
            .get(0);
        let share = fair_share(rooms, members);
        let mut owned: Vec<Owned> = tx
            .query(
                "UPDATE relay_leases SET expires_at = now() + make_interval(secs => $2)
                 WHERE owner = $1 AND expires_at > now() RETURNING room_id, epoch",
                &[&me, &ttl],
            )
            .await?
            .iter()
            .map(|r| Owned {
                room: r.get(0),
                epoch: r.get(1),
            })
            .collect();
        owned.sort();
        let mut round = Round::default();
        if owned.len() as i64 > share {
            let extra: Vec<String> = owned
                .split_off(share as usize)
                .into_iter()
                .map(|o| o.room)
                .collect();
            round.handed_back = tx
                .execute(
                    "UPDATE relay_leases SET owner = NULL, expires_at = '-infinity'
                     WHERE owner = $1 AND room_id = ANY($2)",
                    &[&me, &extra],
                )
                .await? as usize;
        } else if (owned.len() as i64) < share {
            let want = share - owned.len() as i64;
            let claimed = tx
                .query(
                    "WITH free AS (
                        SELECT room_id, owner AS was FROM relay_leases
                        WHERE owner IS NULL OR expires_at <= now()
                        ORDER BY room_id LIMIT $3 FOR UPDATE SKIP LOCKED)
                     UPDATE relay_leases l
                     SET owner = $1, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => $2)
                     FROM free WHERE l.room_id = free.room_id
                     RETURNING l.room_id, l.epoch, free.was",
                    &[&me, &ttl, &want],
                )
                .await?;
            for row in claimed {
                let was: Option<String> = row.get(2);
                if was.is_some_and(|w| w != me) {
                    round.taken_over += 1;
                }
                owned.push(Owned {
                    room: row.get(0),
                    epoch: row.get(1),
                });
            }
            owned.sort();
        }
        tx.commit().await?;
        round.owned = owned;
        Ok(round)
    }

    /// A clean stop: every room goes back at once, and this instance
    /// leaves the membership, so the others' share grows in their next round.
    pub async fn leave(&self, client: &mut Client) -> Result<u64, tokio_postgres::Error> {
        let me = self.instance.as_str();
        let tx = client.transaction().await?;
        let handed = tx
            .execute(
                "UPDATE relay_leases SET owner = NULL, expires_at = '-infinity' WHERE owner = $1",
                &[&me],
            )
            .await?;
        tx.execute("DELETE FROM relay_members WHERE instance = $1", &[&me])
            .await?;
        tx.commit().await?;
        Ok(handed)
    }
}

/// Rooms per live instance, rounded up so every room has a taker.
pub fn fair_share(rooms: i64, members: i64) -> i64 {
    let members = members.max(1);
    (rooms + members - 1) / members
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn every_room_has_a_taker() {
        assert_eq!(fair_share(300, 3), 100);
        assert_eq!(fair_share(301, 3), 101);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5, "alone before the first heartbeat");
    }
}
