//! Map images: one time step of one variable as a PNG — a colour grid on lat/lon axes, a
//! colour bar with the variable's units, and a title with the variable, time and level.
//!
//! Input: a [`Field`] (values in row-major latitude × longitude order, with their labels).
//! Output: PNG bytes. The grid is drawn equirectangular (one degree of latitude is as tall as
//! one degree of longitude is wide), north up, west left, whatever order the labels come in.
//! Colours span the step's own minimum and maximum (viridis); NaN cells are grey.

use embedded_graphics::mono_font::iso_8859_1::{FONT_6X10, FONT_7X13};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};

/// One 2-D slice to draw.
#[derive(Debug, Clone)]
pub struct Field {
    /// Values, `latitudes.len()` rows of `longitudes.len()` values.
    pub values: Vec<f32>,
    /// Latitude label of each row.
    pub latitudes: Vec<f64>,
    /// Longitude label of each column.
    pub longitudes: Vec<f64>,
    /// Title, e.g. the variable name and long name.
    pub title: String,
    /// Subtitle, e.g. the time and level.
    pub subtitle: String,
    /// Units of the values (for the colour bar).
    pub units: String,
}

/// Largest size of the grid part of the image, in pixels.
const MAX_W: u32 = 640;
const MAX_H: u32 = 440;
const MIN_SIDE: u32 = 24;
const LEFT: u32 = 64;
const TOP: u32 = 44;
const BOTTOM: u32 = 32;
const BAR_GAP: u32 = 14;
const BAR_W: u32 = 16;
const RIGHT: u32 = BAR_GAP + BAR_W + 86;
const NAN_GREY: [u8; 3] = [200, 200, 200];
const BACKGROUND: Rgb888 = Rgb888::WHITE;
const INK: Rgb888 = Rgb888::BLACK;

