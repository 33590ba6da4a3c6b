//! Why a chunk could not be read, by kind: the store failed, the bytes are not a chunk, the
//! chunk changed between two reads, or the source is gone (a missing chunk whose array no
//! longer answers either). Cloned, so that one decode shared by many readers gives each the
//! same error.

/// Why one chunk could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The store answered with an error, after its retries (unreachable, denied, timed out,
    /// a server error); the store's message, shortened.
    #[error("{0}")]
    Store(String),
    /// The bytes are not a valid chunk of the array (codec or size).
    #[error("{0}")]
    Corrupt(String),
    /// The chunk changed or vanished between two reads of its parts.
    #[error("the chunk changed or vanished between two reads")]
    Changed,
    /// The chunk does not exist, and neither do its array's metadata nor the store's root:
    /// the source is gone or not at this address.
    #[error(
        "the chunk does not exist, and neither do {array_key} nor {root_key}: the source is \
         gone or not at this address (a moved directory, a wrong prefix, a denial turned into \
         404); refusing to read the chunk as missing data"
    )]
    SourceGone {
        /// The array's `.zarray` key.
        array_key: String,
        /// The store's `.zmetadata` key.
        root_key: String,
    },
    /// The chunk does not exist, and asking whether its array still does failed.
    #[error("the chunk does not exist, and asking whether {key} still does failed: {message}")]
    ExistenceUnknown {
        /// The key asked about.
        key: String,
        /// The store's message.
        message: String,
    },
    /// The read ended without an answer (its task panicked or was cancelled).
    #[error("the read task failed: {0}")]
    Task(String),
}

impl ChunkError {
    /// A store error, described as the source layer describes them.
    pub(crate) fn store(e: &(dyn std::error::Error + 'static)) -> Self {
        ChunkError::Store(crate::source::store::describe_error(e))
    }
}
