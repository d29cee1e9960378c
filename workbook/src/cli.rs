//! The argument types of `cargo xtask`, and nothing else. The model runner parses the same.
//!
//! Task names are checked against the task list (see [`crate::tasks`]), so a task added there
//! is a valid argument at once; a wrong one is answered with the names there are.

use crate::config::{GptConfig, TrainConfig};
use crate::tasks::{self, TaskList};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The graded MiniGPT's sizes, the defaults of `train` (the vocabulary comes from the corpus).
const GRADED_MODEL: GptConfig = GptConfig::graded(0);
/// The challenge's training settings, the other defaults of `train`.
const CHALLENGE: TrainConfig = TrainConfig::CHALLENGE;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "The minigpt-candle workbook: check your work, train, benchmark."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Grade a task: runs its checks and prints one line per check.
    Check(CheckArgs),
    /// Download tiny Shakespeare (verifying its sha256), or install a local copy.
    Data(DataArgs),
    /// Train a model, save a checkpoint and print a sample.
    Train(TrainArgs),
    /// Measure speed: a training step, attention, generation, the BPE tokenizer.
    Bench(BenchArgs),
    /// Write text with a trained checkpoint.
    Generate(GenerateArgs),
    /// Draw what every attention head of a trained model looks at, for one prompt.
    Attention(AttentionArgs),
    /// Write with OpenAI's GPT-2 (or any GPT-2 folder) on your Task 9 code.
    Gpt2(Gpt2Args),
    /// Show the next hint for the part of a task you are on (a nudge, the concept, the candle
    /// calls, then its code).
    Hint(HintArgs),
    /// A table of the tasks: passed, failing or not started, from your last checks.
    Status,
    /// Grade again whenever a file under exercises/ is saved.
    Watch(WatchArgs),
    /// Put back an exercise file as the repository has it (a copy of yours is kept).
    Reset(ResetArgs),
    /// Show how your exercise file differs from the reference solution.
    Solution(SolutionArgs),
    /// Say whether this machine is ready: Rust, cores, CPU, corpus, disk, build, colour.
    Doctor,
    /// For maintainers: how many broken reference solutions the checks catch (cargo-mutants).
    Mutants(MutantsArgs),
    /// For maintainers: train the reference solutions over a few seeds and write the loss
    /// curves every `train` is compared with (data/reference/curves.json).
    ReferenceCurves(ReferenceCurvesArgs),
}

#[derive(Args)]
pub struct ReferenceCurvesArgs {
    /// How many seeds (0, 1, ...) per task: the band is their spread.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = at_least_one)]
    pub seeds: u64,
    /// Train this task's reference only, keeping the other tasks' curves as they are.
    #[arg(long, value_parser = task_with_model)]
    pub task: Option<String>,
}

#[derive(Args)]
pub struct MutantsArgs {
    /// Which task's reference solution to mutate (default: all).
    #[arg(default_value = tasks::ALL, value_parser = task_or_all)]
    pub task: String,
    /// Only list the mutants, without building or testing them.
    #[arg(long)]
    pub list: bool,
}

#[derive(Args)]
pub struct WatchArgs {
    /// Which task to grade (default: the first that does not pass yet).
    #[arg(value_parser = single_task)]
    pub task: Option<String>,
}

#[derive(Args)]
pub struct ResetArgs {
    /// Which task's exercise file.
    #[arg(value_parser = single_task)]
    pub task: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// The git revision to take the file from.
    #[arg(long, default_value = "HEAD", value_name = "REV")]
    pub from: String,
}

#[derive(Args)]
pub struct SolutionArgs {
    /// Which task.
    #[arg(value_parser = single_task)]
    pub task: String,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A checkpoint folder (runs/task1) or its model.safetensors.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// The text to continue; every character must be in tiny Shakespeare's vocabulary.
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// How many characters to add.
    #[arg(long, default_value_t = 500, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub tokens: u64,
    /// Below 1 sharper, above 1 wilder; 0 always takes the most likely character.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = temperature)]
    pub temperature: f32,
    /// Sample only among the k most likely characters.
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one)]
    pub top_k: Option<u64>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub seed: u64,
    /// Generate with a KV cache: your Task 6 cache on a Task 3 model.
    #[arg(long)]
    pub cache: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("weights").required(true).args(["dir", "download"])))]
