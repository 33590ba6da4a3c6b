//! Fetches and subsets the data of a plan: only the chunks it needs, concurrently.
//!
//! Input: a [`Plan`] and its [`Source`]. Output: one float32 array per data variable, shaped
//! like the variable in the file. For each variable the selected positions are grouped by the
//! chunk that holds them; each chunk is read once (one GET, decoded by zarrs), then the
//! selected points are gathered into place with ndarray. Absent chunks
//! read as the source's fill value (NaN), as in xarray. Invariant: memory in flight is bounded
//! by [`FetchOptions::memory_budget`] whatever the plan's size.
//!
//! A fetch is a sequence of chunk tasks (`ChunkTasks`), made one at a time as reads finish
//! and run concurrently within a memory budget (`BoundedReads`): beyond its output, a fetch
//! holds its reads in flight, never a list of its chunks (a plan may need a million). Each
//! task reads its chunk by one of three strategies (only the needed Blosc blocks, the whole
//! chunk decoded here, the whole chunk through zarrs); an absent chunk gives only its selected
//! points as the fill value, never a whole chunk of it. Failures are
//! typed by kind ([`ChunkError`]) and carry their chunk ([`FetchError`]).
//!
//! With a [`ChunkCache`], decoded chunks are kept (least recently used out, bounded in bytes)
//! and shared: concurrent and later requests for a chunk that is being or was decoded wait for
//! or reuse that one decode, so a preload of many deskriptors over the same hours reads each
//! chunk once.

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{stream, StreamExt, TryStreamExt};
use lru::LruCache;
use ndarray::{ArrayD, ArrayViewD, Axis, Dimension, IxDyn, Slice};
use tokio::sync::Semaphore;

use zarrs_object_store::object_store::{self, path::Path, ObjectStore, ObjectStoreExt};

use crate::plan::Plan;
use crate::source::store::describe_error;
use crate::source::Source;

mod blocks;
mod blosc;
mod error;
pub mod link;
mod prefetched;
mod tables;

pub use error::ChunkError;
pub use prefetched::{ChunkNeed, Prefetched};
pub use tables::BlockTables;

/// How chunks are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Always fetch and decode whole chunks (and share them through the chunk cache): best
    /// when many files read the same chunks, as in a preload.
    Full,
    /// Fetch and decode only the Blosc blocks holding the needed rows when they are at most a
    /// quarter of the chunk (a small sample of a whole-globe chunk; in compressed bytes when
    /// the chunk's block table is known, else in rows); whole chunks otherwise.
    Auto,
    /// Fetch and decode only the needed Blosc blocks of every plain-Blosc chunk, however large
    /// a part of it they are (except chunks a preload reads whole for many files).
    Blocks,
}

impl std::str::FromStr for ReadPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(ReadPath::Full),
            "auto" => Ok(ReadPath::Auto),
            "blocks" => Ok(ReadPath::Blocks),
            _ => Err(format!(
                "unknown read path {s:?}; allowed: auto, blocks, full"
            )),
        }
    }
}

/// Largest fraction of a chunk read block by block (beyond it a whole GET is cheaper).
const BLOCK_FRACTION: f64 = 0.25;

/// Tuning of the fetch stage.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Chunk reads in flight at once.
    pub concurrency: usize,
    /// Upper bound on decoded bytes in flight (a read larger than this runs alone).
    pub memory_budget: u64,
    /// Decoded chunks kept for reuse across plans, if any.
    pub chunk_cache: Option<Arc<ChunkCache>>,
    /// Whole chunks, or only the needed blocks where that is cheaper.
    pub read_path: ReadPath,
    /// Block tables of chunks read before (one request instead of two for a later block
    /// read of the same chunk), if kept.
    pub block_tables: Option<Arc<BlockTables>>,
    /// Chunks read whole (and shared through the chunk cache) even where one file needs only
    /// a few of their blocks: those that many files of a preload need together.
    pub whole_chunks: Option<Arc<std::collections::HashSet<ChunkKey>>>,
    /// Chunk bytes read ahead for the files of a preload, if any.
    pub prefetched: Option<Arc<Prefetched>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            // Object stores reward concurrency (the layout notes measured 0.72 s per chunk
            // serially against 0.25 s with 32 threads). 32 keeps a long series link-bound
            // over a distant store (a 30-day series of a 2×2 box at 30 ms: 2.16 s, against
            // 2.32–2.58 s with 16 and a link limit of 1.73 s; a 30-day Europe file 5.86 s
            // against 6.59 s), while `memory_budget` bounds what the reads hold.
            concurrency: 32,
            memory_budget: 1 << 30,
            chunk_cache: None,
            read_path: ReadPath::Auto,
            block_tables: None,
            whole_chunks: None,
            prefetched: None,
        }
    }
}

