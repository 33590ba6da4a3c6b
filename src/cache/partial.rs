//! Partial entries: a file built slab by slab, kept between reads and across restarts.
//!
//! A file read before it is complete lives beside the entries as `<identity>.partial` (the
//! file at its final size, sparse until written) and `<identity>.slabs`, its table: a header
//! (magic, size, slab count, the header's CRC-32C) and one 8-byte record per slab (the
//! CRC-32C of its bytes, and a present flag). A slab is written data first, record second,
//! so a present record always follows its bytes (a `kill -9` loses neither; after a power
//! loss the CRC tells). A slab is read back only through its record, and every read of it is
//! compared with the CRC: a damaged slab is reported absent (its record cleared) and built
//! again, never served. Once every slab is present, [`PartialEntry::complete`] checks them
//! all, and makes the file an ordinary entry (whole-file CRC, rename into place).
//!
//! Design: docs/ARCHITECTURE.md, "Plan: files that cost what is read". Filled by
//! `crate::flow::parts`, which builds the slabs a read touches.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::local::{allocated, CacheError, CachedFile, LocalCache};

const MAGIC: &[u8; 8] = b"SDSLABS1";
const HEADER: u64 = 8 + 8 + 8 + 4 + 4;
const RECORD: u64 = 8;
const PRESENT: u32 = 1;

/// A file being built slab by slab.
#[derive(Debug)]
pub struct PartialEntry {
    data: File,
    table: File,
    data_path: PathBuf,
    table_path: PathBuf,
    size: u64,
    slabs: u64,
    /// The cache it counts against (its size limit), and its file's identity.
    cache: LocalCache,
    identity: String,
}

fn error(path: &Path, context: &'static str, cause: io::Error) -> CacheError {
    CacheError {
        path: path.display().to_string(),
        context,
        cause,
    }
}

/// Opens `path` for reading and writing without following a symlink, creating it if asked;
/// refuses anything but a regular file of this user with one link.
fn open_private(path: &Path, create: bool) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let m = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || m.uid() != me || m.nlink() != 1 || m.mode() & 0o002 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a regular file of this user with one link",
        ));
    }
    Ok(file)
}

fn table_header(size: u64, slabs: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&slabs.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h
}

impl LocalCache {
    /// The partial entry of `identity` (a file of `size` bytes in `slabs` slabs): the one on
    /// disk if it is this file's (same size and slab count, a sound table), else a new one
    /// (an unsound one is replaced).
    pub fn open_partial(
        &self,
        identity: &str,
        size: u64,
        slabs: u64,
    ) -> Result<PartialEntry, CacheError> {
        let entry = self.path_for(identity).ok_or_else(|| {
            error(
                Path::new(identity),
                "naming a partial entry",
                io::Error::new(io::ErrorKind::InvalidInput, "not a hex identity"),
            )
        })?;
        let dir = entry.parent().expect("entries live in a subdirectory");
        std::fs::create_dir_all(dir).map_err(|e| error(dir, "creating a cache subdirectory", e))?;
        for d in [dir, self.dir()] {
            let m = std::fs::symlink_metadata(d).map_err(|e| error(d, "checking", e))?;
            if m.file_type().is_symlink() {
                return Err(error(
                    d,
                    "checking",
                    io::Error::new(io::ErrorKind::PermissionDenied, "a symlink"),
                ));
            }
        }
        let data_path = entry.with_extension("partial");
        let table_path = entry.with_extension("slabs");
        let header = table_header(size, slabs);
        let reuse = (|| -> io::Result<(File, File)> {
            let table = open_private(&table_path, false)?;
            let data = open_private(&data_path, false)?;
            let mut h = vec![0u8; HEADER as usize];
            table.read_exact_at(&mut h, 0)?;
            let sound = h == header
                && table.metadata()?.len() == HEADER + slabs * RECORD
                && data.metadata()?.len() == size;
            if sound {
                Ok((data, table))
            } else {
                Err(io::Error::from(io::ErrorKind::InvalidData))
            }
        })();
        let (data, table) = match reuse {
            Ok(files) => files,
            Err(_) => {
                for p in [&table_path, &data_path] {
                    let _ = std::fs::remove_file(p);
                }
                let data = open_private(&data_path, true)
                    .map_err(|e| error(&data_path, "creating a partial entry", e))?;
                data.set_len(size)
                    .map_err(|e| error(&data_path, "sizing a partial entry", e))?;
                let table = open_private(&table_path, true)
                    .map_err(|e| error(&table_path, "creating a slab table", e))?;
                table
                    .set_len(HEADER + slabs * RECORD)
                    .and_then(|()| table.write_all_at(&header, 0))
                    .map_err(|e| error(&table_path, "writing a slab table", e))?;
                (data, table)
            }
        };
        let entry = PartialEntry {
            data,
            table,
            data_path,
            table_path,
            size,
            slabs,
            cache: self.clone(),
            identity: identity.to_string(),
        };
        entry.account();
        Ok(entry)
    }
}

