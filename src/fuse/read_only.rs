//! The calls that would modify the dataset, each refused with `EROFS`. The mount is
//! read-only, so the kernel refuses them before they reach the process; these answers are a
//! second line, for a kernel or a mount made without the flag.

/// Expands, inside `impl fuser::Filesystem`, to every modifying call answered with `EROFS`
/// (and logged once, as every errno is).
macro_rules! refuse_modifications {
    () => {
        fn setattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _mode: Option<u32>,
            _uid: Option<u32>,
            _gid: Option<u32>,
            _size: Option<u64>,
            _atime: Option<fuser::TimeOrNow>,
            _mtime: Option<fuser::TimeOrNow>,
            _ctime: Option<std::time::SystemTime>,
            _fh: Option<fuser::FileHandle>,
            _crtime: Option<std::time::SystemTime>,
            _chgtime: Option<std::time::SystemTime>,
            _bkuptime: Option<std::time::SystemTime>,
            _flags: Option<fuser::BsdFileFlags>,
            reply: fuser::ReplyAttr,
        ) {
            reply.error($crate::fuse::reply::errno(
                "setattr",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn mknod(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            _rdev: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error($crate::fuse::reply::errno(
                "mknod",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn mkdir(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error($crate::fuse::reply::errno(
                "mkdir",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn unlink(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error($crate::fuse::reply::errno(
                "unlink",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn rmdir(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error($crate::fuse::reply::errno(
                "rmdir",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn symlink(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _link_name: &std::ffi::OsStr,
            _target: &std::path::Path,
            reply: fuser::ReplyEntry,
        ) {
            reply.error($crate::fuse::reply::errno(
                "symlink",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn rename(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _newparent: fuser::INodeNo,
            _newname: &std::ffi::OsStr,
            _flags: fuser::RenameFlags,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error($crate::fuse::reply::errno(
                "rename",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn link(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _newparent: fuser::INodeNo,
            _newname: &std::ffi::OsStr,
            reply: fuser::ReplyEntry,
        ) {
            reply.error($crate::fuse::reply::errno(
                "link",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn write(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _offset: u64,
            _data: &[u8],
            _write_flags: fuser::WriteFlags,
            _flags: fuser::OpenFlags,
            _lock_owner: Option<fuser::LockOwner>,
            reply: fuser::ReplyWrite,
        ) {
            reply.error($crate::fuse::reply::errno(
                "write",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn create(
            &self,
            _req: &fuser::Request,
            _parent: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _mode: u32,
            _umask: u32,
            _flags: i32,
            reply: fuser::ReplyCreate,
        ) {
            reply.error($crate::fuse::reply::errno(
                "create",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn setxattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            _value: &[u8],
            _flags: i32,
            _position: u32,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error($crate::fuse::reply::errno(
                "setxattr",
                &$crate::fs::FsError::ReadOnly,
            ));
        }

        fn removexattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _name: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error($crate::fuse::reply::errno(
                "removexattr",
                &$crate::fs::FsError::ReadOnly,
            ));
        }
    };
}

pub(super) use refuse_modifications;
