//! What a mount and the dashboard accept of a deskriptors file, in one place: at a mount's
//! start, on every reload, and each time the dashboard re-reads the file.
//!
//! Bad lines are skipped (each reported) unless the policy is strict, when any bad line
//! refuses the file. A file with bad lines and no good one is refused either way: it is far
//! more likely a wrong path or a broken edit than an empty dataset. A refused file at a start
//! is an error; on a reload the files served so far stay.
//!
//! A file with no line at all (empty, or only blank lines) is accepted at a mount's start (an
//! empty dataset: a mount may be started before its file is written) and by the dashboard,
//! which shows the file as it is now and reads it again at its next change. On a reload
//! ([`Policy::refuse_empty`]: SIGHUP, `reload`, a store update) it is refused like a file of
//! only bad lines: an editor that truncates the file and then writes it, racing a reload,
//! would otherwise empty a live mount. To empty a mount on purpose, unmount it.

use std::path::PathBuf;

use super::Catalog;
use crate::deskriptor::DeskriptorError;
use crate::plan::PlanOptions;
use crate::source::Scope;

/// Bad lines listed at most in a refusal's message (`validate` lists them all).
const LISTED: usize = 20;
/// Characters of one bad line's error kept in a refusal's message (a field's value as written
/// may be long).
const LINE_CHARS: usize = 300;
/// Bytes of bad lines listed at most in a refusal's message: it is also a reload's result,
/// an extended attribute (Linux passes at most 64 KiB).
const LISTED_BYTES: usize = 4096;

/// Whether bad lines refuse a deskriptors file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Refuse the file when any line is bad (`--strict`).
    pub strict: bool,
    /// Refuse a file with no line at all (a reload of a live mount; see the module doc).
    pub refuse_empty: bool,
}

/// Why a deskriptors file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// `--strict` and some lines are bad.
    #[error("{} bad lines (--strict):\n{}", .0.len(), listed(.0))]
    Strict(Vec<DeskriptorError>),
    /// Only bad lines.
    #[error("no valid deskriptor ({} bad lines):\n{}", .0.len(), listed(.0))]
    NothingValid(Vec<DeskriptorError>),
    /// No line at all, where the policy refuses that ([`Policy::refuse_empty`]).
    #[error("the file is empty (no deskriptor line); the current files are kept")]
    Empty,
}

/// The first bad lines, each cut to [`LINE_CHARS`], at most [`LISTED`] of them and
/// [`LISTED_BYTES`] in all, then how many more there are.
fn listed(errors: &[DeskriptorError]) -> String {
    let mut text: Vec<String> = Vec::new();
    let mut bytes = 0;
    for e in errors.iter().take(LISTED) {
        let mut line = e.to_string();
        if let Some((cut, _)) = line.char_indices().nth(LINE_CHARS) {
            line.truncate(cut);
            line.push('…');
        }
        if !text.is_empty() && bytes + line.len() > LISTED_BYTES {
            break;
        }
        bytes += line.len() + 1;
        text.push(line);
    }
    if errors.len() > text.len() {
        text.push(format!(
            "… and {} more bad lines (`sodeda-era5 validate` lists them all)",
            errors.len() - text.len()
        ));
    }
    text.join("\n")
}

impl Policy {
    /// Checks `catalog` against the policy: `Ok` with the catalog to serve (its `errors` are
    /// the lines skipped), or why it is refused.
    pub fn admit(&self, catalog: Catalog) -> Result<Catalog, Refused> {
        if catalog.errors.is_empty() {
            if self.refuse_empty && catalog.entries.is_empty() {
                Err(Refused::Empty)
            } else {
                Ok(catalog)
            }
        } else if self.strict {
            Err(Refused::Strict(catalog.errors))
        } else if catalog.entries.is_empty() {
            Err(Refused::NothingValid(catalog.errors))
        } else {
            Ok(catalog)
        }
    }
}

/// Why a deskriptors file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It could not be read. (The cause is in the message, not also a `source()`: a chain
    /// printed whole would say it twice.)
    #[error("cannot read {}: {cause}", .path.display())]
    Io {
        /// The deskriptors file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// It was read and refused by the policy.
    #[error("{}: {refused}", .path.display())]
    Refused {
        /// The deskriptors file.
        path: PathBuf,
        /// Why.
        refused: Refused,
    },
}

