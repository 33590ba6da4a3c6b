//! What the kernel is told: attributes, errnos (each failure logged once) and xattr replies,
//! made from the file system core's answers.

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyXattr};

use crate::fs::{Attr, FsError, Kind};

/// The kernel's attributes of a node, owned by `uid`/`gid` (the mount's user).
pub(super) fn file_attr(a: &Attr, uid: u32, gid: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: if a.kind == Kind::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}

/// The kernel's kind of a node.
pub(super) fn kind(k: Kind) -> FileType {
    match k {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

/// Logs a failed call once and returns its errno.
pub(super) fn errno(op: &str, e: &FsError) -> Errno {
    let code = e.errno();
    match e {
        // The flow has logged its failure once, with the cause, when it happened.
        FsError::Flow { .. } => tracing::debug!(op, errno = code, "{e}"),
        FsError::CacheRead { .. } => tracing::error!(op, errno = code, "{e}"),
        FsError::ReadOnly => tracing::debug!(op, errno = code, "{e}"),
        _ => tracing::trace!(op, errno = code, "{e}"),
    }
    Errno::from_i32(code)
}

/// Answers an xattr request for `value`: its size when asked (`size` 0), `ERANGE` when the
/// caller's buffer is too small, else the value.
pub(super) fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(errno("xattr", &FsError::Range));
    } else {
        reply.data(value);
    }
}
