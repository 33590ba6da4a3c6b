//! Bytes of chunks read ahead of the files that need them, many requests in flight at once.
//!
//! A preload knows every file it will build. Per window of files it plans, for each chunk
//! they read, what they need together: the union of their rows as Blosc blocks (neighbouring
//! blocks merged into one range request), or the whole object where a file reads it whole.
//! Each chunk's reads start at once ([`Prefetched::plan_chunk`]), limited only by the number of
//! requests in flight ([`Prefetched::new`]'s `requests`), not by the files built at once. A
//! file's own reads ([`super::blocks`]) then find their bytes here (or wait for the request
//! that is bringing them) instead of asking the store: the block table and the blocks of a
//! chunk arrive once, for every file of the window that needs them.
//!
//! Invariants: the bytes here are exactly what the store answered to one request, with the
//! object version it answered for, and a reader checks that version as it checks its own
//! requests' (a table and blocks from two versions are refused); a read not covered here goes
//! to the store as before, so a window dropped early costs requests, never bytes. Memory is
//! bounded by the caller dropping windows ([`Prefetched::drop_before`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;
use zarrs_object_store::object_store::{path::Path, ObjectStore};

use super::blosc::{self, Answer};
use super::error::ChunkError;
use super::tables::{BlockTables, Table};

type SharedAnswer = Shared<BoxFuture<'static, Result<Answer, ChunkError>>>;
type SharedPlan = Shared<BoxFuture<'static, ()>>;

/// Neighbouring block ranges of one chunk closer than this are fetched as one request: at
/// 30–100 ms per request and 100–400 Mbit/s per connection a round trip costs 0.4–5 MB of
/// transfer, so reading a gap of up to 256 KiB is always cheaper than a second request.
pub const MERGE_GAP: u64 = 256 << 10;

/// One request's bytes, started or done.
struct Slot {
    /// The bytes asked for; `None` for the whole object.
    range: Option<Range<u64>>,
    window: u64,
    answer: SharedAnswer,
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Vec<Slot>>,
    /// Chunks whose block ranges are being planned (their table is on its way).
    planning: HashMap<String, (u64, SharedPlan)>,
}

/// Chunk bytes read ahead, shared by the files that need them.
pub struct Prefetched {
    store: Arc<dyn ObjectStore>,
    requests: Arc<Semaphore>,
    state: Mutex<State>,
    /// Requests sent ahead.
    pub sent: AtomicU64,
    /// Reads of files answered from here.
    pub hits: AtomicU64,
}

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetched").finish_non_exhaustive()
    }
}

/// Rows of one chunk that the files of a window need.
#[derive(Debug, Clone, Default)]
pub struct ChunkNeed {
    /// The chunk's shape.
    pub shape: Vec<usize>,
    /// Some file reads the whole chunk.
    pub whole: bool,
    /// Row ranges (flat, all but the last dimension) that files read block by block.
    pub rows: Vec<Range<usize>>,
}

impl ChunkNeed {
    /// Adds what another file needs of the same chunk.
    pub fn merge(&mut self, other: ChunkNeed) {
        self.shape = other.shape;
        self.whole |= other.whole;
        self.rows.extend(other.rows);
    }
}

