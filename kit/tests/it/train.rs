//! The training loop: reproducible with a seed, loud about NaN, and it keeps the best weights.

use candle_core::{Device, Tensor};
use kit::SeededVarMap;
use kit::train::{Control, EvalPoint, EvalScreen, TrainConfig, TrainError, TrainReport, train};

use crate::common::{Tiny, config, data};

fn run(seed: u64) -> (Vec<f32>, Vec<f32>) {
    let data = data();
    let params = SeededVarMap::new(seed);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    let report = train(
        &model,
        params.varmap(),
        &data,
        &config(seed),
        &Device::Cpu,
        |_| Control::Continue,
    )
    .unwrap();
    let weights = params
        .named_vars()
        .iter()
        .flat_map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    (report.train_losses, weights)
}

#[test]
fn the_same_seed_gives_the_same_loss_curve_and_weights() {
    let (losses_a, weights_a) = run(7);
    let (losses_b, weights_b) = run(7);
    assert_eq!(losses_a.len(), 40);
    assert_eq!(
        losses_a, losses_b,
        "same seed, same machine: identical loss curves"
    );
    assert_eq!(weights_a, weights_b);
    let (losses_c, _) = run(8);
    assert_ne!(losses_a, losses_c, "another seed gives another run");
    assert!(
        losses_a[39] < losses_a[0],
        "the loss goes down: {} -> {}",
        losses_a[0],
        losses_a[39]
    );
}

#[test]
fn a_loss_that_becomes_nan_stops_training_with_its_step_and_learning_rate() {
    let data = data();
    let params = SeededVarMap::new(1);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    let cfg = TrainConfig {
        learning_rate: 1e30,
        ..config(1)
    };
    let err = train(&model, params.varmap(), &data, &cfg, &Device::Cpu, |_| {
        Control::Continue
    })
    .unwrap_err();
    let train_err = err
        .downcast_ref::<TrainError>()
        .unwrap_or_else(|| panic!("{err:#}"));
    let TrainError::NonFinite {
        step,
        learning_rate,
        ..
    } = train_err;
    assert_eq!(*learning_rate, 1e30);
    assert!(*step >= 1 && *step <= 40);
    assert!(
        err.to_string()
            .contains("learning rate 1000000000000000000000000000000"),
        "{err}"
    );
}

/// Trains a fresh model from `seed` with `cfg`, and stops at the first evaluation at step 20
/// or later.
fn run_until_step_20(cfg: &TrainConfig, seed: u64) -> TrainReport {
    let data = data();
    let params = SeededVarMap::new(seed);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    train(&model, params.varmap(), &data, cfg, &Device::Cpu, |p| {
        if p.step >= 20 {
            Control::Stop
        } else {
            Control::Continue
        }
    })
    .unwrap()
}

#[test]
fn the_model_ends_with_its_best_weights_and_a_callback_can_stop_early() {
    let report = run_until_step_20(&config(3), 3);
    assert!(report.stopped_early);
    assert_eq!(report.steps_run, 20);
    assert_eq!(report.evals.len(), 2);
    let best = report.best.unwrap();
    let min = report
        .evals
        .iter()
        .map(|e| e.eval_loss)
        .fold(f32::MAX, f32::min);
    assert_eq!(best.eval_loss, min);
}

/// The evaluations of a run of `cfg` from seed 5, and its best one.
fn evaluations(cfg: &TrainConfig) -> (Vec<EvalPoint>, Option<EvalPoint>) {
    let data = data();
    let params = SeededVarMap::new(5);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    let report = train(&model, params.varmap(), &data, cfg, &Device::Cpu, |_| {
        Control::Continue
    })
    .unwrap();
    (report.evals, report.best)
}

fn screened(above: f32) -> TrainConfig {
    TrainConfig {
        eval_batches: 4,
        eval_screen: Some(EvalScreen { batches: 1, above }),
        ..config(5)
    }
}

#[test]
fn a_screen_that_never_cuts_changes_nothing() {
    let plain = TrainConfig {
        eval_screen: None,
        ..screened(0.0)
    };
    let (evals, best) = evaluations(&plain);
    assert!(evals.iter().all(|e| e.eval_batches == 4), "{evals:?}");
    assert_eq!((evals, best), evaluations(&screened(f32::INFINITY)));
}

