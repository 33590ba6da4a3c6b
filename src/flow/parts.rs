//! Files served by their parts: a read builds only the slabs under it.
//!
//! Input: the plan of a classic file too large to build whole at its first read
//! ([`by_parts`]). Output: any byte range of it, answered from the layout where the bytes
//! follow from it (header, coordinates, padding: [`Regions::known_bytes`]) and from the
//! file's partial entry for the slabs (one time step of one data variable,
//! [`crate::encode::regions::Slab`]), each slab built at the first read that touches it.
//!
//! Invariants: a byte served is the byte the whole file has (a slab's bytes are encoded from
//! the very data a whole build reads, by the same encoder); a slab is built once per process
//! at a time (single flight per slab; two processes may build the same slab, which writes
//! identical bytes), and never served unless it matches the checksums recorded when it was
//! written (a damaged slab is built again); a slab written survives a restart (its record in
//! the slab table follows its bytes). When every slab is present the partial entry becomes
//! an ordinary complete entry (whole-file checksum, rename into place, the S3 tier). Design:
//! docs/ARCHITECTURE.md, "Plan: files that cost what is read".

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use ndarray::Axis;

use super::{build_bytes, key_of, Flow, FlowError};
use crate::cache::partial::PartialEntry;
use crate::cache::sums::BlockSums;
use crate::cache::CacheError;
use crate::encode::regions::{slab_bytes, Region, Regions, Slab};
use crate::fetch;
use crate::layout::Format;
use crate::plan::Plan;

/// Files of at least this size are served by their parts; smaller ones are built whole at
/// their first read, as one flow run (cheaper than many for a file of a few hours). The
/// same size at which the layout takes the shape for it ([`crate::layout::PARTS_FROM`]).
pub const PARTS_FROM: u64 = crate::layout::PARTS_FROM;

/// Slabs one build reads together at most (one fetch: its chunk reads in flight at once).
const RUN: usize = 8;

/// Bytes of slabs one build holds at most (fewer slabs per build where slabs are large: a
/// whole-globe slab is 4 MB, a pressure-level one up to 154 MB).
const RUN_BYTES: u64 = 16 << 20;

/// A read that touches at most this fraction of a slab at one of its own ends (the edge of
/// a neighbour: readers read in aligned blocks) builds a piece of it, not the slab.
const PIECE_FRACTION: u64 = 4;

/// Pieces kept in memory per file (a reader that reads a time step again finds the edges
/// of its neighbours), and the bytes they may hold.
const PIECES_KEPT: usize = 8;

/// Pieces of one slab at most (kept or in flight); a read wanting another part builds it.
const PIECES_PER_SLAB: usize = 2;
const PIECES_KEPT_BYTES: usize = 8 << 20;

/// The largest read-ahead window of a sequential reader, in slabs.
pub const MAX_WINDOW: u64 = 64;

/// Whether the file of `plan` is served by its parts: a classic file of more than one slab
/// and at least `from` bytes ([`PARTS_FROM`] unless set otherwise). NetCDF-4 files (written
/// by libnetcdf through HDF5, whose layout is known only once written) and files with a
/// representation (a period's value needs all its hours) are always built whole.
pub fn by_parts(plan: &Plan, from: u64) -> bool {
    plan.format == Format::Classic64 && plan.size >= from && plan.representation.is_none() && {
        let regions = Regions::of(&plan.layout);
        regions.slab_count() > 1
    }
}

type SharedRun = Shared<BoxFuture<'static, Result<(), Arc<FlowError>>>>;

/// What is known of the slabs in this process.
#[derive(Default)]
struct State {
    /// Slabs checked sound (built here, or read back and compared with their record), with
    /// the checksums of their blocks: every read of them is compared with these.
    sound: HashMap<u64, Arc<BlockSums>>,
    /// Builds in flight, by slab.
    building: HashMap<u64, SharedRun>,
    /// Completion has started (or is done).
    completing: bool,
    /// Pieces built lately, newest last (at most [`PIECES_KEPT`]).
    pieces: VecDeque<Arc<Piece>>,
    /// Piece builds in flight, by slab and byte range.
    piece_builds: HashMap<(u64, u64, u64), SharedPiece>,
}

