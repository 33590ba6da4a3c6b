//! Coastlines and country borders on maps, from Natural Earth (public domain) as the npm
//! package `world-atlas` 2.0.2 ships it, converted by `scripts/make_map_data.py` into
//! `assets/maps/`: polylines of (longitude, latitude) in hundredths of a degree, cut at the
//! antimeridian (no segment crosses ±180°), the closing edges of polygons along ±180° and the
//! South Pole dropped. 1:110m for wide views, 1:50m for regions (360 KB in all).
//!
//! A map's longitudes may run 0° → 360° (ERA5's own labels) or −180° → 180° (a selection
//! across 0°, relabelled): each line is drawn at whichever of −360°, 0° and +360° offsets
//! falls in the view, so both conventions and both seams get their coasts.

use std::sync::OnceLock;

use super::canvas::Canvas;

const COAST_110M: &[u8] = include_bytes!("../../../assets/maps/coast-110m.bin");
const COAST_50M: &[u8] = include_bytes!("../../../assets/maps/coast-50m.bin");
const BORDERS_110M: &[u8] = include_bytes!("../../../assets/maps/borders-110m.bin");
const BORDERS_50M: &[u8] = include_bytes!("../../../assets/maps/borders-50m.bin");

/// Views at least this wide (degrees of longitude) get the 1:110m lines; narrower, 1:50m.
const WIDE: f64 = 100.0;

/// Colour of coastlines.
pub const COAST: [u8; 3] = [0, 0, 0];
/// Colour of country borders.
pub const BORDER: [u8; 3] = [235, 235, 235];

/// One polyline and its bounding box.
#[derive(Debug)]
struct Polyline {
    /// West, south, east, north, in degrees.
    bbox: [f64; 4],
    /// (longitude, latitude) in degrees.
    points: Vec<(f64, f64)>,
}

/// Decodes the shipped format: repeated `n: u32`, then `n` × (`lon: i16`, `lat: i16`) in
/// hundredths of a degree, little-endian. A truncated tail is ignored.
fn parse(bytes: &[u8]) -> Vec<Polyline> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 4) {
        let n = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
        at += 4;
        let Some(body) = bytes.get(at..at + 4 * n) else {
            break;
        };
        at += 4 * n;
        let points: Vec<(f64, f64)> = body
            .chunks_exact(4)
            .map(|p| {
                let lon = i16::from_le_bytes([p[0], p[1]]);
                let lat = i16::from_le_bytes([p[2], p[3]]);
                (f64::from(lon) / 100.0, f64::from(lat) / 100.0)
            })
            .collect();
        let mut bbox = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for &(lon, lat) in &points {
            bbox = [
                bbox[0].min(lon),
                bbox[1].min(lat),
                bbox[2].max(lon),
                bbox[3].max(lat),
            ];
        }
        out.push(Polyline { bbox, points });
    }
    out
}

/// Which lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Coastlines (outlines of land).
    Coast,
    /// Land borders between countries.
    Borders,
}

fn lines(layer: Layer, wide: bool) -> &'static [Polyline] {
    static SETS: [OnceLock<Vec<Polyline>>; 4] = [const { OnceLock::new() }; 4];
    let (i, bytes) = match (layer, wide) {
        (Layer::Coast, true) => (0, COAST_110M),
        (Layer::Coast, false) => (1, COAST_50M),
        (Layer::Borders, true) => (2, BORDERS_110M),
        (Layer::Borders, false) => (3, BORDERS_50M),
    };
    SETS[i].get_or_init(|| parse(bytes))
}

/// Where degrees land on a grid of evenly spaced cells: the centre of the first cell (west,
/// north) and pixels per degree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    /// Longitude and latitude at the centre of the top-left cell.
    pub origin: (f64, f64),
    /// Pixel of that centre, on the canvas.
    pub origin_px: (f64, f64),
    /// Pixels per degree east and per degree south.
    pub scale: (f64, f64),
    /// The grid's box on the canvas: x, y, width, height.
    pub clip: (i32, i32, u32, u32),
}

