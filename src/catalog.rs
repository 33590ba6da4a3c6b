//! The catalog: every line of a deskriptors file, planned once, kept as slim entries.
//!
//! Input: the text of `deskriptors.jsonl` and an opened source. Output: one [`Entry`] per good
//! line (in file order) and one [`DeskriptorError`] per bad line. An entry keeps only what
//! listing needs (name, exact size, identity, the line); the full [`Plan`] (positions, layout)
//! is rebuilt from the line when a file is built, so a catalog of 100,000 deskriptors stays
//! small. Invariant: file names in a catalog are unique and none is a directory of another
//! (`a.nc/b.nc` beside `a.nc`); a line whose name clashes with an earlier one is an error
//! naming both lines.

use std::collections::HashMap;
use std::path::Path;

use crate::deskriptor::{self, Deskriptor, DeskriptorError};
use crate::plan::{Plan, PlanOptions};
use crate::source::Source;

/// What is known of a file without building it: about 60 bytes plus its name, line and
/// identity in one allocation (a million entries were 2 KB each when every field was its own
/// `String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The deskriptor's line number.
    pub line: usize,
    /// Exact size in bytes.
    pub size: u64,
    /// The first selected time position (files are preloaded in this order).
    pub first_time: usize,
    /// The file's time, seconds since the epoch (see [`crate::provenance::Provenance::mtime`]).
    pub mtime: i64,
    /// Whether it holds preliminary ERA5T hours.
    pub provisional: bool,
    /// The file name, then the identity, then the line as written (trimmed).
    text: Box<str>,
    /// Where the identity starts and ends in `text`.
    identity_at: (u16, u16),
}

impl Entry {
    /// An entry of the file `file_name` with `identity` (cache key), made from line `line`
    /// (`raw`, as written).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        line: usize,
        raw: &str,
        file_name: &str,
        identity: &str,
        size: u64,
        first_time: usize,
        mtime: i64,
        provisional: bool,
    ) -> Self {
        let at = file_name.len();
        let end = at + identity.len();
        let (Ok(at16), Ok(end16)) = (u16::try_from(at), u16::try_from(end)) else {
            panic!("names are checked to at most 1024 bytes and identities are 32 hex digits");
        };
        let mut text = String::with_capacity(end + raw.len());
        text.push_str(file_name);
        text.push_str(identity);
        text.push_str(raw);
        Entry {
            line,
            size,
            first_time,
            mtime,
            provisional,
            text: text.into_boxed_str(),
            identity_at: (at16, end16),
        }
    }

    /// The file name (a path when it holds `/`).
    pub fn file_name(&self) -> &str {
        &self.text[..self.identity_at.0 as usize]
    }

    /// The identity (cache key).
    pub fn identity(&self) -> &str {
        &self.text[self.identity_at.0 as usize..self.identity_at.1 as usize]
    }

    /// The line as written (trimmed).
    pub fn raw(&self) -> &str {
        &self.text[self.identity_at.1 as usize..]
    }
}

/// The first selected time position of a file (0 without a time axis).
pub fn first_time(
    selections: &std::collections::BTreeMap<String, crate::select::Resolved>,
) -> usize {
    selections
        .get("time")
        .and_then(|t| t.indices.iter().min().copied())
        .unwrap_or(0)
}

impl Entry {
    /// The slim facts of a plan.
    pub fn of(plan: &Plan) -> Self {
        Entry::new(
            plan.deskriptor.line,
            &plan.deskriptor.raw,
            &plan.file_name,
            &plan.identity,
            plan.size,
            first_time(&plan.selections),
            plan.provenance.mtime(),
            plan.provenance.provisional(),
        )
    }

    /// Rebuilds the full plan from the line. It succeeded when the catalog was made, so it
    /// succeeds again with the same source and options (and gives the same identity).
    pub fn plan(&self, source: &Source, options: PlanOptions) -> Result<Plan, DeskriptorError> {
        let d = Deskriptor::parse(self.line, self.raw())?;
        Plan::new(&d, source, options)
    }
}

/// Lines below which planning stays on one thread.
const PART: usize = 2048;

/// Parses and plans one part of the lines, in order: an entry or an error per line.
fn plan_part(
    lines: Vec<deskriptor::FileLine>,
    source: &Source,
    options: PlanOptions,
) -> Vec<Result<Entry, DeskriptorError>> {
    let mut out = Vec::with_capacity(lines.len());
    let mut memo = crate::plan::SizeMemo::default();
    for deskriptor::FileLine { number, text } in lines {
        let parsed = match text {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => Deskriptor::parse(number, &t),
            Err(e) => Err(e),
        };
        out.push(parsed.and_then(|d| Plan::entry(&d, source, options, &mut memo)));
    }
    out
}

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
    pub fn load(path: &Path, source: &Source, options: PlanOptions) -> std::io::Result<Catalog> {
        Ok(Self::from_lines(
            deskriptor::read_lines(path)?,
            source,
            options,
        ))
    }

    /// Plans the lines of `text`.
    pub fn from_text(text: &str, source: &Source, options: PlanOptions) -> Catalog {
        Self::from_lines(deskriptor::split_lines(text.as_bytes()), source, options)
    }

    /// Plans lines read by [`deskriptor::read_lines`], on every core: lines are parsed and
    /// planned in parts, one per thread, and only the slim [`Entry`] of each plan is kept;
    /// names are then checked for duplicates in file order.
    pub fn from_lines(
        lines: Vec<deskriptor::FileLine>,
        source: &Source,
        options: PlanOptions,
    ) -> Catalog {
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
        let planned: Vec<Vec<Result<Entry, DeskriptorError>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = parts
                .into_iter()
                .map(|part| scope.spawn(move || plan_part(part, source, options)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a planning thread panicked"))
                .collect()
        });
        let mut entries: Vec<Entry> = Vec::new();
        let mut errors = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // Directories the names made so far, with the first line that made each.
        let mut dirs: HashMap<String, usize> = HashMap::new();
        for result in planned.into_iter().flatten() {
            match result {
                Ok(entry) => {
                    let name = entry.file_name();
                    if let Some(why) = name_clash(name, &names, &dirs) {
                        errors.push(DeskriptorError::new(
                            entry.line,
                            "name",
                            name.to_string(),
                            why,
                        ));
                        continue;
                    }
                    for (at, _) in name.match_indices('/') {
                        dirs.entry(name[..at].to_string()).or_insert(entry.line);
                    }
                    names.insert(name.to_string(), entry.line);
                    entries.push(entry);
                }
                Err(e) => errors.push(e),
            }
        }
        errors.sort_by_key(|e| e.line);
        Catalog { entries, errors }
    }
}

/// Why file `name` cannot join `names` (files, with their lines) and `dirs` (the directories
/// they make): the same name, a name that is a directory of another, or one whose directory is
/// another's file.
fn name_clash(
    name: &str,
    names: &HashMap<String, usize>,
    dirs: &HashMap<String, usize>,
) -> Option<String> {
    if let Some(first) = names.get(name) {
        return Some(format!(
            "duplicate file name, line {first} already has it; give each line a distinct \
             `name` (or remove the duplicate line)"
        ));
    }
    if let Some(first) = dirs.get(name) {
        return Some(format!(
            "line {first} places a file in a directory of this name; a path is either a file \
             or a directory"
        ));
    }
    for (at, _) in name.match_indices('/') {
        if let Some(first) = names.get(&name[..at]) {
            return Some(format!(
                "`{}` is the file of line {first}, so it cannot be a directory; a path is \
                 either a file or a directory",
                &name[..at]
            ));
        }
    }
    None
}
