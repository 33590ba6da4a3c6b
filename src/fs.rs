//! The dataset as a read-only file system, independent of FUSE: one directory (the root)
//! holding one file per planned deskriptor.
//!
//! Input: plans and a [`Flow`]. Output: the answers to lookup, getattr, readdir, open, read and
//! the extended-attribute calls, as plain values or an [`FsError`] (whose errno is decided once,
//! in [`FsError::errno`]). `crate::fuse` only translates these to and from the kernel; tests
//! drive this type directly.
//!
//! Invariants: sizes come from the plans, so `stat` never fetches; a read returns exactly the
//! bytes of the cached file at that offset (never past the planned size), or an error; the
//! first read of a file runs its flow (shared by concurrent readers); a failed flow is an error
//! for the reads of that open file, and the next open retries.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::OnceCell;

use crate::cache::seal::Seal;
use crate::cache::{CachedFile, Key};
use crate::catalog::Entry;
use crate::flow::{error_chain, Flow, FlowError, PartsFile, Served};
use crate::plan::{PlanError, PlanOptions};

pub mod readahead;

use readahead::{Order, Readahead};

/// Inode of the root directory.
pub const ROOT_INO: u64 = 1;

/// Extended attribute: the deskriptor line of a file, as written.
pub const XATTR_DESKRIPTOR: &str = "user.sodeda.deskriptor";
/// Extended attribute: `yes` when the file is in the local cache, else `no`.
pub const XATTR_CACHED: &str = "user.sodeda.cached";
/// Extended attribute: the last flow error of the file (absent when there is none).
pub const XATTR_ERROR: &str = "user.sodeda.error";
/// Extended attribute: the file's identity (cache key).
pub const XATTR_IDENTITY: &str = "user.sodeda.identity";
/// Extended attribute of the root directory: counters as JSON.
pub const XATTR_STATS: &str = "user.sodeda.stats";
/// Extended attribute of the root directory: the serving process id.
pub const XATTR_PID: &str = "user.sodeda.pid";
/// Extended attribute of the root directory: reload count and last result, as JSON.
pub const XATTR_RELOAD: &str = "user.sodeda.reload";
/// Extended attribute of the root directory: the name of the file a reader opened last (what
/// `sodeda-era5 prefetch` follows); absent before any open.
pub const XATTR_LAST_READ: &str = "user.sodeda.last-read";
/// What a file's data is made of: final or preliminary hours, the store's version, absent
/// chunks of its cache entry (JSON).
pub const XATTR_PROVENANCE: &str = "user.sodeda.provenance";

/// Largest value of an extended attribute Linux passes (`XATTR_SIZE_MAX`); a larger one is
/// `E2BIG` for the reader whatever its buffer.
pub const XATTR_SIZE_MAX: usize = 65536;

/// A time of `seconds` since the epoch (negative: before it).
fn seconds_to_time(seconds: i64) -> SystemTime {
    let span = std::time::Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + span
    } else {
        SystemTime::UNIX_EPOCH - span
    }
}

/// Bytes of a reload's result kept in [`XATTR_RELOAD`]: JSON escapes at most six bytes for
/// one, so its value stays below [`XATTR_SIZE_MAX`], which Linux passes.
pub const RELOAD_RESULT_MAX: usize = 8192;

/// `result` cut to [`RELOAD_RESULT_MAX`] bytes (at a line's end when there is one, else at a
/// character's), with a note saying how many lines were cut and where the rest is.
fn bounded_result(mut result: String) -> String {
    const NOTE: usize = 80;
    if result.len() <= RELOAD_RESULT_MAX {
        return result;
    }
    let mut cut = RELOAD_RESULT_MAX - NOTE;
    while !result.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(end) = result[..cut].rfind('\n') {
        cut = end;
    }
    let more = result[cut..].lines().filter(|l| !l.is_empty()).count();
    result.truncate(cut);
    result.push_str(&format!("\n… (cut here, {more} more lines; see the log)"));
    result
}

/// The value of [`XATTR_DESKRIPTOR`]: the line as written, or, for a line too long for an
/// extended attribute, a short JSON note saying where the whole line is.
fn deskriptor_xattr(entry: &Entry) -> String {
    if entry.raw().len() <= XATTR_SIZE_MAX {
        return entry.raw().to_string();
    }
    serde_json::json!({
        "line": entry.line,
        "bytes": entry.raw().len(),
        "note": "the deskriptor is longer than an extended attribute can be (64 KiB): it is \
                 line `line` of the deskriptors file, and the file's global attribute \
                 `deskriptor`",
    })
    .to_string()
}

/// Why a file-system call failed; each maps to one errno.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    /// No such name or inode.
    #[error("no such file")]
    NotFound,
    /// Any modification: the dataset is read-only.
    #[error("read-only file system")]
    ReadOnly,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotADirectory,
    /// A file operation on the directory.
    #[error("is a directory")]
    IsADirectory,
    /// An unknown file handle.
    #[error("bad file handle")]
    BadHandle,
    /// The extended attribute does not exist.
    #[error("no such attribute")]
    NoAttribute,
    /// The caller's buffer is too small for the attribute.
    #[error("attribute larger than the buffer")]
    Range,
    /// Attributes of a namespace the file system does not have (`security.*`, `system.*`:
    /// no SELinux labels, no ACLs).
    #[error("attributes of this namespace are not supported")]
    Unsupported,
    /// Building the file failed (source, encoder or cache).
    #[error("{file}: {cause}")]
    Flow {
        /// The file name.
        file: String,
        /// Why, by kind (in the message, not also a `source()`).
        cause: BuildFailure,
    },
    /// Reading the cached file failed.
    #[error("{file}: reading the cached file: {cause}")]
    CacheRead {
        /// The file name.
        file: String,
        /// The I/O error (in the message, not also a `source()`).
        cause: Arc<std::io::Error>,
    },
}

/// Why a file could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildFailure {
    /// Its line no longer plans over the source (the store changed since it was read), or
    /// its size could not be computed.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// The flow failed: the source, the encoder or the cache (all its causes in the message).
    #[error("{}", error_chain(.0.as_ref()))]
    Flow(Arc<FlowError>),
}

