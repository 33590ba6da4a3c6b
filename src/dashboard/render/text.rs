//! Text on maps: DejaVu Sans (a subset of Latin-1 and a few symbols, 25 KB, shipped in
//! `assets/fonts/`), rasterised with anti-aliasing by `ab_glyph`.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};

use super::canvas::Canvas;

/// The font file, under the Bitstream Vera / DejaVu licence (`assets/fonts/DejaVu-LICENSE.txt`).
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");

fn font() -> &'static FontRef<'static> {
    static PARSED: OnceLock<FontRef<'static>> = OnceLock::new();
    PARSED.get_or_init(|| FontRef::try_from_slice(FONT).expect("the shipped font parses"))
}

/// Where a text's anchor point is on its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Left end, vertical middle.
    LeftMiddle,
    /// Right end, vertical middle.
    RightMiddle,
    /// Horizontal centre, top.
    CentreTop,
    /// Left end, top.
    LeftTop,
}

/// Width of `text` at `size` pixels, in pixels.
pub fn width(text: &str, size: f32) -> f32 {
    let font = font().as_scaled(PxScale::from(size));
    let mut w = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = previous {
            w += font.kern(p, id);
        }
        w += font.h_advance(id);
        previous = Some(id);
    }
    w
}

/// Draws `text` at `size` pixels in `colour`, its `anchor` at (`x`, `y`), blended over what
/// is there.
pub fn draw(
    canvas: &mut Canvas,
    text: &str,
    x: f32,
    y: f32,
    size: f32,
    anchor: Anchor,
    colour: [u8; 3],
) {
    let scaled = font().as_scaled(PxScale::from(size));
    let w = width(text, size);
    let (ascent, descent) = (scaled.ascent(), scaled.descent());
    let left = match anchor {
        Anchor::LeftMiddle | Anchor::LeftTop => x,
        Anchor::RightMiddle => x - w,
        Anchor::CentreTop => x - w / 2.0,
    };
    let baseline = match anchor {
        Anchor::LeftMiddle | Anchor::RightMiddle => y + (ascent + descent) / 2.0,
        Anchor::CentreTop | Anchor::LeftTop => y + ascent,
    };
    let mut pen = left;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            pen += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(size, point(pen, baseline));
        pen += scaled.h_advance(id);
        previous = Some(id);
        let Some(outline) = font().outline_glyph(glyph) else {
            continue; // a space
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            canvas.blend(px, py, colour, coverage);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_and_drawn_where_anchored() {
        assert!(width("W", 12.0) > width("i", 12.0));
        assert!((width("250 K", 24.0) - 2.0 * width("250 K", 12.0)).abs() < 1.0);
        let mut c = Canvas::new(100, 40);
        draw(
            &mut c,
            "285 K",
            50.0,
            20.0,
            12.0,
            Anchor::RightMiddle,
            [0, 0, 0],
        );
        let dark = |x0: u32, x1: u32| {
            (x0..x1)
                .flat_map(|x| (0..40).map(move |y| (x, y)))
                .filter(|&(x, y)| c.get(x, y)[0] < 128)
                .count()
        };
        assert!(dark(15, 50) > 20, "the text ends at x = 50");
        assert_eq!(dark(51, 100), 0, "nothing right of the anchor");
        assert!(
            width("°−µ", 12.0) > 0.0,
            "degree, minus and micro signs are in the subset"
        );
    }
}