impl Projection {
    /// The projection of a grid whose columns have `lons` (west to east) and rows `lats`
    /// (north to south), drawn in `clip`; `None` unless both are evenly spaced (a list of
    /// positions has no linear map to draw lines on).
    pub fn of(lons: &[f64], lats: &[f64], clip: (i32, i32, u32, u32)) -> Option<Projection> {
        let step = |v: &[f64]| -> Option<f64> {
            if v.len() < 2 {
                return None;
            }
            let s = (v[v.len() - 1] - v[0]) / (v.len() - 1) as f64;
            let even = v
                .windows(2)
                .all(|w| ((w[1] - w[0]) - s).abs() <= 1e-6 * s.abs());
            (even && s != 0.0).then_some(s.abs())
        };
        let (dx, dy) = (step(lons)?, step(lats)?);
        let cell_w = f64::from(clip.2) / lons.len() as f64;
        let cell_h = f64::from(clip.3) / lats.len() as f64;
        Some(Projection {
            origin: (lons[0], lats[0]),
            origin_px: (
                f64::from(clip.0) + cell_w / 2.0,
                f64::from(clip.1) + cell_h / 2.0,
            ),
            scale: (cell_w / dx, cell_h / dy),
            clip,
        })
    }

    /// The canvas pixel of a point.
    pub fn pixel(&self, lon: f64, lat: f64) -> (f64, f64) {
        (
            self.origin_px.0 + (lon - self.origin.0) * self.scale.0,
            self.origin_px.1 + (self.origin.1 - lat) * self.scale.1,
        )
    }

    /// The view in degrees: west, south, east, north (to the cells' outer edges).
    fn view(&self) -> [f64; 4] {
        let (x, y, w, h) = self.clip;
        let west = self.origin.0 - (self.origin_px.0 - f64::from(x)) / self.scale.0;
        let north = self.origin.1 + (self.origin_px.1 - f64::from(y)) / self.scale.1;
        let east = west + f64::from(w) / self.scale.0;
        let south = north - f64::from(h) / self.scale.1;
        [west, south, east, north]
    }
}

