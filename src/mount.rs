//! The mount's life cycle: checks on the mount point, mounting with `fuser`, running in the
//! background, unmounting on a signal, and `unmount`.
//!
//! Input: a [`DatasetFs`] and a mount point. Output: a live mount until `umount`, SIGINT or
//! SIGTERM. Invariant: a mount that cannot be made (missing or busy mount point, a foreign
//! stale mount, a mount(2) failure) is reported with the path and the cause, and nothing is
//! left mounted; a stale mount left by a killed sodeda-mount is cleared first.

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fuser::{Config, INodeNo, MountOption, Notifier, SessionACL};
use futures::future::BoxFuture;

use crate::catalog::Entry;
use crate::fs::{DatasetFs, ReloadSummary, XATTR_PID, XATTR_RELOAD};
use crate::fuse::FuseAdapter;

pub mod helper;
pub mod prefetch;

/// The file-system name shown by `mount` and `df`.
pub const FS_NAME: &str = "sodeda-era5";
/// The subtype requested (the pure-Rust mount of fuser shows the type as plain `fuse`).
pub const FS_SUBTYPE: &str = "sodeda";

/// A mount listed in `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point.
    pub path: PathBuf,
    /// File-system type, e.g. `fuse.sodeda`.
    pub fstype: String,
    /// Mount source, e.g. `sodeda-era5`.
    pub source: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount at exactly `path`, if any (the last one, when mounts are stacked).
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .rev()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next().unwrap_or(""));
            Some(MountEntry {
                path: PathBuf::from(point),
                fstype,
                source,
            })
        })
        .find(|m| m.path == path)
}

/// Unmounts `path` (`flags`: 0, or `MNT_DETACH`): umount(2), and where that is refused to a
/// user other than root (EPERM), fusermount3 (`-u`, `-uz` to detach), which unmounts the
/// FUSE mounts a user made.
fn umount(path: &Path, flags: libc::c_int) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if e.raw_os_error() != Some(libc::EPERM) || unsafe { libc::geteuid() } == 0 {
        return Err(e);
    }
    fusermount_unmount(path, flags & libc::MNT_DETACH != 0)
}

/// The FUSE mount helper of fuse3 (or of fuse 2), if installed: where fuser looks for it
/// (`FUSERMOUNT_PATH` if set, else `PATH`, `/sbin`, `/bin`).
fn fusermount() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/sbin".into(), "/bin".into()])
        .collect();
    ["fusermount3", "fusermount"]
        .into_iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()))
}

/// Unmounts `path` with fusermount3 (`lazy`: detach even if busy).
fn fusermount_unmount(path: &Path, lazy: bool) -> std::io::Result<()> {
    let Some(helper) = fusermount() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "a user other than root unmounts through fusermount3, which is not installed: \
             install fuse3 (Debian, Ubuntu: `apt install fuse3`; Fedora, RHEL: `dnf install \
             fuse3`), or ask root to `umount` it",
        ));
    };
    let out = std::process::Command::new(&helper)
        .arg(if lazy { "-uz" } else { "-u" })
        .arg("--")
        .arg(path)
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let errno = if said.contains("busy") {
        libc::EBUSY
    } else {
        libc::EPERM
    };
    Err(std::io::Error::new(
        std::io::Error::from_raw_os_error(errno).kind(),
        format!("{}: {said}", helper.display()),
    ))
}

/// Checks that `path` can take a new mount and returns its absolute form. A stale mount of
/// ours (the process was killed) is detached first; anything else mounted there is an error.
pub fn prepare_mountpoint(path: &Path) -> Result<PathBuf> {
    let abs =
        std::path::absolute(path).with_context(|| format!("mount point {}", path.display()))?;
    if let Some(m) = mount_at(&abs) {
        // Listing, not stat: the kernel may answer stat of a dead mount from its cache.
        match std::fs::read_dir(&abs) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                if m.source != FS_NAME {
                    bail!(
                        "mount point {} is a stale mount of {} (transport endpoint is not \
                         connected); run `umount {}` first",
                        abs.display(),
                        m.source,
                        abs.display()
                    );
                }
                tracing::warn!(
                    "{} is a stale sodeda-era5 mount (its process died); detaching it",
                    abs.display()
                );
                umount(&abs, libc::MNT_DETACH)
                    .with_context(|| format!("detaching the stale mount at {}", abs.display()))?;
            }
            _ => bail!(
                "mount point {} is busy: {} ({}) is mounted there; unmount it first \
                 (`umount {}`)",
                abs.display(),
                m.source,
                m.fstype,
                abs.display()
            ),
        }
    }
    match std::fs::metadata(&abs) {
        Ok(m) if !m.is_dir() => bail!("mount point {} is not a directory", abs.display()),
        Ok(_) => Ok(abs),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mount point {} does not exist; create it with `mkdir -p {}`",
            abs.display(),
            abs.display()
        ),
        Err(e) => bail!("mount point {}: {e}", abs.display()),
    }
}

