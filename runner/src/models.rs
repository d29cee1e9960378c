//! The registry: the one place in Rust that names a task, because Rust needs the model types
//! in code. Everything else about a task (its files, its settings, what the model commands may
//! do with it) is in tasks.toml; this maps a task's name to the types its model is built from,
//! the learner's (`exercises`) or the reference's (`solutions`).
//!
//! A task that ends in a model needs an arm in [`build`]; one whose heads `attention` draws, an
//! arm in [`attention_tracer`]. A test checks both against tasks.toml.

use candle_core::backprop::GradStore;
use candle_core::{Device, Module, Result, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use kit::bpe::BpeError;
use kit::gpt2::Gpt2Config;
use kit::nn::LayerNorm;
use kit::train::{Run, TrainConfig};
use kit::{Codec, Dataset, GptConfig, Sampler};
use reference::{HeadLayout, RefGpt};
use std::path::Path;
use std::sync::Arc;
use workbook::tasks::TaskList;

/// A trained model that writes text.
pub trait TextModel: Module + Sync {
    fn generate(
        &self,
        sampler: &mut Sampler,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<Vec<u32>>;

    /// [`TextModel::generate`] on kit's thread pool, where kit's ops start at once instead of
    /// handing their work over to it: a step of one position is a few dozen small ops.
    fn write(
        &self,
        sampler: &mut Sampler,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<Vec<u32>> {
        kit::ops::on_pool(|| self.generate(sampler, prompt, max_new_tokens))
    }
}

/// Builds the model of `task`: the reference with `solutions`, else the learner's exercise.
pub fn build(
    task: &str,
    solutions: bool,
    cfg: GptConfig,
    vb: VarBuilder,
) -> Result<Box<dyn TextModel>> {
    Ok(match (task, solutions) {
        ("warmup", false) => Box::new(Bigram(
            exercises::warmup::SimpleDecoder::new(cfg.vocab_size, vb)?,
            exercises::warmup::SimpleDecoder::generate,
        )),
        ("warmup", true) => Box::new(Bigram(
            solutions::warmup::SimpleDecoder::new(cfg.vocab_size, vb)?,
            solutions::warmup::SimpleDecoder::generate,
        )),
        ("task1", false) => Box::new(Writes(
            exercises::task1::MiniGPT::new(cfg, vb)?,
            exercises::task1::MiniGPT::generate,
        )),
        ("task1", true) => Box::new(Writes(
            solutions::task1::MiniGPT::new(cfg, vb)?,
            solutions::task1::MiniGPT::generate,
        )),
        // Task 3 writes only the attention: the rest of the model is the checks' own.
        ("task3", false) => Box::new(RefGpt::new(
            cfg,
            vb,
            exercises::task3::MultiHeadAttention::new,
        )?),
        ("task3", true) => Box::new(RefGpt::new(
            cfg,
            vb,
            solutions::task3::MultiHeadAttention::new,
        )?),
        // Task 4 writes the training step, Task 8 the tokenizer: the model is the checks' own
        // MiniGPT.
        ("task4" | "task8", _) => Box::new(RefGpt::minigpt(cfg, vb, LayerNorm::new)?),
        // MiniLlama writes with Task 6's generation loop, the reference's, so that Task 7's model
        // needs no Task 6 of yours: its cache always has room, so the loop never rebuilds it.
        ("task7", false) => Box::new(Writes(
            exercises::task7::MiniLlama::new(cfg, vb)?,
            solutions::task6::generate_cached,
        )),
        ("task7", true) => Box::new(Writes(
            solutions::task7::MiniLlama::new(cfg, vb)?,
            solutions::task6::generate_cached,
        )),
        _ => candle_core::bail!(
            "runner/src/models.rs builds no model for {task}: tasks.toml gives it a [task.model], \
             so add an arm to `build`"
        ),
    })
}

/// Task 8's tokenizer, the learner's or the reference's, as the model commands use it.
struct BpeCodec<T> {
    bpe: T,
    encode: fn(&T, &str) -> Vec<u32>,
    decode: fn(&T, &[u32]) -> std::result::Result<String, BpeError>,
    vocab_size: fn(&T) -> usize,
}

impl<T: Send + Sync> Codec for BpeCodec<T> {
    fn vocab_size(&self) -> usize {
        (self.vocab_size)(&self.bpe)
    }

    fn encode_text(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        Ok((self.encode)(&self.bpe, text))
    }

    fn decode_text(&self, ids: &[u32]) -> String {
        (self.decode)(&self.bpe, ids).unwrap_or_else(|e| format!("[{e}]"))
    }

    fn vocabulary(&self) -> Option<String> {
        None
    }
}

/// The byte-level BPE of `task`, the learner's (or with `solutions` the reference's): trained on
/// `text` to `vocab` ids and saved into `dir` when `text` is given, else loaded from `dir`.
pub fn bpe(
    task: &str,
    solutions: bool,
    text: Option<(&str, usize)>,
    dir: &Path,
) -> anyhow::Result<Arc<dyn Codec>> {
    macro_rules! codec {
        ($side:ident) => {{
            use $side::task8::Bpe;
            let bpe = match text {
                Some((text, vocab)) => {
                    let bpe = Bpe::train(text, vocab);
                    bpe.save(dir)?;
                    bpe
                }
                None => Bpe::load(dir)?,
            };
            Arc::new(BpeCodec {
                bpe,
                encode: Bpe::encode,
                decode: Bpe::decode,
                vocab_size: Bpe::vocab_size,
            })
        }};
    }
    Ok(match (task, solutions) {
        ("task8", false) => codec!(exercises),
        ("task8", true) => codec!(solutions),
        _ => anyhow::bail!(
            "runner/src/models.rs has no tokenizer for {task}: tasks.toml gives it a bpe_vocab, \
             so add an arm to `bpe`"
        ),
    })
}

/// The corpus as the tokens `task`'s model reads: its characters, or, where tasks.toml gives
/// the task a `bpe_vocab`, the task's byte-level BPE, trained on the corpus first and saved into
/// `dir` beside the checkpoint.
pub fn dataset(task: &str, solutions: bool, dir: &Path) -> anyhow::Result<Dataset> {
    let list = TaskList::here()?;
    let bpe_vocab = list
        .get(task)
        .ok()
        .and_then(|t| t.model.as_ref()?.bpe_vocab);
    let Some(vocab) = bpe_vocab else {
        return Ok(Dataset::load()?);
    };
    let text = common::corpus::load()?;
    let codec = bpe(task, solutions, Some((&text, vocab)), dir)?;
    let tokens = codec.encode_text(&text)?;
    println!(
        "Tokenizer: {} ids, trained on tiny Shakespeare and saved in {}: {} characters are {} \
         tokens, {:.2} characters a token",
        codec.vocab_size(),
        dir.display(),
        text.chars().count(),
        tokens.len(),
        text.chars().count() as f64 / tokens.len() as f64
    );
    Ok(Dataset::from_tokens(&tokens, codec))
}

/// What a training step of the learner's own does besides the update: Task 4's schedule and
/// clipping, when asked for.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    /// The run's learning rate: the schedule's peak.
    pub lr: f64,
    /// The run's steps: the schedule ends there.
    pub steps: usize,
    pub schedule: bool,
    pub clip: Option<f64>,
}

/// What goes on with a run once it has started, whichever step and optimiser it trains with:
/// `cargo xtask train`'s loop and the reference curves.
pub trait WithRun<'a> {
    type Output;

    /// A run with kit's step and Adam, which can be saved to go on later.
    fn kit(self, run: Run<'a, dyn TextModel>) -> anyhow::Result<Self::Output>;

    /// A run with a step and an optimiser of the task's own (Task 4's: the learner's).
    fn own<O: Optimizer + Send>(
        self,
        run: Run<'a, dyn TextModel, O>,
    ) -> anyhow::Result<Self::Output>;
}

/// Starts the run of `task`'s model: Task 4's with the learner's (or the reference's)
/// `train_step`, `Adam`, schedule and clipping; every other with kit's step and Adam. Then
/// hands it to `then`.
#[allow(clippy::too_many_arguments)]
pub fn start_run<'a, W: WithRun<'a>>(
    task: &str,
    solutions: bool,
    model: &'a (dyn TextModel + 'static),
    varmap: &'a VarMap,
    data: &'a Dataset,
    config: &TrainConfig,
    options: StepOptions,
    then: W,
) -> anyhow::Result<W::Output> {
    let device = Device::Cpu;
    let (lr, steps, max_norm) = (options.lr, options.steps, options.clip);
    let (warmup, floor) = ((steps / 20).max(1), lr / 10.0);
    let vars = varmap.all_vars();
    // Task 4's arm, with the learner's types (`exercises`) or the reference's (`solutions`).
    macro_rules! task4_arm {
        ($answers:ident) => {{
            use $answers::task4 as t;
            let schedule = t::Schedule {
                warmup,
                total: steps,
                peak: lr,
                floor,
            };
            let adam = t::Adam::new(vars.clone(), lr)?;
            let adam = Clipped::new(adam, vars, max_norm, t::clip_grad_norm);
            let run = Run::with_step(model, varmap, data, config, &device, adam, t::train_step)?;
            then.own(task4(
                run,
                options.schedule.then_some(move |s| schedule.lr(s)),
            ))
        }};
    }
    match (task, solutions) {
        ("task4", false) => task4_arm!(exercises),
        ("task4", true) => task4_arm!(solutions),
        _ => {
            anyhow::ensure!(
                !(options.schedule || options.clip.is_some()),
                "--schedule and --clip change a training step of your own, and {task} trains \
                 with kit's: use them with a task whose step you write"
            );
            then.kit(Run::start(model, varmap, data, config, &device)?)
        }
    }
}

/// Task 4's run, its learning rate set by `schedule` before each step if there is one.
fn task4<'a, O: Optimizer + Send>(
    run: Run<'a, dyn TextModel, O>,
    schedule: Option<impl Fn(usize) -> f64 + Send + 'a>,
) -> Run<'a, dyn TextModel, O> {
    match schedule {
        Some(schedule) => run.with_schedule(Box::new(schedule)),
        None => run,
    }
}

