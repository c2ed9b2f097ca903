//! The loss curve as a PNG: training loss (blue) and validation loss (orange, with dots) against
//! the iteration, drawn into a pixel buffer with a 5×7 bitmap font for the axis labels. A
//! plotting library would bring font discovery (fontconfig) or a bundled TTF for two lines and a
//! few numbers; the PNG encoding itself is the `png` crate's.

use std::path::Path;

use crate::{Error, Result};

const WIDTH: usize = 900;
const HEIGHT: usize = 540;
const LEFT: usize = 80;
const RIGHT: usize = 30;
const TOP: usize = 40;
const BOTTOM: usize = 60;
const TRAIN: [u8; 3] = [31, 119, 180];
const VALID: [u8; 3] = [255, 127, 14];
const INK: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [225, 225, 225];

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            pixels: vec![255; WIDTH * HEIGHT * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x < 0 || y < 0 || x >= WIDTH as i64 || y >= HEIGHT as i64 {
            return;
        }
        let at = (y as usize * WIDTH + x as usize) * 3;
        self.pixels[at..at + 3].copy_from_slice(&color);
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3], thick: i64) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let x = (x0 + (x1 - x0) * t).round() as i64;
            let y = (y0 + (y1 - y0) * t).round() as i64;
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(x + dx - thick / 2, y + dy - thick / 2, color);
                }
            }
        }
    }

    fn dot(&mut self, x: f64, y: f64, color: [u8; 3]) {
        for dx in -3i64..=3 {
            for dy in -3i64..=3 {
                if dx * dx + dy * dy <= 9 {
                    self.set(x.round() as i64 + dx, y.round() as i64 + dy, color);
                }
            }
        }
    }

    /// Text at (x, y) top-left, 2× scaled; characters without a glyph are blank.
    fn text(&mut self, x: i64, y: i64, text: &str, color: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        for (sx, sy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(
                                x + i as i64 * 12 + col * 2 + sx,
                                y + r as i64 * 2 + sy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'd' => [1, 1, 13, 19, 17, 17, 15],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'k' => [16, 16, 18, 20, 24, 20, 18],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 14, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        _ => [0; 7],
    }
}

/// Short axis labels: `12`, `2.5`, `0.05`, `12k`.
fn label(value: f64) -> String {
    let a = value.abs();
    if a >= 10_000.0 {
        format!("{}k", (value / 1000.0).round())
    } else if a >= 100.0 || value == value.round() {
        format!("{}", value.round())
    } else if a >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Writes the curve of `train` and `valid` (iteration, loss) points to `path`, atomically.
/// Non-finite losses are left out; with no point at all the axes are drawn empty.
pub fn loss_curve(path: &Path, train: &[(u64, f64)], valid: &[(u64, f64)]) -> Result<()> {
    let finite = |p: &&(u64, f64)| p.1.is_finite();
    let points: Vec<&(u64, f64)> = train.iter().chain(valid).filter(finite).collect();
    let x_max = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let mut y_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut y_max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let (y_min, y_max) = ((y_min - pad).max(0.0), y_max + pad);
    let plot_w = (WIDTH - LEFT - RIGHT) as f64;
    let plot_h = (HEIGHT - TOP - BOTTOM) as f64;
    let to_px = |x: f64, y: f64| {
        (
            LEFT as f64 + x / x_max * plot_w,
            TOP as f64 + (1.0 - (y - y_min) / (y_max - y_min)) * plot_h,
        )
    };
    let mut canvas = Canvas::new();
    for i in 0..=5 {
        let y = y_min + (y_max - y_min) * i as f64 / 5.0;
        let (_, py) = to_px(0.0, y);
        canvas.line((LEFT as f64, py), ((WIDTH - RIGHT) as f64, py), GRID, 1);
        let text = label(y);
        canvas.text(
            LEFT as i64 - 8 - 12 * text.len() as i64,
            py as i64 - 7,
            &text,
            INK,
        );
        let x = x_max * i as f64 / 5.0;
        let (px, _) = to_px(x, y_min);
        canvas.line((px, TOP as f64), (px, (HEIGHT - BOTTOM) as f64), GRID, 1);
        let text = label(x);
        canvas.text(
            px as i64 - 6 * text.len() as i64,
            (HEIGHT - BOTTOM) as i64 + 10,
            &text,
            INK,
        );
    }
    let origin = to_px(0.0, y_min);
    canvas.line(origin, ((WIDTH - RIGHT) as f64, origin.1), INK, 2);
    canvas.line(origin, (origin.0, TOP as f64), INK, 2);
    canvas.text(WIDTH as i64 / 2 - 54, HEIGHT as i64 - 24, "iteration", INK);
    canvas.text(10, 10, "loss", INK);
    canvas.line(
        (WIDTH as f64 - 300.0, 17.0),
        (WIDTH as f64 - 270.0, 17.0),
        TRAIN,
        3,
    );
    canvas.text(WIDTH as i64 - 262, 10, "train", INK);
    canvas.dot(WIDTH as f64 - 165.0, 17.0, VALID);
    canvas.text(WIDTH as i64 - 152, 10, "valid", INK);
    let series = |canvas: &mut Canvas, data: &[(u64, f64)], color, dots| {
        let pts: Vec<(f64, f64)> = data
            .iter()
            .filter(finite)
            .map(|&(x, y)| to_px(x as f64, y))
            .collect();
        for pair in pts.windows(2) {
            canvas.line(pair[0], pair[1], color, 2);
        }
        if dots || pts.len() == 1 {
            for &(x, y) in &pts {
                canvas.dot(x, y, color);
            }
        }
    };
    series(&mut canvas, train, TRAIN, false);
    series(&mut canvas, valid, VALID, true);
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let png_error = |e: png::EncodingError| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("encoding the PNG: {e}"),
        };
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(&canvas.pixels).map_err(png_error)?;
    }
    lmforge_model::checkpoint::write_atomic(path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_short() {
        assert_eq!(label(12.0), "12");
        assert_eq!(label(2.54), "2.5");
        assert_eq!(label(0.054), "0.05");
        assert_eq!(label(25_000.0), "25k");
    }
}
