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

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

/// Longest file name (in bytes) that Linux file systems accept, `.nc` included.
pub const MAX_FILE_NAME_BYTES: usize = 255;

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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if !self.field.is_empty() {
            write!(f, ", field `{}`", self.field)?;
        }
        if !self.value.is_empty() {
            write!(f, ", value {}", self.value)?;
        }
        write!(f, ": {}", self.message)
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
        let variables = variables.ok_or_else(|| {
            DeskriptorError::new(
                line,
                "variable",
                "",
                "missing; give a variable name or a list of names, e.g. \"variable\": [\"2m_temperature\"]",
            )
        })?;
        Ok(Deskriptor {
            line,
            raw: raw.to_string(),
            name,
            variables,
            selectors,
        })
    }

    /// The canonical JSON of the selection (without `name`): keys sorted, variables as a list,
    /// integral numbers without a fraction. It is written into every file and hashed into the
    /// file's identity.
    pub fn canonical_json(&self) -> String {
        let mut m = BTreeMap::new();
        for (k, s) in &self.selectors {
            m.insert(k.clone(), s.to_json());
        }
        m.insert(
            "variable".to_string(),
            Value::Array(
                self.variables
                    .iter()
                    .map(|v| Value::String(v.clone()))
                    .collect(),
            ),
        );
        let object: Map<String, Value> = m.into_iter().collect();
        Value::Object(object).to_string()
    }
}

/// Reads a deskriptors file: every non-blank line is one deskriptor. Returns the good ones and
/// one error per bad line; blank lines are skipped, an empty file gives no deskriptors.
pub fn parse_file(path: &Path) -> std::io::Result<(Vec<Deskriptor>, Vec<DeskriptorError>)> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_lines(&text))
}

/// Parses the text of a deskriptors file (see [`parse_file`]).
pub fn parse_lines(text: &str) -> (Vec<Deskriptor>, Vec<DeskriptorError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Deskriptor::parse(i + 1, line) {
            Ok(d) => good.push(d),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

/// Checks a file name (with its `.nc`): not empty, no `/` or NUL, not `.`/`..` or containing
/// `..`, at most [`MAX_FILE_NAME_BYTES`] bytes.
pub fn check_file_name(line: usize, file_name: &str) -> Result<(), DeskriptorError> {
    let bad = |msg: &str| {
        Err(DeskriptorError::new(
            line,
            "name",
            format!("{file_name:?}"),
            msg.to_string(),
        ))
    };
    if file_name.contains('/') {
        return bad("a name may not contain `/`");
    }
    if file_name.contains('\0') {
        return bad("a name may not contain NUL");
    }
    if file_name.contains("..") {
        return bad("a name may not contain `..`");
    }
    if file_name.len() > MAX_FILE_NAME_BYTES {
        return bad(&format!(
            "the file name `<name>.nc` is {} bytes; at most {MAX_FILE_NAME_BYTES} are allowed",
            file_name.len()
        ));
    }
    Ok(())
}

fn parse_name(line: usize, value: &Value) -> Result<String, DeskriptorError> {
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
    check_file_name(line, &format!("{name}.nc"))?;
    Ok(name.clone())
}

fn parse_variables(line: usize, value: &Value) -> Result<Vec<String>, DeskriptorError> {
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
    for item in items {
        let Value::String(s) = item else {
            return Err(DeskriptorError::new(
                line,
                "variable",
                item.to_string(),
                "expected a variable name (a string)",
            ));
        };
        if out.contains(s) {
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

fn parse_selector(line: usize, key: &str, value: &Value) -> Result<Selector, DeskriptorError> {
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
            for item in items {
                let label = parse_label(line, key, item)?;
                if labels.contains(&label) {
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
            (r#""a/b""#, "`/`"),
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
}
