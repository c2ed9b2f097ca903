//! The seed talk's five values through every scheme: codes, scale, values back, errors.
//!
//! ```text
//! cargo run -p lmforge-quant --example seed
//! ```

use lmforge_quant::{QMatrix, Scheme};

fn main() -> Result<(), lmforge_quant::Error> {
    let x = [0.34f32, 3.75, 5.64, 1.12, 2.7];
    println!("x = {x:?}");
    for scheme in Scheme::ALL {
        let q = QMatrix::quantize("seed", &x, 1, x.len(), scheme)?;
        let codes: Vec<i8> = (0..x.len()).map(|c| q.code(0, c)).collect();
        let back = q.dequantize();
        let errors: Vec<f32> = x.iter().zip(&back).map(|(a, b)| (a - b).abs()).collect();
        let stats = q.error_stats(&x);
        println!(
            "{scheme:<11} scale {:.7}  codes {codes:?}\n            back {back:?}\n            |error| {errors:?}  max {:.5}  mean {:.5}  ({} bytes)",
            q.scales()[0],
            stats.max_abs,
            stats.mean_abs,
            q.bytes()
        );
    }
    Ok(())
}
