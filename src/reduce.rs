//! Reduce: from the hours fetched at the grid to a representation's values — the stations'
//! grid points picked, the periods' hours summarised.
//!
//! Input: a [`Plan`] with a [`Representation`] and, batch by batch, what [`crate::fetch`]
//! read of the batch's hours (arrays shaped `(hours, [level,] latitude, longitude)` over the
//! plan's selections). Output: one array per data variable shaped as the file's variable
//! (`(periods or hours, [level,] station or latitude, longitude)`), for [`crate::encode`].
//!
//! Invariant: statistics skip missing values as xarray's default `skipna` does (a mean, min
//! or max of no present value is NaN, a sum of none is 0), a period without any selected hour
//! is NaN; sums are float32 sums over the hours in time order, as xarray over numpy takes
//! them, so the values are xarray's bit for bit. Batches hold whole periods, so a build holds
//! one batch of hours at a time, not the file's.

use std::ops::Range;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::deskriptor::Statistic;
use crate::plan::{Plan, Representation};

/// The hours one batch fetches, at most (decoded, all variables): a period longer than that
/// is one batch of its own.
pub const BATCH_BYTES: u64 = 32 << 20;

/// One batch of a build: positions of hours in the time selection, and the periods they make
/// (empty without `resample`: the file's rows are then the hours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Hours, as positions in the plan's time selection.
    pub hours: Range<usize>,
    /// Periods (rows of the file) whose hours these are.
    pub periods: Range<usize>,
}

/// The bytes one hour of `plan`'s selection decodes to, all variables.
fn hour_bytes(plan: &Plan) -> u64 {
    plan.variables
        .iter()
        .map(|v| {
            v.dims
                .iter()
                .filter(|d| *d != "time")
                .map(|d| plan.selections[d].indices.len() as u64)
                .product::<u64>()
                * 4
        })
        .sum::<u64>()
        .max(1)
}

/// The batches of `plan`'s build, each at most `max_bytes` of fetched hours (but one period).
pub fn batches(plan: &Plan, rep: &Representation, max_bytes: u64) -> Vec<Batch> {
    let per_batch = (max_bytes / hour_bytes(plan)).max(1) as usize;
    let hours = plan.selections.get("time").map_or(1, |t| t.indices.len());
    let Some(periods) = &rep.periods else {
        return (0..hours)
            .step_by(per_batch)
            .map(|a| {
                let b = (a + per_batch).min(hours);
                Batch {
                    hours: a..b,
                    periods: 0..0,
                }
            })
            .collect();
    };
    let mut out: Vec<Batch> = Vec::new();
    for (p, h) in periods.hours.iter().enumerate() {
        match out.last_mut() {
            Some(last) if h.end - last.hours.start <= per_batch => {
                last.hours.end = h.end;
                last.periods.end = p + 1;
            }
            _ => out.push(Batch {
                hours: h.clone(),
                periods: p..p + 1,
            }),
        }
    }
    out
}

/// The plan that fetches the hours of `batch`: `plan` with its time selection cut to them.
pub fn batch_plan(plan: &Plan, batch: &Batch) -> Plan {
    let mut sub = plan.clone();
    if let Some(t) = sub.selections.get_mut("time") {
        t.indices = t.indices[batch.hours.clone()].to_vec();
        t.labels = t.labels[batch.hours.clone()].to_vec();
    }
    sub
}

/// The file's arrays, one per data variable, filled with NaN until reduced into.
pub fn outputs(plan: &Plan) -> Vec<ArrayD<f32>> {
    plan.layout
        .variables
        .iter()
        .filter(|v| v.values.is_none())
        .map(|v| {
            let shape: Vec<usize> = v.dims.iter().map(|&d| plan.layout.dims[d].1).collect();
            ArrayD::from_elem(IxDyn(&shape), f32::NAN)
        })
        .collect()
}

