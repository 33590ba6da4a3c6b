//! A file's representation resolved against the scope: the periods of `resample` and the
//! grid points of `points`.
//!
//! Input: a deskriptor's `resample` and `points`, the scope's coordinates and the hours the
//! time selector chose. Output: a [`Representation`]: for each period the hours it holds,
//! its label and bounds; for each station the grid point it reads (nearest, ties as xarray's
//! `method="nearest"`). The fetch then reads the selected hours at the stations' grid rows
//! and columns, and [`crate::reduce`] turns that into the file's values.
//!
//! Invariant: the periods are those of xarray's `resample(time=...)` with its defaults (bins
//! from midnight of the first selected day, or calendar months, labelled by their start; every
//! bin from the first to the last selected hour, an empty one included).

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta};

use crate::deskriptor::{Deskriptor, DeskriptorError, Period, Point, Statistic};
use crate::layout::{coordinate_attributes, AttrValue, CoordValues, Layout, NcType, NcVariable};
use crate::select::{fmt_instant, Resolved};
use crate::source::{Coordinate, Scope};

/// The file's dimension of stations.
pub const STATION_DIMENSION: &str = "station";

/// The `coordinates` attribute of a station file's data variables.
pub const STATION_COORDINATES: &str =
    "station_name latitude longitude station_latitude station_longitude";

/// Adds the station dimension and its variables to `layout`: `station_name` (the CF
/// `timeseries_id`), `latitude` and `longitude` of the grid point each station reads, and
/// `station_latitude`, `station_longitude` as given.
pub(super) fn add_stations(layout: &mut Layout, scope: &Scope, stations: &Stations) {
    let n = stations.points.len();
    layout.dims.push((STATION_DIMENSION.into(), n));
    let station = layout.dims.len() - 1;
    let width = stations
        .points
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(1);
    layout.dims.push(("name_strlen".into(), width));
    let strlen = layout.dims.len() - 1;
    let mut names = vec![0u8; n * width];
    for (i, p) in stations.points.iter().enumerate() {
        names[i * width..i * width + p.name.len()].copy_from_slice(p.name.as_bytes());
    }
    let text = |k: &str, v: &str| (k.to_string(), AttrValue::Text(v.to_string()));
    layout.variables.push(NcVariable {
        name: "station_name".into(),
        dims: vec![station, strlen],
        nc_type: NcType::Char,
        attributes: vec![
            text("long_name", "station name"),
            text("cf_role", "timeseries_id"),
        ],
        values: Some(CoordValues::Chars(names)),
    });
    for (axis, grid) in [
        ("latitude", &stations.grid_latitude),
        ("longitude", &stations.grid_longitude),
    ] {
        let mut attributes: Vec<(String, AttrValue)> =
            coordinate_attributes(axis, &scope.coordinates[axis].attributes)
                .into_iter()
                .filter(|(k, _)| k != "axis")
                .collect();
        attributes.push(text(
            "comment",
            &format!(
                "{axis} of the grid point whose values the station has: the nearest to the \
                 station (xarray's sel(method=\"nearest\")); the station's own is station_{axis}"
            ),
        ));
        layout.variables.push(NcVariable {
            name: axis.into(),
            dims: vec![station],
            nc_type: NcType::Float,
            attributes,
            values: Some(CoordValues::Floats(
                grid.iter().map(|&v| v as f32).collect(),
            )),
        });
    }
    for (axis, units) in [("latitude", "degrees_north"), ("longitude", "degrees_east")] {
        let given: Vec<f64> = stations
            .points
            .iter()
            .map(|p| {
                if axis == "latitude" {
                    p.latitude
                } else {
                    p.longitude
                }
            })
            .collect();
        layout.variables.push(NcVariable {
            name: format!("station_{axis}"),
            dims: vec![station],
            nc_type: NcType::Double,
            attributes: vec![
                text("long_name", &format!("station {axis} as given")),
                text("units", units),
            ],
            values: Some(CoordValues::Doubles(given)),
        });
    }
}

