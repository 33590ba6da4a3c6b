//! The catalog: every line of a deskriptors file, planned once, kept as slim entries.
//!
//! Input: the text of `deskriptors.jsonl` and a source's scope (metadata only). Output: one [`Entry`] per good
//! line (in file order) and one [`DeskriptorError`] per bad line. An entry keeps only what
//! listing needs (name, exact size, identity, the line); the full [`Plan`] (positions, layout)
//! is rebuilt from the line when a file is built, so a catalog of 100,000 deskriptors stays
//! small. Invariant: file names in a catalog are unique and none is a directory of another
//! (`a.nc/b.nc` beside `a.nc`); a line whose name clashes with an earlier one is an error
//! naming both lines.

use std::collections::HashMap;
use std::path::Path;

pub mod index;
pub mod policy;

use crate::deskriptor::{self, DeskriptorError};
pub use crate::plan::Entry;
use crate::plan::{Plan, PlanError, PlanOptions};
use crate::source::Scope;

/// One page of the entries whose name contains `find` (all when empty): those from position
/// `from` of the matching ones, at most `limit`, and how many match in all. One pass, nothing
/// copied: the dashboard pages a million files with it.
pub fn page<'c>(
    entries: &'c [Entry],
    find: &str,
    from: usize,
    limit: usize,
) -> (Vec<&'c Entry>, usize) {
    if find.is_empty() {
        let start = from.min(entries.len());
        let end = start.saturating_add(limit).min(entries.len());
        return (entries[start..end].iter().collect(), entries.len());
    }
    let mut total = 0;
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.file_name().contains(find)) {
        if total >= from && out.len() < limit {
            out.push(e);
        }
        total += 1;
    }
    (out, total)
}

/// Lines below which planning stays on one thread.
const PART: usize = 2048;

/// Parses and plans one part of the lines, in order: an entry or an error per line.
fn plan_part(
    lines: Vec<deskriptor::FileLine>,
    scope: &Scope,
    options: PlanOptions,
) -> Vec<Result<Entry, PlanError>> {
    let mut out = Vec::with_capacity(lines.len());
    let mut memo = crate::plan::PlanMemo::default();
    for deskriptor::FileLine { number, text } in lines {
        out.push(match text {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => Plan::entry_of_line(number, &t, scope, options, &mut memo),
            Err(e) => Err(e.into()),
        });
    }
    out
}

/// Lines read, planned and checked at a time by [`Catalog::scan`]: memory stays bounded by a
/// batch, whatever the file's size.
pub const BATCH: usize = 1 << 16;

/// Planned deskriptors and the errors of the lines that could not be planned.
#[derive(Debug, Default)]
pub struct Catalog {
    /// One entry per good line, in file order.
    pub entries: Vec<Entry>,
    /// One error per bad line, in file order.
    pub errors: Vec<DeskriptorError>,
}

impl Catalog {
    /// Reads and plans a deskriptors file. A line that is not valid UTF-8 is one bad line;
    /// only an unreadable file is an error.
    pub fn load(path: &Path, scope: &Scope, options: PlanOptions) -> std::io::Result<Catalog> {
        let mut catalog = Catalog::default();
        Self::scan(path, scope, options, |r| catalog.push(r))?;
        Ok(catalog)
    }

    /// Like [`Catalog::load`], keeping the result under the cache version directory `dir`
    /// (plain [`Catalog::load`] without one): an unchanged file over an unchanged scope,
    /// with the same options and the same build, is read back instead of planned again (see
    /// [`index`]).
    pub fn load_indexed(
        path: &Path,
        scope: &Scope,
        options: PlanOptions,
        dir: Option<&Path>,
    ) -> std::io::Result<Catalog> {
        let Some(dir) = dir else {
            return Self::load(path, scope, options);
        };
        let bytes = std::fs::read(path)?;
        let key = index::key(&bytes, scope, options);
        if let Some(catalog) = index::read(dir, &key) {
            tracing::debug!("catalog of {} read from its index", path.display());
            return Ok(catalog);
        }
        // Room for every line at once: a million entries grown by doubling were copied
        // twenty times.
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        let mut catalog = Catalog {
            entries: Vec::with_capacity(lines),
            errors: Vec::new(),
        };
        // Encoded as it is planned: the encoding overlaps the planning of the next lines.
        let mut encoder = index::Encoder::with_capacity(bytes.len() + lines * 64);
        Self::scan_reader(&bytes[..], scope, options, BATCH, lines, |r| {
            encoder.push(&r);
            catalog.push(r);
        })?;
        drop(bytes);
        index::write(dir, &key, encoder);
        Ok(catalog)
    }