type SharedPiece = Shared<BoxFuture<'static, Result<Arc<Piece>, Arc<FlowError>>>>;

/// Some bytes of a slab not built: the rows (indices of the slab's first dimension) that a
/// read touched at an edge, encoded from their own fetch by the same encoder as the slab.
#[derive(Debug)]
struct Piece {
    slab: u64,
    /// Where its bytes lie in the file.
    range: Range<u64>,
    bytes: Vec<u8>,
}

impl Piece {
    fn holds(&self, slab: u64, range: &Range<u64>) -> bool {
        self.slab == slab && self.range.start <= range.start && range.end <= self.range.end
    }
}

/// One file served by its parts (shared by every handle of the file in a process).
pub struct PartsFile {
    flow: Flow,
    plan: Plan,
    regions: Regions,
    entry: PartialEntry,
    /// For each variable of the layout, its place among the plan's data variables.
    data_index: Vec<Option<usize>>,
    /// The header counts absent chunks (a small file served by parts, in tests): a slab of
    /// an absent chunk is then an error, since the header, already read, counts none.
    counts_absent: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for PartsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartsFile")
            .field("file", &self.plan.file_name)
            .field("slabs", &self.regions.slab_count())
            .finish_non_exhaustive()
    }
}

/// Why a read of checked slab bytes failed.
enum SlabRead {
    /// The slab is not (or no longer) known sound: build or check it first.
    Unknown,
    /// Its bytes on disk differ from its checksums: it must be built again.
    Damaged(u64, std::io::Error),
}

impl PartsFile {
    /// The file of `plan` served by its parts: its partial entry opened (the one on disk
    /// reused) and its known regions written into it.
    pub(super) fn open(flow: Flow, plan: Plan) -> Result<Arc<Self>, Arc<FlowError>> {
        let regions = Regions::of(&plan.layout);
        let entry = flow
            .tiers
            .local()
            .open_partial(&plan.identity, plan.size, regions.slab_count())
            .map_err(|e| Arc::new(e.into()))?;
        let data_index = plan.layout.data_index();
        let counts_absent = plan
            .layout
            .attributes
            .iter()
            .any(|(name, _)| name == crate::plan::ABSENT_CHUNKS_ATTRIBUTE);
        let file = Arc::new(Self {
            flow,
            plan,
            regions,
            entry,
            data_index,
            counts_absent,
            state: Mutex::new(State::default()),
        });
        file.write_known()?;
        Ok(file)
    }

    /// Writes every known region into the partial file (idempotent: the same bytes).
    fn write_known(&self) -> Result<(), Arc<FlowError>> {
        let layout = &self.plan.layout;
        for region in self.regions.under(layout, 0..self.regions.size()) {
            if let Region::Known(r) = region {
                let bytes = self
                    .regions
                    .known_bytes(layout, r.clone())
                    .expect("a known region");
                self.entry
                    .write_known(r.start, &bytes)
                    .map_err(|e| Arc::new(self.cache_error("writing known bytes", e)))?;
            }
        }
        Ok(())
    }

    fn cache_error(&self, context: &'static str, cause: std::io::Error) -> FlowError {
        FlowError::Cache(CacheError {
            path: format!("{} (partial entry)", self.plan.identity),
            context,
            cause,
        })
    }

    /// The file's plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The size of the whole file.
    pub fn size(&self) -> u64 {
        self.regions.size()
    }

    /// The number of slabs, and how many are known sound in this process.
    pub fn progress(&self) -> (u64, u64) {
        let sound = self.state.lock().expect("poisoned").sound.len() as u64;
        (self.regions.slab_count(), sound)
    }

    /// The slabs that overlap `range`.
    fn slabs_under(&self, range: Range<u64>) -> Vec<u64> {
        let layout = &self.plan.layout;
        self.regions
            .under(layout, range)
            .into_iter()
            .filter_map(|r| match r {
                Region::Slab {
                    variable, record, ..
                } => self.regions.slab_index(variable, record),
                Region::Known(_) => None,
            })
            .collect()
    }

