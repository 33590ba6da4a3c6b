//! What the dashboard previews: a selection (from the form or a listed file) becomes a
//! deskriptor; its file comes from the flow (cache or build); one time step of one variable
//! is read back from that file as a [`Field`].
//!
//! The map therefore shows the bytes a reader of the file would get, not a second path
//! through the source.

use std::path::Path;

use serde_json::{Map, Value};

use super::render::Field;
use crate::plan::Plan;
use crate::select;
use crate::source::Source;

/// Names of the form fields of an ad-hoc selection.
pub mod fields {
    /// First time (ISO 8601).
    pub const TIME_START: &str = "time_start";
    /// Last time (ISO 8601, a period covers its whole length).
    pub const TIME_END: &str = "time_end";
    /// Latitude bounds.
    pub const LAT_START: &str = "lat_start";
    /// Latitude bounds.
    pub const LAT_END: &str = "lat_end";
    /// Longitude bounds (0..360 or −180..180).
    pub const LON_START: &str = "lon_start";
    /// Longitude bounds.
    pub const LON_END: &str = "lon_end";
    /// A checked variable (repeated).
    pub const VARIABLE: &str = "variable";
    /// Pressure levels, comma-separated.
    pub const LEVEL: &str = "level";
    /// A whole deskriptor as JSON (wins over the other fields when given).
    pub const DESKRIPTOR: &str = "deskriptor";
}

/// The values of an ad-hoc selection form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectionForm {
    /// First time.
    pub time_start: String,
    /// Last time.
    pub time_end: String,
    /// Latitude start.
    pub lat_start: String,
    /// Latitude end.
    pub lat_end: String,
    /// Longitude start.
    pub lon_start: String,
    /// Longitude end.
    pub lon_end: String,
    /// Checked variables.
    pub variables: Vec<String>,
    /// Levels, comma-separated.
    pub level: String,
    /// A deskriptor given as JSON.
    pub deskriptor: String,
}

impl SelectionForm {
    /// Reads the form from query pairs (unknown keys are left to the caller).
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut f = SelectionForm::default();
        for (k, v) in pairs {
            let v = v.trim().to_string();
            match k.as_str() {
                fields::TIME_START => f.time_start = v,
                fields::TIME_END => f.time_end = v,
                fields::LAT_START => f.lat_start = v,
                fields::LAT_END => f.lat_end = v,
                fields::LON_START => f.lon_start = v,
                fields::LON_END => f.lon_end = v,
                fields::VARIABLE if !v.is_empty() => f.variables.push(v),
                fields::LEVEL => f.level = v,
                fields::DESKRIPTOR => f.deskriptor = v,
                _ => {}
            }
        }
        f
    }

    /// True when nothing was filled in.
    pub fn is_empty(&self) -> bool {
        *self == SelectionForm::default()
    }

    /// Fills the form fields from a deskriptor line, as far as its selectors are simple
    /// ranges, scalars and lists (others, such as steps, stay empty): a starting point for an
    /// ad-hoc selection near a listed file.
    pub fn from_deskriptor(raw: &str) -> Self {
        let mut f = SelectionForm::default();
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(raw) else {
            return f;
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let bounds = |v: Option<&Value>| -> (String, String) {
            match v {
                Some(Value::Object(r)) => (
                    r.get("start").map(text).unwrap_or_default(),
                    r.get("end").map(text).unwrap_or_default(),
                ),
                Some(v @ (Value::String(_) | Value::Number(_))) => (text(v), String::new()),
                _ => (String::new(), String::new()),
            }
        };
        (f.time_start, f.time_end) = bounds(m.get("time"));
        (f.lat_start, f.lat_end) = bounds(m.get("latitude"));
        (f.lon_start, f.lon_end) = bounds(m.get("longitude"));
        f.variables = match m.get("variable") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        f.level = match m.get("level") {
            Some(Value::Array(a)) => a.iter().map(text).collect::<Vec<_>>().join(","),
            Some(v) => text(v),
            None => String::new(),
        };
        f
    }

    /// The deskriptor JSON of this form: the deskriptor box when filled, else one built from
    /// the fields. Values that are not numbers are passed on as strings so that the
    /// deskriptor parser names them in its error.
    pub fn to_json(&self) -> String {
        if !self.deskriptor.is_empty() {
            return self.deskriptor.clone();
        }
        let number = |s: &str| -> Value {
            match s.parse::<f64>() {
                Ok(x) if x.is_finite() => serde_json::Number::from_f64(x)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(s.to_string())),
                _ => Value::String(s.to_string()),
            }
        };
        let selector = |start: &str, end: &str, conv: &dyn Fn(&str) -> Value| -> Option<Value> {
            match (start.is_empty(), end.is_empty()) {
                (true, true) => None,
                (false, true) => Some(conv(start)),
                _ => {
                    let mut r = Map::new();
                    if !start.is_empty() {
                        r.insert("start".into(), conv(start));
                    }
                    r.insert("end".into(), conv(end));
                    Some(Value::Object(r))
                }
            }
        };
        let mut m = Map::new();
        let string = |s: &str| Value::String(s.to_string());
        if let Some(v) = selector(&self.time_start, &self.time_end, &string) {
            m.insert("time".into(), v);
        }
        if let Some(v) = selector(&self.lat_start, &self.lat_end, &number) {
            m.insert("latitude".into(), v);
        }
        if let Some(v) = selector(&self.lon_start, &self.lon_end, &number) {
            m.insert("longitude".into(), v);
        }
        if !self.level.is_empty() {
            let levels: Vec<Value> = self
                .level
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(number)
                .collect();
            m.insert("level".into(), Value::Array(levels));
        }
        m.insert(
            "variable".into(),
            Value::Array(self.variables.iter().map(|v| string(v)).collect()),
        );
        Value::Object(m).to_string()
    }
}