/// Identifies a chunk: variable name and chunk grid indices.
pub type ChunkKey = (String, Vec<u64>);
type Decoded = Arc<Chunk>;
type SharedDecode = Shared<BoxFuture<'static, Result<Decoded, ChunkError>>>;

/// A decoded chunk, or an absent one (it reads as the fill value, which is never made into
/// a whole chunk: only the selected points are, by [`fill_block`]).
#[derive(Debug)]
enum Chunk {
    /// The chunk's values.
    Data(ArrayD<f32>),
    /// The chunk's object is absent from a store that still answers for its array.
    Absent,
}

impl Chunk {
    /// Bytes of decoded values held.
    fn bytes(&self) -> u64 {
        match self {
            Chunk::Data(data) => data.len() as u64 * 4,
            Chunk::Absent => 0,
        }
    }
}

/// Decoded chunks, least recently used out, bounded in bytes; with single flight per chunk.
pub struct ChunkCache {
    limit: u64,
    state: Mutex<CacheState>,
    /// Chunk decodes done (each one a source read).
    pub decodes: AtomicU64,
    /// Chunk requests answered from memory.
    pub hits: AtomicU64,
}

struct CacheState {
    lru: LruCache<ChunkKey, Decoded>,
    bytes: u64,
    inflight: HashMap<ChunkKey, SharedDecode>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl ChunkCache {
    /// A cache holding at most `limit` bytes of decoded chunks.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            state: Mutex::new(CacheState {
                lru: LruCache::unbounded(),
                bytes: 0,
                inflight: HashMap::new(),
            }),
            decodes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Bytes of decoded chunks held now.
    pub fn bytes(&self) -> u64 {
        self.state.lock().expect("poisoned").bytes
    }

    /// The decoded chunk `key`, from memory, from a decode in progress, or decoded now by
    /// `decode`.
    async fn get_or_decode(
        self: &Arc<Self>,
        key: ChunkKey,
        decode: BoxFuture<'static, Result<Chunk, ChunkError>>,
    ) -> Result<Decoded, ChunkError> {
        let shared = {
            let mut st = self.state.lock().expect("poisoned");
            if let Some(hit) = st.lru.get(&key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.clone());
            }
            match st.inflight.get(&key) {
                Some(s) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    s.clone()
                }
                None => {
                    let cache = self.clone();
                    let k = key.clone();
                    let fut = async move {
                        let result = decode.await.map(Arc::new);
                        cache.decodes.fetch_add(1, Ordering::Relaxed);
                        let mut st = cache.state.lock().expect("poisoned");
                        st.inflight.remove(&k);
                        // An absent chunk is not kept: it costs nothing to make again, and it
                        // must be confirmed again for the next file (the store may have
                        // vanished, or written the hour, meanwhile).
                        if let Some(a) = result
                            .as_ref()
                            .ok()
                            .filter(|a| matches!(***a, Chunk::Data(_)))
                        {
                            let size = a.bytes();
                            if size <= cache.limit {
                                st.bytes += size;
                                if let Some(old) = st.lru.put(k, a.clone()) {
                                    st.bytes -= old.bytes();
                                }
                                while st.bytes > cache.limit {
                                    match st.lru.pop_lru() {
                                        Some((_, old)) => st.bytes -= old.bytes(),
                                        None => break,
                                    }
                                }
                            }
                        }
                        result
                    }
                    .boxed()
                    .shared();
                    st.inflight.insert(key, fut.clone());
                    fut
                }
            }
        };
        shared.await
    }
}

/// A chunk could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error("reading {variable} chunk {chunk:?} from {url}: {cause}")]
pub struct FetchError {
    /// The source URL.
    pub url: String,
    /// The variable.
    pub variable: String,
    /// The chunk's grid indices (empty for a check of the whole variable).
    pub chunk: Vec<u64>,
    /// Why, by kind (in the message, not also a `source()`: a chain printed whole would say
    /// it twice).
    pub cause: ChunkError,
}

/// Positions of one dimension that fall in one chunk: `(output position, source position)`,
/// sorted by output position.
type Group = (u64, Vec<(usize, usize)>);

/// Smallest part of a chunk one block read fetches, as a fraction of the chunk (ARCO-ERA5's
/// surface chunks have 8 Blosc blocks).
const BLOCK_GRAIN: f64 = 0.125;

/// For every chunk `plan` reads, about which fraction of it a block read would fetch (the
/// needed rows, at least one block's worth): what a preload adds up over its files to choose
/// which chunks to read whole.
pub fn chunk_demand(plan: &Plan, source: &Source) -> Vec<(ChunkKey, f64)> {
    let mut out = Vec::new();
    for pv in &plan.variables {
        let Some(var) = source.scope.variables.get(&pv.name) else {
            continue;
        };
        let groups = chunk_groups(plan, &pv.dims, &var.chunks);
        let total_rows = rows_per_chunk(&var.chunks).max(1) as f64;
        for combo in Combos::new(groups) {
            let chunk: Vec<u64> = combo.iter().map(|(c, _)| *c).collect();
            let rows = row_count(&needed_rows(&combo, &var.chunks)) as f64;
            out.push((
                (pv.name.clone(), chunk),
                (rows / total_rows).max(BLOCK_GRAIN),
            ));
        }
    }
    out
}