    /// The size of a slab (the first one's; a file's slabs differ only by padding and by
    /// variable).
    pub fn slab_size(&self) -> u64 {
        self.regions
            .slab(0)
            .map_or(0, |s| s.range.end - s.range.start)
    }

    /// Whether `range` holds bytes of a slab (not only known bytes).
    pub fn touches_slab(&self, range: Range<u64>) -> bool {
        !self.slabs_under(range).is_empty()
    }

    /// The `n` slabs after byte `at` (those that end after it), in file order.
    pub fn slabs_after(&self, at: u64, n: u64) -> Vec<u64> {
        let count = self.regions.slab_count();
        // Slab ranges grow with their index: the first that ends after `at`.
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let end = self.regions.slab(mid).map_or(u64::MAX, |s| s.range.end);
            if end <= at {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..count.min(lo.saturating_add(n))).collect()
    }

    /// Up to `size` bytes at `offset`, at once, if every slab under them is known sound (or
    /// held by a piece in memory); `None` when one must first be built or checked (then use
    /// [`PartsFile::read`]).
    pub fn read_now(&self, offset: u64, size: u32) -> Option<Result<Vec<u8>, Arc<FlowError>>> {
        match self.assemble(offset, size, &[]) {
            Ok(bytes) => Some(Ok(bytes)),
            Err(SlabRead::Unknown) => None,
            Err(SlabRead::Damaged(slab, e)) => {
                self.forget_damaged(slab, &e);
                None
            }
        }
    }

    /// Up to `size` bytes at `offset` (none at or past the end): the slabs under them built
    /// or checked first, except those the read touches only at an edge (see
    /// [`PartsFile::edges`]), of which a piece is built. `follows_on`: the read continues
    /// the reader's previous one.
    pub async fn read(
        self: &Arc<Self>,
        offset: u64,
        size: u32,
        follows_on: bool,
    ) -> Result<Vec<u8>, Arc<FlowError>> {
        let end = self.size().min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut last = None;
        // A slab damaged between its check and the read is built again; twice in a row is
        // an error (a disk that does not keep what is written), never its bytes.
        for _ in 0..3 {
            // The slabs and the pieces at once (one round trip for a time step's read).
            let under = self.slabs_under(offset..end);
            let edges = self.edges(&under, offset..end, follows_on);
            let (whole, edge): (Vec<u64>, Vec<u64>) =
                under.into_iter().partition(|s| !edges.contains(s));
            let edge_parts = futures::future::try_join_all(edge.into_iter().map(|s| {
                let edges = &edges;
                async move {
                    let unbuilt = self.ensure_except(vec![s], edges).await?;
                    self.pieces(unbuilt, offset..end).await
                }
            }));
            let (built, pieces) = futures::join!(self.ensure(whole), edge_parts);
            built?;
            let pieces: Vec<Arc<Piece>> = pieces?.into_iter().flatten().collect();
            match self.assemble(offset, size, &pieces) {
                Ok(bytes) => return Ok(bytes),
                Err(SlabRead::Unknown) => {}
                Err(SlabRead::Damaged(slab, e)) => {
                    self.forget_damaged(slab, &e);
                    last = Some(e);
                }
            }
        }
        Err(Arc::new(self.cache_error(
            "reading slabs that keep changing on disk",
            last.unwrap_or_else(|| std::io::Error::other("slabs not kept")),
        )))
    }