/// A set-up that cannot work, refused before mounting.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A path the mount needs is the mount point or under it: once mounted, the mount hides
    /// it (and the mount is read-only), so every read that needs it fails.
    #[error(
        "the {what} {} is the mount point {} or under it: the mount would hide it, and every \
         read would fail; put the {what} outside the mount point, or mount elsewhere",
        .path.display(),
        .mountpoint.display()
    )]
    InsideMount {
        /// What the path is (`cache directory`, `log file`, `deskriptors file`).
        what: &'static str,
        /// The path, resolved.
        path: PathBuf,
        /// The mount point, resolved.
        mountpoint: PathBuf,
    },
    /// The mount point is in the tree the cache writes to: new entries would go to the
    /// read-only mount.
    #[error(
        "the mount point {} is in the cache's own tree {}: the cache would write into the \
         read-only mount; mount elsewhere (outside {}), or use another --cache",
        .mountpoint.display(),
        .tree.display(),
        .tree.display()
    )]
    MountInCache {
        /// The mount point, resolved.
        mountpoint: PathBuf,
        /// The cache's tree ([`crate::cache::LocalCache::root_of`]), resolved.
        tree: PathBuf,
    },
    /// A path could not be made absolute (the current directory is gone).
    #[error("the {what} {}: {cause}", .path.display())]
    Path {
        /// What the path is.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
}

/// `path` as the file system resolves it, whether or not it exists yet: its nearest existing
/// ancestor canonicalized (links followed), then the rest, which does not exist and so holds
/// no link, with `.` and `..` applied.
pub fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    for ancestor in abs.ancestors() {
        let Ok(mut out) = std::fs::canonicalize(ancestor) else {
            continue;
        };
        let rest = abs.strip_prefix(ancestor).unwrap_or(Path::new(""));
        for part in rest.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::Normal(name) => out.push(name),
                _ => {}
            }
        }
        return Ok(out);
    }
    Ok(abs)
}

/// Refuses a set-up that cannot work: one of `paths` (what each is, and the path) at or under
/// `mountpoint`, or `mountpoint` at or under `cache_tree`. Paths are compared resolved
/// ([`resolved`]): through links, and whether or not they exist yet.
pub fn check_setup(
    mountpoint: &Path,
    paths: &[(&'static str, &Path)],
    cache_tree: &Path,
) -> Result<(), SetupError> {
    let resolve = |what: &'static str, path: &Path| {
        resolved(path).map_err(|cause| SetupError::Path {
            what,
            path: path.to_path_buf(),
            cause,
        })
    };
    let mountpoint = resolve("mount point", mountpoint)?;
    for (what, path) in paths {
        let path = resolve(what, path)?;
        if path.starts_with(&mountpoint) {
            return Err(SetupError::InsideMount {
                what,
                path,
                mountpoint,
            });
        }
    }
    let tree = resolve("cache directory", cache_tree)?;
    if mountpoint.starts_with(&tree) {
        return Err(SetupError::MountInCache { mountpoint, tree });
    }
    Ok(())
}

/// How the mount process's line saying it is live begins (`sodeda-mount: serving N files at
/// DIR from SOURCE (pid P)`).
pub const SERVING: &str = "sodeda-mount: serving ";

/// Options of a mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users read the files (`allow_other`).
    pub allow_other: bool,
    /// FUSE worker threads.
    pub threads: usize,
}

/// Gives the memory that planning freed back to the system. Planning a large catalog on
/// several threads leaves freed pages in each thread's heap, which the allocator keeps; at a
/// million deskriptors that was hundreds of megabytes of resident memory the mount never uses
/// again.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only frees memory the allocator holds unused; it has no
    // preconditions and does not touch live allocations.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Re-reads the deskriptors file: the catalog entries of its current version.
pub type Reloader = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<Entry>>> + Send + Sync>;

/// Reads the store's version again; `true` when it changed (its provisional files are then
/// new files: the mount reloads).
pub type VersionCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<bool>> + Send + Sync>;

