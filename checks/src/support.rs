//! Helpers that speak to the learner: each failure says what was expected, what came, and what
//! to look at next.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder};
use kit::train::{Control, EvalPoint, EvalScreen, Graded, Run, Step, TrainConfig, TrainReport};
use kit::{Dataset, GptConfig, SeededVarMap};
use reference::curves::{Band, Standing};
pub use reference::{param, values};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use workbook::progress_line::GradedProgress;
use workbook::tasks::{Task, TaskList};

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

/// tiny Shakespeare's text, read once per test binary.
pub fn corpus() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| match common::corpus::load() {
        Ok(text) => text,
        Err(e) => panic!("the checks need the tiny Shakespeare corpus: {e}"),
    })
}

/// What `new` builds on fresh parameters drawn from `seed`, and those parameters. `what` names
/// the constructor, should it fail.
pub fn seeded<T>(
    seed: u64,
    what: &str,
    new: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> (T, SeededVarMap) {
    let params = SeededVarMap::new(seed);
    let built = new(params.var_builder(&device())).expect(what);
    (built, params)
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

/// Rows of token ids as a batch, (B, T).
fn batch(rows: &[Vec<u32>]) -> Tensor {
    Tensor::from_vec(rows.concat(), (rows.len(), rows[0].len()), &device()).expect("token ids")
}

/// Logits of a model on a batch of token ids (B, T).
pub fn logits(model: &dyn Module, ids: &[Vec<u32>]) -> Tensor {
    model.forward(&batch(ids)).expect("forward pass")
}

/// `len` token ids below `vocab`, a fixed pattern that `seed` shifts. It steps by 7, which shares
/// no factor with the checks' vocabularies (65, 11), so no id comes back before every id has
/// come.
pub fn tokens(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    (0..len as u64)
        .map(|i| ((i * 7 + seed * 31 + 3) % vocab as u64) as u32)
        .collect()
}

/// `b` rows of `t` [`tokens`], row i shifted by seed i: a batch (B, T).
pub fn token_batch(b: usize, t: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..b as u64).map(|i| tokens(i, t, vocab)).collect()
}

/// kit's training loss of `model` on the batch `inputs`, each target the id after its input's
/// in the vocabulary: a loss every part of a language model feeds.
pub fn next_token_loss(model: &dyn Module, inputs: &[Vec<u32>], vocab: usize) -> Tensor {
    let targets: Vec<Vec<u32>> = inputs
        .iter()
        .map(|row| row.iter().map(|&id| (id + 1) % vocab as u32).collect())
        .collect();
    kit::train::loss(model, &batch(inputs), &batch(&targets)).expect("loss")
}

/// Fails if `model`'s logits at a position change when a later token does: for each position
/// t of `tokens`, the tokens after it are moved 17 ids on. `look_at` says where to look.
#[track_caller]
pub fn assert_causal(model: &dyn Module, tokens: &[u32], vocab: usize, look_at: &str) {
    let run = |ids: &[u32]| values(&logits(model, &[ids.to_vec()]));
    assert_causal_with(run, tokens, vocab, || look_at.to_string());
}

/// [`assert_causal`] with the logits of `run`, and `look_at` said only on a failure.
pub fn assert_causal_with(
    run: impl Fn(&[u32]) -> Vec<f64>,
    tokens: &[u32],
    vocab: usize,
    look_at: impl Fn() -> String,
) {
    let before = run(tokens);
    for t in 0..tokens.len() - 1 {
        let mut changed = tokens.to_vec();
        for id in &mut changed[t + 1..] {
            *id = (*id + 17) % vocab as u32;
        }
        let after = run(&changed);
        let diff = max_abs_diff(&before[..(t + 1) * vocab], &after[..(t + 1) * vocab]);
        assert!(
            diff < 1e-5,
            "changing the tokens after position {t} changed the logits at positions 0..={t} by \
             {diff:.2e}: information flows from the future. {}",
            look_at()
        );
    }
}

/// Runs `module` on seeded random input of shape `input` and asserts the output's shape, as
/// [`assert_shape`] does.
#[track_caller]
pub fn assert_output_shape(
    what: &str,
    module: &dyn Module,
    input: &[usize],
    expected: &[usize],
    meaning: &str,
) {
    let out = module.forward(&random_tensor(1, input)).expect(what);
    assert_shape(what, &out, expected, meaning);
}

/// [`assert_every_parameter_learns`] from the loss Σ y², y the output of `module` on seeded
/// random input of shape `input`: every output feeds it.
#[track_caller]
pub fn assert_every_parameter_learns_through(
    what: &str,
    module: &dyn Module,
    params: &SeededVarMap,
    input: &[usize],
) {
    let loss = module
        .forward(&random_tensor(6, input))
        .and_then(|y| y.sqr()?.sum_all())
        .expect("forward");
    assert_every_parameter_learns(what, params, &loss);
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

/// `task` as the task list gives it.
pub fn task(name: &str) -> Task {
    let list = TaskList::load(workbook_root()).unwrap_or_else(|e| panic!("{e}"));
    list.get(name).unwrap_or_else(|e| panic!("{e}")).clone()
}

/// The graded training of `task`, as the task list gives it.
pub fn graded(task: &str) -> Graded {
    let task = self::task(task);
    task.graded
        .unwrap_or_else(|| panic!("tasks.toml gives {} no [task.graded]", task.name))
        .graded()
}

/// The workbook's root, where tasks.toml is.
fn workbook_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checks/ is inside the workbook")
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

/// The graded training of `task`: trains `model` on tiny Shakespeare with the task's graded
/// settings, and stops at the first complete evaluation below its bar. Prints every
/// evaluation, then `task: eval loss … at step … (… s)`.
///
/// An evaluation whose first [`SCREEN_BATCHES`] batches average more than [`SCREEN_MARGIN`]
/// above the bar stops there: the mean of all of them would be below it only by a very unlikely
/// chance (BENCHMARKS.md shows how far the mean of ten batches strays from the mean of a
/// hundred). Early in training
/// that saves most of the evaluation time, and all of it in a run that never gets close. The
/// evaluation after the last step is always complete.
pub fn graded_training(
    task: &str,
    model: &(dyn Module + Sync),
    params: &SeededVarMap,
) -> GradedResult {
    graded_training_on(task, model, params, dataset())
}

/// [`graded_training`] on the tokens of `data` in place of tiny Shakespeare's characters
/// (Task 8's BPE).
pub fn graded_training_on(
    task: &str,
    model: &(dyn Module + Sync),
    params: &SeededVarMap,
    data: &Dataset,
) -> GradedResult {
    graded_run(task, |config, on_eval| {
        kit::train::train(model, params.varmap(), data, config, &device(), on_eval)
    })
}

/// [`graded_training`] with a training step and an optimiser of the learner's own in place of
/// kit's (Task 4).
pub fn graded_training_with_step<'a, O: Optimizer + Send>(
    task: &str,
    model: &'a (dyn Module + Sync + 'static),
    params: &'a SeededVarMap,
    optimiser: O,
    step: Step<dyn Module + Sync, O>,
) -> GradedResult {
    graded_run(task, |config, on_eval| {
        let (varmap, data) = (params.varmap(), dataset());
        Run::with_step(model, varmap, data, config, &device(), optimiser, step)?
            .train_to_the_end(on_eval)
    })
}