    /// The slabs of `under` (those under `range`) of which a piece is built rather than the
    /// slab: those the read touches by at most 1/[`PIECE_FRACTION`] of their bytes where the
    /// reader is not going through the slab. That is, unless the read continues the reader's previous one
    /// (`follows_on`): its end (the aligned start of a block read that begins before what the
    /// reader wants) or a few bytes inside (a probe: libnetcdf looks for an HDF5 signature at
    /// 512 × 2^k); and when it continues, the slab's start only (the aligned end of a block
    /// read past what the reader wants). A read that enters a slab at its start without
    /// following on, or goes on inside one, builds it whole.
    fn edges(&self, under: &[u64], range: Range<u64>, follows_on: bool) -> HashSet<u64> {
        under
            .iter()
            .copied()
            .filter(|&s| {
                let slab = self.regions.slab(s).expect("a slab index");
                let r = &slab.range;
                let touched = range.end.min(r.end) - range.start.max(r.start);
                let ends_inside = range.end < r.end;
                let edge = if range.start > r.start {
                    !(follows_on && ends_inside)
                } else {
                    follows_on && ends_inside
                };
                edge && touched * PIECE_FRACTION <= r.end - r.start
                    && self.piece_axis(&slab).is_some()
            })
            .collect()
    }

    /// The dimension a piece of `slab` is cut along (the slab's first: latitude, or level),
    /// its length, and the bytes of one index of it; `None` for a slab that is not a time
    /// step of a variable of at least two dimensions.
    fn piece_axis(&self, slab: &Slab) -> Option<(&str, u64, u64)> {
        slab.record?;
        let k = self.data_index.get(slab.variable).copied().flatten()?;
        let dims = &self.plan.variables[k].dims;
        let axis = dims.get(1)?;
        let len = |d: &String| self.plan.selections.get(d).map(|r| r.indices.len() as u64);
        let n = len(axis)?;
        let stride = dims[2..]
            .iter()
            .try_fold(4u64, |acc, d| Some(acc * len(d)?))?;
        Some((axis.as_str(), n, stride))
    }

    fn forget_damaged(&self, slab: u64, e: &std::io::Error) {
        tracing::warn!(
            file = %self.plan.file_name,
            "slab {slab}: {e}; it will be built again"
        );
        self.state.lock().expect("poisoned").sound.remove(&slab);
        let _ = self.entry.invalidate(slab);
    }