impl FsError {
    /// The errno for this error. Exhaustive on purpose: a new variant must choose its errno.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::BadHandle => libc::EBADF,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            // `ls -l` asks every file for its SELinux label and ACL, and stops asking on a
            // device that answers "not supported": a million files listed without two
            // million round trips through FUSE.
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::Flow { .. } | FsError::CacheRead { .. } => libc::EIO,
        }
    }
}

/// The kind of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The root directory.
    Directory,
    /// A dataset file.
    File,
}

/// Attributes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes (exact, from the plan, for files).
    pub size: u64,
    /// File or directory.
    pub kind: Kind,
    /// Permission bits (0444 files, 0555 the directory).
    pub perm: u16,
    /// Modification time (see [`crate::provenance`]).
    pub mtime: SystemTime,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// File name.
    pub name: String,
    /// File or directory.
    pub kind: Kind,
}

/// One entry of a directory listing, its name borrowed for the time of the call.
#[derive(Debug)]
pub struct Listed<'a> {
    /// Inode number.
    pub ino: u64,
    /// File name.
    pub name: &'a str,
    /// Its attributes (as `getattr` gives them).
    pub attr: Attr,
}

/// Counters of the file system.
#[derive(Debug, Default)]
pub struct FsMetrics {
    /// Read calls answered.
    pub reads: AtomicU64,
    /// Bytes returned by reads.
    pub bytes_read: AtomicU64,
    /// Read calls that failed.
    pub read_errors: AtomicU64,
    /// Opens served by kernel passthrough to the cached file (reads never reach us).
    pub passthrough_opens: AtomicU64,
}

struct FileNode {
    ino: u64,
    /// Its place in directory listings (see [`listing_cookie`]): kept with the node across
    /// reloads, as its inode is.
    seq: u64,
    entry: Entry,
    /// Its positions in the current table, line order in the high 32 bits and name order in
    /// the low (set when a table is made; readahead reads them).
    positions: AtomicU64,
}

impl FileNode {
    /// Its positions in the current table: (line order, name order).
    fn positions(&self) -> (usize, usize) {
        let p = self.positions.load(Ordering::Relaxed);
        ((p >> 32) as usize, (p & 0xffff_ffff) as usize)
    }
}

/// The cookie (directory offset) of the entry of sequence number `seq`: `.` and `..` are 1
/// and 2, then each entry's `seq` + 3.
///
/// Every entry of a directory (file or sub-directory) has a sequence number that it keeps
/// across reloads (as it keeps its inode), and a directory lists its entries by it: a listing
/// resumed at a cookie after a reload goes on after that entry, so an entry present during
/// the whole listing is listed exactly once, whatever the reload removed or added before it.
/// Files take theirs from one counter as they first appear (at the first load in line order,
/// so a first listing follows the deskriptors file); a directory takes the number of the
/// first file that made it, which lies below it, so no other entry of its parent has it.
const fn listing_cookie(seq: u64) -> u64 {
    seq + 3
}

/// The first sequence number of the entries a listing resumed at cookie `offset` gives.
const fn first_seq_after(offset: u64) -> u64 {
    offset.saturating_sub(2)
}

/// The files of one version of the deskriptors file.
#[derive(Default)]
struct Table {
    /// The file's line order (readahead follows it).
    order: Vec<Arc<FileNode>>,
    /// The root's files in listing order (by sequence number) as positions in `order`, when
    /// that differs from line order (a reload added lines before kept ones, or moved lines);
    /// `None`: `order` is the listing order. Only for a flat set (`root` is `None`).
    listing: Option<Vec<u32>>,
    /// Name order.
    /// Sorted when first needed (readahead in name order): at a million files the sort took
    /// a second of the mount's start.
    by_name_sorted: std::sync::OnceLock<Vec<Arc<FileNode>>>,
    /// Positions in `order` by file name.
    by_name: NameIndex,
    /// Positions in `order` by inode (inodes are hashes already: a fast hasher will do).
    by_ino: hashbrown::HashMap<u64, u32>,
    /// Directories below the root, by inode (none while no name holds a `/`).
    dirs: HashMap<u64, Dir>,
    /// Directory inodes by path.
    dir_by_path: HashMap<String, u64>,
    /// The root's entries when some name holds a `/`, by sequence number; otherwise the root
    /// lists `order` (or `listing`).
    root: Option<Vec<Child>>,
}

/// A directory below the root: the names of files that hold a `/` make them.
struct Dir {
    /// Its path under the mount point (`2m_temperature/2023`).
    path: String,
    /// The inode of the directory holding it.
    parent: u64,
    /// Its sequence number in its parent's listing (kept with its inode).
    seq: u64,
    /// Its entries, by sequence number.
    children: Vec<Child>,
}

/// The inode and sequence number a directory path keeps across reloads.
#[derive(Debug, Clone, Copy)]
struct DirId {
    ino: u64,
    seq: u64,
}

/// An entry of a directory.
enum Child {
    File(Arc<FileNode>),
    Dir(u64),
}

