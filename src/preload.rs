//! Preload: build every file of a catalog (or of one shard of it) into the cache tiers.
//!
//! Input: plans, a [`Flow`] and [`PreloadOptions`]. Output: a [`Summary`] (built, copied from
//! S3, already cached, failed with their line and cause). Files run `jobs` at a time, in time
//! order so that files sharing hours run together and reuse decoded chunks (the flow's chunk
//! cache). A file already in the local cache with its planned size is skipped (and uploaded if
//! the S3 tier lacks it), so a re-run after an interruption finishes only what is left; a kill
//! at any moment leaves no partial entry (the cache writes by rename).
//!
//! Ahead of the files being built, a reader plans windows of the next files and starts
//! every chunk read they need at once ([`Prefetched`]): the union of their rows per chunk as
//! Blosc blocks, neighbours merged, with up to `requests` requests in flight whatever the
//! number of files built at once. Over a distant store a preload is then bound by the link,
//! not by round trips per file. At most two windows of bytes are held (the one being built and
//! the next), each about [`AHEAD_BYTES`] / 2.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use std::collections::{HashMap, HashSet};

use crate::cache::Key;
use crate::catalog::Entry;
use crate::fetch::{chunk_demand, chunk_needs, ChunkKey, ChunkNeed, Prefetched};
use crate::flow::{error_chain, Flow, FlowError, Origin};
use crate::plan::{PlanError, PlanOptions};

/// `K/N`: this machine takes the files whose identity falls in part K of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: u64,
    /// Number of parts.
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard {s:?}: expected K/N with 0 <= K < N, e.g. 0/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether the file of `identity` belongs to this shard: a pure function of the
    /// identity, so every machine agrees without talking to the others, whatever the order
    /// of the lines.
    pub fn contains(&self, identity: &str) -> bool {
        let h = u64::from_str_radix(&identity[..16], 16).unwrap_or(0);
        h % self.count == self.index
    }
}

/// Options of a preload.
#[derive(Debug, Clone, Copy)]
pub struct PreloadOptions {
    /// Files built at once.
    pub jobs: usize,
    /// Source requests in flight at once for reading ahead (0: no reading ahead).
    pub requests: usize,
    /// Only this shard, if given.
    pub shard: Option<Shard>,
    /// How the files are planned (as when the catalog was made).
    pub plan: PlanOptions,
    /// Show an interactive progress bar (else plain periodic lines).
    pub progress_bar: bool,
}

/// One file that could not be built.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its deskriptor line.
    pub line: usize,
    /// Its file name.
    pub name: String,
    /// Why.
    pub cause: FailureCause,
}

/// Why a file of a preload could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FailureCause {
    /// Its line no longer plans over the source, or its size could not be computed.
    #[error("{0}")]
    Plan(PlanError),
    /// The flow failed: the source, the encoder or the cache (all its causes in the message,
    /// none also a `source()`).
    #[error("{}", error_chain(.0.as_ref()))]
    Flow(Arc<FlowError>),
}

/// What a preload did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Files in this run (after sharding).
    pub files: usize,
    /// Built from the source.
    pub built: usize,
    /// Copied from the S3 tier.
    pub copied: usize,
    /// Already in the local cache.
    pub cached: usize,
    /// Files that failed.
    pub failed: Vec<Failure>,
    /// Wall time.
    pub elapsed: Duration,
    /// Requests sent reading ahead, and reads of the builders answered by them.
    pub read_ahead: (u64, u64),
}

enum Outcome {
    Built,
    Copied,
    Cached,
    Failed(Failure),
}

/// Builds every catalog entry (of the shard) into the flow's cache tiers.
pub async fn preload(flow: &Flow, entries: Vec<Entry>, options: PreloadOptions) -> Summary {
    let start = Instant::now();
    let mut plans: Vec<Entry> = entries
        .into_iter()
        .filter(|e| options.shard.is_none_or(|s| s.contains(e.identity())))
        .collect();
    // Time order: files over the same hours run close together and share decoded chunks.
    plans.sort_by_key(|e| (e.first_time, e.line));
    let mut flow = with_whole_chunks(flow, &plans, options.plan);
    let ahead = (options.requests > 0).then(|| {
        let ahead = Prefetched::new(flow.source().store.clone(), options.requests);
        flow.fetch_options_mut().prefetched = Some(ahead.clone());
        ahead
    });
    let flow = &flow;
    let total = plans.len();
    let done = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let reader = match ahead {
        Some(ahead) => {
            let (flow, plans, done, progress) =
                (flow.clone(), plans.clone(), done.clone(), progress.clone());
            let (first, planned) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                read_ahead(&flow, &plans, options.plan, &ahead, &done, &progress, first).await;
            });
            // The builders start once the first window's reads are under way, so that they
            // find them rather than asking the store for the same bytes.
            let _ = planned.await;
            Some(task)
        }
        None => None,
    };
    let bar = options.progress_bar.then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} files, {per_sec}, ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let ticker = (!options.progress_bar).then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            every.tick().await;
            loop {
                every.tick().await;
                let n = done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let rate = n as f64 / secs.max(1e-9);
                let eta = if rate > 0.0 {
                    format!("{:.0} s", (total as f64 - n as f64) / rate)
                } else {
                    "?".into()
                };
                eprintln!("preload: {n}/{total} files, {rate:.1} files/s, ETA {eta}");
            }
        })
    });

    let outcomes: Vec<Outcome> = futures::stream::iter(plans.iter().map(|plan| {
        let done = done.clone();
        let bar = bar.clone();
        async move {
            let outcome = one(flow, plan, options.plan).await;
            done.fetch_add(1, Ordering::Relaxed);
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            outcome
        }
    }))
    .buffer_unordered(options.jobs.max(1))
    .collect()
    .await;

    if let Some(reader) = reader {
        reader.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let mut summary = Summary {
        files: total,
        elapsed: start.elapsed(),
        read_ahead: flow
            .fetch_options()
            .prefetched
            .as_ref()
            .map_or((0, 0), |a| {
                (
                    a.sent.load(Ordering::Relaxed),
                    a.hits.load(Ordering::Relaxed),
                )
            }),
        ..Summary::default()
    };
    for o in outcomes {
        match o {
            Outcome::Built => summary.built += 1,
            Outcome::Copied => summary.copied += 1,
            Outcome::Cached => summary.cached += 1,
            Outcome::Failed(f) => summary.failed.push(f),
        }
    }
    summary.failed.sort_by_key(|f| f.line);
    flow.tiers().retry_uploads().await;
    summary
}