pub struct Gpt2Args {
    /// A GPT-2 folder: config.json, model.safetensors, vocab.json and merges.txt.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Fetch OpenAI's GPT-2 (124M, openai-community/gpt2) from the Hugging Face hub first, with
    /// the hub's own Rust client, into its cache (HF_HOME).
    #[arg(long, conflicts_with = "dir")]
    pub download: bool,
    /// The text to continue.
    #[arg(long, default_value = "The meaning of life is")]
    pub prompt: String,
    /// How many tokens to add at most (fewer if <|endoftext|> comes first).
    #[arg(long, default_value_t = 40, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub tokens: u64,
    /// Below 1 sharper, above 1 wilder; 0 always takes the most likely token.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = gpt2_temperature)]
    pub temperature: f64,
    /// Sample only among the k most likely tokens (transformers' default is 50).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = at_least_one)]
    pub top_k: u64,
    /// Sample only among the most likely tokens whose probabilities add up to p (nucleus
    /// sampling), a number in (0, 1].
    #[arg(long, allow_negative_numbers = true, value_parser = top_p)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub seed: u64,
    /// Run the whole text again for every token instead of using the KV cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Run the reference solution's GPT-2 and tokenizer instead of your Tasks 9 and 8.
    #[arg(long)]
    pub solutions: bool,
}

#[derive(Args)]
pub struct AttentionArgs {
    /// A checkpoint folder of a model with attention heads (runs/task1), or its
    /// model.safetensors.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// The text to look at (its last block_size characters).
    #[arg(long)]
    pub prompt: String,
    /// Where to write the SVG (default: attention.svg beside the checkpoint).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct HintArgs {
    /// Which task.
    #[arg(value_parser = single_task)]
    pub task: String,
    /// Which part of it (default: the one your last check stopped at).
    pub part: Option<String>,
}

/// The name of a task of the list.
fn single_task(s: &str) -> Result<String, String> {
    let list = TaskList::here().map_err(|e| e.to_string())?;
    if s == tasks::ALL {
        return Err(format!("pick one task: {}", tasks::or_list(list.names())));
    }
    Ok(list.get(s)?.name.clone())
}

/// The name of a task of the list, or `all`.
fn task_or_all(s: &str) -> Result<String, String> {
    let list = TaskList::here().map_err(|e| e.to_string())?;
    if s == tasks::ALL {
        return Ok(s.to_string());
    }
    list.get(s).map(|t| t.name.clone()).map_err(|_| {
        let names = list.names().chain([tasks::ALL]);
        format!("no such task: pick one of {}", tasks::or_list(names))
    })
}

/// The name of a task that ends in a model.
fn task_with_model(s: &str) -> Result<String, String> {
    let list = TaskList::here().map_err(|e| e.to_string())?;
    match list.get(s) {
        Ok(t) if t.model.is_some() => Ok(t.name.clone()),
        _ => Err(format!(
            "no model to train in {s:?}: pick one of {}",
            tasks::or_list(list.with_model().map(|t| t.name.as_str()))
        )),
    }
}

/// A whole number.
fn whole(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n < 0 => Err(format!("{n} is negative")),
        Ok(n) => u64::try_from(n).map_err(|_| format!("{n} is too large")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// A whole number, 0 or more.
fn zero_or_more(s: &str) -> Result<u64, String> {
    whole(s).map_err(|e| format!("{e}: give a whole number, 0 or more"))
}

/// A whole number, 1 or more.
fn at_least_one(s: &str) -> Result<u64, String> {
    match whole(s) {
        Ok(0) => Err("0 is too few: give a whole number, 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: give a whole number, 1 or more")),
    }
}

/// `s` as a finite number that `fits`, or the refusal `why` writes.
fn number(
    s: &str,
    fits: impl Fn(f64) -> bool,
    why: impl FnOnce() -> String,
) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|&x| x.is_finite() && fits(x))
        .ok_or_else(why)
}

/// A sampling temperature: 0 (greedy) or more.
fn temperature(s: &str) -> Result<f32, String> {
    let fits = |t: f64| t >= 0.0 && (t as f32).is_finite();
    number(s, fits, || {
        format!(
            "{s} is not a temperature: give a number from 0 (always the most likely character) \
             upwards, 1 samples the model as it is"
        )
    })
    .map(|t| t as f32)
}