/// The last segment of a path: what a directory listing shows.
fn leaf(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

impl Table {
    /// The file `name`.
    fn by_name(&self, name: &str) -> Option<&Arc<FileNode>> {
        let at = self.by_name.get(&self.order, name)?;
        Some(&self.order[at as usize])
    }

    /// The file of inode `ino`.
    fn by_ino(&self, ino: u64) -> Option<&Arc<FileNode>> {
        let &at = self.by_ino.get(&ino)?;
        Some(&self.order[at as usize])
    }

    /// The files in name order; each node's name position is set when this is first made.
    fn names_sorted(&self) -> &Vec<Arc<FileNode>> {
        self.by_name_sorted.get_or_init(|| {
            let mut sorted = self.order.clone();
            sorted.sort_unstable_by(|a, b| a.entry.file_name().cmp(b.entry.file_name()));
            for (n, node) in sorted.iter().enumerate() {
                node.positions.fetch_or(n as u64, Ordering::Relaxed);
            }
            sorted
        })
    }

    /// The sequence number of `child`.
    fn seq(&self, child: &Child) -> u64 {
        match child {
            Child::File(node) => node.seq,
            Child::Dir(ino) => self.dirs[ino].seq,
        }
    }

    /// Orders the root's files by sequence number, where line order is not that order.
    fn make_listing(&mut self) {
        if self.order.is_sorted_by_key(|n| n.seq) {
            return;
        }
        let mut listing: Vec<u32> = (0..self.order.len() as u32).collect();
        listing.sort_unstable_by_key(|&p| self.order[p as usize].seq);
        self.listing = Some(listing);
    }

    /// Builds the directories of the names that hold a `/`, giving each directory path the
    /// inode and sequence number `inos` keeps for it (at the first time, a new inode and the
    /// number of the file that makes it), each directory's entries by sequence number.
    fn make_dirs(&mut self, inos: &mut HashMap<String, DirId>, next_ino: &AtomicU64) {
        if !self.order.iter().any(|n| n.entry.file_name().contains('/')) {
            self.make_listing();
            return;
        }
        let mut root = Vec::new();
        for node in &self.order {
            let name = node.entry.file_name();
            let mut parent = ROOT_INO;
            for (at, _) in name.match_indices('/') {
                let path = &name[..at];
                let ino = match self.dir_by_path.get(path) {
                    Some(&ino) => ino,
                    None => {
                        let id = *inos.entry(path.to_string()).or_insert_with(|| DirId {
                            ino: next_ino.fetch_add(1, Ordering::Relaxed),
                            seq: node.seq,
                        });
                        let ino = id.ino;
                        self.dir_by_path.insert(path.to_string(), ino);
                        let dir = Dir {
                            path: path.to_string(),
                            parent,
                            seq: id.seq,
                            children: Vec::new(),
                        };
                        self.dirs.insert(ino, dir);
                        match self.dirs.get_mut(&parent) {
                            Some(p) => p.children.push(Child::Dir(ino)),
                            None => root.push(Child::Dir(ino)),
                        }
                        ino
                    }
                };
                parent = ino;
            }
            match self.dirs.get_mut(&parent) {
                Some(p) => p.children.push(Child::File(node.clone())),
                None => root.push(Child::File(node.clone())),
            }
        }
        // Built in line order, which is the order of sequence numbers unless a reload added
        // lines before kept ones (or moved lines): sorted only then.
        let seqs: HashMap<u64, u64> = self.dirs.iter().map(|(&i, d)| (i, d.seq)).collect();
        let seq = |c: &Child| match c {
            Child::File(node) => node.seq,
            Child::Dir(ino) => seqs[ino],
        };
        for children in self
            .dirs
            .values_mut()
            .map(|d| &mut d.children)
            .chain([&mut root])
        {
            if !children.is_sorted_by_key(seq) {
                children.sort_unstable_by_key(seq);
            }
        }
        self.root = Some(root);
    }
}

/// Positions of files by name, without a second copy of each name (at a million files the
/// copies were a tenth of the mount's memory): the index holds positions in the table's line
/// order and compares the name found there.
#[derive(Default)]
struct NameIndex {
    positions: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl NameIndex {
    /// The index of the names of `entries` (distinct: the catalog checked them), by position.
    fn of(entries: &[Entry]) -> Self {
        use std::hash::BuildHasher;
        let mut index = NameIndex::default();
        // Empty: nothing to rehash, so the hasher is never called.
        index.positions.reserve(entries.len(), |_| 0);
        for (at, e) in entries.iter().enumerate() {
            let hash = index.hasher.hash_one(e.file_name());
            let hasher = &index.hasher;
            index.positions.insert_unique(hash, at as u32, |&p| {
                hasher.hash_one(entries[p as usize].file_name())
            });
        }
        index
    }

    /// The position of `name` in `order`.
    fn get(&self, order: &[Arc<FileNode>], name: &str) -> Option<u32> {
        use std::hash::BuildHasher;
        self.positions
            .find(self.hasher.hash_one(name), |&p| {
                order[p as usize].entry.file_name() == name
            })
            .copied()
    }
}

/// Inodes of files are in [2⁶², 2⁶³): directories count up from 2 and never meet them.
const FILE_INO_BASE: u64 = 1 << 62;

/// The inode of the file `name` with `identity`: a hash of both, the same in every reload and
/// every mount, so no table of inodes is kept (at a million files that table was 60 MB). A
/// name whose deskriptor changes gets another inode; a (name, identity) served before gets
/// its inode back. Two pairs of one table that hash alike (about n²/2⁶³: 10⁻⁷ at a million
/// files) are told apart by probing ([`DatasetFs::replace_table`]).
fn file_ino(name: &str, identity: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let sip = |s: &str| {
        let mut h = std::hash::DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    };
    // The identity is hex of a SHA-256: its first 64 bits are already uniform.
    let id = identity
        .get(..16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| sip(identity));
    FILE_INO_BASE | ((id ^ sip(name).rotate_left(29)) >> 2)
}

/// An open file. It holds its node, so it keeps working after a reload removed the file.
/// The outcome of the first read's flow is kept for the handle's lifetime: the kernel may
/// split one read (and its readahead) into several requests, and they must not each start a
/// new flow after a failure. Opening the file again retries.
struct Handle {
    node: Arc<FileNode>,
    file: OnceCell<Result<Served, FsError>>,
    /// Where a reader of a file served by its parts is going (see [`Stream`]).
    stream: Mutex<Stream>,
    /// The file's cache entry is never evicted while a handle is open (nor while a read on a
    /// released handle still runs: the pin goes with the last reference).
    _pin: crate::cache::Pin,
}

/// A reader's progress through a file served by its parts: once its reads have followed on
/// through [`STREAM_AFTER`] slabs, the slabs after them are built ahead, a window that
/// doubles with every slab read from 1 to [`crate::flow::parts::MAX_WINDOW`]; a read
/// elsewhere starts it again. A reader of one time step (which touches the edges of its
/// neighbours) starts nothing.
#[derive(Debug, Default)]
struct Stream {
    /// The reader's run of reads that follow on: where it began and where its last read
    /// ended (`None` before the first read of data).
    run: Option<(u64, u64)>,
    /// Where the reader's last read of data ended.
    last_end: Option<u64>,
}

impl Stream {
    /// Whether a read at `offset` continues the reader's last read of data: at its end, or
    /// at most [`CONTINUES_WITHIN`] after it (not a read again of the same bytes, nor the
    /// next of a series of reads far apart, as a point's time series makes).
    fn continues(&self, offset: u64) -> bool {
        self.last_end
            .is_some_and(|end| offset >= end && offset <= end.saturating_add(CONTINUES_WITHIN))
    }

    /// Whether a read at `offset` follows on from the reader's last read of data.
    fn follows(&self, offset: u64) -> bool {
        self.run.is_some_and(|(_, next)| {
            offset <= next.saturating_add(STREAM_SLACK)
                && offset.saturating_add(STREAM_SLACK) >= next
        })
    }
}

/// How far after the end of the last read a read still continues it (see
/// [`Stream::continues`]).
const CONTINUES_WITHIN: u64 = 64 << 10;

/// Slabs a reader reads in a row before the slabs after them are built ahead.
const STREAM_AFTER: u64 = 2;

/// How far from the end of the last read a read still counts as following on: the kernel's
/// own read-ahead sends a few reads at once, and they may arrive out of order.
const STREAM_SLACK: u64 = 1 << 20;

/// What a reload changed: what a cache of names and attributes (the kernel's) must forget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Files after the reload.
    pub files: usize,
    /// Names that appeared.
    pub added: Vec<String>,
    /// Names that vanished.
    pub removed: Vec<String>,
    /// Names kept whose deskriptor changed (another identity): each is now a new inode, with
    /// its new size and bytes.
    pub changed: Vec<String>,
    /// Inodes no name leads to any more: those of the removed files and the previous inodes
    /// of the changed ones. Handles open on them keep reading their old bytes.
    pub retired: Vec<u64>,
}

impl ReloadSummary {
    /// Every name whose lookup now answers differently (added, removed or changed).
    pub fn stale_names(&self) -> impl Iterator<Item = &str> {
        self.added
            .iter()
            .chain(&self.removed)
            .chain(&self.changed)
            .map(String::as_str)
    }
}

/// The dataset file system.
pub struct DatasetFs {
    table: RwLock<Table>,
    /// The last failure of each file whose last build failed (its `user.sodeda.error`).
    failures: Mutex<HashMap<u64, String>>,
    /// Inode and sequence number of each directory path ever served, kept across reloads too.
    dir_inos: Mutex<HashMap<String, DirId>>,
    next_ino: AtomicU64,
    /// The sequence number the next new file gets (see [`listing_cookie`]).
    next_seq: AtomicU64,
    flow: Flow,
    options: PlanOptions,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    created: SystemTime,
    /// Reloads done, and the last one's result (see [`DatasetFs::record_reload`]).
    reloads: Mutex<(u64, String)>,
    /// Background builds of the next files for readers going through them in order.
    readahead: Readahead,
    /// The file opened last by a reader.
    last_read: Mutex<Option<String>>,
    /// The runtime background builds run on (the one the file system was made in).
    runtime: Option<tokio::runtime::Handle>,
    /// Counters.
    pub metrics: FsMetrics,
}

impl std::fmt::Debug for DatasetFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetFs")
            .field("files", &self.len())
            .finish_non_exhaustive()
    }
}

