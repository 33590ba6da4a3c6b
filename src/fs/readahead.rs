//! Readahead across files: when a reader goes through the files in order, the next ones are
//! built in the background, a bounded window ahead.
//!
//! Input: the position of each file a reader opens, in two orders (the deskriptors
//! file's line order and name order, as `sorted(glob(...))` gives). Output: background builds
//! of the next files through the flow (shared with readers that arrive meanwhile: single
//! flight). Invariants: at most `window` background builds at once (others are not started:
//! the next read tops the window up), each also within the flow's build memory; only files
//! not yet cached; nothing starts unless the last three opens were consecutive in one
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

/// Consecutive opens (beyond the first) after which the pattern counts as sequential.
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
    /// Positions (lines, names) of the last file opened.
    last: Option<(usize, usize)>,
    /// Consecutive steps of +1 in each order.
    streak: (u32, u32),
    /// How far ahead files were already started (or found built), in which order: a window
    /// that slides by one looks at one new file, not at the whole window again.
    frontier: Option<(Order, usize)>,
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
        // The same file opened again (xarray opens a file twice) neither breaks nor extends
        // the pattern.
        if st.last != Some(positions) {
            st.streak = Self::steps(st.last, positions, st.streak);
            st.last = Some(positions);
        }
        let order = if st.streak.0 >= STREAK {
            Some(Order::Lines)
        } else if st.streak.1 >= STREAK {
            Some(Order::Names)
        } else {
            None
        };
        if order.is_none() {
            st.frontier = None;
        }
        order
    }

    /// The positions (in `order`) to look at now, for a reader at `at`: the window after it,
    /// less what was already looked at (see [`Readahead::advance`]).
    pub fn span(&self, order: Order, at: usize) -> std::ops::Range<usize> {
        let st = self.state.lock().expect("poisoned");
        let end = at + 1 + self.window;
        let start = match st.frontier {
            Some((o, f)) if o == order && f > at => f,
            _ => at + 1,
        };
        start.min(end)..end
    }

    /// Records that the files of `order` before position `to` were looked at (started, found
    /// built, or being built).
    pub fn advance(&self, order: Order, to: usize) {
        self.state.lock().expect("poisoned").frontier = Some((order, to));
    }

    fn steps(last: Option<(usize, usize)>, now: (usize, usize), streak: (u32, u32)) -> (u32, u32) {
        let step = |last: usize, now: usize, streak: u32| {
            if now == last + 1 {
                streak + 1
            } else {
                0
            }
        };
        match last {
            Some((l, n)) => (step(l, now.0, streak.0), step(n, now.1, streak.1)),
            None => (0, 0),
        }
    }

    /// Forgets the pattern (after a reload, positions mean other files).
    pub fn reset(&self) {
        let mut st = self.state.lock().expect("poisoned");
        st.last = None;
        st.streak = (0, 0);
        st.frontier = None;
    }

    /// How many files ahead it builds.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Starts background builds of `next` (the files after the one read, in order) on
    /// `runtime`: those not cached nor already being built, while the window has room.
    /// Returns how many of `next` it looked at (all, unless the window filled up).
    pub fn start(
        &self,
        runtime: &tokio::runtime::Handle,
        flow: &Flow,
        options: PlanOptions,
        next: Vec<Entry>,
    ) -> usize {
        let total = next.len();
        for (looked, entry) in next.into_iter().enumerate() {
            // A file served by its parts is not built whole ahead: its reader's own reads
            // build what they touch, and read ahead within it.
            let by_parts = options.format == crate::layout::Format::Classic64
                && entry.size >= flow.parts_from();
            if by_parts
                || flow
                    .tiers()
                    .is_cached(crate::cache::Key::new(entry.identity(), entry.size))
            {
                continue;
            }
            let Ok(permit) = self.running.clone().try_acquire_owned() else {
                return looked; // the window is full: the next open tops it up
            };
            if !self
                .ahead
                .lock()
                .expect("poisoned")
                .insert(entry.identity().to_string())
            {
                continue; // already being built (the permit goes back)
            }
            self.started.fetch_add(1, Ordering::Relaxed);
            let flow = flow.clone();
            let ahead = self.ahead.clone();
            runtime.spawn(async move {
                let _permit = permit;
                match entry.plan(&flow.source().scope, options) {
                    // A failure is logged by the flow and retried by the reader's own open.
                    Ok(plan) => {
                        let _ = flow.materialize_shared(&plan).await;
                    }
                    Err(e) => tracing::debug!("readahead of {}: {e}", entry.file_name()),
                }
                ahead.lock().expect("poisoned").remove(entry.identity());
            });
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_opens_in_a_row_make_a_pattern_and_reopening_one_file_keeps_it() {
        let r = Readahead::new(4);
        assert_eq!(r.note((0, 9)), None);
        assert_eq!(r.note((0, 9)), None, "opened again (xarray opens twice)");
        assert_eq!(r.note((1, 3)), None);
        assert_eq!(r.note((1, 3)), None);
        assert_eq!(r.note((2, 7)), Some(Order::Lines));
        assert_eq!(r.note((2, 7)), Some(Order::Lines));
        assert_eq!(r.note((5, 8)), None, "the line pattern breaks");
        assert_eq!(r.note((4, 9)), Some(Order::Names), "7, 8, 9 in name order");
        assert_eq!(Readahead::new(0).note((1, 1)), None, "off");
    }
}