/// What `plan` reads of each chunk (keyed by its store key), where the chunk is plain Blosc
/// read directly: the rows a block read takes, or the whole chunk. What a preload reads ahead
/// ([`Prefetched`]) for a window of files.
pub fn chunk_needs(
    plan: &Plan,
    source: &Source,
    options: &FetchOptions,
) -> Vec<(String, ChunkNeed)> {
    let mut out = Vec::new();
    for pv in &plan.variables {
        let Some(var) = source
            .scope
            .variables
            .get(&pv.name)
            .filter(|v| v.blosc_blocks)
        else {
            continue;
        };
        let groups = chunk_groups(plan, &pv.dims, &var.chunks);
        let shape: Vec<usize> = var.chunks.iter().map(|&c| c as usize).collect();
        for combo in Combos::new(groups) {
            let chunk: Vec<u64> = combo.iter().map(|(c, _)| *c).collect();
            let key = var.chunk_key(&chunk);
            let rows = block_rows(options, &pv.name, &key, &chunk, &combo, &var.chunks);
            out.push((
                key,
                ChunkNeed {
                    shape: shape.clone(),
                    whole: rows.is_none(),
                    rows: rows.unwrap_or_default(),
                },
            ));
        }
    }
    out
}

/// The rows of a chunk (store key `key`) to read block by block, or `None` to read it whole:
/// block by block where the read path allows it, the chunk is not one a preload reads whole,
/// and the block read is a small part of the chunk: with the chunk's block table known (read
/// before), the needed blocks' compressed bytes are at most [`BLOCK_FRACTION`] of the
/// chunk's; without it (or in a preload, whose reads ahead were planned by rows), the needed
/// rows are at most that fraction of its rows.
fn block_rows(
    options: &FetchOptions,
    name: &str,
    key: &str,
    chunk: &[u64],
    combo: &[Group],
    chunk_shape: &[u64],
) -> Option<Vec<std::ops::Range<usize>>> {
    let shared = options
        .whole_chunks
        .as_ref()
        .is_some_and(|w| w.contains(&(name.to_string(), chunk.to_vec())));
    if options.read_path == ReadPath::Full || shared {
        return None;
    }
    let rows = needed_rows(combo, chunk_shape);
    if options.read_path == ReadPath::Blocks {
        return Some(rows);
    }
    let shape: Vec<usize> = chunk_shape.iter().map(|&c| c as usize).collect();
    // A preload's reads ahead were planned by rows (before the tables were known): its files
    // keep that choice, so that they find what was read ahead for them.
    let tables = options
        .block_tables
        .as_ref()
        .filter(|_| options.prefetched.is_none());
    let by_bytes = tables.and_then(|t| {
        let table = t.get(key)?;
        let needed = blosc::needed_block_bytes(&table.bytes, &shape, &rows)?;
        let cbytes = blosc::u32_at(&table.bytes, 12) as f64;
        Some(needed as f64 <= BLOCK_FRACTION * cbytes)
    });
    let small = by_bytes.unwrap_or_else(|| {
        row_count(&rows) as f64 <= BLOCK_FRACTION * rows_per_chunk(chunk_shape) as f64
    });
    small.then_some(rows)
}

/// One chunk read in flight: the variable's index, the gathered points, whether the chunk was
/// absent.
type ChunkRead = BoxFuture<'static, Result<(usize, Placed, bool), FetchError>>;

/// What [`fetch`] read: the data of every variable of a plan, in file order, and how many of
/// the chunks it needed do not exist in the store (they read as the fill value).
#[derive(Debug)]
pub struct Fetched {
    /// One array per data variable, shaped like the variable in the file.
    pub arrays: Vec<ArrayD<f32>>,
    /// Chunks that were absent from a store that still answered for their array (see
    /// `confirm_absent`); zero for a file made only of stored data.
    pub absent_chunks: u64,
}