/// Part of a chunk that the files of a preload must need together for it to be read whole
/// (once, decoded once, shared through the chunk cache) rather than block by block by each.
const WHOLE_DEMAND: f64 = 0.5;

/// The flow with the chunks that the files still to build need together marked to be read
/// whole: a chunk that only one file (or a few) needs a small part of is read block by block,
/// moving only those bytes; one that many files need is read once.
fn with_whole_chunks(flow: &Flow, entries: &[Entry], options: PlanOptions) -> Flow {
    let mut demand: HashMap<ChunkKey, f64> = HashMap::new();
    for e in entries {
        if flow.tiers().is_cached(Key::new(e.identity(), e.size)) {
            continue;
        }
        if let Ok(plan) = e.plan(&flow.source().scope, options) {
            for (chunk, part) in chunk_demand(&plan, flow.source()) {
                *demand.entry(chunk).or_default() += part;
            }
        }
    }
    let whole: HashSet<ChunkKey> = demand
        .into_iter()
        .filter(|(_, part)| *part >= WHOLE_DEMAND)
        .map(|(chunk, _)| chunk)
        .collect();
    tracing::debug!("preload: {} chunks read whole", whole.len());
    let mut flow = flow.clone();
    flow.fetch_options_mut().whole_chunks = Some(Arc::new(whole));
    flow
}

/// Bytes read ahead per two windows (an estimate from the rows needed, decoded size, which
/// bounds the compressed bytes).
pub const AHEAD_BYTES: u64 = 256 << 20;
/// Most files in one window.
const WINDOW_FILES: usize = 1024;

/// Plans the files of `entries` (in build order) window by window and starts every chunk read
/// of a window at once; a window starts when the builders have finished the files before the
/// previous one, whose bytes are then dropped.
async fn read_ahead(
    flow: &Flow,
    entries: &[Entry],
    options: PlanOptions,
    ahead: &Arc<Prefetched>,
    done: &AtomicU64,
    progress: &tokio::sync::Notify,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut ends: Vec<usize> = Vec::new();
    let mut at = 0;
    let mut window = 0u64;
    while at < entries.len() {
        if window >= 2 {
            let before = ends[window as usize - 2] as u64;
            while done.load(Ordering::Relaxed) < before {
                progress.notified().await;
            }
            ahead.drop_before(window - 1);
        }
        let mut needs: HashMap<String, ChunkNeed> = HashMap::new();
        let mut bytes = 0u64;
        let mut files = 0;
        while at < entries.len() && files < WINDOW_FILES && bytes < AHEAD_BYTES / 2 {
            let e = &entries[at];
            at += 1;
            files += 1;
            if flow.tiers().is_cached(Key::new(e.identity(), e.size)) {
                continue;
            }
            let Ok(plan) = e.plan(&flow.source().scope, options) else {
                continue;
            };
            for (key, need) in chunk_needs(&plan, flow.source(), flow.fetch_options()) {
                let row_bytes = 4 * *need.shape.last().unwrap_or(&1) as u64;
                bytes += if need.whole {
                    need.shape.iter().product::<usize>() as u64 * 4
                } else {
                    need.rows.iter().map(|r| r.len() as u64).sum::<u64>() * row_bytes
                };
                needs.entry(key).or_default().merge(need);
            }
        }
        ends.push(at);
        tracing::debug!(
            "read ahead: window {window}, {files} files, {} chunks",
            needs.len()
        );
        for (key, need) in needs {
            ahead.plan_chunk(
                &key,
                need,
                window,
                flow.fetch_options().block_tables.clone(),
            );
        }
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        window += 1;
    }
}

async fn one(flow: &Flow, entry: &Entry, options: PlanOptions) -> Outcome {
    if let Some(cached) = flow.tiers().peek(Key::new(entry.identity(), entry.size)) {
        // Cached here but perhaps not shared yet (an earlier run without the bucket).
        flow.tiers()
            .share(Key::new(entry.identity(), entry.size), &cached)
            .await;
        return Outcome::Cached;
    }
    let failed = |cause: FailureCause| {
        Outcome::Failed(Failure {
            line: entry.line,
            name: entry.file_name().to_string(),
            cause,
        })
    };
    let plan = match entry.plan(&flow.source().scope, options) {
        Ok(p) => p,
        Err(e) => return failed(FailureCause::Plan(e)),
    };
    match flow.materialize(&plan).await {
        Ok((_, Origin::Built)) => Outcome::Built,
        Ok((_, Origin::Remote)) => Outcome::Copied,
        Ok((_, Origin::Cache)) => Outcome::Cached,
        Err(e) => failed(FailureCause::Flow(Arc::new(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse() {
        assert_eq!(
            "1/3".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 3 }
        );
        for bad in ["3/3", "0/0", "a/2", "1", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
