//! The flow: a plan becomes a cached file. Cache hit, or fetch → encode → persist.
//!
//! Input: a [`Plan`]. Output: its complete file in the local cache, open ([`CachedFile`]).
//! Invariant: the file is the exact result of the plan (its size was checked against the
//! plan before it was renamed into place); on any error nothing is cached and the next call
//! tries again. A cache hit reads nothing from the source.
//!
//! [`Flow::materialize_shared`] adds single flight: concurrent callers for one identity share
//! one run, and all get its result; the run is forgotten once it ends, so a failure is retried
//! by the next caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::cache::s3::RemoteCache;
use crate::cache::{CacheError, CachedFile, Key, LocalCache, ReadThrough, TierMetrics, Tiered};
use crate::encode::{self, EncodeError};
use crate::fetch::{self, FetchError, FetchOptions};
use crate::plan::{Plan, Representation};
use crate::reduce;
use crate::source::Source;

pub mod parts;

pub use parts::{by_parts, PartsFile};

/// Why a file could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Reading the source failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Writing the NetCDF file failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The cache could not be written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The encoder thread died.
    #[error("encoder task failed: {0}")]
    Join(String),
    /// A provisional file of a pinned dataset, not cached, after the store changed: its
    /// ERA5T hours may hold other data now than in the pinned version.
    #[error(
        "the dataset is pinned to store version {pinned:?}, but the store is now {actual:?}: this \
         file holds preliminary ERA5T hours, which the store may have replaced since, and it is \
         not cached from the pinned version; unpin (drop --pin) to build it from the store as \
         it is now"
    )]
    Pinned {
        /// The pinned `last_updated`.
        pinned: String,
        /// The store's `last_updated` now.
        actual: String,
    },
    /// A file served by its parts met chunks the store does not have: its header, which
    /// readers already hold, counts none, so its bytes cannot say so.
    #[error(
        "{file}: {absent} chunk(s) of this file do not exist in the source; a file served by \
         its parts cannot count them in its header (readers already have it): build it whole \
         with `sodeda-era5 get` or `preload`, which record them"
    )]
    AbsentInPart {
        /// The file name.
        file: String,
        /// Chunks absent from the source in the failed build.
        absent: u64,
    },
}

/// Files served by their parts kept open after their last handle closes (see
/// `Flow::recent_parts`).
const RECENT_PARTS: usize = 4;

/// How a file is served: whole from its cache entry, or by its parts as they are read.
#[derive(Debug, Clone)]
pub enum Served {
    /// The complete file, open.
    Whole(CachedFile),
    /// A file whose reads build the slabs under them.
    Parts(Arc<PartsFile>),
}

/// Where a materialized file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It was already in the local cache.
    Cache,
    /// It was copied from the S3 tier into the local cache.
    Remote,
    /// It was built now from the source.
    Built,
}

/// Counters of the flow, for `status`-style reporting and tests.
#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// Flow runs that built a file (cache misses).
    pub runs: AtomicU64,
    /// Runs that failed (slab builds included).
    pub failures: AtomicU64,
    /// Slab builds of files served by their parts (each one fetch of up to a few slabs).
    pub slab_builds: AtomicU64,
    /// Pieces built of files served by their parts: the few rows of a slab that a read
    /// touches at its edge, answered from memory without building the slab.
    pub slab_pieces: AtomicU64,
    /// Hits and uploads of the cache tiers.
    pub tiers: Arc<TierMetrics>,
}

type SharedRun = Shared<BoxFuture<'static, Result<(CachedFile, Origin), Arc<FlowError>>>>;

/// Runs in progress, by identity.
#[derive(Default)]
struct InFlight(Mutex<HashMap<String, SharedRun>>);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "InFlight({n})")
    }
}

