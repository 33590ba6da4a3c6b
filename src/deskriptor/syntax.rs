//! The syntax of one line: a JSON object whose members are the variables, the optional name and
//! one selector per coordinate.
//!
//! Input: the text of a line. Output: a [`Deskriptor`], or the first error found, naming the
//! field and the value and saying what is allowed. Invariant: a parsed deskriptor has at least
//! one variable, no label or variable listed twice (found in linear time), whole steps of at
//! least 1 and finite numbers; whether its keys are the source's coordinates is
//! [`Deskriptor::check_keys`]'s question.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::keys::{nearest_key, FIXED_KEYS};
use super::names::{check_file_name, escape};
use super::representation::{parse_points, parse_resample};
use super::{Deskriptor, DeskriptorError, Label, Selector};

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
        let mut resample = None;
        let mut points = None;
        for (key, value) in object {
            match key.as_str() {
                "name" => name = Some(parse_name(line, &value)?),
                "variable" => variables = Some(parse_variables(line, &value)?),
                "resample" => resample = Some(parse_resample(line, &value)?),
                "points" => points = Some(parse_points(line, &value)?),
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
        if points.is_some() {
            if let Some(key) = ["latitude", "longitude"]
                .into_iter()
                .find(|k| selectors.contains_key(*k))
            {
                return Err(DeskriptorError::new(
                    line,
                    "points",
                    "",
                    format!(
                        "stations are given in place of latitude and longitude; give either \
                         `points` or `{key}`, not both"
                    ),
                ));
            }
        }
        Ok(Deskriptor {
            line,
            raw: raw.to_string(),
            name,
            variables,
            selectors,
            resample,
            points,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deskriptor::tests::{err, PROTOTYPE};

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
    fn duplicates_in_lists_are_refused() {
        let e = err(r#"{"variable": ["t", "t"]}"#);
        assert!(e.message.contains("twice"));
        let e = err(r#"{"variable": "t", "level": [500, 500]}"#);
        assert_eq!(e.field, "level");
        let e = err(r#"{"variable": []}"#);
        assert!(e.message.contains("empty"));
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
}
