//! The models the commands train, behind one trait, so that a command does not care whether it
//! runs your exercise or the reference.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use checks::reference::RefGpt;
use kit::{GptConfig, Sampler};
use xtask::cli::TrainTask;

/// A trained model that writes text.
pub trait TextModel: Module + Sync {
    fn generate(
        &self,
        sampler: &mut Sampler,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<Vec<u32>>;
}

impl TextModel for exercises::task1::MiniGPT {
    fn generate(&self, sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        exercises::task1::MiniGPT::generate(self, sampler, prompt, n)
    }
}

impl TextModel for solutions::task1::MiniGPT {
    fn generate(&self, sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        solutions::task1::MiniGPT::generate(self, sampler, prompt, n)
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

/// A MiniGPT whose attention is Task 3's, held by the checks, with the checks' own sampling
/// loop.
impl<A: Module + Sync> TextModel for RefGpt<A> {
    fn generate(&self, sampler: &mut Sampler, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        RefGpt::generate(self, sampler, prompt, n)
    }
}

/// Builds the model of `task`: the reference with `solutions`, else the learner's exercise.
pub fn build(
    task: TrainTask,
    solutions: bool,
    cfg: GptConfig,
    vb: VarBuilder,
) -> Result<Box<dyn TextModel>> {
    Ok(match (task, solutions) {
        (TrainTask::Warmup, false) => Box::new(Bigram(
            exercises::warmup::SimpleDecoder::new(cfg.vocab_size, vb)?,
            exercises::warmup::SimpleDecoder::generate,
        )),
        (TrainTask::Warmup, true) => Box::new(Bigram(
            solutions::warmup::SimpleDecoder::new(cfg.vocab_size, vb)?,
            solutions::warmup::SimpleDecoder::generate,
        )),
        (TrainTask::Task1, false) => Box::new(exercises::task1::MiniGPT::new(cfg, vb)?),
        (TrainTask::Task1, true) => Box::new(solutions::task1::MiniGPT::new(cfg, vb)?),
        (TrainTask::Task3, false) => Box::new(RefGpt::new(
            cfg,
            vb,
            exercises::task3::MultiHeadAttention::new,
        )?),
        (TrainTask::Task3, true) => Box::new(RefGpt::new(
            cfg,
            vb,
            solutions::task3::MultiHeadAttention::new,
        )?),
    })
}