impl PartialEntry {
    /// The size of the whole file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes it holds on disk: the slabs and known regions written, and its table.
    pub fn disk_bytes(&self) -> u64 {
        let data = self.data.metadata().map_or(0, |m| allocated(&m));
        data + HEADER + self.slabs * RECORD
    }

    /// Counts it against the cache's size limit (`--cache-max-size`) at its bytes on disk.
    fn account(&self) {
        self.cache
            .account_partial(&self.identity, self.disk_bytes());
    }

    /// Slab `slab`'s record: its CRC, whether it is present, and how many chunks it read as
    /// missing (absent from the store).
    fn record(&self, slab: u64) -> io::Result<(u32, bool, u32)> {
        let mut r = [0u8; RECORD as usize];
        self.table.read_exact_at(&mut r, HEADER + slab * RECORD)?;
        let crc = u32::from_le_bytes(r[..4].try_into().expect("4 bytes"));
        let flag = u32::from_le_bytes(r[4..].try_into().expect("4 bytes"));
        Ok((crc, flag & 0xff == PRESENT, flag >> 8))
    }

    /// Chunks read as missing by the present slabs, all together.
    pub fn absent_chunks(&self) -> io::Result<u64> {
        let mut n = 0;
        for slab in 0..self.slabs {
            let (_, present, absent) = self.record(slab)?;
            if present {
                n += u64::from(absent);
            }
        }
        Ok(n)
    }

