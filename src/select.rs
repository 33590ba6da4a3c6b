//! Resolves one selector against one coordinate: labels in, positions out.
//!
//! The semantics are xarray's `.sel` on the source, with three deliberate extensions:
//! a numeric range (latitude, level, ...) may be given in either order; longitudes may be given
//! in −180..180, in which case the points are relabelled to −180..180 and sorted, so a range may
//! cross 0°; and a partial time string (`"2023-01"`) as a range bound covers its whole period,
//! as in pandas. Invariant: a resolved selection is never empty and every position exists.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta};

use crate::deskriptor::{DeskriptorError, Label, Selector};
use crate::source::{Coordinate, TimeEncoding};

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

/// Finds exact labels among a coordinate's labels in O(log n) (or O(1)) each, so a list of
/// 10^6 labels does not cost 10^6 scans of the coordinate: by binary search when the labels
/// are strictly monotonic (every ERA5 coordinate is), else through a hash map. Equality is
/// `==` (so `-0` finds `0`), and the first of equal labels wins, as a linear search would.
struct LabelIndex<'a> {
    labels: &'a [f64],
    order: Order,
}

enum Order {
    Increasing,
    Decreasing,
    Other(HashMap<u64, usize>),
}

/// A float as a hash key: equal for `==`-equal non-NaN floats.
fn float_key(x: f64) -> u64 {
    (x + 0.0).to_bits()
}

impl<'a> LabelIndex<'a> {
    fn new(labels: &'a [f64]) -> Self {
        let order = if labels.windows(2).all(|w| w[0] < w[1]) {
            Order::Increasing
        } else if labels.windows(2).all(|w| w[0] > w[1]) {
            Order::Decreasing
        } else {
            let mut map = HashMap::with_capacity(labels.len());
            for (i, &v) in labels.iter().enumerate() {
                map.entry(float_key(v)).or_insert(i);
            }
            Order::Other(map)
        };
        LabelIndex { labels, order }
    }

    fn find(&self, x: f64) -> Option<usize> {
        let i = match &self.order {
            Order::Increasing => self.labels.partition_point(|&v| v < x),
            Order::Decreasing => self.labels.partition_point(|&v| v > x),
            Order::Other(map) => return map.get(&float_key(x)).copied(),
        };
        (self.labels.get(i) == Some(&x)).then_some(i)
    }
}

fn exact_position(
    line: usize,
    coord: &Coordinate,
    index: &LabelIndex,
    x: f64,
) -> Result<usize, DeskriptorError> {
    let labels = index.labels;
    index.find(x).ok_or_else(|| {
        let nearest = labels
            .iter()
            .copied()
            .min_by(|a, b| (a - x).abs().total_cmp(&(b - x).abs()))
            .unwrap_or(f64::NAN);
        DeskriptorError::new(
            line,
            coord.name.as_str(),
            x.to_string(),
            format!(
                "not a {} label of the source (nearest: {nearest}); use a range to select by interval",
                coord.name
            ),
        )
    })
}