/// Memory that builds may hold at once, shared by every build of a process: a build reserves
/// what it will hold (its decoded output arrays plus its chunk reads in flight) before it
/// reads anything, and waits while others hold the rest. A build larger than the whole budget
/// runs alone. So the memory of a mount stays bounded whatever its readers ask for.
#[derive(Debug)]
pub struct BuildMemory {
    total_mib: u32,
    permits: tokio::sync::Semaphore,
}

impl BuildMemory {
    /// A budget of `bytes` (at least 1 MiB).
    pub fn new(bytes: u64) -> Self {
        let total_mib = bytes.div_ceil(1 << 20).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Self {
            total_mib,
            permits: tokio::sync::Semaphore::new(total_mib as usize),
        }
    }

    /// The default budget: a quarter of the memory this process may use — the machine's
    /// (`MemTotal` of /proc/meminfo), or its control group's limit (`memory.max`, as in a
    /// container) when smaller — at least 1 GiB; 4 GiB when neither is known.
    pub fn default_bytes() -> u64 {
        let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        });
        // "max" (no limit) does not parse and is ignored.
        let group = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let total = match (machine, group) {
            (Some(m), Some(g)) => Some(m.min(g)),
            (m, g) => m.or(g),
        };
        total.map_or(4 << 30, |t| (t / 4).max(1 << 30))
    }

    /// The budget in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.total_mib) << 20
    }

    /// Bytes reserved by builds now.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total_mib - self.permits.available_permits() as u32) << 20
    }

    /// Waits until `bytes` (at most the whole budget) are free and holds them until the
    /// permit is dropped.
    async fn reserve(&self, bytes: u64) -> tokio::sync::SemaphorePermit<'_> {
        let need = bytes.div_ceil(1 << 20).clamp(1, u64::from(self.total_mib)) as u32;
        self.permits
            .acquire_many(need)
            .await
            .expect("the semaphore is never closed")
    }
}

/// What building `plan` holds in memory at most: its decoded output arrays (float32) and the
/// chunk reads in flight (each a decoded chunk and the part gathered from it), as bounded by
/// the fetch options.
pub fn build_bytes(plan: &Plan, source: &Source, options: &FetchOptions) -> u64 {
    let mut output = 0u64;
    let mut largest_chunk = 0u64;
    for pv in &plan.variables {
        output += pv
            .dims
            .iter()
            .map(|d| plan.selections[d].indices.len() as u64)
            .product::<u64>()
            * 4;
        if let Some(v) = source.scope.variables.get(&pv.name) {
            largest_chunk = largest_chunk.max(v.chunks.iter().product::<u64>() * 4);
        }
    }
    let in_flight =
        (largest_chunk * 2 * options.concurrency.max(1) as u64).min(options.memory_budget);
    output + in_flight
}

/// The flow's resources: the source, the cache tiers and the fetch tuning. Everything that
/// reads or writes a tier goes through it (materialize, is_cached, pin, the uploads), so the
/// tier policy and its counters live in one place.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The opened source.
    source: Arc<Source>,
    /// The cache tiers.
    tiers: Tiered,
    /// Fetch tuning.
    fetch: FetchOptions,
    /// Counters.
    metrics: Arc<FlowMetrics>,
    /// The memory budget of builds.
    memory: Arc<BuildMemory>,
    inflight: Arc<InFlight>,
    /// Files served by their parts, by identity: one per file in a process.
    parts: Arc<Mutex<HashMap<String, Weak<PartsFile>>>>,
    /// The files served by their parts opened last, kept open after their last handle
    /// closes (their pieces and checked slabs stay known: a reader opens a file many times).
    recent_parts: Arc<Mutex<std::collections::VecDeque<Arc<PartsFile>>>>,
    /// Files of at least this size are served by their parts ([`parts::PARTS_FROM`]).
    parts_from: u64,
}

