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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

/// Longest file name (in bytes) that Linux file systems accept, `.nc` included; also the
/// longest directory name in a path.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest path of a file under the mount point (directories, `/` and the file name).
pub const MAX_PATH_BYTES: usize = 1024;
/// Most directories a file may be placed in.
pub const MAX_DEPTH: usize = 16;

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

impl Label {
    fn to_json(&self) -> Value {
        match self {
            Label::Number(x) => number_json(*x),
            Label::Text(s) => Value::String(s.clone()),
        }
    }
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

impl Selector {
    /// The selector's part of the canonical form ([`Deskriptor::canonical_json`]).
    pub fn canonical_json(&self) -> String {
        self.to_json().to_string()
    }

    fn to_json(&self) -> Value {
        match self {
            Selector::Range { start, end, step } => {
                let mut m = Map::new();
                if let Some(e) = end {
                    m.insert("end".into(), e.to_json());
                }
                if let Some(s) = start {
                    m.insert("start".into(), s.to_json());
                }
                if *step != 1 {
                    m.insert("step".into(), Value::from(*step));
                }
                Value::Object(m)
            }
            Selector::One(l) => l.to_json(),
            Selector::List(ls) => Value::Array(ls.iter().map(Label::to_json).collect()),
        }
    }
}

/// One member of the canonical form: `"key":value`.
pub(crate) fn canonical_member(key: &str, value: &str) -> String {
    let mut member = serde_json::to_string(key).expect("strings serialize");
    member.push(':');
    member.push_str(value);
    member
}

/// The `variable` member of the canonical form.
pub(crate) fn canonical_variables(variables: &[String]) -> String {
    canonical_member(
        "variable",
        &serde_json::to_string(variables).expect("strings serialize"),
    )
}

/// The canonical form of its members (`(key, "key":value)`, `variable` among them) in any
/// order.
pub(crate) fn canonical_of_members(mut members: Vec<(&str, &str)>) -> String {
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let len = members.iter().map(|(_, m)| m.len() + 1).sum::<usize>() + 1;
    let mut out = String::with_capacity(len);
    out.push('{');
    for (i, (_, member)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(member);
    }
    out.push('}');
    out
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
}

impl Deskriptor {
    /// Parses one line. `line` is used only for error messages.
    pub fn parse(line: usize, text: &str) -> Result<Deskriptor, DeskriptorError> {
        let raw = text.trim();
        if raw.is_empty() {
            return Err(DeskriptorError::new(
                line,
                "",
                "",
                "empty line; each line must be one JSON object",
            ));
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| {
            DeskriptorError::new(
                line,
                "",
                raw,
                format!("malformed JSON ({e}); each line must be one JSON object"),
            )
        })?;
        let Value::Object(object) = value else {
            return Err(DeskriptorError::new(
                line,
                "",
                raw,
                "expected a JSON object like {\"time\": {...}, \"variable\": [...]}",
            ));
        };
        let mut name = None;
        let mut variables = None;
        let mut selectors = BTreeMap::new();
        for (key, value) in object {
            match key.as_str() {
                "name" => name = Some(parse_name(line, &value)?),
                "variable" => variables = Some(parse_variables(line, &value)?),
                _ => {
                    let selector = parse_selector(line, &key, &value)?;
                    selectors.insert(key, selector);
                }
            }
        }
        let Some(variables) = variables else {
            // `variables`, `var`, `Variable`: a slip for the one required key.
            if let Some(key) = selectors
                .keys()
                .find(|k| nearest_key(k, [FIXED_KEYS[0]]).is_some())
            {
                return Err(DeskriptorError::new(
                    line,
                    key.as_str(),
                    "",
                    format!(
                        "unknown key; did you mean `{}`? (it is required: a variable name or a \
                         list of names)",
                        FIXED_KEYS[0]
                    ),
                ));
            }
            return Err(DeskriptorError::new(
                line,
                "variable",
                "",
                "missing; give a variable name or a list of names, e.g. \"variable\": [\"2m_temperature\"]",
            ));
        };
        Ok(Deskriptor {
            line,
            raw: raw.to_string(),
            name,
            variables,
            selectors,
        })
    }

