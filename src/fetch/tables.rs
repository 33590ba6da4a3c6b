//! Block tables of Blosc chunks, kept once read: in memory and in a log beside the cache.
//!
//! A block read ([`super::blocks`]) needs a chunk's header and block offsets before it can ask
//! for the blocks: a round trip of its own. With the table kept, a later file over the same
//! chunk needs one request. Invariant: a table is used only for the object version it was read
//! from — each entry keeps the object's size and its ETag or modification time, and the block
//! read compares them with the answer to its own request; a chunk the store replaced (ERA5T
//! made final) is read afresh, never decoded with a stale table. Tables of objects without a
//! version (no ETag and no modification time) are not kept.
//!
//! On disk: `<cache>/v<N>/blocktables/<16 hex of the source URL's SHA-256>.log`, records
//! appended with one `write` each (`u32` length, payload, CRC-32C of the payload); a record that
//! fails its checksum ends the reading (a torn last record after a crash). The file is opened
//! without following symlinks and only if this user owns it, like the cache's entries; it stops
//! growing at [`MAX_LOG_BYTES`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

use super::link::LinkMeter;

/// Tables kept in memory (about 100 bytes each for ARCO-ERA5's 8-block chunks).
const MEMORY_ENTRIES: usize = 200_000;
/// Largest size of one source's log on disk.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// The version of a stored object, as its store reports it with every answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Size in bytes.
    pub size: u64,
    /// The ETag, if the store gives one.
    pub e_tag: Option<String>,
    /// Modification time (nanoseconds since the epoch; 0 when the store gives none).
    pub modified: i64,
}

impl Version {
    /// Whether this version identifies an object well enough to keep its table.
    fn identifies(&self) -> bool {
        self.e_tag.is_some() || self.modified != 0
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.modified.to_le_bytes());
        let tag = self.e_tag.as_deref().unwrap_or("");
        out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        out.extend_from_slice(tag.as_bytes());
    }
}

/// A chunk's Blosc header and block offsets, and the object version they were read from.
#[derive(Debug, Clone)]
pub struct Table {
    /// The first `16 + 4 × blocks` bytes of the chunk.
    pub bytes: Bytes,
    /// The object they belong to.
    pub version: Version,
}

/// Block tables of one source, in memory and on disk, and what its link costs.
pub struct BlockTables {
    memory: Mutex<LruCache<String, Arc<Table>>>,
    /// The table last kept of each array (its key up to the last `/`): the guide to a first
    /// read of another of its chunks.
    latest: Mutex<HashMap<String, Arc<Table>>>,
    log: Option<Mutex<Log>>,
    link: LinkMeter,
}

/// The array part of chunk key `key`.
fn array_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(array, _)| array)
}

struct Log {
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
}

impl std::fmt::Debug for BlockTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockTables").finish_non_exhaustive()
    }
}

impl BlockTables {
    /// Tables in memory only.
    pub fn in_memory() -> Self {
        Self {
            memory: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(MEMORY_ENTRIES).expect("not zero"),
            )),
            latest: Mutex::new(HashMap::new()),
            log: None,
            link: LinkMeter::default(),
        }
    }

    /// The same, with the link as `link` measures or assumes it.
    pub fn with_link(mut self, link: LinkMeter) -> Self {
        self.link = link;
        self
    }

    /// What the link to this source costs, measured by the reads that use these tables.
    pub fn link(&self) -> &LinkMeter {
        &self.link
    }

    /// The table last kept of another chunk of `key`'s array.
    pub fn sibling(&self, key: &str) -> Option<Arc<Table>> {
        let latest = self.latest.lock().expect("poisoned");
        latest.get(array_of(key)).cloned()
    }

    /// Tables of the source at `source_url`, kept under the cache version directory `dir`
    /// (`<cache>/v<N>`): the log's records are read now. A log that cannot be opened or read
    /// is only logged: tables are then kept in memory.
    pub fn open(dir: &Path, source_url: &str) -> Self {
        let mut tables = Self::in_memory();
        let name = hex::encode(&Sha256::digest(source_url.as_bytes())[..8]);
        let path = dir.join("blocktables").join(format!("{name}.log"));
        if let Err(e) = std::fs::create_dir_all(path.parent().expect("has a parent")) {
            tracing::debug!("no block-table log at {}: {e}", path.display());
            return tables;
        }
        let mut bytes = 0;
        match open_log(&path) {
            Ok(mut file) => {
                let mut data = Vec::new();
                if file.read_to_end(&mut data).is_ok() {
                    bytes = data.len() as u64;
                    let mut memory = tables.memory.lock().expect("poisoned");
                    let mut latest = tables.latest.lock().expect("poisoned");
                    for (key, table) in parse_log(&data) {
                        let table = Arc::new(table);
                        latest.insert(array_of(&key).to_string(), table.clone());
                        memory.put(key, table);
                    }
                }
                tables.log = Some(Mutex::new(Log {
                    path,
                    file: Some(file),
                    bytes,
                }));
            }
            Err(e) => tracing::warn!("not using the block-table log {}: {e}", path.display()),
        }
        tables
    }

    /// The table of chunk `key`, if known.
    pub fn get(&self, key: &str) -> Option<Arc<Table>> {
        self.memory.lock().expect("poisoned").get(key).cloned()
    }

    /// Forgets the table of chunk `key` (its object changed).
    pub fn forget(&self, key: &str) {
        self.memory.lock().expect("poisoned").pop(key);
    }

    /// Keeps the table of chunk `key` (if its version identifies the object).
    pub fn put(&self, key: &str, table: Table) {
        if !table.version.identifies() {
            return;
        }
        if let Some(log) = &self.log {
            log.lock().expect("poisoned").append(key, &table);
        }
        let table = Arc::new(table);
        let mut latest = self.latest.lock().expect("poisoned");
        latest.insert(array_of(key).to_string(), table.clone());
        drop(latest);
        self.memory
            .lock()
            .expect("poisoned")
            .put(key.to_string(), table);
    }
}

