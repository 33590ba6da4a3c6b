//! The application: one plain [`Config`] (no command-line types) and one way to open the
//! stack over it — source, local cache, S3 tier, flow, catalog — used by both binaries, the
//! dashboard and the tests.
//!
//! The command line ([`crate::cli`]) only turns arguments and environment variables into a
//! `Config` and prints results; everything it opens, it opens here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::cache::s3::{RemoteCache, S3Config};
use crate::cache::{LocalCache, RemoteError, Tier, DEFAULT_CACHE_DIR};
use crate::catalog::policy::{CatalogFile, Policy};
use crate::fetch::{BlockTables, ChunkCache, FetchOptions, ReadPath};
use crate::flow::Flow;
use crate::plan::PlanOptions;
use crate::source::{Source, SourceOptions, DEFAULT_SOURCE};

/// Memory for decoded source chunks kept for reuse across files, by default.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// Everything the stack is opened from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The deskriptors file.
    pub deskriptors: PathBuf,
    /// The Zarr store: a name (`arco-era5`, `weatherbench2`), a URL or a path.
    pub source: String,
    /// How source requests are retried and timed out.
    pub source_options: SourceOptions,
    /// Freeze the dataset at this store version (`current` or a `last_updated` value).
    pub pin: Option<String>,
    /// The local cache directory.
    pub cache_dir: PathBuf,
    /// Largest size of the local cache; unlimited when `None`.
    pub cache_max_size: Option<u64>,
    /// How deskriptors are planned (format, size limit, layout).
    pub plan: PlanOptions,
    /// Memory for decoded chunks kept for reuse across files.
    pub memory_limit: u64,
    /// Memory file builds may hold at once; `None`: [`crate::flow::BuildMemory::default_bytes`].
    pub build_memory: Option<u64>,
    /// How chunks are read.
    pub read_path: ReadPath,
    /// Source chunk reads in flight at once.
    pub fetch_concurrency: usize,
    /// The S3 tier, when there is one.
    pub s3: Option<S3Config>,
}

impl Config {
    /// The defaults of the command line over `deskriptors`, the ARCO-ERA5 store and
    /// `./cache`.
    pub fn new(deskriptors: impl Into<PathBuf>) -> Self {
        Config {
            deskriptors: deskriptors.into(),
            source: DEFAULT_SOURCE.to_string(),
            source_options: SourceOptions::default(),
            pin: None,
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            cache_max_size: None,
            plan: PlanOptions::default(),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            build_memory: None,
            read_path: ReadPath::Auto,
            fetch_concurrency: FetchOptions::default().concurrency,
            s3: None,
        }
    }

    /// Opens the source, pinned to a store version when [`Config::pin`] says so.
    pub async fn open_source(&self) -> Result<Arc<Source>> {
        if self.source_options.timeout.is_zero() {
            bail!("--source-timeout must be a positive number of seconds");
        }
        let mut source = Source::open_with(&self.source, self.source_options).await?;
        if let Some(pin) = self.pin.as_deref().filter(|p| !p.trim().is_empty()) {
            source.scope.freshness.pin(pin);
            if let Some((pinned, actual)) = source.scope.freshness.moved_past_pin() {
                tracing::warn!(
                    "pinned to store version {pinned:?}; the store is now {actual:?}: files over \
                     ERA5T hours are served only from the cache tiers"
                );
            }
        }
        Ok(Arc::new(source))
    }

    /// The local cache, with its size limit.
    pub fn open_local_cache(&self) -> Result<LocalCache> {
        let cache = LocalCache::open(&self.cache_dir)?;
        Ok(match self.cache_max_size {
            Some(size) => cache.with_max_size(size),
            None => cache,
        })
    }

    /// The S3 tier, when a bucket is configured. Bad configuration or refused credentials
    /// are errors; an unreachable bucket is a warning (reads fall back to the source).
    pub async fn open_s3(&self) -> Result<Option<Arc<RemoteCache>>> {
        let Some(config) = self.s3.as_ref().filter(|c| !c.bucket.is_empty()) else {
            return Ok(None);
        };
        let remote = RemoteCache::new(config)?;
        match remote.probe().await {
            Ok(()) => {}
            Err(e @ (RemoteError::Denied { .. } | RemoteError::Config(_))) => return Err(e.into()),
            Err(e) => remote.mark_down(&e),
        }
        Ok(Some(Arc::new(remote)))
    }

    /// The flow over `source`: the local cache (told the store's version), the block tables
    /// beside it, the chunk cache, the build memory budget and the S3 tier.
    pub async fn open_flow(&self, source: Arc<Source>) -> Result<Flow> {
        let cache = self.open_local_cache()?;
        cache.set_store_version(source.scope.freshness.cache_version());
        let tables = Arc::new(BlockTables::open(cache.dir(), &source.scope.url));
        let flow = Flow::new(
            source,
            cache,
            FetchOptions {
                block_tables: Some(tables),
                concurrency: self.fetch_concurrency.max(1),
                chunk_cache: Some(Arc::new(ChunkCache::new(self.memory_limit))),
                read_path: self.read_path,
                ..FetchOptions::default()
            },
        );
        let flow = match self.build_memory {
            Some(bytes) => flow.with_build_memory(bytes),
            None => flow,
        };
        Ok(match self.open_s3().await? {
            Some(remote) => flow.with_remote(remote),
            None => flow,
        })
    }

    /// The source and the flow over it.
    pub async fn open(&self) -> Result<Stack> {
        let source = self.open_source().await?;
        let flow = self.open_flow(source.clone()).await?;
        Ok(Stack { source, flow })
    }

    /// The deskriptors file under `policy`, its index kept beside the cache's entries.
    pub fn catalog_file(&self, policy: Policy) -> CatalogFile {
        CatalogFile {
            path: self.deskriptors.clone(),
            options: self.plan,
            index_dir: self.catalog_index_dir(),
            policy,
        }
    }

    /// Where catalog indexes are kept: beside the cache's entries (the cache is made, and
    /// checked, first); `None` when the cache's directories are not this user's own.
    fn catalog_index_dir(&self) -> Option<PathBuf> {
        let cache = LocalCache::open(&self.cache_dir).ok()?;
        let dir = cache.dir().to_path_buf();
        crate::catalog::index::usable_dir(&self.cache_dir, &dir).then_some(dir)
    }

    /// The cache directory, absolute (for processes that change directory).
    pub fn absolute_cache_dir(&self) -> Result<PathBuf> {
        std::path::absolute(&self.cache_dir)
            .with_context(|| format!("the cache directory {}", self.cache_dir.display()))
    }
}

/// An opened stack.
pub struct Stack {
    /// The source.
    pub source: Arc<Source>,
    /// The flow over it, with its cache tiers.
    pub flow: Flow,
}