impl DatasetFs {
    /// A file system of catalog `entries` (file names must be unique, as a catalog
    /// guarantees); files are planned again with `options` when they are built.
    pub fn new(entries: Vec<Entry>, flow: Flow, options: PlanOptions) -> Self {
        // The directory's time, as its files', is stable across remounts: the store's last
        // change.
        let created = seconds_to_time(
            flow.source()
                .scope
                .freshness
                .current()
                .updated_seconds()
                .unwrap_or(0),
        );
        let fs = Self {
            table: RwLock::new(Table::default()),
            failures: Mutex::new(HashMap::new()),
            dir_inos: Mutex::new(HashMap::new()),
            next_ino: AtomicU64::new(ROOT_INO + 1),
            next_seq: AtomicU64::new(0),
            flow,
            options,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            created,
            reloads: Mutex::new((0, String::new())),
            readahead: Readahead::new(0),
            last_read: Mutex::new(None),
            runtime: tokio::runtime::Handle::try_current().ok(),
            metrics: FsMetrics::default(),
        };
        fs.replace_table(entries, false);
        fs
    }

    /// Builds up to `window` files ahead of a reader that goes through the files in line or
    /// name order (0: no readahead). See [`readahead`].
    pub fn with_readahead(mut self, window: usize) -> Self {
        self.readahead = Readahead::new(window);
        self
    }

    /// Records the outcome of a reload request (shown in `user.sodeda.reload`), cut to
    /// [`RELOAD_RESULT_MAX`] bytes (the log has it whole).
    pub fn record_reload(&self, result: String) {
        let result = bounded_result(result);
        let mut r = self.reloads.lock().expect("poisoned");
        r.0 += 1;
        r.1 = result;
    }

    /// Replaces the set of files (a new version of the deskriptors file). Files whose name
    /// and identity are unchanged keep their inode and state; a name whose deskriptor changed
    /// gets another inode (an inode's size and bytes never change: the kernel may cache them);
    /// removed files vanish from the directory, while handles already open on them (or on
    /// the previous version of a changed file) keep reading. A name and identity served
    /// before get their earlier inode back.
    pub fn reload(&self, entries: Vec<Entry>) -> ReloadSummary {
        self.replace_table(entries, true)
    }

