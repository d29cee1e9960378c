//! A run stopped and resumed from its checkpoint ends exactly like one that never stopped:
//! the same losses, evaluations and weights, to the last bit, wherever it was stopped. And a
//! checkpoint that does not fit is refused with a message that says why.

use crate::common::{Tiny, config, data};
use candle_core::{Device, Module, Result, Tensor};
use kit::checkpoint::{CheckpointError, Meta, Saved};
use kit::train::{Next, Run, TrainConfig, TrainReport};
use kit::{Dataset, GptConfig, SeededVarMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// [`Tiny`], raising `flag` on its `raise_at`-th forward pass (a training step makes two, one
/// per part of the batch, and an evaluation one per batch).
struct Counting<'a> {
    model: Tiny,
    calls: AtomicUsize,
    raise_at: usize,
    flag: &'a AtomicBool,
}

impl Module for Counting<'_> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.raise_at {
            self.flag.store(true, Ordering::SeqCst);
        }
        self.model.forward(xs)
    }
}

fn settings() -> TrainConfig {
    TrainConfig {
        steps: 30,
        ..config(4)
    }
}

fn meta(data: &Dataset, train: &TrainConfig) -> Meta {
    Meta {
        task: "tiny".into(),
        solutions: false,
        model: GptConfig::graded(data.vocab_size()),
        vocabulary: data.tokenizer.vocabulary().unwrap_or_default(),
        train: train.clone(),
        steps_run: 0,
        best_eval_loss: None,
    }
}

/// Every parameter's values, by name, as bits.
fn weights(params: &SeededVarMap) -> Vec<(String, Vec<u32>)> {
    let mut all: Vec<_> = params
        .named_vars()
        .into_iter()
        .map(|(name, v)| {
            let values = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name, values.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    all.sort();
    all
}

/// Trains with [`settings`]; when the flag is up before a step, saves the run into `dir` and
/// goes on from the files with a model whose parameters start elsewhere (seed 99), as a new
/// process would. Returns the report and the final weights.
fn run(raise_at: usize, dir: &Path) -> (TrainReport, Vec<(String, Vec<u32>)>, bool) {
    let data = data();
    let cfg = settings();
    let flag = AtomicBool::new(false);
    let params = SeededVarMap::new(4);
    let model = Counting {
        model: Tiny::new(data.vocab_size(), &params).unwrap(),
        calls: AtomicUsize::new(0),
        raise_at,
        flag: &flag,
    };
    let mut run = Run::start(&model, params.varmap(), &data, &cfg, &Device::Cpu).unwrap();
    loop {
        match run.next(&|| flag.load(Ordering::SeqCst)).unwrap() {
            Next::Evaluated(_) => {}
            Next::Finished => {
                let report = run.finish().unwrap();
                return (report, weights(&params), false);
            }
            Next::Interrupted => break,
        }
    }
    let state = run.state().unwrap();
    let mut saved_meta = meta(&data, &cfg);
    saved_meta.steps_run = state.progress.report.steps_run;
    kit::checkpoint::save(dir, params.varmap(), &saved_meta, Some(&state)).unwrap();
    drop(run);

    let params = SeededVarMap::new(99);
    let model = Tiny::new(data.vocab_size(), &params).unwrap();
    let (meta, weights_file) = kit::checkpoint::read_meta(dir).unwrap();
    meta.same_run_as(&saved_meta, dir).unwrap();
    let saved = Saved::read(&weights_file).unwrap();
    saved.load_weights(params.varmap()).unwrap();
    let state = saved.state(meta.steps_run).unwrap();
    let mut run = Run::resume(&model, params.varmap(), &data, &cfg, &Device::Cpu, &state).unwrap();
    while run.next(&|| false).unwrap() != Next::Finished {}
    let report = run.finish().unwrap();
    (report, weights(&params), true)
}

#[test]
fn a_run_stopped_and_resumed_ends_bit_identical_to_one_that_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, whole_weights, stopped) = run(usize::MAX, dir.path());
    assert!(!stopped);
    assert_eq!(whole.steps_run, 30);
    // Calls 1 to 20 are the forward passes of steps 1 to 10; 21 and 22 the evaluation after
    // step 10. So: stopped between two steps, in the middle of the first evaluation, and in
    // the middle of the step right after it.
    for raise_at in [9, 21, 23] {
        let dir = tempfile::tempdir().unwrap();
        let (resumed, resumed_weights, stopped) = run(raise_at, dir.path());
        assert!(stopped, "the run stopped at call {raise_at}");
        assert_eq!(
            resumed.train_losses, whole.train_losses,
            "stopped at call {raise_at}"
        );
        assert_eq!(resumed.evals, whole.evals, "stopped at call {raise_at}");
        assert_eq!(resumed.best, whole.best, "stopped at call {raise_at}");
        assert_eq!(resumed.steps_run, whole.steps_run);
        assert!(!resumed.stopped_early);
        assert!(
            resumed_weights == whole_weights,
            "stopped at call {raise_at}: the final weights differ"
        );
    }
}

/// A checkpoint of a run stopped after step 5, in `dir`, and its description.
fn stopped_checkpoint(dir: &Path) -> Meta {
    let (_, _, stopped) = run(9, dir);
    assert!(stopped);
    kit::checkpoint::read_meta(dir).unwrap().0
}

#[test]
fn a_checkpoint_of_another_run_is_refused_with_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let saved = stopped_checkpoint(dir.path());
    let cases = [
        (
            Meta {
                task: "task3".into(),
                ..saved.clone()
            },
            "holds a run with the model of tiny; this command asks for the model of task3",
        ),
        (
            Meta {
                model: GptConfig {
                    hidden: 64,
                    ..saved.model
                },
                ..saved.clone()
            },
            "holds a run with --hidden 128; this command asks for --hidden 64",
        ),
        (
            Meta {
                train: TrainConfig {
                    seed: 5,
                    ..saved.train.clone()
                },
                ..saved.clone()
            },
            "--seed 4; this command asks for --seed 5",
        ),
    ];
    for (ours, needle) in cases {
        let err = saved.same_run_as(&ours, dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::OtherRun { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn weights_of_another_model_size_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    stopped_checkpoint(dir.path());
    let (_, weights_file) = kit::checkpoint::read_meta(dir.path()).unwrap();
    let params = SeededVarMap::new(0);
    let _other = Tiny::new(7, &params).unwrap(); // another vocabulary: other embedding sizes
    let err = Saved::read(&weights_file)
        .unwrap()
        .load_weights(params.varmap())
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::OtherWeights { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("this model's is [7"), "{err}");
}

#[test]
fn a_truncated_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    stopped_checkpoint(dir.path());
    let (_, weights_file) = kit::checkpoint::read_meta(dir.path()).unwrap();
    let bytes = std::fs::read(&weights_file).unwrap();
    std::fs::write(&weights_file, &bytes[..bytes.len() / 2]).unwrap();
    let err = Saved::read(&weights_file).err().expect("an error");
    assert!(matches!(err, CheckpointError::Damaged { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated or damaged"), "{err}");
}

#[test]
fn a_finished_run_has_nothing_to_resume() {
    let data = data();
    let cfg = settings();
    let params = SeededVarMap::new(4);
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta {
        steps_run: 30,
        ..meta(&data, &cfg)
    };
    let _model = Tiny::new(data.vocab_size(), &params).unwrap();
    let weights_file = kit::checkpoint::save(dir.path(), params.varmap(), &meta, None).unwrap();
    let err = Saved::read(&weights_file).unwrap().state(30).unwrap_err();
    assert!(matches!(err, CheckpointError::Finished { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing to resume"), "{err}");
}
