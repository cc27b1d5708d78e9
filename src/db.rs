//! What the store and the outbox share over sled: the error type and the JSON record coding.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store flush interrupted: {0}")]
    Interrupted(String),
    #[error("store holds an unreadable record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("database: {0}")]
    Database(String),
}

impl<E: Into<StoreError>> From<sled::transaction::TransactionError<E>> for StoreError {
    fn from(e: sled::transaction::TransactionError<E>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e.into(),
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

impl StoreError {
    /// The disk refused a read or write (full, read-only, gone).
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(_)))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub fn decode<T: serde::de::DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}
