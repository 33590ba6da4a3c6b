//! Numeric coordinates (latitude, level, any other but time and longitude): a range in either
//! order keeps the source's order, exact labels (one or a list) are looked up in O(log n) each.
//!
//! Input: a selector and a strictly monotonic coordinate. Output: positions and labels as
//! stored. Invariant: an exact label is found only when it is `==` to a stored one; a missing
//! one is an error naming the nearest.

use std::collections::HashMap;

use super::{number, stepped, Resolved};
use crate::deskriptor::{DeskriptorError, Selector};
use crate::source::Coordinate;

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
pub(super) fn resolve_numeric(
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

#[cfg(test)]
mod tests {
    use crate::select::resolve;
    use crate::select::tests::{coord, latitude, list_of, longitude, sel};

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
    fn exact_labels_must_exist() {
        let e = resolve(1, Some(&sel("47.1")), &latitude()).unwrap_err();
        assert!(e.message.contains("nearest: 47"), "{e}");
        let r = resolve(1, Some(&sel("[47, 48]")), &latitude()).unwrap();
        assert_eq!(r.labels, vec![47.0, 48.0], "list order is kept");
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
