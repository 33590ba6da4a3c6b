//! The local file cache: one finished NetCDF file per identity, written atomically.
//!
//! Input: a plan (its identity and exact size) and, on a miss, a file built by the flow.
//! Output: the path of a complete cached file. Layout on disk:
//! `<dir>/v<FORMAT_VERSION>/<first 2 hex digits>/<identity>.nc`, temporary files in
//! `<dir>/v<FORMAT_VERSION>/tmp/`. Invariant: a path returned by [`LocalCache::lookup`] holds
//! a complete file of the planned size: files are written under a temporary name on the same
//! file system and renamed into place, so a crash leaves at most a stray temporary file, never
//! a partial entry; a format change moves to a new `v<N>` directory, so stale files are never
//! served.
//!
//! Every entry carries a CRC-32C of its bytes in the extended attribute `user.sodeda.crc32c`,
//! set on the temporary file before the rename (so it moves with the entry atomically). The
//! first lookup of an entry in a process checks it; an entry whose bytes do not match is
//! deleted and reported as absent, so it is rebuilt, never served. (On a file system without
//! user xattrs entries are checked by size only.)
//!
//! With a size limit ([`LocalCache::with_max_size`]) the cache evicts the least recently used
//! entries after each new one, never an entry that is pinned (open through the mount). Recency
//! is what this process saw (lookups and new entries), seeded at start from the files'
//! modification times.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tempfile::NamedTempFile;

use crate::plan::{Plan, FORMAT_VERSION};

/// The default cache directory (the prototype's).
pub const DEFAULT_CACHE_DIR: &str = "./tmp/era5chunks";

/// A cache operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {context}: {source}")]
pub struct CacheError {
    /// The path involved.
    pub path: String,
    /// What was being done.
    pub context: &'static str,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// Recency and pins of the entries, for the size limit.
struct Usage {
    /// Entry sizes, least recently used first.
    lru: LruCache<String, u64>,
    bytes: u64,
    /// Open handles per identity: never evicted while present.
    pins: HashMap<String, usize>,
    /// Entries whose checksum this process has verified.
    verified: HashSet<String>,
}

/// Name of the extended attribute holding an entry's CRC-32C (8 hex digits).
pub const CHECKSUM_XATTR: &str = "user.sodeda.crc32c";

fn crc32c_of(path: &Path) -> io::Result<u32> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn set_checksum(path: &Path, crc: u32) -> io::Result<()> {
    let (p, n) = (c_path(path)?, CString::new(CHECKSUM_XATTR).expect("no NUL"));
    let value = format!("{crc:08x}");
    // SAFETY: valid NUL-terminated strings and a buffer of the given length, all alive for
    // the call.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_checksum(path: &Path) -> Option<u32> {
    let (p, n) = (c_path(path).ok()?, CString::new(CHECKSUM_XATTR).ok()?);
    let mut buf = [0u8; 16];
    // SAFETY: valid NUL-terminated strings; getxattr writes at most `buf.len()` bytes.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len <= 0 {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(&buf[..len as usize]).ok()?, 16).ok()
}

/// A cache directory on local disk.
#[derive(Clone)]
pub struct LocalCache {
    root: PathBuf,
    max_size: Option<u64>,
    usage: Arc<Mutex<Usage>>,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("root", &self.root)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

impl LocalCache {
    /// Opens (creating if needed) the cache under `dir`.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let root = dir.join(format!("v{FORMAT_VERSION}"));
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|source| CacheError {
            path: tmp.display().to_string(),
            context: "creating the cache directory",
            source,
        })?;
        Ok(Self {
            root,
            max_size: None,
            usage: Arc::new(Mutex::new(Usage {
                lru: LruCache::unbounded(),
                bytes: 0,
                pins: HashMap::new(),
                verified: HashSet::new(),
            })),
        })
    }