/// Task 4's `clip_grad_norm`: scales the gradients of the variables so that their norm is at
/// most the limit, and returns the norm before.
type Clip = fn(&mut GradStore, &[Var], f64) -> Result<f64>;

/// An optimiser whose gradients are clipped to a norm first (none: not clipped), as optax
/// chains `clip_by_global_norm` before `adam`: `cargo xtask train task4 --clip`.
pub struct Clipped<O> {
    inner: O,
    vars: Vec<Var>,
    max_norm: Option<f64>,
    clip: Clip,
}

impl<O> Clipped<O> {
    fn new(inner: O, vars: Vec<Var>, max_norm: Option<f64>, clip: Clip) -> Self {
        Self {
            inner,
            vars,
            max_norm,
            clip,
        }
    }
}

impl<O: Optimizer> Optimizer for Clipped<O> {
    type Config = O::Config;

    fn new(_: Vec<Var>, _: O::Config) -> Result<Self> {
        candle_core::bail!("a Clipped optimiser is built around another one")
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let Some(max_norm) = self.max_norm else {
            return self.inner.step(grads);
        };
        let mut clipped = GradStore::default();
        for var in &self.vars {
            if let Some(g) = grads.get(var) {
                clipped.insert(var, g.clone());
            }
        }
        (self.clip)(&mut clipped, &self.vars, max_norm)?;
        self.inner.step(&clipped)
    }

    fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr);
    }
}

/// How `attention` recomputes every head's weights of `task`'s model in f64 from its
/// parameters: the reference forward pass of its architecture, reporting each head's weights.
pub fn attention_tracer(task: &str) -> Option<Tracer> {
    fn minigpt(layout: HeadLayout) -> Tracer {
        Box::new(move |params, cfg, ids, sink| {
            reference::minigpt_f64_traced(params, cfg, &[ids.to_vec()], layout, sink);
        })
    }
    match task {
        "task1" => Some(minigpt(HeadLayout::PerHead)),
        "task3" => Some(minigpt(HeadLayout::Fused)),
        "task7" => Some(Box::new(|params, cfg, ids, sink| {
            reference::llama::llama_f64(params, cfg, ids, None, sink);
        })),
        _ => None,
    }
}

/// Runs a model's reference forward pass on one sequence, calling the sink with
/// `(layer, head, 0, weights)` for every head.
pub type Tracer = Box<dyn Fn(&kit::SeededVarMap, &GptConfig, &[u32], &mut reference::WeightsSink)>;

/// `bench attention`'s three attentions, from the reference solutions: the challenge's
/// per-head model (Task 2 heads, concatenated, a dense layer), Task 1's heads (kit's
/// `AttentionHead`, one fused kernel each) and Task 3's einsum attention.
pub fn attentions(
    hidden: usize,
    heads: usize,
    head_dim: usize,
    vb: VarBuilder,
) -> Result<[Box<dyn Module>; 3]> {
    let task2_heads = reference::Heads::with(
        hidden,
        heads,
        head_dim,
        vb.pp("task2"),
        solutions::task2::SelfAttention::new,
    )?;
    let task1 =
        solutions::task1::MultiHeadAttention::new(hidden, heads, head_dim, vb.pp("per_head"))?;
    let task3 =
        solutions::task3::MultiHeadAttention::new(hidden, heads, head_dim, vb.pp("einsum"))?;
    Ok([Box::new(task2_heads), Box::new(task1), Box::new(task3)])
}