/// Draws `layer` over the grid of `projection`, in `colour`; returns the segments drawn.
pub fn draw(canvas: &mut Canvas, projection: &Projection, layer: Layer, colour: [u8; 3]) -> usize {
    let view = projection.view();
    let wide = view[2] - view[0] >= WIDE;
    let mut drawn = 0;
    for line in lines(layer, wide) {
        if line.bbox[3] < view[1] || line.bbox[1] > view[3] {
            continue;
        }
        for offset in [-360.0, 0.0, 360.0] {
            if line.bbox[2] + offset < view[0] || line.bbox[0] + offset > view[2] {
                continue;
            }
            let mut previous: Option<(i32, i32)> = None;
            for &(lon, lat) in &line.points {
                let (x, y) = projection.pixel(lon + offset, lat);
                let here = (x.round() as i32, y.round() as i32);
                if let Some(p) = previous.filter(|&p| p != here) {
                    canvas.clipped_line(p, here, colour, projection.clip);
                    drawn += 1;
                }
                previous = Some(here);
            }
        }
    }
    drawn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_lines_parse_and_stay_on_the_globe() {
        for (layer, wide, at_least) in [
            (Layer::Coast, true, 100),
            (Layer::Coast, false, 1000),
            (Layer::Borders, true, 300),
            (Layer::Borders, false, 300),
        ] {
            let set = lines(layer, wide);
            assert!(set.len() >= at_least, "{layer:?} {wide}: {}", set.len());
            for l in set {
                assert!(l.points.len() >= 2);
                assert!(l.bbox[0] >= -180.0 && l.bbox[2] <= 180.0);
                assert!(l.bbox[1] >= -90.0 && l.bbox[3] <= 90.0);
                // No segment crosses the antimeridian.
                assert!(l.points.windows(2).all(|w| (w[1].0 - w[0].0).abs() < 180.0));
            }
        }
    }

    /// Whether a coast pixel is within `r` pixels of the point's projection.
    fn coast_near(canvas: &Canvas, p: &Projection, lon: f64, lat: f64, r: i32) -> bool {
        let (x, y) = p.pixel(lon, lat);
        (-r..=r).any(|dx| {
            (-r..=r).any(|dy| {
                let (cx, cy) = (x.round() as i32 + dx, y.round() as i32 + dy);
                cx >= 0 && cy >= 0 && canvas.get(cx as u32, cy as u32) == COAST
            })
        })
    }

    #[test]
    fn coasts_fall_where_they_are_in_both_longitude_conventions() {
        // Europe at 0.25°: 40° wide, 30° tall, 4 pixels a cell.
        for (west, name) in [(-15.0, "-180..180"), (345.0, "0..360")] {
            let lons: Vec<f64> = (0..160).map(|i| west + 0.25 * i as f64).collect();
            let lats: Vec<f64> = (0..120).map(|i| 70.0 - 0.25 * i as f64).collect();
            let mut canvas = Canvas::new(700, 520);
            let p = Projection::of(&lons, &lats, (10, 10, 640, 480)).unwrap();
            assert!(draw(&mut canvas, &p, Layer::Coast, COAST) > 500, "{name}");
            // Land's End, Cape Finisterre, Brest (on the coast), all west of 0°.
            let offset = if west > 180.0 { 360.0 } else { 0.0 };
            for (lon, lat) in [(-5.71, 50.07), (-9.27, 42.88), (-4.49, 48.39)] {
                assert!(
                    coast_near(&canvas, &p, lon + offset, lat, 3),
                    "{name}: ({lon}, {lat})"
                );
            }
            // Mid-Atlantic and central France: no coast.
            for (lon, lat) in [(-12.0, 45.0), (2.5, 46.5)] {
                let (x, y) = p.pixel(lon + offset, lat);
                assert_eq!(
                    canvas.get(x as u32, y as u32),
                    [255; 3],
                    "{name}: ({lon}, {lat})"
                );
            }
        }
    }

    #[test]
    fn coasts_continue_across_the_antimeridian() {
        // 150°E → 150°W written 150 … 210 (ERA5's convention): New Zealand west of the seam,
        // Tonga east of it (175.2°W, drawn at 184.8).
        let lons: Vec<f64> = (0..241).map(|i| 150.0 + 0.25 * i as f64).collect();
        let lats: Vec<f64> = (0..161).map(|i| -10.0 - 0.25 * i as f64).collect();
        let mut canvas = Canvas::new(520, 380);
        let p = Projection::of(&lons, &lats, (10, 10, 482, 322)).unwrap();
        assert!(draw(&mut canvas, &p, Layer::Coast, COAST) > 100);
        assert!(coast_near(&canvas, &p, 174.78, -41.29, 2), "Wellington");
        assert!(coast_near(&canvas, &p, 184.8, -21.2, 2), "Tongatapu");
        let (x, y) = p.pixel(195.0, -30.0);
        assert_eq!(canvas.get(x as u32, y as u32), [255; 3], "open Pacific");
    }

    #[test]
    fn lists_of_positions_get_no_lines_and_lines_stay_inside_the_grid() {
        let uneven = [1.0, 2.0, 4.0];
        assert!(Projection::of(&uneven, &[3.0, 2.0], (0, 0, 30, 20)).is_none());
        // The whole globe in a grid smaller than the canvas: nothing drawn outside it.
        let lons: Vec<f64> = (0..360).map(f64::from).collect();
        let lats: Vec<f64> = (0..181).map(|i| 90.0 - f64::from(i)).collect();
        let mut canvas = Canvas::new(400, 220);
        let p = Projection::of(&lons, &lats, (20, 20, 360, 181)).unwrap();
        assert!(draw(&mut canvas, &p, Layer::Coast, COAST) > 1000);
        for x in 0..400 {
            for y in 0..220 {
                let inside = (20..380).contains(&x) && (20..201).contains(&y);
                if !inside {
                    assert_eq!(canvas.get(x, y), [255; 3], "({x}, {y})");
                }
            }
        }
    }
}