    /// Checks that every selector key is one of the source's `coordinates`. An unknown key is an
    /// error that suggests the nearest allowed key (`lat` → `latitude`, `variables` →
    /// `variable`) and lists them all.
    pub fn check_keys(&self, coordinates: &[&str]) -> Result<(), DeskriptorError> {
        let Some(key) = self
            .selectors
            .keys()
            .find(|k| !coordinates.contains(&k.as_str()))
        else {
            return Ok(());
        };
        let allowed = FIXED_KEYS.iter().chain(coordinates).copied();
        let hint = match nearest_key(key, allowed) {
            Some(k) => format!("did you mean `{k}`? "),
            None => String::new(),
        };
        Err(DeskriptorError::new(
            self.line,
            key.as_str(),
            "",
            format!(
                "unknown key; {hint}allowed: {}, and the source's coordinates ({})",
                FIXED_KEYS.join(", "),
                coordinates.join(", ")
            ),
        ))
    }

    /// The canonical JSON of the selection (without `name`): keys sorted, variables as a list,
    /// integral numbers without a fraction. It is written into every file and hashed into the
    /// file's identity.
    pub fn canonical_json(&self) -> String {
        let members: Vec<(&str, String)> = self
            .selectors
            .iter()
            .map(|(k, s)| (k.as_str(), canonical_member(k, &s.canonical_json())))
            .collect();
        let variables = canonical_variables(&self.variables);
        canonical_of_members(
            members
                .iter()
                .map(|(k, m)| (*k, m.as_str()))
                .chain([("variable", variables.as_str())])
                .collect(),
        )
    }
}

/// The keys of a deskriptor that are not coordinates of the source.
pub const FIXED_KEYS: [&str; 2] = ["variable", "name"];

/// The key of `allowed` that a misspelled `key` most likely meant, if any: one that starts
/// with it or that it starts with (`lat` → `latitude`, `levels` → `level`; at least two
/// letters, any case), else the most similar one (Jaro-Winkler at least 0.8).
pub fn nearest_key<'a>(key: &str, allowed: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = key;
    let key = key.to_lowercase();
    allowed
        .into_iter()
        .filter_map(|a| {
            let lower = a.to_lowercase();
            let similarity = strsim::jaro_winkler(&key, &lower);
            let prefix = key.chars().count() >= 2
                && lower.chars().count() >= 2
                && (lower.starts_with(&key) || key.starts_with(&lower));
            // A prefix match outranks any mere similarity.
            let score = if prefix { 1.0 + similarity } else { similarity };
            (a != given && score >= 0.8).then_some((score, a))
        })
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, a)| a)
}

/// One line of a deskriptors file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLine {
    /// 1-based line number.
    pub number: usize,
    /// The line without its `\n` (or `\r\n`); an error when it is not valid UTF-8.
    pub text: Result<String, DeskriptorError>,
}

/// Reads a deskriptors file. This is the one place the file is read (the catalog, `list`,
/// `validate`, `get --line`, the mount and its reload, the dashboard), as bytes, so that a bad
/// byte spoils only its own line (see [`split_lines`]).
pub fn read_lines(path: &Path) -> std::io::Result<Vec<FileLine>> {
    Ok(split_lines(&std::fs::read(path)?))
}

/// Splits the bytes of a deskriptors file into lines as [`str::lines`] does (at `\n`, an
/// `\r` before it dropped, no line after a final `\n`). A line that is not valid UTF-8 is an
/// error naming its line and the first bad byte; the other lines are unaffected.
pub fn split_lines(bytes: &[u8]) -> Vec<FileLine> {
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| file_line(i + 1, piece))
        .collect()
}

/// Line `number` of a deskriptors file from its bytes (without the `\n`; an `\r` before it is
/// dropped); an error naming the first bad byte when it is not valid UTF-8.
pub fn file_line(number: usize, bytes: &[u8]) -> FileLine {
    let piece = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let text = match std::str::from_utf8(piece) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(not_utf8(number, piece, e.valid_up_to())),
    };
    FileLine { number, text }
}

