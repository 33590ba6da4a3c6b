//! The local file cache: one finished NetCDF file per identity, written atomically.
//!
//! Input: a file's identity and exact size and, on a miss, a file built by the flow.
//! Output: a complete cached file, open. Layout on disk:
//! `<dir>/v<FORMAT_VERSION>/<first 2 hex digits>/<identity>.nc`, temporary files in
//! `<dir>/v<FORMAT_VERSION>/tmp/`. Invariant: an entry returned by [`LocalCache::get`] holds
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
//! Nothing in the cache directory is trusted by its name alone (anyone who can write the
//! directory could plant a file there). An entry is opened with [`LocalCache::open_entry`]:
//! directory by directory with `openat(O_NOFOLLOW)` (a symlink anywhere inside the cache is
//! refused), the sub-directories and the entry must be owned by the user running this process
//! and not writable by others, the entry must be a regular file with one link and the planned
//! size, and its bytes must match its CRC-32C — an entry without one (copied by `cp -r`, which
//! drops xattrs) is deleted and rebuilt. The caller reads the descriptor it got, never the path
//! again, so an entry swapped after the checks is never read. Files in the cache directory that
//! are not entries (any name but `<2 hex>/<hex identity>.nc`) are ignored: never read, evicted
//! or deleted.
//!
//! With a size limit ([`LocalCache::with_max_size`]) the cache evicts the least recently used
//! entries after each new one, never an entry that is pinned (open through the mount). Recency
//! is what this process saw (lookups and new entries), seeded at start from the files'
//! modification times.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tempfile::NamedTempFile;

use super::seal::{self, Seal};
use super::sums::BlockSums;
use crate::encode::FORMAT_VERSION;

/// The default cache directory (the prototype's).
pub const DEFAULT_CACHE_DIR: &str = "./tmp/era5chunks";

/// A cache operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {context}: {cause}")]
pub struct CacheError {
    /// The path involved.
    pub path: String,
    /// What was being done.
    pub context: &'static str,
    /// The I/O error.
    pub cause: io::Error,
}

/// Recency and pins of the entries, for the size limit.
struct Usage {
    /// Entry sizes, least recently used first.
    lru: LruCache<String, u64>,
    bytes: u64,
    /// Open handles per identity: never evicted while present.
    pins: HashMap<String, usize>,
    /// Entries whose checksum this process has verified, with the file they were verified
    /// on (a replaced file is verified again).
    verified: HashMap<String, (FileStamp, Arc<BlockSums>)>,
}

/// What identifies one version of an entry's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp(u64, u64, u64, [i64; 4]);

impl FileStamp {
    /// Whether `other` is the same file with the same size and modification time: what a
    /// change of its flags or attributes alone leaves.
    fn same_bytes(&self, other: &FileStamp) -> bool {
        (self.0, self.1, self.2, self.3[0], self.3[1])
            == (other.0, other.1, other.2, other.3[0], other.3[1])
    }

    /// Device, inode, size, modification and change times (a rewrite in place followed by
    /// `touch -r` still changes the change time).
    fn of(m: &std::fs::Metadata) -> Self {
        let times = [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()];
        FileStamp(m.dev(), m.ino(), m.len(), times)
    }
}

/// Whether `identity` is a name this cache gives entries: lowercase hex digits, at least
/// two (the sub-directory is named after the first two).
pub fn is_identity(identity: &str) -> bool {
    identity.len() >= 2
        && identity
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Creates `dir` and its parents as the umask allows, but never writable by every user
/// (entries in such a directory are not trusted).
fn create_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o775)
        .create(dir)
}

/// Opens `name` under the directory `dir` without following a symlink at `name`.
fn open_at(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `dir` is an open descriptor and `c` a NUL-terminated string, both alive for the
    // call; the result is a new descriptor owned by nobody else, or -1.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `m` is of a file or directory of this user that no one else may write: the rule
/// for what the project keeps beside the cache (block-table logs, catalog indexes).
pub fn owned_privately(m: &std::fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    m.uid() == me && m.mode() & 0o022 == 0
}

/// Why an entry is not trusted (for the log; the entry is then rebuilt).
fn untrusted(m: &std::fs::Metadata, what: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Some(format!(
            "{what} is owned by uid {}, not by uid {me}",
            m.uid()
        ));
    }
    if m.mode() & 0o002 != 0 {
        return Some(format!("{what} is writable by every user"));
    }
    None
}

/// Name of the extended attribute holding an entry's CRC-32C (8 hex digits).
pub const CHECKSUM_XATTR: &str = "user.sodeda.crc32c";

