//! Longitude conventions: labels in 0..360 select as stored; a negative label switches the
//! selection to −180..180, where the points are relabelled and sorted, so a range may cross 0°.
//!
//! Input: a selector and the longitude coordinate. Output: positions and (possibly relabelled)
//! labels, increasing. Invariant: one selector uses one convention; a value outside it, or a
//! range running east to west, is an error that says how to cross 0°.

use super::{number, stepped, Resolved};
use crate::deskriptor::{DeskriptorError, Selector};
use crate::source::Coordinate;

/// Longitude: labels in 0..360 select as stored; any negative label switches the selection to
/// −180..180, where points are relabelled (`v - 360` for `v >= 180`) and sorted increasing.
pub(super) fn resolve_longitude(
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

#[cfg(test)]
mod tests {
    use crate::select::resolve;
    use crate::select::tests::{longitude, sel};

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
}