/// The error of a line whose byte at `at` (0-based) starts no valid UTF-8 character. The value
/// is the text around it, bad bytes written `\xFF`.
fn not_utf8(line: usize, bytes: &[u8], at: usize) -> DeskriptorError {
    let from = at.saturating_sub(40);
    let to = (at + 40).min(bytes.len());
    let mut value = String::from(if from > 0 { "\"..." } else { "\"" });
    for chunk in bytes[from..to].utf8_chunks() {
        value.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            value.push_str(&format!("\\x{b:02X}"));
        }
    }
    value.push_str(if to < bytes.len() { "...\"" } else { "\"" });
    DeskriptorError::new(
        line,
        "",
        value,
        format!(
            "not valid UTF-8 at byte {} of the line (0x{:02X}); a deskriptors file must be UTF-8 \
             text (this line is skipped, the others are read)",
            at + 1,
            bytes[at]
        ),
    )
}

/// Reads a deskriptors file: every non-blank line is one deskriptor. Returns the good ones and
/// one error per bad line; blank lines are skipped, an empty file gives no deskriptors.
pub fn parse_file(path: &Path) -> std::io::Result<(Vec<Deskriptor>, Vec<DeskriptorError>)> {
    Ok(parse_file_lines(read_lines(path)?))
}

/// Parses the text of a deskriptors file (see [`parse_file`]).
pub fn parse_lines(text: &str) -> (Vec<Deskriptor>, Vec<DeskriptorError>) {
    parse_file_lines(split_lines(text.as_bytes()))
}

