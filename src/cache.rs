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

use std::io;
use std::path::{Path, PathBuf};

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

/// A cache directory on local disk.
#[derive(Debug, Clone)]
pub struct LocalCache {
    root: PathBuf,
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
        Ok(Self { root })
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
        let path = self.path_for(identity);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => Some(path),
            _ => None,
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
        file.persist(&path).map_err(|e| CacheError {
            path: path.display().to_string(),
            context: "renaming a new entry into place",
            source: e.error,
        })?;
        Ok(path)
    }
}