/// The data of every variable of a plan, in file order.
///
/// A chunk object that does not exist reads as the fill value only after the store confirmed
/// that the chunk's array still exists (its `.zarray` answers): ARCO-ERA5 has genuinely absent
/// chunks (hours not yet written), but a store that vanished, a wrong prefix or a proxy that
/// turns a denial into 404 also answer "not found" for every chunk, and those must be errors,
/// never a file of NaN.
pub async fn fetch(
    plan: &Plan,
    source: &Source,
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let mut outputs: Vec<ArrayD<f32>> = plan
        .variables
        .iter()
        .map(|pv| {
            let shape: Vec<usize> = pv
                .dims
                .iter()
                .map(|d| plan.selections[d].indices.len())
                .collect();
            ArrayD::<f32>::from_elem(IxDyn(&shape), f32::NAN)
        })
        .collect();
    // Tasks are made as the reads in flight make room for them: what a fetch holds beyond its
    // output grows with the reads in flight, not with the chunks the plan needs.
    let reads = BoundedReads::new(ChunkTasks::new(plan, source, options), options, source);
    let results = stream::iter(reads).buffer_unordered(options.concurrency.max(1));

    let mut results = std::pin::pin!(results);
    let mut absent_chunks = 0;
    let mut absent_in = std::collections::BTreeSet::new();
    while let Some((vi, (out_ranges, block), absent)) = results.try_next().await? {
        place(&mut outputs[vi], &out_ranges, block);
        if absent {
            absent_chunks += 1;
            absent_in.insert(vi);
        }
    }
    // Asked again once every read is done: a source that vanished after the first absent
    // chunk was confirmed (its later chunks all "absent") is caught here, not cached.
    for vi in absent_in {
        let name = &plan.variables[vi].name;
        let again = ArrayCheck::default();
        if let Err(cause) = confirm_absent(&again, source.store.as_ref(), name).await {
            return Err(FetchError {
                url: source.scope.url.clone(),
                variable: name.clone(),
                chunk: Vec::new(),
                cause,
            });
        }
    }
    Ok(Fetched {
        arrays: outputs,
        absent_chunks,
    })
}

/// The tasks of every chunk `plan` needs, for each of its variables in file order, made one
/// at a time.
struct ChunkTasks<'a> {
    plan: &'a Plan,
    source: &'a Source,
    options: &'a FetchOptions,
    /// The variable whose chunks come next.
    variable: usize,
    /// That variable's chunks still to come, and its one existence check of the array per
    /// fetch, shared by its absent chunks.
    current: Option<(Combos, Arc<ArrayCheck>)>,
}

impl<'a> ChunkTasks<'a> {
    fn new(plan: &'a Plan, source: &'a Source, options: &'a FetchOptions) -> Self {
        Self {
            plan,
            source,
            options,
            variable: 0,
            current: None,
        }
    }
}

impl Iterator for ChunkTasks<'_> {
    type Item = ChunkTask;

    fn next(&mut self) -> Option<ChunkTask> {
        loop {
            let pv = self.plan.variables.get(self.variable)?;
            let var = &self.source.scope.variables[&pv.name];
            let (combos, array_check) = self.current.get_or_insert_with(|| {
                let groups = chunk_groups(self.plan, &pv.dims, &var.chunks);
                (Combos::new(groups), Arc::new(ArrayCheck::default()))
            });
            let Some(combo) = combos.next() else {
                self.variable += 1;
                self.current = None;
                continue;
            };
            let array = self
                .source
                .array(&pv.name)
                .expect("every variable of a scope has its array");
            let chunk: Vec<u64> = combo.iter().map(|(c, _)| *c).collect();
            let key = var.chunk_key(&chunk);
            let rows = block_rows(self.options, &pv.name, &key, &chunk, &combo, &var.chunks);
            return Some(ChunkTask {
                variable: self.variable,
                array: array.clone(),
                name: pv.name.clone(),
                shape: var.chunks.clone(),
                rows,
                combo,
                store: self.source.store.clone(),
                key,
                blosc: var.blosc_blocks,
                fill: var.fill_value.unwrap_or(f32::NAN),
                array_check: array_check.clone(),
                tables: self.options.block_tables.clone(),
                ahead: self.options.prefetched.clone(),
            });
        }
    }
}

/// The reads of chunk tasks, made one at a time: each a task on the runtime holding its
/// chunk's decoded size of the memory budget while it runs (a chunk larger than the budget
/// runs alone).
struct BoundedReads<I> {
    tasks: I,
    budget_mib: u32,
    permits: Arc<Semaphore>,
    url: String,
    chunk_cache: Option<Arc<ChunkCache>>,
}

impl<I: Iterator<Item = ChunkTask>> BoundedReads<I> {
    fn new(tasks: I, options: &FetchOptions, source: &Source) -> Self {
        let budget_mib = options.memory_budget.div_ceil(1 << 20).max(1) as u32;
        Self {
            tasks,
            budget_mib,
            permits: Arc::new(Semaphore::new(budget_mib as usize)),
            url: source.scope.url.clone(),
            chunk_cache: options.chunk_cache.clone(),
        }
    }
}

impl<I: Iterator<Item = ChunkTask>> Iterator for BoundedReads<I> {
    type Item = ChunkRead;