/// Parses lines read by [`read_lines`] (see [`parse_file`]).
pub fn parse_file_lines(lines: Vec<FileLine>) -> (Vec<Deskriptor>, Vec<DeskriptorError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for FileLine { number, text } in lines {
        let parsed = match text {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => Deskriptor::parse(number, &t),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(d) => good.push(d),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

/// Whether `c` may not appear in a file name: a control character (Unicode category Cc:
/// U+0000..U+001F, U+007F..U+009F, e.g. newline and tab), a line or paragraph separator
/// (U+2028, U+2029), or a bidirectional formatting character (U+061C, U+200E, U+200F,
/// U+202A..U+202E, U+2066..U+2069), which would make a listing show another name than the
/// file has.
pub fn is_forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` (unquoted) with `"`, `\\` and every character of [`is_forbidden_in_name`] escaped (`\n`,
/// `\t`, `\u{202E}`), so an error message shows what is there and cannot itself be reordered or
/// broken across lines.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_forbidden_in_name(c) => out.push_str(&format!("\\u{{{:04X}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Checks a file name (with its `.nc`), which may place the file in directories
/// (`2m_temperature/2023/01/zurich.nc`): segments separated by single `/`, none empty, `.` or
/// `..`, no `..` anywhere, no NUL, no control or bidirectional formatting character
/// ([`is_forbidden_in_name`]), each segment at most [`MAX_FILE_NAME_BYTES`] bytes, at most
/// [`MAX_DEPTH`] directories and [`MAX_PATH_BYTES`] bytes in all.
pub fn check_file_name(line: usize, file_name: &str) -> Result<(), DeskriptorError> {
    let bad = |msg: &str| {
        Err(DeskriptorError::new(
            line,
            "name",
            format!("\"{}\"", escape(file_name)),
            msg.to_string(),
        ))
    };
    // Printable ASCII (most names) holds no forbidden character: the search is skipped.
    let printable = file_name.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable && file_name.contains('\0') {
        return bad("a name may not contain NUL");
    }
    if let Some((i, c)) = (!printable)
        .then_some(file_name)
        .into_iter()
        .flat_map(str::chars)
        .enumerate()
        .find(|&(_, c)| is_forbidden_in_name(c))
    {
        return bad(&format!(
            "a name may not contain control characters (such as newline or tab, U+0000..U+001F, \
             U+007F..U+009F), line separators (U+2028, U+2029) or bidirectional formatting \
             characters (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069); character {} \
             is U+{:04X}. Allowed: any other printable characters, `/` between directories",
            i + 1,
            c as u32
        ));
    }
    if file_name.contains("..") {
        return bad("a name may not contain `..`");
    }
    let segments: Vec<&str> = file_name.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == ".") {
        return bad(
            "a `/` in a name separates directories: the name may not start or end with `/`, \
             hold `//`, or have a `.` segment (as in `a/./b`)",
        );
    }
    if segments.len() > MAX_DEPTH + 1 {
        return bad(&format!(
            "the name places the file in {} directories; at most {MAX_DEPTH} are allowed",
            segments.len() - 1
        ));
    }
    if let Some(long) = segments.iter().find(|s| s.len() > MAX_FILE_NAME_BYTES) {
        let what = if std::ptr::eq(*long, *segments.last().expect("not empty")) {
            "the file name `<name>.nc`"
        } else {
            "a directory name"
        };
        return bad(&format!(
            "{what} is {} bytes; at most {MAX_FILE_NAME_BYTES} are allowed",
            long.len()
        ));
    }
    if file_name.len() > MAX_PATH_BYTES {
        return bad(&format!(
            "the path is {} bytes; at most {MAX_PATH_BYTES} are allowed",
            file_name.len()
        ));
    }
    Ok(())
}

pub(crate) fn parse_name(line: usize, value: &Value) -> Result<String, DeskriptorError> {
    let Value::String(name) = value else {
        return Err(DeskriptorError::new(
            line,
            "name",
            value.to_string(),
            "expected a string (the file is `<name>.nc`)",
        ));
    };
    if name.is_empty() {
        return Err(DeskriptorError::new(
            line,
            "name",
            "\"\"",
            "a name may not be empty",
        ));
    }
    if name.ends_with('/') {
        return Err(DeskriptorError::new(
            line,
            "name",
            format!("\"{}\"", escape(name)),
            "a name may not end with `/`: the part after the last `/` names the file",
        ));
    }
    check_file_name(line, &format!("{name}.nc"))?;
    Ok(name.clone())
}

pub(crate) fn parse_variables(line: usize, value: &Value) -> Result<Vec<String>, DeskriptorError> {
    let items: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::Array(_) => {
            return Err(DeskriptorError::new(
                line,
                "variable",
                "[]",
                "the list is empty; give at least one variable name",
            ))
        }
        _ => {
            return Err(DeskriptorError::new(
                line,
                "variable",
                value.to_string(),
                "expected a variable name or a list of names",
            ))
        }
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err(DeskriptorError::new(
                line,
                "variable",
                item.to_string(),
                "expected a variable name (a string)",
            ));
        };
        if !seen.insert(s.as_str()) {
            return Err(DeskriptorError::new(
                line,
                "variable",
                format!("{s:?}"),
                "listed twice; give each variable once",
            ));
        }
        out.push(s.clone());
    }
    Ok(out)
}

pub(crate) fn parse_selector(
    line: usize,
    key: &str,
    value: &Value,
) -> Result<Selector, DeskriptorError> {
    match value {
        Value::Object(m) => {
            let mut start = None;
            let mut end = None;
            let mut step = 1;
            for (k, v) in m {
                let field = format!("{key}.{k}");
                match k.as_str() {
                    "start" => start = parse_optional_label(line, &field, v)?,
                    "end" => end = parse_optional_label(line, &field, v)?,
                    "step" => step = parse_step(line, &field, v)?,
                    _ => {
                        return Err(DeskriptorError::new(
                            line,
                            field,
                            v.to_string(),
                            "unknown range field; a range has `start`, `end` and optional `step`",
                        ))
                    }
                }
            }
            Ok(Selector::Range { start, end, step })
        }
        Value::Array(items) => {
            if items.is_empty() {
                return Err(DeskriptorError::new(
                    line,
                    key,
                    "[]",
                    "the list is empty; give at least one label",
                ));
            }
            let mut labels = Vec::with_capacity(items.len());
            // A set, not `labels.contains`: a list of 10^6 labels must not take 10^12 steps.
            let mut seen: HashSet<LabelKey> = HashSet::with_capacity(items.len());
            for item in items {
                let label = parse_label(line, key, item)?;
                if !seen.insert(LabelKey::of(&label)) {
                    return Err(DeskriptorError::new(
                        line,
                        key,
                        item.to_string(),
                        "listed twice; give each label once",
                    ));
                }
                labels.push(label);
            }
            Ok(Selector::List(labels))
        }
        _ => Ok(Selector::One(parse_label(line, key, value)?)),
    }
}