fn set_xattr(file: &File, name: &str, value: &str) -> io::Result<()> {
    let n = CString::new(name).expect("no NUL");
    // SAFETY: an open descriptor, a NUL-terminated name and a buffer of the given length, all
    // alive for the call.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
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

/// The value of [`CHECKSUM_XATTR`]: the CRC-32C and the identity it belongs to, so that an
/// entry renamed to another identity's path (same size, its own valid checksum) is refused.
fn checksum_value(crc: u32, identity: &str) -> String {
    format!("{crc:08x} {identity}")
}

/// The checksum recorded with an open entry.
enum Recorded {
    /// The CRC-32C kept in the entry's xattr, and the identity it was written for.
    Crc(u32, String),
    /// The entry has no (readable) checksum: it lost it (a copy without xattrs) or never had it.
    Missing,
    /// The file system keeps no user xattrs: entries are checked by size only.
    Unsupported,
}

/// The value of extended attribute `name` of an open file, as text (at most 128 bytes).
fn get_xattr(file: &File, name: &str) -> io::Result<String> {
    let n = CString::new(name).expect("no NUL");
    let mut buf = [0u8; 128];
    // SAFETY: an open descriptor and a NUL-terminated name; fgetxattr writes at most
    // `buf.len()` bytes into `buf`.
    let len = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    String::from_utf8(buf[..len].to_vec()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

fn recorded_checksum(file: &File) -> Recorded {
    let value = match get_xattr(file, CHECKSUM_XATTR) {
        Ok(v) => v,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Recorded::Unsupported,
        Err(_) => return Recorded::Missing,
    };
    value
        .split_once(' ')
        .and_then(|(crc, id)| Some(Recorded::Crc(u32::from_str_radix(crc, 16).ok()?, id.into())))
        .unwrap_or(Recorded::Missing)
}

#[cfg(test)]
fn get_checksum(path: &Path) -> Option<u32> {
    match recorded_checksum(&File::open(path).ok()?) {
        Recorded::Crc(c, _) => Some(c),
        _ => None,
    }
}

/// Deletes the entry at `path` if it is still the file `file` (not one another process put
/// there meanwhile).
fn remove_if_same(path: &Path, file: &File) {
    if let (Ok(there), Ok(ours)) = (std::fs::symlink_metadata(path), file.metadata()) {
        if there.dev() == ours.dev() && there.ino() == ours.ino() {
            let _ = remove_entry(path);
        }
    }
}

/// Computes the checksums of a finished file and records the whole-file one with it (its
/// [`CHECKSUM_XATTR`]); the block checksums, or `None` where the file system keeps no xattrs.
fn record_checksums(file: &File, identity: &str, path: &Path) -> Option<Arc<BlockSums>> {
    let recorded = BlockSums::of_file(file).and_then(|(crc, sums)| {
        set_xattr(file, CHECKSUM_XATTR, &checksum_value(crc, identity)).map(|()| sums)
    });
    match recorded {
        Ok(sums) => Some(Arc::new(sums)),
        Err(e) => {
            tracing::debug!("no checksum for {}: {e}", path.display());
            None
        }
    }
}

/// Deletes the entry at `path`; one sealed by a process that is gone is unsealed first (one
/// sealed by a live process stays: its removal is refused with `EPERM`).
/// The bytes a file holds on disk (a sparse file: only what was written).
pub(super) fn allocated(meta: &std::fs::Metadata) -> u64 {
    (meta.blocks() * 512).min(meta.len())
}

fn remove_entry(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if seal::lift_if_abandoned(path).unwrap_or(false) {
                std::fs::remove_file(path)
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// Marks a temporary file while its build runs: a write lock over the whole file, of the
/// open-file-description kind (`F_OFD_SETLK`), which goes with the process, so that a
/// temporary file nobody holds is known to be left by a killed build. Not `flock`: libnetcdf's
/// HDF5 takes a `flock` of the file it writes (NetCDF-4), and the two kinds do not meet.
fn lock_building(file: &File) -> io::Result<()> {
    ofd_lock(file, libc::F_WRLCK as libc::c_short)
}

fn unlock(file: &File) {
    let _ = ofd_lock(file, libc::F_UNLCK as libc::c_short);
}

fn ofd_lock(file: &File, kind: libc::c_short) -> io::Result<()> {
    // SAFETY: a zeroed flock is a valid value of the plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: an open descriptor and a pointer to a flock struct that lives across the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Deletes the temporary files in `tmp` left by builds that were killed (files named like
/// [`LocalCache::temp_file`]'s that no live process holds locked); returns how many bytes
/// were freed. Files of another name are left alone.
fn remove_abandoned_temporaries(tmp: &Path) -> u64 {
    let mut freed = 0;
    let Ok(dir) = std::fs::read_dir(tmp) else {
        return 0;
    };
    for f in dir.flatten() {
        let name = f.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(".nc")) {
            continue;
        }
        let path = f.path();
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        // A read lock (the file is open for reading) conflicts with a build's write lock.
        if !meta.is_file() || ofd_lock(&file, libc::F_RDLCK as libc::c_short).is_err() {
            continue; // a build in progress (or not ours to judge)
        }
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == meta.ino()) {
            match std::fs::remove_file(&path) {
                Ok(()) => freed += meta.len(),
                Err(e) => tracing::debug!("cannot remove {}: {e}", path.display()),
            }
        }
    }
    if freed > 0 {
        tracing::info!(
            "removed {} of temporary files left by killed builds in {}",
            crate::units::human_size(freed),
            tmp.display()
        );
    }
    freed
}

/// The prefix of the temporary files of builds.
const TEMP_PREFIX: &str = ".building-";

/// A complete entry: its path, and the descriptor it was checked (or written) through. Read
/// the descriptor (with `pread`, or `/proc/self/fd/N` for a library that opens by name), never
/// the path again: the path may have been swapped or evicted since.
#[derive(Debug, Clone)]
pub struct CachedFile {
    /// Where the entry lives.
    pub path: PathBuf,
    /// The entry itself.
    pub file: Arc<File>,
    /// The checksum of each of its blocks, recorded when it was checked or written (`None`
    /// on a file system without user xattrs, where entries are checked by size only).
    pub sums: Option<Arc<BlockSums>>,
}

impl CachedFile {
    /// How many of its chunks were absent from the source when it was built (its
    /// [`ABSENT_XATTR`]; 0 when it has none).
    pub fn absent_chunks(&self) -> u64 {
        absent_mark(&self.file).map_or(0, |(n, _)| n)
    }

    /// A path that opens exactly this file, with an offset of its own (the descriptor's entry
    /// in `/proc/self/fd`).
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Up to `size` bytes at `offset`, never past the end: each block under them checked
    /// against its recorded checksum, so bytes changed on disk since the check are an error
    /// (`InvalidData`) and a file now shorter is one too (`UnexpectedEof`), never served.
    pub fn read_at(&self, offset: u64, size: u64, len: u64) -> io::Result<Vec<u8>> {
        if let Some(sums) = &self.sums {
            return sums.read_checked(&self.file, offset, size);
        }
        if offset >= len || size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (len - offset).min(size) as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// What the check of an entry found good.
enum Checked {
    /// Its bytes match its checksum; the checksum of each block.
    Sums(Arc<BlockSums>),
    /// A file system without user xattrs: checked by size only.
    SizeOnly,
}

impl Checked {
    fn sums(self) -> Option<Arc<BlockSums>> {
        match self {
            Checked::Sums(s) => Some(s),
            Checked::SizeOnly => None,
        }
    }
}

/// A cache directory on local disk.
#[derive(Clone)]
pub struct LocalCache {
    /// `<dir>/v<FORMAT_VERSION>` ([`LocalCache::root_of`]).
    root: PathBuf,
    max_size: Option<u64>,
    usage: Arc<Mutex<Usage>>,
    /// The source's version now (its `last_updated`), when entries built while chunks were
    /// absent are to be rebuilt once it changes; `None` keeps them (a pinned dataset).
    store_version: Arc<std::sync::RwLock<Option<Arc<str>>>>,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("root", &self.root)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// Name of the extended attribute counting the chunks of an entry that were absent from the
/// source (read as the fill value), followed by the source's version when it was built
/// (`3 2026-09-05 02:45:44.987382+00:00`); absent on entries made only of stored data.
pub const ABSENT_XATTR: &str = "user.sodeda.absent-chunks";

/// The absent-chunk mark of an entry: the count and the source version it was built under.
fn absent_mark(file: &File) -> Option<(u64, String)> {
    let v = get_xattr(file, ABSENT_XATTR).ok()?;
    let (n, version) = v.split_once(' ').unwrap_or((v.as_str(), ""));
    Some((n.parse().ok()?, version.to_string()))
}

/// An entry kept from eviction while this lives ([`LocalCache::pinned`]); dropping it unpins.
#[derive(Debug)]
pub struct Pin {
    cache: LocalCache,
    identity: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.cache.unpin(&self.identity);
    }
}

impl LocalCache {
    /// The tree a cache in `dir` writes to (its entries, temporary files and catalog
    /// indexes): `<dir>/v<FORMAT_VERSION>`. Nothing is created.
    pub fn root_of(dir: &Path) -> PathBuf {
        dir.join(format!("v{FORMAT_VERSION}"))
    }

    /// Opens (creating if needed) the cache under `dir`. Warns when `dir` or its version
    /// directory can be written by every user (anyone could then plant files; they are not
    /// served, see the module docs, but they cost rebuilds).
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let root = Self::root_of(dir);
        let tmp = root.join("tmp");
        create_dirs(&tmp).map_err(|cause| CacheError {
            path: tmp.display().to_string(),
            context: "creating the cache directory",
            cause,
        })?;
        remove_abandoned_temporaries(&tmp);
        for d in [dir, root.as_path()] {
            if let Ok(m) = std::fs::metadata(d) {
                if m.mode() & 0o002 != 0 {
                    tracing::warn!(
                        "the cache directory {} is writable by every user: files planted there \
                         are never served but cost rebuilds; use a directory only this user can \
                         write",
                        d.display()
                    );
                }
            }
        }
        Ok(Self {
            root,
            max_size: None,
            usage: Arc::new(Mutex::new(Usage {
                lru: LruCache::unbounded(),
                bytes: 0,
                pins: HashMap::new(),
                verified: HashMap::new(),
            })),
            store_version: Arc::default(),
        })
    }

    /// Limits the cache to `max_size` bytes of entries: reads the entries present (oldest
    /// modification first) and evicts down to the limit now and after every new entry. Only
    /// files named like entries count; anything else in the directory is left alone.
    pub fn with_max_size(mut self, max_size: u64) -> Self {
        // By identity: its newest modification and its bytes (an entry, and a partial entry
        // of the same file if one is left: its blocks on disk and its slab table).
        let mut found: HashMap<String, (std::time::SystemTime, u64)> = HashMap::new();
        if let Ok(dirs) = std::fs::read_dir(&self.root) {
            for dir in dirs.flatten() {
                let dir_name = dir.file_name();
                let Some(prefix) = dir_name.to_str().filter(|p| p.len() == 2 && is_identity(p))
                else {
                    continue; // tmp/, and anything foreign
                };
                for f in std::fs::read_dir(dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let name = f.file_name();
                    let Some((identity, kind)) = name.to_str().and_then(|n| {
                        ["nc", "partial", "slabs"].into_iter().find_map(|ext| {
                            n.strip_suffix(ext)
                                .and_then(|n| n.strip_suffix('.'))
                                .filter(|i| is_identity(i) && i.starts_with(prefix))
                                .map(|i| (i, ext))
                        })
                    }) else {
                        continue;
                    };
                    // Not followed: a symlink is not an entry.
                    let Ok(meta) = std::fs::symlink_metadata(f.path()) else {
                        continue;
                    };
                    if meta.is_file() {
                        let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                        let bytes = if kind == "partial" {
                            allocated(&meta)
                        } else {
                            meta.len()
                        };
                        let e = found
                            .entry(identity.to_string())
                            .or_insert((std::time::UNIX_EPOCH, 0));
                        e.0 = e.0.max(when);
                        e.1 += bytes;
                    }
                }
            }
        }
        let mut found: Vec<_> = found
            .into_iter()
            .map(|(i, (when, b))| (when, i, b))
            .collect();
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

    /// The directory of this format version's entries, `<dir>/v<FORMAT_VERSION>` (other
    /// stores of the cache, such as block tables, live beside the entries).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Bytes of entries this cache knows of (all entries when a size limit is set).
    pub fn size(&self) -> u64 {
        self.usage.lock().expect("poisoned").bytes
    }

    /// Pins the entry of `identity` (see [`LocalCache::pin`]) for as long as the guard lives.
    pub fn pinned(&self, identity: &str) -> Pin {
        self.pin(identity);
        Pin {
            cache: self.clone(),
            identity: identity.to_string(),
        }
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

    /// Counts the partial entry of `identity` at `bytes` (its blocks on disk and its table,
    /// as it grows) against the size limit, as the most recently used; evicts others to fit.
    pub(super) fn account_partial(&self, identity: &str, bytes: u64) {
        self.touch(identity, bytes);
        self.evict(Some(identity));
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
            u.verified.remove(&identity);
            let Some(path) = self.path_for(&identity) else {
                continue;
            };
            // A partial entry of the file goes with it (a process serving it keeps its
            // descriptors, and serves it until it would be complete: it is then built again).
            for part in ["partial", "slabs"] {
                let _ = std::fs::remove_file(path.with_extension(part));
            }
            match remove_entry(&path) {
                Ok(()) => tracing::debug!("evicted {} ({size} bytes)", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied && seal::is_sealed(&path) => {
                    // Served by passthrough in another process: it stays, counted.
                    tracing::debug!("not evicting {}: a mount serves it", path.display());
                    u.bytes += size;
                    skipped.push((identity, size));
                }
                Err(e) => tracing::warn!("cannot evict {}: {e}", path.display()),
            }
        }
        // Pinned entries stay, as the least recently used ones.
        for (identity, size) in skipped.into_iter().rev() {
            u.lru.put(identity.clone(), size);
            u.lru.demote(&identity);
        }
    }

    /// Where the file of `identity` lives (whether or not it exists); `None` for a string
    /// that is not an identity.
    pub fn path_for(&self, identity: &str) -> Option<PathBuf> {
        is_identity(identity).then(|| {
            self.root
                .join(&identity[..2])
                .join(format!("{identity}.nc"))
        })
    }

    /// The path of the entry of `identity`, if present, trusted and of exactly `size` bytes
    /// (see [`LocalCache::open_entry`]). Prefer `get` or `open_entry`, which return the checked
    /// file itself: a path is opened again by its user.
    pub fn lookup_identity(&self, identity: &str, size: u64) -> Option<PathBuf> {
        self.get(identity, size).map(|c| c.path)
    }

    /// The entry of `identity`, opened (see [`LocalCache::open_entry`]).
    pub fn get(&self, identity: &str, size: u64) -> Option<CachedFile> {
        let (file, checked) = self.open_trusted(identity, size, |_| Ok(())).ok()??;
        Some(CachedFile {
            path: self.path_for(identity)?,
            file: Arc::new(file),
            sums: checked.sums(),
        })
    }

    /// The entry of `identity`, opened and sealed ([`Seal`]: immutable while it lives) before
    /// its checksum is checked, for the kernel to read it itself. `Ok(None)` when there is no
    /// trusted entry; an error when it cannot be sealed (the caller then serves the file
    /// without passthrough).
    ///
    /// Sealing and lifting a seal change only the entry's change time; a check made before
    /// is carried over both, when the entry's size and modification time did not move
    /// meanwhile (a write moves them), so that a warm open does not read the file again.
    pub fn open_sealed(&self, identity: &str, size: u64) -> io::Result<Option<Seal>> {
        let mut seal = None;
        let found = self.open_trusted(identity, size, |f| {
            let before = FileStamp::of(&f.metadata()?);
            let mut sealed = Seal::new(Arc::new(f.try_clone()?))?;
            let after = FileStamp::of(&sealed.file().metadata()?);
            self.carry_check(identity, before, after);
            let (cache, identity) = (self.clone(), identity.to_string());
            sealed.on_lift(Box::new(move |lifted: &File| {
                if let Ok(m) = lifted.metadata() {
                    cache.carry_check(&identity, after, FileStamp::of(&m));
                }
            }));
            seal = Some(sealed);
            Ok(())
        })?;
        Ok(found.and(seal))
    }

    /// Moves the record of a check from `before` to `after` when the two differ by the change
    /// time only (the inode's flag was changed, not its bytes).
    fn carry_check(&self, identity: &str, before: FileStamp, after: FileStamp) {
        if !before.same_bytes(&after) {
            return;
        }
        let mut u = self.usage.lock().expect("poisoned");
        if let Some(entry) = u.verified.get_mut(identity) {
            if entry.0 == before {
                entry.0 = after;
            }
        }
    }

    /// Whether the entry of `identity` is present with `size` bytes: a regular file, not a
    /// symlink, owned by this user (no checksum read: for listings).
    pub fn contains(&self, identity: &str, size: u64) -> Option<PathBuf> {
        let path = self.path_for(identity)?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size && untrusted(&m, "").is_none() => Some(path),
            _ => None,
        }
    }

    /// Opens the entry of `identity` for reading if it can be trusted: reached without
    /// following any symlink, in directories owned by this user and not writable by others, a
    /// regular file with one link, owned by this user, of exactly `size` bytes, whose bytes
    /// match its CRC-32C (checked once per process and file version). An entry that fails a
    /// check is reported absent (and logged); a corrupt one, or one without a checksum, is
    /// deleted so that it is rebuilt. Counts as a use for the size limit.
    pub fn open_entry(&self, identity: &str, size: u64) -> Option<File> {
        self.open_trusted(identity, size, |_| Ok(()))
            .ok()?
            .map(|(f, _)| f)
    }

    /// [`LocalCache::open_entry`], running `prepare` on the file after the structural checks
    /// and before its checksum is checked; its error is returned as it is.
    fn open_trusted(
        &self,
        identity: &str,
        size: u64,
        prepare: impl FnOnce(&File) -> io::Result<()>,
    ) -> io::Result<Option<(File, Checked)>> {
        let Some(path) = self.path_for(identity) else {
            return Ok(None);
        };
        let file = match self.open_checked(identity, size) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(why) => {
                tracing::warn!(
                    "cache entry {} is not trusted ({why}); it will be rebuilt",
                    path.display()
                );
                return Ok(None);
            }
        };
        prepare(&file)?;
        let Some(checked) = self.verify(identity, &path, &file) else {
            return Ok(None);
        };
        let now = self.store_version.read().expect("poisoned").clone();
        if let Some(now) = now {
            if let Some((n, built)) = absent_mark(&file).filter(|(_, built)| **built != *now) {
                tracing::info!(
                    "cache entry {} was built while {n} chunk(s) were absent from the source \
                     (version {built:?}); the source is now {now:?}: it will be rebuilt",
                    path.display()
                );
                return Ok(None);
            }
        }
        self.touch(identity, size);
        Ok(Some((file, checked)))
    }

    /// Entries built while chunks were absent from the source are kept for source version
    /// `version` only (`None`: kept whatever the version, as a pinned dataset wants); the
    /// version is also recorded with each such new entry. Shared by every clone of this cache.
    pub fn set_store_version(&self, version: Option<String>) {
        *self.store_version.write().expect("poisoned") = version.map(Arc::from);
    }

    /// The entry's file after the structural checks; `Ok(None)` when there is no entry (or
    /// one of another size: a partial copy is simply not an entry).
    fn open_checked(&self, identity: &str, size: u64) -> Result<Option<File>, String> {
        let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let absent =
            |e: &io::Error| matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR));
        let base = self.root.parent().unwrap_or(Path::new("/"));
        let version = self.root.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The directory given by the user may itself be a symlink; inside it, nothing is.
        let base = match File::open(base) {
            Ok(f) => OwnedFd::from(f),
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(format!("opening {}: {e}", base.display())),
        };
        let mut dir = base;
        for (name, what) in [
            (version, "the cache's version directory"),
            (&identity[..2], "its sub-directory"),
        ] {
            dir = match open_at(&dir, name, dir_flags) {
                Ok(d) => d,
                Err(e) if absent(&e) => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(format!("{what} {name} is a symlink"))
                }
                Err(e) => return Err(format!("opening {what} {name}: {e}")),
            };
            let m = File::from(dir.try_clone().map_err(|e| e.to_string())?)
                .metadata()
                .map_err(|e| e.to_string())?;
            if let Some(why) = untrusted(&m, what) {
                return Err(why);
            }
        }
        // O_NONBLOCK: a FIFO planted as an entry must not block the open.
        let fd = match open_at(
            &dir,
            &format!("{identity}.nc"),
            libc::O_RDONLY | libc::O_NONBLOCK,
        ) {
            Ok(fd) => fd,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err("it is a symlink".into()),
            Err(e) => return Err(format!("opening it: {e}")),
        };
        let file = File::from(fd);
        let m = file.metadata().map_err(|e| e.to_string())?;
        if !m.is_file() {
            return Err("it is not a regular file".into());
        }
        if m.len() != size {
            return Ok(None);
        }
        if let Some(why) = untrusted(&m, "it") {
            return Err(why);
        }
        if m.nlink() != 1 {
            return Err(format!("it has {} hard links", m.nlink()));
        }
        // SAFETY: an open descriptor; F_SETFL only changes its status flags.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) };
        Ok(Some(file))
    }

    /// Checks an entry's checksum once per process and file version; deletes it if its bytes
    /// are wrong or it has no checksum on a file system that keeps them. `None` when it is not
    /// good.
    fn verify(&self, identity: &str, path: &Path, file: &File) -> Option<Checked> {
        let meta = file.metadata().ok()?;
        let stamp = FileStamp::of(&meta);
        if let Some((seen, sums)) = self.usage.lock().expect("poisoned").verified.get(identity) {
            if *seen == stamp {
                return Some(Checked::Sums(sums.clone()));
            }
        }
        let expected = match recorded_checksum(file) {
            Recorded::Crc(c, id) if id == identity => c,
            Recorded::Crc(_, id) => {
                tracing::warn!(
                    "cache entry {} is the file of another identity ({id}); deleting it, it \
                     will be rebuilt",
                    path.display()
                );
                remove_if_same(path, file);
                return None;
            }
            Recorded::Unsupported => return Some(Checked::SizeOnly), // documented
            Recorded::Missing => {
                tracing::warn!(
                    "cache entry {} has no checksum (copied without its extended attributes?); \
                     deleting it, it will be rebuilt",
                    path.display()
                );
                remove_if_same(path, file);
                return None;
            }
        };
        match BlockSums::of_file(file) {
            Ok((actual, sums)) if actual == expected && sums.len() == meta.len() => {
                let sums = Arc::new(sums);
                self.usage
                    .lock()
                    .expect("poisoned")
                    .verified
                    .insert(identity.to_string(), (stamp, sums.clone()));
                Some(Checked::Sums(sums))
            }
            Ok((actual, _)) => {
                tracing::warn!(
                    "cache entry {} is corrupt (crc32c {actual:08x}, expected {expected:08x}); \
                     deleting it, it will be rebuilt",
                    path.display()
                );
                remove_if_same(path, file);
                None
            }
            Err(e) => {
                tracing::warn!("cannot verify cache entry {}: {e}", path.display());
                None
            }
        }
    }

    /// A new temporary file in the cache's file system, to be filled and then [`persist`]ed.
    ///
    /// [`persist`]: LocalCache::persist
    pub fn temp_file(&self) -> Result<NamedTempFile, CacheError> {
        let dir = self.root.join("tmp");
        // Readable as the umask allows (colleagues may read a cache, through its own mount or
        // a copy), never writable by every user (then no one could trust it).
        let file = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".nc")
            .permissions(std::fs::Permissions::from_mode(0o664))
            .tempfile_in(&dir)
            .map_err(|cause| CacheError {
                path: dir.display().to_string(),
                context: "creating a temporary file",
                cause,
            })?;
        // Held while the build runs: a file nobody holds is a killed build's, removed.
        lock_building(file.as_file()).map_err(|cause| CacheError {
            path: file.path().display().to_string(),
            context: "locking a temporary file",
            cause,
        })?;
        Ok(file)
    }

    /// Moves a finished temporary file into place as the entry of `identity` (atomic rename)
    /// and returns it, still open: an entry deleted right after (another process evicting)
    /// stays readable through it.
    pub fn persist(&self, file: NamedTempFile, identity: &str) -> Result<CachedFile, CacheError> {
        self.persist_with(file, identity, 0)
    }

    /// Like [`LocalCache::persist`], recording that `absent_chunks` chunks of the file were
    /// absent from the source (in [`ABSENT_XATTR`], when not zero).
    pub fn persist_with(
        &self,
        file: NamedTempFile,
        identity: &str,
        absent_chunks: u64,
    ) -> Result<CachedFile, CacheError> {
        let Some(path) = self.path_for(identity) else {
            return Err(CacheError {
                path: identity.to_string(),
                context: "naming an entry",
                cause: io::Error::new(io::ErrorKind::InvalidInput, "not a hex identity"),
            });
        };
        let parent = path.parent().expect("entries live in a subdirectory");
        create_dirs(parent).map_err(|cause| CacheError {
            path: parent.display().to_string(),
            context: "creating a cache subdirectory",
            cause,
        })?;
        // No fsync: the rename is atomic for every reader and survives a crash of the
        // process; after a power loss an entry is still checked by size before use. An fsync
        // per file cost more than the whole build of a small file (see PERFORMANCE.md).
        let size = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        let sums = record_checksums(file.as_file(), identity, &path);
        self.mark_absent(file.as_file(), &path, absent_chunks);
        let file = match file.persist(&path) {
            Ok(f) => f,
            Err(e) if e.error.kind() == io::ErrorKind::PermissionDenied => {
                // The entry it replaces is sealed: by a killed process (lifted, then the
                // rename is tried again), or by a mount serving it still (then this file is
                // served from its descriptor, not kept).
                let file = e.file;
                if seal::lift_if_abandoned(&path).unwrap_or(false) {
                    self.persist_renamed(file, &path)?
                } else {
                    tracing::info!(
                        "{} is sealed by a mount that serves it; the new file is used once, \
                         not kept",
                        path.display()
                    );
                    let (f, tmp) = file.into_parts();
                    let _ = tmp.close();
                    unlock(&f);
                    return Ok(CachedFile {
                        path,
                        file: Arc::new(f),
                        sums,
                    });
                }
            }
            Err(e) => {
                return Err(CacheError {
                    path: path.display().to_string(),
                    context: "renaming a new entry into place",
                    cause: e.error,
                })
            }
        };
        unlock(&file);
        Ok(self.admit(identity, path, file, sums, size))
    }

    /// Counts a file just renamed into place as the entry of `identity`: verified as written
    /// (its checksums were just computed from these bytes), used, and the cache bounded.
    fn admit(
        &self,
        identity: &str,
        path: PathBuf,
        file: File,
        sums: Option<Arc<BlockSums>>,
        size: u64,
    ) -> CachedFile {
        if let (Ok(m), Some(sums)) = (file.metadata(), &sums) {
            self.usage
                .lock()
                .expect("poisoned")
                .verified
                .insert(identity.to_string(), (FileStamp::of(&m), sums.clone()));
        }
        // A partial entry of the same file (its parts read through a mount) is no longer
        // needed; a process serving it keeps reading its descriptor.
        for stale in ["partial", "slabs"] {
            let _ = std::fs::remove_file(path.with_extension(stale));
        }
        self.touch(identity, size);
        self.evict(Some(identity));
        CachedFile {
            path,
            file: Arc::new(file),
            sums,
        }
    }

    /// Marks `file` (the future entry at `path`) as holding `absent` chunks the store did not
    /// have ([`ABSENT_XATTR`], with the store's version); nothing when there are none.
    fn mark_absent(&self, file: &File, path: &Path, absent: u64) {
        if absent == 0 {
            return;
        }
        let version = self.store_version.read().expect("poisoned").clone();
        let mark = format!("{absent} {}", version.as_deref().unwrap_or(""));
        if let Err(e) = set_xattr(file, ABSENT_XATTR, mark.trim_end()) {
            tracing::debug!(
                "cannot mark {} as having absent chunks: {e}",
                path.display()
            );
        }
    }

    /// Makes the finished file at `from` (in this cache's file system, a partial entry) the
    /// entry of `identity`: its checksums recorded, marked if `absent` chunks were read as
    /// missing, renamed into place, counted.
    pub fn adopt(
        &self,
        from: &Path,
        identity: &str,
        absent: u64,
    ) -> Result<CachedFile, CacheError> {
        let fail = |context, cause| CacheError {
            path: from.display().to_string(),
            context,
            cause,
        };
        let path = self.path_for(identity).ok_or_else(|| {
            fail(
                "naming an entry",
                io::Error::new(io::ErrorKind::InvalidInput, "not a hex identity"),
            )
        })?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(from)
            .map_err(|e| fail("opening a finished file", e))?;
        let sums = record_checksums(&file, identity, &path);
        self.mark_absent(&file, &path, absent);
        std::fs::rename(from, &path).map_err(|e| fail("renaming a finished file into place", e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(self.admit(identity, path, file, sums, size))
    }

    fn persist_renamed(&self, file: NamedTempFile, path: &Path) -> Result<File, CacheError> {
        file.persist(path).map_err(|e| CacheError {
            path: path.display().to_string(),
            context: "renaming a new entry into place",
            cause: e.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;

    fn add(cache: &LocalCache, identity: &str, bytes: usize) -> PathBuf {
        let mut f = cache.temp_file().unwrap();
        f.write_all(&vec![7u8; bytes]).unwrap();
        cache.persist(f, identity).unwrap().path
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
    fn temporary_files_of_killed_builds_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let tmp = dir.path().join(format!("v{FORMAT_VERSION}")).join("tmp");
        // A killed build: its temporary file is there, nobody holds it.
        std::fs::write(tmp.join(".building-abc.nc"), vec![1u8; 5000]).unwrap();
        // A build running in this process (another, in effect: its lock is its own).
        let mut live = cache.temp_file().unwrap();
        live.write_all(&[2u8; 100]).unwrap();
        std::fs::write(tmp.join("foreign.txt"), b"not ours").unwrap();
        let _again = LocalCache::open(dir.path()).unwrap();
        assert!(
            !tmp.join(".building-abc.nc").exists(),
            "the killed build's file is gone"
        );
        assert!(live.path().exists(), "a live build's file is kept");
        assert!(
            tmp.join("foreign.txt").exists(),
            "other files are left alone"
        );
        // Once persisted, the entry is no longer marked as building.
        let entry = cache.persist(live, "ab77").unwrap();
        let again = File::open(&entry.path).unwrap();
        assert!(ofd_lock(&again, libc::F_RDLCK as libc::c_short).is_ok());
        // The mark is not a flock: libnetcdf's HDF5 flocks the files it writes.
        let t = cache.temp_file().unwrap();
        // SAFETY: an open descriptor; flock has no memory preconditions.
        let rc = unsafe { libc::flock(t.as_file().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "a flock of a building file is free");
    }

    #[test]
    fn a_sealed_entry_is_not_evicted_while_held_and_an_abandoned_seal_is_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let a = add(&cache, "aa01", 100);
        let Ok(Some(seal)) = cache.open_sealed("aa01", 100) else {
            eprintln!("skipped: entries cannot be sealed here");
            return;
        };
        assert!(std::fs::OpenOptions::new().write(true).open(&a).is_err());
        // Another process bounds the cache: the sealed entry stays, counted.
        let other = LocalCache::open(dir.path()).unwrap().with_max_size(150);
        add(&other, "bb02", 100);
        assert!(a.exists(), "held by a seal: not evicted");
        assert_eq!(other.size(), 200);
        // The holder is killed: its lock goes, its flag stays; the next eviction lifts it.
        // SAFETY: an open descriptor; flock has no memory preconditions.
        unsafe { libc::flock(seal.file().as_raw_fd(), libc::LOCK_UN) };
        std::mem::forget(seal);
        assert!(seal::is_sealed(&a));
        add(&other, "cc03", 100);
        assert!(
            !a.exists(),
            "an abandoned seal is lifted and the entry evicted"
        );
    }

    #[test]
    fn a_check_carried_over_a_seal_still_catches_a_change_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = add(&cache, "ab21", 1000);
        for _ in 0..2 {
            match cache.open_sealed("ab21", 1000) {
                Ok(Some(seal)) => drop(seal),
                _ => {
                    eprintln!("skipped: entries cannot be sealed here");
                    return;
                }
            }
        }
        assert!(!seal::is_sealed(&path));
        let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all_at(&[8], 10).unwrap();
        assert!(cache.get("ab21", 1000).is_none(), "the change is found");
        assert!(cache.open_sealed("ab21", 1000).unwrap().is_none());
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

    fn entry_path(dir: &Path, identity: &str) -> PathBuf {
        dir.join(format!("v{FORMAT_VERSION}"))
            .join(&identity[..2])
            .join(format!("{identity}.nc"))
    }

    #[test]
    fn a_symlink_at_an_entry_or_on_the_way_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        // A secret of exactly the planned size, planted behind a symlink at the entry's path.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, vec![b's'; 100]).unwrap();
        let path = entry_path(dir.path(), "ab01");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        assert!(cache.open_entry("ab01", 100).is_none());
        assert!(cache.lookup_identity("ab01", 100).is_none());
        assert!(cache.contains("ab01", 100).is_none());
        // A real entry, but reached through a symlinked sub-directory.
        let real = add(&cache, "cd01", 100);
        let moved = dir.path().join("elsewhere");
        std::fs::rename(real.parent().unwrap(), &moved).unwrap();
        std::os::unix::fs::symlink(&moved, real.parent().unwrap()).unwrap();
        assert!(LocalCache::open(dir.path())
            .unwrap()
            .open_entry("cd01", 100)
            .is_none());
        assert_eq!(std::fs::read(&secret).unwrap(), vec![b's'; 100]);
    }

    #[test]
    fn a_fifo_or_a_hard_link_at_an_entry_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = entry_path(dir.path(), "ef01");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(cache.open_entry("ef01", 0).is_none());
        let linked = add(&cache, "ef02", 10);
        std::fs::hard_link(&linked, dir.path().join("other-name")).unwrap();
        assert!(LocalCache::open(dir.path())
            .unwrap()
            .open_entry("ef02", 10)
            .is_none());
    }

    #[test]
    fn an_entry_without_its_checksum_is_deleted_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = add(&cache, "ab12", 1000);
        // As `cp -r` leaves it: same bytes, no xattr; then a flipped byte.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[500] ^= 1;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert!(get_checksum(&path).is_none());
        let fresh = LocalCache::open(dir.path()).unwrap();
        assert!(fresh.open_entry("ab12", 1000).is_none());
        assert!(!path.exists(), "deleted, so that it is rebuilt");
    }

    #[test]
    fn an_entry_replaced_after_its_check_is_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = add(&cache, "ab13", 1000);
        assert!(cache.open_entry("ab13", 1000).is_some());
        // Another file (a new inode) with the old checksum copied over: its bytes differ.
        let tmp = dir
            .path()
            .join(format!("v{FORMAT_VERSION}"))
            .join("tmp")
            .join("x");
        std::fs::write(&tmp, vec![9u8; 1000]).unwrap();
        let crc = get_checksum(&path).unwrap();
        set_xattr(
            &File::open(&tmp).unwrap(),
            CHECKSUM_XATTR,
            &checksum_value(crc, "ab13"),
        )
        .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(cache.open_entry("ab13", 1000).is_none());
    }

    #[test]
    fn an_entry_built_with_absent_chunks_lasts_only_for_its_store_version() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        cache.set_store_version(Some("2026-09-05".into()));
        let mut f = cache.temp_file().unwrap();
        f.write_all(&[7u8; 100]).unwrap();
        let built = cache.persist_with(f, "ab31", 3).unwrap();
        assert_eq!(built.absent_chunks(), 3);
        let complete = add(&cache, "ab32", 100);
        assert!(
            cache.open_entry("ab31", 100).is_some(),
            "the same store version"
        );
        // The store was updated (the absent hours may be there now).
        cache.set_store_version(Some("2026-10-05".into()));
        assert!(
            cache.open_entry("ab31", 100).is_none(),
            "rebuilt for the new version"
        );
        assert!(
            cache.open_entry("ab32", 100).is_some(),
            "a complete entry stays"
        );
        assert!(complete.exists());
        // Pinned: kept whatever the store's version.
        cache.set_store_version(None);
        assert!(cache.open_entry("ab31", 100).is_some());
    }

    #[test]
    fn an_entry_moved_to_another_identity_of_the_same_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let a = add(&cache, "ab21", 100);
        let b_path = entry_path(dir.path(), "ab22");
        std::fs::rename(&a, &b_path).unwrap(); // its own valid checksum comes along
        let fresh = LocalCache::open(dir.path()).unwrap();
        assert!(fresh.open_entry("ab22", 100).is_none());
        assert!(!b_path.exists(), "deleted, so that it is rebuilt");
    }

    #[test]
    fn foreign_files_in_the_cache_crash_nothing_and_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(format!("v{FORMAT_VERSION}"));
        let foreign = [
            root.join("zz").join("a.nc"),
            root.join("ab").join("é.nc"),
            root.join("ab").join("x.nc"),
            root.join("ab").join("notes.txt"),
            root.join("a").join("a.nc"),
            root.join("README"),
        ];
        for f in &foreign {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, vec![1u8; 500]).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", root.join("ab").join("abff.nc")).unwrap();
        let cache = LocalCache::open(dir.path()).unwrap().with_max_size(0);
        assert_eq!(cache.size(), 0, "foreign files are not entries");
        add(&cache, "ab0001", 100); // evicts down to the limit: only itself would go
        add(&cache, "cd0001", 100);
        for f in &foreign {
            assert!(f.exists(), "{} left alone", f.display());
        }
        assert!(cache.path_for("é").is_none() && cache.path_for("a").is_none());
        assert!(cache.open_entry("zz", 500).is_none());
    }

    #[test]
    fn new_entries_follow_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = add(&cache, "ab14", 10);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let umask = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(mode, 0o664 & !umask, "{mode:o}");
    }

    #[test]
    fn entries_of_another_user_or_in_a_directory_all_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let path = add(&cache, "ab15", 10);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let c = CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated path; 65534 is `nobody`.
            assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
            assert!(LocalCache::open(dir.path())
                .unwrap()
                .open_entry("ab15", 10)
                .is_none());
        }
        let other = add(&cache, "cd15", 10);
        let sub = other.parent().unwrap();
        std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(LocalCache::open(dir.path())
            .unwrap()
            .open_entry("cd15", 10)
            .is_none());
    }
}
