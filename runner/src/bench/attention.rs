//! `bench attention`: per-head attention against Task 3's einsum, forward and backward.

use super::time_ms;
use crate::models::{self};
use candle_core::{DType, Device, Tensor, Var};
use kit::SeededVarMap;
use std::process::ExitCode;
use workbook::cli::BenchAttentionArgs;

pub(super) fn run(args: BenchAttentionArgs, json: bool) -> anyhow::Result<ExitCode> {
    let device = Device::Cpu;
    let (b, heads, d) = (16, 4, 32);
    let hidden = heads * d;
    let mut rows = Vec::new();
    let ops = if args.composed { "composed" } else { "fused" };
    println!(
        "Attention, batch {b}, {heads} heads of {d}, hidden {hidden}, {ops} ops; median of {} runs (ms)",
        args.repeats
    );
    println!(
        "  Task 2 heads: the challenge's per-head model (Task 2 attention per head, concatenated, dense)"
    );
    println!(
        "  Task 1 heads: kit's AttentionHead per head (one fused kernel each), as Task 1 uses"
    );
    println!(
        "{:<6} {:<16} {:>13} {:>13} {:>10} {:>16} {:>16}",
        "T", "pass", "Task 2 heads", "Task 1 heads", "einsum", "einsum speed-up", "vs Task 1 heads"
    );
    for t in [32usize, 256] {
        let params = SeededVarMap::new(0);
        let modules = models::attentions(hidden, heads, d, params.var_builder(&device))?;
        let x = Var::from_tensor(
            &Tensor::randn(0f32, 1.0, (b, t, hidden), &device)?.to_dtype(DType::F32)?,
        )?;
        let mut fwd = [0.0; 3];
        let mut bwd = [0.0; 3];
        for (i, m) in modules.iter().enumerate() {
            fwd[i] = time_ms(args.repeats, || m.forward(x.as_tensor()).map(|_| ()))?;
            bwd[i] = time_ms(args.repeats, || {
                let y = m.forward(x.as_tensor())?;
                y.sqr()?.sum_all()?.backward().map(|_| ())
            })?;
        }
        for (pass, [h2, h1, e]) in [("forward", fwd), ("forward+backward", bwd)] {
            println!(
                "{t:<6} {pass:<16} {h2:>13.3} {h1:>13.3} {e:>10.3} {:>15.2}x {:>15.2}x",
                h2 / e,
                h1 / e
            );
            rows.push(serde_json::json!({
                "t": t, "pass": pass,
                "task2_heads_ms": h2, "task1_heads_ms": h1, "einsum_ms": e,
                "speedup": h2 / e, "speedup_vs_task1_heads": h1 / e,
            }));
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(ExitCode::SUCCESS)
}