impl Flow {
    /// A flow over `source` and `cache`.
    pub fn new(source: Arc<Source>, cache: LocalCache, fetch: FetchOptions) -> Self {
        let metrics = Arc::new(FlowMetrics::default());
        Self {
            source,
            tiers: Tiered::new(cache, metrics.tiers.clone()),
            fetch,
            metrics,
            memory: Arc::new(BuildMemory::new(BuildMemory::default_bytes())),
            inflight: Arc::default(),
            parts: Arc::default(),
            recent_parts: Arc::default(),
            parts_from: parts::PARTS_FROM,
        }
    }

    /// Serves files of at least `bytes` by their parts (default [`parts::PARTS_FROM`]);
    /// `u64::MAX`: every file is built whole at its first read.
    pub fn with_parts_from(mut self, bytes: u64) -> Self {
        self.parts_from = bytes;
        self
    }

    /// The size from which files are served by their parts (see [`Flow::with_parts_from`]).
    pub fn parts_from(&self) -> u64 {
        self.parts_from
    }

    /// Another flow over `cache`, sharing this one's source, fetch tuning, counters and
    /// memory budget, without the S3 tier (the dashboard's ad-hoc previews).
    pub fn over_cache(&self, cache: LocalCache) -> Self {
        Self {
            source: self.source.clone(),
            tiers: self.tiers.over_local(cache),
            fetch: self.fetch.clone(),
            metrics: self.metrics.clone(),
            memory: self.memory.clone(),
            inflight: Arc::default(),
            parts: Arc::default(),
            recent_parts: Arc::default(),
            parts_from: self.parts_from,
        }
    }

    /// The source.
    pub fn source(&self) -> &Arc<Source> {
        &self.source
    }

    /// The fetch tuning.
    pub fn fetch_options(&self) -> &FetchOptions {
        &self.fetch
    }

    /// The fetch tuning, to change (preload's whole chunks and read-ahead on its own copy).
    pub fn fetch_options_mut(&mut self) -> &mut FetchOptions {
        &mut self.fetch
    }

    /// The counters.
    pub fn metrics(&self) -> &FlowMetrics {
        &self.metrics
    }

    /// The memory budget of builds.
    pub fn memory(&self) -> &BuildMemory {
        &self.memory
    }

    /// The cache tiers: what is cached, hits, pins, sharing (see [`Tiered`]).
    pub fn tiers(&self) -> &Tiered {
        &self.tiers
    }

    /// Tells the local cache the store's version (see [`LocalCache::set_store_version`]).
    pub fn set_store_version(&self, version: Option<String>) {
        self.tiers.local().set_store_version(version);
    }

    /// Sets the memory budget of builds (see [`BuildMemory`]).
    pub fn with_build_memory(mut self, bytes: u64) -> Self {
        self.memory = Arc::new(BuildMemory::new(bytes));
        self
    }

    /// Counters of the flow, the S3 tier and the source, as JSON fields (for `status`, the
    /// mount's `user.sodeda.stats` and the dashboard's `/api/status`).
    pub fn counters(&self) -> serde_json::Map<String, serde_json::Value> {
        let get = |a: &AtomicU64| serde_json::Value::from(a.load(Ordering::Relaxed));
        let m = &self.metrics;
        let source = &self.source.metrics;
        let mut fields = serde_json::Map::from_iter([
            ("flow_runs".to_string(), get(&m.runs)),
            ("flow_failures".to_string(), get(&m.failures)),
            ("cache_hits".to_string(), get(&m.tiers.cache_hits)),
            ("remote_hits".to_string(), get(&m.tiers.remote_hits)),
            ("uploads".to_string(), get(&m.tiers.uploads)),
            (
                "uploads_pending".to_string(),
                self.tiers.uploads_pending().unwrap_or(0).into(),
            ),
            ("build_memory".to_string(), self.memory.total().into()),
            (
                "build_memory_in_use".to_string(),
                self.memory.in_use().into(),
            ),
            ("source_requests".to_string(), source.requests().into()),
            ("source_bytes".to_string(), source.bytes().into()),
        ]);
        fields.extend(parts::counters(self));
        fields
    }

