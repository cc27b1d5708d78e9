//! Cluster mode on PostgreSQL (`RELAY_DATABASE_URL`): the schema, the
//! shared store and outbox, and room leases with epoch fencing.

pub mod lease;
mod listen;
mod outbox;
pub mod schema;
mod store;

pub use store::PgStore;

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