/// A label as a hash key, equal exactly when the labels are (`0` and `-0` are one label).
#[derive(PartialEq, Eq, Hash)]
enum LabelKey {
    Number(u64),
    Text(String),
}

impl LabelKey {
    fn of(label: &Label) -> Self {
        match label {
            // Labels are finite; adding 0.0 turns -0.0 into 0.0.
            Label::Number(x) => LabelKey::Number((x + 0.0).to_bits()),
            Label::Text(s) => LabelKey::Text(s.clone()),
        }
    }
}

fn parse_optional_label(
    line: usize,
    field: &str,
    value: &Value,
) -> Result<Option<Label>, DeskriptorError> {
    if value.is_null() {
        return Ok(None);
    }
    parse_label(line, field, value).map(Some)
}

fn parse_label(line: usize, field: &str, value: &Value) -> Result<Label, DeskriptorError> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Label::Number(x)),
            _ => Err(DeskriptorError::new(
                line,
                field,
                n.to_string(),
                "not a finite number",
            )),
        },
        Value::String(s) => Ok(Label::Text(s.clone())),
        _ => Err(DeskriptorError::new(
            line,
            field,
            value.to_string(),
            "expected a label (a number, or a date-time string for time), a list of labels, \
             or a range {\"start\": ..., \"end\": ..., \"step\": n}",
        )),
    }
}

fn parse_step(line: usize, field: &str, value: &Value) -> Result<u64, DeskriptorError> {
    let msg = "a step must be a whole number of at least 1";
    match value {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(s), _) if s >= 1 => Ok(s),
            (None, Some(x)) if x >= 1.0 && x.fract() == 0.0 && x < 1e15 => Ok(x as u64),
            _ => Err(DeskriptorError::new(line, field, n.to_string(), msg)),
        },
        _ => Err(DeskriptorError::new(line, field, value.to_string(), msg)),
    }
}