/// With `generate --cache`: the model of a checkpoint of `task` in the model with a KV cache of
/// `cache`, its `cache` in tasks.toml (a Task 3 checkpoint in Task 6's model, with your cache; a
/// task whose own model has one, that model), if it has one.
pub fn cached(
    task: &str,
    cache: Option<&str>,
    solutions: bool,
    cfg: GptConfig,
    vb: VarBuilder,
) -> Result<Option<Box<dyn TextModel>>> {
    Ok(match cache {
        Some("task6") => Some(Box::new(Writes(
            exercises::task6::CachedGpt::new(cfg, vb)?,
            exercises::task6::generate_cached,
        ))),
        Some(own) if own == task => Some(build(task, solutions, cfg, vb)?),
        Some(other) => candle_core::bail!(
            "runner/src/models.rs has no model with a KV cache for {other}, which tasks.toml \
             names as {task}'s cache: add an arm to `cached`"
        ),
        None => None,
    })
}

/// `bench generate`'s two models on the same parameters: Task 3's MiniGPT without a cache (the
/// checks' own), and with Task 6's cache and `generate_cached`, the learner's with `yours`,
/// else the reference's.
pub fn with_and_without_cache(
    cfg: GptConfig,
    yours: bool,
    vb: VarBuilder,
) -> Result<[Box<dyn TextModel>; 2]> {
    let without = RefGpt::with_norm(cfg, vb.clone(), reference::FusedHeads::new, LayerNorm::new)?;
    let with: Box<dyn TextModel> = if yours {
        Box::new(Writes(
            exercises::task6::CachedGpt::new(cfg, vb)?,
            exercises::task6::generate_cached,
        ))
    } else {
        Box::new(Writes(
            solutions::task6::CachedGpt::new(cfg, vb)?,
            solutions::task6::generate_cached,
        ))
    };
    Ok([Box::new(without), with])
}

/// How GPT-2 writes, as the command line gives it: how each next token is drawn, with the KV
/// cache or without, and the token after which it stops.
#[derive(Debug, Clone, Copy)]
pub struct Writing {
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
    pub use_cache: bool,
    pub stop: Option<u32>,
}

/// Task 9's GPT-2, the learner's or the reference's, as `gpt2` and `bench gpt2` use it.
pub trait Gpt2Model: Sync {
    fn config(&self) -> &Gpt2Config;

    /// `prompt` and up to `n` new tokens, written as `how` says by Task 9's own sampler and
    /// `generate`; on kit's pool.
    fn write(&self, prompt: &[u32], n: usize, how: Writing) -> Result<Vec<u32>>;
}

/// [`Gpt2Model`] for the Task 9 of `$side` (`exercises` or `solutions`).
macro_rules! gpt2_model {
    ($side:ident) => {
        impl Gpt2Model for $side::task9::Gpt2 {
            fn config(&self) -> &Gpt2Config {
                $side::task9::Gpt2::config(self)
            }

            fn write(&self, prompt: &[u32], n: usize, how: Writing) -> Result<Vec<u32>> {
                use $side::task9::{Sampler, Sampling, generate};
                let sampling = Sampling {
                    temperature: how.temperature,
                    top_k: how.top_k,
                    top_p: how.top_p,
                };
                let mut sampler = Sampler::new(sampling, how.seed);
                let (cache, stop) = (how.use_cache, how.stop);
                kit::ops::on_pool(|| generate(self, &mut sampler, prompt, n, cache, stop))
            }
        }
    };
}
gpt2_model!(exercises);
gpt2_model!(solutions);

/// Task 9's GPT-2 of the weights `vb` holds, named as a Hugging Face file names them: the
/// learner's, or the reference's with `solutions`.
pub fn gpt2(solutions: bool, cfg: &Gpt2Config, vb: VarBuilder) -> Result<Box<dyn Gpt2Model>> {
    Ok(if solutions {
        Box::new(solutions::task9::Gpt2::new(cfg, vb)?)
    } else {
        Box::new(exercises::task9::Gpt2::new(cfg, vb)?)
    })
}

/// The GPT-2 of the folder `dir` and its tokenizer: Task 9's `Gpt2::load` and Task 8's
/// `Bpe::load`, the learner's, or the reference's with `solutions`.
pub fn gpt2_folder(
    solutions: bool,
    dir: &Path,
) -> anyhow::Result<(Box<dyn Gpt2Model>, Arc<dyn Codec>)> {
    let model: Box<dyn Gpt2Model> = if solutions {
        Box::new(solutions::task9::Gpt2::load(dir)?)
    } else {
        Box::new(exercises::task9::Gpt2::load(dir)?)
    };
    Ok((model, bpe("task8", solutions, None, dir)?))
}