/// How often, and how, a mount asks the store whether it changed.
#[derive(Clone)]
pub struct SourceCheck {
    /// The interval.
    pub every: Duration,
    /// The check.
    pub check: VersionCheck,
}

/// Tells the kernel to forget what a reload made stale: the entry of every added (a cached
/// negative lookup), removed or changed name, and the root's attributes. A changed name
/// leads to a new inode, so its new size and bytes are read at once; retired inodes keep
/// their attributes, still true of the old bytes that open handles read.
///
/// Runs on a blocking thread, never on a FUSE session thread: the kernel takes the root's
/// lock to drop an entry, and a lookup holding it waits for a session thread to answer.
async fn notify_reload(notifier: &Notifier, fs: &DatasetFs, summary: &ReloadSummary) {
    let notifier = notifier.clone();
    // Every entry on the way to a stale name (a directory appears or vanishes with its
    // files), each once, parents first.
    let mut entries: Vec<(u64, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in summary.stale_names() {
        for entry in fs.kernel_entries(name) {
            if seen.insert(entry.clone()) {
                entries.push(entry);
            }
        }
    }
    let sent = tokio::task::spawn_blocking(move || {
        for (parent, name) in &entries {
            // An entry the kernel does not hold is fine (fuser ignores its ENOENT).
            let parent = INodeNo(*parent);
            if let Err(e) = notifier.inval_entry(parent, std::ffi::OsStr::new(name)) {
                tracing::warn!("reload: cannot invalidate the kernel's entry of {name}: {e}");
            }
        }
        if let Err(e) = notifier.inval_inode(INodeNo::ROOT, 0, 0) {
            tracing::warn!("reload: cannot invalidate the kernel's root attributes: {e}");
        }
    })
    .await;
    if let Err(e) = sent {
        tracing::warn!("reload: the invalidation task failed: {e}");
    }
}

/// Reloads `fs` with `reload` and tells the kernel what changed, before recording the result
/// (so `sodeda-era5 reload` returns once the mount shows the new files).
async fn reload_now(fs: &DatasetFs, reload: &Reloader, notifier: &Notifier) {
    let result = match reload().await {
        Ok(entries) => {
            let s = fs.reload(entries);
            release_freed_memory();
            notify_reload(notifier, fs, &s).await;
            let changed = match s.changed.len() {
                0 => String::new(),
                n => format!(", {n} changed"),
            };
            let text = format!(
                "ok: {} files ({} added, {} removed{changed})",
                s.files,
                s.added.len(),
                s.removed.len()
            );
            tracing::info!("reloaded the deskriptors: {text}");
            text
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the current files: {e:#}");
            format!("error: {e:#}")
        }
    };
    fs.record_reload(result);
}

/// Mounts `fs` at `mountpoint` and serves until it is unmounted (`umount`, SIGINT, SIGTERM).
/// `on_live` runs once the mount is live; SIGHUP runs `reload`, if given.
pub async fn serve(
    fs: Arc<DatasetFs>,
    mountpoint: &Path,
    options: &MountOptions,
    reload: Option<Reloader>,
    source_check: Option<SourceCheck>,
    on_live: impl FnOnce(),
) -> Result<()> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(FS_NAME.into()),
        MountOption::Subtype(FS_SUBTYPE.into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(options.threads.max(1));
    let adapter = FuseAdapter::new(fs.clone(), tokio::runtime::Handle::current());
    let session = fuser::spawn_mount(adapter, mountpoint, &config)
        .map_err(|e| mount_failure(&e, mountpoint))?;
    let notifier = session.notifier();
    on_live();

    let point = mountpoint.to_path_buf();
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        // Never when not asked for (a day-long sleep that the select! drops and renews), nor
        // when the interval is beyond the clock (the command line takes at most a year).
        let mut source_check = source_check;
        let mut every = Duration::from_secs(86_400);
        let mut first = tokio::time::Instant::now() + every;
        if let Some(c) = &source_check {
            match tokio::time::Instant::now().checked_add(c.every) {
                Some(at) => (every, first) = (c.every, at),
                None => {
                    tracing::warn!("a source check every {:?} is never: no checks", c.every);
                    source_check = None;
                }
            }
        }
        let mut checks = tokio::time::interval_at(first, every);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => match &reload {
                    Some(r) => reload_now(&fs, r, &notifier).await,
                    None => tracing::warn!("SIGHUP: this mount cannot reload"),
                },
                _ = checks.tick(), if source_check.is_some() => {
                    let check = &source_check.as_ref().expect("guarded").check;
                    match (check().await, &reload) {
                        (Ok(true), Some(r)) => {
                            tracing::info!("the store was updated: reloading");
                            reload_now(&fs, r, &notifier).await;
                        }
                        (Ok(_), _) => {}
                        (Err(e), _) => tracing::warn!("checking the store for updates: {e:#}"),
                    }
                }
            }
        }
        tracing::info!("signal received; unmounting {}", point.display());
        // Off the runtime's threads: a user other than root unmounts through fusermount3, a
        // process of its own.
        let _ = tokio::task::spawn_blocking(move || {
            if umount(&point, 0).is_err() {
                // Busy (a reader holds a file open): detach now, the kernel finishes later.
                let _ = umount(&point, libc::MNT_DETACH);
            }
        })
        .await;
    });
    let joined = tokio::task::spawn_blocking(move || session.join())
        .await
        .context("the FUSE session thread panicked")?;
    signals.abort();
    joined.with_context(|| format!("serving {}", mountpoint.display()))?;
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(())
}