#[test]
fn a_screen_cuts_evaluations_short_but_never_the_last() {
    let (plain, _) = evaluations(&TrainConfig {
        eval_screen: None,
        ..screened(0.0)
    });
    let (cut, best) = evaluations(&screened(f32::NEG_INFINITY));
    assert_eq!(cut.len(), plain.len());
    let (last, earlier) = cut.split_last().unwrap();
    for (c, p) in earlier.iter().zip(&plain) {
        assert_eq!(
            (c.step, c.train_loss, c.eval_batches),
            (p.step, p.train_loss, 1)
        );
        assert_ne!(c.eval_loss, p.eval_loss, "one batch's loss, not four's");
    }
    // Every evaluation drew all its batches, so the last one saw the same batches as in the
    // run without a screen.
    assert_eq!(last, plain.last().unwrap());
    // The best weights come from complete evaluations only: here the last one, and none at
    // all in a run stopped before its last step.
    assert_eq!(best.as_ref(), Some(last));
    let stopped = run_until_step_20(&screened(f32::NEG_INFINITY), 5);
    assert_eq!(stopped.evals.len(), 2);
    assert_eq!(stopped.best, None, "{:?}", stopped.evals);
}

#[test]
fn bad_settings_are_errors() {
    let data = data();
    let params = SeededVarMap::new(0);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    for (cfg, needle) in [
        (
            TrainConfig {
                steps: 0,
                ..config(0)
            },
            "steps must be at least 1",
        ),
        (
            TrainConfig {
                batch_size: 0,
                ..config(0)
            },
            "batch_size must be at least 1",
        ),
        (
            TrainConfig {
                block_size: 10_000,
                ..config(0)
            },
            "too large",
        ),
        (
            TrainConfig {
                learning_rate: -1.0,
                ..config(0)
            },
            "learning rate",
        ),
        (
            TrainConfig {
                eval_screen: Some(EvalScreen {
                    batches: 3,
                    above: 2.0,
                }),
                ..config(0)
            },
            "eval_screen.batches must be between 1 and eval_batches (2), got 3",
        ),
    ] {
        let err = train(&model, params.varmap(), &data, &cfg, &Device::Cpu, |_| {
            Control::Continue
        })
        .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// An optimiser that changes nothing and keeps the gradient of each variable it was given.
struct Recorder {
    vars: Vec<candle_core::Var>,
    seen: Vec<Tensor>,
}

impl candle_nn::Optimizer for Recorder {
    type Config = ();

    fn new(vars: Vec<candle_core::Var>, (): ()) -> candle_core::Result<Self> {
        Ok(Self { vars, seen: vec![] })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        let get = |v: &candle_core::Var| grads.get(v).expect("a gradient for every parameter");
        self.seen = self.vars.iter().map(|v| get(v).clone()).collect();
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        0.0
    }

    fn set_learning_rate(&mut self, _: f64) {}
}

#[test]
fn a_batch_in_parts_has_the_loss_and_gradient_of_the_whole_batch() {
    use candle_nn::Optimizer as _;
    use kit::data::Batch;
    use rand::SeedableRng;
    let data = data();
    let params = SeededVarMap::new(3);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    // Five rows: parts of three and two rows, so the weighting by share matters.
    let batch = Batch::sample(&mut rng, &data.train, 5, 8).unwrap();
    let (x, y) = batch.to_tensors(&Device::Cpu).unwrap();
    let named = params.named_vars();
    let vars: Vec<_> = named.iter().map(|(_, v)| v.clone()).collect();
    let in_parts = |parts| {
        let mut recorder = Recorder::new(vars.clone(), ()).unwrap();
        let loss = kit::train::step_in_parts(&model, &mut recorder, &x, &y, parts).unwrap();
        (loss, recorder.seen)
    };
    let ((whole_loss, whole), (parts_loss, parts)) = (in_parts(1), in_parts(2));
    assert!(
        (whole_loss - parts_loss).abs() < 1e-5,
        "{whole_loss} vs {parts_loss}"
    );
    let direct = kit::train::loss(&model, &x, &y).unwrap();
    assert!((direct.to_scalar::<f32>().unwrap() - whole_loss).abs() < 1e-6);
    for (((name, _), expected), sum) in named.iter().zip(&whole).zip(&parts) {
        let diff = max_abs(&(sum - expected).unwrap());
        let size = max_abs(expected);
        assert!(size > 0.0, "{name}: no gradient at all");
        assert!(
            diff <= 1e-5 * (1.0 + size),
            "{name}: parts differ by {diff}"
        );
    }
}

/// The largest absolute value of `t`; infinite if any value is NaN.
fn max_abs(t: &Tensor) -> f32 {
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values
        .iter()
        .map(|v| if v.is_nan() { f32::INFINITY } else { v.abs() })
        .fold(0f32, f32::max)
}