/// Which slice of a file to show, and how.
#[derive(Debug, Clone)]
pub struct View {
    /// The variable (default: the file's first).
    pub variable: Option<String>,
    /// The time step, 0-based (clamped to the file's steps).
    pub step: usize,
    /// The level position, 0-based (clamped), for variables with levels.
    pub level: usize,
    /// One colour range for every step and level of the variable (so that steps compare),
    /// rather than each step's own.
    pub fixed_range: bool,
    /// Country borders drawn (coastlines always are).
    pub borders: bool,
}

impl Default for View {
    fn default() -> Self {
        View {
            variable: None,
            step: 0,
            level: 0,
            fixed_range: false,
            borders: true,
        }
    }
}

impl View {
    /// Moves the step and the level into the file's range (the last one when past it).
    pub fn clamp(&mut self, axes: &Axes) {
        self.step = self.step.min(axes.times.len().saturating_sub(1));
        self.level = self.level.min(axes.levels.len().saturating_sub(1));
    }
}

/// What the page needs to know of a planned file to offer its views.
#[derive(Debug, Clone)]
pub struct Axes {
    /// Variables of the file.
    pub variables: Vec<String>,
    /// Time labels, formatted.
    pub times: Vec<String>,
    /// Level labels (empty when the file has none).
    pub levels: Vec<f64>,
}