    /// Replaces the table with `entries`; the names added are listed in the summary only if
    /// `record_added` (the first load lists none: a million names copied for nothing).
    fn replace_table(&self, entries: Vec<Entry>, record_added: bool) -> ReloadSummary {
        let mut table = self.table.write().expect("table poisoned");
        let mut summary = ReloadSummary::default();
        // Two passes over a million entries that are each bound by memory latency: the inodes
        // (with the nodes kept from the table before) on this thread, the name index on
        // another.
        let (kept, by_ino, by_name) = std::thread::scope(|scope| {
            let names = scope.spawn(|| NameIndex::of(&entries));
            // Each entry's inode, and its node if the table before had it already.
            let mut kept: Vec<(u64, Option<Arc<FileNode>>)> = Vec::with_capacity(entries.len());
            let mut by_ino: hashbrown::HashMap<u64, u32> = hashbrown::HashMap::new();
            by_ino.reserve(entries.len());
            for (at, entry) in entries.iter().enumerate() {
                let (ino, keep) = match table.by_name(entry.file_name()) {
                    Some(old) if old.entry.identity() == entry.identity() => {
                        (old.ino, Some(old.clone()))
                    }
                    previous => {
                        match previous {
                            None if record_added => {
                                summary.added.push(entry.file_name().to_string())
                            }
                            None => {}
                            Some(old) => {
                                summary.changed.push(entry.file_name().to_string());
                                summary.retired.push(old.ino);
                            }
                        }
                        let mut ino = file_ino(entry.file_name(), entry.identity());
                        while by_ino.contains_key(&ino) {
                            ino = FILE_INO_BASE | ((ino + 1) & (FILE_INO_BASE - 1));
                        }
                        (ino, None)
                    }
                };
                by_ino.insert(ino, at as u32);
                kept.push((ino, keep));
            }
            (kept, by_ino, names.join().expect("the name index panicked"))
        });
        let mut next = Table {
            by_name,
            by_ino,
            ..Table::default()
        };
        next.order.reserve_exact(entries.len());
        for (entry, (ino, kept)) in entries.into_iter().zip(kept) {
            next.order.push(kept.unwrap_or_else(|| {
                Arc::new(FileNode {
                    ino,
                    seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                    entry,
                    positions: AtomicU64::new(0),
                })
            }));
        }
        for gone in table
            .order
            .iter()
            .filter(|n| next.by_name(n.entry.file_name()).is_none())
        {
            summary.removed.push(gone.entry.file_name().to_string());
            summary.retired.push(gone.ino);
        }
        summary.files = next.order.len();
        for (l, node) in next.order.iter().enumerate() {
            node.positions.store((l as u64) << 32, Ordering::Relaxed);
        }
        next.make_dirs(&mut self.dir_inos.lock().expect("poisoned"), &self.next_ino);
        let mut failures = self.failures.lock().expect("poisoned");
        failures.retain(|ino, _| next.by_ino.contains_key(ino));
        drop(failures);
        *table = next;
        self.readahead.reset();
        summary
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.table.read().expect("table poisoned").order.len()
    }

