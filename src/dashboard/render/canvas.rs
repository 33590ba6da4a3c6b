//! An RGB pixel buffer: set and blend pixels, draw lines and rectangles (embedded-graphics
//! primitives), encode as PNG.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};

use super::RenderError;

/// An image being drawn, white at first.
pub struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    /// A white image of `width` × `height` pixels.
    pub fn new(width: u32, height: u32) -> Self {
        Canvas {
            width,
            height,
            rgb: vec![255; (width * height * 3) as usize],
        }
    }

    /// Sets a pixel (outside the image: nothing).
    pub fn put(&mut self, x: u32, y: u32, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = ((y * self.width + x) * 3) as usize;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A pixel's colour (outside the image: white).
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        if x < self.width && y < self.height {
            let i = ((y * self.width + x) * 3) as usize;
            [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
        } else {
            [255; 3]
        }
    }

    /// Mixes `c` into a pixel with weight `alpha` (0 to 1).
    pub fn blend(&mut self, x: i64, y: i64, c: [u8; 3], alpha: f32) {
        let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
            return;
        };
        let a = alpha.clamp(0.0, 1.0);
        let old = self.get(x, y);
        let mix = |o: u8, n: u8| (f32::from(o) * (1.0 - a) + f32::from(n) * a).round() as u8;
        self.put(
            x,
            y,
            [mix(old[0], c[0]), mix(old[1], c[1]), mix(old[2], c[2])],
        );
    }

    /// A one-pixel line from `a` to `b`.
    pub fn line(&mut self, a: (i32, i32), b: (i32, i32), c: [u8; 3]) {
        let style = PrimitiveStyle::with_stroke(Rgb888::new(c[0], c[1], c[2]), 1);
        let _ = Line::new(Point::new(a.0, a.1), Point::new(b.0, b.1))
            .into_styled(style)
            .draw(self);
    }

    /// A one-pixel line from `a` to `b`, drawn only inside `clip` (x, y, width, height).
    pub fn clipped_line(
        &mut self,
        a: (i32, i32),
        b: (i32, i32),
        c: [u8; 3],
        clip: (i32, i32, u32, u32),
    ) {
        let style = PrimitiveStyle::with_stroke(Rgb888::new(c[0], c[1], c[2]), 1);
        let area = Rectangle::new(Point::new(clip.0, clip.1), Size::new(clip.2, clip.3));
        let _ = Line::new(Point::new(a.0, a.1), Point::new(b.0, b.1))
            .into_styled(style)
            .draw(&mut self.clipped(&area));
    }

    /// The one-pixel outline of a box of `w` × `h` pixels at (`x`, `y`).
    pub fn frame(&mut self, x: i32, y: i32, w: u32, h: u32, c: [u8; 3]) {
        let style = PrimitiveStyle::with_stroke(Rgb888::new(c[0], c[1], c[2]), 1);
        let _ = Rectangle::new(Point::new(x, y), Size::new(w, h))
            .into_styled(style)
            .draw(self);
    }

    /// The image as PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>, RenderError> {
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
