//! The cache tiers together, and their policy in one place:
//!
//! - **read through**: the local cache, then the shared tier (copied into the local cache),
//!   then "missing" (the caller builds; told whether the shared tier's file is wrong and must
//!   be replaced);
//! - **write through**: a file built here goes to the shared tier too, unless it has absent
//!   chunks (the store may fill them in, and other machines would take it as final);
//! - **share**: a file already cached here goes to the shared tier if it lacks it or holds a
//!   wrong one (a file cached by an earlier run without the bucket);
//! - the counters of hits and uploads.
//!
//! An unreachable shared tier never fails a read: it is recorded and skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::seal::Seal;
use super::tier::{Key, Lookup, Tier, Uploaded};
use super::{CachedFile, LocalCache, Pin};

/// Counters of the tiers.
#[derive(Debug, Default)]
pub struct TierMetrics {
    /// Requests answered from the local cache.
    pub cache_hits: AtomicU64,
    /// Files copied from the shared tier.
    pub remote_hits: AtomicU64,
    /// Files this process created (or replaced) in the shared tier; a file another writer
    /// created first is not counted.
    pub uploads: AtomicU64,
}

/// Where a read through the tiers ended.
#[derive(Debug)]
pub enum ReadThrough {
    /// In the local cache.
    Local(CachedFile),
    /// Copied from the shared tier into the local cache.
    Shared(CachedFile),
    /// In no tier: build it. `replace`: the shared tier holds a wrong file under its key.
    Missing {
        /// Overwrite the shared tier's file when putting the built one.
        replace: bool,
    },
}

/// The local cache and, optionally, a shared tier behind it.
#[derive(Debug, Clone)]
pub struct Tiered {
    local: LocalCache,
    shared: Option<Arc<dyn Tier>>,
    metrics: Arc<TierMetrics>,
}

impl Tiered {
    /// The local cache alone, counting into `metrics`.
    pub fn new(local: LocalCache, metrics: Arc<TierMetrics>) -> Self {
        Tiered {
            local,
            shared: None,
            metrics,
        }
    }

    /// Adds a shared tier behind the local cache.
    pub fn with_shared(mut self, tier: Arc<dyn Tier>) -> Self {
        self.shared = Some(tier);
        self
    }

    /// Another local cache alone, counting into the same counters (the dashboard's previews).
    pub fn over_local(&self, local: LocalCache) -> Self {
        Tiered::new(local, self.metrics.clone())
    }

    /// The local cache (to write a build into).
    pub fn local(&self) -> &LocalCache {
        &self.local
    }

    /// The counters.
    pub fn metrics(&self) -> &TierMetrics {
        &self.metrics
    }

    /// Whether the file of `key` is complete in the local cache (no counting, no open).
    pub fn is_cached(&self, key: Key<'_>) -> bool {
        self.local.contains(key.identity, key.size).is_some()
    }

    /// The local cache's file of `key`, open and checked, counted as a hit.
    pub fn hit(&self, key: Key<'_>) -> Option<CachedFile> {
        let hit = self.local.get(key.identity, key.size)?;
        self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// The local cache's file of `key`, open and checked, not counted (a look, not a read).
    pub fn peek(&self, key: Key<'_>) -> Option<CachedFile> {
        self.local.get(key.identity, key.size)
    }

    /// The local cache's file of `key`, sealed for the kernel to read it itself (see
    /// [`LocalCache::open_sealed`]), counted as a hit.
    pub fn open_sealed(&self, key: Key<'_>) -> std::io::Result<Option<Seal>> {
        let sealed = self.local.open_sealed(key.identity, key.size)?;
        if sealed.is_some() {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(sealed)
    }

    /// Looks for the file of `key` in the local cache, then in the shared tier.
    pub async fn read_through(&self, key: Key<'_>) -> ReadThrough {
        if let Some(hit) = self.hit(key) {
            return ReadThrough::Local(hit);
        }
        let Some(shared) = &self.shared else {
            return ReadThrough::Missing { replace: false };
        };
        match shared.get(key, &self.local).await {
            Ok(Lookup::Copied(copied)) => {
                self.metrics.remote_hits.fetch_add(1, Ordering::Relaxed);
                ReadThrough::Shared(copied)
            }
            Ok(Lookup::Absent) => ReadThrough::Missing { replace: false },
            Ok(Lookup::WrongSize) => ReadThrough::Missing { replace: true },
            Err(e) => {
                shared.mark_down(&e);
                ReadThrough::Missing { replace: false }
            }
        }
    }

    /// Puts a file just built here into the shared tier (`replace`: as
    /// [`ReadThrough::Missing`] said), unless it has absent chunks. A failed put is recorded
    /// and retried later; the file is complete locally either way.
    pub async fn write_through(&self, key: Key<'_>, built: &CachedFile, replace: bool) {
        if let Some(shared) = self.shared.as_ref().filter(|_| built.absent_chunks() == 0) {
            self.put(shared.as_ref(), key, built, replace).await;
        }
    }

    /// Shares a file cached here with the shared tier if it lacks it or holds a wrong one.
    /// A file with absent chunks is never shared; an unreachable tier is only recorded.
    pub async fn share(&self, key: Key<'_>, cached: &CachedFile) {
        let Some(shared) = self.shared.as_ref().filter(|_| cached.absent_chunks() == 0) else {
            return;
        };
        match shared.size_of(key.identity).await {
            Ok(Some(there)) if there == key.size => {}
            Ok(other) => {
                self.put(shared.as_ref(), key, cached, other.is_some())
                    .await
            }
            Err(e) => shared.mark_down(&e),
        }
    }

    async fn put(&self, shared: &dyn Tier, key: Key<'_>, entry: &CachedFile, replace: bool) {
        if let Ok(Uploaded::Created | Uploaded::Replaced) =
            shared.put(key, &self.local, entry, replace).await
        {
            self.metrics.uploads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Retries the puts that failed while the shared tier was unreachable.
    pub async fn retry_uploads(&self) {
        if let Some(shared) = &self.shared {
            shared.retry_pending(&self.local).await;
        }
    }

    /// Puts waiting for the shared tier; `None` without one.
    pub fn uploads_pending(&self) -> Option<usize> {
        self.shared.as_ref().map(|s| s.pending())
    }

    /// Keeps the local entry of `identity` from eviction while the guard lives.
    pub fn pin(&self, identity: &str) -> Pin {
        self.local.pinned(identity)
    }
}
