//! What the training tests share: a small model made of kit's parts, a toy corpus, settings.

use candle_core::{Device, Module, Result, Tensor};
use kit::nn::{Dense, FeedForward, LayerNorm, dense, embedding};
use kit::train::TrainConfig;
use kit::{Dataset, SeededVarMap};

/// A small model made only of kit's parts: embedding, LayerNorm, feed-forward, dense.
pub struct Tiny {
    wte: candle_nn::Embedding,
    ln: LayerNorm,
    mlp: FeedForward,
    head: Dense,
}

impl Tiny {
    pub fn new(vocab: usize, params: &SeededVarMap) -> Result<Self> {
        let vb = params.var_builder(&Device::Cpu);
        Ok(Self {
            wte: embedding(vocab, 16, vb.pp("wte"))?,
            ln: LayerNorm::new(16, vb.pp("ln"))?,
            mlp: FeedForward::new(16, vb.pp("mlp"))?,
            head: dense(16, vocab, vb.pp("head"))?,
        })
    }
}

impl Module for Tiny {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self.wte.forward(xs)?;
        let x = (&x + self.mlp.forward(&self.ln.forward(&x)?)?)?;
        self.head.forward(&x)
    }
}

pub fn data() -> Dataset {
    Dataset::from_text(&"the quick brown fox jumps over the lazy dog. ".repeat(40))
}

pub fn config(seed: u64) -> TrainConfig {
    TrainConfig {
        steps: 40,
        learning_rate: 1e-2,
        batch_size: 4,
        block_size: 8,
        eval_every: 10,
        eval_batches: 2,
        seed,
        keep_best: true,
        progress: false,
        eval_screen: None,
    }
}