impl Axes {
    /// The axes of `plan`.
    pub fn of(plan: &Plan, source: &Source) -> Self {
        let times = match (
            plan.selections.get("time"),
            source.scope.coordinates.get("time"),
        ) {
            (Some(r), Some(c)) => plan
                .representation
                .as_ref()
                .and_then(|rep| rep.periods.as_ref())
                .map_or(&r.labels, |p| &p.labels)
                .iter()
                .map(|&v| match &c.time {
                    Some(t) => select::fmt_instant(t.instant(v as i64)),
                    None => v.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Axes {
            variables: plan.variables.iter().map(|v| v.name.clone()).collect(),
            times,
            levels: plan
                .selections
                .get("level")
                .map(|r| r.labels.clone())
                .unwrap_or_default(),
        }
    }
}

/// One time step (and level) of one variable of a station file: a row per station.
#[derive(Debug, Clone, PartialEq)]
pub struct StationTable {
    /// The variable shown.
    pub variable: String,
    /// Its units, when the source says.
    pub units: String,
    /// Per station: its name, the grid point's latitude and longitude, and the value.
    pub rows: Vec<(String, f64, f64, f32)>,
}

/// Reads one time step (and level) of one variable of the station file of `plan` at `path`
/// as a table (the step and level clamped, as [`read_field`] does).
pub fn read_stations(
    path: &Path,
    plan: &Plan,
    source: &Source,
    view: &mut View,
) -> Result<StationTable, SliceError> {
    let axes = Axes::of(plan, source);
    let name = view
        .variable
        .clone()
        .filter(|v| axes.variables.contains(v))
        .or_else(|| axes.variables.first().cloned())
        .unwrap_or_default();
    view.variable = Some(name.clone());
    view.clamp(&axes);
    let Some(stations) = plan
        .representation
        .as_ref()
        .and_then(|r| r.stations.as_ref())
    else {
        return Err(SliceError::NotAMap(name));
    };
    let file = netcdf::open(path)?;
    let var = file
        .variable(&name)
        .ok_or_else(|| SliceError::NoVariable(name.clone(), axes.variables.join(", ")))?;
    let extents: Vec<netcdf::Extent> = var
        .dimensions()
        .iter()
        .map(|d| match d.name().as_str() {
            "time" => netcdf::Extent::Index(view.step),
            "level" => netcdf::Extent::Index(view.level),
            _ => netcdf::Extent::Slice {
                start: 0,
                stride: 1,
            },
        })
        .collect();
    let values: Vec<f32> = var.get_values(extents)?;
    let units = source
        .scope
        .variables
        .get(&name)
        .and_then(|v| v.attributes.get("units"))
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string();
    let rows = stations
        .points
        .iter()
        .zip(&stations.grid_latitude)
        .zip(&stations.grid_longitude)
        .zip(values)
        .map(|(((p, &lat), &lon), v)| (p.name.clone(), lat, lon, v))
        .collect();
    Ok(StationTable {
        variable: name,
        units,
        rows,
    })
}

/// Why a slice could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// The variable is not in the file.
    #[error("variable {0:?} is not in this file; it has {1}")]
    NoVariable(String, String),
    /// The variable is not on a latitude × longitude grid.
    #[error("variable {0:?} has no latitude and longitude dimensions to draw")]
    NotAMap(String),
    /// libnetcdf could not read the file.
    #[error("reading the file: {0}")]
    Netcdf(#[from] netcdf::Error),
}

/// The smallest and largest finite values of variable `name` over every step and level of
/// the file at `path`, read one time step at a time (memory: one step); `None` when it has
/// no finite value.
pub fn value_range(path: &Path, name: &str) -> Result<Option<(f64, f64)>, SliceError> {
    let file = netcdf::open(path)?;
    let var = file
        .variable(name)
        .ok_or_else(|| SliceError::NoVariable(name.to_string(), String::new()))?;
    let dims: Vec<(String, usize)> = var
        .dimensions()
        .iter()
        .map(|d| (d.name(), d.len()))
        .collect();
    let steps = dims
        .iter()
        .find(|(d, _)| d == "time")
        .map_or(1, |(_, n)| *n);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for step in 0..steps {
        let extents: Vec<netcdf::Extent> = dims
            .iter()
            .map(|(d, _)| match d.as_str() {
                "time" => netcdf::Extent::Index(step),
                _ => netcdf::Extent::Slice {
                    start: 0,
                    stride: 1,
                },
            })
            .collect();
        let values: Vec<f32> = var.get_values(extents)?;
        for v in values.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(f64::from(v));
            hi = hi.max(f64::from(v));
        }
    }
    Ok(lo.is_finite().then_some((lo, hi)))
}

/// Reads one time step (and level) of one variable from the file of `plan` at `path`.
/// The step and level are clamped into range; the view is updated to what was read.
pub fn read_field(
    path: &Path,
    plan: &Plan,
    source: &Source,
    view: &mut View,
) -> Result<Field, SliceError> {
    let axes = Axes::of(plan, source);
    let name = match &view.variable {
        Some(v) => v.clone(),
        None => axes.variables.first().cloned().unwrap_or_default(),
    };
    if !axes.variables.contains(&name) {
        return Err(SliceError::NoVariable(name, axes.variables.join(", ")));
    }
    view.variable = Some(name.clone());
    view.clamp(&axes);
    let file = netcdf::open(path)?;
    let var = file
        .variable(&name)
        .ok_or_else(|| SliceError::NoVariable(name.clone(), axes.variables.join(", ")))?;
    let dims: Vec<String> = var.dimensions().iter().map(|d| d.name()).collect();
    if !(dims.iter().any(|d| d == "latitude") && dims.iter().any(|d| d == "longitude")) {
        return Err(SliceError::NotAMap(name));
    }
    let mut has_level = false;
    let extents: Vec<netcdf::Extent> = dims
        .iter()
        .map(|d| match d.as_str() {
            "latitude" | "longitude" => netcdf::Extent::Slice {
                start: 0,
                stride: 1,
            },
            "time" => netcdf::Extent::Index(view.step),
            "level" => {
                has_level = true;
                netcdf::Extent::Index(view.level)
            }
            _ => netcdf::Extent::Index(0),
        })
        .collect();
    let mut values: Vec<f32> = var.get_values(extents)?;
    let label = |d: &str| {
        plan.selections
            .get(d)
            .map(|r| r.labels.clone())
            .unwrap_or_default()
    };
    let (latitudes, longitudes) = (label("latitude"), label("longitude"));
    // Stored as (…, latitude, longitude) in ARCO-ERA5; transpose if a store has it the other way.
    let lat_pos = dims.iter().position(|d| d == "latitude");
    let lon_pos = dims.iter().position(|d| d == "longitude");
    if lat_pos > lon_pos {
        let (rows, cols) = (latitudes.len(), longitudes.len());
        let mut t = vec![0.0; values.len()];
        for c in 0..cols {
            for r in 0..rows {
                t[r * cols + c] = values[c * rows + r];
            }
        }
        values = t;
    }
    let attrs = source.scope.variables.get(&name).map(|v| &v.attributes);
    let attr = |k: &str| {
        attrs
            .and_then(|a| a.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let long_name = attr("long_name");
    let mut subtitle = axes
        .times
        .get(view.step)
        .map(|t| format!("{t} UTC"))
        .unwrap_or_default();
    if has_level {
        if let Some(l) = axes.levels.get(view.level) {
            subtitle.push_str(&format!("  level {l} hPa"));
        }
    }
    if axes.times.len() > 1 {
        subtitle.push_str(&format!(
            "  (step {} of {})",
            view.step + 1,
            axes.times.len()
        ));
    }
    Ok(Field {
        values,
        latitudes,
        longitudes,
        title: if long_name.is_empty() {
            name
        } else {
            format!("{name} ({long_name})")
        },
        subtitle,
        units: attr("units"),
        range: None,
        borders: view.borders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_form_becomes_a_deskriptor() {
        let f = SelectionForm::from_pairs(&pairs(&[
            ("time_start", "2023-01-01T11:00"),
            ("time_end", "2023-01-01T12:00"),
            ("lat_start", "48"),
            ("lat_end", "47"),
            ("lon_start", "-3"),
            ("lon_end", "3"),
            ("variable", "2m_temperature"),
            ("variable", "temperature"),
            ("level", "500, 850"),
        ]));
        let v: Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": {"start": "2023-01-01T11:00", "end": "2023-01-01T12:00"},
                "latitude": {"start": 48.0, "end": 47.0},
                "longitude": {"start": -3.0, "end": 3.0},
                "level": [500.0, 850.0],
                "variable": ["2m_temperature", "temperature"],
            })
        );
    }

    #[test]
    fn a_bad_number_is_passed_on_for_the_parser_to_name() {
        let f = SelectionForm::from_pairs(&pairs(&[("lat_start", "north"), ("variable", "x")]));
        let v: Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["latitude"], Value::String("north".into()));
    }

    #[test]
    fn a_deskriptor_fills_the_form() {
        let raw = r#"{"time":{"start":"2023-01-01T11:00","end":"2023-01-01T11:59"},"latitude":{"start":48,"end":47},"longitude":{"start":8,"end":9},"variable":["2m_temperature"],"level":[500]}"#;
        let f = SelectionForm::from_deskriptor(raw);
        assert_eq!(f.time_start, "2023-01-01T11:00");
        assert_eq!((f.lat_start.as_str(), f.lat_end.as_str()), ("48", "47"));
        assert_eq!(f.variables, vec!["2m_temperature"]);
        assert_eq!(f.level, "500");
        assert!(f.deskriptor.is_empty());
        let boxed = SelectionForm {
            deskriptor: raw.into(),
            ..f
        };
        assert_eq!(
            boxed.to_json(),
            raw,
            "the deskriptor box wins over the fields"
        );
    }
}