    /// The bytes of `[offset, offset + size)` from the layout, the sound slabs and the
    /// pieces (`pieces`, and those kept in memory).
    fn assemble(&self, offset: u64, size: u32, pieces: &[Arc<Piece>]) -> Result<Vec<u8>, SlabRead> {
        /// Where the bytes of one region come from.
        enum Bytes {
            Known,
            Sound(Arc<BlockSums>),
            Piece(Arc<Piece>),
        }
        let end = self.size().min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let layout = &self.plan.layout;
        let regions = self.regions.under(layout, offset..end);
        let sources: Vec<Bytes> = {
            let state = self.state.lock().expect("poisoned");
            regions
                .iter()
                .map(|region| match region {
                    Region::Slab {
                        variable,
                        record,
                        range,
                    } => {
                        let i = self
                            .regions
                            .slab_index(*variable, *record)
                            .ok_or(SlabRead::Unknown)?;
                        if let Some(sums) = state.sound.get(&i) {
                            return Ok(Bytes::Sound(sums.clone()));
                        }
                        let want = offset.max(range.start)..end.min(range.end);
                        pieces
                            .iter()
                            .chain(state.pieces.iter().rev())
                            .find(|p| p.holds(i, &want))
                            .map(|p| Bytes::Piece(p.clone()))
                            .ok_or(SlabRead::Unknown)
                    }
                    Region::Known(_) => Ok(Bytes::Known),
                })
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (region, source) in regions.iter().zip(sources) {
            let r = region.range();
            let (from, to) = (offset.max(r.start), end.min(r.end));
            match source {
                Bytes::Known => out.extend_from_slice(
                    &self
                        .regions
                        .known_bytes(layout, from..to)
                        .expect("a known region"),
                ),
                Bytes::Sound(sums) => {
                    let bytes = sums
                        .read_checked_at(self.entry.data_file(), r.start, from - r.start, to - from)
                        .map_err(|e| {
                            let slab = match region {
                                Region::Slab {
                                    variable, record, ..
                                } => self.regions.slab_index(*variable, *record),
                                Region::Known(_) => None,
                            };
                            SlabRead::Damaged(slab.unwrap_or(0), e)
                        })?;
                    out.extend_from_slice(&bytes);
                }
                Bytes::Piece(p) => {
                    let at = (from - p.range.start) as usize;
                    out.extend_from_slice(&p.bytes[at..at + (to - from) as usize]);
                }
            }
        }
        Ok(out)
    }

    /// Makes `slabs` sound: checks those present on disk, builds the others (or waits for
    /// their builds in flight).
    pub async fn ensure(self: &Arc<Self>, slabs: Vec<u64>) -> Result<(), Arc<FlowError>> {
        self.ensure_except(slabs, &HashSet::new()).await.map(drop)
    }

    /// As [`PartsFile::ensure`], except that the slabs of `edges` neither sound, nor in
    /// flight, nor present on disk are not built: they are returned.
    async fn ensure_except(
        self: &Arc<Self>,
        slabs: Vec<u64>,
        edges: &HashSet<u64>,
    ) -> Result<Vec<u64>, Arc<FlowError>> {
        let mut waits = Vec::new();
        let mut unknown = Vec::new();
        {
            let state = self.state.lock().expect("poisoned");
            for s in slabs {
                if state.sound.contains_key(&s) {
                    continue;
                }
                match state.building.get(&s) {
                    Some(run) => waits.push(run.clone()),
                    None => unknown.push(s),
                }
            }
        }
        // Present on disk (an earlier process, another handle): checked once, not rebuilt.
        let mut absent = Vec::new();
        let mut unbuilt = Vec::new();
        for s in unknown {
            let slab = self.regions.slab(s).expect("a slab index");
            let len = slab.range.end - slab.range.start;
            match self.entry.read_slab(s, slab.range.start, len) {
                Ok(Some(bytes)) => {
                    let (_, sums) = BlockSums::of_bytes(&bytes);
                    let mut state = self.state.lock().expect("poisoned");
                    state.sound.insert(s, Arc::new(sums));
                }
                Ok(None) if edges.contains(&s) => unbuilt.push(s),
                Ok(None) => absent.push(s),
                Err(e) => return Err(Arc::new(self.cache_error("reading a slab", e))),
            }
        }
        // The absent ones, by variable, in runs of at most RUN slabs.
        let mut by_variable: BTreeMap<usize, Vec<(u64, Option<u64>)>> = BTreeMap::new();
        for s in absent {
            let slab = self.regions.slab(s).expect("a slab index");
            by_variable
                .entry(slab.variable)
                .or_default()
                .push((s, slab.record));
        }
        {
            let mut state = self.state.lock().expect("poisoned");
            for (variable, slabs) in by_variable {
                let per_run = (RUN_BYTES / self.slab_size().max(1)).clamp(1, RUN as u64);
                for run in slabs.chunks(per_run as usize) {
                    // Started meanwhile by another reader: wait for that one instead.
                    let mut mine = Vec::new();
                    for &(s, record) in run {
                        if state.sound.contains_key(&s) {
                            continue;
                        }
                        match state.building.get(&s) {
                            Some(other) => waits.push(other.clone()),
                            None => mine.push((s, record)),
                        }
                    }
                    if mine.is_empty() {
                        continue;
                    }
                    let this = self.clone();
                    let slabs = mine.clone();
                    let build = async move { this.build_run(variable, slabs).await }
                        .boxed()
                        .shared();
                    for &(s, _) in &mine {
                        state.building.insert(s, build.clone());
                    }
                    waits.push(build);
                }
            }
        }
        futures::future::try_join_all(waits).await?;
        Ok(unbuilt)
    }

    /// Starts building the `n` slabs after byte `at` in the background (a sequential
    /// reader's read-ahead); failures are left to the reads that need those slabs.
    pub fn read_ahead(self: &Arc<Self>, runtime: &tokio::runtime::Handle, at: u64, n: u64) {
        let slabs = self.slabs_after(at, n);
        if slabs.is_empty() {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            if let Err(e) = this.ensure(slabs).await {
                tracing::debug!(file = %this.plan.file_name, "read-ahead: {e}");
            }
        });
    }