    /// The next read, boxed here (not by a closure passed to `map`): that keeps the whole
    /// flow future `Send` for every lifetime, which the single-flight `Shared` future needs.
    fn next(&mut self) -> Option<ChunkRead> {
        let task = self.tasks.next()?;
        let permits = self.permits.clone();
        let url = self.url.clone();
        let chunk_cache = self.chunk_cache.clone();
        let budget_mib = self.budget_mib;
        Some(Box::pin(async move {
            let chunk: Vec<u64> = task.combo.iter().map(|(c, _)| *c).collect();
            let (vi, name) = (task.variable, task.name.clone());
            let bytes = task.shape.iter().product::<u64>() * 4;
            let need = (bytes.div_ceil(1 << 20) as u32).clamp(1, budget_mib);
            let handle = tokio::spawn(async move {
                let _permit = permits.acquire_many(need).await.expect("never closed");
                task.run(chunk_cache).await
            });
            let (gathered, absent) = handle
                .await
                .map_err(|e| ChunkError::Task(e.to_string()))
                .and_then(|r| r)
                .map_err(|cause| FetchError {
                    url,
                    variable: name,
                    chunk,
                    cause,
                })?;
            Ok((vi, gathered, absent))
        }))
    }
}

/// The answer of the store to "does this array still exist?", asked once per fetch and
/// variable, at the first absent chunk.
#[derive(Default)]
struct ArrayCheck(tokio::sync::OnceCell<Result<(), ChunkError>>);

/// Accepts a missing chunk object of array `name` as an absent chunk only while the store
/// still answers for the array: its `.zarray`, or (a store with consolidated metadata only)
/// the root `.zmetadata`. Otherwise the chunk is an error naming the cause (the store
/// vanished, the prefix is wrong, access was revoked, a proxy turns denials into 404).
async fn confirm_absent(
    check: &ArrayCheck,
    store: &dyn ObjectStore,
    name: &str,
) -> Result<(), ChunkError> {
    check
        .0
        .get_or_init(|| async {
            let keys = [format!("{name}/.zarray"), ".zmetadata".to_string()];
            for key in &keys {
                match store.head(&Path::from(key.as_str())).await {
                    Ok(_) => return Ok(()),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(ChunkError::ExistenceUnknown {
                            key: key.clone(),
                            message: describe_error(&e),
                        })
                    }
                }
            }
            let [array_key, root_key] = keys;
            Err(ChunkError::SourceGone {
                array_key,
                root_key,
            })
        })
        .await
        .clone()
}

/// One chunk to read for one variable of a plan.
struct ChunkTask {
    variable: usize,
    array: Arc<crate::source::ZarrArray>,
    name: String,
    /// The chunk's shape.
    shape: Vec<u64>,
    combo: Vec<Group>,
    store: Arc<dyn ObjectStore>,
    /// The chunk's store key.
    key: String,
    /// Plain Blosc over float32: read directly ([`blocks`]) rather than through zarrs.
    blosc: bool,
    /// Only these runs of rows (a small part of the chunk), when reading block by block.
    rows: Option<Vec<std::ops::Range<usize>>>,
    fill: f32,
    array_check: Arc<ArrayCheck>,
    tables: Option<Arc<BlockTables>>,
    ahead: Option<Arc<Prefetched>>,
}

impl ChunkTask {
    /// Reads the chunk by the cheapest strategy that applies and gathers the selected points;
    /// `true` when the chunk was absent:
    ///
    /// 1. only the Blosc blocks holding the needed rows ([`ChunkTask::read_blocks`]), when
    ///    they are a small part of a plain Blosc chunk (not shared through the chunk cache:
    ///    the other rows are not decoded);
    /// 2. the whole chunk, through the chunk cache when there is one: one GET decoded here for
    ///    plain Blosc ([`ChunkTask::whole_blosc`]), else through zarrs
    ///    ([`ChunkTask::whole_through_zarrs`]).
    async fn run(self, chunk_cache: Option<Arc<ChunkCache>>) -> Result<(Placed, bool), ChunkError> {
        let chunk: Vec<u64> = self.combo.iter().map(|(c, _)| *c).collect();
        let origin: Vec<u64> = chunk.iter().zip(&self.shape).map(|(c, n)| c * n).collect();
        if let (true, Some(rows)) = (self.blosc, self.rows.clone()) {
            if let Some(part) = self.read_blocks(rows).await? {
                return Ok(match part {
                    Chunk::Data(part) => (gather(part.view(), &origin, &self.combo), false),
                    Chunk::Absent => (fill_block(&self.combo, self.fill), true),
                });
            }
        }
        let (combo, fill) = (self.combo.clone(), self.fill);
        let key = (self.name.clone(), chunk);
        let decode = self.read_whole().boxed();
        let decoded = match chunk_cache {
            Some(cache) => cache.get_or_decode(key, decode).await?,
            None => Arc::new(decode.await?),
        };
        Ok(match &*decoded {
            Chunk::Data(data) => (gather(data.view(), &origin, &combo), false),
            Chunk::Absent => (fill_block(&combo, fill), true),
        })
    }

