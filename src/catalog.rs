//! The catalog: every line of a deskriptors file, planned, with the bad lines set aside.
//!
//! Input: the text of `deskriptors.jsonl` and an opened source. Output: the plans of the good
//! lines (in file order) and one [`DeskriptorError`] per bad line. Invariant: file names in a
//! catalog are unique; a line whose name repeats an earlier one is an error naming both lines.

use std::collections::HashMap;
use std::path::Path;

use crate::deskriptor::{self, DeskriptorError};
use crate::plan::{Plan, PlanOptions};
use crate::source::Source;

/// Planned deskriptors and the errors of the lines that could not be planned.
#[derive(Debug, Default)]
pub struct Catalog {
    /// One plan per good line, in file order.
    pub plans: Vec<Plan>,
    /// One error per bad line, in file order.
    pub errors: Vec<DeskriptorError>,
}

impl Catalog {
    /// Reads and plans a deskriptors file.
    pub fn load(path: &Path, source: &Source, options: PlanOptions) -> std::io::Result<Catalog> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::from_text(&text, source, options))
    }

    /// Plans the lines of `text`.
    pub fn from_text(text: &str, source: &Source, options: PlanOptions) -> Catalog {
        let (deskriptors, mut errors) = deskriptor::parse_lines(text);
        let mut plans: Vec<Plan> = Vec::with_capacity(deskriptors.len());
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
                    plans.push(plan);
                }
                Err(e) => errors.push(e),
            }
        }
        errors.sort_by_key(|e| e.line);
        Catalog { plans, errors }
    }
}
