//! Helpers that speak to the learner: each failure says what was expected, what came, and what
//! to look at next.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Optimizer;
use kit::train::{Control, EvalPoint, EvalScreen, Graded, Run, Step, TrainConfig, TrainReport};
use kit::{Dataset, GptConfig, SeededVarMap};
pub use reference::{param, values};
use std::sync::OnceLock;
use std::time::Duration;
use workbook::progress_line::GradedProgress;
use workbook::tasks::TaskList;

/// The device every check runs on.
pub fn device() -> Device {
    Device::Cpu
}

/// tiny Shakespeare, loaded once per test binary. A missing corpus fails with the message that
/// says how to supply it.
pub fn dataset() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| match Dataset::load() {
        Ok(d) => d,
        Err(e) => panic!("the checks need the tiny Shakespeare corpus: {e}"),
    })
}

/// Asserts a tensor's shape, naming the part and what its shape means.
#[track_caller]
pub fn assert_shape(what: &str, t: &Tensor, expected: &[usize], meaning: &str) {
    assert_eq!(
        t.dims(),
        expected,
        "{what} returned shape {:?}, expected {expected:?} ({meaning})",
        t.dims()
    );
}

/// Runs `f` on its own thread and fails if it takes longer than `limit`: an endless loop in the
/// learner's code becomes a verdict instead of a hang.
#[track_caller]
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "{what} did not finish within {} s: look for a loop that never ends",
            limit.as_secs()
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends its result before it ends"),
        },
    }
}

/// Names of the parameters that get no gradient, or only zeros, from `loss`.
pub fn parameters_without_gradient(params: &SeededVarMap, loss: &Tensor) -> Vec<String> {
    let grads = loss.backward().expect("backward pass");
    params
        .named_vars()
        .into_iter()
        .filter(|(_, var)| match grads.get(var) {
            None => true,
            Some(g) => g
                .abs()
                .and_then(|a| a.sum_all())
                .and_then(|s| s.to_dtype(DType::F32))
                .and_then(|s| s.to_scalar::<f32>())
                .map(|s| s == 0.0 || !s.is_finite())
                .unwrap_or(true),
        })
        .map(|(name, _)| name)
        .collect()
}

/// Fails, listing them, if any parameter gets no gradient from `loss`.
#[track_caller]
pub fn assert_every_parameter_learns(what: &str, params: &SeededVarMap, loss: &Tensor) {
    assert!(
        !params.named_vars().is_empty(),
        "{what} has no parameters at all"
    );
    let missing = parameters_without_gradient(params, loss);
    assert!(
        missing.is_empty(),
        "{what}: these parameters receive no gradient from the loss, so they would never learn:\n  {}\n\
         Look for an op without a backward pass between them and the loss (candle-nn 0.11's \
         softmax_last_dim, layer_norm and LayerNorm have none: use kit's), a `detach`, or a part \
         that is built but never used in forward.",
        missing.join("\n  ")
    );
}

/// The parameters as a table a person can read: name, shape, count, and the total.
pub fn parameter_table(params: &SeededVarMap) -> String {
    let vars = params.named_vars();
    let width = vars.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let mut total = 0;
    for (name, var) in &vars {
        let n = var.elem_count();
        total += n;
        out.push_str(&format!(
            "{name:<width$}  {:<12}  {n:>8}\n",
            format!("{:?}", var.dims())
        ));
    }
    out.push_str(&format!("{:<width$}  {:<12}  {total:>8}\n", "total", ""));
    out
}

/// Largest absolute difference between two equally long slices; infinite if either holds a NaN
/// (a NaN compares false with everything, so it would otherwise pass any tolerance).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "comparing {} values with {}",
        a.len(),
        b.len()
    );
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

/// A small model, quick to run: vocab 65, hidden 32, block 8, 2 layers of 2 heads.
pub const SMALL: GptConfig = GptConfig {
    vocab_size: 65,
    hidden: 32,
    block_size: 8,
    num_layers: 2,
    num_heads: 2,
};

/// One sequence of token ids as a batch of one, (1, T).
pub fn ids(tokens: &[u32]) -> Tensor {
    Tensor::new(tokens, &device())
        .and_then(|t| t.unsqueeze(0))
        .expect("token ids")
}

/// Logits of a model on a batch of token ids (B, T).
pub fn logits(model: &dyn Module, ids: &[Vec<u32>]) -> Tensor {
    let flat: Vec<u32> = ids.concat();
    let t = Tensor::from_vec(flat, (ids.len(), ids[0].len()), &device()).expect("token ids");
    model.forward(&t).expect("forward pass")
}

/// Random floats in [-1, 1) from a seeded generator, as a tensor of `shape`.
pub fn random_tensor(seed: u64, shape: &[usize]) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &device()).expect("random tensor")
}