impl Log {
    fn append(&mut self, key: &str, table: &Table) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut payload = Vec::with_capacity(key.len() + table.bytes.len() + 64);
        payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
        payload.extend_from_slice(key.as_bytes());
        table.version.encode(&mut payload);
        payload.extend_from_slice(&(table.bytes.len() as u32).to_le_bytes());
        payload.extend_from_slice(&table.bytes);
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&payload);
        record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        if self.bytes + record.len() as u64 > MAX_LOG_BYTES {
            tracing::debug!("block-table log {} is full", self.path.display());
            self.file = None;
            return;
        }
        // One write of the whole record to a file opened with O_APPEND: records of concurrent
        // processes do not interleave.
        match file.write_all(&record) {
            Ok(()) => self.bytes += record.len() as u64,
            Err(e) => {
                tracing::warn!(
                    "block-table log {}: {e}; no longer written",
                    self.path.display()
                );
                self.file = None;
            }
        }
    }
}

/// Opens (creating) the log for reading and appending, refusing a symlink or a file of
/// another user.
fn open_log(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() || !crate::cache::owned_privately(&m) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a regular file of this user, writable by no one else",
        ));
    }
    Ok(file)
}

/// The records of a log, up to the first that is torn or damaged.
fn parse_log(data: &[u8]) -> Vec<(String, Table)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(len) = data.get(at..at + 4).map(le_u32) {
        let len = len as usize;
        let (Some(payload), Some(crc)) = (
            data.get(at + 4..at + 4 + len),
            data.get(at + 4 + len..at + 8 + len).map(le_u32),
        ) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match parse_record(payload) {
            Some(record) => out.push(record),
            None => break,
        }
        at += 8 + len;
    }
    out
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_record(p: &[u8]) -> Option<(String, Table)> {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = p.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let key_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(take(key_len)?).ok()?.to_string();
    let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let modified = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let tag_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let tag = std::str::from_utf8(take(tag_len)?).ok()?.to_string();
    let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let bytes = Bytes::copy_from_slice(take(n)?);
    Some((
        key,
        Table {
            bytes,
            version: Version {
                size,
                e_tag: (!tag.is_empty()).then_some(tag),
                modified,
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(size: u64) -> Table {
        Table {
            bytes: Bytes::from(vec![1u8; 48]),
            version: Version {
                size,
                e_tag: Some("\"abc\"".into()),
                modified: 5,
            },
        }
    }

    #[test]
    fn tables_survive_a_restart_and_a_torn_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let t = BlockTables::open(dir.path(), "file:///x");
        t.put("a/0.0.0", table(100));
        t.put("a/1.0.0", table(200));
        // Not kept: nothing identifies the object's version.
        t.put(
            "a/2.0.0",
            Table {
                version: Version {
                    size: 1,
                    e_tag: None,
                    modified: 0,
                },
                ..table(1)
            },
        );
        assert!(t.get("a/2.0.0").is_none());
        drop(t);
        let log = dir
            .path()
            .join("blocktables")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // A crash in the middle of a third record.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        let again = BlockTables::open(dir.path(), "file:///x");
        assert_eq!(again.get("a/1.0.0").unwrap().version.size, 200);
        assert_eq!(again.get("a/0.0.0").unwrap().bytes.len(), 48);
        // Another source has its own tables.
        assert!(BlockTables::open(dir.path(), "file:///y")
            .get("a/0.0.0")
            .is_none());
    }

    #[test]
    fn a_damaged_record_ends_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let t = BlockTables::open(dir.path(), "s");
        t.put("k1", table(1));
        t.put("k2", table(2));
        drop(t);
        let log = std::fs::read_dir(dir.path().join("blocktables"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut data = std::fs::read(&log).unwrap();
        let last = data.len() - 10;
        data[last] ^= 0xff;
        std::fs::write(&log, &data).unwrap();
        let again = BlockTables::open(dir.path(), "s");
        assert!(again.get("k1").is_some() && again.get("k2").is_none());
    }

    #[test]
    fn a_symlinked_log_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let name = hex::encode(&Sha256::digest(b"s")[..8]);
        std::fs::create_dir_all(dir.path().join("blocktables")).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(format!("blocktables/{name}.log")))
            .unwrap();
        let t = BlockTables::open(dir.path(), "s");
        t.put("k", table(1));
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"",
            "nothing written through the link"
        );
        assert!(t.get("k").is_some(), "kept in memory");
    }
}