/// The graded run of `task`, trained by `train` with the settings and the evaluation callback
/// it is given.
fn graded_run(
    task: &str,
    train: impl FnOnce(
        &TrainConfig,
        &mut dyn FnMut(&EvalPoint) -> Control,
    ) -> anyhow::Result<TrainReport>,
) -> GradedResult {
    let graded = graded(task);
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
        "{task}: eval loss {:.3} at step {} ({:.1} s)",
        last.eval_loss,
        last.step,
        report.elapsed.as_secs_f32()
    );
    GradedResult {
        task: task.to_string(),
        graded,
        last,
    }
}

/// A graded training that has run: the task's, with its graded settings, to its last
/// evaluation.
#[derive(Debug)]
pub struct GradedResult {
    task: String,
    graded: Graded,
    last: EvalPoint,
}

impl GradedResult {
    /// Fails unless the last evaluation is below the bar. The failure says where the run stood
    /// against the reference solution's band at that step, then `still_wrong`: what, in this
    /// task, can still be wrong when every other check of it passes. (When another check
    /// fails, its message says more than a loss can.)
    #[track_caller]
    pub fn assert_below_the_bar(&self, still_wrong: &str) {
        assert!(
            self.last.eval_loss < self.graded.bar,
            "{}",
            self.shortfall(still_wrong)
        );
    }

