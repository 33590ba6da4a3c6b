//! Links `fuser` calls to [`crate::fs::DatasetFs`]; translation only, no behaviour.
//!
//! Calls that only look at memory (lookup, getattr, readdir, xattrs) are answered on the FUSE
//! thread, and so are reads of a file already built (a `pread` of the local cache file). A
//! read that has to build the file is answered from a task on the tokio runtime: the FUSE loop
//! never waits on a flow. Every modifying call gets `EROFS`. Errors are logged
//! here, once, with the operation and errno.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{
    BackingId, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::cache::seal::Seal;
use crate::fs::{Attr, DatasetFs};

mod passthrough;
mod read_only;
mod reply;
use passthrough::Handles;
use reply::{errno, kind, xattr_reply};

/// How long the kernel may cache names and attributes. The dataset only changes on reload,
/// which tells the kernel to forget every name it changed (`crate::mount`), and a file's
/// size and bytes never change for a given inode (a changed line gets a new inode).
const TTL: Duration = Duration::from_secs(60);

/// The `fuser::Filesystem` over a [`DatasetFs`].
///
/// Files already built are opened in kernel passthrough mode where the kernel supports it
/// (Linux 6.9+, as root) and the entry can be sealed (made immutable while the kernel reads
/// it, see [`crate::cache::seal`]): the kernel then reads the local cache file itself, at
/// disk speed, and reads never come up to this process. Files not built yet are opened
/// normally; their first read builds them, and every read we answer is checked.
pub struct FuseAdapter {
    fs: Arc<DatasetFs>,
    runtime: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
    passthrough: AtomicBool,
    handles: Mutex<Handles<Backing>>,
}

impl FuseAdapter {
    /// An adapter answering from `fs`, running reads on `runtime`.
    pub fn new(fs: Arc<DatasetFs>, runtime: tokio::runtime::Handle) -> Self {
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            fs,
            runtime,
            uid,
            gid,
            passthrough: AtomicBool::new(false),
            handles: Mutex::new(Handles::default()),
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        reply::file_attr(a, self.uid, self.gid)
    }
}

/// A passthrough registration: the kernel's backing id, and the seal that keeps its entry
/// immutable while the kernel reads it (dropped in this order: the id closes first).
struct Backing {
    id: BackingId,
    seal: Seal,
}

/// How a file is opened.
enum Mode {
    /// The kernel reads the sealed cache entry itself.
    Passthrough,
    /// Reads come to us, and the kernel may cache their pages.
    Caching(ReplyOpen),
    /// Refused: the kernel holds the inode in passthrough on an entry changed since it was
    /// sealed (its seal lifted on purpose), and allows new opens of it only on that same
    /// entry. An error rather than its bytes, until the handles holding it are closed.
    Refused(ReplyOpen),
}

