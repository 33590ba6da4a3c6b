//! Where ticks go and how they read: round degrees on the axes, round values (steps of 1, 2
//! or 5 times a power of ten) on the colour bar.

/// A "nice" degree spacing giving fewer than `max_ticks` ticks over `span`, and no finer than
/// `min_step` (the grid's own spacing: ticks between cells would label nothing).
fn degree_step(span: f64, max_ticks: usize, min_step: f64) -> f64 {
    const NICE: [f64; 12] = [
        0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0,
    ];
    NICE.iter()
        .copied()
        .find(|&s| span / s < max_ticks as f64 && s >= min_step - 1e-9)
        .unwrap_or(180.0)
}

/// Multiples of `step` inside `[lo, hi]` (at most 64).
fn multiples(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil() as i64;
    (first..)
        .map(|k| k as f64 * step)
        .take_while(|&t| t <= hi + step * 1e-9)
        .take(64)
        .collect()
}

/// Degree ticks at multiples of a nice step (at least `min_step`) inside `[lo, hi]` (`lo`
/// if none).
pub fn degree_ticks(lo: f64, hi: f64, max_ticks: usize, min_step: f64) -> Vec<f64> {
    if hi - lo <= 0.0 {
        return vec![lo];
    }
    let out = multiples(lo, hi, degree_step(hi - lo, max_ticks, min_step));
    if out.is_empty() {
        vec![lo]
    } else {
        out
    }
}

/// The smallest step of 1, 2 or 5 times a power of ten that puts at most `max_ticks` ticks
/// over `span`.
pub fn value_step(span: f64, max_ticks: usize) -> f64 {
    let raw = span / max_ticks.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// Colour-bar ticks: round values (see [`value_step`]) inside `[lo, hi]`, at most
/// `max_ticks`, and the step they were made with. A range of one value gets that value.
pub fn value_ticks(lo: f64, hi: f64, max_ticks: usize) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return (vec![lo], 0.0);
    }
    let step = value_step(span, max_ticks);
    let ticks = multiples(lo, hi, step);
    if ticks.is_empty() {
        (vec![lo], step)
    } else {
        (ticks, step)
    }
}

/// A value on a `step` grid written with just the decimals the step needs (`-0` written `0`).
pub fn value_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e6 || v.abs() < 1e-4 {
        return format!("{v:.2e}");
    }
    let decimals = if step > 0.0 && step.is_finite() {
        (-(step.log10().floor())).clamp(0.0, 6.0) as usize
    } else {
        3
    };
    let text = format!("{v:.decimals$}");
    if text
        .trim_start_matches('-')
        .trim_matches(['0', '.'])
        .is_empty()
    {
        "0".into()
    } else {
        text.replace('-', "−")
    }
}

/// A latitude or longitude written `8°E`, `3.5°W`, `0°`.
pub fn degrees(v: f64, positive: char, negative: char) -> String {
    let a = v.abs();
    let text = if (a - a.round()).abs() < 1e-9 {
        format!("{a:.0}")
    } else {
        format!("{a}")
    };
    match v {
        v if v > 0.0 => format!("{text}°{positive}"),
        v if v < 0.0 => format!("{text}°{negative}"),
        _ => format!("{text}°"),
    }
}

/// Ticks of an axis whose cells (labels in drawing order) span `pixels`: `(pixel, label)`.
/// Evenly spaced labels get round values at their interpolated positions; uneven ones (a list
/// selection) get the labels of every k-th cell at the cell's centre, so no tick lies.
pub fn axis_ticks(labels: &[f64], pixels: u32, max_ticks: usize) -> Vec<(f64, f64)> {
    let n = labels.len();
    let cell = f64::from(pixels) / n as f64;
    let centre = |i: f64| (i + 0.5) * cell;
    if n == 1 {
        return vec![(centre(0.0), labels[0])];
    }
    let (first, last) = (labels[0], labels[n - 1]);
    let step = (last - first) / (n - 1) as f64;
    let even = labels
        .windows(2)
        .all(|w| ((w[1] - w[0]) - step).abs() <= 1e-6 * step.abs().max(1e-9));
    if even && step != 0.0 {
        let (lo, hi) = if first < last {
            (first, last)
        } else {
            (last, first)
        };
        degree_ticks(lo, hi, max_ticks, step.abs())
            .into_iter()
            .map(|t| (centre((t - first) / step), t))
            .collect()
    } else {
        let every = n.div_ceil(max_ticks.max(1));
        (0..n)
            .step_by(every)
            .map(|i| (centre(i as f64), labels[i]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_bar_ticks_fall_on_round_values() {
        // The example: 248.5 … 290.1 K used to be labelled 248.5, 258.6, 268.8 …
        let (t, step) = value_ticks(248.46, 290.07, 6);
        assert_eq!(step, 10.0);
        assert_eq!(t, vec![250.0, 260.0, 270.0, 280.0, 290.0]);
        let (t, step) = value_ticks(-0.013, 0.021, 5);
        assert_eq!(step, 0.01);
        assert_eq!(
            t.iter().map(|&v| value_label(v, step)).collect::<Vec<_>>(),
            ["−0.01", "0", "0.01", "0.02"]
        );
        assert_eq!(value_step(3.0, 6), 0.5);
        assert_eq!(value_step(1200.0, 6), 200.0);
        assert_eq!(value_step(70_000.0, 5), 20_000.0);
        assert_eq!(value_ticks(5.0, 5.0, 6), (vec![5.0], 0.0));
        assert_eq!(value_label(101_325.0, 20_000.0), "101325");
        assert_eq!(value_label(2.5e-5, 1e-5), "2.50e-5");
    }

    #[test]
    fn axis_labels_read_well() {
        assert_eq!(degrees(8.0, 'E', 'W'), "8°E");
        assert_eq!(degrees(-3.5, 'E', 'W'), "3.5°W");
        assert_eq!(degrees(0.0, 'N', 'S'), "0°");
        assert_eq!(degree_ticks(47.0, 48.0, 4, 0.25), vec![47.0, 47.5, 48.0]);
        assert_eq!(degree_ticks(47.0, 48.0, 11, 0.5), vec![47.0, 47.5, 48.0]);
        // Even labels: round values, interpolated (north first: 48 at the top cell's centre).
        let lat = [48.0, 47.75, 47.5, 47.25, 47.0];
        assert_eq!(
            axis_ticks(&lat, 100, 4),
            vec![(90.0, 47.0), (50.0, 47.5), (10.0, 48.0)]
        );
        // Uneven labels (a list): the cells' own labels at their centres.
        let listed = [48.0, 47.25, 47.0];
        assert_eq!(
            axis_ticks(&listed, 90, 4),
            vec![(15.0, 48.0), (45.0, 47.25), (75.0, 47.0)]
        );
        assert_eq!(axis_ticks(&[8.5], 40, 3), vec![(20.0, 8.5)]);
    }
}
