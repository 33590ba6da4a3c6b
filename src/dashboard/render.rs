//! Map images: one time step of one variable as a PNG — a colour grid on lat/lon axes with
//! coastlines and country borders, a colour bar with round values and the variable's units,
//! and a title with the variable, time and level.
//!
//! Input: a [`Field`] (values in row-major latitude × longitude order, with their labels).
//! Output: PNG bytes. The grid is drawn equirectangular (one degree of latitude is as tall as
//! one degree of longitude is wide), north up, west left, whatever order the labels come in.
//! Colours span the step's own minimum and maximum, or a range fixed for every step
//! ([`Field::range`]) (viridis); NaN cells are grey. Text is DejaVu Sans (`render/text.rs`);
//! lines are Natural Earth's (`render/coast.rs`).

mod canvas;
mod coast;
mod text;
mod ticks;

use canvas::Canvas;
use text::Anchor;

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
    /// The colour range, when fixed (e.g. over every step of a file); else the step's own.
    pub range: Option<(f64, f64)>,
    /// Draw country borders (coastlines are always drawn).
    pub borders: bool,
}

/// Largest size of the grid part of the image, in pixels.
const MAX_W: u32 = 640;
const MAX_H: u32 = 440;
const MIN_SIDE: u32 = 24;
const LEFT: u32 = 70;
const TOP: u32 = 52;
const BOTTOM: u32 = 40;
const BAR_GAP: u32 = 14;
const BAR_W: u32 = 16;
const RIGHT: u32 = BAR_GAP + BAR_W + 90;
const NAN_GREY: [u8; 3] = [200, 200, 200];
const INK: [u8; 3] = [0, 0, 0];
/// Text sizes, in pixels.
const TITLE: f32 = 15.0;
const SMALL: f32 = 11.5;

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

fn viridis(t: f64) -> [u8; 3] {
    let c = colorous::VIRIDIS.eval_continuous(t.clamp(0.0, 1.0));
    [c.r, c.g, c.b]
}

/// The colour range of a field: the fixed one, else its finite values' own; `None` when it
/// has no finite value.
fn colour_range(field: &Field) -> Option<(f64, f64)> {
    if let Some((lo, hi)) = field
        .range
        .filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
    {
        return Some((lo.min(hi), lo.max(hi)));
    }
    let (lo, hi) = field
        .values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
    lo.is_finite().then_some((lo, hi))
}

/// A drawn map's layout on the canvas.
struct Frame {
    /// The grid's box: x, y, width, height.
    grid: (u32, u32, u32, u32),
    /// Row (latitude) indices north first, column (longitude) indices west first.
    rows: Vec<usize>,
    cols: Vec<usize>,
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
    let mut canvas = Canvas::new(LEFT + gw.max(200) + RIGHT, TOP + gh + BOTTOM);
    let frame = Frame {
        grid: (LEFT, TOP, gw, gh),
        rows: order(&field.latitudes, false),
        cols: order(&field.longitudes, true),
    };
    let range = colour_range(field);
    draw_grid(&mut canvas, field, &frame, range);
    draw_lines(&mut canvas, field, &frame);
    canvas.frame(LEFT as i32 - 1, TOP as i32 - 1, gw + 2, gh + 2, INK);
    draw_axes(&mut canvas, field, &frame);
    text::draw(
        &mut canvas,
        &field.title,
        6.0,
        6.0,
        TITLE,
        Anchor::LeftTop,
        INK,
    );
    text::draw(
        &mut canvas,
        &field.subtitle,
        6.0,
        27.0,
        SMALL,
        Anchor::LeftTop,
        INK,
    );
    draw_colour_bar(&mut canvas, field, &frame, range);
    if range.is_some() && field.values.iter().any(|v| !v.is_finite()) {
        let y = (TOP + gh + 24) as f32;
        text::draw(
            &mut canvas,
            "grey: no data (NaN)",
            LEFT as f32,
            y,
            SMALL,
            Anchor::LeftTop,
            INK,
        );
    }
    canvas.png()
}

/// The cells: each pixel shows the cell under its centre.
fn draw_grid(canvas: &mut Canvas, field: &Field, frame: &Frame, range: Option<(f64, f64)>) {
    let (x0, y0, gw, gh) = frame.grid;
    let (rows, cols) = (frame.rows.len(), frame.cols.len());
    let colour = |v: f32| -> [u8; 3] {
        match range {
            _ if !v.is_finite() => NAN_GREY,
            Some((lo, hi)) if hi > lo => viridis((f64::from(v) - lo) / (hi - lo)),
            _ => viridis(0.5),
        }
    };
    for py in 0..gh {
        let r = frame.rows[((py as usize * rows) / gh as usize).min(rows - 1)];
        for px in 0..gw {
            let c = frame.cols[((px as usize * cols) / gw as usize).min(cols - 1)];
            canvas.put(x0 + px, y0 + py, colour(field.values[r * cols + c]));
        }
    }
}