    /// Limits the cache to `max_size` bytes of entries: reads the entries present (oldest
    /// modification first) and evicts down to the limit now and after every new entry.
    pub fn with_max_size(mut self, max_size: u64) -> Self {
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        if let Ok(dirs) = std::fs::read_dir(&self.root) {
            for dir in dirs.flatten().filter(|d| d.file_name() != "tmp") {
                for f in std::fs::read_dir(dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let path = f.path();
                    let (Some(stem), Ok(meta)) = (path.file_stem(), f.metadata()) else {
                        continue;
                    };
                    if path.extension().is_some_and(|e| e == "nc") && meta.is_file() {
                        let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                        found.push((when, stem.to_string_lossy().into_owned(), meta.len()));
                    }
                }
            }
        }
        found.sort();
        {
            let mut u = self.usage.lock().expect("poisoned");
            for (_, identity, size) in found {
                u.bytes += size;
                u.lru.put(identity, size);
            }
        }
        self.max_size = Some(max_size);
        self.evict(None);
        self
    }

    /// Bytes of entries this cache knows of (all entries when a size limit is set).
    pub fn size(&self) -> u64 {
        self.usage.lock().expect("poisoned").bytes
    }

    /// Marks an entry as in use (an open file): it is not evicted until [`unpin`]ned.
    ///
    /// [`unpin`]: LocalCache::unpin
    pub fn pin(&self, identity: &str) {
        *self
            .usage
            .lock()
            .expect("poisoned")
            .pins
            .entry(identity.to_string())
            .or_default() += 1;
    }

    /// Releases one [`pin`](LocalCache::pin).
    pub fn unpin(&self, identity: &str) {
        let mut u = self.usage.lock().expect("poisoned");
        if let Some(n) = u.pins.get_mut(identity) {
            *n -= 1;
            if *n == 0 {
                u.pins.remove(identity);
            }
        }
    }

    fn touch(&self, identity: &str, size: u64) {
        if self.max_size.is_none() {
            return;
        }
        let mut u = self.usage.lock().expect("poisoned");
        if let Some(old) = u.lru.put(identity.to_string(), size) {
            u.bytes -= old;
        }
        u.bytes += size;
    }

    /// Deletes least recently used, unpinned entries (and never `keep`) until the cache fits
    /// its limit.
    fn evict(&self, keep: Option<&str>) {
        let Some(max) = self.max_size else {
            return;
        };
        let mut u = self.usage.lock().expect("poisoned");
        let mut skipped = Vec::new();
        while u.bytes > max {
            let Some((identity, size)) = u.lru.pop_lru() else {
                break;
            };
            if u.pins.contains_key(&identity) || keep == Some(identity.as_str()) {
                skipped.push((identity, size));
                continue;
            }
            u.bytes -= size;
            let path = self.path_for(&identity);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!("evicted {} ({size} bytes)", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot evict {}: {e}", path.display()),
            }
        }
        // Pinned entries stay, as the least recently used ones.
        for (identity, size) in skipped.into_iter().rev() {
            u.lru.put(identity.clone(), size);
            u.lru.demote(&identity);
        }
    }

    /// Where the file of `identity` lives (whether or not it exists).
    pub fn path_for(&self, identity: &str) -> PathBuf {
        self.root
            .join(&identity[..2])
            .join(format!("{identity}.nc"))
    }

    /// The cached file of `plan`, if present with exactly the planned size. An entry of any
    /// other size is not a valid entry and is reported as absent.
    pub fn lookup(&self, plan: &Plan) -> Option<PathBuf> {
        self.lookup_identity(&plan.identity, plan.size)
    }

    /// The cached file of `identity` if present with exactly `size` bytes.
    pub fn lookup_identity(&self, identity: &str, size: u64) -> Option<PathBuf> {
        let path = self.contains(identity, size)?;
        if !self.verify(identity, &path) {
            return None;
        }
        self.touch(identity, size);
        Some(path)
    }