/// Error of rendering: only a malformed field (wrong number of values) or an encoder failure.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The values do not fill the grid.
    #[error("field has {values} values for a {rows}x{cols} grid")]
    Shape {
        /// Values given.
        values: usize,
        /// Rows (latitudes).
        rows: usize,
        /// Columns (longitudes).
        cols: usize,
    },
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// An RGB pixel buffer that embedded-graphics can draw on.
struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for _ in 0..width * height {
            rgb.extend_from_slice(&[BACKGROUND.r(), BACKGROUND.g(), BACKGROUND.b()]);
        }
        Canvas { width, height, rgb }
    }

    fn put(&mut self, x: u32, y: u32, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = ((y * self.width + x) * 3) as usize;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn png(&self) -> Result<Vec<u8>, RenderError> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.rgb)?;
        writer.finish()?;
        Ok(out)
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 {
                self.put(p.x as u32, p.y as u32, [c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// The grid's size in pixels: equirectangular, as large as fits in `MAX_W` × `MAX_H`.
fn grid_size(rows: usize, cols: usize) -> (u32, u32) {
    let (rows, cols) = (rows.max(1) as f64, cols.max(1) as f64);
    let scale = (f64::from(MAX_W) / cols).min(f64::from(MAX_H) / rows);
    let w = (cols * scale).round() as u32;
    let h = (rows * scale).round() as u32;
    (w.clamp(MIN_SIDE, MAX_W), h.clamp(MIN_SIDE, MAX_H))
}

/// Indices of `labels` in the order they are drawn (increasing when `ascending`).
fn order(labels: &[f64], ascending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..labels.len()).collect();
    idx.sort_by(|&a, &b| {
        let o = labels[a].total_cmp(&labels[b]);
        if ascending {
            o
        } else {
            o.reverse()
        }
    });
    idx
}

/// A "nice" tick spacing giving fewer than `max_ticks` ticks over `span`, and no finer than
/// `min_step` (the grid's own spacing: ticks between cells would label nothing).
fn tick_step(span: f64, max_ticks: usize, min_step: f64) -> f64 {
    const NICE: [f64; 12] = [
        0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0,
    ];
    NICE.iter()
        .copied()
        .find(|&s| span / s < max_ticks as f64 && s >= min_step - 1e-9)
        .unwrap_or(180.0)
}

/// Ticks at multiples of a nice step (at least `min_step`) inside `[lo, hi]` (`lo` if none).
fn ticks(lo: f64, hi: f64, max_ticks: usize, min_step: f64) -> Vec<f64> {
    if hi - lo <= 0.0 {
        return vec![lo];
    }
    let step = tick_step(hi - lo, max_ticks, min_step);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 && out.len() < 64 {
        out.push(t);
        t += step;
    }
    if out.is_empty() {
        out.push(lo);
    }
    out
}

fn degrees(v: f64, positive: char, negative: char) -> String {
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

/// Formats a colour-bar value with a precision fitting the range.
fn value_label(v: f64, span: f64) -> String {
    let digits = if span == 0.0 || !span.is_finite() {
        3
    } else {
        (2.0 - span.abs().log10().floor()).clamp(0.0, 6.0) as usize
    };
    if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-4) {
        format!("{v:.3e}")
    } else {
        format!("{v:.digits$}")
    }
}

fn viridis(t: f64) -> [u8; 3] {
    let c = colorous::VIRIDIS.eval_continuous(t.clamp(0.0, 1.0));
    [c.r, c.g, c.b]
}

/// Ticks of an axis whose cells (labels in drawing order) span `pixels`: `(pixel, label)`.
/// Evenly spaced labels get round values at their interpolated positions; uneven ones (a list
/// selection) get the labels of every k-th cell at the cell's centre, so no tick lies.
fn axis_ticks(labels: &[f64], pixels: u32, max_ticks: usize) -> Vec<(f64, f64)> {
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
        ticks(lo, hi, max_ticks, step.abs())
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

/// Renders `field` as a PNG image.
pub fn render_png(field: &Field) -> Result<Vec<u8>, RenderError> {
    let (rows, cols) = (field.latitudes.len(), field.longitudes.len());
    if field.values.len() != rows * cols || rows == 0 || cols == 0 {
        return Err(RenderError::Shape {
            values: field.values.len(),
            rows,
            cols,
        });
    }
    let (gw, gh) = grid_size(rows, cols);
    let width = LEFT + gw.max(200) + RIGHT;
    let height = TOP + gh + BOTTOM;
    let mut canvas = Canvas::new(width, height);
    let row_order = order(&field.latitudes, false); // north first
    let col_order = order(&field.longitudes, true); // west first

    let finite = field.values.iter().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(f64::from(v)), hi.max(f64::from(v)))
    });
    let has_data = lo.is_finite();
    let span = hi - lo;
    let colour = |v: f32| -> [u8; 3] {
        if !v.is_finite() {
            NAN_GREY
        } else if span > 0.0 {
            viridis((f64::from(v) - lo) / span)
        } else {
            viridis(0.5)
        }
    };

    // The grid: each pixel shows the cell under its centre.
    for py in 0..gh {
        let r = row_order[((py as usize * rows) / gh as usize).min(rows - 1)];
        for px in 0..gw {
            let c = col_order[((px as usize * cols) / gw as usize).min(cols - 1)];
            canvas.put(LEFT + px, TOP + py, colour(field.values[r * cols + c]));
        }
    }
    let ink = PrimitiveStyle::with_stroke(INK, 1);
    let _ = Rectangle::new(
        Point::new(LEFT as i32 - 1, TOP as i32 - 1),
        Size::new(gw + 2, gh + 2),
    )
    .into_styled(ink)
    .draw(&mut canvas);

    let small = MonoTextStyle::new(&FONT_6X10, INK);
    let big = MonoTextStyle::new(&FONT_7X13, INK);
    let centred = TextStyleBuilder::new()
        .alignment(Alignment::Center)
        .baseline(Baseline::Top)
        .build();
    let right_middle = TextStyleBuilder::new()
        .alignment(Alignment::Right)
        .baseline(Baseline::Middle)
        .build();
    let left_middle = TextStyleBuilder::new()
        .alignment(Alignment::Left)
        .baseline(Baseline::Middle)
        .build();
    let left_top = TextStyleBuilder::new()
        .alignment(Alignment::Left)
        .baseline(Baseline::Top)
        .build();

    // Longitude axis (bottom).
    let lons: Vec<f64> = col_order.iter().map(|&c| field.longitudes[c]).collect();
    for (pos, t) in axis_ticks(&lons, gw, (gw / 70).max(1) as usize) {
        let x = LEFT as i32 + pos as i32;
        let y = (TOP + gh) as i32;
        let _ = Line::new(Point::new(x, y), Point::new(x, y + 4))
            .into_styled(ink)
            .draw(&mut canvas);
        let _ = Text::with_text_style(&degrees(t, 'E', 'W'), Point::new(x, y + 7), small, centred)
            .draw(&mut canvas);
    }
    // Latitude axis (left).
    let lats: Vec<f64> = row_order.iter().map(|&r| field.latitudes[r]).collect();
    for (pos, t) in axis_ticks(&lats, gh, (gh / 40).max(1) as usize) {
        let y = TOP as i32 + pos as i32;
        let x = LEFT as i32 - 1;
        let _ = Line::new(Point::new(x - 4, y), Point::new(x, y))
            .into_styled(ink)
            .draw(&mut canvas);
        let _ = Text::with_text_style(
            &degrees(t, 'N', 'S'),
            Point::new(x - 6, y),
            small,
            right_middle,
        )
        .draw(&mut canvas);
    }

    // Title.
    let _ = Text::with_text_style(&field.title, Point::new(4, 4), big, left_top).draw(&mut canvas);
    let _ = Text::with_text_style(&field.subtitle, Point::new(4, 22), small, left_top)
        .draw(&mut canvas);

    // Colour bar, high values at the top, with the units above.
    let bar_x = LEFT + gw.max(200) + BAR_GAP;
    for py in 0..gh {
        let t = 1.0 - f64::from(py) / f64::from((gh - 1).max(1));
        let c = if has_data { viridis(t) } else { NAN_GREY };
        for px in 0..BAR_W {
            canvas.put(bar_x + px, TOP + py, c);
        }
    }
    let _ = Rectangle::new(
        Point::new(bar_x as i32 - 1, TOP as i32 - 1),
        Size::new(BAR_W + 2, gh + 2),
    )
    .into_styled(ink)
    .draw(&mut canvas);
    let units = if field.units.is_empty() {
        "(no units)".to_string()
    } else {
        field.units.clone()
    };
    let _ = Text::with_text_style(
        &units,
        Point::new(bar_x as i32, TOP as i32 - 13),
        small,
        left_top,
    )
    .draw(&mut canvas);
    let label_x = (bar_x + BAR_W + 5) as i32;
    if !has_data {
        let _ = Text::with_text_style(
            "no data",
            Point::new(label_x, (TOP + gh / 2) as i32),
            small,
            left_middle,
        )
        .draw(&mut canvas);
    } else {
        let n = if span > 0.0 { 5 } else { 1 };
        for k in 0..n {
            let frac = if n == 1 {
                0.5
            } else {
                k as f64 / (n - 1) as f64
            };
            let v = lo + frac * span;
            let y = TOP as i32 + ((1.0 - frac) * f64::from(gh - 1)) as i32;
            let _ = Line::new(
                Point::new((bar_x + BAR_W) as i32, y),
                Point::new((bar_x + BAR_W + 3) as i32, y),
            )
            .into_styled(ink)
            .draw(&mut canvas);
            let _ = Text::with_text_style(
                &value_label(v, span),
                Point::new(label_x, y),
                small,
                left_middle,
            )
            .draw(&mut canvas);
        }
    }
    if field.values.iter().any(|v| !v.is_finite()) && has_data {
        let _ = Text::with_text_style(
            "grey: no data (NaN)",
            Point::new(LEFT as i32, (TOP + gh + 20) as i32),
            small,
            left_top,
        )
        .draw(&mut canvas);
    }
    canvas.png()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn field(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f32) -> Field {
        Field {
            values: (0..rows * cols).map(|i| f(i / cols, i % cols)).collect(),
            latitudes: (0..rows).map(|r| 48.0 - r as f64 * 0.25).collect(),
            longitudes: (0..cols).map(|c| 8.0 + c as f64 * 0.25).collect(),
            title: "2m_temperature".into(),
            subtitle: "2023-01-01T11:00".into(),
            units: "K".into(),
        }
    }

    fn pixel(img: &(u32, u32, Vec<u8>), x: u32, y: u32) -> [u8; 3] {
        let i = ((y * img.0 + x) * 3) as usize;
        [img.2[i], img.2[i + 1], img.2[i + 2]]
    }

    #[test]
    fn north_is_up_and_colours_follow_values() {
        // Values grow northwards: the top row must be the brightest (viridis yellow end).
        let f = field(5, 5, |r, _| 300.0 - r as f32);
        let img = decode(&render_png(&f).unwrap());
        let (gw, gh) = grid_size(5, 5);
        let top = pixel(&img, LEFT + gw / 2, TOP + 2);
        let bottom = pixel(&img, LEFT + gw / 2, TOP + gh - 3);
        assert_eq!(top, viridis(1.0));
        assert_eq!(bottom, viridis(0.0));
    }

    #[test]
    fn rows_given_south_first_are_still_drawn_north_up() {
        let mut f = field(4, 3, |r, _| r as f32);
        f.latitudes.reverse(); // row 0 is now the southernmost, and holds the smallest value
        let img = decode(&render_png(&f).unwrap());
        let (gw, gh) = grid_size(4, 3);
        assert_eq!(pixel(&img, LEFT + gw / 2, TOP + 1), viridis(1.0));
        assert_eq!(pixel(&img, LEFT + gw / 2, TOP + gh - 2), viridis(0.0));
    }

    #[test]
    fn nan_cells_are_grey_and_an_all_nan_field_renders() {
        let f = field(2, 2, |r, c| if r == 0 && c == 0 { f32::NAN } else { 1.0 });
        let img = decode(&render_png(&f).unwrap());
        assert_eq!(pixel(&img, LEFT + 1, TOP + 1), NAN_GREY);
        let all_nan = field(3, 3, |_, _| f32::NAN);
        let img = decode(&render_png(&all_nan).unwrap());
        assert_eq!(pixel(&img, LEFT + 5, TOP + 5), NAN_GREY);
    }

    #[test]
    fn the_image_has_text_and_a_sane_size() {
        let f = field(721, 1440, |r, c| (r * c) as f32);
        let img = decode(&render_png(&f).unwrap());
        assert!(img.0 <= LEFT + MAX_W + RIGHT && img.1 <= TOP + MAX_H + BOTTOM);
        // The title area holds dark text pixels.
        let dark = (0..LEFT + 100)
            .flat_map(|x| (4..17).map(move |y| (x, y)))
            .filter(|&(x, y)| pixel(&img, x, y) == [0, 0, 0])
            .count();
        assert!(dark > 20, "title drawn ({dark} dark pixels)");
    }

    #[test]
    fn a_wrong_shape_is_an_error() {
        let mut f = field(2, 2, |_, _| 0.0);
        f.values.pop();
        assert!(matches!(render_png(&f), Err(RenderError::Shape { .. })));
    }

    #[test]
    fn labels_read_well() {
        assert_eq!(degrees(8.0, 'E', 'W'), "8°E");
        assert_eq!(degrees(-3.5, 'E', 'W'), "3.5°W");
        assert_eq!(degrees(0.0, 'N', 'S'), "0°");
        assert_eq!(ticks(47.0, 48.0, 4, 0.25), vec![47.0, 47.5, 48.0]);
        assert_eq!(ticks(47.0, 48.0, 11, 0.5), vec![47.0, 47.5, 48.0]);
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
        assert_eq!(value_label(273.456, 10.0), "273.5");
    }
}
