//! The cluster's PostgreSQL schema, as ordered migrations applied at start-up
//! under an advisory lock, so relays starting together apply each once.

use tokio_postgres::Client;

/// Every migration, in order; a released one is never edited, only followed.
const MIGRATIONS: &[&str] = &[
    // 1: membership, rooms with their versioned snapshot, leases, events.
    r#"
    CREATE TABLE relay_members (
        instance      TEXT PRIMARY KEY,
        heartbeat_at  TIMESTAMPTZ NOT NULL,
        started_at    TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE relay_rooms (
        room_id          TEXT PRIMARY KEY,
        watched_since    TIMESTAMPTZ,
        snapshot         JSONB,
        sequence         BIGINT NOT NULL DEFAULT 0,
        version          BIGINT NOT NULL DEFAULT 0,
        last_changed_at  TIMESTAMPTZ,
        schedule         JSONB NOT NULL DEFAULT '[]',
        poll_history     JSONB
    );
    -- One row per watched room: who polls it, under which epoch, until when.
    -- The epoch grows with every change of owner: it fences a stale one.
    CREATE TABLE relay_leases (
        room_id     TEXT PRIMARY KEY REFERENCES relay_rooms (room_id) ON DELETE CASCADE,
        owner       TEXT,
        epoch       BIGINT NOT NULL DEFAULT 0,
        expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
    );
    CREATE INDEX relay_leases_owner ON relay_leases (owner);
    -- Events keep the webhook body's exact bytes; ids are ULIDs, so their
    -- order is emission order.
    CREATE TABLE relay_events (
        id          TEXT PRIMARY KEY COLLATE "C",
        room_id     TEXT,
        sequence    BIGINT,
        type        TEXT NOT NULL,
        body        BYTEA NOT NULL,
        UNIQUE (room_id, sequence)
    );
    CREATE INDEX relay_events_room ON relay_events (room_id, id);
    "#,
    // 2: the outbox. A lane is one subscription's deliveries of one room,
    // sent in sequence order; a lane row says when its head is due and who
    // holds it in flight, until when (a dead holder's claim expires).
    r#"
    CREATE TABLE relay_subscriptions (
        id       TEXT PRIMARY KEY COLLATE "C",
        body     JSONB NOT NULL,
        enabled  BOOLEAN NOT NULL
    );
    CREATE TABLE relay_deliveries (
        id               TEXT PRIMARY KEY COLLATE "C",
        subscription_id  TEXT NOT NULL REFERENCES relay_subscriptions (id) ON DELETE CASCADE,
        event_id         TEXT NOT NULL COLLATE "C",
        lane             TEXT NOT NULL,
        sequence         BIGINT NOT NULL,
        status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        created_at       TIMESTAMPTZ NOT NULL,
        record           JSONB NOT NULL
    );
    -- A lane holds an event once: a replay skips what is still queued.
    CREATE UNIQUE INDEX relay_deliveries_queued ON relay_deliveries (subscription_id, event_id)
        WHERE status = 'pending';
    CREATE INDEX relay_deliveries_head ON relay_deliveries (subscription_id, lane, sequence)
        WHERE status = 'pending';
    CREATE INDEX relay_deliveries_sub ON relay_deliveries (subscription_id, id);
    CREATE INDEX relay_deliveries_event ON relay_deliveries (event_id) WHERE status = 'pending';
    CREATE TABLE relay_lanes (
        subscription_id  TEXT NOT NULL REFERENCES relay_subscriptions (id) ON DELETE CASCADE,
        lane             TEXT NOT NULL,
        due_at           TIMESTAMPTZ,
        claimed_by       TEXT,
        claim_until      TIMESTAMPTZ,
        PRIMARY KEY (subscription_id, lane)
    );
    CREATE INDEX relay_lanes_due ON relay_lanes (due_at) WHERE due_at IS NOT NULL;
    "#,
];

/// The lock every relay takes to migrate: one at a time.
const MIGRATION_LOCK: i64 = 0x7265_6c61_7901;

/// Bring the schema up to date; returns how many migrations ran.
pub async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS relay_schema (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let done: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM relay_schema", &[])
        .await?
        .get(0);
    let mut ran = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql).await?;
        let version = i as i32 + 1;
        tx.execute(
            "INSERT INTO relay_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}