    /// Adds the S3 tier: read path local → S3 → source, write path local + S3.
    pub fn with_remote(mut self, remote: Arc<RemoteCache>) -> Self {
        self.tiers = self.tiers.with_shared(remote);
        self
    }

    /// How to serve the file of `plan` to a reader: whole when it is cached (locally or in
    /// the S3 tier, copied here) or small ([`by_parts`]: built whole now, as
    /// [`Flow::materialize_shared`]); otherwise by its parts, one [`PartsFile`] per file.
    pub async fn serve(&self, plan: &Plan) -> Result<Served, Arc<FlowError>> {
        if let Some(hit) = self.tiers.hit(key_of(plan)) {
            return Ok(Served::Whole(hit));
        }
        if !by_parts(plan, self.parts_from) {
            return self
                .materialize_shared(plan)
                .await
                .map(|(file, _)| Served::Whole(file));
        }
        match self.tiers.read_through(key_of(plan)).await {
            ReadThrough::Local(hit) | ReadThrough::Shared(hit) => return Ok(Served::Whole(hit)),
            ReadThrough::Missing { .. } => {}
        }
        let file = {
            let mut map = self.parts.lock().expect("parts map poisoned");
            match map.get(&plan.identity).and_then(Weak::upgrade) {
                Some(file) => file,
                None => {
                    let file = PartsFile::open(self.clone(), plan.clone()).inspect_err(|e| {
                        tracing::error!(file = %plan.file_name, "opening the partial entry: {}", error_chain(e.as_ref()));
                    })?;
                    map.retain(|_, f| f.strong_count() > 0);
                    map.insert(plan.identity.clone(), Arc::downgrade(&file));
                    file
                }
            }
        };
        let mut recent = self.recent_parts.lock().expect("poisoned");
        recent.retain(|f| !Arc::ptr_eq(f, &file));
        recent.push_back(file.clone());
        while recent.len() > RECENT_PARTS {
            recent.pop_front();
        }
        Ok(Served::Parts(file))
    }

    /// Forgets the parts file of `identity` (it became a complete entry).
    fn forget_parts(&self, identity: &str) {
        self.parts
            .lock()
            .expect("parts map poisoned")
            .remove(identity);
        self.recent_parts
            .lock()
            .expect("poisoned")
            .retain(|f| f.plan().identity != identity);
    }

    /// The error of `plan` when it holds preliminary hours of a pinned dataset whose store
    /// moved on (see [`FlowError::Pinned`]).
    fn pin_moved(&self, plan: &Plan) -> Option<FlowError> {
        plan.provenance
            .provisional()
            .then(|| self.source.scope.freshness.moved_past_pin())
            .flatten()
            .map(|(pinned, actual)| FlowError::Pinned { pinned, actual })
    }

