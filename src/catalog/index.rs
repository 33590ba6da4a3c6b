//! A catalog kept on disk, so that a mount of an unchanged deskriptors file does not plan a
//! million lines again: the entries and errors of the last planning, under a key that changes
//! whenever the planning could come out differently.
//!
//! Key: SHA-256 over the deskriptors file's bytes, the source's fingerprint
//! ([`fingerprint`]: URL, variables, coordinates' values, attributes, the store version plans
//! use), the plan options, the index format and the running executable (its size and mtime: a
//! new build never reads an older build's index). An index under another key is never read.
//!
//! On disk: `<cache>/v<N>/catalogs/<32 hex of the key>.idx`, written to a temporary file and
//! renamed; a CRC-32C of everything before it ends the file, and a file that fails it (torn,
//! damaged) is ignored and replaced. Opened without following symlinks and only when owned
//! by this user and writable by no one else, like the block-table logs. At most [`KEEP`]
//! indexes are kept (the oldest are removed).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Catalog, Entry};
use crate::cache::owned_privately;
use crate::deskriptor::DeskriptorError;
use crate::plan::PlanOptions;
use crate::source::Scope;

/// The index format; part of the key.
const FORMAT: &[u8] = b"sodeda-era5 catalog index 1\n";
/// Indexes kept per cache.
pub const KEEP: usize = 3;

/// The key of a catalog of the file `bytes` over `source` with `options`.
pub fn key(bytes: &[u8], scope: &Scope, options: PlanOptions) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(Sha256::digest(bytes));
    h.update(fingerprint(scope));
    h.update(format!(
        "{}|{}|{}|{:?}\n",
        options.format.as_str(),
        options.max_file_size,
        options.max_chunks,
        options.layout
    ));
    if let Some(m) = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::metadata(p).ok())
    {
        h.update(format!(
            "exe {} {} {}\n",
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    hex::encode(&h.finalize()[..16])
}

/// A digest of everything of `source` that planning reads.
pub fn fingerprint(scope: &Scope) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("url {}\n", scope.url));
    h.update(format!(
        "attributes {}\n",
        serde_json::Value::Object(scope.attributes.clone())
    ));
    let v = scope.freshness.for_plans();
    h.update(format!(
        "version {:?} {:?}\n",
        v.last_updated, v.valid_time_stop
    ));
    for (name, var) in &scope.variables {
        h.update(format!(
            "variable {name} {:?} {:?} {:?} {:?} {} {}\n",
            var.dims,
            var.shape,
            var.chunks,
            var.fill_value.map(f32::to_bits),
            var.blosc_blocks,
            serde_json::Value::Object(var.attributes.clone())
        ));
    }
    for (name, c) in &scope.coordinates {
        h.update(format!(
            "coordinate {name} {} {} {} {}\n",
            c.values.len(),
            c.integer,
            serde_json::Value::Object(c.attributes.clone()),
            c.time.as_ref().map_or(String::new(), |t| format!(
                "{} {} {}",
                t.epoch, t.unit_seconds, t.units
            ))
        ));
        for v in &c.values {
            h.update(v.to_bits().to_le_bytes());
        }
    }
    h.finalize().into()
}

/// Whether indexes may be kept under `dir` (a cache version directory inside `cache`): both
/// exist as real directories (no symlink) of this user, writable by no one else. A cache that
/// does not exist yet, or that the cache itself would refuse, gets no index.
pub fn usable_dir(cache: &Path, dir: &Path) -> bool {
    own_dir(cache) && own_dir(dir)
}

/// Whether `d` is a real directory (not a symlink) of this user, writable by no one else.
fn own_dir(d: &Path) -> bool {
    d.symlink_metadata()
        .is_ok_and(|m| m.is_dir() && owned_privately(&m))
}

/// Where the index of `key` lives under the cache version directory `dir`.
pub fn path_of(dir: &Path, key: &str) -> PathBuf {
    dir.join("catalogs").join(format!("{key}.idx"))
}

