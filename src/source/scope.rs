//! What a source holds, apart from how it is read: its URL, root attributes, coordinates (in
//! memory), each variable's dimensions, shape, chunks and attributes, and the store's version.
//! Planning, selecting and the catalog need only this; tests build one by hand
//! ([`Scope::new`]). The reader — the store, the opened arrays, the counters — is
//! [`super::Source`]'s.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use serde_json::{Map, Value};

use super::version::{Freshness, StoreVersion};

/// Why a time coordinate's `units` and `calendar` are not ones this program reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeUnitsError {
    /// The units are not `<unit> since <date>` (the units as stored).
    #[error("time units {0:?} are not `<unit> since <date>`")]
    NotSince(String),
    /// The unit is not seconds, minutes, hours or days.
    #[error("unsupported time unit {0:?}")]
    Unit(String),
    /// The reference date does not parse (the units as stored).
    #[error("cannot parse the reference date in {0:?}")]
    ReferenceDate(String),
    /// The calendar is not the proleptic Gregorian one.
    #[error("unsupported calendar {0:?}")]
    Calendar(String),
}

/// How a time coordinate's integers map to instants (CF `units` + `calendar`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeEncoding {
    /// The reference instant (`... since <epoch>`), UTC.
    pub epoch: NaiveDateTime,
    /// Seconds per unit (3600 for `hours since`).
    pub unit_seconds: i64,
    /// The `units` attribute as stored.
    pub units: String,
    /// The `calendar` attribute as stored (`proleptic_gregorian` when absent).
    pub calendar: String,
}

