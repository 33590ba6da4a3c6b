//! Resolves one selector against one coordinate: labels in, positions out.
//!
//! The semantics are xarray's `.sel` on the source, with three deliberate extensions:
//! a numeric range (latitude, level, ...) may be given in either order; longitudes may be given
//! in −180..180, in which case the points are relabelled to −180..180 and sorted, so a range may
//! cross 0°; and a partial time string (`"2023-01"`) as a range bound covers its whole period,
//! as in pandas. Invariant: a resolved selection is never empty and every position exists.
//!
//! This file dispatches by kind of coordinate and holds what the kinds share; each kind is one
//! submodule: `time` (the time axis), `longitude` (its two conventions) and `numeric`
//! (every other coordinate: ranges, and exact labels found in O(log n)).

mod longitude;
mod numeric;
mod time;

use chrono::NaiveDateTime;

use crate::deskriptor::{DeskriptorError, Label, Selector};
use crate::source::Coordinate;
use longitude::resolve_longitude;
use numeric::resolve_numeric;
use time::resolve_time;

/// Positions into a coordinate, in output order, with the labels the output file carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Positions into the source coordinate.
    pub indices: Vec<usize>,
    /// The output labels (equal to the source values except for relabelled longitudes).
    pub labels: Vec<f64>,
}

/// Resolves `selector` (or everything, when `None`) against `coord`.
pub fn resolve(
    line: usize,
    selector: Option<&Selector>,
    coord: &Coordinate,
) -> Result<Resolved, DeskriptorError> {
    let Some(selector) = selector else {
        return Ok(Resolved {
            indices: (0..coord.values.len()).collect(),
            labels: coord.values.clone(),
        });
    };
    let resolved = if let Some(time) = &coord.time {
        resolve_time(line, selector, coord, time)?
    } else if coord.name == "longitude" {
        resolve_longitude(line, selector, coord)?
    } else {
        resolve_numeric(line, selector, coord)?
    };
    if resolved.indices.is_empty() {
        return Err(DeskriptorError::new(
            line,
            coord.name.as_str(),
            selector_text(selector),
            format!("selects no points; the source has {}", describe(coord)),
        ));
    }
    Ok(resolved)
}

/// A one-line description of a coordinate's extent, for error messages and `scope`.
pub fn describe(coord: &Coordinate) -> String {
    let n = coord.values.len();
    let (first, last) = (coord.values[0], coord.values[n - 1]);
    match &coord.time {
        Some(t) => format!(
            "{n} times from {} to {}",
            fmt_instant(t.instant(first as i64)),
            fmt_instant(t.instant(last as i64))
        ),
        None if n <= 40 => format!(
            "{} values: {}",
            n,
            coord
                .values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("{n} values from {first} to {last}"),
    }
}

/// Formats an instant as `YYYY-MM-DDTHH:MM`.
pub fn fmt_instant(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

fn selector_text(s: &Selector) -> String {
    match s {
        Selector::One(l) => l.to_string(),
        Selector::List(ls) => format!(
            "[{}]",
            ls.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Selector::Range { start, end, step } => {
            let b = |l: &Option<Label>| l.as_ref().map_or("open".to_string(), |l| l.to_string());
            let step = if *step == 1 {
                String::new()
            } else {
                format!(" step {step}")
            };
            format!("{}..{}{}", b(start), b(end), step)
        }
    }
}

fn stepped(indices: Vec<usize>, labels: Vec<f64>, step: u64) -> Resolved {
    let step = usize::try_from(step).unwrap_or(usize::MAX);
    Resolved {
        indices: indices.into_iter().step_by(step).collect(),
        labels: labels.into_iter().step_by(step).collect(),
    }
}

fn number(line: usize, field: &str, label: &Label) -> Result<f64, DeskriptorError> {
    match label {
        Label::Number(x) => Ok(*x),
        Label::Text(s) => Err(DeskriptorError::new(
            line,
            field,
            format!("{s:?}"),
            "expected a number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TimeEncoding;
    use serde_json::Map;

    pub(super) fn coord(name: &str, values: Vec<f64>) -> Coordinate {
        Coordinate {
            name: name.into(),
            values,
            integer: false,
            attributes: Map::new(),
            time: None,
        }
    }

    pub(super) fn latitude() -> Coordinate {
        coord(
            "latitude",
            (0..721).map(|i| 90.0 - 0.25 * i as f64).collect(),
        )
    }

    pub(super) fn longitude() -> Coordinate {
        coord("longitude", (0..1440).map(|i| 0.25 * i as f64).collect())
    }

    pub(super) fn time() -> Coordinate {
        let mut c = coord("time", (0..1_323_648).map(|i| i as f64).collect());
        c.integer = true;
        c.time = Some(TimeEncoding::parse("hours since 1900-01-01 00:00:00", None).unwrap());
        c
    }

    pub(super) fn sel(json: &str) -> Selector {
        let d =
            crate::deskriptor::Deskriptor::parse(1, &format!(r#"{{"variable":"v","x":{json}}}"#))
                .unwrap();
        d.selectors["x"].clone()
    }

    pub(super) fn list_of(labels: impl Iterator<Item = f64>) -> Selector {
        Selector::List(labels.map(Label::Number).collect())
    }

    #[test]
    fn empty_selection_is_an_error() {
        let e = resolve(1, Some(&sel(r#"{"start":47.1,"end":47.2}"#)), &latitude()).unwrap_err();
        assert!(e.message.contains("selects no points"), "{e}");
        assert_eq!(e.field, "latitude");
    }
}
