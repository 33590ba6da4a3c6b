//! What a tier behind the local cache offers: files known by a [`Key`], copied from the tier
//! into the local cache ([`Tier::get`]) and put into it from the local cache's checked
//! entries ([`Tier::put`]). The S3 bucket ([`super::s3::RemoteCache`]) is one; tests can make
//! others.

use std::sync::Arc;

use async_trait::async_trait;
use zarrs_object_store::object_store;

use super::{CachedFile, LocalCache};

/// What every tier knows a finished file by: its identity (the hash of what defines its
/// bytes) and its exact size. A tier holding the identity at another size holds a wrong file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<'a> {
    /// The file's identity (32 hex digits).
    pub identity: &'a str,
    /// Its exact size in bytes.
    pub size: u64,
}

impl<'a> Key<'a> {
    /// The version of the file format every key's file is written in: each tier keeps its
    /// files under it (`v<FORMAT_VERSION>`), so a new version leaves older files unused.
    pub const FORMAT_VERSION: u32 = crate::encode::FORMAT_VERSION;

    /// The key of `identity` at `size` bytes.
    pub fn new(identity: &'a str, size: u64) -> Self {
        Key { identity, size }
    }
}

/// An operation of a tier behind the local cache failed (the S3 tier's words: every such
/// tier is a bucket).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The configuration is unusable (unknown profile, malformed credentials file).
    #[error("S3 cache: {0}")]
    Config(String),
    /// The bucket refused the credentials (403, invalid key, bad signature).
    #[error("S3 cache {target}: access denied with {credentials}: {error}")]
    Denied {
        /// `s3://bucket/prefix` and the endpoint.
        target: String,
        /// Which credentials were used (a profile name, never a secret).
        credentials: String,
        /// The store's error (in the message, not also a `source()`).
        error: Arc<object_store::Error>,
    },
    /// The bucket could not be reached or answered with an error.
    #[error("S3 cache {target}: {error}")]
    Unavailable {
        /// `s3://bucket/prefix` and the endpoint.
        target: String,
        /// The store's error (in the message, not also a `source()`).
        error: Arc<object_store::Error>,
    },
    /// An object's bytes ended before the size it announced (a connection cut mid-answer).
    #[error("S3 cache {target}: object {key} ended after {written} of {size} bytes")]
    Truncated {
        /// `s3://bucket/prefix` and the endpoint.
        target: String,
        /// The object's key.
        key: String,
        /// Bytes received.
        written: u64,
        /// Bytes announced.
        size: u64,
    },
    /// Local I/O while copying an object into the local cache or reading a file to upload.
    #[error("S3 cache: local copy of {identity}: {error}")]
    Local {
        /// The identity being copied.
        identity: String,
        /// The error (in the message, not also a `source()`).
        error: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// Outcome of a copy from a tier.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The file was copied into the local cache, here.
    Copied(CachedFile),
    /// The tier does not hold it.
    Absent,
    /// The tier holds a file of the wrong size or with bytes that fail its checksum: not
    /// used, to be replaced.
    WrongSize,
}

/// Outcome of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// This process created the file in the tier.
    Created,
    /// Another writer created it first; its bytes are identical by construction.
    AlreadyThere,
    /// A wrong file was replaced.
    Replaced,
}

/// A tier behind the local cache. An unreachable tier never fails a read: callers record its
/// errors with [`Tier::mark_down`] and go on without it; puts that failed are remembered and
/// retried ([`Tier::retry_pending`]).
#[async_trait]
pub trait Tier: Send + Sync + std::fmt::Debug {
    /// The size of the tier's file of `identity`, if it holds one.
    async fn size_of(&self, identity: &str) -> Result<Option<u64>, RemoteError>;

    /// Copies the file of `key` into `local` if the tier holds it, complete and intact.
    async fn get(&self, key: Key<'_>, local: &LocalCache) -> Result<Lookup, RemoteError>;

    /// Puts `entry` (the local cache's checked entry of `key`) into the tier, as a create
    /// that never overwrites unless `replace` (the tier's file is known to be wrong). A failed
    /// put is remembered and retried from `local` after the next success.
    async fn put(
        &self,
        key: Key<'_>,
        local: &LocalCache,
        entry: &CachedFile,
        replace: bool,
    ) -> Result<Uploaded, RemoteError>;

    /// Retries the puts that failed, each from `local`'s entry as it is now.
    async fn retry_pending(&self, local: &LocalCache);

    /// Puts waiting for the tier.
    fn pending(&self) -> usize;

    /// Records a failure (the first after a success is logged as a warning).
    fn mark_down(&self, e: &RemoteError);
}
