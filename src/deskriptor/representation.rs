//! The syntax of a file's representation: `resample` (time statistics) and `points` (series
//! at stations), and their part of the canonical form.
//!
//! Input: the JSON values of the two keys. Output: a [`Resample`] and a list of [`Point`]s,
//! or an error naming the field (`resample.how`, `points[2].latitude`), the value and what is
//! allowed. Whether the points fall on the source's grid is the plan's question.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::names::escape;
use super::{number_json, DeskriptorError, Period, Point, Resample, Statistic};

/// The most stations one deskriptor may list.
pub const MAX_POINTS: usize = 100_000;

/// The longest station name, in bytes.
const MAX_POINT_NAME: usize = 255;

/// The longest period of hours (a leap year).
const MAX_PERIOD_HOURS: u32 = 366 * 24;

const PERIODS_ALLOWED: &str = "a whole number of hours or days (`6h`, `1D`, `7D`) or `1M` \
                               (calendar months)";
const HOW_ALLOWED: &str = "mean, min, max, sum";

impl Period {
    /// Parses `6h`, `24H`, `1D`, `7d`, `1M` (also `M`, `MS`, `1MS`: calendar months).
    fn parse(text: &str) -> Option<Period> {
        let t = text.trim();
        if matches!(t, "M" | "1M" | "MS" | "1MS") {
            return Some(Period::Month);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u32 = if digits.is_empty() {
            1
        } else {
            digits.parse().ok()?
        };
        let hours = match unit {
            "h" | "H" => n,
            "D" | "d" => n.checked_mul(24)?,
            _ => return None,
        };
        (1..=MAX_PERIOD_HOURS)
            .contains(&hours)
            .then_some(Period::Hours(hours))
    }

    /// The canonical spelling: `<n>D` for whole days, `<n>h` otherwise, `1M` for months.
    pub fn text(self) -> String {
        match self {
            Period::Hours(h) if h % 24 == 0 => format!("{}D", h / 24),
            Period::Hours(h) => format!("{h}h"),
            Period::Month => "1M".into(),
        }
    }
}

impl Statistic {
    /// The name used in deskriptors and in `cell_methods`.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Mean => "mean",
            Statistic::Min => "minimum",
            Statistic::Max => "maximum",
            Statistic::Sum => "sum",
        }
    }

    /// The short name of the deskriptor (`min`, not `minimum`).
    pub fn key(self) -> &'static str {
        match self {
            Statistic::Mean => "mean",
            Statistic::Min => "min",
            Statistic::Max => "max",
            Statistic::Sum => "sum",
        }
    }
}

/// Parses `resample`: `{"time": "1D", "how": "mean"}` (`how` defaults to `mean`).
pub(crate) fn parse_resample(line: usize, value: &Value) -> Result<Resample, DeskriptorError> {
    let Value::Object(m) = value else {
        return Err(DeskriptorError::new(
            line,
            "resample",
            value.to_string(),
            "expected an object like {\"time\": \"1D\", \"how\": \"mean\"}",
        ));
    };
    let mut period = None;
    let mut how = Statistic::Mean;
    for (k, v) in m {
        let field = format!("resample.{k}");
        match k.as_str() {
            "time" => {
                let p = v.as_str().and_then(Period::parse).ok_or_else(|| {
                    DeskriptorError::new(
                        line,
                        &field,
                        v.to_string(),
                        format!("not a period; allowed: {PERIODS_ALLOWED}, at most 366 days"),
                    )
                })?;
                period = Some(p);
            }
            "how" => {
                how = match v.as_str() {
                    Some("mean") => Statistic::Mean,
                    Some("min") => Statistic::Min,
                    Some("max") => Statistic::Max,
                    Some("sum") => Statistic::Sum,
                    _ => {
                        return Err(DeskriptorError::new(
                            line,
                            &field,
                            v.to_string(),
                            format!("unknown statistic; allowed: {HOW_ALLOWED}"),
                        ))
                    }
                }
            }
            _ => {
                return Err(DeskriptorError::new(
                    line,
                    &field,
                    v.to_string(),
                    "unknown field; `resample` has `time` (the period) and `how` (the \
                     statistic); only time can be resampled",
                ))
            }
        }
    }
    let Some(period) = period else {
        return Err(DeskriptorError::new(
            line,
            "resample.time",
            "",
            format!("missing; give the period: {PERIODS_ALLOWED}"),
        ));
    };
    Ok(Resample { period, how })
}