    /// The chunk's shape as array dimensions.
    fn dims(&self) -> Vec<usize> {
        self.shape.iter().map(|&c| c as usize).collect()
    }

    /// The chunk as absent, once the store confirmed the chunk is absent and not the source
    /// gone.
    async fn absent(&self) -> Result<Chunk, ChunkError> {
        confirm_absent(&self.array_check, self.store.as_ref(), &self.name).await?;
        Ok(Chunk::Absent)
    }

    /// Strategy 1: the blocks holding `rows` (the rest of the chunk reads as the fill value
    /// and is not gathered); `None` when the chunk turns out not to be plain Blosc.
    async fn read_blocks(
        &self,
        rows: Vec<std::ops::Range<usize>>,
    ) -> Result<Option<Chunk>, ChunkError> {
        let tables = self.tables.as_deref();
        let shape = self.dims();
        match blocks::read_rows(self.reader(), &self.key, &shape, &rows, tables).await? {
            blocks::Partial::Rows(part) => Ok(Some(Chunk::Data(part))),
            blocks::Partial::Absent => Ok(Some(self.absent().await?)),
            blocks::Partial::Unsupported => Ok(None),
        }
    }

    /// Strategy 2: the whole chunk, plain Blosc first, zarrs for anything else.
    async fn read_whole(self) -> Result<Chunk, ChunkError> {
        if self.blosc {
            if let Some(chunk) = self.whole_blosc().await? {
                return Ok(chunk);
            }
        }
        self.whole_through_zarrs().await
    }

    /// Where the block reads get their bytes: what was read ahead, else the store.
    fn reader(&self) -> blocks::Reader<'_> {
        blocks::Reader {
            store: self.store.as_ref(),
            ahead: self.ahead.as_deref(),
            link: self.tables.as_deref().map(BlockTables::link),
        }
    }

    /// The whole chunk with one GET, decoded on this thread; `None` when it is not plain
    /// Blosc after all.
    async fn whole_blosc(&self) -> Result<Option<Chunk>, ChunkError> {
        Ok(
            match blocks::read_whole(self.reader(), &self.key, &self.dims()).await? {
                blocks::Partial::Rows(data) => Some(Chunk::Data(data)),
                blocks::Partial::Absent => Some(self.absent().await?),
                blocks::Partial::Unsupported => None,
            },
        )
    }

    /// The whole chunk through zarrs (any codec it knows).
    async fn whole_through_zarrs(self) -> Result<Chunk, ChunkError> {
        let indices: Vec<u64> = self.combo.iter().map(|(c, _)| *c).collect::<Vec<_>>();
        let data = self
            .array
            .async_retrieve_chunk::<ArrayD<f32>>(&indices)
            .await
            .map_err(|e| ChunkError::store(&e))?;
        // zarrs reads a missing object as the fill value without saying so: a chunk that is
        // all fill value is asked about once more (rare: only such chunks pay the request).
        let all_fill = data
            .iter()
            .all(|v| v.to_bits() == self.fill.to_bits() || (v.is_nan() && self.fill.is_nan()));
        if all_fill {
            match self.store.head(&Path::from(self.key.as_str())).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    confirm_absent(&self.array_check, self.store.as_ref(), &self.name).await?;
                    return Ok(Chunk::Absent);
                }
                Err(e) => return Err(ChunkError::store(&e)),
            }
        }
        Ok(Chunk::Data(data))
    }
}

/// The rows (all dimensions but the last, C order, flat) of a chunk that hold the selected
/// positions of `combo`, as sorted runs: for every selected position of the leading
/// dimensions but the last (e.g. each selected level of a pressure-level chunk), the run from
/// the first to the last selected position of the last leading one (latitude). Runs that
/// touch are joined.
fn needed_rows(combo: &[Group], chunk_shape: &[u64]) -> Vec<std::ops::Range<usize>> {
    let lead = combo.len().saturating_sub(1);
    if lead == 0 {
        return std::iter::once(0..1).collect();
    }
    let local = |axis: usize| -> Vec<usize> {
        let start = (combo[axis].0 * chunk_shape[axis]) as usize;
        let mut p: Vec<usize> = combo[axis].1.iter().map(|p| p.1 - start).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    // Flat row index of the start of each run over the outer leading dimensions.
    let mut bases = vec![0usize];
    for axis in 0..lead - 1 {
        let n = chunk_shape[axis + 1] as usize;
        let positions = local(axis);
        bases = bases
            .iter()
            .flat_map(|b| positions.iter().map(move |p| b + p))
            .collect();
        for b in &mut bases {
            *b *= n;
        }
    }
    let last = local(lead - 1);
    let (lo, hi) = (
        last.first().copied().unwrap_or(0),
        last.last().copied().unwrap_or(0),
    );
    let mut runs: Vec<std::ops::Range<usize>> = Vec::with_capacity(bases.len());
    for b in bases {
        let r = b + lo..b + hi + 1;
        match runs.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => runs.push(r),
        }
    }
    runs
}

