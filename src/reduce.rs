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
//! them, so the values are xarray's bit for bit. A period's running statistic is carried from
//! batch to batch, so a build holds one batch of hours (and the file's values) at a time, not
//! a period's: a global monthly mean holds 32 MiB of hours, not a month of them.

use std::ops::Range;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::deskriptor::Statistic;
use crate::plan::{Plan, Representation};

/// The hours one batch fetches, at most (decoded, all variables; at least one hour).
pub const BATCH_BYTES: u64 = 32 << 20;

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

/// The batches of `plan`'s build, in time order: positions of hours in its time selection,
/// each at most `max_bytes` of decoded hours (but one hour).
pub fn batches(plan: &Plan, max_bytes: u64) -> Vec<Range<usize>> {
    let per_batch = (max_bytes / hour_bytes(plan)).max(1) as usize;
    let hours = plan.selections.get("time").map_or(1, |t| t.indices.len());
    (0..hours)
        .step_by(per_batch)
        .map(|a| a..(a + per_batch).min(hours))
        .collect()
}

/// The plan that fetches `hours`: `plan` with its time selection cut to them.
pub fn batch_plan(plan: &Plan, hours: Range<usize>) -> Plan {
    let mut sub = plan.clone();
    if let Some(t) = sub.selections.get_mut("time") {
        t.indices = t.indices[hours.clone()].to_vec();
        t.labels = t.labels[hours].to_vec();
    }
    sub
}

/// A build's reduction in progress: the file's arrays, and for `resample` the running
/// statistic of the period at hand, fed batch by batch in time order.
pub struct Reducer<'a> {
    rep: &'a Representation,
    /// One array per data variable, shaped as the file's, NaN until written.
    outputs: Vec<ArrayD<f32>>,
    /// Per data variable, per cell of a row: the running sum or extreme, and the count of
    /// present values, of the period in progress.
    running: Vec<(Vec<f32>, Vec<u32>)>,
}

impl<'a> Reducer<'a> {
    /// A reduction of `plan`'s build, whose representation is `rep`.
    pub fn new(plan: &Plan, rep: &'a Representation) -> Self {
        let outputs: Vec<ArrayD<f32>> = plan
            .layout
            .variables
            .iter()
            .filter(|v| v.values.is_none())
            .map(|v| {
                let shape: Vec<usize> = v.dims.iter().map(|&d| plan.layout.dims[d].1).collect();
                ArrayD::from_elem(IxDyn(&shape), f32::NAN)
            })
            .collect();
        let running = match &rep.periods {
            Some(p) => outputs
                .iter()
                .map(|o| {
                    let inner = o.len() / o.shape()[0].max(1);
                    (vec![start(p.how); inner], vec![0; inner])
                })
                .collect(),
            None => Vec::new(),
        };
        Reducer {
            rep,
            outputs,
            running,
        }
    }

    /// The bytes the reduction holds, whatever the batches.
    pub fn bytes(&self) -> u64 {
        let out: usize = self.outputs.iter().map(|a| a.len() * 4).sum();
        let run: usize = self
            .running
            .iter()
            .map(|(a, c)| (a.len() + c.len()) * 4)
            .sum();
        (out + run) as u64
    }

    /// Takes what the fetch read of `hours` (`fetched`, one array per data variable, hours
    /// first); batches come in time order.
    pub fn add(&mut self, hours: Range<usize>, fetched: Vec<ArrayD<f32>>) {
        for (k, array) in fetched.into_iter().enumerate() {
            let picked = match &self.rep.stations {
                Some(s) => pick(array, &s.at),
                None => array,
            };
            let n = picked.shape()[0];
            let inner = picked.len() / n.max(1);
            // In place when the fetch's array is in standard layout (it is), else copied.
            let picked = picked
                .into_shape_clone((n, inner))
                .expect("the element count is kept");
            let out = &mut self.outputs[k];
            let rows = out.shape()[0];
            let mut out = out
                .view_mut()
                .into_shape_with_order((rows, inner))
                .expect("outputs are in standard layout");
            let Some(periods) = &self.rep.periods else {
                out.slice_mut(ndarray::s![hours.clone(), ..])
                    .assign(&picked);
                continue;
            };
            let how = periods.how;
            let (acc, count) = &mut self.running[k];
            // The period of the batch's first hour; periods hold consecutive hours, some none.
            let mut p = periods.hours.partition_point(|r| r.end <= hours.start);
            for (i, row) in picked.outer_iter().enumerate() {
                let h = hours.start + i;
                while periods.hours[p].end <= h {
                    p += 1;
                }
                for ((a, c), &v) in acc.iter_mut().zip(count.iter_mut()).zip(row) {
                    accumulate(how, a, c, v);
                }
                if h + 1 == periods.hours[p].end {
                    let mut row = out.index_axis_mut(Axis(0), p);
                    for ((cell, a), c) in row.iter_mut().zip(acc.iter_mut()).zip(count.iter_mut()) {
                        *cell = result(how, *a, *c);
                        *a = start(how);
                        *c = 0;
                    }
                }
            }
        }
    }

    /// The file's arrays, one per data variable (a period without any selected hour NaN).
    pub fn finish(self) -> Vec<ArrayD<f32>> {
        self.outputs
    }
}

/// A running statistic's start: NaN for an extreme (no value yet), 0 for a sum.
fn start(how: Statistic) -> f32 {
    match how {
        Statistic::Min | Statistic::Max => f32::NAN,
        Statistic::Mean | Statistic::Sum => 0.0,
    }
}

/// Adds the value `v` of one more hour (skipped if missing) to the running `acc` and `count`.
/// As xarray (numpy's nansum, nanmean, nanmin, nanmax): a float32 sum in time order.
fn accumulate(how: Statistic, acc: &mut f32, count: &mut u32, v: f32) {
    if v.is_nan() {
        return;
    }
    *count += 1;
    *acc = match how {
        Statistic::Mean | Statistic::Sum => *acc + v,
        // f32::min and max of NaN (no value yet) and v are v.
        Statistic::Min => acc.min(v),
        Statistic::Max => acc.max(v),
    };
}

/// A period's value from its running `acc` and `count` (of present values): a mean is the
/// float32 sum divided by the count in f64, rounded to float32, as numpy's nanmean.
fn result(how: Statistic, acc: f32, count: u32) -> f32 {
    match how {
        Statistic::Mean if count == 0 => f32::NAN,
        Statistic::Mean => (f64::from(acc) / f64::from(count)) as f32,
        Statistic::Sum | Statistic::Min | Statistic::Max => acc,
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
        .into_shape_clone((outer, ny * nx))
        .expect("the element count is kept");
    let mut picked = Vec::with_capacity(outer * at.len());
    for row in grid.rows() {
        picked.extend(at.iter().map(|&(y, x)| row[y * nx + x]));
    }
    let mut out_shape = shape[..n - 2].to_vec();
    out_shape.push(at.len());
    ArrayD::from_shape_vec(IxDyn(&out_shape), picked).expect("sizes agree")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistic of one period's values (`count` hours; none: NaN), as the reducer takes
    /// it.
    fn statistic(how: Statistic, values: impl Iterator<Item = f32>, count: usize) -> f32 {
        if count == 0 {
            return f32::NAN;
        }
        let (mut acc, mut n) = (start(how), 0);
        for v in values {
            accumulate(how, &mut acc, &mut n, v);
        }
        result(how, acc, n)
    }

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
