//! `bench layer-norm`: Task 5's LayerNorm against kit's fused and composed ones.

use super::time_ms;
use crate::models::{self};
use candle_core::{Device, Tensor, Var};
use kit::SeededVarMap;
use std::process::ExitCode;
use workbook::cli::BenchLayerNormArgs;

/// Task 5's LayerNorm against kit's fused and composed ones: forward, and forward plus the
/// backward pass of the sum of squares, on a training step's activations, (B·T, C).
pub(super) fn run(args: BenchLayerNormArgs, json: bool) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let (b, t, c) = (16, 32, 128);
    let params = SeededVarMap::new(0);
    let norms = models::layer_norms(c, args.yours, params.var_builder(&device))?;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, c), &device)?)?;
    println!(
        "LayerNorm of ({b}, {t}, {c}), the activations of a training step; median of {} runs (ms)",
        args.repeats
    );
    println!("{:<26} {:>10} {:>18}", "", "forward", "forward+backward");
    let mut rows = Vec::new();
    for (name, m) in &norms {
        let forward = time_ms(args.repeats, || m.forward(x.as_tensor()).map(|_| ()))?;
        let both = time_ms(args.repeats, || {
            let y = m.forward(x.as_tensor())?;
            y.sqr()?.sum_all()?.backward().map(|_| ())
        })?;
        println!("{name:<26} {forward:>10.3} {both:>18.3}");
        rows.push(serde_json::json!({ "layer_norm": name, "forward_ms": forward, "forward_backward_ms": both }));
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(ExitCode::SUCCESS)
}