    /// The plan of one build: the data variable of layout index `variable`, at the records
    /// of `slabs` (in their order), or whole for a variable without the record dimension.
    fn sub_plan(&self, variable: usize, slabs: &[(u64, Option<u64>)]) -> Plan {
        let k = self.data_index[variable].expect("a data variable");
        let mut sub = self.plan.clone();
        let pv = self.plan.variables[k].clone();
        if slabs.iter().all(|(_, r)| r.is_some()) {
            let time = &pv.dims[0];
            let all = &self.plan.selections[time];
            let picked = sub.selections.get_mut(time).expect("the record dimension");
            picked.indices = slabs
                .iter()
                .map(|(_, r)| all.indices[r.expect("a record") as usize])
                .collect();
            picked.labels = slabs
                .iter()
                .map(|(_, r)| all.labels[r.expect("a record") as usize])
                .collect();
        }
        sub.variables = vec![pv];
        sub
    }

    async fn build_run(
        self: Arc<Self>,
        variable: usize,
        slabs: Vec<(u64, Option<u64>)>,
    ) -> Result<(), Arc<FlowError>> {
        let result = self.build_run_inner(variable, &slabs).await;
        let complete = {
            let mut state = self.state.lock().expect("poisoned");
            for (s, _) in &slabs {
                state.building.remove(s);
            }
            match &result {
                Ok(sums) => {
                    for (s, sums) in sums {
                        state.sound.insert(*s, sums.clone());
                    }
                }
                Err(_) => {
                    self.flow.metrics.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            let all = state.sound.len() as u64 == self.regions.slab_count();
            let start = all && !state.completing;
            if start {
                state.completing = true;
            }
            start
        };
        if complete {
            let this = self.clone();
            tokio::spawn(async move { this.complete().await });
        }
        result.map(|_| ()).map_err(Arc::new)
    }

    async fn build_run_inner(
        self: &Arc<Self>,
        variable: usize,
        slabs: &[(u64, Option<u64>)],
    ) -> Result<Vec<(u64, Arc<BlockSums>)>, FlowError> {
        let flow = &self.flow;
        if let Some(e) = flow.pin_moved(&self.plan) {
            return Err(e);
        }
        let sub = self.sub_plan(variable, slabs);
        let need = build_bytes(&sub, &flow.source, &flow.fetch);
        let _memory = flow.memory.reserve(need).await;
        flow.metrics.slab_builds.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch::fetch(&sub, &flow.source, &flow.fetch).await?;
        let absent = fetched.absent_chunks;
        if absent > 0 && self.counts_absent {
            return Err(FlowError::AbsentInPart {
                file: self.plan.file_name.clone(),
                absent,
            });
        }
        if absent > 0 && slabs.len() > 1 {
            // Which slab read the missing chunks: one by one (each slab records its own).
            drop(_memory);
            let mut done = Vec::with_capacity(slabs.len());
            for one in slabs {
                done.extend(
                    Box::pin(self.build_run_inner(variable, std::slice::from_ref(one))).await?,
                );
            }
            return Ok(done);
        }
        if absent > 0 {
            tracing::warn!(
                file = %self.plan.file_name,
                "{absent} chunk(s) do not exist in the source (its array does): read as missing \
                 values, as xarray does; the entry will be marked ({})",
                crate::cache::ABSENT_XATTR
            );
        }
        let array = fetched
            .arrays
            .into_iter()
            .next()
            .expect("one array per variable");
        let this = self.clone();
        let slabs = slabs.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut done = Vec::with_capacity(slabs.len());
            for (k, (s, record)) in slabs.into_iter().enumerate() {
                let slab = this.regions.slab(s).expect("a slab index");
                let view = match record {
                    Some(_) => array.index_axis(Axis(0), k),
                    None => array.view(),
                };
                let bytes = slab_bytes(view, slab.range.end - slab.range.start);
                this.entry
                    .write_slab(s, slab.range.start, &bytes, absent as u32)
                    .map_err(|e| Box::new(this.cache_error("writing a slab", e)))?;
                done.push((s, Arc::new(BlockSums::of_bytes(&bytes).1)));
            }
            Ok(done)
        })
        .await
        .map_err(|e| FlowError::Join(e.to_string()))?
        .map_err(|e: Box<FlowError>| *e)
    }