    /// Like [`Flow::materialize`], but concurrent calls for the same identity share one run.
    /// A failed run is logged once (with the file name and the cause) and then forgotten.
    pub async fn materialize_shared(
        &self,
        plan: &Plan,
    ) -> Result<(CachedFile, Origin), Arc<FlowError>> {
        if let Some(hit) = self.tiers.hit(key_of(plan)) {
            return Ok((hit, Origin::Cache));
        }
        let run = {
            let mut map = self.inflight.0.lock().expect("in-flight map poisoned");
            map.entry(plan.identity.clone())
                .or_insert_with(|| {
                    let flow = self.clone();
                    let plan = plan.clone();
                    async move {
                        let result = flow.materialize(&plan).await.map_err(Arc::new);
                        if let Err(e) = &result {
                            tracing::error!(file = %plan.file_name, line = plan.deskriptor.line, "building failed: {}", error_chain(e.as_ref()));
                        }
                        flow.inflight
                            .0
                            .lock()
                            .expect("in-flight map poisoned")
                            .remove(&plan.identity);
                        result
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        run.await
    }

    /// Returns the cached file of `plan`, building it first if needed, open: read the
    /// descriptor, not the path (an entry evicted by another process meanwhile stays
    /// readable through it).
    pub async fn materialize(&self, plan: &Plan) -> Result<(CachedFile, Origin), FlowError> {
        let replace = match self.tiers.read_through(key_of(plan)).await {
            ReadThrough::Local(hit) => return Ok((hit, Origin::Cache)),
            ReadThrough::Shared(copied) => return Ok((copied, Origin::Remote)),
            ReadThrough::Missing { replace } => replace,
        };
        self.metrics.runs.fetch_add(1, Ordering::Relaxed);
        let built = match self.build(plan).await {
            Ok(built) => built,
            Err(e) => {
                self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.tiers
            .write_through(key_of(plan), &built, replace)
            .await;
        Ok((built, Origin::Built))
    }

    async fn build(&self, plan: &Plan) -> Result<CachedFile, FlowError> {
        if let Some(e) = self.pin_moved(plan) {
            return Err(e);
        }
        let t0 = std::time::Instant::now();
        let (data, absent) = match &plan.representation {
            None => {
                let need = build_bytes(plan, &self.source, &self.fetch);
                let _memory = self.memory.reserve(need).await;
                let fetched = fetch::fetch(plan, &self.source, &self.fetch).await?;
                (fetched.arrays, fetched.absent_chunks)
            }
            Some(rep) => self.fetch_and_reduce(plan, rep).await?,
        };
        if absent > 0 {
            tracing::warn!(
                file = %plan.file_name,
                "{absent} chunk(s) do not exist in the source (its array does): read as missing \
                 values, as xarray does; the cache entry is marked ({})",
                crate::cache::ABSENT_XATTR
            );
        }
        let t1 = std::time::Instant::now();
        let tmp = self.tiers.local().temp_file()?;
        let layout = crate::plan::with_absent_chunks(&plan.layout, absent);
        let (format, size) = (plan.format, plan.size);
        let tmp = tokio::task::spawn_blocking(move || {
            encode::write(&layout, &data, format, tmp.path(), size).map(|()| tmp)
        })
        .await
        .map_err(|e| FlowError::Join(e.to_string()))??;
        let t2 = std::time::Instant::now();
        let built = self
            .tiers
            .local()
            .persist_with(tmp, &plan.identity, absent)?;
        tracing::info!(
            file = %plan.file_name,
            bytes = plan.size,
            fetch_ms = (t1 - t0).as_secs_f64() * 1e3,
            encode_ms = (t2 - t1).as_secs_f64() * 1e3,
            persist_ms = t2.elapsed().as_secs_f64() * 1e3,
            "built"
        );
        Ok(built)
    }
}

impl Flow {
    /// The file's arrays of a plan with a representation, and the absent chunks met: its
    /// hours fetched batch by batch ([`reduce::batches`]), each batch reduced before the
    /// next is fetched, so a build holds one batch (and the file's arrays) at a time.
    async fn fetch_and_reduce(
        &self,
        plan: &Plan,
        rep: &Representation,
    ) -> Result<(Vec<ndarray::ArrayD<f32>>, u64), FlowError> {
        let mut reducer = reduce::Reducer::new(plan, rep);
        let held = reducer.bytes();
        let mut absent = 0;
        for hours in reduce::batches(plan, reduce::BATCH_BYTES) {
            let sub = reduce::batch_plan(plan, hours.clone());
            let need = build_bytes(&sub, &self.source, &self.fetch) + held;
            let _memory = self.memory.reserve(need).await;
            let fetched = fetch::fetch(&sub, &self.source, &self.fetch).await?;
            absent += fetched.absent_chunks;
            reducer.add(hours, fetched.arrays);
        }
        Ok((reducer.finish(), absent))
    }
}

/// What the cache tiers know the file of `plan` by.
fn key_of(plan: &Plan) -> Key<'_> {
    Key::new(&plan.identity, plan.size)
}

/// An error and its causes on one line: `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}