/// The catalog kept under `key`, if there is a sound one.
pub fn read(dir: &Path, key: &str) -> Option<Catalog> {
    let path = path_of(dir, key);
    // The directory too: a symlinked `catalogs` could lead to indexes planted elsewhere.
    if !own_dir(path.parent().expect("has a parent")) {
        return None;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    let m = file.metadata().ok()?;
    if !m.is_file() || !owned_privately(&m) {
        tracing::warn!("not reading the catalog index {}: not a regular file of this user, writable by no one else", path.display());
        return None;
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    file.read_to_end(&mut data).ok()?;
    let parsed = decode(&data);
    if parsed.is_none() {
        tracing::warn!("ignoring the damaged catalog index {}", path.display());
    }
    parsed
}

/// Keeps the catalog `encoder` holds under `key`, written by a thread of its own (a quarter of
/// a gigabyte for a million lines takes a second, which a mount's start does not wait for;
/// [`finish_writes`] does, before the process ends). A failure is only logged: the index is
/// an optimisation.
pub fn write(dir: &Path, key: &str, encoder: Encoder) {
    let (dir, key) = (dir.to_path_buf(), key.to_string());
    let writer = std::thread::Builder::new()
        .name("catalog-index".into())
        .spawn(move || {
            if let Err(e) = try_write(&dir, &key, &encoder) {
                tracing::warn!("cannot keep the catalog index in {}: {e}", dir.display());
            }
        });
    match writer {
        Ok(handle) => {
            let mut writers = WRITERS.lock().expect("poisoned");
            // Writes that ended are let go (a mount reloading for weeks keeps no list).
            writers.retain(|w| !w.is_finished());
            writers.push(handle);
        }
        Err(e) => tracing::warn!("cannot keep the catalog index: {e}"),
    }
}

/// Index writes under way.
static WRITERS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits for the index writes under way; a process that wrote an index calls it before it
/// ends, so that no index is left half-written.
pub fn finish_writes() {
    let writers = std::mem::take(&mut *WRITERS.lock().expect("poisoned"));
    for w in writers {
        let _ = w.join();
    }
}

fn try_write(dir: &Path, key: &str, encoder: &Encoder) -> std::io::Result<()> {
    let path = path_of(dir, key);
    let parent = path.parent().expect("has a parent");
    match std::fs::create_dir(parent) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if !own_dir(parent) {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of this user only",
            parent.display()
        )));
    }
    // One name per write: two reloads of one file may write the same index at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{key}.{}.{n}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = encoder.write_to(&mut file).and_then(|()| file.sync_data());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    prune(parent);
    Ok(())
}