/// A sampling temperature for GPT-2: 0 (greedy) or more.
fn gpt2_temperature(s: &str) -> Result<f64, String> {
    number(
        s,
        |t| t >= 0.0,
        || {
            format!(
                "{s} is not a temperature: give a number from 0 (always the most likely token) \
             upwards, 1 samples the model as it is"
            )
        },
    )
}

/// A top-p threshold: a number in (0, 1].
fn top_p(s: &str) -> Result<f64, String> {
    number(
        s,
        |p| p > 0.0 && p <= 1.0,
        || {
            format!(
                "{s} is not a top-p: give a number above 0 and at most 1, such as 0.9 (1 keeps every \
             token)"
            )
        },
    )
}

/// A positive number.
fn positive(s: &str) -> Result<f64, String> {
    number(s, |x| x > 0.0, || format!("{s} is not a positive number"))
}

/// A learning rate: a positive number.
fn learning_rate(s: &str) -> Result<f64, String> {
    number(
        s,
        |lr| lr > 0.0,
        || format!("{s} is not a learning rate: give a positive number, such as 1e-3"),
    )
}

#[derive(Args)]
pub struct CheckArgs {
    /// Which task to grade, or `all`.
    #[arg(value_parser = task_or_all)]
    pub task: String,
    /// Grade the reference solutions instead of your exercises.
    #[arg(long)]
    pub solutions: bool,
}

#[derive(Args)]
pub struct DataArgs {
    /// Install this local copy of input.txt (verified first) instead of downloading.
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// Download from this address instead of the canonical one.
    #[arg(long, value_name = "URL", hide = true)]
    pub url: Option<String>,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Which task's model.
    #[arg(value_parser = task_with_model)]
    pub task: String,
    /// Train the reference solution instead of your exercise.
    #[arg(long)]
    pub solutions: bool,
    /// Training steps (default: the task's, from tasks.toml).
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one)]
    pub steps: Option<u64>,
    /// Adam's learning rate.
    #[arg(long, default_value_t = CHALLENGE.learning_rate, allow_negative_numbers = true, value_parser = learning_rate)]
    pub lr: f64,
    #[arg(long, default_value_t = GRADED_MODEL.num_layers as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub layers: u64,
    #[arg(long, default_value_t = GRADED_MODEL.num_heads as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub heads: u64,
    #[arg(long, default_value_t = GRADED_MODEL.hidden as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub hidden: u64,
    #[arg(long, default_value_t = CHALLENGE.block_size as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub block: u64,
    #[arg(long, default_value_t = CHALLENGE.batch_size as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub batch: u64,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub seed: u64,
    /// Evaluate every this many steps.
    #[arg(long, default_value_t = CHALLENGE.eval_every as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub eval_every: u64,
    /// Eval batches averaged by each evaluation (the challenge uses 1).
    #[arg(long, default_value_t = CHALLENGE.eval_batches as u64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub eval_batches: u64,
    /// Where to write the checkpoint (default: the --resume folder, else runs/<task>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Go on with the run saved in DIR (by an evaluation or Ctrl-C), with the same settings.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Characters of text to sample after training.
    #[arg(long, default_value_t = 300, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub sample: u64,
    /// With your own training step (Task 4): your schedule, a warm-up over the first 5% of the
    /// steps to --lr, then a cosine decay to a tenth of it.
    #[arg(long)]
    pub schedule: bool,
    /// With your own training step (Task 4): clip the gradient's norm at this.
    #[arg(long, value_name = "MAX_NORM", allow_negative_numbers = true, value_parser = positive)]
    pub clip: Option<f64>,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
    /// Print one JSON object as the last line.
    #[arg(long, global = true)]
    pub json: bool,
}

impl BenchArgs {
    /// Whether this benchmark runs kit's composed ops instead of the fused ones.
    pub fn composed(&self) -> bool {
        match &self.what {
            BenchWhat::Train(a) => a.composed,
            BenchWhat::Attention(a) => a.composed,
            BenchWhat::Products(_)
            | BenchWhat::LayerNorm(_)
            | BenchWhat::Generate(_)
            | BenchWhat::Bpe(_)
            | BenchWhat::Gpt2(_) => false,
        }
    }
}