/// Reduces what the fetch read of `batch` (`fetched`, one array per data variable, hours
/// first) into `outputs` (the file's arrays).
pub fn reduce_into(
    rep: &Representation,
    batch: &Batch,
    fetched: Vec<ArrayD<f32>>,
    outputs: &mut [ArrayD<f32>],
) {
    for (array, out) in fetched.into_iter().zip(outputs.iter_mut()) {
        let picked = match &rep.stations {
            Some(s) => pick(array, &s.at),
            None => array,
        };
        let hours = picked.shape()[0];
        let inner = picked.len() / hours.max(1);
        let picked = picked
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((hours, inner))
            .expect("a standard layout reshapes");
        let rows = out.shape()[0];
        let mut out2 = out
            .view_mut()
            .into_shape_with_order((rows, inner))
            .expect("outputs are in standard layout");
        match &rep.periods {
            None => {
                out2.slice_mut(ndarray::s![batch.hours.clone(), ..])
                    .assign(&picked);
            }
            Some(periods) => {
                for p in batch.periods.clone() {
                    let h = &periods.hours[p];
                    let (a, b) = (h.start - batch.hours.start, h.end - batch.hours.start);
                    let group = picked.slice(ndarray::s![a..b, ..]);
                    let mut row = out2.index_axis_mut(Axis(0), p);
                    for (j, cell) in row.iter_mut().enumerate() {
                        *cell = statistic(periods.how, group.column(j).iter().copied(), b - a);
                    }
                }
            }
        }
    }
}

/// From `(…, latitude, longitude)` to `(…, station)`: the value of each station's grid point
/// (`at`: positions in the fetched latitude and longitude).
fn pick(array: ArrayD<f32>, at: &[(usize, usize)]) -> ArrayD<f32> {
    let shape = array.shape().to_vec();
    let n = shape.len();
    let (ny, nx) = (shape[n - 2], shape[n - 1]);
    let outer: usize = shape[..n - 2].iter().product();
    let grid = array
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((outer, ny * nx))
        .expect("a standard layout reshapes");
    let mut picked = Vec::with_capacity(outer * at.len());
    for row in grid.rows() {
        picked.extend(at.iter().map(|&(y, x)| row[y * nx + x]));
    }
    let mut out_shape = shape[..n - 2].to_vec();
    out_shape.push(at.len());
    ArrayD::from_shape_vec(IxDyn(&out_shape), picked).expect("sizes agree")
}

/// The statistic of one period's `hours` values (`count` of them; none: a period without a
/// selected hour, NaN).
fn statistic(how: Statistic, values: impl Iterator<Item = f32>, count: usize) -> f32 {
    if count == 0 {
        return f32::NAN;
    }
    let present = values.filter(|v| !v.is_nan());
    match how {
        // As xarray (numpy's nansum and nanmean): a float32 sum over the hours in order,
        // then, for a mean, divided by the count in f64 and rounded to float32.
        Statistic::Mean => {
            let (sum, n) = present.fold((0f32, 0u32), |(s, n), v| (s + v, n + 1));
            if n == 0 {
                f32::NAN
            } else {
                (f64::from(sum) / f64::from(n)) as f32
            }
        }
        Statistic::Sum => present.fold(0f32, |s, v| s + v),
        Statistic::Min => present.reduce(f32::min).unwrap_or(f32::NAN),
        Statistic::Max => present.reduce(f32::max).unwrap_or(f32::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_skip_missing_values_as_xarray() {
        let nan = f32::NAN;
        let v = [1.0f32, nan, 4.0, 2.0];
        let of = |how| statistic(how, v.iter().copied(), v.len());
        assert_eq!(of(Statistic::Mean), 7.0 / 3.0);
        assert_eq!(of(Statistic::Min), 1.0);
        assert_eq!(of(Statistic::Max), 4.0);
        assert_eq!(of(Statistic::Sum), 7.0);
        let none = [nan, nan];
        for how in [Statistic::Mean, Statistic::Min, Statistic::Max] {
            assert!(statistic(how, none.iter().copied(), 2).is_nan());
        }
        // As xarray: a sum of no present value is 0; of no hour at all, NaN.
        assert_eq!(statistic(Statistic::Sum, none.iter().copied(), 2), 0.0);
        assert!(statistic(Statistic::Sum, std::iter::empty(), 0).is_nan());
    }

    #[test]
    fn stations_pick_their_grid_points() {
        // Two hours of a 2×3 grid: value = 100·hour + 10·row + column.
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 2, 3]), |i| {
            (100 * i[0] + 10 * i[1] + i[2]) as f32
        });
        let p = pick(a, &[(1, 2), (0, 0), (1, 2)]);
        assert_eq!(p.shape(), &[2, 3]);
        assert_eq!(
            p.iter().copied().collect::<Vec<_>>(),
            [12., 0., 12., 112., 100., 112.]
        );
    }
}