/// The error of a failed mount, with a hint when it is a matter of permissions.
fn mount_failure(e: &std::io::Error, mountpoint: &Path) -> anyhow::Error {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dev_fuse = std::fs::metadata(DEV_FUSE)
        .ok()
        .map(|m| (m.permissions().mode() & 0o7777, m.uid(), m.gid()));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let text = format!("cannot mount at {}: {e}", mountpoint.display());
    match mount_hint(e, euid, dev_fuse) {
        Some(hint) => anyhow!("{text}\nhint: {hint}"),
        None => anyhow!(text),
    }
}

const DEV_FUSE: &str = "/dev/fuse";

/// What to check when a mount fails with `e`, run as `euid`, with `/dev/fuse` of this mode,
/// owner and group (`None`: absent). fuser opens /dev/fuse (EACCES when not allowed), calls
/// mount(2) (EPERM without CAP_SYS_ADMIN), then falls back on fusermount3, which may be
/// missing (ENOENT) or refuse allow_other (EACCES, naming `user_allow_other`).
fn mount_hint(e: &std::io::Error, euid: u32, dev_fuse: Option<(u32, u32, u32)>) -> Option<String> {
    let Some((mode, uid, gid)) = dev_fuse else {
        return Some(format!(
            "there is no {DEV_FUSE}: load the fuse module (`modprobe fuse`), or give a \
             container the device (`--device /dev/fuse`)"
        ));
    };
    let text = e.to_string();
    let denied = e.kind() == std::io::ErrorKind::PermissionDenied
        || matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        || text.contains("not permitted")
        || text.contains("user_allow_other");
    // Not root, mount(2) refused, and no fusermount3 to fall back on.
    let no_helper = euid != 0 && e.kind() == std::io::ErrorKind::NotFound;
    if no_helper && fusermount().is_none() {
        return Some(format!(
            "a user other than root (this process runs as uid {euid}) mounts through \
             fusermount3, which is not installed: install fuse3 (Debian, Ubuntu: `apt install \
             fuse3`; Fedora, RHEL: `dnf install fuse3`); {DEV_FUSE} must also be readable and \
             writable by this user (it is mode {mode:04o})"
        ));
    }
    if !(denied || no_helper) {
        return None;
    }
    let who = if euid == 0 {
        "this process is root".to_string()
    } else {
        format!("this process runs as uid {euid}, not root")
    };
    Some(format!(
        "mounting needs permission: run it as root or with CAP_SYS_ADMIN ({who}); {DEV_FUSE} \
         must be readable and writable by this user (it is mode {mode:04o}, owner uid {uid}, \
         group gid {gid}); the mount point must be readable by it; and --allow-other (fstab \
         allow_other) by a user other than root needs a line `user_allow_other` in \
         /etc/fuse.conf"
    ))
}