    /// Plans the lines of `text`.
    pub fn from_text(text: &str, scope: &Scope, options: PlanOptions) -> std::io::Result<Catalog> {
        Self::from_lines(deskriptor::split_lines(text.as_bytes()), scope, options)
    }

    /// Plans lines read by [`deskriptor::split_lines`].
    pub fn from_lines(
        lines: Vec<deskriptor::FileLine>,
        scope: &Scope,
        options: PlanOptions,
    ) -> std::io::Result<Catalog> {
        let mut catalog = Catalog::default();
        let mut names = Names::default();
        for r in plan_batch(lines, scope, options)? {
            catalog.push(names.check(r));
        }
        Ok(catalog)
    }

    fn push(&mut self, result: Result<Entry, DeskriptorError>) {
        match result {
            Ok(entry) => self.entries.push(entry),
            Err(e) => self.errors.push(e),
        }
    }

    /// Reads and plans the deskriptors file at `path` in batches of [`BATCH`] lines (each
    /// planned on every core) and gives `each` an entry or an error per line, in file order,
    /// names already checked against all earlier lines. Memory holds one batch and the names
    /// seen, never every entry: `validate` and `list` of ten million lines stay small.
    pub fn scan(
        path: &Path,
        scope: &Scope,
        options: PlanOptions,
        each: impl FnMut(Result<Entry, DeskriptorError>),
    ) -> std::io::Result<()> {
        Self::scan_in_batches(path, scope, options, BATCH, each)
    }

    /// [`Catalog::scan`] with batches of `batch` lines (tests use small ones).
    pub fn scan_in_batches(
        path: &Path,
        scope: &Scope,
        options: PlanOptions,
        batch_lines: usize,
        each: impl FnMut(Result<Entry, DeskriptorError>),
    ) -> std::io::Result<()> {
        let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        Self::scan_reader(reader, scope, options, batch_lines, 0, each)
    }

    /// [`Catalog::scan_in_batches`] over the lines of `reader` (about `expected_lines` of
    /// them, if known; 0 if not). While one batch is planned,
    /// the names of the one before are checked and the next one is read: the check and the
    /// reading are one thread's work, which would otherwise leave the other cores idle.
    fn scan_reader(
        mut reader: impl std::io::BufRead,
        scope: &Scope,
        options: PlanOptions,
        batch_lines: usize,
        expected_lines: usize,
        mut each: impl FnMut(Result<Entry, DeskriptorError>),
    ) -> std::io::Result<()> {
        let batch_lines = batch_lines.max(1);
        let mut names = Names::with_capacity(expected_lines);
        let mut number = 0;
        let mut buf = Vec::new();
        let mut read_batch = |number: &mut usize| -> std::io::Result<Vec<deskriptor::FileLine>> {
            let mut batch = Vec::with_capacity(batch_lines);
            while batch.len() < batch_lines {
                buf.clear();
                if reader.read_until(b'\n', &mut buf)? == 0 {
                    break;
                }
                *number += 1;
                let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                batch.push(deskriptor::file_line(*number, line));
            }
            Ok(batch)
        };
        let mut batch = read_batch(&mut number)?;
        let mut planned: Vec<Result<Entry, DeskriptorError>> = Vec::new();
        while !batch.is_empty() {
            let (next, results) = std::thread::scope(|threads| {
                let planning = threads.spawn(move || plan_batch(batch, scope, options));
                for r in planned.drain(..) {
                    each(names.check(r));
                }
                let next = read_batch(&mut number);
                (next, planning.join().expect("a planning thread panicked"))
            });
            batch = next?;
            planned = results?;
        }
        for r in planned {
            each(names.check(r));
        }
        Ok(())
    }
}