/// Rows in `runs`.
fn row_count(runs: &[std::ops::Range<usize>]) -> usize {
    runs.iter().map(|r| r.len()).sum()
}

/// Per dimension of a variable (`dims`, chunked by `chunks`), its selected positions grouped
/// by chunk.
fn chunk_groups(plan: &Plan, dims: &[String], chunks: &[u64]) -> Vec<Vec<Group>> {
    dims.iter()
        .zip(chunks)
        .map(|(d, &chunk_len)| group_by_chunk(&plan.selections[d].indices, chunk_len))
        .collect()
}

/// Rows of a chunk: the product of all but its last dimension.
fn rows_per_chunk(chunks: &[u64]) -> usize {
    chunks[..chunks.len().saturating_sub(1)]
        .iter()
        .product::<u64>() as usize
}

/// Groups selected source positions by chunk index, keeping their output positions.
/// Linear in the number of positions (a list of 10⁶ hours is 10⁶ chunks).
fn group_by_chunk(indices: &[usize], chunk_len: u64) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut at: HashMap<u64, usize> = HashMap::new();
    for (out, &src) in indices.iter().enumerate() {
        let c = src as u64 / chunk_len.max(1);
        match at.get(&c) {
            Some(&g) => groups[g].1.push((out, src)),
            None => {
                at.insert(c, groups.len());
                groups.push((c, vec![(out, src)]));
            }
        }
    }
    groups
}

/// Every combination of one group per dimension, the last dimension fastest, made one at a
/// time (a plan over a million hours has a million).
struct Combos {
    groups: Vec<Vec<Group>>,
    /// The group of each dimension in the next combination; `None` once all were made.
    at: Option<Vec<usize>>,
}

impl Combos {
    fn new(groups: Vec<Vec<Group>>) -> Self {
        let at = groups
            .iter()
            .all(|g| !g.is_empty())
            .then(|| vec![0; groups.len()]);
        Self { groups, at }
    }
}

impl Iterator for Combos {
    type Item = Vec<Group>;

    fn next(&mut self) -> Option<Vec<Group>> {
        let at = self.at.as_mut()?;
        let combo = at
            .iter()
            .zip(&self.groups)
            .map(|(&i, g)| g[i].clone())
            .collect();
        // The next combination: the last dimension that can move on does, those after it
        // start again.
        let mut axis = at.len();
        loop {
            if axis == 0 {
                self.at = None;
                break;
            }
            axis -= 1;
            at[axis] += 1;
            if at[axis] < self.groups[axis].len() {
                break;
            }
            at[axis] = 0;
        }
        Some(combo)
    }
}

/// The selected points of an absent chunk, all the fill value, placed like a gathered block.
fn fill_block(combo: &[Group], fill: f32) -> Placed {
    let out_positions: Vec<Vec<usize>> = combo
        .iter()
        .map(|(_, positions)| positions.iter().map(|&(out, _)| out).collect())
        .collect();
    let shape: Vec<usize> = out_positions.iter().map(Vec::len).collect();
    (out_positions, ArrayD::from_elem(IxDyn(&shape), fill))
}

/// Output placement of a gathered block: per dimension, the output positions in block order.
type Placed = (Vec<Vec<usize>>, ArrayD<f32>);

/// Picks the selected points out of a decoded chunk whose first element sits at `origin`,
/// in output order.
fn gather(chunk: ArrayViewD<'_, f32>, origin: &[u64], combo: &[Group]) -> Placed {
    let mut block: Option<ArrayD<f32>> = None;
    let mut out_positions = Vec::with_capacity(combo.len());
    for (axis, ((_, positions), &start)) in combo.iter().zip(origin).enumerate() {
        let local: Vec<usize> = positions
            .iter()
            .map(|&(_, src)| src - start as usize)
            .collect();
        let current = block.as_ref().map_or_else(|| chunk.view(), |b| b.view());
        let contiguous = local.windows(2).all(|w| w[1] == w[0] + 1)
            && local.first() == Some(&0)
            && local.len() == current.len_of(Axis(axis));
        if !contiguous {
            block = Some(current.select(Axis(axis), &local));
        }
        out_positions.push(positions.iter().map(|&(out, _)| out).collect());
    }
    let block = block.unwrap_or_else(|| chunk.to_owned());
    (out_positions, block)
}