    /// The pieces of `slabs` under `range` (see [`PartsFile::piece`]); a slab built whole
    /// instead has none.
    async fn pieces(
        self: &Arc<Self>,
        slabs: Vec<u64>,
        range: Range<u64>,
    ) -> Result<Vec<Arc<Piece>>, Arc<FlowError>> {
        let wants = slabs.into_iter().map(|s| {
            let r = self.regions.slab(s).expect("a slab index").range;
            self.piece(s, range.start.max(r.start)..range.end.min(r.end))
        });
        let got = futures::future::try_join_all(wants).await?;
        Ok(got.into_iter().flatten().collect())
    }

    /// The piece of slab `s` holding `want`: one kept or in flight, or built here (single
    /// flight per piece). A slab is worth [`PIECES_PER_SLAB`] pieces: one more part of it
    /// wanted builds the slab whole (then `None`), as readers touching it in several places
    /// read it.
    async fn piece(
        self: &Arc<Self>,
        s: u64,
        want: Range<u64>,
    ) -> Result<Option<Arc<Piece>>, Arc<FlowError>> {
        let rows = self.piece_range(s, &want);
        let key = (s, rows.start, rows.end);
        let build = {
            let mut state = self.state.lock().expect("poisoned");
            let mut kept = 0;
            for p in state.pieces.iter().rev().filter(|p| p.slab == s) {
                if p.holds(s, &want) {
                    return Ok(Some(p.clone()));
                }
                kept += 1;
            }
            let flying = state.piece_builds.keys().filter(|k| k.0 == s).count();
            match state.piece_builds.get(&key) {
                Some(build) => Some(build.clone()),
                None if kept + flying >= PIECES_PER_SLAB => None,
                None => {
                    let this = self.clone();
                    let build = async move {
                        let result = this.build_piece(s, want).await.map_err(|e| {
                            this.flow.metrics.failures.fetch_add(1, Ordering::Relaxed);
                            Arc::new(e)
                        });
                        let mut state = this.state.lock().expect("poisoned");
                        state.piece_builds.remove(&key);
                        if let Ok(p) = &result {
                            state.pieces.push_back(p.clone());
                            while state.pieces.len() > PIECES_KEPT
                                || state.pieces.iter().map(|p| p.bytes.len()).sum::<usize>()
                                    > PIECES_KEPT_BYTES
                            {
                                state.pieces.pop_front();
                            }
                        }
                        result
                    }
                    .boxed()
                    .shared();
                    state.piece_builds.insert(key, build.clone());
                    Some(build)
                }
            }
        };
        match build {
            Some(build) => build.await.map(Some),
            None => {
                self.ensure(vec![s]).await?;
                Ok(None)
            }
        }
    }

    /// The bytes of the piece of slab `s` that holds `want`: whole indices of the slab's
    /// first dimension (the padding after the last one with it).
    fn piece_range(&self, s: u64, want: &Range<u64>) -> Range<u64> {
        let slab = self.regions.slab(s).expect("a slab index");
        let (_, n, stride) = self.piece_axis(&slab).expect("a slab with pieces");
        let (from, to) = (want.start - slab.range.start, want.end - slab.range.start);
        let (i0, i1) = ((from / stride).min(n), to.div_ceil(stride).min(n));
        let start = slab.range.start + i0 * stride;
        let end = if i1 == n {
            slab.range.end
        } else {
            slab.range.start + i1 * stride
        };
        start..end
    }