#[derive(Subcommand)]
pub enum BenchWhat {
    /// ms per training step of the reference MiniGPT at the graded settings.
    Train(BenchTrainArgs),
    /// Task 1 per-head attention against Task 3 einsum attention.
    Attention(BenchAttentionArgs),
    /// The dense products of a training step, each alone in a loop: what gemm reaches on them.
    Products(BenchProductsArgs),
    /// Task 5's LayerNorm against kit's fused and composed ones, forward and backward.
    LayerNorm(BenchLayerNormArgs),
    /// Tokens per second with and without a KV cache (Task 6), at two context lengths: the
    /// reference solution's cache, or yours with --yours.
    Generate(BenchGenerateArgs),
    /// Task 8's BPE on tiny Shakespeare, one thread: training 512 ids and encoding the corpus,
    /// against Hugging Face's tokenizers and tiktoken: the reference solution's, or yours with
    /// --yours.
    Bpe(BenchBpeArgs),
    /// Tokens per second of GPT-2 small's shape (random weights) with the KV cache (Task 9),
    /// the reference solution's or yours with --yours, against transformers' generate; and the
    /// model's memory.
    Gpt2(BenchGpt2Args),
}

#[derive(Args)]
pub struct BenchBpeArgs {
    /// Timed runs per measurement, after one untimed (the median is reported).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = at_least_one)]
    pub repeats: u64,
    /// Time your exercise's Bpe::train and Bpe::encode instead of the reference solution's.
    #[arg(long)]
    pub yours: bool,
}

#[derive(Args)]
pub struct BenchGpt2Args {
    /// Timed generations (the median is reported).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = at_least_one)]
    pub repeats: u64,
    /// Tokens of the prompt.
    #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = at_least_one)]
    pub prompt: u64,
    /// New tokens each generation writes.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = at_least_one)]
    pub tokens: u64,
    /// Time your exercise's GPT-2 and generate instead of the reference solution's.
    #[arg(long)]
    pub yours: bool,
}

#[derive(Args)]
pub struct BenchGenerateArgs {
    /// Timed generations per measurement (the median is reported).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = at_least_one)]
    pub repeats: u64,
    /// Time your exercise's KV cache and generate_cached instead of the reference solution's.
    #[arg(long)]
    pub yours: bool,
}

#[derive(Args)]
pub struct BenchLayerNormArgs {
    /// Timed repeats per measurement (the median is reported).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = at_least_one)]
    pub repeats: u64,
    /// Time your exercise's LayerNorm instead of the reference solution's.
    #[arg(long)]
    pub yours: bool,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Timed steps, after the warm-up steps.
    #[arg(long, default_value_t = 300, allow_negative_numbers = true, value_parser = at_least_one)]
    pub steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = zero_or_more)]
    pub warmup: u64,
    /// Whose reference model to time, a task with `bench` in tasks.toml (default: Task 1's
    /// MiniGPT).
    #[arg(long, value_parser = task_with_model)]
    pub task: Option<String>,
    /// Build kit with its composed ops (candle's elementary ops, no fused kernels) and train
    /// with candle-nn's AdamW: the "before" figure.
    #[arg(long)]
    pub composed: bool,
    /// Parts each batch is cut into, differentiated side by side (the training loop uses 2).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = at_least_one)]
    pub parts: u64,
    /// Timed evaluations of the graded number of batches, after the steps and one untimed
    /// evaluation (the median is reported).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = at_least_one)]
    pub eval_repeats: u64,
    /// Also time forward, backward and the optimizer step separately.
    #[arg(long)]
    pub breakdown: bool,
}

#[derive(Args)]
pub struct BenchProductsArgs {
    /// Timed calls per product (the median is reported).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = at_least_one)]
    pub repeats: u64,
}

#[derive(Args)]
pub struct BenchAttentionArgs {
    /// Timed repeats per measurement (the median is reported).
    #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = at_least_one)]
    pub repeats: u64,
    /// Build kit with its composed ops: candle's elementary ops everywhere (no fused kernels),
    /// as a learner's own code would use.
    #[arg(long)]
    pub composed: bool,
}