/// Writes a gathered block into the output array at its output positions.
fn place(output: &mut ArrayD<f32>, out_positions: &[Vec<usize>], block: ArrayD<f32>) {
    let runs: Option<Vec<(usize, usize)>> = out_positions
        .iter()
        .map(|p| {
            let contiguous = p.windows(2).all(|w| w[1] == w[0] + 1);
            contiguous.then(|| (p[0], p[0] + p.len()))
        })
        .collect();
    match runs {
        Some(runs) => {
            let mut view = output.view_mut();
            for (axis, (a, b)) in runs.into_iter().enumerate() {
                view.slice_axis_inplace(Axis(axis), Slice::from(a..b));
            }
            view.assign(&block);
        }
        None => {
            for (idx, &v) in block.indexed_iter() {
                let target: Vec<usize> = idx
                    .slice()
                    .iter()
                    .zip(out_positions)
                    .map(|(&i, p)| p[i])
                    .collect();
                output[IxDyn(&target)] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_chunk_is_absent_only_while_its_array_answers() {
        let store = object_store::memory::InMemory::new();
        let check = ArrayCheck::default();
        let e = confirm_absent(&check, &store, "t2m").await.unwrap_err();
        assert!(
            matches!(e, ChunkError::SourceGone { ref array_key, .. } if array_key == "t2m/.zarray")
        );
        assert!(
            e.to_string()
                .contains("refusing to read the chunk as missing data"),
            "{e}"
        );
        store
            .put(&Path::from("t2m/.zarray"), "{}".into())
            .await
            .unwrap();
        assert_eq!(
            confirm_absent(&ArrayCheck::default(), &store, "t2m").await,
            Ok(())
        );
        // Asked once per fetch: the first answer stands for its other chunks.
        assert!(confirm_absent(&check, &store, "t2m").await.is_err());
        // A store with only consolidated metadata answers for its arrays through it.
        store
            .put(&Path::from(".zmetadata"), "{}".into())
            .await
            .unwrap();
        assert_eq!(
            confirm_absent(&ArrayCheck::default(), &store, "sp").await,
            Ok(())
        );
    }

    #[test]
    fn groups_follow_chunks_and_keep_output_order() {
        let g = group_by_chunk(&[5, 6, 10, 3], 4);
        assert_eq!(
            g,
            vec![
                (1, vec![(0, 5), (1, 6)]),
                (2, vec![(2, 10)]),
                (0, vec![(3, 3)])
            ]
        );
    }

    /// Combinations are made one at a time, the last dimension fastest (the order the reads
    /// were always made in), and none when a dimension has no group.
    #[test]
    fn combinations_come_one_at_a_time_last_dimension_fastest() {
        let dim = |chunks: &[u64]| -> Vec<Group> {
            chunks.iter().map(|&c| (c, vec![(c as usize, 0)])).collect()
        };
        let chunks = |combo: Vec<Group>| combo.iter().map(|(c, _)| *c).collect::<Vec<_>>();
        let all: Vec<Vec<u64>> = Combos::new(vec![dim(&[0, 1]), dim(&[5]), dim(&[7, 8, 9])])
            .map(chunks)
            .collect();
        assert_eq!(
            all,
            [
                [0, 5, 7],
                [0, 5, 8],
                [0, 5, 9],
                [1, 5, 7],
                [1, 5, 8],
                [1, 5, 9]
            ]
        );
        assert_eq!(Combos::new(vec![dim(&[0, 1]), dim(&[])]).count(), 0);
        assert_eq!(
            Combos::new(vec![dim(&[3])]).map(chunks).collect::<Vec<_>>(),
            [[3]]
        );
    }

    /// An absent chunk gives only its selected points, as the fill value, where they go.
    #[test]
    fn an_absent_chunk_fills_only_its_selected_points() {
        let combo = vec![(2, vec![(0, 40), (1, 41)]), (0, vec![(3, 5)])];
        let (positions, block) = fill_block(&combo, -1.0);
        assert_eq!(positions, [vec![0, 1], vec![3]]);
        assert_eq!(block.shape(), [2, 1]);
        assert!(block.iter().all(|&v| v == -1.0));
    }

    #[test]
    fn gather_and_place_handle_wrapped_longitudes() {
        // A 1x6 chunk; output wants source columns 4,5,0,1 (a 0° crossing) in that order.
        let block =
            ArrayD::from_shape_vec(IxDyn(&[1, 6]), (0..6).map(|x| x as f32).collect()).unwrap();
        let combo = vec![(0, vec![(0, 0)]), (0, vec![(0, 4), (1, 5), (2, 0), (3, 1)])];
        let (pos, b) = gather(block.view(), &[0, 0], &combo);
        let mut out = ArrayD::from_elem(IxDyn(&[1, 4]), f32::NAN);
        place(&mut out, &pos, b);
        assert_eq!(
            out.iter().copied().collect::<Vec<_>>(),
            vec![4.0, 5.0, 0.0, 1.0]
        );
    }
}