/// Latitude, level and any other numeric coordinate: a range in either order keeps source order.
fn resolve_numeric(
    line: usize,
    selector: &Selector,
    coord: &Coordinate,
) -> Result<Resolved, DeskriptorError> {
    let name = coord.name.as_str();
    match selector {
        Selector::Range { start, end, step } => {
            let a = start
                .as_ref()
                .map(|l| number(line, &format!("{name}.start"), l))
                .transpose()?;
            let b = end
                .as_ref()
                .map(|l| number(line, &format!("{name}.end"), l))
                .transpose()?;
            // With one bound open, the open side follows the source's direction, as in
            // xarray: `start` is the first label taken, `end` the last.
            let increasing = coord.values.first() <= coord.values.last();
            let (lo, hi) = match (a, b) {
                (Some(a), Some(b)) => (a.min(b), a.max(b)),
                (Some(a), None) if increasing => (a, f64::INFINITY),
                (Some(a), None) => (f64::NEG_INFINITY, a),
                (None, Some(b)) if increasing => (f64::NEG_INFINITY, b),
                (None, Some(b)) => (b, f64::INFINITY),
                (None, None) => (f64::NEG_INFINITY, f64::INFINITY),
            };
            // Coordinates are strictly monotonic (checked when the source is opened): the
            // labels in [lo, hi] are one run, found by binary search.
            let v = &coord.values;
            let (a, b) = if increasing {
                (
                    v.partition_point(|&x| x < lo),
                    v.partition_point(|&x| x <= hi),
                )
            } else {
                (
                    v.partition_point(|&x| x > hi),
                    v.partition_point(|&x| x >= lo),
                )
            };
            let run = a..b.max(a);
            Ok(stepped(run.clone().collect(), v[run].to_vec(), *step))
        }
        Selector::One(l) => {
            let x = number(line, name, l)?;
            let i = exact_position(line, coord, &LabelIndex::new(&coord.values), x)?;
            Ok(Resolved {
                indices: vec![i],
                labels: vec![coord.values[i]],
            })
        }
        Selector::List(ls) => {
            let mut out = Resolved {
                indices: Vec::with_capacity(ls.len()),
                labels: Vec::with_capacity(ls.len()),
            };
            let index = LabelIndex::new(&coord.values);
            for l in ls {
                let x = number(line, name, l)?;
                let i = exact_position(line, coord, &index, x)?;
                out.indices.push(i);
                out.labels.push(coord.values[i]);
            }
            Ok(out)
        }
    }
}

