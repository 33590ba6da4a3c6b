//! The catalog: every line of a deskriptors file, planned once, kept as slim entries.
//!
//! Input: the text of `deskriptors.jsonl` and an opened source. Output: one [`Entry`] per good
//! line (in file order) and one [`DeskriptorError`] per bad line. An entry keeps only what
//! listing needs (name, exact size, identity, the line); the full [`Plan`] (positions, layout)
//! is rebuilt from the line when a file is built, so a catalog of 100,000 deskriptors stays
//! small. Invariant: file names in a catalog are unique; a line whose name repeats an earlier
//! one is an error naming both lines.

use std::collections::HashMap;
use std::path::Path;

use crate::deskriptor::{self, Deskriptor, DeskriptorError};
use crate::plan::{Plan, PlanOptions};
use crate::source::Source;

/// What is known of a file without building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The deskriptor's line number.
    pub line: usize,
    /// The line as written (trimmed).
    pub raw: String,
    /// The file name.
    pub file_name: String,
    /// The identity (cache key).
    pub identity: String,
    /// Exact size in bytes.
    pub size: u64,
    /// The first selected time position (files are preloaded in this order).
    pub first_time: usize,
    /// The file's time, seconds since the epoch (see [`crate::provenance::Provenance::mtime`]).
    pub mtime: i64,
    /// Whether it holds preliminary ERA5T hours.
    pub provisional: bool,
}

impl Entry {
    /// The slim facts of a plan.
    pub fn of(plan: &Plan) -> Self {
        Entry {
            line: plan.deskriptor.line,
            raw: plan.deskriptor.raw.clone(),
            file_name: plan.file_name.clone(),
            identity: plan.identity.clone(),
            size: plan.size,
            first_time: plan
                .selections
                .get("time")
                .and_then(|t| t.indices.iter().min().copied())
                .unwrap_or(0),
            mtime: plan.provenance.mtime(),
            provisional: plan.provenance.provisional(),
        }
    }

    /// Rebuilds the full plan from the line. It succeeded when the catalog was made, so it
    /// succeeds again with the same source and options (and gives the same identity).
    pub fn plan(&self, source: &Source, options: PlanOptions) -> Result<Plan, DeskriptorError> {
        let d = Deskriptor::parse(self.line, &self.raw)?;
        Plan::new(&d, source, options)
    }
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

    /// Plans lines read by [`deskriptor::read_lines`].
    pub fn from_lines(
        lines: Vec<deskriptor::FileLine>,
        source: &Source,
        options: PlanOptions,
    ) -> Catalog {
        let (deskriptors, mut errors) = deskriptor::parse_file_lines(lines);
        let mut entries: Vec<Entry> = Vec::with_capacity(deskriptors.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for d in &deskriptors {
            match Plan::new(d, source, options) {
                Ok(plan) => {
                    if let Some(&first) = names.get(&plan.file_name) {
                        errors.push(DeskriptorError::new(
                            d.line,
                            "name",
                            plan.file_name.clone(),
                            format!(
                                "duplicate file name, line {first} already has it; give each \
                                 line a distinct `name` (or remove the duplicate line)"
                            ),
                        ));
                        continue;
                    }
                    names.insert(plan.file_name.clone(), d.line);
                    entries.push(Entry::of(&plan));
                }
                Err(e) => errors.push(e),
            }
        }
        errors.sort_by_key(|e| e.line);
        Catalog { entries, errors }
    }
}
