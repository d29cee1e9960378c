//! `cargo xtask bench products`: the dense products of one training step, each timed alone in a
//! loop, with the operand layouts kit's dense layers give gemm. Their sum is what a step's
//! products would cost at the speed gemm reaches when nothing else runs; `bench train` sets the
//! step's own speed beside it.

use super::median;
use kit::GptConfig;
use kit::train::{TrainConfig, parallel};
use std::process::ExitCode;
use std::time::Instant;
use workbook::cli::BenchProductsArgs;

/// How a product reads an operand: row-major, or the transpose of a row-major matrix.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Rows,
    Columns,
}

/// One matrix product of a training step: `c (m×n) = a (m×k) · b (k×n)`, `c` row-major.
#[derive(Debug, Clone)]
pub struct Product {
    what: String,
    m: usize,
    n: usize,
    k: usize,
    /// How many times one part of a batch computes it in a step.
    calls: usize,
    a: Layout,
    b: Layout,
}

impl Product {
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.calls) as f64
    }
}

/// The dense products of one part of `rows` rows in a training step of the Task 1 model, with
/// the layouts of kit's dense layers: forward `x Wᵀ`, backward `dy W` and `dyᵀ x`. The
/// attention's own products (`q kᵀ` and `p v`, a few percent of the work) run in kit's
/// attention kernel and are not here.
pub fn of_a_step(cfg: &GptConfig, rows: usize) -> Vec<Product> {
    let c = cfg.hidden;
    let head = c / cfg.num_heads;
    let layers = cfg.num_layers;
    // (name, out, in, calls per part)
    let dense = [
        ("q, k, v of a head", 3 * head, c, layers * cfg.num_heads),
        ("attention output", c, c, layers),
        ("feed-forward fc", 4 * c, c, layers),
        ("feed-forward proj", c, 4 * c, layers),
        ("lm_head", cfg.vocab_size, c, 1),
    ];
    let mut products = Vec::new();
    for (name, out, inp, calls) in dense {
        let mut add = |pass: &str, (m, n, k), a, b| {
            products.push(Product {
                what: format!("{name}: {pass}"),
                m,
                n,
                k,
                calls,
                a,
                b,
            })
        };
        add("x Wᵀ", (rows, out, inp), Layout::Rows, Layout::Columns);
        add("dy W", (rows, inp, out), Layout::Rows, Layout::Rows);
        add("dyᵀ x", (out, inp, rows), Layout::Columns, Layout::Rows);
    }
    products
}

/// Median µs of one call of `p`, single-threaded, operands hot in cache.
fn time_product(p: &Product, repeats: u64) -> f64 {
    let a = vec![0.5f32; p.m * p.k];
    let b = vec![0.25f32; p.k * p.n];
    let mut c = vec![0f32; p.m * p.n];
    // (row stride, column stride) of an m × k operand read as `layout`.
    let strides = |layout, rows: usize, cols: usize| match layout {
        Layout::Rows => (cols as isize, 1),
        Layout::Columns => (1, rows as isize),
    };
    let (a_rs, a_cs) = strides(p.a, p.m, p.k);
    let (b_rs, b_cs) = strides(p.b, p.k, p.n);
    // The call kit's dense layers make (`gemm_into` in kit/src/ops/matmul/mod.rs): a
    // row-major output, overwritten, one thread.
    let mut run = || {
        // SAFETY: a, b and c hold m × k, k × n and m × n floats, and the strides stay inside.
        unsafe {
            gemm::gemm(
                p.m,
                p.n,
                p.k,
                c.as_mut_ptr(),
                1,
                p.n as isize,
                false,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    for _ in 0..3 {
        run();
    }
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(&mut times)
}

pub fn run(args: BenchProductsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let graded = TrainConfig::CHALLENGE;
    let cfg = GptConfig::graded(kit::Dataset::load()?.vocab_size());
    let parts = parallel::PARTS;
    let rows = graded.batch_size / parts * graded.block_size;
    println!(
        "The dense products of one training step (Task 1 model, batch {} in {parts} parts of {rows} rows), \
         as kit's dense layers call gemm: one thread, each product alone in a loop, median of {} calls",
        graded.batch_size, args.repeats
    );
    println!(
        "{:<34} {:>13} {:>6} {:>10} {:>9}",
        "product", "m × n × k", "calls", "µs/call", "GFLOP/s"
    );
    let (mut total_us, mut total_flops) = (0.0, 0.0);
    let mut rows_json = Vec::new();
    for p in of_a_step(&cfg, rows) {
        let us = time_product(&p, args.repeats);
        let gflops = p.flops() / p.calls as f64 / (us * 1e3);
        println!(
            "{:<34} {:>13} {:>6} {us:>10.1} {gflops:>9.1}",
            p.what,
            format!("{}×{}×{}", p.m, p.n, p.k),
            p.calls
        );
        total_us += us * p.calls as f64;
        total_flops += p.flops();
        rows_json.push(serde_json::json!({
            "product": p.what, "m": p.m, "n": p.n, "k": p.k, "calls": p.calls,
            "us_per_call": us, "gflops": gflops,
        }));
    }
    let gflops = total_flops / (total_us * 1e3);
    // A step runs its parts side by side, one per thread: on as many cores, its products take
    // as long as one part's.
    println!(
        "one part: {:.3} GFLOP in {:.2} ms, {gflops:.1} GFLOP/s on one thread: what a step on \
         {parts} cores, its parts side by side, would spend in its products at these speeds",
        total_flops / 1e9,
        total_us / 1e3,
    );
    if json {
        println!(
            "{}",
            serde_json::json!({ "products": rows_json, "part_ms": total_us / 1e3, "gflops": gflops })
        );
    }
    Ok(ExitCode::SUCCESS)
}