/// A deskriptors file as a mount or the dashboard serves it: where it is, how it is planned,
/// where its index is kept and what is accepted of it.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    /// The deskriptors file.
    pub path: PathBuf,
    /// How its lines are planned.
    pub options: PlanOptions,
    /// Where its planned form is kept ([`Catalog::load_indexed`]); `None`: planned every time.
    pub index_dir: Option<PathBuf>,
    /// What is accepted of it.
    pub policy: Policy,
}

impl CatalogFile {
    /// Reads and plans the file over `scope` (or reads its index back) and applies the policy.
    pub fn read(&self, scope: &Scope) -> Result<Catalog, ReadError> {
        let catalog = self.read_unchecked(scope)?;
        self.policy
            .admit(catalog)
            .map_err(|refused| ReadError::Refused {
                path: self.path.clone(),
                refused,
            })
    }

    /// Reads and plans the file without the policy (for `preload`, which reports every line).
    pub fn read_unchecked(&self, scope: &Scope) -> Result<Catalog, ReadError> {
        Catalog::load_indexed(&self.path, scope, self.options, self.index_dir.as_deref()).map_err(
            |e| ReadError::Io {
                path: self.path.clone(),
                cause: e,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Entry;

    fn catalog(good: usize, bad: usize) -> Catalog {
        let entries = (0..good)
            .map(|i| {
                let name = format!("f{i}.nc");
                Entry::new(i + 1, "{}", &name, &"0".repeat(32), 100, 0, 0, false)
            })
            .collect();
        let errors = (0..bad)
            .map(|i| DeskriptorError::new(good + i + 1, "variable", "\"x\"", "unknown variable"))
            .collect();
        Catalog { entries, errors }
    }

    #[test]
    fn bad_lines_are_skipped_unless_strict() {
        let lenient = Policy::default();
        let served = lenient.admit(catalog(2, 1)).unwrap();
        assert_eq!((served.entries.len(), served.errors.len()), (2, 1));
        let strict = Policy {
            strict: true,
            ..Policy::default()
        };
        let e = strict.admit(catalog(2, 1)).unwrap_err();
        assert!(matches!(e, Refused::Strict(ref v) if v.len() == 1), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("1 bad lines (--strict):\nline 3"),
            "{text}"
        );
    }

    #[test]
    fn only_bad_lines_are_refused_but_an_empty_file_is_served() {
        let reload = Policy {
            refuse_empty: true,
            ..Policy::default()
        };
        for policy in [Policy::default(), reload] {
            let e = policy.admit(catalog(0, 30)).unwrap_err();
            assert!(matches!(e, Refused::NothingValid(_)));
            let text = e.to_string();
            assert!(
                text.contains("30 bad lines")
                    && text.ends_with(
                        "… and 10 more bad lines (`sodeda-era5 validate` lists them all)"
                    ),
                "{text}"
            );
            assert_eq!(text.lines().count(), 1 + LISTED + 1, "{text}");
        }
        let strict = Policy {
            strict: true,
            ..Policy::default()
        };
        let empty = strict.admit(catalog(0, 0)).unwrap();
        assert!(empty.entries.is_empty());
    }

    #[test]
    fn a_refusal_of_many_long_bad_lines_is_bounded() {
        let mut c = catalog(0, 0);
        c.errors = (0..500)
            .map(|i| DeskriptorError::new(i + 1, "variable", "\"x\"", "é".repeat(5000)))
            .collect();
        let text = Policy::default().admit(c).unwrap_err().to_string();
        assert!(text.len() < LISTED_BYTES + 1024, "{} bytes", text.len());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("line 1, field `variable`") && lines[1].ends_with('…'));
        let shown = lines.len() - 2;
        assert!((1..LISTED).contains(&shown), "{shown} lines shown");
        let more = format!("… and {} more bad lines", 500 - shown);
        assert!(lines.last().unwrap().starts_with(&more), "{text}");
    }

    #[test]
    fn an_empty_file_is_refused_on_a_reload_only() {
        for strict in [false, true] {
            let start = Policy {
                strict,
                refuse_empty: false,
            };
            assert!(start.admit(catalog(0, 0)).unwrap().entries.is_empty());
            let reload = Policy {
                strict,
                refuse_empty: true,
            };
            let e = reload.admit(catalog(0, 0)).unwrap_err();
            assert!(matches!(e, Refused::Empty), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("empty") && text.contains("current files are kept"),
                "{text}"
            );
            assert_eq!(reload.admit(catalog(1, 0)).unwrap().entries.len(), 1);
            let e = reload.admit(catalog(0, 2)).unwrap_err();
            assert!(
                matches!(e, Refused::NothingValid(_) | Refused::Strict(_)),
                "{e}"
            );
        }
    }
}