    fn check_index(&self, slab: u64) -> io::Result<()> {
        if slab < self.slabs {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, "no such slab"))
        }
    }

    /// Writes bytes that follow from the layout alone (header, coordinates) at `offset`.
    pub fn write_known(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.data.write_all_at(bytes, offset)
    }

    /// Stores slab `slab`, `bytes` at `offset` (made of `absent` chunks the store does not
    /// have, read as missing values): the bytes first, then its record.
    pub fn write_slab(&self, slab: u64, offset: u64, bytes: &[u8], absent: u32) -> io::Result<()> {
        self.check_index(slab)?;
        self.data.write_all_at(bytes, offset)?;
        let mut r = Vec::with_capacity(RECORD as usize);
        r.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
        let flag = PRESENT | (absent.min(0x00ff_ffff) << 8);
        r.extend_from_slice(&flag.to_le_bytes());
        self.table.write_all_at(&r, HEADER + slab * RECORD)?;
        self.account();
        Ok(())
    }

    /// The partial file, to read checked slabs from (see `BlockSums::read_checked_at`).
    pub fn data_file(&self) -> &File {
        &self.data
    }

    /// `len` bytes at `offset` as stored, unchecked (the caller checks them).
    pub fn read_raw(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.data.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Marks slab `slab` absent (its bytes were found damaged): it is built again.
    pub fn invalidate(&self, slab: u64) -> io::Result<()> {
        self.check_index(slab)?;
        self.table
            .write_all_at(&[0u8; RECORD as usize], HEADER + slab * RECORD)
    }

    /// Slab `slab` (`len` bytes at `offset`) as stored, if present and matching its CRC;
    /// `None` when absent or damaged (a damaged one is marked absent, to be built again).
    pub fn read_slab(&self, slab: u64, offset: u64, len: u64) -> io::Result<Option<Vec<u8>>> {
        self.check_index(slab)?;
        let (crc, present, _) = self.record(slab)?;
        if !present {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        self.data.read_exact_at(&mut buf, offset)?;
        if crc32c::crc32c(&buf) == crc {
            return Ok(Some(buf));
        }
        tracing::warn!(
            "slab {slab} of {} is damaged; it will be built again",
            self.data_path.display()
        );
        self.invalidate(slab)?;
        Ok(None)
    }

    /// The slabs not yet present.
    pub fn missing(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for slab in 0..self.slabs {
            if !self.record(slab)?.1 {
                out.push(slab);
            }
        }
        Ok(out)
    }

    /// Makes the file an ordinary entry of `cache` once every slab is present (marked with
    /// the chunks its slabs read as missing, if any): `slab_at`
    /// gives each slab's byte range; each slab is checked against its record (a damaged one
    /// is marked absent and the entry stays partial: `Ok(None)`), then the file is persisted
    /// as [`LocalCache::persist`] does and its table removed.
    pub fn complete(
        &self,
        cache: &LocalCache,
        identity: &str,
        slab_at: impl Fn(u64) -> (u64, u64),
    ) -> Result<Option<CachedFile>, CacheError> {
        let io_err = |e| error(&self.data_path, "completing a partial entry", e);
        for slab in 0..self.slabs {
            let (offset, len) = slab_at(slab);
            if self.read_slab(slab, offset, len).map_err(io_err)?.is_none() {
                return Ok(None);
            }
        }
        let absent = self.absent_chunks().map_err(io_err)?;
        let done = cache.adopt(&self.data_path, identity, absent)?;
        let _ = std::fs::remove_file(&self.table_path);
        Ok(Some(done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcd0123";

    /// A file of 3 slabs of 100 bytes after 20 known bytes.
    fn slab_at(slab: u64) -> (u64, u64) {
        (20 + slab * 100, 100)
    }

    fn slab_bytes(slab: u64) -> Vec<u8> {
        (0..100).map(|i| (slab * 7 + i) as u8).collect()
    }

    #[test]
    fn slabs_survive_a_restart_damage_is_never_served_and_a_full_entry_completes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let p = cache.open_partial(ID, 320, 3).unwrap();
        p.write_known(0, &[9u8; 20]).unwrap();
        assert_eq!(p.missing().unwrap(), vec![0, 1, 2]);
        let (o, l) = slab_at(1);
        p.write_slab(1, o, &slab_bytes(1), 0).unwrap();
        assert_eq!(p.read_slab(1, o, l).unwrap().unwrap(), slab_bytes(1));
        drop(p);
        // A new process finds slab 1 and not the others.
        let again = LocalCache::open(dir.path()).unwrap();
        let p = again.open_partial(ID, 320, 3).unwrap();
        assert_eq!(p.missing().unwrap(), vec![0, 2]);
        // A byte flipped in a stored slab: absent, never its bytes.
        let data = cache.path_for(ID).unwrap().with_extension("partial");
        let w = File::options().write(true).open(&data).unwrap();
        w.write_all_at(&[0xff], o + 50).unwrap();
        assert_eq!(p.read_slab(1, o, l).unwrap(), None);
        assert_eq!(p.missing().unwrap(), vec![0, 1, 2]);
        for s in 0..3 {
            let (o, _) = slab_at(s);
            p.write_slab(s, o, &slab_bytes(s), 0).unwrap();
        }
        let done = p.complete(&again, ID, slab_at).unwrap().expect("complete");
        let mut want = vec![9u8; 20];
        (0..3).for_each(|s| want.extend(slab_bytes(s)));
        assert_eq!(std::fs::read(&done.path).unwrap(), want);
        assert!(!data.exists(), "the partial file became the entry");
        assert!(!data.with_extension("slabs").exists(), "its table is gone");
        // An ordinary, checked entry now.
        let fresh = LocalCache::open(dir.path()).unwrap();
        assert!(fresh.get(ID, 320).is_some());
    }

    #[test]
    fn a_table_of_another_file_or_a_symlink_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap();
        let p = cache.open_partial(ID, 320, 3).unwrap();
        let (o, _) = slab_at(0);
        p.write_slab(0, o, &slab_bytes(0), 0).unwrap();
        drop(p);
        // Another slab count (another plan of the same identity cannot be; a damaged table).
        let p = cache.open_partial(ID, 320, 4).unwrap();
        assert_eq!(p.missing().unwrap(), vec![0, 1, 2, 3], "started afresh");
        drop(p);
        // A symlink planted at the partial file is not followed.
        let data = cache.path_for(ID).unwrap().with_extension("partial");
        std::fs::remove_file(&data).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, vec![1u8; 320]).unwrap();
        std::os::unix::fs::symlink(&secret, &data).unwrap();
        let p = cache.open_partial(ID, 320, 4).unwrap();
        assert!(!std::fs::symlink_metadata(&data)
            .unwrap()
            .file_type()
            .is_symlink());
        drop(p);
        assert_eq!(std::fs::read(&secret).unwrap(), vec![1u8; 320], "untouched");
    }

    #[test]
    fn partial_entries_count_against_the_size_limit_and_are_evicted_as_entries() {
        use std::io::Write;
        const K: usize = 100 << 10;
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path())
            .unwrap()
            .with_max_size(2 * K as u64 + K as u64 / 2);
        let mut f = cache.temp_file().unwrap();
        f.write_all(&vec![7u8; K]).unwrap();
        let old = cache.persist(f, "aa01").unwrap().path;
        // A file of 10 slabs of 100 KiB: sparse, it counts what its slabs hold.
        let p = cache.open_partial(ID, 10 * K as u64, 10).unwrap();
        assert!(
            p.disk_bytes() < 4096 + 200,
            "{} bytes before any slab",
            p.disk_bytes()
        );
        for s in 0..2u64 {
            p.write_slab(s, s * K as u64, &vec![s as u8 + 1; K], 0)
                .unwrap();
        }
        assert!(p.disk_bytes() >= 2 * K as u64);
        // 100 KiB of entry + 200 KiB of slabs > 250 KiB: the entry went, not the partial
        // entry that is growing.
        assert!(!old.exists(), "the least recently used entry was evicted");
        assert!(cache.size() >= 2 * K as u64);
        let data = cache.path_for(ID).unwrap().with_extension("partial");
        assert!(data.exists());
        // A new process counts it as it finds it on disk.
        let fresh = LocalCache::open(dir.path()).unwrap().with_max_size(1 << 30);
        assert!(fresh.size() >= 2 * K as u64, "{}", fresh.size());
        drop(p);
        // A new entry: the partial one is now the least recently used, and goes whole.
        let mut f = cache.temp_file().unwrap();
        f.write_all(&vec![8u8; K]).unwrap();
        let new = cache.persist(f, "bb02").unwrap().path;
        assert!(new.exists());
        assert!(!data.exists() && !data.with_extension("slabs").exists());
        assert!(cache.size() <= K as u64 + 4096, "{}", cache.size());
    }
}