/// Country borders, then coastlines, over the cells (evenly spaced grids only).
fn draw_lines(canvas: &mut Canvas, field: &Field, frame: &Frame) {
    let lons: Vec<f64> = frame.cols.iter().map(|&c| field.longitudes[c]).collect();
    let lats: Vec<f64> = frame.rows.iter().map(|&r| field.latitudes[r]).collect();
    let (x, y, w, h) = frame.grid;
    let Some(projection) = coast::Projection::of(&lons, &lats, (x as i32, y as i32, w, h)) else {
        return;
    };
    if field.borders {
        coast::draw(canvas, &projection, coast::Layer::Borders, coast::BORDER);
    }
    coast::draw(canvas, &projection, coast::Layer::Coast, coast::COAST);
}

/// Longitude ticks below the grid, latitude ticks left of it.
fn draw_axes(canvas: &mut Canvas, field: &Field, frame: &Frame) {
    let (x0, y0, gw, gh) = frame.grid;
    let lons: Vec<f64> = frame.cols.iter().map(|&c| field.longitudes[c]).collect();
    for (pos, t) in ticks::axis_ticks(&lons, gw, (gw / 70).max(1) as usize) {
        let x = x0 as i32 + pos as i32;
        let y = (y0 + gh) as i32;
        canvas.line((x, y), (x, y + 4), INK);
        let label = ticks::degrees(t, 'E', 'W');
        text::draw(
            canvas,
            &label,
            x as f32,
            (y + 7) as f32,
            SMALL,
            Anchor::CentreTop,
            INK,
        );
    }
    let lats: Vec<f64> = frame.rows.iter().map(|&r| field.latitudes[r]).collect();
    for (pos, t) in ticks::axis_ticks(&lats, gh, (gh / 40).max(1) as usize) {
        let y = y0 as i32 + pos as i32;
        let x = x0 as i32 - 1;
        canvas.line((x - 4, y), (x, y), INK);
        let label = ticks::degrees(t, 'N', 'S');
        text::draw(
            canvas,
            &label,
            (x - 6) as f32,
            y as f32,
            SMALL,
            Anchor::RightMiddle,
            INK,
        );
    }
}

/// The colour bar right of the grid, high values at the top, ticks on round values, the
/// units above it.
fn draw_colour_bar(canvas: &mut Canvas, field: &Field, frame: &Frame, range: Option<(f64, f64)>) {
    let (x0, y0, gw, gh) = frame.grid;
    let bar_x = x0 + gw.max(200) + BAR_GAP;
    for py in 0..gh {
        let t = 1.0 - f64::from(py) / f64::from((gh - 1).max(1));
        let c = if range.is_some() {
            viridis(t)
        } else {
            NAN_GREY
        };
        for px in 0..BAR_W {
            canvas.put(bar_x + px, y0 + py, c);
        }
    }
    canvas.frame(bar_x as i32 - 1, y0 as i32 - 1, BAR_W + 2, gh + 2, INK);
    let units = if field.units.is_empty() {
        "(no units)"
    } else {
        field.units.as_str()
    };
    text::draw(
        canvas,
        units,
        bar_x as f32,
        (y0 - 16) as f32,
        SMALL,
        Anchor::LeftTop,
        INK,
    );
    let label_x = (bar_x + BAR_W + 6) as f32;
    let Some((lo, hi)) = range else {
        let y = (y0 + gh / 2) as f32;
        text::draw(
            canvas,
            "no data",
            label_x,
            y,
            SMALL,
            Anchor::LeftMiddle,
            INK,
        );
        return;
    };
    let (values, step) = ticks::value_ticks(lo, hi, (gh / 45).clamp(2, 8) as usize);
    for v in values {
        let frac = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        let y = y0 as i32 + ((1.0 - frac) * f64::from(gh - 1)).round() as i32;
        canvas.line(
            ((bar_x + BAR_W) as i32, y),
            ((bar_x + BAR_W + 3) as i32, y),
            INK,
        );
        let label = ticks::value_label(v, step);
        text::draw(
            canvas,
            &label,
            label_x,
            y as f32,
            SMALL,
            Anchor::LeftMiddle,
            INK,
        );
    }
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
            range: None,
            borders: true,
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
    fn a_fixed_range_colours_every_step_alike() {
        let mut f = field(3, 3, |_, c| 5.0 + c as f32);
        assert_eq!(colour_range(&f), Some((5.0, 7.0)), "the step's own range");
        f.range = Some((10.0, 0.0));
        assert_eq!(
            colour_range(&f),
            Some((0.0, 10.0)),
            "fixed, in either order"
        );
        let img = decode(&render_png(&f).unwrap());
        let (gw, _) = grid_size(3, 3);
        // Value 5 is the middle of 0..10, not the bottom of 5..7.
        assert_eq!(pixel(&img, LEFT + 2, TOP + 2), viridis(0.5));
        assert_ne!(pixel(&img, LEFT + gw - 3, TOP + 2), viridis(1.0));
        f.range = Some((f64::NAN, 1.0));
        assert_eq!(
            colour_range(&f),
            Some((5.0, 7.0)),
            "a broken range is ignored"
        );
    }

    #[test]
    fn a_wrong_shape_is_an_error() {
        let mut f = field(2, 2, |_, _| 0.0);
        f.values.pop();
        assert!(matches!(render_png(&f), Err(RenderError::Shape { .. })));
    }
}
