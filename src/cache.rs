//! Where finished files are kept: the local disk cache and, optionally, an S3 bucket.
//!
//! - [`local`]: one complete NetCDF file per identity on local disk, written atomically,
//!   checked by CRC-32C, trusted only when owned by this user, evicted by size
//!   ([`LocalCache`]).
//! - [`s3`]: the shared tier over any object store ([`s3::RemoteCache`]): copies into the
//!   local cache, conditional creates, wrong or corrupt objects replaced, uploads retried
//!   after an outage.
//!
//! Both know files only by identity and size, never plans. The policy across them (read
//! through local → S3 → build, write local then S3) is the flow's ([`crate::flow::Flow`]).

pub mod local;
pub mod s3;

pub use local::{
    is_identity, owned_privately, CacheError, CachedFile, LocalCache, Pin, ABSENT_XATTR,
    CHECKSUM_XATTR, DEFAULT_CACHE_DIR,
};