    /// What [`Self::assert_below_the_bar`] says of a run that missed the bar.
    fn shortfall(&self, still_wrong: &str) -> String {
        let last = &self.last;
        let against = match reference_band(&self.task, &self.graded.config, last.step) {
            Some((band, seeds)) => {
                let (lo, hi) = band.eval;
                format!(
                    "; {} the reference (the reference solution from {seeds} seeds: eval loss \
                     {lo:.3}–{hi:.3} at step {})",
                    Standing::of(last.eval_loss, band.eval),
                    band.step
                )
            }
            None => String::new(),
        };
        format!(
            "after {} steps the mean eval loss over {} batches is {:.3}, not below {}{against}.\n\
             {still_wrong}",
            last.step, last.eval_batches, last.eval_loss, self.graded.bar
        )
    }
}

/// The reference solution's band of `task` at `step`, and how many seeds it spans, if its
/// curves were trained as `graded` trains: the same settings but for the evaluations (how
/// often, over how many batches), which draw from a stream of their own and leave the training
/// as it is. The graded checks build each task's model at the size of the curves,
/// [`GptConfig::graded`].
fn reference_band(task: &str, graded: &TrainConfig, step: usize) -> Option<(Band, usize)> {
    let curves = reference::curves::for_task(task)?;
    let settings = TrainConfig {
        eval_every: curves.train.eval_every,
        eval_screen: curves.train.eval_screen,
        ..graded.clone()
    };
    if !curves.trained_like(&settings) {
        return None;
    }
    let band = curves.bands().into_iter().find(|b| b.step == step)?;
    Some((band, curves.seeds.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_graded_training_has_a_reference_band_at_its_last_step() {
        let list = TaskList::load(workbook_root()).unwrap();
        for task in list.tasks.iter().filter(|t| t.graded.is_some()) {
            let graded = graded(&task.name);
            assert!(
                reference_band(&task.name, &graded.config, graded.config.steps).is_some(),
                "{}: no reference band at step {}, where a graded run that misses the bar ends",
                task.name,
                graded.config.steps
            );
        }
    }

    #[test]
    fn a_run_that_misses_the_bar_says_where_it_stood_and_what_can_still_be_wrong() {
        let graded = graded("task4");
        let steps = graded.config.steps;
        let (band, _) = reference_band("task4", &graded.config, steps).unwrap();
        let result = |eval_loss| GradedResult {
            task: "task4".into(),
            graded: graded.clone(),
            last: EvalPoint {
                step: steps,
                train_loss: eval_loss,
                eval_loss,
                eval_batches: Graded::EVAL_BATCHES,
            },
        };
        let behind = result(band.eval.1 + 0.5).shortfall("What lasts across steps.");
        assert!(
            behind.contains("behind the reference")
                && behind.contains(&format!("{:.3}–{:.3}", band.eval.0, band.eval.1))
                && behind.ends_with("\nWhat lasts across steps."),
            "{behind}"
        );
        let within = result(band.eval.1).shortfall("");
        assert!(within.contains("within the reference"), "{within}");
        result(graded.bar - 0.01).assert_below_the_bar("");
    }
}
