//! Forward speed of an imported ONNX network, for `scripts/bench-onnx.sh`: images/s of
//! the whole forward pass (all layers to the last) on a deterministic batch, the median
//! of `REPS` timed passes after one warm-up.
//!
//!   bench_onnx MODEL.onnx BATCH REPS

use std::time::Instant;

use anyhow::Context;
use neurodex::model::Network;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench_onnx MODEL.onnx BATCH REPS";
    let model = args.first().context(usage)?;
    let batch: usize = args.get(1).context(usage)?.parse()?;
    let reps: usize = args.get(2).context(usage)?.parse()?;
    let net = Network::open(model, None)?;
    let s = net.arch.recipe.size as usize;
    // The same formula as scripts/bench/common.py's input.
    let x: Vec<f32> = (0..batch * 3 * s * s)
        .map(|k| ((k % 251) as f32 / 125.5) - 1.0)
        .collect();
    let last = net.arch.nodes.len() - 1;
    net.forward_hw(&x, batch, s, s, &[last])?;
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(net.forward_hw(&x, batch, s, s, &[last]).expect("forward"));
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("{:.2}", batch as f64 / median);
    Ok(())
}