/// Removes all but the [`KEEP`] most recent indexes.
fn prune(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = read
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
        .filter_map(|e| {
            let m = e.path().symlink_metadata().ok()?;
            let modified = m.modified().ok()?;
            m.is_file().then(|| (modified, e.path()))
        })
        .collect();
    found.sort();
    // Left by a process killed while it wrote (a process that ends waits for its writes).
    if let Ok(read) = std::fs::read_dir(dir) {
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in read.filter_map(Result::ok) {
            let tmp = e.file_name().to_string_lossy().ends_with(".tmp");
            let old = e
                .path()
                .symlink_metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < stale);
            if tmp && old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let extra = found.len().saturating_sub(KEEP);
    for (_, p) in found.into_iter().take(extra) {
        let _ = std::fs::remove_file(p);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A catalog in the index format, made an entry or an error at a time while the catalog is
/// planned: `FORMAT`, the counts of entries and errors, the entries, the errors, then a
/// CRC-32C of all that.
#[derive(Default)]
pub struct Encoder {
    entries: Vec<u8>,
    errors: Vec<u8>,
    n_entries: u64,
    n_errors: u64,
}

impl Encoder {
    /// An encoder with room for about `bytes` of entries.
    pub fn with_capacity(bytes: usize) -> Self {
        Encoder {
            entries: Vec::with_capacity(bytes),
            ..Encoder::default()
        }
    }

    /// The encoding of a whole catalog.
    pub fn of(catalog: &Catalog) -> Self {
        let mut encoder = Encoder::default();
        for e in &catalog.entries {
            encoder.push_entry(e);
        }
        for e in &catalog.errors {
            encoder.push_error(e);
        }
        encoder
    }

    /// Adds the outcome of the next line.
    pub fn push(&mut self, result: &Result<Entry, DeskriptorError>) {
        match result {
            Ok(e) => self.push_entry(e),
            Err(e) => self.push_error(e),
        }
    }

    fn push_entry(&mut self, e: &Entry) {
        let out = &mut self.entries;
        for n in [e.line as u64, e.size, e.first_time as u64, e.mtime as u64] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(u8::from(e.provisional));
        put_str(out, e.file_name());
        put_str(out, e.identity());
        put_str(out, e.raw());
        self.n_entries += 1;
    }

    fn push_error(&mut self, e: &DeskriptorError) {
        let out = &mut self.errors;
        out.extend_from_slice(&(e.line as u64).to_le_bytes());
        put_str(out, &e.field);
        put_str(out, &e.value);
        put_str(out, &e.message);
        self.n_errors += 1;
    }

    /// Writes the index's bytes to `out`, without copying the entries.
    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut header = Vec::with_capacity(FORMAT.len() + 16);
        header.extend_from_slice(FORMAT);
        header.extend_from_slice(&self.n_entries.to_le_bytes());
        header.extend_from_slice(&self.n_errors.to_le_bytes());
        let mut crc = 0;
        for piece in [&header, &self.entries, &self.errors] {
            crc = crc32c::crc32c_append(crc, piece);
            out.write_all(piece)?;
        }
        out.write_all(&crc.to_le_bytes())
    }
}

fn decode(data: &[u8]) -> Option<Catalog> {
    let (body, crc) = data.split_at_checked(data.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader {
        data: body.strip_prefix(FORMAT)?,
    };
    let (n_entries, n_errors) = (r.u64()? as usize, r.u64()? as usize);
    let mut catalog = Catalog {
        entries: Vec::with_capacity(n_entries.min(body.len() / 32)),
        errors: Vec::new(),
    };
    for _ in 0..n_entries {
        let (line, size, first_time, mtime) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let provisional = r.take(1)?[0] != 0;
        let (name, identity, raw) = (r.str()?, r.str()?, r.str()?);
        catalog.entries.push(Entry::new(
            line as usize,
            raw,
            name,
            identity,
            size,
            first_time as usize,
            mtime as i64,
            provisional,
        ));
    }
    for _ in 0..n_errors {
        let line = r.u64()? as usize;
        let (field, value, message) = (r.str()?, r.str()?, r.str()?);
        catalog
            .errors
            .push(DeskriptorError::new(line, field, value, message));
    }
    r.data.is_empty().then_some(catalog)
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.data.split_at_checked(n)?;
        self.data = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `c` under `key` and waits for the write.
    fn keep(dir: &Path, key: &str, c: &Catalog) {
        write(dir, key, Encoder::of(c));
        finish_writes();
    }

    fn sample() -> Catalog {
        Catalog {
            entries: vec![
                Entry::new(1, "{\"a\": 1}", "x/a.nc", "00ff", 10, 3, -5, false),
                Entry::new(3, "{\"b\": 2}", "b.nc", "11ee", 20, 0, 7, true),
            ],
            errors: vec![DeskriptorError::new(2, "name", "\"\"", "empty")],
        }
    }

    #[test]
    fn an_index_reads_back_exactly_and_damage_is_refused() {
        let c = sample();
        let mut bytes = Vec::new();
        Encoder::of(&c).write_to(&mut bytes).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.entries, c.entries);
        assert_eq!(back.errors, c.errors);
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(decode(&flipped).is_none());
    }

    #[test]
    fn indexes_are_kept_read_back_and_a_symlink_or_stray_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        keep(dir.path(), "k1", &sample());
        assert_eq!(read(dir.path(), "k1").unwrap().entries, sample().entries);
        assert!(read(dir.path(), "k2").is_none());
        // A symlink in place of an index is not followed.
        let link = path_of(dir.path(), "k3");
        std::os::unix::fs::symlink(path_of(dir.path(), "k1"), &link).unwrap();
        assert!(read(dir.path(), "k3").is_none());
        // A symlinked `catalogs` directory is neither read nor written through.
        let other = tempfile::tempdir().unwrap();
        keep(other.path(), "k1", &sample());
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            other.path().join("catalogs"),
            linked.path().join("catalogs"),
        )
        .unwrap();
        assert!(
            read(linked.path(), "k1").is_none(),
            "an index reached through a symlink"
        );
        keep(linked.path(), "k9", &sample());
        assert!(!path_of(other.path(), "k9").exists());
        // Garbage is ignored, and a write replaces it.
        std::fs::write(path_of(dir.path(), "k4"), b"junk").unwrap();
        assert!(read(dir.path(), "k4").is_none());
        keep(dir.path(), "k4", &sample());
        assert!(read(dir.path(), "k4").is_some());
        // Only the most recent KEEP are kept.
        for k in 5..12 {
            keep(dir.path(), &format!("k{k}"), &sample());
        }
        let kept = std::fs::read_dir(dir.path().join("catalogs"))
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_name().to_string_lossy().ends_with(".idx")
                    && e.path().symlink_metadata().unwrap().is_file()
            })
            .count();
        assert_eq!(kept, KEEP);
    }

    #[test]
    fn writes_of_one_index_at_once_both_land_and_stale_temporary_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let catalogs = dir.path().join("catalogs");
        std::fs::create_dir(&catalogs).unwrap();
        // Left by a killed process: one an hour old and more, one just begun.
        let (stale, fresh) = (catalogs.join(".k0.1.0.tmp"), catalogs.join(".k0.2.0.tmp"));
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&fresh, b"half").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        // Two reloads of one file write the same index at once: both end, nothing left behind.
        write(dir.path(), "k1", Encoder::of(&sample()));
        write(dir.path(), "k1", Encoder::of(&sample()));
        finish_writes();
        assert_eq!(read(dir.path(), "k1").unwrap().entries, sample().entries);
        assert!(!stale.exists(), "a stale temporary file stayed");
        assert!(fresh.exists(), "a temporary file being written was removed");
        let ours = std::fs::read_dir(&catalogs)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.ends_with(".tmp") && name.starts_with(".k1.")
            })
            .count();
        assert_eq!(ours, 0, "a write left its temporary file");
    }
}