    /// A piece of slab `s` holding the bytes `want`: the indices of the slab's first
    /// dimension under them ([`PartsFile::piece_range`]), fetched (their chunks' needed
    /// blocks only) and encoded as the slab's build would encode them. Not written to the
    /// entry: the slab is built whole when a read needs more of it.
    async fn build_piece(
        self: &Arc<Self>,
        s: u64,
        want: Range<u64>,
    ) -> Result<Arc<Piece>, FlowError> {
        let slab = self.regions.slab(s).expect("a slab index");
        let (axis, n, stride) = self.piece_axis(&slab).expect("a slab with pieces");
        let axis = axis.to_string();
        let range = self.piece_range(s, &want);
        let len = range.end - range.start;
        // The padding after the last index is shorter than one (at most 3 bytes).
        let i0 = (range.start - slab.range.start) / stride;
        let i1 = ((range.end - slab.range.start) / stride).min(n);
        let start = range.start;
        if i0 >= i1 {
            // Only the padding after the slab's values: zeros, as the slab has.
            return Ok(Arc::new(Piece {
                slab: s,
                range,
                bytes: vec![0; len as usize],
            }));
        }
        let flow = &self.flow;
        if let Some(e) = flow.pin_moved(&self.plan) {
            return Err(e);
        }
        let mut sub = self.sub_plan(slab.variable, &[(s, slab.record)]);
        let picked = sub
            .selections
            .get_mut(&axis)
            .expect("the slab's first dimension");
        let (lo, hi) = (i0 as usize, i1 as usize);
        picked.indices = picked.indices[lo..hi].to_vec();
        picked.labels = picked.labels[lo..hi].to_vec();
        let need = build_bytes(&sub, &flow.source, &flow.fetch);
        let _memory = flow.memory.reserve(need).await;
        flow.metrics.slab_pieces.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch::fetch(&sub, &flow.source, &flow.fetch).await?;
        if fetched.absent_chunks > 0 && self.counts_absent {
            return Err(FlowError::AbsentInPart {
                file: self.plan.file_name.clone(),
                absent: fetched.absent_chunks,
            });
        }
        let array = fetched
            .arrays
            .into_iter()
            .next()
            .expect("one array per variable");
        let bytes = slab_bytes(array.index_axis(Axis(0), 0), len);
        Ok(Arc::new(Piece {
            slab: s,
            range: start..start + len,
            bytes,
        }))
    }

    /// Every slab is present: makes the partial entry a complete one (its known regions
    /// written again, each slab checked once more, the whole-file checksum recorded, renamed
    /// into place) and shares it with the S3 tier. Reads in flight keep reading the same
    /// file through its descriptor.
    async fn complete(self: Arc<Self>) {
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            this.write_known()?;
            let regions = &this.regions;
            this.entry
                .complete(this.flow.tiers.local(), &this.plan.identity, |s| {
                    let r = regions.slab(s).expect("a slab index").range;
                    (r.start, r.end - r.start)
                })
                .map_err(|e| Arc::new(FlowError::from(e)))
        })
        .await
        .map_err(|e| Arc::new(FlowError::Join(e.to_string())))
        .and_then(|r| r);
        match done {
            Ok(Some(entry)) => {
                tracing::info!(file = %self.plan.file_name, bytes = self.plan.size, "complete: every slab built");
                self.flow.forget_parts(&self.plan.identity);
                self.flow
                    .tiers
                    .write_through(key_of(&self.plan), &entry, false)
                    .await;
            }
            Ok(None) => {
                // A slab was damaged on disk since it was written: built again when read.
                let mut state = self.state.lock().expect("poisoned");
                if let Ok(missing) = self.entry.missing() {
                    for s in missing {
                        state.sound.remove(&s);
                    }
                }
                state.completing = false;
            }
            Err(e) => {
                // Made complete by another process meanwhile (its rename took the file), or
                // the disk refused: the slabs keep being served from this partial file.
                tracing::warn!(file = %self.plan.file_name, "completing the file: {}", super::error_chain(e.as_ref()));
                self.flow.forget_parts(&self.plan.identity);
            }
        }
    }
}

/// The counters of slab builds and pieces, as fields of [`Flow::counters`].
pub(super) fn counters(flow: &Flow) -> [(String, serde_json::Value); 2] {
    let m = &flow.metrics;
    [
        (
            "slab_builds".to_string(),
            m.slab_builds.load(Ordering::Relaxed).into(),
        ),
        (
            "slab_pieces".to_string(),
            m.slab_pieces.load(Ordering::Relaxed).into(),
        ),
    ]
}