/// Longitude: labels in 0..360 select as stored; any negative label switches the selection to
/// −180..180, where points are relabelled (`v - 360` for `v >= 180`) and sorted increasing.
fn resolve_longitude(
    line: usize,
    selector: &Selector,
    coord: &Coordinate,
) -> Result<Resolved, DeskriptorError> {
    let name = coord.name.as_str();
    let given: Vec<(String, f64)> = match selector {
        Selector::Range { start, end, .. } => {
            let mut v = Vec::new();
            if let Some(s) = start {
                v.push((
                    format!("{name}.start"),
                    number(line, &format!("{name}.start"), s)?,
                ));
            }
            if let Some(e) = end {
                v.push((
                    format!("{name}.end"),
                    number(line, &format!("{name}.end"), e)?,
                ));
            }
            v
        }
        Selector::One(l) => vec![(name.to_string(), number(line, name, l)?)],
        Selector::List(ls) => ls
            .iter()
            .map(|l| Ok((name.to_string(), number(line, name, l)?)))
            .collect::<Result<_, DeskriptorError>>()?,
    };
    let signed = given.iter().any(|(_, x)| *x < 0.0);
    for (field, x) in &given {
        let ok = if signed {
            (-180.0..=180.0).contains(x)
        } else {
            (0.0..=360.0).contains(x)
        };
        if !ok {
            return Err(DeskriptorError::new(
                line,
                field.as_str(),
                x.to_string(),
                if signed {
                    "with negative longitudes, every longitude must lie in -180..180"
                } else {
                    "longitudes must lie in -180..180 or 0..360"
                },
            ));
        }
    }
    let points = Points::of(&coord.values, signed);
    match selector {
        Selector::Range { start, end, step } => {
            let lo = start
                .as_ref()
                .map_or(Ok(f64::NEG_INFINITY), |l| number(line, name, l))?;
            let hi = end
                .as_ref()
                .map_or(Ok(f64::INFINITY), |l| number(line, name, l))?;
            if lo > hi {
                return Err(DeskriptorError::new(
                    line,
                    name,
                    format!("{lo}..{hi}"),
                    "start is east of end; longitude ranges run west to east. To cross 0°, \
                     give -180..180 values, e.g. {\"start\": -3, \"end\": 3}",
                ));
            }
            let (a, b) = (points.first_at_least(lo), points.first_above(hi));
            let (indices, labels): (Vec<usize>, Vec<f64>) = (a..b.max(a))
                .map(|p| points.get(p))
                .map(|(v, i)| (i, v))
                .unzip();
            Ok(stepped(indices, labels, *step))
        }
        Selector::One(_) | Selector::List(_) => {
            let mut out = Resolved {
                indices: Vec::with_capacity(given.len()),
                labels: Vec::with_capacity(given.len()),
            };
            for (_, x) in &given {
                let p = points.first_at_least(*x);
                match (p < points.len()).then(|| points.get(p)) {
                    Some((v, i)) if v == *x => {
                        out.indices.push(i);
                        out.labels.push(v);
                    }
                    _ => {
                        let nearest = (p.saturating_sub(1)..(p + 1).min(points.len()))
                            .map(|q| points.get(q).0)
                            .min_by(|a, b| (a - x).abs().total_cmp(&(b - x).abs()))
                            .unwrap_or(f64::NAN);
                        return Err(DeskriptorError::new(
                            line,
                            name,
                            x.to_string(),
                            format!(
                                "not a {name} label of the source (nearest: {nearest}); use a \
                                 range to select by interval"
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// A source's longitudes in the order a selection gives them, increasing by label, as
/// `(label, source index)`; relabelled `v - 360` for `v >= 180` when the selection is in
/// −180..180.
enum Points<'a> {
    /// A source increasing within 0..360 (ERA5): its values from `split` on (relabelled when
    /// `shift` is −360), then those before `split`; looked up in place, nothing copied, so
    /// planning a million deskriptors does not copy and sort the axis a million times.
    Runs {
        values: &'a [f64],
        split: usize,
        shift: f64,
    },
    /// Any other source: every point, sorted.
    Sorted(Vec<(f64, usize)>),
}

impl<'a> Points<'a> {
    fn of(values: &'a [f64], signed: bool) -> Self {
        // Coordinates are strictly monotonic (checked when the source is opened).
        let increasing = values.first() < values.last() || values.len() < 2;
        let in_range =
            values.first().is_some_and(|&v| v >= 0.0) && values.last().is_some_and(|&v| v < 360.0);
        if increasing && in_range {
            let split = if signed {
                values.partition_point(|&v| v < 180.0)
            } else {
                values.len()
            };
            return Points::Runs {
                values,
                split,
                shift: -360.0,
            };
        }
        let mut points: Vec<(f64, usize)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (if signed && v >= 180.0 { v - 360.0 } else { v }, i))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Points::Sorted(points)
    }

    fn len(&self) -> usize {
        match self {
            Points::Runs { values, .. } => values.len(),
            Points::Sorted(p) => p.len(),
        }
    }

    /// The point at output position `p`.
    fn get(&self, p: usize) -> (f64, usize) {
        match self {
            Points::Runs {
                values,
                split,
                shift,
            } => {
                let moved = values.len() - split;
                if p < moved {
                    (values[split + p] + shift, split + p)
                } else {
                    (values[p - moved], p - moved)
                }
            }
            Points::Sorted(points) => points[p],
        }
    }

    /// The first output position whose label passes `pred`'s threshold (labels increase).
    fn partition(&self, below: impl Fn(f64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(self.get(mid).0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn first_at_least(&self, x: f64) -> usize {
        self.partition(|v| v < x)
    }

    fn first_above(&self, x: f64) -> usize {
        self.partition(|v| v <= x)
    }
}

/// How precisely a time string was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Resolution {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDTHH[:MM[:SS]]` (a space may replace `T`,
/// a trailing `Z` is allowed) into the period it names: `[start, end)`.
fn parse_period(s: &str) -> Option<(NaiveDateTime, NaiveDateTime, Resolution)> {
    let t = s.trim().trim_end_matches('Z');
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let num = |p: &str, len: usize| -> Option<u32> {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let year = num(parts.first()?, 4)? as i32;
    let (month, day, mut res) = match parts.len() {
        1 => (1, 1, Resolution::Year),
        2 => (num(parts[1], 2)?, 1, Resolution::Month),
        3 => (num(parts[1], 2)?, num(parts[2], 2)?, Resolution::Day),
        _ => return None,
    };
    let mut hms = [0u32; 3];
    if let Some(time) = time {
        if res != Resolution::Day {
            return None;
        }
        let tparts: Vec<&str> = time.split(':').collect();
        if tparts.is_empty() || tparts.len() > 3 {
            return None;
        }
        for (k, p) in tparts.iter().enumerate() {
            hms[k] = num(p, 2)?;
        }
        res = [Resolution::Hour, Resolution::Minute, Resolution::Second][tparts.len() - 1];
    }
    let start = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hms[0], hms[1], hms[2])?;
    let end = match res {
        Resolution::Year => NaiveDate::from_ymd_opt(year + 1, 1, 1)?.and_hms_opt(0, 0, 0)?,
        Resolution::Month => {
            let (y, m) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?
        }
        Resolution::Day => start + TimeDelta::days(1),
        Resolution::Hour => start + TimeDelta::hours(1),
        Resolution::Minute => start + TimeDelta::minutes(1),
        Resolution::Second => start + TimeDelta::seconds(1),
    };
    debug_assert!(start.year() == year);
    Some((start, end, res))
}

const TIME_FORMS: &str =
    "expected an ISO 8601 date-time such as \"2023-01-01T11:00\", \"2023-01-01\" or \"2023-01\"";

fn period(
    line: usize,
    field: &str,
    label: &Label,
) -> Result<(NaiveDateTime, NaiveDateTime, Resolution), DeskriptorError> {
    match label {
        Label::Text(s) => parse_period(s)
            .ok_or_else(|| DeskriptorError::new(line, field, format!("{s:?}"), TIME_FORMS)),
        Label::Number(x) => Err(DeskriptorError::new(line, field, x.to_string(), TIME_FORMS)),
    }
}

/// Resolves a time selector on the time axis `coord` (encoded as `enc`): ranges and periods
/// take every hour they cover, single instants and lists must be labels of the axis.
fn resolve_time(
    line: usize,
    selector: &Selector,
    coord: &Coordinate,
    enc: &TimeEncoding,
) -> Result<Resolved, DeskriptorError> {
    let axis = TimeAxis { line, coord, enc };
    match selector {
        Selector::Range { start, end, step } => {
            let r = axis.range(start.as_ref(), end.as_ref(), selector)?;
            Ok(stepped(r.indices, r.labels, *step))
        }
        Selector::One(l) => axis.one(l),
        Selector::List(ls) => {
            let mut out = Resolved {
                indices: Vec::with_capacity(ls.len()),
                labels: Vec::with_capacity(ls.len()),
            };
            for l in ls {
                let i = axis.exact("time", l)?;
                out.indices.push(i);
                out.labels.push(coord.values[i]);
            }
            Ok(out)
        }
    }
}

/// A time axis (increasing, in units of `enc` since its epoch) and the line asking.
struct TimeAxis<'a> {
    line: usize,
    coord: &'a Coordinate,
    enc: &'a TimeEncoding,
}

impl TimeAxis<'_> {
    /// Seconds from the epoch to `t`.
    fn offset(&self, t: NaiveDateTime) -> i64 {
        (t - self.enc.epoch).num_seconds()
    }

    /// The first and last stored values.
    fn bounds(&self) -> (f64, f64) {
        let v = &self.coord.values;
        (v[0], v[v.len() - 1])
    }

    fn outside(&self, field: &str, value: String) -> DeskriptorError {
        let why = format!("outside the source, which has {}", describe(self.coord));
        DeskriptorError::new(self.line, field, value, why)
    }

    /// The positions and values in `[lo, hi]` (stored units).
    fn within(&self, lo: f64, hi: f64) -> Resolved {
        let v = &self.coord.values;
        let a = v.partition_point(|&x| x < lo);
        let b = v.partition_point(|&x| x <= hi);
        Resolved {
            indices: (a..b).collect(),
            labels: v[a..b.max(a)].to_vec(),
        }
    }

    /// The position of the instant `l`, which must be a label of the axis.
    fn exact(&self, field: &str, l: &Label) -> Result<usize, DeskriptorError> {
        let unit = self.enc.unit_seconds;
        let (t, _, _) = period(self.line, field, l)?;
        let secs = self.offset(t);
        let not_a_label = |why: String| DeskriptorError::new(self.line, field, l.to_string(), why);
        if secs % unit != 0 {
            return Err(not_a_label(format!(
                "not a time label of the source (its step is {unit} s); use a range"
            )));
        }
        let v = (secs / unit) as f64;
        let (first, last) = self.bounds();
        if v < first || v > last {
            return Err(self.outside(field, l.to_string()));
        }
        self.coord
            .values
            .binary_search_by(|x| x.total_cmp(&v))
            .map_err(|_| not_a_label("not a time label of the source; use a range".into()))
    }

    /// Every label from the first instant of `start`'s period to the last of `end`'s
    /// (either open).
    fn range(
        &self,
        start: Option<&Label>,
        end: Option<&Label>,
        selector: &Selector,
    ) -> Result<Resolved, DeskriptorError> {
        let unit = self.enc.unit_seconds;
        let lo = match start {
            Some(l) => {
                let (s, _, _) = period(self.line, "time.start", l)?;
                let secs = self.offset(s);
                // Rounded up to the next label when between two.
                secs.div_euclid(unit) as f64 + if secs.rem_euclid(unit) == 0 { 0.0 } else { 1.0 }
            }
            None => f64::NEG_INFINITY,
        };
        let hi = match end {
            Some(l) => {
                let (_, e, _) = period(self.line, "time.end", l)?;
                (self.offset(e) - 1).div_euclid(unit) as f64
            }
            None => f64::INFINITY,
        };
        if lo > hi {
            let text = selector_text(selector);
            return Err(DeskriptorError::new(
                self.line,
                "time",
                text,
                "start is after end",
            ));
        }
        let (first, last) = self.bounds();
        if hi < first || lo > last {
            return Err(self.outside("time", selector_text(selector)));
        }
        Ok(self.within(lo, hi))
    }

    /// A single time: a day, month or year takes every label it covers; an hour (or finer)
    /// must be a label.
    fn one(&self, l: &Label) -> Result<Resolved, DeskriptorError> {
        let (s, e, res) = period(self.line, "time", l)?;
        if res > Resolution::Day {
            let i = self.exact("time", l)?;
            return Ok(Resolved {
                indices: vec![i],
                labels: vec![self.coord.values[i]],
            });
        }
        let unit = self.enc.unit_seconds;
        let lo = self.offset(s).div_euclid(unit) as f64;
        let hi = (self.offset(e) - 1).div_euclid(unit) as f64;
        let (first, last) = self.bounds();
        if hi < first || lo > last {
            return Err(self.outside("time", l.to_string()));
        }
        Ok(self.within(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn coord(name: &str, values: Vec<f64>) -> Coordinate {
        Coordinate {
            name: name.into(),
            values,
            integer: false,
            attributes: Map::new(),
            time: None,
        }
    }

    fn latitude() -> Coordinate {
        coord(
            "latitude",
            (0..721).map(|i| 90.0 - 0.25 * i as f64).collect(),
        )
    }

    fn longitude() -> Coordinate {
        coord("longitude", (0..1440).map(|i| 0.25 * i as f64).collect())
    }

    fn time() -> Coordinate {
        let mut c = coord("time", (0..1_323_648).map(|i| i as f64).collect());
        c.integer = true;
        c.time = Some(TimeEncoding::parse("hours since 1900-01-01 00:00:00", None).unwrap());
        c
    }

    fn sel(json: &str) -> Selector {
        let d =
            crate::deskriptor::Deskriptor::parse(1, &format!(r#"{{"variable":"v","x":{json}}}"#))
                .unwrap();
        d.selectors["x"].clone()
    }

    #[test]
    fn latitude_range_in_either_order_keeps_source_order() {
        let a = resolve(1, Some(&sel(r#"{"start":48,"end":47}"#)), &latitude()).unwrap();
        let b = resolve(1, Some(&sel(r#"{"start":47,"end":48}"#)), &latitude()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.labels, vec![48.0, 47.75, 47.5, 47.25, 47.0]);
        assert_eq!(a.indices, vec![168, 169, 170, 171, 172]);
    }

    #[test]
    fn step_is_positional_after_selection() {
        let r = resolve(
            1,
            Some(&sel(r#"{"start":48,"end":47,"step":2}"#)),
            &latitude(),
        )
        .unwrap();
        assert_eq!(r.labels, vec![48.0, 47.5, 47.0]);
    }

    #[test]
    fn longitude_crossing_zero_is_relabelled_and_increasing() {
        let r = resolve(1, Some(&sel(r#"{"start":-3,"end":3}"#)), &longitude()).unwrap();
        assert_eq!(r.labels.len(), 25);
        assert_eq!(r.labels[0], -3.0);
        assert_eq!(r.labels[11], -0.25);
        assert_eq!(r.labels[12], 0.0);
        assert_eq!(r.labels[24], 3.0);
        assert_eq!(r.indices[0], 1428); // 357.0
        assert_eq!(r.indices[11], 1439); // 359.75
        assert_eq!(r.indices[12], 0);
        assert!(r.labels.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn longitude_in_0_360_selects_as_stored() {
        let r = resolve(1, Some(&sel(r#"{"start":8,"end":9}"#)), &longitude()).unwrap();
        assert_eq!(r.indices, vec![32, 33, 34, 35, 36]);
        assert_eq!(r.labels, vec![8.0, 8.25, 8.5, 8.75, 9.0]);
        let r = resolve(1, Some(&sel("[-0.25, 359.5]")), &longitude());
        assert!(
            r.is_err(),
            "mixing conventions in one list: 359.5 is outside -180..180"
        );
        let r = resolve(1, Some(&sel("[-0.25, 10]")), &longitude()).unwrap();
        assert_eq!(r.indices, vec![1439, 40]);
        assert_eq!(r.labels, vec![-0.25, 10.0]);
    }

    #[test]
    fn reversed_longitude_range_explains_how_to_cross_zero() {
        let e = resolve(1, Some(&sel(r#"{"start":350,"end":10}"#)), &longitude()).unwrap_err();
        assert!(e.message.contains("-180..180"), "{e}");
        let e = resolve(1, Some(&sel(r#"{"start":-200,"end":10}"#)), &longitude()).unwrap_err();
        assert_eq!(e.field, "longitude.start");
    }

    #[test]
    fn exact_labels_must_exist() {
        let e = resolve(1, Some(&sel("47.1")), &latitude()).unwrap_err();
        assert!(e.message.contains("nearest: 47"), "{e}");
        let r = resolve(1, Some(&sel("[47, 48]")), &latitude()).unwrap();
        assert_eq!(r.labels, vec![47.0, 48.0], "list order is kept");
    }

    #[test]
    fn empty_selection_is_an_error() {
        let e = resolve(1, Some(&sel(r#"{"start":47.1,"end":47.2}"#)), &latitude()).unwrap_err();
        assert!(e.message.contains("selects no points"), "{e}");
        assert_eq!(e.field, "latitude");
    }

    #[test]
    fn prototype_time_range_selects_one_hour() {
        let r = resolve(
            1,
            Some(&sel(
                r#"{"start":"2023-01-01T11:00","end":"2023-01-01T11:59"}"#,
            )),
            &time(),
        )
        .unwrap();
        // 2023-01-01T11:00 is 1_078_211 hours after 1900-01-01.
        assert_eq!(r.indices, vec![1_078_211]);
    }

    #[test]
    fn partial_time_strings_cover_their_period() {
        let day = resolve(1, Some(&sel(r#""2023-01-01""#)), &time()).unwrap();
        assert_eq!(day.indices.len(), 24);
        let month = resolve(
            1,
            Some(&sel(r#"{"start":"2023-02","end":"2023-02"}"#)),
            &time(),
        )
        .unwrap();
        assert_eq!(month.indices.len(), 28 * 24);
        let step = resolve(
            1,
            Some(&sel(
                r#"{"start":"2023-01-01","end":"2023-01-01","step":6}"#,
            )),
            &time(),
        )
        .unwrap();
        assert_eq!(step.indices.len(), 4);
        assert_eq!(step.indices[1] - step.indices[0], 6);
    }

    #[test]
    fn time_errors() {
        let e = resolve(
            1,
            Some(&sel(r#"{"start":"1800-01-01","end":"1801-01-01"}"#)),
            &time(),
        )
        .unwrap_err();
        assert!(e.message.contains("outside the source"), "{e}");
        let e = resolve(1, Some(&sel(r#""2023-01-01T11:30""#)), &time()).unwrap_err();
        assert!(e.message.contains("not a time label"), "{e}");
        let e = resolve(1, Some(&sel(r#""yesterday""#)), &time()).unwrap_err();
        assert!(e.message.contains("ISO 8601"), "{e}");
        let e = resolve(
            1,
            Some(&sel(r#"{"start":"2023-01-02","end":"2023-01-01"}"#)),
            &time(),
        )
        .unwrap_err();
        assert!(e.message.contains("after end"), "{e}");
        let e = resolve(1, Some(&sel("5")), &time()).unwrap_err();
        assert!(e.message.contains("ISO 8601"), "{e}");
        let ok = resolve(
            1,
            Some(&sel(r#"["2023-01-01T11:00", "2023-01-01T10:00"]"#)),
            &time(),
        )
        .unwrap();
        assert_eq!(ok.indices, vec![1_078_211, 1_078_210]);
    }

    fn list_of(labels: impl Iterator<Item = f64>) -> Selector {
        Selector::List(labels.map(Label::Number).collect())
    }

    #[test]
    fn a_million_label_list_resolves_in_n_log_n() {
        // Found by a scan of the coordinate per label, this took minutes (10^12 comparisons).
        let n = 1_000_000;
        let increasing = coord("level", (0..n).map(|i| i as f64 * 0.25).collect());
        let reversed = list_of((0..n).rev().map(|i| i as f64 * 0.25));
        let r = resolve(1, Some(&reversed), &increasing).unwrap();
        assert_eq!(r.indices.len(), n);
        assert_eq!(r.indices[0], n - 1, "the list's order is kept");
        assert!(r.indices.windows(2).all(|w| w[0] == w[1] + 1));
        assert_eq!(r.labels[n - 1], 0.0);
        // Latitude-like: decreasing.
        let decreasing = coord(
            "latitude",
            (0..n).map(|i| (n - 1 - i) as f64 * 0.25).collect(),
        );
        let r = resolve(1, Some(&reversed), &decreasing).unwrap();
        assert_eq!(r.indices, (0..n).collect::<Vec<_>>());
        let e = resolve(1, Some(&list_of([0.0, 0.1].into_iter())), &decreasing).unwrap_err();
        assert!(e.message.contains("nearest: 0"), "{e}");
        // Longitude: 1440 points, a list of all of them in -180..180, relabelled.
        let all = list_of((0..1440).map(|i| -180.0 + 0.25 * i as f64));
        let r = resolve(1, Some(&all), &longitude()).unwrap();
        assert_eq!(r.indices[0], 720, "-180 is 180");
        assert_eq!(r.indices[720], 0, "0 is 0");
        assert_eq!(r.labels[1439], 179.75);
    }

    #[test]
    fn exact_labels_are_found_in_any_coordinate_order() {
        // Increasing, decreasing, and unordered (hash map) coordinates; -0 finds 0; a missing
        // label names the nearest.
        for values in [
            vec![-1.0, 0.0, 2.5, 7.0],
            vec![7.0, 2.5, 0.0, -1.0],
            vec![2.5, -1.0, 7.0, 0.0, 2.5],
        ] {
            let c = coord("x", values.clone());
            let r = resolve(1, Some(&sel("[7, -0.0, 2.5, -1]")), &c).unwrap();
            let at = |x: f64| values.iter().position(|&v| v == x).unwrap();
            assert_eq!(r.indices, vec![at(7.0), at(0.0), at(2.5), at(-1.0)]);
            assert_eq!(r.labels, vec![7.0, 0.0, 2.5, -1.0]);
            let one = resolve(1, Some(&sel("2.5")), &c).unwrap();
            assert_eq!(one.indices, vec![at(2.5)], "the first of equal labels");
            let e = resolve(1, Some(&sel("[7, 2.4]")), &c).unwrap_err();
            assert!(e.message.contains("nearest: 2.5"), "{e}");
            assert_eq!(e.value, "2.4");
        }
    }
}
