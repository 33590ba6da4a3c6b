//! The time axis: ISO 8601 strings (whole or partial, `"2023-01"`) resolved against a coordinate
//! stored as units since an epoch.
//!
//! Input: a selector of text labels and the time coordinate with its encoding. Output:
//! positions and stored values. Invariant: a range or a partial time takes every label of the
//! period it names (as in pandas); a single instant must be a label of the axis.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta};

use super::{describe, selector_text, stepped, Resolved};
use crate::deskriptor::{DeskriptorError, Label, Selector};
use crate::source::{Coordinate, TimeEncoding};

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
pub(super) fn resolve_time(
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
    use crate::select::resolve;
    use crate::select::tests::{sel, time};

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
}