/// `bench layer-norm`'s LayerNorms over `dim` features: Task 5's (the learner's with `yours`,
/// else the reference's), then kit's fused op, then kit's composed one.
pub fn layer_norms(
    dim: usize,
    yours: bool,
    vb: VarBuilder,
) -> Result<[(String, Box<dyn Module>); 3]> {
    let task5: Box<dyn Module> = if yours {
        Box::new(exercises::task5::LayerNorm::new(dim, vb.pp("task5"))?)
    } else {
        Box::new(solutions::task5::LayerNorm::new(dim, vb.pp("task5"))?)
    };
    let kit = kit::nn::LayerNorm::new(dim, vb.pp("kit"))?;
    // The same scale and shift, for the composed op.
    let (weight, bias) = (
        vb.pp("kit").get(dim, "weight")?,
        vb.pp("kit").get(dim, "bias")?,
    );
    let composed = move |x: &Tensor| {
        kit::ops::composed::layer_norm(x, &weight, &bias, kit::nn::LayerNorm::EPS)
    };
    let who = if yours { "yours" } else { "the reference's" };
    Ok([
        (format!("Task 5 ({who})"), task5),
        ("kit, fused".into(), Box::new(kit)),
        (
            "kit, composed".into(),
            Box::new(candle_nn::Func::new(composed)),
        ),
    ])
}

/// A generation loop: `max_new_tokens` tokens after `prompt`, drawn by the sampler.
type Generate<M> = fn(&M, &mut Sampler, &[u32], usize) -> Result<Vec<u32>>;

/// A model and the generation loop it writes with: its own `generate`, or Task 6's.
struct Writes<M>(M, Generate<M>);

impl<M: Module> Module for Writes<M> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.0.forward(xs)
    }
}

impl<M: Module + Sync> TextModel for Writes<M> {
    fn generate(&self, sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        (self.1)(&self.0, sampler, prompt, n)
    }
}

/// The bigram writes greedily from the last prompt token, whatever the sampler.
struct Bigram<M>(M, fn(&M, u32, usize) -> Result<Vec<u32>>);

impl<M: Module> Module for Bigram<M> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.0.forward(xs)
    }
}

impl<M: Module + Sync> TextModel for Bigram<M> {
    fn generate(&self, _sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let last = *prompt
            .last()
            .ok_or_else(|| candle_core::Error::Msg("empty prompt".into()))?;
        let mut out = prompt[..prompt.len() - 1].to_vec();
        out.extend((self.1)(&self.0, last, n + 1)?);
        Ok(out)
    }
}

/// A MiniGPT whose attention is a task's, held by the reference crate, with its own sampling
/// loop.
impl<A: Module + Sync, N: Module + Sync> TextModel for RefGpt<A, N> {
    fn generate(&self, sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        RefGpt::generate(self, sampler, prompt, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use workbook::tasks::{ModelCommand, TaskList};

    #[test]
    fn every_model_of_the_task_list_is_built_and_drawn_here() {
        let list = TaskList::here().unwrap();
        let cfg = GptConfig {
            vocab_size: 11,
            hidden: 8,
            block_size: 4,
            num_layers: 1,
            num_heads: 2,
        };
        for task in &list.tasks {
            let params = kit::SeededVarMap::new(0);
            let vb = params.var_builder(&candle_core::Device::Cpu);
            let built = build(&task.name, true, cfg, vb);
            assert_eq!(
                built.is_ok(),
                task.model.is_some(),
                "{}: tasks.toml and `build` disagree on whether it has a model",
                task.name
            );
            assert_eq!(
                attention_tracer(&task.name).is_some(),
                task.allows(ModelCommand::Attention),
                "{}: tasks.toml and `attention_tracer` disagree on whether its heads can be drawn",
                task.name
            );
        }
        assert!(
            list.default_bench().is_some(),
            "no task in tasks.toml has a bench"
        );
        for task in list.with_model() {
            let cache = task.model.as_ref().and_then(|m| m.cache.as_deref());
            let params = kit::SeededVarMap::new(0);
            let vb = params.var_builder(&candle_core::Device::Cpu);
            assert!(
                cached(&task.name, cache, true, cfg, vb).is_ok(),
                "{}: tasks.toml names a cache that `cached` cannot build",
                task.name
            );
        }
    }
}
