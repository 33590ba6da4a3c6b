//! `sodeda-era5 prefetch MOUNTPOINT --order FILE`: keeps the files a training job will read
//! next built, a window ahead of it, in the order the job gives.
//!
//! Input: a mount point and the names of its files in the order the reader will read them (a
//! sampler's order: one name a line). Output: the files built ahead of the reader. It follows
//! the reader through the mount's `user.sodeda.last-read` (the file read last for the first
//! time) and opens the next `window` files of the order with `O_NONBLOCK`, reading one byte:
//! the mount builds each as for any reader (complete files only, within its build memory) but
//! does not take these opens for the reader's. It ends when every file of the order was
//! started and finished, or when the reader has not moved for `idle`.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::fs::XATTR_LAST_READ;

/// What a prefetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prefetched {
    /// Files of the order it built (or found built) ahead of the reader.
    pub started: usize,
    /// Of those, files that could not be built (their error is in `user.sodeda.error`).
    pub failed: usize,
    /// Files the reader reached before they were started (skipped).
    pub passed: usize,
}

/// The names of `order` (one a line; blank lines and `#` comments skipped; `.nc` added when
/// missing), each checked against the mount.
pub fn read_order(mountpoint: &Path, order: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(order)
        .with_context(|| format!("reading the order {}", order.display()))?;
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = if line.ends_with(".nc") {
            line.to_string()
        } else {
            format!("{line}.nc")
        };
        if std::fs::symlink_metadata(mountpoint.join(&name)).is_err() {
            bail!(
                "{} line {}: {line:?} is not a file of {}",
                order.display(),
                i + 1,
                mountpoint.display()
            );
        }
        names.push(name);
    }
    Ok(names)
}

fn last_read(mountpoint: &Path) -> Option<String> {
    String::from_utf8(super::get_xattr(mountpoint, XATTR_LAST_READ).ok()?).ok()
}

/// Builds one file through the mount: opens it as a prefetcher and reads a byte.
fn build(path: PathBuf) -> bool {
    let mut one = [0u8; 1];
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .and_then(|mut f| f.read(&mut one))
        .is_ok()
}

/// Follows the reader of `mountpoint` through `names`, keeping up to `window` files ahead of
/// it built. Polls the reader's position every `poll`; gives up when it has not moved for
/// `idle`.
pub fn run(
    mountpoint: &Path,
    names: &[String],
    window: usize,
    poll: Duration,
    idle: Duration,
) -> Prefetched {
    let position: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let window = window.max(1);
    let mut done = Prefetched::default();
    let mut next = 0usize;
    let mut running: Vec<JoinHandle<bool>> = Vec::new();
    let (mut reader, mut moved) = (None::<usize>, Instant::now());
    loop {
        let now = last_read(mountpoint).and_then(|n| position.get(n.as_str()).copied());
        if now.is_some() && now != reader {
            (reader, moved) = (now, Instant::now());
        }
        let from = reader.map_or(0, |r| r + 1);
        if next < from {
            done.passed += from - next;
            next = from;
        }
        let until = (from + window).min(names.len());
        while next < until && running.len() < window {
            let path = mountpoint.join(&names[next]);
            running.push(std::thread::spawn(move || build(path)));
            done.started += 1;
            next += 1;
        }
        let (finished, still): (Vec<_>, Vec<_>) =
            running.into_iter().partition(JoinHandle::is_finished);
        running = still;
        for h in finished {
            done.failed += usize::from(!h.join().unwrap_or(false));
        }
        if next >= names.len() && running.is_empty() {
            return done;
        }
        if moved.elapsed() > idle && running.is_empty() {
            tracing::warn!(
                "prefetch: the reader has not moved for {} s; stopping",
                idle.as_secs()
            );
            return done;
        }
        std::thread::sleep(poll);
    }
}
