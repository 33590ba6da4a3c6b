//! Deskriptors: one JSON object per line of `deskriptors.jsonl`, each a selection over the source.
//!
//! Input: the text of one line. Output: a [`Deskriptor`] whose selectors are syntactically valid
//! (types, steps, names). Whether the labels exist in the source is decided later, by
//! [`crate::plan`], which has the coordinates. Invariant: every error names the line, the field
//! and the offending value, and says what is allowed ([`DeskriptorError`]).
//!
//! The canonical form ([`Deskriptor::canonical_json`]) drops the optional `name`, sorts keys,
//! turns a single variable into a list and writes integral numbers without a fraction, so two
//! lines that select the same thing with different spacing or key order share one identity.
//!
//! Each job is one submodule: `syntax` (the JSON of a line), `canonical` (the canonical form),
//! `names` (what a file name may hold), `keys` (allowed keys, and the nearest one to a
//! misspelled key) and `lines` (the file read as lines, each parsed on its own). This file
//! holds the types they share and gathers what they export.

mod canonical;
mod keys;
mod lines;
mod names;
mod representation;
mod syntax;

use std::collections::BTreeMap;
use std::fmt;

pub(crate) use canonical::{canonical_member, canonical_of_members, canonical_variables};
pub use keys::{nearest_key, FIXED_KEYS};
pub use lines::{
    file_line, parse_file, parse_file_lines, parse_lines, read_lines, split_lines, FileLine,
};
pub use names::{
    check_file_name, escape, is_forbidden_in_name, MAX_DEPTH, MAX_FILE_NAME_BYTES, MAX_PATH_BYTES,
};
pub use representation::MAX_POINTS;
pub(crate) use syntax::{parse_name, parse_selector, parse_variables};

/// A bad deskriptor: which line, which field, which value, and what would have been allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeskriptorError {
    /// 1-based line number in the deskriptors file (0 when the deskriptor came from elsewhere).
    pub line: usize,
    /// The field at fault, e.g. `latitude.step`; empty for whole-line problems.
    pub field: String,
    /// The offending value as written (possibly shortened).
    pub value: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl DeskriptorError {
    /// Builds an error for `field` with offending `value`.
    pub fn new(
        line: usize,
        field: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut value = value.into();
        if value.len() > 120 {
            let mut cut = 117;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push_str("...");
        }
        Self {
            line,
            field: field.into(),
            value,
            message: message.into(),
        }
    }
}

impl fmt::Display for DeskriptorError {
    /// `line 3, field `x`, value 5: message`. A deskriptor that did not come from a file (line
    /// 0: `get --deskriptor`, the dashboard's form) has no line: `field `x`, value 5: message`,
    /// for the caller to prefix with where it came from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::with_capacity(3);
        if self.line != 0 {
            parts.push(format!("line {}", self.line));
        }
        if !self.field.is_empty() {
            parts.push(format!("field `{}`", self.field));
        }
        if !self.value.is_empty() {
            parts.push(format!("value {}", self.value));
        }
        if parts.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", parts.join(", "), self.message)
        }
    }
}

impl std::error::Error for DeskriptorError {}

/// A coordinate label as written: a number (latitude, longitude, level) or a string (time).
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// A numeric label, e.g. `47.25`.
    Number(f64),
    /// A text label, e.g. `"2023-01-01T11:00"`.
    Text(String),
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Number(x) => write!(f, "{}", number_json(*x)),
            Label::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// How one coordinate is selected: the semantics of xarray's `.sel`.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// `{start, end, step}`: an inclusive label range (either bound may be open), then every
    /// `step`-th selected point.
    Range {
        /// Lower (first) label, or open.
        start: Option<Label>,
        /// Upper (last) label, or open.
        end: Option<Label>,
        /// Positional step, at least 1.
        step: u64,
    },
    /// A single label.
    One(Label),
    /// Several exact labels, in the order given.
    List(Vec<Label>),
}

/// One parsed line of the deskriptors file.
#[derive(Debug, Clone, PartialEq)]
pub struct Deskriptor {
    /// 1-based line number (0 for a deskriptor given on the command line).
    pub line: usize,
    /// The line as written, trimmed.
    pub raw: String,
    /// The optional file name stem (`<name>.nc`).
    pub name: Option<String>,
    /// The variables, in the order given; never empty, no duplicates.
    pub variables: Vec<String>,
    /// Coordinate selectors by coordinate name (sorted).
    pub selectors: BTreeMap<String, Selector>,
    /// `resample`: time statistics in place of the hours (optional).
    pub resample: Option<Resample>,
    /// `points`: series at stations in place of `latitude`/`longitude` (optional).
    pub points: Option<Vec<Point>>,
}

/// `resample` of a deskriptor: the hours of each period summarised by one statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resample {
    /// The length of a period.
    pub period: Period,
    /// The statistic of each period's hours.
    pub how: Statistic,
}

/// The length of a resampling period, as xarray's `resample(time=...)` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A whole number of hours (`6h`; `1D` is 24): periods from midnight of the first day.
    Hours(u32),
    /// Calendar months (`1M`), labelled at their first day (xarray's `MS`).
    Month,
}

/// The statistic of a period's hours; missing values are skipped (xarray's `skipna`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    /// The mean of the present values; NaN when none is.
    Mean,
    /// The least present value; NaN when none is.
    Min,
    /// The greatest present value; NaN when none is.
    Max,
    /// The sum of the present values; 0 when none is (as xarray), NaN for a period without
    /// any selected hour.
    Sum,
}

/// One station of `points`: a name and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The station's name, unique in the deskriptor.
    pub name: String,
    /// Degrees north, -90..90.
    pub latitude: f64,
    /// Degrees east, in -180..180 or 0..360.
    pub longitude: f64,
}

/// JSON for a number: integral values without a fraction (`48`, not `48.0`).
pub(crate) fn number_json(x: f64) -> serde_json::Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        serde_json::Value::from(x as i64)
    } else {
        serde_json::Value::from(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const PROTOTYPE: &str = r#"{"time": {"start": "2023-01-01T11:00", "end": "2023-01-01T11:59"},"latitude": {"start": 48, "end": 47},"longitude": {"start": 8, "end": 9},"variable": ["2m_temperature"]}"#;

    pub(super) fn err(text: &str) -> DeskriptorError {
        Deskriptor::parse(7, text).unwrap_err()
    }

    #[test]
    fn an_error_without_a_line_does_not_say_line_0() {
        let e = Deskriptor::parse(0, r#"{"variable": 5}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `variable`, value 5: expected a variable name or a list of names"
        );
        let e = Deskriptor::parse(0, "").unwrap_err();
        assert!(e.to_string().starts_with("empty line"), "{e}");
    }
}