/// Moves every parameter away from its initial value by seeded noise in [-0.2, 0.2). At
/// initialisation every LayerNorm is the identity (scale 1, shift 0) and every bias is 0, so
/// parts that should differ compute the same thing there (`ln_1` used where `ln_2` belongs, a
/// bias left out); after this, they do not.
pub fn move_off_init(params: &SeededVarMap, seed: u64) {
    for (i, (name, var)) in params.named_vars().into_iter().enumerate() {
        let noise = (random_tensor(seed.wrapping_add(i as u64), var.dims()) * 0.2)
            .expect("noise for a parameter");
        let moved = (var.as_tensor() + noise).expect("a moved parameter");
        var.set(&moved)
            .unwrap_or_else(|e| panic!("cannot move {name} off its initial value: {e}"));
    }
}

/// The graded training of `task`, as the task list gives it.
pub fn graded(task: &str) -> Graded {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checks/ is inside the workbook");
    let list = TaskList::load(root).unwrap_or_else(|e| panic!("{e}"));
    let task = list.get(task).unwrap_or_else(|e| panic!("{e}"));
    task.graded
        .unwrap_or_else(|| panic!("tasks.toml gives {} no [task.graded]", task.name))
        .graded()
}

/// How many eval batches [`graded_training`] looks at before going on with an evaluation.
pub const SCREEN_BATCHES: usize = 10;
/// How far above the target those batches' mean must be to cut the evaluation short.
pub const SCREEN_MARGIN: f32 = 0.1;

/// One line of a graded training's progress, written straight to standard error, past the
/// test harness's capture: `cargo test` shows it as it comes, and `cargo xtask check` reads it
/// to keep a live progress line.
fn report_progress(progress: GradedProgress) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{progress}");
}

/// The graded training run: trains `model` on tiny Shakespeare with `graded.config`, and stops
/// at the first complete evaluation below `graded.bar`. Prints every evaluation, then `label:
/// eval loss … at step … (… s)`, and returns the last evaluation.
///
/// An evaluation whose first [`SCREEN_BATCHES`] batches average more than [`SCREEN_MARGIN`]
/// above the bar stops there: the mean of all of them would be below it only by a very unlikely
/// chance (BENCHMARKS.md shows how far the mean of ten batches strays from the mean of a
/// hundred). Early in training
/// that saves most of the evaluation time, and all of it in a run that never gets close. The
/// evaluation after the last step is always complete.
pub fn graded_training(
    label: &str,
    model: &(dyn Module + Sync),
    params: &SeededVarMap,
    graded: &Graded,
) -> EvalPoint {
    graded_run(label, graded, |config, on_eval| {
        kit::train::train(
            model,
            params.varmap(),
            dataset(),
            config,
            &device(),
            on_eval,
        )
    })
}

/// [`graded_training`] with a training step and an optimiser of the learner's own in place of
/// kit's (Task 4).
pub fn graded_training_with_step<'a, O: Optimizer + Send>(
    label: &str,
    model: &'a (dyn Module + Sync + 'static),
    params: &'a SeededVarMap,
    graded: &Graded,
    optimiser: O,
    step: Step<dyn Module + Sync, O>,
) -> EvalPoint {
    graded_run(label, graded, |config, on_eval| {
        let (varmap, data) = (params.varmap(), dataset());
        Run::with_step(model, varmap, data, config, &device(), optimiser, step)?
            .train_to_the_end(on_eval)
    })
}

/// The graded run of `graded`, trained by `train` with the settings and the evaluation callback
/// it is given; returns the last evaluation.
fn graded_run(
    label: &str,
    graded: &Graded,
    train: impl FnOnce(
        &TrainConfig,
        &mut dyn FnMut(&EvalPoint) -> Control,
    ) -> anyhow::Result<TrainReport>,
) -> EvalPoint {
    let target = graded.bar;
    let config = TrainConfig {
        eval_screen: Some(EvalScreen {
            batches: SCREEN_BATCHES,
            above: target + SCREEN_MARGIN,
        }),
        ..graded.config.clone()
    };
    let full = config.eval_batches;
    let mut on_eval = |p: &EvalPoint| {
        report_progress(GradedProgress {
            step: p.step,
            steps: config.steps,
            eval_loss: p.eval_loss,
            bar: target,
        });
        if p.eval_batches == full {
            println!("{p}");
        } else {
            println!(
                "{p} on the first {} batches, too far above {target} to go on",
                p.eval_batches
            );
        }
        if p.eval_batches == full && p.eval_loss < target {
            Control::Stop
        } else {
            Control::Continue
        }
    };
    let report = train(&config, &mut on_eval).unwrap_or_else(|e| panic!("training failed: {e:#}"));
    let last = report.last_eval().expect("at least one evaluation");
    println!(
        "{label}: eval loss {:.3} at step {} ({:.1} s)",
        last.eval_loss,
        last.step,
        report.elapsed.as_secs_f32()
    );
    last
}
