//! Entries sealed while the kernel reads them itself (FUSE passthrough).
//!
//! A file opened in passthrough mode is read by the kernel straight from the cache entry: no
//! read reaches this process, so none can be checked. An entry changed in place meanwhile
//! (`truncate`, a byte written by `dd conv=notrunc`) would be served as it is. So an entry is
//! handed to the kernel only once it is sealed: marked immutable (`FS_IMMUTABLE_FL`, as
//! `chattr +i`), which refuses every write, truncation, rename and unlink of it, also by
//! root, until the flag is cleared. The seal is taken before the entry's checksum is checked
//! (so no change can slip in between) and lifted when the last passthrough handle of the
//! inode is released. Where the flag cannot be set (a file system without it, a process
//! without `CAP_LINUX_IMMUTABLE`), the mount does not use passthrough and checks every read
//! itself ([`super::sums`]).
//!
//! Several processes may seal one entry (two mounts over one cache): each holds a shared
//! `flock` on it while it keeps the seal, and the last to let go, the one that can take the
//! lock exclusively, clears the flag. The locks go with their process, so a seal left by a
//! process that was killed is recognised as abandoned (its entry can be locked exclusively)
//! and lifted by [`lift_if_abandoned`], which eviction and deletion call when a removal is
//! refused.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// The inode flag of an immutable file (`FS_IMMUTABLE_FL` of `linux/fs.h`).
const IMMUTABLE: libc::c_int = 0x10;

/// What runs on an entry's file once its seal is lifted ([`Seal::on_lift`]).
pub type LiftHook = Box<dyn FnOnce(&File) + Send + Sync>;

/// An entry made immutable for as long as this lives.
pub struct Seal {
    file: Arc<File>,
    /// The change time right after sealing: any later change to the inode (a cleared flag,
    /// a write) moves it.
    ctime: (i64, i64),
    /// Run on the file once this seal lifted the flag of an entry still intact.
    on_lift: Option<LiftHook>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("file", &self.file)
            .field("ctime", &self.ctime)
            .finish_non_exhaustive()
    }
}

impl Seal {
    /// Seals the entry open as `file` (shared lock, then the immutable flag). An error when
    /// the flag cannot be set; the entry is then left as it was.
    pub fn new(file: Arc<File>) -> io::Result<Self> {
        lock(&file, libc::LOCK_SH)?;
        if let Err(e) = set_immutable(&file, true) {
            let _ = lock(&file, libc::LOCK_UN);
            return Err(e);
        }
        let m = file.metadata()?;
        Ok(Self {
            ctime: (m.ctime(), m.ctime_nsec()),
            file,
            on_lift: None,
        })
    }

    /// Runs `hook` on the file when this seal is the one to lift the flag and the entry was
    /// intact until then (nothing changed it under the seal).
    pub fn on_lift(&mut self, hook: LiftHook) {
        self.on_lift = Some(hook);
    }

    /// The sealed entry.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Whether the entry is as it was sealed: still immutable, its inode unchanged since.
    pub fn intact(&self) -> bool {
        let same = self
            .file
            .metadata()
            .is_ok_and(|m| (m.ctime(), m.ctime_nsec()) == self.ctime);
        same && flags(&self.file).is_ok_and(|f| f & IMMUTABLE != 0)
    }
}

impl Drop for Seal {
    fn drop(&mut self) {
        let intact = self.intact();
        let _ = lock(&self.file, libc::LOCK_UN);
        // The last holder (no other process keeps a shared lock) lifts the seal.
        if lock(&self.file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            match set_immutable(&self.file, false) {
                Ok(()) if intact => {
                    if let Some(hook) = self.on_lift.take() {
                        hook(&self.file);
                    }
                }
                Ok(()) => {}
                Err(e) => tracing::warn!("cannot lift the seal of a cache entry: {e}"),
            }
            let _ = lock(&self.file, libc::LOCK_UN);
        }
    }
}

/// Lifts the seal of the entry at `path` if the process that set it is gone (no process
/// holds it locked); `Ok(true)` when it was lifted, `Ok(false)` when it is held (or was not
/// sealed). A symlink is never followed.
pub fn lift_if_abandoned(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path alive for the call; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    if !file.metadata()?.is_file() || flags(&file)? & IMMUTABLE == 0 {
        return Ok(false);
    }
    match lock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {
            set_immutable(&file, false)?;
            tracing::info!(
                "lifted the seal of {}, left by a process that ended",
                path.display()
            );
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the file at `path` (not followed) is sealed.
pub fn is_sealed(path: &Path) -> bool {
    File::open(path)
        .and_then(|f| flags(&f))
        .is_ok_and(|f| f & IMMUTABLE != 0)
}

fn lock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: an open descriptor; flock has no memory preconditions.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn flags(file: &File) -> io::Result<libc::c_int> {
    let mut f: libc::c_int = 0;
    // SAFETY: an open descriptor and a pointer to an int, which FS_IOC_GETFLAGS writes.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut f) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

fn set_immutable(file: &File, on: bool) -> io::Result<()> {
    let old = flags(file)?;
    let new = if on {
        old | IMMUTABLE
    } else {
        old & !IMMUTABLE
    };
    if new == old {
        return Ok(());
    }
    // SAFETY: an open descriptor and a pointer to an int, which FS_IOC_SETFLAGS reads.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this process can seal files here (root on ext4 can; elsewhere the tests say
    /// so and check nothing that needs it).
    fn can_seal(dir: &Path) -> bool {
        let p = dir.join("probe");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        let ok = set_immutable(&f, true).is_ok();
        let _ = set_immutable(&f, false);
        ok
    }

    #[test]
    fn a_sealed_entry_refuses_changes_until_its_last_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        if !can_seal(dir.path()) {
            eprintln!("skipped: this process cannot set FS_IMMUTABLE_FL here");
            return;
        }
        let path = dir.path().join("e.nc");
        std::fs::write(&path, vec![1u8; 1000]).unwrap();
        let one = Seal::new(Arc::new(File::open(&path).unwrap())).unwrap();
        let two = Seal::new(Arc::new(File::open(&path).unwrap())).unwrap();
        assert!(is_sealed(&path));
        assert!(std::fs::OpenOptions::new().write(true).open(&path).is_err());
        assert!(std::fs::remove_file(&path).is_err());
        assert!(!lift_if_abandoned(&path).unwrap(), "held: not lifted");
        drop(one);
        assert!(is_sealed(&path), "the other holder keeps it sealed");
        assert!(two.intact());
        drop(two);
        assert!(!is_sealed(&path), "the last holder lifted it");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_seal_whose_holder_is_gone_is_lifted() {
        let dir = tempfile::tempdir().unwrap();
        if !can_seal(dir.path()) {
            eprintln!("skipped: this process cannot set FS_IMMUTABLE_FL here");
            return;
        }
        let path = dir.path().join("e.nc");
        std::fs::write(&path, vec![1u8; 10]).unwrap();
        let seal = Seal::new(Arc::new(File::open(&path).unwrap())).unwrap();
        // A killed holder: its lock is gone, its flag stays.
        lock(seal.file(), libc::LOCK_UN).unwrap();
        std::mem::forget(seal);
        assert!(is_sealed(&path));
        assert!(lift_if_abandoned(&path).unwrap());
        assert!(!is_sealed(&path));
        std::fs::remove_file(&path).unwrap();
    }
}