impl TimeEncoding {
    /// Parses CF units like `hours since 1900-01-01 00:00:00` or `hours since 1900-01-01`.
    pub fn parse(units: &str, calendar: Option<&str>) -> Result<Self, TimeUnitsError> {
        let (unit, since) = units
            .split_once(" since ")
            .ok_or_else(|| TimeUnitsError::NotSince(units.to_string()))?;
        let unit_seconds = match unit.trim() {
            "seconds" | "second" | "s" => 1,
            "minutes" | "minute" | "min" => 60,
            "hours" | "hour" | "h" => 3600,
            "days" | "day" | "d" => 86400,
            other => return Err(TimeUnitsError::Unit(other.to_string())),
        };
        let since = since.trim().trim_end_matches('Z');
        let epoch = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(since, f).ok())
            .or_else(|| {
                NaiveDate::parse_from_str(since, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
            .ok_or_else(|| TimeUnitsError::ReferenceDate(units.to_string()))?;
        let calendar = calendar.unwrap_or("proleptic_gregorian").to_string();
        if !matches!(
            calendar.as_str(),
            "proleptic_gregorian" | "gregorian" | "standard"
        ) {
            return Err(TimeUnitsError::Calendar(calendar));
        }
        Ok(Self {
            epoch,
            unit_seconds,
            units: units.to_string(),
            calendar,
        })
    }

    /// The instant of a stored value.
    pub fn instant(&self, value: i64) -> NaiveDateTime {
        self.epoch + TimeDelta::seconds(value * self.unit_seconds)
    }
}

/// A coordinate (a 1-D array named after its own dimension), held in memory.
#[derive(Debug, Clone)]
pub struct Coordinate {
    /// Dimension and array name.
    pub name: String,
    /// The values as stored, widened to f64 (exact for float32 and for integers below 2^53).
    pub values: Vec<f64>,
    /// True for integer storage (`<i8`, `<i4`, ...).
    pub integer: bool,
    /// The attributes as stored, without `_ARRAY_DIMENSIONS`.
    pub attributes: Map<String, Value>,
    /// For time: how values map to instants.
    pub time: Option<TimeEncoding>,
}

/// A data variable of the source: what its `.zarray` and `.zattrs` say (the opened array is
/// the reader's, [`super::Source::array`]).
#[derive(Debug, Clone)]
pub struct Variable {
    /// Array name, e.g. `2m_temperature`.
    pub name: String,
    /// Dimension names in storage order, e.g. `[time, latitude, longitude]`.
    pub dims: Vec<String>,
    /// Array shape.
    pub shape: Vec<u64>,
    /// Chunk shape.
    pub chunks: Vec<u64>,
    /// The attributes as stored, without `_ARRAY_DIMENSIONS`.
    pub attributes: Map<String, Value>,
    /// What absent chunks read as (`fill_value` of `.zarray`; NaN in ARCO-ERA5).
    pub fill_value: Option<f32>,
    /// True when chunks are plain Blosc over little-endian float32 in C order (no filters):
    /// then byte ranges of a chunk can be read and decoded block by block.
    pub blosc_blocks: bool,
    /// Separator of chunk key components (`.` unless `.zarray` says otherwise).
    pub separator: String,
}

impl Variable {
    /// The store key of a chunk, e.g. `2m_temperature/1078211.0.0`.
    pub fn chunk_key(&self, indices: &[u64]) -> String {
        let parts: Vec<String> = indices.iter().map(u64::to_string).collect();
        format!("{}/{}", self.name, parts.join(&self.separator))
    }
}

/// Why parts do not make a scope: the array at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{array}: {why}")]
pub struct ScopeError {
    /// The array (or coordinate) at fault.
    pub array: String,
    /// What is wrong.
    pub why: ScopeProblem,
}

/// What is wrong with the parts of a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeProblem {
    /// A variable's dimensions, shape and chunks have different lengths.
    #[error("{dims} dimensions, shape {shape:?} and chunks {chunks:?} disagree")]
    Disagree {
        /// Its number of dimensions.
        dims: usize,
        /// Its shape.
        shape: Vec<u64>,
        /// Its chunk shape.
        chunks: Vec<u64>,
    },
    /// A dimension of a variable has no coordinate array (the dimension).
    #[error("dimension {0} has no coordinate array")]
    NoCoordinate(String),
    /// No `time` coordinate, or one without CF units.
    #[error("no time coordinate with CF units")]
    NoTime,
}

/// The metadata of a source.
#[derive(Debug)]
pub struct Scope {
    /// The URL as given.
    pub url: String,
    /// Data variables by name.
    pub variables: BTreeMap<String, Variable>,
    /// Coordinates by name.
    pub coordinates: BTreeMap<String, Coordinate>,
    /// The root attributes.
    pub attributes: Map<String, Value>,
    /// The store's version (`last_updated`, `valid_time_stop`) as last read, or pinned.
    pub freshness: Freshness,
}

impl Scope {
    /// A scope of these parts, checked: each data variable has as many dimensions as its
    /// shape and chunks have entries, every dimension has a coordinate, and `time` is a
    /// coordinate with CF units (data types are checked when a store is opened). The store's
    /// version is read from `attributes`. The error names the array at fault and why.
    pub fn new(
        url: &str,
        attributes: Map<String, Value>,
        coordinates: BTreeMap<String, Coordinate>,
        variables: BTreeMap<String, Variable>,
    ) -> Result<Scope, ScopeError> {
        for v in variables.values() {
            if v.dims.len() != v.shape.len() || v.chunks.len() != v.shape.len() {
                let why = ScopeProblem::Disagree {
                    dims: v.dims.len(),
                    shape: v.shape.clone(),
                    chunks: v.chunks.clone(),
                };
                return Err(ScopeError {
                    array: v.name.clone(),
                    why,
                });
            }
            if let Some(d) = v.dims.iter().find(|d| !coordinates.contains_key(*d)) {
                let why = ScopeProblem::NoCoordinate(d.clone());
                return Err(ScopeError {
                    array: v.name.clone(),
                    why,
                });
            }
        }
        if coordinates.get("time").is_none_or(|c| c.time.is_none()) {
            return Err(ScopeError {
                array: "time".into(),
                why: ScopeProblem::NoTime,
            });
        }
        Ok(Scope {
            url: url.to_string(),
            variables,
            coordinates,
            freshness: Freshness::new(StoreVersion::of(&attributes)),
            attributes,
        })
    }