/// JSON for a number: integral values without a fraction (`48`, not `48.0`).
fn number_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOTYPE: &str = r#"{"time": {"start": "2023-01-01T11:00", "end": "2023-01-01T11:59"},"latitude": {"start": 48, "end": 47},"longitude": {"start": 8, "end": 9},"variable": ["2m_temperature"]}"#;

    #[test]
    fn parses_the_prototype_line() {
        let d = Deskriptor::parse(1, PROTOTYPE).unwrap();
        assert_eq!(d.variables, vec!["2m_temperature"]);
        assert_eq!(d.selectors.len(), 3);
        assert_eq!(
            d.selectors["latitude"],
            Selector::Range {
                start: Some(Label::Number(48.0)),
                end: Some(Label::Number(47.0)),
                step: 1
            }
        );
        assert_eq!(d.name, None);
    }

    #[test]
    fn canonical_json_ignores_spacing_order_name_and_number_spelling() {
        let a = Deskriptor::parse(1, PROTOTYPE).unwrap();
        let b = Deskriptor::parse(
            2,
            r#"{"name":"x","variable":"2m_temperature","longitude":{"end":9.0,"start":8},
            "latitude":{"end":47,"start":48.0,"step":1},"time":{"end":"2023-01-01T11:59","start":"2023-01-01T11:00"}}"#
                .replace('\n', " ")
                .as_str(),
        )
        .unwrap();
        assert_eq!(a.canonical_json(), b.canonical_json());
        assert_eq!(
            a.canonical_json(),
            r#"{"latitude":{"end":47,"start":48},"longitude":{"end":9,"start":8},"time":{"end":"2023-01-01T11:59","start":"2023-01-01T11:00"},"variable":["2m_temperature"]}"#
        );
    }

    /// The canonical form made of parts is the one `serde_json` writes for the whole object
    /// (what identities were hashed from before it was made of parts).
    #[test]
    fn canonical_json_is_serde_jsons_object() {
        let lines = [
            PROTOTYPE.to_string(),
            r#"{"variable":["a\"b","c\u00e9\n"],"time":["2023-01-01T00:00","2023-01-02"],"level":[500,850.5,-0.0]}"#.into(),
            r#"{"variable":"t","latitude":{"start":null,"end":-90,"step":3},"longitude":1e3}"#.into(),
            r#"{"variable":"t","time":{"start":"2023-01-01","end":null},"level":1.25e-7}"#.into(),
        ];
        for line in lines {
            let d = Deskriptor::parse(1, &line).unwrap();
            let mut m = BTreeMap::new();
            for (k, s) in &d.selectors {
                m.insert(k.clone(), s.to_json());
            }
            m.insert("variable".to_string(), serde_json::json!(d.variables));
            let whole = Value::Object(m.into_iter().collect::<Map<String, Value>>()).to_string();
            assert_eq!(d.canonical_json(), whole, "{line}");
        }
    }

    fn err(text: &str) -> DeskriptorError {
        Deskriptor::parse(7, text).unwrap_err()
    }

    #[test]
    fn malformed_json_names_the_line() {
        let e = err(r#"{"variable": ["2m_temperature"]"#);
        assert_eq!(e.line, 7);
        assert!(e.message.contains("malformed JSON"), "{e}");
        assert!(e.to_string().starts_with("line 7"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = err(r#"{"variable": 5}"#);
        assert_eq!(e.field, "variable");
        let e = err(r#"{"variable": "t", "latitude": {"start": true, "end": 3}}"#);
        assert_eq!(e.field, "latitude.start");
        assert_eq!(e.value, "true");
        let e = err(r#"{"variable": "t", "latitude": {"begin": 1}}"#);
        assert_eq!(e.field, "latitude.begin");
        let e = err(r#"[1, 2]"#);
        assert!(e.message.contains("JSON object"), "{e}");
        let e = err(r#"{"latitude": 3}"#);
        assert_eq!(e.field, "variable");
    }

    #[test]
    fn step_must_be_positive_whole() {
        for bad in ["0", "-1", "1.5", "\"2\""] {
            let e = err(&format!(
                r#"{{"variable": "t", "time": {{"start": "2023", "step": {bad}}}}}"#
            ));
            assert_eq!(e.field, "time.step", "{bad}");
            assert!(e.message.contains("at least 1"), "{e}");
        }
    }

    #[test]
    fn names_are_checked() {
        for (bad, why) in [
            (r#""/a""#, "`/`"),
            (r#""a//b""#, "`//`"),
            (r#""a/""#, "`/`"),
            (r#""a/./b""#, "`.` segment"),
            (r#""./a""#, "`.` segment"),
            (r#""a/../b""#, "`..`"),
            (r#""a/\tb""#, "control"),
            (r#""..""#, "`..`"),
            (r#""a..b""#, "`..`"),
            (r#""a\u0000b""#, "NUL"),
            (r#""""#, "empty"),
            (r#"3"#, "string"),
        ] {
            let e = err(&format!(r#"{{"variable": "t", "name": {bad}}}"#));
            assert_eq!(e.field, "name");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        let long = "x".repeat(253);
        let e = err(&format!(r#"{{"variable": "t", "name": "{long}"}}"#));
        assert!(e.message.contains("256 bytes"), "{e}");
        let ok = "x".repeat(252);
        assert!(Deskriptor::parse(1, &format!(r#"{{"variable": "t", "name": "{ok}"}}"#)).is_ok());
        // Directories: each segment and the whole path are bounded.
        let ok = r#"{"variable": "t", "name": "2m_temperature/2023/01/zurich-0001"}"#;
        assert!(Deskriptor::parse(1, ok).is_ok());
        let dir = "d".repeat(256);
        let e = err(&format!(r#"{{"variable": "t", "name": "{dir}/a"}}"#));
        assert!(e.message.contains("a directory name is 256 bytes"), "{e}");
        let deep = vec!["d"; 17].join("/");
        let e = err(&format!(r#"{{"variable": "t", "name": "{deep}/a"}}"#));
        assert!(e.message.contains("17 directories"), "{e}");
        let long = vec!["d".repeat(200); 6].join("/");
        let e = err(&format!(r#"{{"variable": "t", "name": "{long}"}}"#));
        assert!(e.message.contains("the path is"), "{e}");
    }

    #[test]
    fn duplicates_in_lists_are_refused() {
        let e = err(r#"{"variable": ["t", "t"]}"#);
        assert!(e.message.contains("twice"));
        let e = err(r#"{"variable": "t", "level": [500, 500]}"#);
        assert_eq!(e.field, "level");
        let e = err(r#"{"variable": []}"#);
        assert!(e.message.contains("empty"));
    }

    #[test]
    fn parse_lines_skips_blank_lines_and_counts_lines() {
        let (good, bad) = parse_lines(&format!("{PROTOTYPE}\n\n  \nnot json\n{PROTOTYPE}\n"));
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].line, 5);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 4);
        let (good, bad) = parse_lines("");
        assert!(good.is_empty() && bad.is_empty());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_bad_line() {
        let mut bytes = format!("{PROTOTYPE}\r\n").into_bytes();
        bytes.extend_from_slice(b"{\"variable\": \"t\", \"name\": \"caf\xE9\"}\n\n");
        bytes.extend_from_slice(format!("{PROTOTYPE}\n").as_bytes());
        let lines = split_lines(&bytes);
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0].text.as_deref(),
            Ok(PROTOTYPE),
            "\\r\\n is a line end"
        );
        let e = lines[1].text.clone().unwrap_err();
        assert_eq!((lines[1].number, e.line), (2, 2));
        assert!(e.message.contains("not valid UTF-8 at byte 31 "), "{e}");
        assert!(e.message.contains("0xE9"), "{e}");
        assert!(e.value.contains(r#"caf\xE9\""#), "{e}");
        assert!(e.to_string().starts_with("line 2, value "), "{e}");
        let (good, bad) = parse_file_lines(lines);
        assert_eq!(good.iter().map(|d| d.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(bad, vec![e]);
        // The same through the file.
        let path = std::env::temp_dir().join(format!("sodeda-utf8-{}.jsonl", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let (good, bad) = parse_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((good.len(), bad.len(), bad[0].line), (2, 1, 2));
        // Lines as `str::lines` counts them.
        for text in ["", "a", "a\n", "a\n\n", "\n\na\r\nb", "a\rb\n"] {
            let ours: Vec<String> = split_lines(text.as_bytes())
                .into_iter()
                .map(|l| l.text.unwrap())
                .collect();
            assert_eq!(ours, text.lines().collect::<Vec<_>>(), "{text:?}");
        }
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

    #[test]
    fn names_with_control_or_bidi_characters_are_refused() {
        for (bad, shown) in [
            (r#""a\nb""#, r#""a\nb.nc""#),
            (r#""a\tb""#, r#""a\tb.nc""#),
            (r#""a\u0007b""#, r#""a\u{0007}b.nc""#),
            (r#""a\u007fb""#, r#""a\u{007F}b.nc""#),
            (r#""a\u0085b""#, r#""a\u{0085}b.nc""#),
            (r#""a\u202Egnp""#, r#""a\u{202E}gnp.nc""#),
            (r#""a\u202Ab""#, r#""a\u{202A}b.nc""#),
            (r#""a\u2066b""#, r#""a\u{2066}b.nc""#),
            (r#""a\u2069b""#, r#""a\u{2069}b.nc""#),
            (r#""a\u200Eb""#, r#""a\u{200E}b.nc""#),
            (r#""a\u200Fb""#, r#""a\u{200F}b.nc""#),
            (r#""a\u061Cb""#, r#""a\u{061C}b.nc""#),
            (r#""a\u2028b""#, r#""a\u{2028}b.nc""#),
        ] {
            let e = err(&format!(r#"{{"variable": "t", "name": {bad}}}"#));
            assert_eq!(e.field, "name", "{bad}");
            assert_eq!(e.value, shown, "{bad}");
            assert!(e.message.contains("character 2 is U+"), "{bad}: {e}");
            assert!(e.message.contains("Allowed: any other printable"), "{e}");
            assert!(!e.to_string().contains(['\n', '\t', '\u{202E}']), "{e}");
        }
        for ok in ["Zürich 2023", "東京", "a-b_c (1)", "a\u{200D}b", "ملف"] {
            let line = serde_json::json!({"variable": "t", "name": ok}).to_string();
            assert!(Deskriptor::parse(1, &line).is_ok(), "{ok}");
        }
        // Derived names go through the same check.
        let e = check_file_name(3, "t\u{202E}_20230101T11.nc").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "name"));
    }

    #[test]
    fn a_million_label_list_is_checked_in_linear_time() {
        // Checked pairwise, this took minutes (10^12 comparisons).
        let n = 1_000_000;
        let labels: Vec<String> = (0..n).map(|i| format!("{}", i as f64 * 0.25)).collect();
        let line = format!(r#"{{"variable": "t", "level": [{}]}}"#, labels.join(","));
        let d = Deskriptor::parse(1, &line).unwrap();
        let Selector::List(ls) = &d.selectors["level"] else {
            panic!("not a list");
        };
        assert_eq!(ls.len(), n);
        assert_eq!(ls[n - 1], Label::Number((n - 1) as f64 * 0.25));
        // One repeated label at the very end is still found, and named.
        let line = format!(
            r#"{{"variable": "t", "level": [{}, 12.5]}}"#,
            labels.join(",")
        );
        let e = err(&line);
        assert_eq!((e.field.as_str(), e.value.as_str()), ("level", "12.5"));
        assert!(e.message.contains("twice"), "{e}");
        // Also for text labels and variables (10^5: enough for 10^10 steps before); 0 and
        // -0 are one label.
        let times: Vec<String> = (0..n / 10).map(|i| format!("\"t{i}\"")).collect();
        let line = format!(r#"{{"variable": [{0}], "time": [{0}]}}"#, times.join(","));
        let d = Deskriptor::parse(1, &line).unwrap();
        assert_eq!(d.variables.len(), n / 10);
        let line = format!(r#"{{"variable": [{}, "t7"]}}"#, times.join(","));
        assert!(err(&line).message.contains("twice"));
        assert!(err(r#"{"variable": "t", "longitude": [0, -0.0]}"#)
            .message
            .contains("twice"));
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_allowed_key() {
        let coordinates = ["latitude", "level", "longitude", "time"];
        for (typo, meant) in [
            ("lat", "latitude"),
            ("lon", "longitude"),
            ("levels", "level"),
            ("variables", "variable"),
            ("names", "name"),
            ("Latitude", "latitude"),
            ("latitdue", "latitude"),
            ("times", "time"),
        ] {
            let line = format!(r#"{{"variable": "t", "{typo}": 1}}"#);
            let e = Deskriptor::parse(4, &line)
                .unwrap()
                .check_keys(&coordinates)
                .unwrap_err();
            assert_eq!(e.field, typo);
            assert!(
                e.message
                    .starts_with(&format!("unknown key; did you mean `{meant}`? allowed: ")),
                "{typo}: {e}"
            );
            assert!(e.message.contains("(latitude, level, longitude, time)"));
        }
        let d = Deskriptor::parse(4, r#"{"variable": "t", "height": 2}"#).unwrap();
        let e = d.check_keys(&coordinates).unwrap_err();
        assert!(
            e.message
                .starts_with("unknown key; allowed: variable, name"),
            "{e}"
        );
        assert!(Deskriptor::parse(4, PROTOTYPE)
            .unwrap()
            .check_keys(&coordinates)
            .is_ok());
        // Without `variable`, a key that looks like it is the error.
        let e = err(r#"{"variables": ["2m_temperature"], "time": "2023"}"#);
        assert_eq!(e.field, "variables");
        assert!(e.message.contains("did you mean `variable`?"), "{e}");
        let e = err(r#"{"level": 500, "time": "2023"}"#);
        assert_eq!(e.field, "variable");
        assert!(e.message.starts_with("missing"), "{e}");
        assert_eq!(
            nearest_key("l", coordinates),
            None,
            "one letter is no prefix"
        );
        assert_eq!(nearest_key("lo", coordinates), Some("longitude"));
    }
}