/// What a file shows of its selection beyond a subset (see the module's doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    /// Time statistics, with `resample`.
    pub periods: Option<Periods>,
    /// Stations, with `points`.
    pub stations: Option<Stations>,
}

/// The periods of `resample`.
#[derive(Debug, Clone, PartialEq)]
pub struct Periods {
    /// The statistic of each period.
    pub how: Statistic,
    /// The period's length, as asked.
    pub period: Period,
    /// For each period, the positions of its hours in the time selection (empty for a period
    /// without a selected hour).
    pub hours: Vec<Range<usize>>,
    /// Each period's label (its start), in the time coordinate's units.
    pub labels: Vec<f64>,
    /// Each period's bounds (start, end), in the time coordinate's units, flattened.
    pub bounds: Vec<f64>,
    /// What the file says of the periods (the `sodeda_resample` attribute).
    pub description: String,
}

/// The stations of `points`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stations {
    /// The stations as given.
    pub points: Vec<Point>,
    /// For each station, the positions of its grid point in the fetched latitude and
    /// longitude selections.
    pub at: Vec<(usize, usize)>,
    /// The latitude of each station's grid point.
    pub grid_latitude: Vec<f64>,
    /// The longitude of each station's grid point, in the convention the stations use
    /// (−180..180 when any station's longitude is negative, else 0..360).
    pub grid_longitude: Vec<f64>,
}

impl Representation {
    /// The part of the default file name that tells the representation: `_1D-mean`,
    /// `_5-points`.
    pub fn name_part(&self) -> String {
        let mut out = String::new();
        if let Some(p) = &self.periods {
            out.push_str(&format!("_{}-{}", p.period.text(), p.how.key()));
        }
        if let Some(s) = &self.stations {
            out.push_str(&format!("_{}-points", s.points.len()));
        }
        out
    }
}

/// The representation of `deskriptor`, or `None` for a plain subset. With `points`, the
/// latitude and longitude selections become the stations' grid rows and columns (what the
/// fetch reads).
pub(super) fn resolve(
    deskriptor: &Deskriptor,
    scope: &Scope,
    file_dims: &[String],
    variables: &[super::PlannedVariable],
    selections: &mut BTreeMap<String, Resolved>,
) -> Result<Option<Representation>, DeskriptorError> {
    if deskriptor.resample.is_none() && deskriptor.points.is_none() {
        return Ok(None);
    }
    let line = deskriptor.line;
    if let Some(v) = variables
        .iter()
        .find(|v| v.dims.first().map(String::as_str) != Some("time"))
    {
        return Err(DeskriptorError::new(
            line,
            if deskriptor.resample.is_some() {
                "resample"
            } else {
                "points"
            },
            "",
            format!(
                "a representation needs variables with time first; {} has dimensions ({})",
                v.name,
                v.dims.join(", ")
            ),
        ));
    }
    let periods = match &deskriptor.resample {
        Some(r) => {
            let Some(time) = selections.get("time") else {
                return Err(DeskriptorError::new(
                    line,
                    "resample",
                    "",
                    "the variables have no time axis to resample",
                ));
            };
            Some(periods(line, scope, time, r.period, r.how)?)
        }
        None => None,
    };
    let stations = match &deskriptor.points {
        Some(points) => {
            for v in variables {
                let n = v.dims.len();
                if n < 2 || v.dims[n - 2] != "latitude" || v.dims[n - 1] != "longitude" {
                    return Err(DeskriptorError::new(
                        line,
                        "points",
                        "",
                        format!(
                            "stations need variables on a latitude-longitude grid; {} has \
                             dimensions ({})",
                            v.name,
                            v.dims.join(", ")
                        ),
                    ));
                }
            }
            if !file_dims.iter().any(|d| d == "latitude") {
                return Err(DeskriptorError::new(
                    line,
                    "points",
                    "",
                    "the variables have no latitude and longitude",
                ));
            }
            let (stations, lat, lon) = stations(
                points,
                &scope.coordinates["latitude"],
                &scope.coordinates["longitude"],
            );
            selections.insert("latitude".into(), lat);
            selections.insert("longitude".into(), lon);
            Some(stations)
        }
        None => None,
    };
    Ok(Some(Representation { periods, stations }))
}