/// Plans `lines` on every core: in parts, one per thread, keeping only the slim [`Entry`] of
/// each plan; results in line order.
fn plan_batch(
    lines: Vec<deskriptor::FileLine>,
    scope: &Scope,
    options: PlanOptions,
) -> std::io::Result<Vec<Result<Entry, DeskriptorError>>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(lines.len().div_ceil(PART).max(1));
    let per = lines.len().div_ceil(threads).max(1);
    let mut parts: Vec<Vec<deskriptor::FileLine>> = Vec::with_capacity(threads);
    let mut lines = lines.into_iter();
    loop {
        let part: Vec<_> = lines.by_ref().take(per).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let planned: Vec<Result<Entry, PlanError>> = std::thread::scope(|threads| {
        let workers: Vec<_> = parts
            .into_iter()
            .map(|part| threads.spawn(move || plan_part(part, scope, options)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a planning thread panicked"))
            .collect()
    });
    // A line's own error stays with the line; a size that could not be computed (libnetcdf,
    // the temporary directory) is the machine's fault and stops the whole reading.
    planned
        .into_iter()
        .map(|r| match r {
            Ok(entry) => Ok(Ok(entry)),
            Err(PlanError::Deskriptor(e)) => Ok(Err(e)),
            Err(e @ PlanError::Size(_)) => Err(std::io::Error::other(e)),
        })
        .collect()
}

/// The file names seen so far, each once in one arena, and the directories they make: what
/// the name check of a line needs of every earlier line (about 60 bytes a name).
#[derive(Default)]
struct Names {
    arena: String,
    /// (start in the arena, length, line) of each name.
    index: hashbrown::HashTable<(usize, u32, u32)>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Directories with the first line that made each.
    dirs: HashMap<String, usize>,
}

impl Names {
    /// Room for `n` names of about 64 bytes.
    fn with_capacity(n: usize) -> Self {
        let mut names = Names::default();
        names.arena.reserve(n * 64);
        // Empty: nothing to rehash, so the hasher is never called.
        names.index.reserve(n, |_| 0);
        names
    }

    fn hash(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }

    /// The line of the earlier file `name`, if any.
    fn line_of(&self, name: &str) -> Option<usize> {
        self.line_of_hashed(self.hash(name), name)
    }

    fn line_of_hashed(&self, hash: u64, name: &str) -> Option<usize> {
        let arena = &self.arena;
        self.index
            .find(hash, |&(at, len, _)| &arena[at..at + len as usize] == name)
            .map(|&(_, _, line)| line as usize)
    }

    /// `result`, or the error of a name that clashes with an earlier line's (which is then
    /// noted as taken).
    fn check(&mut self, result: Result<Entry, DeskriptorError>) -> Result<Entry, DeskriptorError> {
        let entry = result?;
        let name = entry.file_name();
        let hash = self.hash(name);
        if let Some(why) = self.clash(hash, name) {
            return Err(DeskriptorError::new(
                entry.line,
                "name",
                name.to_string(),
                why,
            ));
        }
        for (at, _) in name.match_indices('/') {
            if !self.dirs.contains_key(&name[..at]) {
                self.dirs.insert(name[..at].to_string(), entry.line);
            }
        }
        let at = self.arena.len();
        self.arena.push_str(name);
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.index.insert_unique(
            hash,
            (at, name.len() as u32, entry.line as u32),
            |&(at, len, _)| {
                use std::hash::BuildHasher;
                hasher.hash_one(&arena[at..at + len as usize])
            },
        );
        Ok(entry)
    }

    /// Why file `name` cannot join the names so far: the same name, a name that is a
    /// directory of another, or one whose directory is another's file.
    fn clash(&self, hash: u64, name: &str) -> Option<String> {
        if let Some(first) = self.line_of_hashed(hash, name) {
            return Some(format!(
                "duplicate file name, line {first} already has it; give each line a distinct \
                 `name` (or remove the duplicate line)"
            ));
        }
        if let Some(first) = self.dirs.get(name) {
            return Some(format!(
                "line {first} places a file in a directory of this name; a path is either a \
                 file or a directory"
            ));
        }
        for (at, _) in name.match_indices('/') {
            if let Some(first) = self.line_of(&name[..at]) {
                return Some(format!(
                    "`{}` is the file of line {first}, so it cannot be a directory; a path is \
                     either a file or a directory",
                    &name[..at]
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_is_planned_from_a_scope_with_one_error_per_bad_line() {
        let scope = crate::source::scope::small_scope();
        let text = r#"{"name": "a", "time": "2023-01-01T00", "variable": "2m_temperature"}
{"name": "a", "time": "2023-01-01T01", "variable": "2m_temperature"}
{"name": "d/b", "time": "2023-01-01T02", "variable": "2m_temperature"}
{"name": "a.nc/b", "time": "2023-01-01T03", "variable": "2m_temperature"}
not json
{"name": "c", "time": "2023-01-01T04", "variable": "nope"}

{"time": "2023-01-01T05", "variable": "temperature", "level": 850}
"#;
        let c = Catalog::from_text(text, &scope, PlanOptions::default()).unwrap();
        let names: Vec<&str> = c.entries.iter().map(|e| e.file_name()).collect();
        assert_eq!(names[..2], ["a.nc", "d/b.nc"]);
        assert!(
            names[2].starts_with("temperature_20230101T05_"),
            "{names:?}"
        );
        assert_eq!(
            c.entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 3, 8]
        );
        let lines: Vec<usize> = c.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 5, 6], "{:?}", c.errors);
        assert!(
            c.errors[0].message.contains("line 1"),
            "a clash names both lines: {}",
            c.errors[0]
        );
        assert!(c.errors[1].message.contains("line 1"), "{}", c.errors[1]);
        assert_eq!(c.errors[3].field, "variable");
        // An entry is planned again, whole, from its line alone.
        let plan = c.entries[1].plan(&scope, PlanOptions::default()).unwrap();
        assert_eq!(
            (plan.size, plan.identity.as_str()),
            (c.entries[1].size, c.entries[1].identity())
        );
    }

    fn entry(line: usize, name: &str) -> Entry {
        Entry::new(line, "{}", name, "00", 1, 0, 0, false)
    }

    #[test]
    fn pages_cover_the_matching_entries_once_and_count_them() {
        let entries: Vec<Entry> = (0..25)
            .map(|i| {
                entry(
                    i + 1,
                    &format!("{}/f{i:02}.nc", if i % 2 == 0 { "even" } else { "odd" }),
                )
            })
            .collect();
        let names = |v: Vec<&Entry>| {
            v.iter()
                .map(|e| e.file_name().to_string())
                .collect::<Vec<_>>()
        };
        let (first, total) = page(&entries, "", 0, 10);
        assert_eq!((first.len(), total), (10, 25));
        let (last, _) = page(&entries, "", 20, 10);
        assert_eq!(
            names(last),
            [
                "even/f20.nc",
                "odd/f21.nc",
                "even/f22.nc",
                "odd/f23.nc",
                "even/f24.nc"
            ]
        );
        assert_eq!(page(&entries, "", 30, 10), (Vec::new(), 25));
        let mut seen = Vec::new();
        for from in (0..).step_by(4).take(4) {
            let (part, total) = page(&entries, "even/", from, 4);
            assert_eq!(total, 13);
            seen.extend(names(part));
        }
        assert_eq!(seen.len(), 13);
        assert!(seen.iter().all(|n| n.starts_with("even/")));
        assert_eq!(page(&entries, "nothing", 0, 10), (Vec::new(), 0));
    }

    #[test]
    fn an_entry_keeps_its_parts_apart() {
        let e = Entry::new(3, "{\"a\": 1}", "d/x.nc", "abcd", 7, 2, -1, true);
        assert_eq!(
            (e.file_name(), e.identity(), e.raw()),
            ("d/x.nc", "abcd", "{\"a\": 1}")
        );
    }
}
