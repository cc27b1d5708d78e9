//! Cluster mode on PostgreSQL, in progress (issue 13): the schema, room
//! leases with epoch fencing, the fenced poll commit, and delivery lanes
//! claimed across instances. Not yet wired into the relay: `app` still runs
//! on sled alone.

pub mod lanes;
pub mod lease;
pub mod rooms;
pub mod schema;

#[cfg(test)]
mod tests;

/// Connect without TLS (loopback and private networks) and drive the
/// connection on a task of its own.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}
