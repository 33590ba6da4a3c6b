//! A catalog's entry of one file: what is known of it without building it (name, exact size,
//! identity, the line), made by the plan ([`Plan::entry`], [`Entry::of`]) and kept by the
//! [`crate::catalog`].

use super::{Plan, PlanError, PlanOptions};
use crate::deskriptor::Deskriptor;
use crate::source::Scope;

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
    /// succeeds again with the same scope and options (and gives the same identity).
    pub fn plan(&self, scope: &Scope, options: PlanOptions) -> Result<Plan, PlanError> {
        let d = Deskriptor::parse(self.line, self.raw())?;
        Plan::new(&d, scope, options)
    }
}
