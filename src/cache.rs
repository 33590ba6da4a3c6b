//! Where finished files are kept: the local disk cache and, optionally, an S3 bucket.
//!
//! - [`local`]: one complete NetCDF file per identity on local disk, written atomically,
//!   checked by CRC-32C, trusted only when owned by this user, evicted by size
//!   ([`LocalCache`]).
//! - [`s3`]: the shared tier over any object store ([`s3::RemoteCache`]): copies into the
//!   local cache, conditional creates, wrong or corrupt objects replaced, uploads retried
//!   after an outage.
//!
//! - [`sums`]: a checksum per 64 KiB block of an entry, recorded when it is checked, so that
//!   every read served from it is checked too ([`sums::BlockSums`]).
//! - [`partial`]: files built slab by slab, their slabs checked and kept across restarts
//!   until complete ([`partial::PartialEntry`]).
//! - [`seal`]: entries made immutable while the kernel reads them itself (passthrough), and
//!   seals left by a killed process lifted ([`seal::Seal`]).
//! - [`tier`]: what a tier behind the local one offers ([`Tier`]), and the [`Key`] every
//!   tier knows a file by (identity and size, never a plan).
//! - [`tiered`]: the policy across the tiers in one place ([`Tiered`]): read through local →
//!   shared → build, write through, share what is cached here, the counters.

pub mod local;
pub mod partial;
pub mod s3;
pub mod seal;
pub mod sums;
pub mod tier;
pub mod tiered;

pub use local::{
    is_identity, owned_privately, CacheError, CachedFile, LocalCache, Pin, ABSENT_XATTR,
    CHECKSUM_XATTR, DEFAULT_CACHE_DIR,
};
pub use tier::{Key, Lookup, RemoteError, Tier, Uploaded};
pub use tiered::{ReadThrough, TierMetrics, Tiered};