/// Parses `points`: a non-empty list of `{"name": ..., "latitude": ..., "longitude": ...}`,
/// names unique.
pub(crate) fn parse_points(line: usize, value: &Value) -> Result<Vec<Point>, DeskriptorError> {
    let example = "expected a list of stations like [{\"name\": \"zurich\", \"latitude\": \
                   47.37, \"longitude\": 8.54}]";
    let Value::Array(items) = value else {
        return Err(DeskriptorError::new(
            line,
            "points",
            value.to_string(),
            example,
        ));
    };
    if items.is_empty() {
        return Err(DeskriptorError::new(
            line,
            "points",
            "[]",
            "the list is empty; give at least one station",
        ));
    }
    if items.len() > MAX_POINTS {
        return Err(DeskriptorError::new(
            line,
            "points",
            format!("{} stations", items.len()),
            format!("at most {MAX_POINTS} stations per deskriptor; split the list"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(DeskriptorError::new(
                line,
                format!("points[{i}]"),
                item.to_string(),
                example,
            ));
        };
        let point = parse_point(line, i, m)?;
        if !seen.insert(
            m.get("name")
                .and_then(Value::as_str)
                .expect("checked by parse_point"),
        ) {
            return Err(DeskriptorError::new(
                line,
                format!("points[{i}].name"),
                format!("\"{}\"", escape(&point.name)),
                "listed twice; give each station its own name",
            ));
        }
        out.push(point);
    }
    Ok(out)
}

fn parse_point(line: usize, i: usize, m: &Map<String, Value>) -> Result<Point, DeskriptorError> {
    let field = |k: &str| format!("points[{i}].{k}");
    for (k, v) in m {
        if !matches!(k.as_str(), "name" | "latitude" | "longitude") {
            return Err(DeskriptorError::new(
                line,
                field(k),
                v.to_string(),
                "unknown field; a station has `name`, `latitude` and `longitude`",
            ));
        }
    }
    let name = match m.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(DeskriptorError::new(
                line,
                field("name"),
                v.to_string(),
                "expected a string",
            ))
        }
        None => {
            return Err(DeskriptorError::new(
                line,
                field("name"),
                "",
                "missing; every station has a name",
            ))
        }
    };
    if name.is_empty() || name.len() > MAX_POINT_NAME || name.chars().any(char::is_control) {
        return Err(DeskriptorError::new(
            line,
            field("name"),
            format!("\"{}\"", escape(&name)),
            format!("a station name is 1 to {MAX_POINT_NAME} bytes without control characters"),
        ));
    }
    let number = |k: &str, range: std::ops::RangeInclusive<f64>, allowed: &str| match m.get(k) {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() && range.contains(&x) => Ok(x),
            _ => Err(DeskriptorError::new(
                line,
                field(k),
                n.to_string(),
                format!("out of range; allowed: {allowed}"),
            )),
        },
        Some(v) => Err(DeskriptorError::new(
            line,
            field(k),
            v.to_string(),
            format!("expected a number in {allowed}"),
        )),
        None => Err(DeskriptorError::new(
            line,
            field(k),
            "",
            format!("missing; give a number in {allowed}"),
        )),
    };
    let latitude = number("latitude", -90.0..=90.0, "-90..90")?;
    let longitude = number("longitude", -180.0..=360.0, "-180..180 or 0..360")?;
    Ok(Point {
        name,
        latitude,
        longitude,
    })
}

/// The `resample` member of the canonical form: `{"how":"mean","time":"1D"}`.
pub(crate) fn canonical_resample(r: &Resample) -> String {
    let mut m = Map::new();
    m.insert("how".into(), Value::from(r.how.key()));
    m.insert("time".into(), Value::from(r.period.text()));
    Value::Object(m).to_string()
}

