//! `get`: builds the file of one deskriptor (or takes it from a cache tier) and writes it
//! where `-o` says, never destroying what is there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::app::Config;
use crate::deskriptor::Deskriptor;
use crate::flow::Origin;
use crate::plan::{Plan, PlanError};

/// Builds the file of line `line` of the deskriptors file, or of the inline deskriptor
/// `json`, and writes it to `output`; `stats` prints what was read from the source.
pub(super) async fn get(
    config: &Config,
    line: Option<usize>,
    json: Option<&str>,
    output: &Path,
    stats: bool,
) -> Result<ExitCode> {
    // An inline deskriptor has no line number: its errors name `--deskriptor` instead.
    let inline = |e: crate::deskriptor::DeskriptorError| match json {
        Some(_) => anyhow::anyhow!("--deskriptor: {e}"),
        None => e.into(),
    };
    let deskriptor = match (line, json) {
        (_, Some(text)) => Deskriptor::parse(0, text).map_err(inline)?,
        (Some(n), None) => {
            let lines = crate::deskriptor::read_lines(&config.deskriptors)
                .with_context(|| format!("reading {}", config.deskriptors.display()))?;
            let count = lines.len();
            let Some(l) = n.checked_sub(1).and_then(|i| lines.into_iter().nth(i)) else {
                bail!(
                    "{} has no line {n} (it has {count} lines)",
                    config.deskriptors.display()
                );
            };
            Deskriptor::parse(n, &l.text?)?
        }
        (None, None) => bail!("give --line N or --deskriptor JSON"),
    };
    let source = config.open_source().await?;
    let plan = Plan::new(&deskriptor, &source.scope, config.plan).map_err(|e| match e {
        PlanError::Deskriptor(e) => inline(e),
        size @ PlanError::Size(_) => size.into(),
    })?;
    let flow = config.open_flow(source.clone()).await?;
    let before = (source.metrics.requests(), source.metrics.bytes());
    let (cached, origin) = flow
        .materialize(&plan)
        .await
        .with_context(|| format!("building {}", plan.file_name))?;
    // The entry as checked (or written) by the cache, never its path opened again; through
    // /proc/self/fd for an offset of its own.
    let mut file = std::fs::File::open(cached.fd_path())
        .with_context(|| format!("opening {}", cached.path.display()))?;
    write_output(&mut file, output)?;
    eprintln!(
        "{}: {} ({} bytes), {} ({})",
        if output.as_os_str() == "-" {
            "standard output".into()
        } else {
            output.display().to_string()
        },
        crate::units::human_size(plan.size),
        plan.size,
        plan.file_name,
        match origin {
            Origin::Cache => "from cache",
            Origin::Remote => "copied from the S3 cache",
            Origin::Built => "built from the source",
        }
    );
    if stats {
        eprintln!(
            "source: {} requests, {} bytes for data ({} requests, {} bytes for metadata)",
            source.metrics.requests() - before.0,
            source.metrics.bytes() - before.1,
            before.0,
            before.1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the bytes of `src` to `to`, the `-o` of `get`, without ever destroying `to`:
///
/// - `-` is standard output;
/// - a symbolic link is followed (every level) and what it points at is written as below, so
///   the link itself stays a link;
/// - an existing device or FIFO is opened and written into (nothing is renamed over it); a
///   socket or a directory is an error;
/// - a regular file is replaced atomically (a temporary file next to it, then a rename), so it
///   is never partial, and keeps its permission bits;
/// - a new file is created the same way with mode 0666 less the umask.
fn write_output(src: &mut std::fs::File, to: &Path) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
    if to.as_os_str() == "-" || to == Path::new("/dev/stdout") {
        let mut out = std::io::stdout().lock();
        std::io::copy(src, &mut out)
            .and_then(|_| out.flush())
            .context("writing to standard output")?;
        return Ok(());
    }
    // An open descriptor named by path (/dev/stderr, /dev/fd/N, /proc/self/fd/N): written
    // where it stands, as the shell's `>&N` would; never replaced.
    let fd = match to.to_str() {
        Some("/dev/stderr") => Some(2),
        Some(t) => t
            .strip_prefix("/dev/fd/")
            .or_else(|| t.strip_prefix("/proc/self/fd/"))
            .and_then(|n| n.parse::<std::os::fd::RawFd>().ok()),
        None => None,
    };
    if let Some(fd) = fd {
        use std::os::fd::FromRawFd;
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            bail!("{}: descriptor {fd} is not open", to.display());
        }
        // SAFETY: the descriptor is open (checked above) and borrowed for the copy only
        // (ManuallyDrop: never closed here).
        let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        std::io::copy(src, &mut *out).with_context(|| format!("writing {}", to.display()))?;
        return Ok(());
    }
    let target = resolve_links(to)?;
    let existing = match std::fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("{}", target.display())),
    };
    if let Some(m) = &existing {
        let t = m.file_type();
        if t.is_char_device() || t.is_block_device() || t.is_fifo() {
            // Opening a FIFO waits for its reader, as a shell's `>` does. Not following a
            // link, and checked again once open: the path may have changed since.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .with_context(|| format!("opening {}", target.display()))?;
            let now = out.metadata()?.file_type();
            if !(now.is_char_device() || now.is_block_device() || now.is_fifo()) {
                bail!("{} changed while it was opened", target.display());
            }
            std::io::copy(src, &mut out)
                .with_context(|| format!("writing {}", target.display()))?;
            return Ok(());
        }
        if t.is_dir() {
            bail!("{} is a directory", target.display());
        }
        if !t.is_file() {
            bail!(
                "{} is neither a regular file, a device nor a FIFO (a socket?); not writing to it",
                target.display()
            );
        }
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Created with 0666: the kernel applies the umask, as for any new file.
    let mut tmp = tempfile::Builder::new()
        .prefix(".sodeda-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    if let Some(m) = &existing {
        let mode = m.permissions().mode() & 0o777;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("keeping the mode of {}", target.display()))?;
    }
    std::io::copy(src, tmp.as_file_mut())
        .with_context(|| format!("writing {}", target.display()))?;
    tmp.persist(&target)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}

/// `path` with every symbolic link of its last component followed (relative links resolve
/// against the link's directory); the result is not a link (it may not exist).
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)
                    .with_context(|| format!("reading the link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}