    /// True when the dataset has no files.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The flow serving this file system.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    fn node(&self, ino: u64) -> Result<Arc<FileNode>, FsError> {
        self.table
            .read()
            .expect("table poisoned")
            .by_ino(ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn file_attr(&self, node: &FileNode) -> Attr {
        Attr {
            ino: node.ino,
            size: node.entry.size,
            kind: Kind::File,
            perm: 0o444,
            mtime: seconds_to_time(node.entry.mtime),
        }
    }

    /// Attributes of a node.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        Ok(match self.file_node(ino)? {
            Some(node) => self.file_attr(&node),
            None => self.dir_attr(ino),
        })
    }

    /// The node of file `ino`, or `None` for a directory (the root or one made by names with
    /// `/`), with one look at the table.
    fn file_node(&self, ino: u64) -> Result<Option<Arc<FileNode>>, FsError> {
        if ino == ROOT_INO {
            return Ok(None);
        }
        let table = self.table.read().expect("table poisoned");
        match table.by_ino(ino) {
            Some(node) => Ok(Some(node.clone())),
            None if table.dirs.contains_key(&ino) => Ok(None),
            None => Err(FsError::NotFound),
        }
    }

    /// A directory's attributes: its time is the mount's (the store's last change).
    fn dir_attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            size: 0,
            kind: Kind::Directory,
            perm: 0o555,
            mtime: self.created,
        }
    }

    /// The (directory inode, name) pairs a kernel caches on the way to `path`: each directory
    /// of the path in its parent, then the file in its directory. Directories are named by
    /// the inodes they have ever had, so a path that a reload removed is found too.
    pub fn kernel_entries(&self, path: &str) -> Vec<(u64, String)> {
        let inos = self.dir_inos.lock().expect("poisoned");
        let mut out = Vec::new();
        let mut parent = ROOT_INO;
        let mut start = 0;
        for (at, _) in path.match_indices('/') {
            out.push((parent, path[start..at].to_string()));
            match inos.get(&path[..at]) {
                Some(id) => parent = id.ino,
                None => return out,
            }
            start = at + 1;
        }
        out.push((parent, path[start..].to_string()));
        out
    }

    /// Attributes of inode `ino` asked through its open handle `fh`: also when a reload has
    /// removed or changed the file since it was opened (the kernel asks, with the handle,
    /// before reading up to the end of a file whose attributes it no longer trusts).
    pub fn getattr_open(&self, ino: u64, fh: u64) -> Result<Attr, FsError> {
        match self.getattr(ino) {
            Err(FsError::NotFound) => self
                .handle(fh)
                .filter(|h| h.node.ino == ino)
                .map(|h| self.file_attr(&h.node))
                .ok_or(FsError::NotFound),
            other => other,
        }
    }

    /// Looks up `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let table = self.table.read().expect("table poisoned");
        let dir_path = match table.dirs.get(&parent) {
            Some(dir) => Some(dir.path.as_str()),
            None if parent == ROOT_INO => None,
            None if table.by_ino.contains_key(&parent) => return Err(FsError::NotADirectory),
            None => return Err(FsError::NotFound),
        };
        let name = name.to_str().ok_or(FsError::NotFound)?;
        if name.contains('/') {
            return Err(FsError::NotFound);
        }
        let joined;
        let path = match dir_path {
            Some(dir) => {
                joined = format!("{dir}/{name}");
                joined.as_str()
            }
            None => name,
        };
        if let Some(node) = table.by_name(path) {
            return Ok(self.file_attr(node));
        }
        match table.dir_by_path.get(path) {
            Some(&ino) => Ok(self.dir_attr(ino)),
            None => Err(FsError::NotFound),
        }
    }

    /// Every entry of directory `ino` (`.` and `..` first); see [`DatasetFs::readdir_from`]
    /// for a listing in pages.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        self.readdir_from(ino, 0, |_, e| {
            out.push(DirEntry {
                ino: e.ino,
                name: e.name.to_string(),
                kind: e.attr.kind,
            });
            false
        })?;
        Ok(out)
    }

    /// Lists directory `ino` from cookie `offset` (0 for the start), until `add` returns
    /// `true` (the kernel's buffer is full). Each entry is passed to `add` with its cookie,
    /// where the next page starts: `.` and `..` are 1 and 2, an entry's cookie is stable
    /// across reloads (its sequence number + 3), so a listing that a reload interrupts gives every
    /// entry present throughout exactly once (entries added or removed meanwhile may or may
    /// not appear, as POSIX allows). The cost is proportional to the entries given (a binary
    /// search finds the first), not to the directory's size: a listing in pages is linear,
    /// not quadratic. Names are borrowed, not copied.
    pub fn readdir_from(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, Listed<'_>) -> bool,
    ) -> Result<(), FsError> {
        let table = self.table.read().expect("table poisoned");
        let (parent, children) = match table.dirs.get(&ino) {
            Some(dir) => (dir.parent, Some(&dir.children)),
            None if ino == ROOT_INO => (ROOT_INO, table.root.as_ref()),
            None if table.by_ino.contains_key(&ino) => return Err(FsError::NotADirectory),
            None => return Err(FsError::NotFound),
        };
        for (cookie, (name, dot)) in (1..).zip([(".", ino), ("..", parent)]) {
            if cookie <= offset {
                continue;
            }
            let listed = Listed {
                ino: dot,
                name,
                attr: self.dir_attr(dot),
            };
            if add(cookie, listed) {
                return Ok(());
            }
        }
        let from = first_seq_after(offset);
        match (children, &table.listing) {
            (Some(children), _) => {
                let first = children.partition_point(|c| table.seq(c) < from);
                for child in &children[first..] {
                    let cookie = listing_cookie(table.seq(child));
                    if add(cookie, self.listed(&table, child)) {
                        break;
                    }
                }
            }
            // A flat set: the root lists the files in line order, or by `listing`.
            (None, None) => {
                let first = table.order.partition_point(|n| n.seq < from);
                for node in &table.order[first..] {
                    if add(listing_cookie(node.seq), self.listed_file(node)) {
                        break;
                    }
                }
            }
            (None, Some(listing)) => {
                let first = listing.partition_point(|&p| table.order[p as usize].seq < from);
                for &p in &listing[first..] {
                    let node = &table.order[p as usize];
                    if add(listing_cookie(node.seq), self.listed_file(node)) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// How the root of a flat set lists `node`: its name, borrowed from the node.
    fn listed_file<'t>(&self, node: &'t FileNode) -> Listed<'t> {
        Listed {
            ino: node.ino,
            name: node.entry.file_name(),
            attr: self.file_attr(node),
        }
    }

    /// How a directory lists `child`: its last path segment, borrowed from `table`.
    fn listed<'t>(&self, table: &'t Table, child: &'t Child) -> Listed<'t> {
        match child {
            Child::File(node) => Listed {
                name: leaf(node.entry.file_name()),
                ..self.listed_file(node)
            },
            Child::Dir(d) => Listed {
                ino: *d,
                name: leaf(&table.dirs[d].path),
                attr: self.dir_attr(*d),
            },
        }
    }

    /// Opens a file for reading; any write access is refused.
    pub fn open(&self, ino: u64, write: bool) -> Result<u64, FsError> {
        self.open_as(ino, write, false)
    }

    /// Like [`DatasetFs::open`]; a `background` open (with `O_NONBLOCK`, as
    /// `sodeda-era5 prefetch` does) builds the file like any other but is not a reader's: it
    /// moves neither the readahead nor [`XATTR_LAST_READ`].
    pub fn open_as(&self, ino: u64, write: bool, background: bool) -> Result<u64, FsError> {
        let node = self.file_node(ino)?.ok_or(FsError::IsADirectory)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        if !background {
            self.read_ahead(&node);
        }
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let pin = self.flow.tiers().pin(node.entry.identity());
        self.handles.lock().expect("handles poisoned").insert(
            fh,
            Arc::new(Handle {
                node,
                file: OnceCell::new(),
                stream: Mutex::new(Stream::default()),
                _pin: pin,
            }),
        );
        Ok(fh)
    }

    /// The local cache file of a file, if it is built and trusted, sealed (immutable while
    /// the seal lives) before its check, for the kernel to read it itself (passthrough);
    /// counted as a cache hit. `Ok(None)` when the file is not built; an error when entries
    /// cannot be sealed here.
    pub fn sealed_file(&self, ino: u64) -> std::io::Result<Option<Seal>> {
        let Ok(node) = self.node(ino) else {
            return Ok(None);
        };
        let e = &node.entry;
        self.flow
            .tiers()
            .open_sealed(Key::new(e.identity(), e.size))
    }

    /// Whether a file not cached yet will be served by its parts (a classic file of at least
    /// [`Flow::parts_from`] bytes): its reads then come to the mount as the reader makes
    /// them (direct I/O), so that the kernel's read-ahead builds no slab the reader does not
    /// read.
    pub fn served_by_parts(&self, ino: u64) -> bool {
        let Ok(node) = self.node(ino) else {
            return false;
        };
        let e = &node.entry;
        self.options.format == crate::layout::Format::Classic64
            && e.size >= self.flow.parts_from()
            && !self.flow.tiers().is_cached(Key::new(e.identity(), e.size))
    }

    /// Forgets a file handle.
    pub fn release(&self, fh: u64) {
        // Dropping the handle unpins its entry (once no read holds it).
        self.handles.lock().expect("handles poisoned").remove(&fh);
    }

    /// Reads up to `size` bytes at `offset` through handle `fh`. The first read of a handle
    /// materializes the file (single flight across all handles); a read at or past the end
    /// returns no bytes.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let result = async {
            let handle = self.handle(fh).ok_or(FsError::BadHandle)?;
            let node = &handle.node;
            if offset >= node.entry.size || size == 0 {
                return Ok(Vec::new()); // nothing to build for
            }
            let served = handle
                .file
                .get_or_init(|| self.open_served(node))
                .await
                .clone()?;
            match served {
                // The first read may wait for a build; the pread itself is a page-cache copy.
                Served::Whole(file) => Self::pread(node, &file, offset, size),
                Served::Parts(parts) => {
                    let follows_on = handle.stream.lock().expect("poisoned").continues(offset);
                    let bytes = parts
                        .read(offset, size, follows_on)
                        .await
                        .map_err(|e| self.failed(node, BuildFailure::Flow(e)))?;
                    self.stream_on(&handle, &parts, offset, bytes.len() as u64);
                    Ok(bytes)
                }
            }
        }
        .await;
        self.count(&result);
        result
    }

    /// Notes a read of `len` bytes at `offset` of a file served by its parts and, while the
    /// reader's reads follow on from each other through slabs, builds the slabs after it
    /// ahead. Reads of the header and coordinates alone start nothing (`ncdump -h` fetches
    /// no data).
    fn stream_on(&self, handle: &Handle, parts: &Arc<PartsFile>, offset: u64, len: u64) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let data = len > 0 && parts.touches_slab(offset..offset + len);
        let ahead = {
            let mut s = handle.stream.lock().expect("poisoned");
            let (start, next) = match s.run {
                Some((start, next)) if data && s.follows(offset) => (start, next.max(offset + len)),
                _ => (offset, offset + len),
            };
            if data {
                s.run = Some((start, next));
                s.last_end = Some(offset + len);
            }
            let slabs = (next - start) / parts.slab_size().max(1);
            match slabs.checked_sub(STREAM_AFTER) {
                Some(k) if data => 1u64
                    .checked_shl(k.min(63) as u32)
                    .unwrap_or(u64::MAX)
                    .min(crate::flow::parts::MAX_WINDOW),
                _ => 0,
            }
        };
        if ahead > 0 {
            parts.read_ahead(runtime, offset + len, ahead);
        }
    }

    /// Answers a read at once when the handle's file is already open (the common case after
    /// the first read): a `pread` of the local cache file, without waiting on any task.
    /// `None` when the file must first be built; then use [`DatasetFs::read`].
    pub fn read_ready(&self, fh: u64, offset: u64, size: u32) -> Option<Result<Vec<u8>, FsError>> {
        let handle = self.handle(fh)?;
        let result = match handle.file.get()? {
            Ok(Served::Whole(file)) => Self::pread(&handle.node, file, offset, size),
            Ok(Served::Parts(parts)) => {
                // Answered here only when the slabs under it are built and sound.
                let bytes = parts.read_now(offset, size)?;
                let bytes = bytes.map_err(|e| self.failed(&handle.node, BuildFailure::Flow(e)));
                if let Ok(b) = &bytes {
                    self.stream_on(&handle, parts, offset, b.len() as u64);
                }
                bytes
            }
            Err(e) => Err(e.clone()),
        };
        self.count(&result);
        Some(result)
    }

    fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles
            .lock()
            .expect("handles poisoned")
            .get(&fh)
            .cloned()
    }

    /// Up to `size` bytes of the cached file at `offset`, never past the planned size, each
    /// block checked against the checksum recorded when the entry was checked: bytes changed
    /// on disk since are an error, never served.
    fn pread(
        node: &FileNode,
        file: &CachedFile,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, FsError> {
        file.read_at(offset, u64::from(size), node.entry.size)
            .map_err(|e| {
                tracing::error!("{}: {e}", node.entry.file_name());
                FsError::CacheRead {
                    file: node.entry.file_name().to_string(),
                    cause: Arc::new(e),
                }
            })
    }

    fn count(&self, result: &Result<Vec<u8>, FsError>) {
        match result {
            Ok(data) => {
                self.metrics.reads.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.metrics.read_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Notes that a reader opened `node` and, when the reader goes through the files in
    /// order, starts building the next ones in the background.
    fn read_ahead(&self, node: &FileNode) {
        *self.last_read.lock().expect("poisoned") = Some(node.entry.file_name().to_string());
        let window = self.readahead.window();
        if window == 0 {
            return;
        }
        let (order, from, next): (Order, usize, Vec<Entry>) = {
            let table = self.table.read().expect("table poisoned");
            if !table.by_ino.contains_key(&node.ino) {
                return; // a file a reload removed
            }
            let by_name = table.names_sorted();
            let pos = node.positions();
            let (order, list, at) = match self.readahead.note(pos) {
                Some(Order::Lines) => (Order::Lines, &table.order, pos.0),
                Some(Order::Names) => (Order::Names, by_name, pos.1),
                None => return,
            };
            let span = self.readahead.span(order, at);
            let (from, to) = (span.start.min(list.len()), span.end.min(list.len()));
            let next = list[from..to].iter().map(|n| n.entry.clone()).collect();
            (order, from, next)
        };
        if let Some(runtime) = &self.runtime {
            let looked = self
                .readahead
                .start(runtime, &self.flow, self.options, next);
            self.readahead.advance(order, from + looked);
        }
    }

    /// Records `cause` as the last failure of `node` (its `user.sodeda.error`).
    fn failed(&self, node: &FileNode, cause: BuildFailure) -> FsError {
        let mut failures = self.failures.lock().expect("poisoned");
        failures.insert(node.ino, cause.to_string());
        FsError::Flow {
            file: node.entry.file_name().to_string(),
            cause,
        }
    }

    async fn open_served(&self, node: &FileNode) -> Result<Served, FsError> {
        let entry = &node.entry;
        if let Some(hit) = self
            .flow
            .tiers()
            .hit(Key::new(entry.identity(), entry.size))
        {
            return Ok(Served::Whole(hit));
        }
        let plan = entry
            .plan(&self.flow.source().scope, self.options)
            .map_err(|e| self.failed(node, e.into()))?;
        // The file as checked or written by the cache, never a path opened again: an entry
        // evicted meanwhile by another process stays readable.
        match self.flow.serve(&plan).await {
            Ok(served) => {
                self.failures.lock().expect("poisoned").remove(&node.ino);
                Ok(served)
            }
            Err(e) => Err(self.failed(node, BuildFailure::Flow(e))),
        }
    }

    /// The names of the extended attributes of a node. A file lists only its stable facts
    /// (deskriptor, identity, provenance), which stay true of a copy; its state
    /// (`user.sodeda.cached`, `user.sodeda.error`) is readable by name but not listed, so
    /// `cp -a` and `rsync -aX` do not carry it onto copies.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<String>, FsError> {
        if ino == ROOT_INO {
            let mut names = vec![
                XATTR_STATS.to_string(),
                XATTR_PID.to_string(),
                XATTR_RELOAD.to_string(),
            ];
            if self.last_read.lock().expect("poisoned").is_some() {
                names.push(XATTR_LAST_READ.to_string());
            }
            return Ok(names);
        }
        if self.file_node(ino)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(vec![
            XATTR_DESKRIPTOR.to_string(),
            XATTR_IDENTITY.to_string(),
            XATTR_PROVENANCE.to_string(),
        ])
    }

    /// The value of an extended attribute.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, FsError> {
        let name = name.to_str().ok_or(FsError::NoAttribute)?;
        if name.starts_with("security.") || name.starts_with("system.") {
            return Err(FsError::Unsupported);
        }
        if ino == ROOT_INO {
            return match name {
                XATTR_STATS => Ok(self.stats_json().into_bytes()),
                XATTR_PID => Ok(std::process::id().to_string().into_bytes()),
                XATTR_LAST_READ => self
                    .last_read
                    .lock()
                    .expect("poisoned")
                    .clone()
                    .map(String::into_bytes)
                    .ok_or(FsError::NoAttribute),
                XATTR_RELOAD => {
                    let r = self.reloads.lock().expect("poisoned");
                    Ok(serde_json::json!({"reloads": r.0, "last": r.1})
                        .to_string()
                        .into_bytes())
                }
                _ => Err(FsError::NoAttribute),
            };
        }
        let node = self.file_node(ino)?.ok_or(FsError::NoAttribute)?;
        let value = match name {
            XATTR_DESKRIPTOR => deskriptor_xattr(&node.entry),
            XATTR_IDENTITY => node.entry.identity().to_string(),
            XATTR_CACHED => {
                let e = &node.entry;
                if self.flow.tiers().is_cached(Key::new(e.identity(), e.size)) {
                    "yes".into()
                } else {
                    "no".into()
                }
            }
            XATTR_PROVENANCE => {
                let e = &node.entry;
                let plan = e
                    .plan(&self.flow.source().scope, self.options)
                    .map_err(|err| FsError::Flow {
                        file: e.file_name().to_string(),
                        cause: err.into(),
                    })?;
                let mut json = plan.provenance.to_json();
                json["absent_chunks"] = self
                    .flow
                    .tiers()
                    .peek(Key::new(e.identity(), e.size))
                    .map_or(serde_json::Value::Null, |c| c.absent_chunks().into());
                json.to_string()
            }
            XATTR_ERROR => self
                .failures
                .lock()
                .expect("poisoned")
                .get(&node.ino)
                .cloned()
                .ok_or(FsError::NoAttribute)?,
            _ => return Err(FsError::NoAttribute),
        };
        Ok(value.into_bytes())
    }

    /// Counters of the file system, the flow and the source, as one JSON object.
    pub fn stats_json(&self) -> String {
        let get = |a: &AtomicU64| serde_json::Value::from(a.load(Ordering::Relaxed));
        let mut stats = serde_json::Map::from_iter([
            ("files".to_string(), self.len().into()),
            ("reads".to_string(), get(&self.metrics.reads)),
            ("bytes_read".to_string(), get(&self.metrics.bytes_read)),
            ("read_errors".to_string(), get(&self.metrics.read_errors)),
            (
                "passthrough_opens".to_string(),
                get(&self.metrics.passthrough_opens),
            ),
            ("readahead_builds".to_string(), get(&self.readahead.started)),
        ]);
        stats.extend(self.flow.counters());
        serde_json::Value::Object(stats).to_string()
    }

    /// Total size of all files, for `statfs`.
    pub fn total_size(&self) -> u64 {
        self.table
            .read()
            .expect("table poisoned")
            .order
            .iter()
            .map(|f| f.entry.size)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reload_result_is_cut_below_what_linux_passes() {
        assert_eq!(bounded_result("ok: 3 files".into()), "ok: 3 files");
        let long: String = (0..1000)
            .map(|i| format!("line {i}: \u{1}\"é\" unknown variable\n"))
            .collect();
        let cut = bounded_result(long.clone());
        assert!(cut.len() <= RELOAD_RESULT_MAX, "{}", cut.len());
        let shown = cut.lines().count() - 1;
        let note = format!("… (cut here, {} more lines; see the log)", 1000 - shown);
        assert!(cut.ends_with(&note), "{}", &cut[cut.len() - 100..]);
        assert!(long.starts_with(&cut[..cut.len() - note.len() - 1]));
        let json = serde_json::json!({"reloads": u64::MAX, "last": cut}).to_string();
        assert!(json.len() < XATTR_SIZE_MAX, "{}", json.len());
        // One line longer than the limit: cut inside it, at a character's boundary.
        let cut = bounded_result("é".repeat(RELOAD_RESULT_MAX));
        assert!(cut.len() <= RELOAD_RESULT_MAX && cut.ends_with("1 more lines; see the log)"));
    }
}