/// The `points` member of the canonical form: the stations in their order, each with its keys
/// sorted and integral numbers without a fraction.
pub(crate) fn canonical_points(points: &[Point]) -> String {
    let list: Vec<Value> = points
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("latitude".into(), number_json(p.latitude));
            m.insert("longitude".into(), number_json(p.longitude));
            m.insert("name".into(), Value::from(p.name.as_str()));
            Value::Object(m)
        })
        .collect();
    Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deskriptor::tests::err;
    use crate::deskriptor::Deskriptor;

    const BOX: &str = r#""time": {"start": "2023-01-01", "end": "2023-01-02"}, "variable": "t""#;

    #[test]
    fn periods_are_parsed_as_xarray_spells_them() {
        for (text, period) in [
            ("6h", Period::Hours(6)),
            ("6H", Period::Hours(6)),
            ("h", Period::Hours(1)),
            ("1D", Period::Hours(24)),
            ("24h", Period::Hours(24)),
            ("7d", Period::Hours(168)),
            ("1M", Period::Month),
            ("MS", Period::Month),
        ] {
            assert_eq!(Period::parse(text), Some(period), "{text}");
        }
        for bad in [
            "0h",
            "2M",
            "1Y",
            "1.5D",
            "-1D",
            "367D",
            "D1",
            "",
            "99999999999h",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
        assert_eq!(Period::Hours(24).text(), "1D");
        assert_eq!(Period::Hours(36).text(), "36h");
        assert_eq!(Period::Month.text(), "1M");
    }

    #[test]
    fn resample_errors_name_the_field_the_value_and_what_is_allowed() {
        let e = err(&format!(r#"{{{BOX}, "resample": {{"time": "2W"}}}}"#));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("resample.time", "\"2W\"")
        );
        assert!(e.message.contains("`1M` (calendar months)"), "{e}");
        let e = err(&format!(
            r#"{{{BOX}, "resample": {{"time": "1D", "how": "median"}}}}"#
        ));
        assert_eq!(e.field, "resample.how");
        assert!(e.message.contains("mean, min, max, sum"), "{e}");
        let e = err(&format!(r#"{{{BOX}, "resample": {{"how": "max"}}}}"#));
        assert_eq!(e.field, "resample.time");
        assert!(e.message.starts_with("missing"), "{e}");
        let e = err(&format!(r#"{{{BOX}, "resample": {{"level": "2"}}}}"#));
        assert_eq!(e.field, "resample.level");
        let e = err(&format!(r#"{{{BOX}, "resample": "1D"}}"#));
        assert_eq!(e.field, "resample");
    }

    #[test]
    fn point_errors_name_the_station_and_the_field() {
        let e = err(&format!(
            r#"{{{BOX}, "points": [{{"name": "a", "latitude": 1, "longitude": 2}}, {{"name": "b", "latitude": 91, "longitude": 2}}]}}"#
        ));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("points[1].latitude", "91")
        );
        assert!(e.message.contains("-90..90"), "{e}");
        let e = err(&format!(
            r#"{{{BOX}, "points": [{{"name": "a", "latitude": 1, "longitude": -181}}]}}"#
        ));
        assert_eq!(e.field, "points[0].longitude");
        let e = err(&format!(
            r#"{{{BOX}, "points": [{{"name": "a", "latitude": 1, "longitude": 2}}, {{"name": "a", "latitude": 3, "longitude": 4}}]}}"#
        ));
        assert_eq!(e.field, "points[1].name");
        assert!(e.message.contains("twice"), "{e}");
        let e = err(&format!(
            r#"{{{BOX}, "points": [{{"latitude": 1, "longitude": 2}}]}}"#
        ));
        assert_eq!(e.field, "points[0].name");
        let e = err(&format!(
            r#"{{{BOX}, "points": [{{"name": "a", "lat": 1, "longitude": 2}}]}}"#
        ));
        assert_eq!(e.field, "points[0].lat");
        let e = err(&format!(r#"{{{BOX}, "points": []}}"#));
        assert!(e.message.contains("empty"), "{e}");
        let e = err(&format!(
            r#"{{{BOX}, "points": [{{"name": "a", "latitude": 1, "longitude": 2}}], "latitude": 3}}"#
        ));
        assert_eq!(e.field, "points");
        assert!(e.message.contains("in place of"), "{e}");
    }

    #[test]
    fn the_representation_enters_the_canonical_form() {
        let a = Deskriptor::parse(
            1,
            &format!(
                r#"{{{BOX}, "resample": {{"time": "24h"}}, "points": [{{"longitude": 8.0, "name": "z", "latitude": 47.37}}]}}"#
            ),
        )
        .unwrap();
        assert_eq!(
            a.canonical_json(),
            r#"{"points":[{"latitude":47.37,"longitude":8,"name":"z"}],"resample":{"how":"mean","time":"1D"},"time":{"end":"2023-01-02","start":"2023-01-01"},"variable":["t"]}"#
        );
        let b = Deskriptor::parse(
            1,
            &format!(r#"{{{BOX}, "resample": {{"time": "1D", "how": "max"}}}}"#),
        )
        .unwrap();
        let plain = Deskriptor::parse(1, &format!("{{{BOX}}}")).unwrap();
        assert_ne!(b.canonical_json(), a.canonical_json());
        assert_ne!(b.canonical_json(), plain.canonical_json());
    }
}