impl FuseAdapter {
    /// Opens `fh` (of inode `ino`) in passthrough mode on its sealed cache file where it can;
    /// otherwise says how to open it.
    fn open_passthrough(&self, ino: u64, fh: u64, reply: ReplyOpen) -> Mode {
        if !self.passthrough.load(Ordering::Relaxed) {
            return Mode::Caching(reply);
        }
        {
            let mut handles = self.handles.lock().expect("poisoned");
            // The kernel has this inode in passthrough mode: a new open must share its
            // backing file, or stay out of the kernel's cache (a caching open is refused).
            if let Some(backing) = handles.backing(ino) {
                if !backing.seal.intact() {
                    tracing::error!(
                        "the cache entry of inode {ino} was changed although it was sealed \
                         (chattr -i?); new opens fail until the open handles of the file are \
                         closed, then it is made again"
                    );
                    return Mode::Refused(reply);
                }
                return self.pass(&mut handles, ino, fh, backing, reply);
            }
            if !handles.may_pass(ino) {
                return Mode::Caching(reply);
            }
        }
        // Outside the lock: the first open of a cached file in this process reads it whole
        // to check its checksum, which must not hold up the opens of other files.
        let seal = match self.fs.sealed_file(ino) {
            Ok(Some(seal)) => seal,
            Ok(None) => return Mode::Caching(reply),
            Err(e) => {
                tracing::warn!(
                    "kernel passthrough off: cache entries cannot be sealed here ({e}); every \
                     read is served and checked by the mount"
                );
                self.passthrough.store(false, Ordering::Relaxed);
                return Mode::Caching(reply);
            }
        };
        let mut handles = self.handles.lock().expect("poisoned");
        if let Some(backing) = handles.backing(ino) {
            // Opened in passthrough meanwhile: share that registration (ours is dropped).
            return self.pass(&mut handles, ino, fh, backing, reply);
        }
        if !handles.may_pass(ino) {
            return Mode::Caching(reply); // opened in caching mode meanwhile
        }
        let id = match reply.open_backing(seal.file().as_ref()) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("kernel passthrough unavailable ({e}); serving reads ourselves");
                self.passthrough.store(false, Ordering::Relaxed);
                return Mode::Caching(reply);
            }
        };
        self.pass(&mut handles, ino, fh, Arc::new(Backing { id, seal }), reply)
    }

    /// Answers an open of `fh` in passthrough mode through `backing`.
    fn pass(
        &self,
        handles: &mut Handles<Backing>,
        ino: u64,
        fh: u64,
        backing: Arc<Backing>,
        reply: ReplyOpen,
    ) -> Mode {
        handles.opened_passthrough(ino, fh, backing.clone());
        self.fs
            .metrics
            .passthrough_opens
            .fetch_add(1, Ordering::Relaxed);
        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing.id);
        Mode::Passthrough
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.passthrough.store(ok, Ordering::Relaxed);
        // Listing returns the attributes too, so `ls -l` needs no lookup per file; adaptively
        // (the kernel asks for them once it sees them used), so that `ls -f` of a million
        // files does not make the kernel build a million inodes it will not use.
        // mmap of a file opened with direct I/O (a file served by its parts): scipy maps
        // the files it reads.
        let mmap = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        let plus = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO)
            .is_ok();
        tracing::debug!(
            passthrough = ok,
            readdirplus = plus,
            direct_io_mmap = mmap,
            "FUSE session initialised"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let attr = match fh {
            Some(fh) => self.fs.getattr_open(ino.0, fh.0),
            None => self.fs.getattr(ino.0),
        };
        match attr {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY)
            || flags.0 & (libc::O_TRUNC | libc::O_APPEND) != 0;
        // O_NONBLOCK: a prefetcher building files ahead of a reader, not a reader.
        let background = flags.0 & libc::O_NONBLOCK != 0;
        match self.fs.open_as(ino.0, write, background) {
            Ok(fh) => match self.open_passthrough(ino.0, fh, reply) {
                Mode::Passthrough => {}
                Mode::Caching(reply) => {
                    self.handles
                        .lock()
                        .expect("poisoned")
                        .opened_caching(ino.0, fh);
                    // The bytes of an inode never change, so the kernel may keep its cache;
                    // a file served by its parts is read as the reader reads it (no
                    // read-ahead of the kernel building slabs nobody asked for).
                    let flags = if self.fs.served_by_parts(ino.0) {
                        FopenFlags::FOPEN_DIRECT_IO
                    } else {
                        FopenFlags::FOPEN_KEEP_CACHE
                    };
                    reply.opened(FileHandle(fh), flags);
                }
                Mode::Refused(reply) => {
                    self.fs.release(fh);
                    reply.error(fuser::Errno::from_i32(libc::EIO));
                }
            },
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Once the file is built, a read is a pread of the cached file: answer it here.
        if let Some(result) = self.fs.read_ready(fh.0, offset, size) {
            match result {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno("read", &e)),
            }
            return;
        }
        let fs = self.fs.clone();
        self.runtime.spawn(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno("read", &e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.handles.lock().expect("poisoned").released(fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.fs.readdir_from(ino.0, offset, |cookie, e| {
            reply.add(INodeNo(e.ino), cookie, kind(e.attr.kind), e.name)
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.fs.readdir_from(ino.0, offset, |cookie, e| {
            let attr = self.attr(&e.attr);
            reply.add(INodeNo(e.ino), cookie, e.name, &TTL, &attr, Generation(0))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdirplus", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bsize = 4096u32;
        let blocks = self.fs.total_size().div_ceil(u64::from(bsize));
        reply.statfs(blocks, 0, 0, self.fs.len() as u64 + 1, 0, bsize, 255, bsize);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name) {
            Ok(value) => xattr_reply(reply, &value, size),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut value = Vec::new();
                for n in names {
                    value.extend_from_slice(n.as_bytes());
                    value.push(0);
                }
                xattr_reply(reply, &value, size);
            }
            Err(e) => reply.error(errno("listxattr", &e)),
        }
    }

    // Every call that would modify the dataset: refused with EROFS.
    read_only::refuse_modifications!();
}