/// Starts this same program with `args` (without the program name) plus `--foreground` as a
/// detached child (own process group, output appended to `log`), and returns once its mount
/// is live, with the child's pid. If the child exits first, its log is the error.
pub fn spawn_background(
    mountpoint: &Path,
    log: &Path,
    args: &[std::ffi::OsString],
    timeout: Duration,
) -> Result<u32> {
    let exe = std::env::current_exe().context("locating this program")?;
    let mut args = args.to_vec();
    args.push("--foreground".into());
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(log)
        .with_context(|| format!("opening the log file {}", log.display()))?;
    let start = file.seek(SeekFrom::End(0)).unwrap_or(0);
    // Named after the real program: started as mount.sodeda (a copy or a hard link rather
    // than a symlink), the child would otherwise read its arguments as a mount helper's.
    let name = match exe.file_name().and_then(|n| n.to_str()) {
        Some(helper::HELPER_NAME) | None => "sodeda-mount",
        Some(n) => n,
    }
    .to_string();
    let mut child = Command::new(&exe)
        .arg0(name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file.try_clone()?)
        .process_group(0)
        .spawn()
        .context("starting the mount process")?;
    let read_log = |file: &mut std::fs::File| {
        let mut s = String::new();
        let _ = file.seek(SeekFrom::Start(start));
        let _ = file.read_to_string(&mut s);
        s
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let text = read_log(&mut file);
            bail!(
                "the mount process exited ({status}) before the mount was live:\n{}",
                text.trim_end()
            );
        }
        let live = mount_at(mountpoint).is_some_and(|m| m.source == FS_NAME)
            && std::fs::read_dir(mountpoint).is_ok(); // not stat: it may come from a cache
        if live {
            // What the mount process said before it was live (warnings), without its own
            // "serving" line: the caller says that the mount is live, once.
            let text = read_log(&mut file);
            let said: Vec<&str> = text.lines().filter(|l| !l.starts_with(SERVING)).collect();
            let said = said.join("\n");
            if !said.trim().is_empty() {
                eprintln!("{}", said.trim_end());
            }
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the mount at {} was not live after {:?}; see {}",
                mountpoint.display(),
                timeout,
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of extended attribute `name` of `path`, whatever its size: the size is asked
/// first (a size-0 call), and asked again when the value grew in between (ERANGE), a few
/// times at most.
pub(crate) fn get_xattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let get = |buf: &mut [u8]| -> std::io::Result<usize> {
        // SAFETY: both strings are NUL-terminated and live across the call; `buf` has the
        // length given (a null pointer with length 0 asks for the size only), and getxattr
        // writes at most that many bytes.
        let len = unsafe {
            let ptr = if buf.is_empty() {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            };
            libc::getxattr(p.as_ptr(), n.as_ptr(), ptr, buf.len())
        };
        usize::try_from(len).map_err(|_| std::io::Error::last_os_error())
    };
    let mut last = std::io::Error::from_raw_os_error(libc::ERANGE);
    for _ in 0..4 {
        // Room for a value that grows a little between the two calls.
        let mut buf = vec![0u8; get(&mut [])? + 1024];
        match get(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Asks the mount at `path` to re-read its deskriptors file (SIGHUP to its process) and
/// waits for the result: `ok: N files (a added, r removed[, c changed])`, or an error.
pub fn request_reload(path: &Path, timeout: Duration) -> Result<String> {
    let abs = std::path::absolute(path)?;
    if mount_at(&abs).is_none_or(|m| m.source != FS_NAME) {
        bail!("{} is not a sodeda-era5 mount", abs.display());
    }
    let read = || -> Result<serde_json::Value> {
        let raw = get_xattr(&abs, XATTR_RELOAD)
            .with_context(|| format!("reading {XATTR_RELOAD} of {}", abs.display()))?;
        Ok(serde_json::from_slice(&raw)?)
    };
    let pid: i32 = String::from_utf8_lossy(&get_xattr(&abs, XATTR_PID)?)
        .parse()
        .context("reading the mount's process id")?;
    let before = read()?["reloads"].as_u64().unwrap_or(0);
    // SAFETY: kill has no memory preconditions; the pid came from the mount itself.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "signalling process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + timeout;
    loop {
        let now = read()?;
        if now["reloads"].as_u64().unwrap_or(0) > before {
            let last = now["last"].as_str().unwrap_or("").to_string();
            if last.starts_with("error") {
                bail!("reload of {} failed: {last}", abs.display());
            }
            return Ok(last);
        }
        if Instant::now() > deadline {
            bail!("no reload result from process {pid} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counters of the mount at `path` (its root's `user.sodeda.stats`, a JSON object).
pub fn read_stats(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path)?;
    if mount_at(&abs).is_none_or(|m| m.source != FS_NAME) {
        bail!("{} is not a sodeda-era5 mount", abs.display());
    }
    let raw = get_xattr(&abs, crate::fs::XATTR_STATS)
        .with_context(|| format!("reading {} of {}", crate::fs::XATTR_STATS, abs.display()))?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// Unmounts a sodeda-era5 mount.
pub fn unmount(path: &Path) -> Result<()> {
    let abs = std::path::absolute(path)?;
    match mount_at(&abs) {
        None => bail!("{} is not a mount point", abs.display()),
        Some(m) if m.source != FS_NAME => bail!(
            "{} is a {} mount, not sodeda-era5; use umount",
            abs.display(),
            m.fstype
        ),
        Some(_) => {}
    }
    umount(&abs, 0).map_err(|e| match e.raw_os_error() {
        _ if e.kind() == std::io::ErrorKind::ResourceBusy => anyhow!(
            "{} is busy (a process has a file open there); close it, or detach with `umount -l {}`",
            abs.display(),
            abs.display()
        ),
        Some(libc::EBUSY) => anyhow!(
            "{} is busy (a process has a file open there); close it, or detach with `umount -l {}`",
            abs.display(),
            abs.display()
        ),
        _ => anyhow!("unmounting {}: {e}", abs.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn a_mount_refused_for_permissions_has_a_hint() {
        let dev = Some((0o600, 0, 0));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let hint = mount_hint(&denied, 65534, dev).expect("a hint for EACCES");
        for part in [
            "root",
            "/dev/fuse",
            "mode 0600",
            "uid 65534",
            "user_allow_other",
            "/etc/fuse.conf",
        ] {
            assert!(hint.contains(part), "{part:?} missing from {hint}");
        }
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(mount_hint(&eperm, 0, dev).is_some());
        let fusermount = std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "fusermount3: option allow_other only allowed if 'user_allow_other' is set in \
             /etc/fuse.conf",
        );
        assert!(mount_hint(&fusermount, 1000, dev).is_some());
        let no_helper = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(mount_hint(&no_helper, 1000, dev).is_some());
        assert!(
            mount_hint(&no_helper, 0, dev).is_none(),
            "not a permission problem"
        );
        let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
        assert!(mount_hint(&busy, 0, dev).is_none());
        assert!(mount_hint(&busy, 0, None)
            .unwrap()
            .contains("modprobe fuse"));
        let e = mount_failure(&denied, Path::new("/mnt/x")).to_string();
        assert!(
            e.starts_with("cannot mount at /mnt/x: Permission denied"),
            "{e}"
        );
        assert!(e.contains("\nhint: mounting needs permission"), "{e}");
    }

    #[test]
    fn paths_at_or_under_the_mount_point_are_refused_through_links_and_before_they_exist() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::os::unix::fs::symlink(&mnt, root.join("link")).unwrap();
        let tree = |cache: &Path| crate::cache::LocalCache::root_of(cache);
        let check = |what: &'static str, path: &Path| {
            check_setup(&mnt, &[(what, path)], &tree(&root.join("elsewhere")))
        };
        for path in [
            mnt.clone(),
            mnt.join("cache"),
            mnt.join("not/yet/there"),
            root.join("link"),
            root.join("link/cache"),
            root.join("missing/../mnt/c"),
            root.join("mnt/./x/.."),
        ] {
            let e = check("cache directory", &path).unwrap_err();
            assert!(matches!(e, SetupError::InsideMount { .. }), "{path:?}: {e}");
            let text = e.to_string();
            assert!(
                text.starts_with("the cache directory ")
                    && text.contains(&format!("the mount point {}", mnt.display()))
                    && text.contains("mount elsewhere"),
                "{text}"
            );
        }
        for path in [root.join("cache"), root.join("mntx"), root.join("mnt/../c")] {
            assert!(check("log file", &path).is_ok(), "{path:?}");
        }
        // The mount point in the cache's own tree (where it writes) is refused; elsewhere
        // under the cache directory it is harmless.
        let cache = root.join("c");
        let inside = tree(&cache).join("tmp");
        std::fs::create_dir_all(&inside).unwrap();
        let e = check_setup(&inside, &[], &tree(&cache)).unwrap_err();
        assert!(matches!(e, SetupError::MountInCache { .. }), "{e}");
        assert!(e.to_string().contains("use another --cache"), "{e}");
        let beside = cache.join("mnt");
        std::fs::create_dir_all(&beside).unwrap();
        assert!(check_setup(&beside, &[], &tree(&cache)).is_ok());
    }

    #[test]
    fn missing_mountpoint_is_a_clear_error() {
        let e = prepare_mountpoint(Path::new("/nonexistent/sodeda/x")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = prepare_mountpoint(f.path()).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let d = tempfile::tempdir().unwrap();
        assert!(prepare_mountpoint(d.path()).is_ok());
    }
}
