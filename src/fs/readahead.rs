//! Readahead across files: when a reader goes through the files in order, the next ones are
//! built in the background, a bounded window ahead.
//!
//! Input: the position of each file read for the first time, in two orders (the deskriptors
//! file's line order and name order, as `sorted(glob(...))` gives). Output: background builds
//! of the next files through the flow (shared with readers that arrive meanwhile: single
//! flight). Invariants: at most `window` background builds at once (others are not started:
//! the next read tops the window up), each also within the flow's build memory; only files
//! not yet cached; nothing starts unless the last three first reads were consecutive in one
//! order, and nothing new starts once the pattern breaks. A background build is an ordinary
//! flow run: it writes by rename, so a killed process leaves no partial entry, and a reader
//! never sees a partial file.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::catalog::Entry;
use crate::flow::Flow;
use crate::plan::PlanOptions;

/// Consecutive first reads (beyond the first) after which the pattern counts as sequential.
const STREAK: u32 = 2;

/// The two orders a reader may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The deskriptors file's line order (the listing order).
    Lines,
    /// File names, sorted.
    Names,
}

/// Readahead state of one file system.
#[derive(Debug)]
pub struct Readahead {
    window: usize,
    running: Arc<Semaphore>,
    state: Mutex<State>,
    /// Identities being built in the background.
    ahead: Arc<Mutex<HashSet<String>>>,
    /// Files whose background build this readahead started.
    pub started: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Positions (lines, names) of the last file read for the first time.
    last: Option<(usize, usize)>,
    /// Consecutive steps of +1 in each order.
    streak: (u32, u32),
}

impl Readahead {
    /// Readahead of up to `window` files (0: none).
    pub fn new(window: usize) -> Self {
        Self {
            window,
            running: Arc::new(Semaphore::new(window)),
            state: Mutex::new(State::default()),
            ahead: Arc::default(),
            started: AtomicU64::new(0),
        }
    }

    /// Notes that the file at `positions` (line order, name order) is read, and says which
    /// order the reader follows, if it follows one.
    pub fn note(&self, positions: (usize, usize)) -> Option<Order> {
        if self.window == 0 {
            return None;
        }
        let mut st = self.state.lock().expect("poisoned");
        let step = |last: usize, now: usize, streak: u32| {
            if now == last + 1 {
                streak + 1
            } else {
                0
            }
        };
        st.streak = match st.last {
            Some((l, n)) => (
                step(l, positions.0, st.streak.0),
                step(n, positions.1, st.streak.1),
            ),
            None => (0, 0),
        };
        st.last = Some(positions);
        if st.streak.0 >= STREAK {
            Some(Order::Lines)
        } else if st.streak.1 >= STREAK {
            Some(Order::Names)
        } else {
            None
        }
    }

    /// Forgets the pattern (after a reload, positions mean other files).
    pub fn reset(&self) {
        let mut st = self.state.lock().expect("poisoned");
        st.last = None;
        st.streak = (0, 0);
    }

    /// How many files ahead it builds.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Starts background builds of `next` (the files after the one read, in order), those not
    /// cached nor already being built, while the window has room. Must run inside a tokio
    /// runtime.
    pub fn start(&self, flow: &Flow, options: PlanOptions, next: Vec<Entry>) {
        for entry in next {
            if flow.cache.contains(&entry.identity, entry.size).is_some() {
                continue;
            }
            let Ok(permit) = self.running.clone().try_acquire_owned() else {
                return; // the window is full: the next read tops it up
            };
            if !self
                .ahead
                .lock()
                .expect("poisoned")
                .insert(entry.identity.clone())
            {
                continue; // already being built (the permit goes back)
            }
            self.started.fetch_add(1, Ordering::Relaxed);
            let flow = flow.clone();
            let ahead = self.ahead.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match entry.plan(&flow.source, options) {
                    // A failure is logged by the flow and retried by the reader's own open.
                    Ok(plan) => {
                        let _ = flow.materialize_shared(&plan).await;
                    }
                    Err(e) => tracing::debug!("readahead of {}: {e}", entry.file_name),
                }
                ahead.lock().expect("poisoned").remove(&entry.identity);
            });
        }
    }
}