/// The periods of the hours `time` selected.
fn periods(
    line: usize,
    scope: &Scope,
    time: &Resolved,
    period: Period,
    how: Statistic,
) -> Result<Periods, DeskriptorError> {
    let (_, enc) = scope.time();
    let instants: Vec<NaiveDateTime> = time.labels.iter().map(|&v| enc.instant(v as i64)).collect();
    if let Some(w) = instants.windows(2).position(|w| w[1] <= w[0]) {
        return Err(DeskriptorError::new(
            line,
            "time",
            format!(
                "{} after {}",
                fmt_instant(instants[w + 1]),
                fmt_instant(instants[w])
            ),
            "`resample` needs the hours in increasing order: give a range, or list the hours \
             sorted",
        ));
    }
    let first = instants[0];
    let last = *instants.last().expect("a selection is never empty");
    let midnight = first.date().and_hms_opt(0, 0, 0).expect("midnight exists");
    // The start of the period that holds `t`, and the start of the one after it.
    let start_of = |t: NaiveDateTime| -> NaiveDateTime {
        match period {
            Period::Hours(h) => {
                let step = i64::from(h) * 3600;
                let k = (t - midnight).num_seconds().div_euclid(step);
                midnight + TimeDelta::seconds(k * step)
            }
            Period::Month => NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
                .expect("a month's first day")
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists"),
        }
    };
    let next_of = |s: NaiveDateTime| -> NaiveDateTime {
        match period {
            Period::Hours(h) => s + TimeDelta::hours(i64::from(h)),
            Period::Month => {
                let (y, m) = if s.month() == 12 {
                    (s.year() + 1, 1)
                } else {
                    (s.year(), s.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .expect("a month's first day")
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
            }
        }
    };
    let in_units = |t: NaiveDateTime| -> Result<f64, DeskriptorError> {
        let seconds = (t - enc.epoch).num_seconds();
        if seconds % enc.unit_seconds != 0 {
            return Err(DeskriptorError::new(
                line,
                "resample.time",
                format!("\"{}\"", period.text()),
                format!(
                    "the period starting {} is not a whole number of the time axis's units \
                     ({})",
                    fmt_instant(t),
                    enc.units
                ),
            ));
        }
        Ok((seconds / enc.unit_seconds) as f64)
    };
    let mut hours = Vec::new();
    let mut labels = Vec::new();
    let mut bounds = Vec::new();
    let mut partial = Vec::new();
    let mut at = 0;
    let mut start = start_of(first);
    while start <= last {
        let end = next_of(start);
        let from = at;
        while at < instants.len() && instants[at] < end {
            at += 1;
        }
        let whole = (end - start).num_hours();
        let held = (at - from) as i64;
        if held < whole {
            partial.push((start, held, whole));
        }
        hours.push(from..at);
        labels.push(in_units(start)?);
        bounds.push(in_units(start)?);
        bounds.push(in_units(end)?);
        start = end;
    }
    let description = describe(period, how, hours.len(), &partial);
    Ok(Periods {
        how,
        period,
        hours,
        labels,
        bounds,
        description,
    })
}

/// The `sodeda_resample` attribute: how the periods were made, and which hold fewer hours
/// than their length.
fn describe(
    period: Period,
    how: Statistic,
    count: usize,
    partial: &[(NaiveDateTime, i64, i64)],
) -> String {
    let mut s = format!(
        "time: {} {} of the selected hours, missing values skipped (as xarray's skipna); each \
         period is labelled by its start and bounded by time_bnds, as xarray's resample gives; ",
        period.text(),
        how.key()
    );
    if partial.is_empty() {
        s.push_str(&format!("all {count} periods hold all their hours"));
        return s;
    }
    s.push_str(&format!(
        "{} of {count} periods hold only the selected hours within them: ",
        partial.len()
    ));
    let shown: Vec<String> = partial
        .iter()
        .take(4)
        .map(|(t, held, whole)| format!("{} ({held} of {whole} hours)", fmt_instant(*t)))
        .collect();
    s.push_str(&shown.join(", "));
    if partial.len() > 4 {
        s.push_str(&format!(" and {} more", partial.len() - 4));
    }
    s
}

/// The stations' grid points, and the latitude and longitude selections that hold them
/// (distinct positions, in the source's order).
fn stations(
    points: &[Point],
    lat: &Coordinate,
    lon: &Coordinate,
) -> (Stations, Resolved, Resolved) {
    let signed = points.iter().any(|p| p.longitude < 0.0);
    let lat_index: Vec<usize> = points
        .iter()
        .map(|p| nearest(&lat.values, p.latitude, false))
        .collect();
    let circle = is_circle(&lon.values);
    let lon_index: Vec<usize> = points
        .iter()
        .map(|p| nearest(&lon.values, p.longitude.rem_euclid(360.0), circle))
        .collect();
    let distinct = |picked: &[usize]| {
        let mut d = picked.to_vec();
        d.sort_unstable();
        d.dedup();
        d
    };
    let (lats, lons) = (distinct(&lat_index), distinct(&lon_index));
    let position = |all: &[usize], i: usize| all.binary_search(&i).expect("listed");
    let at = lat_index
        .iter()
        .zip(&lon_index)
        .map(|(&a, &b)| (position(&lats, a), position(&lons, b)))
        .collect();
    let relabel = |v: f64| if signed && v >= 180.0 { v - 360.0 } else { v };
    let stations = Stations {
        points: points.to_vec(),
        at,
        grid_latitude: lat_index.iter().map(|&i| lat.values[i]).collect(),
        grid_longitude: lon_index.iter().map(|&i| relabel(lon.values[i])).collect(),
    };
    let resolved = |indices: Vec<usize>, values: &[f64], f: &dyn Fn(f64) -> f64| Resolved {
        labels: indices.iter().map(|&i| f(values[i])).collect(),
        indices,
    };
    (
        stations,
        resolved(lats, &lat.values, &|v| v),
        resolved(lons, &lon.values, &relabel),
    )
}

/// Whether longitudes `values` (increasing, in 0..360) go round the whole circle: the gap
/// from the last back to the first is one step.
fn is_circle(values: &[f64]) -> bool {
    let n = values.len();
    if n < 2 {
        return false;
    }
    let step = (values[n - 1] - values[0]) / (n - 1) as f64;
    (values[0] + 360.0 - values[n - 1] - step).abs() < step * 1e-3
}

/// The position of the value of `values` nearest to `x`; on a tie the larger value (the
/// eastern one on a circle), as xarray's `sel(method="nearest")` picks on ERA5's axes (a
/// latitude running 90 → −90, a longitude running 0 → 359.75). On a `circle` (degrees),
/// distances go round it.
fn nearest(values: &[f64], x: f64, circle: bool) -> usize {
    let mut best = 0;
    let mut best_distance = f64::INFINITY;
    let mut best_east = false;
    for (i, &v) in values.iter().enumerate() {
        let (distance, east) = if circle {
            let d = (v - x).rem_euclid(360.0);
            if d <= 180.0 {
                (d, d > 0.0)
            } else {
                (360.0 - d, false)
            }
        } else {
            ((v - x).abs(), v > x)
        };
        let better = distance < best_distance || (distance == best_distance && east && !best_east);
        if better {
            best = i;
            best_distance = distance;
            best_east = east;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, PlanOptions};
    use crate::source::scope::small_scope;

    /// The file's dimensions and their lengths.
    fn dims(p: &Plan) -> Vec<(&str, usize)> {
        p.layout
            .dims
            .iter()
            .map(|(n, l)| (n.as_str(), *l))
            .collect()
    }

    fn plan(line: &str) -> Result<Plan, DeskriptorError> {
        let d = Deskriptor::parse(1, line)?;
        Plan::new(&d, &small_scope(), PlanOptions::default())
            .map_err(|e| e.deskriptor().cloned().expect("the line's fault"))
    }

    /// 2023-01-01T05 to 2023-01-02T02 in 6-hour periods: from midnight of the first day,
    /// the first and last cut, every period labelled by its start and bounded.
    #[test]
    fn periods_run_from_midnight_of_the_first_day_and_hold_the_hours_present() {
        let p = plan(
            r#"{"time": {"start": "2023-01-01T05", "end": "2023-01-02T02"}, "latitude": 0,
                "longitude": 45, "variable": "2m_temperature", "resample": {"time": "6h"}}"#,
        )
        .unwrap();
        let periods = p.representation.as_ref().unwrap().periods.clone().unwrap();
        const T0: f64 = 1_078_200.0;
        assert_eq!(periods.labels, [0., 6., 12., 18., 24.].map(|h| T0 + h));
        // Positions in the 22 selected hours (05 .. 02 of the next day).
        assert_eq!(periods.hours, [0..1, 1..7, 7..13, 13..19, 19..22]);
        assert_eq!(&periods.bounds[..4], &[T0, T0 + 6., T0 + 6., T0 + 12.]);
        assert!(
            periods.description.contains(
                "2 of 5 periods hold only the selected hours within them: 2023-01-01T00:00 \
                 (1 of 6 hours), 2023-01-02T00:00 (3 of 6 hours)"
            ),
            "{}",
            periods.description
        );
        // The file: 5 time steps, time_bnds (time, nv), cell_methods; the size is the
        // written one (checked by the encoder on every build, here by the formula).
        assert_eq!(
            dims(&p),
            [("time", 5), ("nv", 2), ("latitude", 1), ("longitude", 1)]
        );
        assert_eq!(p.size, p.layout.classic_size());
        assert!(p
            .file_name
            .starts_with("2m_temperature_6h-mean_20230101T05_"));
        // 7 days from midnight: one period; months: one period.
        for (period, n) in [("7D", 1), ("1M", 1), ("1h", 22), ("1D", 2)] {
            let p = plan(&format!(
                r#"{{"time": {{"start": "2023-01-01T05", "end": "2023-01-02T02"}},
                    "latitude": 0, "longitude": 45, "variable": "2m_temperature",
                    "resample": {{"time": "{period}"}}}}"#
            ))
            .unwrap();
            assert_eq!(p.layout.dims[0], ("time".to_string(), n), "{period}");
        }
    }

    #[test]
    fn periods_carry_across_batches_of_any_size() {
        let p = plan(
            r#"{"time": {"start": "2023-01-01T05", "end": "2023-01-02T02"}, "latitude": 0,
                "longitude": 45, "variable": "2m_temperature", "resample": {"time": "6h"}}"#,
        )
        .unwrap();
        let rep = p.representation.clone().unwrap();
        // One hour is 4 bytes: 12 bytes hold 3 hours, 52 bytes 13.
        let b = crate::reduce::batches(&p, 12);
        assert_eq!(b.len(), 8);
        assert_eq!((b[0].clone(), b[7].clone()), (0..3, 21..22));
        assert_eq!(crate::reduce::batches(&p, 52), [0..13, 13..22]);
        // 22 hours: values with a missing one (hour 8) and a fraction that rounds.
        let value = |h: usize| {
            if h == 8 {
                f32::NAN
            } else {
                250.0 + h as f32 / 3.0
            }
        };
        let reduce = |max_bytes: u64| {
            let mut r = crate::reduce::Reducer::new(&p, &rep);
            for hours in crate::reduce::batches(&p, max_bytes) {
                let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[hours.len(), 1, 1]), |i| {
                    value(hours.start + i[0])
                });
                r.add(hours, vec![a]);
            }
            r.finish().remove(0).iter().copied().collect::<Vec<f32>>()
        };
        let whole = reduce(1 << 20);
        // The periods' values as numpy's nanmean: the float32 sum in order over the count.
        let mean = |hours: std::ops::Range<usize>| {
            let present: Vec<f32> = hours.map(value).filter(|v| !v.is_nan()).collect();
            (f64::from(present.iter().fold(0f32, |s, v| s + v)) / present.len() as f64) as f32
        };
        assert_eq!(
            whole,
            [
                mean(0..1),
                mean(1..7),
                mean(7..13),
                mean(13..19),
                mean(19..22)
            ]
        );
        for max_bytes in [4, 12, 52] {
            assert_eq!(reduce(max_bytes), whole, "batches of {max_bytes} bytes");
        }
    }

    #[test]
    fn stations_read_their_grid_rows_and_columns_only() {
        let p = plan(
            r#"{"time": "2023-01-01T05", "variable": ["temperature", "2m_temperature"],
                "points": [{"name": "a", "latitude": 0.2, "longitude": 50},
                           {"name": "bb", "latitude": -1.3, "longitude": -30},
                           {"name": "c", "latitude": 0.1, "longitude": 40}]}"#,
        )
        .unwrap();
        // Latitudes 2 .. -2 by 0.5; longitudes 0 .. 337.5 by 22.5.
        assert_eq!(p.selections["latitude"].indices, [4, 7]);
        assert_eq!(p.selections["longitude"].indices, [2, 15]);
        let s = p.representation.as_ref().unwrap().stations.clone().unwrap();
        assert_eq!(s.at, [(0, 0), (1, 1), (0, 0)]);
        assert_eq!(s.grid_latitude, [0.0, -1.5, 0.0]);
        // One station is west of 0: the grid longitudes are in -180..180.
        assert_eq!(s.grid_longitude, [45.0, -22.5, 45.0]);
        assert_eq!(
            dims(&p),
            [
                ("time", 1),
                ("level", 3),
                ("station", 3),
                ("name_strlen", 2)
            ]
        );
        let t = p
            .layout
            .variables
            .iter()
            .find(|v| v.name == "temperature")
            .unwrap();
        assert_eq!(t.dims, [0, 1, 2]);
        assert_eq!(p.size, p.layout.classic_size());
        // A selector that no variable uses is still only checked, as in a subset.
        let e = plan(
            r#"{"time": "2023-01-01T05", "variable": "2m_temperature",
                "points": [{"name": "a", "latitude": 0.2, "longitude": 50}],
                "resample": {"time": "1D"}, "level": 500}"#,
        );
        assert!(
            e.is_ok(),
            "a level selector no variable uses is fine: {e:?}"
        );
    }

    #[test]
    fn nearest_breaks_ties_to_the_larger_value_as_xarray() {
        let lat: Vec<f64> = (0..721).map(|i| 90.0 - 0.25 * i as f64).collect();
        let lon: Vec<f64> = (0..1440).map(|i| 0.25 * i as f64).collect();
        // Measured with xarray on the replica: 47.125 → 47.25, -47.125 → -47.0, 8.125 → 8.25.
        assert_eq!(lat[nearest(&lat, 47.125, false)], 47.25);
        assert_eq!(lat[nearest(&lat, -47.125, false)], -47.0);
        assert_eq!(lat[nearest(&lat, 47.37, false)], 47.25);
        assert_eq!(lat[nearest(&lat, 90.0, false)], 90.0);
        assert_eq!(lat[nearest(&lat, -90.0, false)], -90.0);
        assert!(is_circle(&lon));
        assert_eq!(lon[nearest(&lon, 8.125, true)], 8.25);
        assert_eq!(lon[nearest(&lon, 8.54, true)], 8.5);
        // Round the circle: -0.1 is 359.9, nearest 0 (not 359.75); a tie at the seam goes east.
        assert_eq!(lon[nearest(&lon, (-0.1f64).rem_euclid(360.0), true)], 0.0);
        assert_eq!(lon[nearest(&lon, 359.875, true)], 0.0);
        assert_eq!(lon[nearest(&lon, 359.8, true)], 359.75);
        assert!(!is_circle(&lon[..100]));
    }
}