    /// Whether the entry of `identity` is present with `size` bytes (no checksum read: for
    /// listings).
    pub fn contains(&self, identity: &str, size: u64) -> Option<PathBuf> {
        let path = self.path_for(identity);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => Some(path),
            _ => None,
        }
    }

    /// Checks an entry's checksum once per process; deletes it if its bytes are wrong.
    fn verify(&self, identity: &str, path: &Path) -> bool {
        if self
            .usage
            .lock()
            .expect("poisoned")
            .verified
            .contains(identity)
        {
            return true;
        }
        let Some(expected) = get_checksum(path) else {
            return true; // no checksum (a file system without xattrs): the size was checked
        };
        match crc32c_of(path) {
            Ok(actual) if actual == expected => {
                self.usage
                    .lock()
                    .expect("poisoned")
                    .verified
                    .insert(identity.to_string());
                true
            }
            Ok(actual) => {
                tracing::warn!(
                    "cache entry {} is corrupt (crc32c {actual:08x}, expected {expected:08x}); \
                     deleting it, it will be rebuilt",
                    path.display()
                );
                let _ = std::fs::remove_file(path);
                false
            }
            Err(e) => {
                tracing::warn!("cannot verify cache entry {}: {e}", path.display());
                false
            }
        }
    }

    /// A new temporary file in the cache's file system, to be filled and then [`persist`]ed.
    ///
    /// [`persist`]: LocalCache::persist
    pub fn temp_file(&self) -> Result<NamedTempFile, CacheError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(".building-")
            .suffix(".nc")
            .tempfile_in(&dir)
            .map_err(|source| CacheError {
                path: dir.display().to_string(),
                context: "creating a temporary file",
                source,
            })
    }

    /// Moves a finished temporary file into place as the entry of `identity` (atomic rename).
    pub fn persist(&self, file: NamedTempFile, identity: &str) -> Result<PathBuf, CacheError> {
        let path = self.path_for(identity);
        let parent = path.parent().expect("entries live in a subdirectory");
        std::fs::create_dir_all(parent).map_err(|source| CacheError {
            path: parent.display().to_string(),
            context: "creating a cache subdirectory",
            source,
        })?;
        // No fsync: the rename is atomic for every reader and survives a crash of the
        // process; after a power loss an entry is still checked by size before use. An fsync
        // per file cost more than the whole build of a small file (see PERFORMANCE.md).
        let size = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        match crc32c_of(file.path()).and_then(|crc| set_checksum(file.path(), crc)) {
            Ok(()) => {
                self.usage
                    .lock()
                    .expect("poisoned")
                    .verified
                    .insert(identity.to_string());
            }
            Err(e) => tracing::debug!("no checksum for {}: {e}", path.display()),
        }
        file.persist(&path).map_err(|e| CacheError {
            path: path.display().to_string(),
            context: "renaming a new entry into place",
            source: e.error,
        })?;
        self.touch(identity, size);
        self.evict(Some(identity));
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn add(cache: &LocalCache, identity: &str, bytes: usize) -> PathBuf {
        let mut f = cache.temp_file().unwrap();
        f.write_all(&vec![7u8; bytes]).unwrap();
        cache.persist(f, identity).unwrap()
    }

    #[test]
    fn the_size_limit_evicts_least_recently_used_unpinned_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap().with_max_size(250);
        let a = add(&cache, "aa01", 100);
        let b = add(&cache, "bb02", 100);
        assert!(cache.lookup_identity("aa01", 100).is_some()); // a is now the most recent
        cache.pin("bb02");
        let c = add(&cache, "cc03", 100); // 300 > 250: b is the oldest but pinned, so a goes
        assert!(!a.exists() && b.exists() && c.exists());
        assert_eq!(cache.size(), 200);
        cache.unpin("bb02");
        let d = add(&cache, "dd04", 100);
        assert!(!b.exists() && c.exists() && d.exists());
        let big = add(&cache, "ee05", 400); // alone over the limit: kept, the others go
        assert!(big.exists() && !c.exists() && !d.exists());
        // A new process sees the entries on disk.
        let again = LocalCache::open(dir.path()).unwrap().with_max_size(1000);
        assert_eq!(again.size(), 400);
    }

    #[test]
    fn a_corrupt_entry_of_the_right_size_is_deleted_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = add(&cache, "ab12", 1000);
        assert!(
            get_checksum(&path).is_some(),
            "checksum stored with the entry"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[500] ^= 1;
        std::fs::write(&path, &bytes).unwrap(); // same inode: the xattr stays
        let fresh = LocalCache::open(dir.path()).unwrap(); // another process
        assert!(fresh.lookup_identity("ab12", 1000).is_none());
        assert!(!path.exists());
        let good = add(&fresh, "ab12", 1000);
        assert!(LocalCache::open(dir.path())
            .unwrap()
            .lookup_identity("ab12", 1000)
            .is_some());
        assert!(good.exists());
    }
}