impl Prefetched {
    /// Reads ahead from `store` with at most `requests` requests in flight.
    pub fn new(store: Arc<dyn ObjectStore>, requests: usize) -> Arc<Self> {
        Arc::new(Self {
            store,
            requests: Arc::new(Semaphore::new(requests.max(1))),
            state: Mutex::default(),
            sent: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// Starts reading what the files of `window` need of chunk `key`: the whole object, or its
    /// block table (unless `tables` knows it) and then the blocks of `need.rows`, neighbours
    /// merged. Returns at once; the reads run in the background.
    pub fn plan_chunk(
        self: &Arc<Self>,
        key: &str,
        need: ChunkNeed,
        window: u64,
        tables: Option<Arc<BlockTables>>,
    ) {
        if need.whole {
            // Runs in the background; readers find it by its key.
            drop(self.start(key, None, window));
            return;
        }
        if need.rows.is_empty() {
            return;
        }
        let known = tables.as_ref().and_then(|t| t.get(key));
        let this = self.clone();
        let k = key.to_string();
        let head = known
            .is_none()
            .then(|| self.start(key, Some(blosc::head_range()), window));
        let plan = async move {
            let table = match (known, head) {
                (Some(t), _) => Some((*t).clone()),
                (None, Some(head)) => match head.await {
                    Ok(Some((bytes, version))) => {
                        let total = need.shape.iter().product();
                        blosc::table_of(&bytes, total).map(|bytes| Table { bytes, version })
                    }
                    _ => None,
                },
                (None, None) => None,
            };
            if let Some(table) = table {
                if let Some(tables) = &tables {
                    tables.put(&k, table.clone());
                }
                let mut spans: Vec<Range<u64>> =
                    blosc::block_ranges(&table.bytes, &need.shape, &need.rows).unwrap_or_default();
                for span in merge(&mut spans) {
                    drop(this.start(&k, Some(span), window));
                }
            }
            this.state.lock().expect("poisoned").planning.remove(&k);
        }
        .boxed()
        .shared();
        self.state
            .lock()
            .expect("poisoned")
            .planning
            .insert(key.to_string(), (window, plan.clone()));
        tokio::spawn(plan);
    }

    /// Starts one request (unless one covering it is already there) and returns its answer.
    fn start(self: &Arc<Self>, key: &str, range: Option<Range<u64>>, window: u64) -> SharedAnswer {
        let mut st = self.state.lock().expect("poisoned");
        let slots = st.slots.entry(key.to_string()).or_default();
        if let Some(s) = slots.iter_mut().find(|s| covers(&s.range, &range)) {
            // Kept for the later window too.
            s.window = s.window.max(window);
            return s.answer.clone();
        }
        let (store, requests, path) = (self.store.clone(), self.requests.clone(), Path::from(key));
        let this = self.clone();
        let r = range.clone();
        let answer = async move {
            let _permit = requests
                .acquire_owned()
                .await
                .map_err(|e| ChunkError::Task(e.to_string()))?;
            this.sent.fetch_add(1, Ordering::Relaxed);
            match r {
                Some(r) => blosc::range(store.as_ref(), &path, r).await,
                None => blosc::whole(store.as_ref(), &path).await,
            }
        }
        .boxed()
        .shared();
        slots.push(Slot {
            range,
            window,
            answer: answer.clone(),
        });
        tokio::spawn(answer.clone());
        answer
    }

    /// The bytes `range` of object `key` (`None`: the whole object) if a request started here
    /// covers them, waiting for it and for the chunk's planning if needed; `None` if nothing
    /// here covers them (the caller asks the store). A range beyond the object's end is cut
    /// short, as a ranged GET's answer is.
    pub(crate) async fn get(&self, key: &str, range: Option<Range<u64>>) -> Option<Answer> {
        let (found, planning) = {
            let st = self.state.lock().expect("poisoned");
            let found = st.slots.get(key).and_then(|slots| {
                slots
                    .iter()
                    .find(|s| covers(&s.range, &range))
                    .map(|s| (s.range.clone(), s.answer.clone()))
            });
            (found, st.planning.get(key).map(|(_, p)| p.clone()))
        };
        let (slot_range, answer) = match (found, planning) {
            (Some(f), _) => f,
            (None, Some(plan)) => {
                plan.await;
                let st = self.state.lock().expect("poisoned");
                let slots = st.slots.get(key)?;
                let s = slots.iter().find(|s| covers(&s.range, &range))?;
                (s.range.clone(), s.answer.clone())
            }
            (None, None) => return None,
        };
        let answer = answer.await.ok()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        let Some((bytes, version)) = answer else {
            return Some(None);
        };
        let offset = slot_range.map_or(0, |r| r.start);
        let (from, to) = match &range {
            Some(r) => (r.start - offset, r.end - offset),
            None => (0, bytes.len() as u64),
        };
        let len = bytes.len() as u64;
        let cut = bytes.slice(from.min(len) as usize..to.min(len) as usize);
        Some(Some((cut, version)))
    }

    /// Drops the bytes of every window before `window` (their files are built).
    pub fn drop_before(&self, window: u64) {
        let mut st = self.state.lock().expect("poisoned");
        st.slots.retain(|_, slots| {
            slots.retain(|s| s.window >= window);
            !slots.is_empty()
        });
        st.planning.retain(|_, (w, _)| *w >= window);
    }
}

/// Whether a request for `have` answers a read of `want` (`None`: the whole object).
fn covers(have: &Option<Range<u64>>, want: &Option<Range<u64>>) -> bool {
    match (have, want) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(h), Some(w)) => h.start <= w.start && w.end <= h.end,
    }
}

/// Sorts `spans` and merges those that overlap or lie closer than [`MERGE_GAP`].
fn merge(spans: &mut [Range<u64>]) -> Vec<Range<u64>> {
    spans.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for s in spans.iter() {
        match out.last_mut() {
            Some(last) if s.start <= last.end + MERGE_GAP => last.end = last.end.max(s.end),
            _ => out.push(s.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_when_close() {
        let mut spans = vec![5000..6000, 0..1000, 900..2000, 2_000_000..2_000_100];
        assert_eq!(
            merge(&mut spans),
            vec![0..6000, 2_000_000..2_000_100],
            "overlapping and near ranges are one request, a far one its own"
        );
    }

    #[test]
    fn cover_rules() {
        assert!(covers(&None, &Some(3..4)));
        assert!(covers(&Some(0..10), &Some(2..10)));
        assert!(!covers(&Some(0..10), &Some(2..11)));
        assert!(!covers(&Some(0..10), &None));
    }
}