    /// The time coordinate (always present; checked by [`Scope::new`]).
    pub fn time(&self) -> (&Coordinate, &TimeEncoding) {
        let c = &self.coordinates["time"];
        (c, c.time.as_ref().expect("checked at open"))
    }
}

/// A small ERA5-shaped scope built by hand, for unit tests of planning: 100 hours from
/// 2023-01-01T00, latitude 2 → −2 by 0.5, longitude 0 → 337.5 by 22.5, levels 500, 850 and
/// 1000 hPa; `2m_temperature (time, latitude, longitude)` and
/// `temperature (time, level, latitude, longitude)`, one chunk per hour.
#[cfg(test)]
pub(crate) fn small_scope() -> Scope {
    use serde_json::json;
    let object = |v: Value| v.as_object().cloned().unwrap_or_default();
    let coordinate = |name: &str, values: Vec<f64>, integer: bool, attributes: Value| {
        let attributes = object(attributes);
        let time = attributes
            .get("units")
            .and_then(Value::as_str)
            .filter(|u| u.contains(" since "))
            .map(|u| TimeEncoding::parse(u, None).expect("CF units"));
        let name = name.to_string();
        let c = Coordinate {
            name: name.clone(),
            values,
            integer,
            attributes,
            time,
        };
        (name, c)
    };
    const T0: f64 = 1_078_200.0; // 2023-01-01T00 in hours since 1900
    let coordinates = BTreeMap::from([
        coordinate(
            "time",
            (0..100).map(|h| T0 + h as f64).collect(),
            true,
            json!({"units": "hours since 1900-01-01 00:00:00", "calendar": "proleptic_gregorian"}),
        ),
        coordinate(
            "latitude",
            (0..9).map(|i| 2.0 - 0.5 * i as f64).collect(),
            false,
            json!({"units": "degrees_north"}),
        ),
        coordinate(
            "longitude",
            (0..16).map(|i| 22.5 * i as f64).collect(),
            false,
            json!({"units": "degrees_east"}),
        ),
        coordinate(
            "level",
            vec![500.0, 850.0, 1000.0],
            true,
            json!({"units": "hPa"}),
        ),
    ]);
    let variable = |name: &str, dims: &[&str], long_name: &str| {
        let shape: Vec<u64> = dims
            .iter()
            .map(|d| coordinates[*d].values.len() as u64)
            .collect();
        let mut chunks = shape.clone();
        chunks[0] = 1;
        let v = Variable {
            name: name.to_string(),
            dims: dims.iter().map(|d| d.to_string()).collect(),
            shape,
            chunks,
            attributes: object(json!({"units": "K", "long_name": long_name})),
            fill_value: Some(f32::NAN),
            blosc_blocks: true,
            separator: ".".into(),
        };
        (name.to_string(), v)
    };
    let variables = BTreeMap::from([
        variable(
            "2m_temperature",
            &["time", "latitude", "longitude"],
            "2 metre temperature",
        ),
        variable(
            "temperature",
            &["time", "level", "latitude", "longitude"],
            "Temperature",
        ),
    ]);
    let attributes = object(json!({"valid_time_start": "1940-01-01"}));
    Scope::new("memory://hand-built", attributes, coordinates, variables).expect("a valid scope")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_checks_its_parts_and_names_the_array_at_fault() {
        let good = small_scope();
        assert_eq!(good.time().0.values.len(), 100);
        let mut variables = good.variables.clone();
        let mut coordinates = good.coordinates.clone();
        coordinates.remove("level");
        let e = Scope::new("x", Map::new(), coordinates.clone(), variables.clone()).unwrap_err();
        assert_eq!(e.array, "temperature");
        assert_eq!(e.why.to_string(), "dimension level has no coordinate array");
        variables.remove("temperature");
        let mut bad = variables.clone();
        bad.get_mut("2m_temperature").unwrap().chunks.pop();
        let e = Scope::new("x", Map::new(), coordinates.clone(), bad).unwrap_err();
        assert!(
            e.to_string().starts_with("2m_temperature: 3 dimensions"),
            "{e}"
        );
        coordinates.get_mut("time").unwrap().time = None;
        let e = Scope::new("x", Map::new(), coordinates, variables).unwrap_err();
        assert_eq!(e.to_string(), "time: no time coordinate with CF units");
    }
}
