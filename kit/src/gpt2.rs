//! What Task 9's GPT-2 is given: its settings, read from a checkpoint folder's `config.json`,
//! and its weights, `model.safetensors`, opened as a [`VarBuilder`].
//!
//! A Hugging Face GPT-2 folder holds `config.json` (the sizes), `model.safetensors` (the
//! weights, named as `transformers` names them, with or without a `transformer.` prefix),
//! `vocab.json` and `merges.txt` (the tokenizer, Task 8's files). Only the settings GPT-2's
//! forward pass reads are kept here; the rest of `config.json` (dropout rates, the settings of
//! the classification heads) is for training or other models.

use candle_core::{DType, Device, Result};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::path::Path;

/// GPT-2's sizes and the two numbers its forward pass needs besides them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gpt2Config {
    /// Token ids: 50257 for OpenAI's models, `<|endoftext|>` the last.
    pub vocab_size: usize,
    /// Positions of the table `wpe`: the longest context, 1024 for OpenAI's models.
    pub n_positions: usize,
    /// The width C of every hidden state.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Heads of attention, each C / n_head wide.
    pub n_head: usize,
    /// LayerNorm's ε: 1e-5 in every GPT-2.
    #[serde(default = "default_epsilon")]
    pub layer_norm_epsilon: f64,
    /// The id that ends a text, `<|endoftext|>`'s.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// The feed-forward layer's activation: `gelu_new` (GELU's tanh approximation) in every
    /// GPT-2 OpenAI published.
    #[serde(default = "default_activation")]
    activation_function: String,
    /// The feed-forward layer's width; `null` is 4·C.
    #[serde(default)]
    n_inner: Option<usize>,
    /// Whether the output layer is the token embedding (`true` when absent).
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    /// Whether the attention scores are scaled by 1/√(head size) (`true` when absent).
    #[serde(default = "yes")]
    scale_attn_weights: bool,
}

fn default_epsilon() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".into()
}

fn yes() -> bool {
    true
}

impl Gpt2Config {
    /// OpenAI's smallest GPT-2, "124M": 12 blocks of 12 heads, 768 wide, 1024 positions,
    /// 50257 tokens.
    pub fn small() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            layer_norm_epsilon: default_epsilon(),
            eos_token_id: Some(50256),
            activation_function: default_activation(),
            n_inner: None,
            tie_word_embeddings: true,
            scale_attn_weights: true,
        }
    }

    /// Reads `dir/config.json`, refusing a model that is not GPT-2 as OpenAI built it: another
    /// activation, another width of the feed-forward layer, an untied output layer or unscaled
    /// attention scores.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| candle_core::Error::Msg(format!("cannot read {}: {e}", path.display())))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| {
            candle_core::Error::Msg(format!("{} is not a GPT-2 config: {e}", path.display()))
        })?;
        cfg.check()
            .map_err(|what| candle_core::Error::Msg(format!("{}: {what}", path.display())))?;
        Ok(cfg)
    }

    /// What in these settings GPT-2's forward pass, as the workbook writes it, cannot run.
    fn check(&self) -> std::result::Result<(), String> {
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(format!(
                "activation_function is {:?}; GPT-2's is \"gelu_new\", GELU's tanh approximation",
                self.activation_function
            ));
        }
        if self.n_inner.is_some_and(|n| n != 4 * self.n_embd) {
            return Err(format!(
                "n_inner is {:?}; GPT-2's feed-forward layer is 4·n_embd = {} wide",
                self.n_inner,
                4 * self.n_embd
            ));
        }
        if !self.tie_word_embeddings || !self.scale_attn_weights {
            return Err(
                "tie_word_embeddings and scale_attn_weights must be true, as in GPT-2".into(),
            );
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        Ok(())
    }

    /// The width of a head, C / n_head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The number of parameters: the token and position tables, 12·C² + 13·C per block, and
    /// the final LayerNorm; the output layer is the token table.
    pub fn parameters(&self) -> usize {
        let c = self.n_embd;
        (self.vocab_size + self.n_positions) * c + self.n_layer * (12 * c * c + 13 * c) + 2 * c
    }
}

/// The weights of the folder `dir`, `model.safetensors`, as a [`VarBuilder`] of f32 tensors on
/// the CPU, named as the file names them.
pub fn weights(dir: &Path) -> Result<VarBuilder<'static>> {
    let path = dir.join("model.safetensors");
    if !path.is_file() {
        candle_core::bail!(
            "{} is missing: a GPT-2 folder holds config.json, model.safetensors, vocab.json \
             and merges.txt",
            path.display()
        )
    }
    // SAFETY: the file is mapped read-only while the tensors are copied out of it, and nothing
    // in the workbook writes to it meanwhile.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124_million_parameters() {
        assert_eq!(Gpt2Config::small().parameters(), 124_439_808);
    }

    #[test]
    fn a_config_that_is_not_gpt2s_is_refused_with_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("config.json"), text).unwrap();
        write(
            r#"{"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2,
                "activation_function": "gelu"}"#,
        );
        let e = Gpt2Config::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tanh approximation"), "{e}");
        write(r#"{"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2}"#);
        let cfg = Gpt2Config::read(dir.path()).unwrap();
        assert_eq!((cfg.head_dim(), cfg.layer_norm_epsilon), (4, 1e-5));
    }
}
