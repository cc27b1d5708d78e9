//! Cluster mode on PostgreSQL (`RELAY_DATABASE_URL`): the schema, the
//! shared store and outbox, and room leases with epoch fencing.
//!
//! tokio-postgres with deadpool's pool, not sqlx: the relay needs
//! LISTEN/NOTIFY on a connection of its own, statements prepared once per
//! connection, and no compile-time database; tokio-postgres gives exactly
//! that with few dependencies, and deadpool adds only the pool.

mod events;
pub mod lease;
mod listen;
mod outbox;
mod rooms;
pub mod schema;
mod store;

pub use store::PgStore;

#[cfg(test)]
mod tests;

/// Whether the URL asks for TLS (`sslmode=require`). Then it is checked
/// against Mozilla's roots, as the upstream client is; `prefer` (the
/// default) and `disable` connect in plain text, for loopback and private
/// networks, where a server's self-signed certificate would fail the check.
pub(crate) fn wants_tls(config: &tokio_postgres::Config) -> bool {
    config.get_ssl_mode() == tokio_postgres::config::SslMode::Require
}

/// TLS for the database (see [`wants_tls`]).
pub(crate) fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    use hyper_rustls::ConfigBuilderExt;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports rustls' default protocol versions")
    .with_webpki_roots()
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

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
