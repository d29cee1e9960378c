//! Task 9 checks: OpenAI's GPT-2 on your code.
//!
//! The fixture (`data/fixtures/task9_gpt2.json` and the folder `data/fixtures/task9-gpt2/`,
//! made by `data/fixtures/make_task9_fixture.py`) is a tiny GPT-2 with random weights that
//! Hugging Face `transformers` made and saved as checkpoints are published, in both layouts
//! found in the wild, with the logits it computes for three prompts, its greedy texts with and
//! without its KV cache, and the ids `GPT2TokenizerFast` writes for a battery of texts with the
//! folder's `vocab.json` and `merges.txt`. Each part is also compared with the checks' own f64
//! GPT-2 (`reference::gpt2`) on random weights; sampling is checked by its definition, by
//! properties and by a chi-square test of ten thousand draws.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use checks::diagnose::gpt2 as diagnose;
use checks::diagnose::kv_cache::{self, TokenSteps};
use checks::fixture;
use checks::learner::task9::{
    Attention, Cache, Gpt2, LayerCache, Mlp, Sampler, Sampling, conv1d, distribution, generate,
    pick,
};
use checks::support::{assert_causal_with, device, ids, max_abs_diff, random_tensor, values};
use kit::decode::Decoder;
use kit::gpt2::Gpt2Config;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use reference::gpt2::{Way, Weights, attention_f64, conv1d_f64, distribution_f64, gpt2_f64};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// How close your logits must be to `transformers`' (float32, logits of about ±10).
const TO_TRANSFORMERS: f64 = 1e-4;
/// How close a part must be to the checks' f64 computation.
const TO_REFERENCE: f64 = 1e-4;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| fixture::load("task9_gpt2.json"))
}

/// The fixture's GPT-2 folder: `transformers`' layout (`transformer.` prefix, no
/// `lm_head.weight`), and the other files.
fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/task9-gpt2")
}

fn fixture_config() -> Gpt2Config {
    Gpt2Config::read(&folder()).expect("the fixture's config.json")
}

/// The fixture's weights, as the checks' f64 GPT-2 reads them.
fn fixture_weights() -> &'static Weights {
    static WEIGHTS: OnceLock<Weights> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let tensors = candle_core::safetensors::load(folder().join("model.safetensors"), &device())
            .expect("the fixture's model.safetensors");
        Weights::from_tensors(&tensors)
    })
}

/// The fixture's prompts: their text and ids.
fn prompts() -> Vec<(String, Vec<u32>)> {
    fixture()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["text"].as_str().unwrap().to_string(),
                fixture::ids(&p["ids"]),
            )
        })
        .collect()
}

/// A tiny GPT-2 for the checks' random weights: 29 tokens, 8 positions, width 16, 2 blocks of 4
/// heads.
fn tiny() -> Gpt2Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 29, "n_positions": 8, "n_embd": 16, "n_layer": 2, "n_head": 4,
        "eos_token_id": 28
    }))
    .expect("a config")
}

/// Random values of `shape`, uniform in [centre − spread, centre + spread).
fn uniform(seed: u64, shape: &[usize], centre: f64, spread: f64) -> Tensor {
    random_tensor(seed, shape).affine(spread, centre).unwrap()
}

/// A random GPT-2 of `cfg`'s sizes, named as OpenAI's files name it: every LayerNorm away
/// from the identity, every bias away from 0.
fn random_gpt2(cfg: &Gpt2Config, seed: u64) -> HashMap<String, Tensor> {
    let c = cfg.n_embd;
    let mut t = HashMap::new();
    let mut n = seed * 1000;
    let mut put = |name: String, shape: &[usize], centre: f64, spread: f64| {
        n += 1;
        t.insert(name, uniform(n, shape, centre, spread));
    };
    put("wte.weight".into(), &[cfg.vocab_size, c], 0.0, 0.5);
    put("wpe.weight".into(), &[cfg.n_positions, c], 0.0, 0.5);
    for l in 0..cfg.n_layer {
        for ln in ["ln_1", "ln_2"] {
            put(format!("h.{l}.{ln}.weight"), &[c], 1.0, 0.3);
            put(format!("h.{l}.{ln}.bias"), &[c], 0.0, 0.3);
        }
        for (name, n_in, n_out) in [
            ("attn.c_attn", c, 3 * c),
            ("attn.c_proj", c, c),
            ("mlp.c_fc", c, 4 * c),
            ("mlp.c_proj", 4 * c, c),
        ] {
            let spread = 1.5 / (n_in as f64).sqrt();
            put(format!("h.{l}.{name}.weight"), &[n_in, n_out], 0.0, spread);
            put(format!("h.{l}.{name}.bias"), &[n_out], 0.0, 0.2);
        }
    }
    put("ln_f.weight".into(), &[c], 1.0, 0.3);
    put("ln_f.bias".into(), &[c], 0.0, 0.3);
    t
}

/// Your GPT-2 of these tensors, or what its loader did wrong.
fn your_gpt2(cfg: &Gpt2Config, tensors: &HashMap<String, Tensor>) -> Gpt2 {
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &device());
    Gpt2::new(cfg, vb).unwrap_or_else(|e| {
        panic!(
            "Gpt2::new of a random GPT-2 failed: {}",
            diagnose::load_error(&e.to_string(), "OpenAI's layout, without the prefix", cfg)
        )
    })
}

// ---------------------------------------------------------------------------- the parts

/// A VarBuilder over `weight` and `bias` at its root.
fn conv1d_weights(weight: &Tensor, bias: &Tensor) -> VarBuilder<'static> {
    let tensors = HashMap::from([
        ("weight".to_string(), weight.clone()),
        ("bias".to_string(), bias.clone()),
    ]);
    VarBuilder::from_tensors(tensors, DType::F32, &device())
}

/// Your `conv1d` on a Conv1D of (3 → 5) and of (4 → 4): `None` if it computes x W + b with the
/// weight as stored, (in, out), else what it computes instead.
fn conv1d_verdict() -> Option<String> {
    [(3usize, 5usize, 1u64), (4, 4, 2)]
        .into_iter()
        .find_map(|(n_in, n_out, seed)| {
            let w = uniform(seed * 10, &[n_in, n_out], 0.0, 1.0);
            let b = uniform(seed * 10 + 1, &[n_out], 0.0, 1.0);
            let x = uniform(seed * 10 + 2, &[2, 3, n_in], 0.0, 1.0);
            let got = conv1d(n_in, n_out, conv1d_weights(&w, &b))
                .and_then(|dense| dense.forward(&x))
                .map(|y| values(&y))
                .map_err(|e| e.to_string());
            let (xv, wv, bv) = (values(&x), values(&w), values(&b));
            let want = conv1d_f64(&xv, &wv, Some(&bv), n_in, n_out, reference::gpt2::Conv1d::AsStored);
            let right = matches!(&got, Ok(g) if g.len() == want.len() && max_abs_diff(g, &want) < TO_REFERENCE);
            (!right).then(|| {
                format!(
                    "conv1d({n_in}, {n_out}) with a weight stored ({n_in}, {n_out}) does not compute \
                     x W + b: {}",
                    diagnose::conv1d(&got, &xv, (&wv, &bv), n_in, n_out)
                )
            })
        })
}

#[test]
fn conv1d_computes_x_w_plus_b_from_the_weight_stored_in_by_out() {
    if let Some(why) = conv1d_verdict() {
        panic!("{why}");
    }
}

/// The tensors of one block of a random GPT-2 of width `c`, under `prefix.` removed.
fn block_tensors(c: usize, seed: u64, prefix: &str) -> HashMap<String, Tensor> {
    let cfg: Gpt2Config = serde_json::from_value(serde_json::json!({
        "vocab_size": 5, "n_positions": 8, "n_embd": c, "n_layer": 1, "n_head": 2
    }))
    .unwrap();
    random_gpt2(&cfg, seed)
        .into_iter()
        .filter_map(|(name, t)| {
            name.strip_prefix(&format!("h.0.{prefix}."))
                .map(|rest| (rest.to_string(), t))
        })
        .collect()
}

/// Your Mlp on random weights (C 8): `None` if it is c_proj(gelu_tanh(c_fc(x))), else what it
/// computes.
fn mlp_verdict() -> Option<String> {
    let c = 8;
    let tensors = block_tensors(c, 3, "mlp");
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &device());
    let mlp = Mlp::new(c, vb).expect("Mlp::new");
    let x = uniform(31, &[2, 3, c], 0.0, 2.0);
    let got = values(&mlp.forward(&x).expect("Mlp::forward"));
    let v = |name: &str| values(&tensors[name]);
    let (fc_w, fc_b, proj_w, proj_b) = (
        v("c_fc.weight"),
        v("c_fc.bias"),
        v("c_proj.weight"),
        v("c_proj.bias"),
    );
    let (fc, proj) = (
        (&fc_w[..], Some(&fc_b[..])),
        (&proj_w[..], Some(&proj_b[..])),
    );
    let want = reference::gpt2::mlp_f64(&values(&x), c, fc, proj, &Way::RIGHT);
    let diff = max_abs_diff(&got, &want);
    (diff >= TO_REFERENCE).then(|| {
        format!(
            "Mlp differs from GPT-2's feed-forward layer by {diff:.2e}: {}",
            diagnose::mlp(&got, &values(&x), c, fc, proj)
        )
    })
}

#[test]
fn mlp_is_c_fc_then_gelus_tanh_approximation_then_c_proj() {
    if let Some(why) = mlp_verdict() {
        panic!("{why}");
    }
}

/// Your Attention (C 8, 2 heads) on random weights, run on one sequence of `steps` positions
/// at a time on top of its cache: its outputs joined, or what failed.
fn attention_steps(steps: &[usize]) -> (Result<Vec<f64>, String>, Vec<f64>, Attn) {
    let (c, n) = (8, 2);
    let tensors = block_tensors(c, 4, "attn");
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &device());
    let attn = Attention::new(c, n, vb).expect("Attention::new");
    let total: usize = steps.iter().sum();
    let x = uniform(41, &[1, total, c], 0.0, 1.5);
    let mut cache = LayerCache::default();
    let mut got = Vec::new();
    let mut start = 0;
    for &len in steps {
        match attn.forward_step(&x.narrow(1, start, len).unwrap(), &mut cache) {
            Ok(y) => got.extend(values(&y)),
            Err(e) => {
                let why = format!(
                    "Attention::forward_step of {} on top of {start} cached failed: {}",
                    kv_cache::plural(len, "position"),
                    kv_cache::first_line(&e)
                );
                return (Err(why), values(&x), Attn::of(&tensors));
            }
        }
        start += len;
    }
    (Ok(got), values(&x), Attn::of(&tensors))
}

/// One attention layer's weights, as f64.
struct Attn {
    c_attn: (Vec<f64>, Vec<f64>),
    c_proj: (Vec<f64>, Vec<f64>),
}

impl Attn {
    fn of(t: &HashMap<String, Tensor>) -> Self {
        let v = |name: &str| values(&t[name]);
        Self {
            c_attn: (v("c_attn.weight"), v("c_attn.bias")),
            c_proj: (v("c_proj.weight"), v("c_proj.bias")),
        }
    }

    /// GPT-2's attention of `x` (8 wide, 2 heads) with these weights, and why `got` is not it.
    fn verdict(&self, got: &[f64], x: &[f64]) -> Option<String> {
        let (a, p) = (
            (&self.c_attn.0[..], Some(&self.c_attn.1[..])),
            (&self.c_proj.0[..], Some(&self.c_proj.1[..])),
        );
        let want = attention_f64(x, (2, 8), a, p, &Way::RIGHT, &|_| 0);
        let diff = max_abs_diff(got, &want);
        (diff >= TO_REFERENCE).then(|| diagnose::attention(got, x, (2, 8), a, p))
    }
}

/// Your Task 6 `LayerCache`, where your GPT-2 keeps its keys and values: `None` if its append
/// keeps every position in order, else what it does.
fn task6_cache_verdict() -> Option<String> {
    let fresh = || -> Box<kv_cache::Append<'static>> {
        let mut cache = LayerCache::default();
        Box::new(move |k, v| cache.append(k, v))
    };
    let why = kv_cache::append_probe("LayerCache::append", &fresh, &[3, 2, 1], None)?;
    Some(format!(
        "your Task 6 LayerCache::append, where GPT-2 keeps its keys and values, is wrong first \
         ({}): `cargo xtask check task6` grades it",
        why.trim_end_matches('.')
    ))
}

/// Your Attention alone, on the whole sequence at once: `None` if right, else what it does
/// (or what your Task 6 cache does, if it is wrong first).
fn attention_verdict() -> Option<String> {
    if let Some(why) = task6_cache_verdict() {
        return Some(why);
    }
    let (got, x, attn) = attention_steps(&[6]);
    match got {
        Err(failed) => Some(failed),
        Ok(got) => attn
            .verdict(&got, &x)
            .map(|why| format!("Attention::forward_step of 6 positions is not GPT-2's: {why}")),
    }
}

#[test]
fn attention_matches_the_checks_own_split_of_c_attn() {
    if let Some(why) = attention_verdict() {
        panic!("{why}");
    }
}

#[test]
fn attention_in_steps_equals_attention_over_the_whole() {
    if let Some(why) = attention_verdict() {
        panic!("a part is wrong first: {why}");
    }
    for steps in [[2, 1, 3], [1, 1, 4], [3, 3, 0]] {
        let steps: Vec<usize> = steps.into_iter().filter(|&s| s > 0).collect();
        let (got, x, attn) = attention_steps(&steps);
        let why = match got {
            Err(failed) => Some(failed),
            Ok(got) => attn.verdict(&got, &x),
        };
        if let Some(why) = why {
            panic!(
                "Attention::forward_step in steps of {steps:?} positions, on top of its cache, \
                 differs from the attention of the 6 positions at once: {why}. The new query i is \
                 at position S + i and sees every cached key and the new ones up to itself"
            );
        }
    }
}

/// The first part that is wrong on its own, in the order the checks grade them; a verdict about
/// the whole model holds only when this is `None`.
fn first_wrong_part() -> Option<String> {
    type Verdict = fn() -> Option<String>;
    let graded: [(&str, Verdict); 3] = [
        (
            "conv1d computes x w plus b from the weight stored in by out",
            conv1d_verdict,
        ),
        (
            "mlp is c fc then gelus tanh approximation then c proj",
            mlp_verdict,
        ),
        (
            "attention matches the checks own split of c attn",
            attention_verdict,
        ),
    ];
    graded.iter().find_map(|(check, verdict)| {
        verdict().map(|why| {
            format!(
                "a part is wrong first: {why}; the check “{check}” fails for it too: fix the \
                 first failing check first"
            )
        })
    })
}

// ---------------------------------------------------------------------------- loading

/// The layouts a GPT-2 file comes in.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `save_pretrained`'s: `transformer.` before every name, no `lm_head.weight`.
    Transformers,
    /// OpenAI's: no prefix, no `lm_head.weight`, the attention's mask saved as
    /// `h.{i}.attn.bias`.
    OpenAi,
    /// No prefix, with `lm_head.weight` written out.
    WithHead,
}

impl Layout {
    fn words(self) -> &'static str {
        match self {
            Layout::Transformers => {
                "transformers' layout: every name under transformer., no lm_head.weight"
            }
            Layout::OpenAi => {
                "OpenAI's layout: no prefix, no lm_head.weight, the attention masks saved as \
                 h.i.attn.bias"
            }
            Layout::WithHead => "no prefix, with lm_head.weight written out",
        }
    }

    /// A folder with the fixture's model in this layout; the temporary folder that holds it, if
    /// one was made.
    fn folder(self) -> (PathBuf, Option<tempfile::TempDir>) {
        let dir = match self {
            Layout::Transformers => return (folder(), None),
            _ => tempfile::tempdir().expect("a temporary folder"),
        };
        std::fs::copy(folder().join("config.json"), dir.path().join("config.json")).unwrap();
        let bare =
            candle_core::safetensors::load(folder().join("model-bare.safetensors"), &device())
                .expect("the fixture's model-bare.safetensors");
        let mut tensors: HashMap<String, Tensor> = bare;
        if let Layout::OpenAi = self {
            tensors.remove("lm_head.weight");
            let cfg = fixture_config();
            let p = cfg.n_positions;
            let mask = Tensor::tril2(p, DType::F32, &device())
                .and_then(|m| m.reshape((1, 1, p, p)))
                .unwrap();
            for l in 0..cfg.n_layer {
                tensors.insert(format!("h.{l}.attn.bias"), mask.clone());
            }
        }
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
        (dir.path().to_path_buf(), Some(dir))
    }
}

/// Your GPT-2 loaded from the fixture in `layout`, or what the loader did wrong.
fn loaded(layout: Layout) -> Gpt2 {
    let (dir, _keep) = layout.folder();
    Gpt2::load(&dir).unwrap_or_else(|e| {
        panic!(
            "Gpt2::load of the fixture's GPT-2 failed: {}",
            diagnose::load_error(&e.to_string(), layout.words(), &fixture_config())
        )
    })
}

/// Your logits of prompt `i` against `transformers`', with what is wrong if they differ.
fn assert_prompt_logits(model: &Gpt2, i: usize, what: &str) {
    let (text, ids_) = &prompts()[i];
    let want = fixture::floats(&fixture()["logits"][i]["values"]);
    let got = match model.forward(&ids(ids_)) {
        Ok(logits) => values(&logits),
        Err(e) => panic!(
            "{what}: the forward pass of prompt {i} ({text:?}, {} tokens) failed: {}",
            ids_.len(),
            first_wrong_part().unwrap_or_else(|| kv_cache::first_line(&e))
        ),
    };
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: the logits of {} tokens should be (1, {}, {}), got {} values",
        ids_.len(),
        ids_.len(),
        fixture_config().vocab_size,
        got.len()
    );
    let diff = max_abs_diff(&got, &want);
    assert!(
        diff < TO_TRANSFORMERS,
        "{what}: the logits of prompt {i} ({text:?}) differ from transformers' by {diff:.2e} \
         (at most {TO_TRANSFORMERS:.0e}): {}",
        first_wrong_part().unwrap_or_else(|| diagnose::logits(
            &got,
            fixture_weights(),
            &fixture_config(),
            ids_
        ))
    );
}

#[test]
fn load_reads_transformers_layout_with_the_prefix_and_no_lm_head() {
    let model = loaded(Layout::Transformers);
    assert_prompt_logits(&model, 0, Layout::Transformers.words());
}

#[test]
fn load_reads_openais_layout_without_the_prefix_with_or_without_lm_head() {
    for layout in [Layout::OpenAi, Layout::WithHead] {
        let model = loaded(layout);
        assert_prompt_logits(&model, 0, layout.words());
    }
}

#[test]
fn gpt2_logits_equal_transformers_on_every_prompt() {
    let model = loaded(Layout::Transformers);
    for i in 0..prompts().len() {
        assert_prompt_logits(&model, i, "the fixture's GPT-2");
    }
}

// ---------------------------------------------------------------------------- the model

/// A tiny random GPT-2 of yours, and its weights as the checks' reference reads them.
fn tiny_gpt2(seed: u64) -> (Gpt2, Weights, Gpt2Config) {
    let cfg = tiny();
    let tensors = random_gpt2(&cfg, seed);
    (
        your_gpt2(&cfg, &tensors),
        Weights::from_tensors(&tensors),
        cfg,
    )
}

fn tokens(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    checks::support::tokens(seed, len, vocab)
}

#[test]
fn logits_equal_the_checks_own_gpt2_on_random_weights() {
    let (model, w, cfg) = tiny_gpt2(5);
    let t = tokens(5, cfg.n_positions, cfg.vocab_size);
    let got = match model.forward(&ids(&t)) {
        Ok(logits) => values(&logits),
        Err(e) => panic!(
            "Gpt2::forward of {} tokens failed: {}",
            t.len(),
            first_wrong_part().unwrap_or_else(|| kv_cache::first_line(&e))
        ),
    };
    let diff = max_abs_diff(&got, &gpt2_f64(&w, &cfg, &t, &Way::RIGHT));
    assert!(
        diff < TO_REFERENCE,
        "a random GPT-2's logits differ from the checks' own f64 GPT-2 by {diff:.2e}: {}",
        first_wrong_part().unwrap_or_else(|| diagnose::logits(&got, &w, &cfg, &t))
    );
}

#[test]
fn cached_steps_equal_the_full_forward_pass() {
    let (model, w, cfg) = tiny_gpt2(6);
    let t = tokens(6, cfg.n_positions, cfg.vocab_size);
    let want = gpt2_f64(&w, &cfg, &t, &Way::RIGHT);
    for steps in [vec![3, 1, 1, 1, 1, 1], vec![1; 8], vec![2, 4, 2]] {
        let mut cache = model.new_cache();
        let step: &mut TokenSteps = &mut |s: &[u32]| model.forward_step(&ids(s), &mut cache);
        let got = kv_cache::run_tokens_in_steps("Gpt2::forward_step", step, &t, &steps)
            .unwrap_or_else(|failed| {
                panic!(
                    "{}",
                    first_wrong_part().map_or(failed.clone(), |p| format!("{failed}; {p}"))
                )
            });
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff < TO_REFERENCE,
            "steps of {steps:?} tokens, each on top of the cache, differ from the whole forward \
             pass by {diff:.2e}: {}",
            first_wrong_part().unwrap_or_else(|| diagnose::steps(&got, &w, &cfg, &t, &steps))
        );
        assert_eq!(
            cache.positions(),
            cfg.n_positions,
            "after steps of {steps:?} the cache should hold all {} positions",
            cfg.n_positions
        );
    }
}

#[test]
fn a_position_never_sees_the_future() {
    let (model, _, cfg) = tiny_gpt2(7);
    let base = tokens(7, cfg.n_positions, cfg.vocab_size);
    let run = |t: &[u32]| values(&model.forward(&ids(t)).expect("Gpt2::forward"));
    assert_causal_with(run, &base, cfg.vocab_size, || {
        first_wrong_part().unwrap_or_else(|| {
            "Does each query see the keys at or before its own position only \
             (kit::ops::causal_softmax)?"
                .into()
        })
    });
}

#[test]
fn forward_step_refuses_more_positions_than_n_positions() {
    let (model, _, cfg) = tiny_gpt2(8);
    let mut cache = model.new_cache();
    model
        .forward_step(&ids(&tokens(8, 5, cfg.vocab_size)), &mut cache)
        .expect("Gpt2::forward_step of 5 tokens");
    let more = model.forward_step(&ids(&tokens(9, 4, cfg.vocab_size)), &mut cache);
    let Err(e) = more else {
        panic!(
            "4 new positions on top of 5 with n_positions 8: GPT-2 has position embeddings for 8 \
             positions, so forward_step should refuse them with an error"
        )
    };
    if let Some(op) = kv_cache::incidental(&e) {
        panic!(
            "4 new positions on top of 5 with n_positions 8 gave an error, but it came from {op}, \
             not from a refusal of yours: “{}”. Compare S + T with n_positions at the top of \
             forward_step, before anything runs, and refuse with an error that gives the sizes",
            kv_cache::first_line(&e)
        );
    }
}

// ---------------------------------------------------------------------------- sampling

fn sampling(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> Sampling {
    Sampling {
        temperature,
        top_k,
        top_p,
    }
}

#[test]
fn distribution_is_softmax_of_the_logits_over_the_temperature() {
    let logits = [2.0f32, -1.0, 0.5, 3.0, 0.0];
    for t in [1.0, 0.5, 2.0] {
        let got = distribution(&logits, &sampling(t, None, None));
        let want = distribution_f64(&logits, t, None, None);
        assert!(
            got.len() == want.len() && max_abs_diff(&got, &want) < 1e-9,
            "distribution({logits:?}) at temperature {t} is {got:?}; softmax(logits / {t}) is \
             {want:?}: {}",
            diagnose::distribution(&got, &logits, t)
        );
    }
}

#[test]
fn top_k_of_the_whole_vocabulary_or_more_keeps_every_token() {
    let logits = [2.0f32, -1.0, 0.5, 3.0, 0.0];
    let all = distribution(&logits, &sampling(1.0, None, None));
    for k in [5, 6, 50] {
        let got = distribution(&logits, &sampling(1.0, Some(k), None));
        assert!(
            got.len() == all.len() && max_abs_diff(&got, &all) < 1e-12,
            "top-k with k = {k} over 5 logits keeps all five, as no top-k: yours {got:?}, \
             softmax {all:?}"
        );
    }
}

/// Random logits: `n` of them from a few values, so that equal logits occur.
fn logits_strategy() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-8i32..8).prop_map(|v| v as f32 * 0.5), 2..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn top_k_never_keeps_a_token_outside_the_k_largest(logits in logits_strategy(), k in 1usize..30, t in 0.3f64..2.0) {
        let got = distribution(&logits, &sampling(t, Some(k), None));
        let want = distribution_f64(&logits, t, Some(k), None);
        let kept: Vec<usize> = (0..got.len()).filter(|&i| got[i] > 0.0).collect();
        prop_assert!(got.len() == logits.len(), "distribution gave {} probabilities for {} logits", got.len(), logits.len());
        for &i in &kept {
            let above = (0..logits.len()).filter(|&j| logits[j] > logits[i] || (logits[j] == logits[i] && j < i)).count();
            prop_assert!(above < k,
                "top-k with k = {k} kept id {i} (logit {}), which {above} ids rank above (a larger logit, or an equal one and a lower id): logits {logits:?}, yours {got:?}", logits[i]);
        }
        prop_assert!(max_abs_diff(&got, &want) < 1e-9,
            "top-k with k = {k} at temperature {t} on {logits:?}: yours {got:?}, the checks' {want:?}: keep the k most likely (the lower id first among equals), softmax(logits / T) over them, 0 elsewhere");
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_whose_mass_reaches_p(logits in logits_strategy(), p in 0.05f64..1.0, t in 0.3f64..2.0) {
        // The cumulative masses of the ranked tokens: none within 1e-9 of p, where rounding
        // decides.
        let full = distribution_f64(&logits, t, None, None);
        let mut ranked = full.clone();
        ranked.sort_by(|a, b| b.total_cmp(a));
        let sums: Vec<f64> = ranked.iter().scan(0.0, |s, q| { *s += q; Some(*s) }).collect();
        prop_assume!(sums.iter().all(|s| (s - p).abs() > 1e-9));
        let got = distribution(&logits, &sampling(t, None, Some(p)));
        let want = distribution_f64(&logits, t, None, Some(p));
        prop_assert!(got.len() == want.len() && max_abs_diff(&got, &want) < 1e-9,
            "top-p with p = {p} at temperature {t} on {logits:?}: yours {got:?}, the checks' {want:?}: {}",
            diagnose::top_p(&got, &want, &full, p));
    }
}

#[test]
fn temperature_zero_is_greedy_and_a_small_one_nearly() {
    // Ids 1 and 3 share the largest logit: greedy takes the lower id.
    let logits = [0.5f32, 2.0, -1.0, 2.0, 1.9];
    let greedy = distribution(&logits, &Sampling::GREEDY);
    assert_eq!(
        greedy,
        vec![0.0, 1.0, 0.0, 0.0, 0.0],
        "temperature 0 puts all the probability on the most likely token, the lower id among \
         equals"
    );
    let mut sampler = Sampler::new(Sampling::GREEDY, 3);
    assert!(
        (0..50).all(|_| sampler.sample(&logits) == 1),
        "a sampler at temperature 0 draws the most likely token every time"
    );
    let cold = distribution(&[0.5f32, 2.0, -1.0, 1.9], &sampling(1e-3, None, None));
    assert!(
        cold[1] > 0.999_999,
        "at temperature 1e-3, a token 0.1 above the next holds almost all the probability \
         (1 − e^(−100)): yours gives it {}",
        cold[1]
    );
}

#[test]
fn pick_takes_the_first_id_whose_running_sum_exceeds_u() {
    let cases: [(&[f64], f64, u32, &str); 7] = [
        (&[0.25, 0.5, 0.25], 0.0, 0, "id 0 owns [0, 0.25)"),
        (&[0.25, 0.5, 0.25], 0.1, 0, "id 0 owns [0, 0.25)"),
        (
            &[0.25, 0.5, 0.25],
            0.25,
            1,
            "id 0 owns [0, 0.25), which does not hold 0.25: the first id whose running sum \
             exceeds u (u < sum), not the first that reaches it",
        ),
        (&[0.25, 0.5, 0.25], 0.75, 2, "id 2 owns [0.75, 1)"),
        (&[0.25, 0.5, 0.25], 0.9, 2, "id 2 owns [0.75, 1)"),
        (
            &[0.0, 0.0, 0.5, 0.5],
            0.0,
            2,
            "an id of probability 0 owns an empty interval and is never drawn",
        ),
        (
            &[0.25, 0.25, 0.0],
            0.75,
            1,
            "the whole sum, 0.5, is under u, as rounding can leave it a hair under 1: then the \
             last id whose probability is not 0",
        ),
    ];
    for (probs, u, want, why) in cases {
        let got = pick(probs, u);
        assert_eq!(
            got, want,
            "pick({probs:?}, {u}) is {got}, not {want}: {why}"
        );
    }
}

#[test]
fn ten_thousand_draws_follow_softmax_of_the_logits_over_the_temperature() {
    // Pearson's chi-square of the counts of 10,000 draws against their expected counts,
    // N · softmax(logits / 0.8), with 5 degrees of freedom: a right sampler exceeds 20.52 with
    // probability 0.001. With this seed the reference solution's draws, [1770, 991, 516, 279,
    // 133, 6311], give 2.89; drawing from softmax(logits · 0.8) instead gives 1361.
    let logits = [1.0f32, 0.5, 0.0, -0.5, -1.0, 2.0];
    let t = 0.8;
    let draws = 10_000;
    let mut sampler = Sampler::new(sampling(t, None, None), 2024);
    let mut counts = [0usize; 6];
    for _ in 0..draws {
        let id = sampler.sample(&logits) as usize;
        assert!(id < 6, "the sampler drew id {id} from 6 logits");
        counts[id] += 1;
    }
    let p = distribution_f64(&logits, t, None, None);
    let chi2: f64 = counts
        .iter()
        .zip(&p)
        .map(|(&n, &q)| {
            let expected = draws as f64 * q;
            (n as f64 - expected).powi(2) / expected
        })
        .sum();
    let expected: Vec<String> = p
        .iter()
        .map(|q| format!("{:.0}", q * draws as f64))
        .collect();
    assert!(
        chi2 < 20.52,
        "10,000 draws at temperature {t} from {logits:?} came {counts:?} times, where \
         softmax(logits / {t}) expects about [{}]: chi-square {chi2:.1}, above 20.52 (a right \
         sampler's 0.999 quantile with 5 degrees of freedom). {}",
        expected.join(", "),
        diagnose::draws(&counts, &logits, t)
    );
}

#[test]
fn the_same_seed_draws_the_same_tokens_as_the_checks_draw() {
    let logits = [0.3f32, 1.2, -0.4, 0.9, 0.0, 1.1, -2.0];
    let settings = sampling(0.9, Some(5), Some(0.9));
    let draw = |seed| -> Vec<u32> {
        let mut s = Sampler::new(settings, seed);
        (0..200).map(|_| s.sample(&logits)).collect()
    };
    assert_eq!(
        draw(11),
        draw(11),
        "two samplers seeded alike drew different tokens"
    );
    // The checks' own draws: one u from the same generator per token, the first id whose
    // cumulative probability passes it.
    let p = distribution_f64(&logits, 0.9, Some(5), Some(0.9));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let want: Vec<u32> = (0..200)
        .map(|_| {
            let u: f64 = rng.random();
            let mut mass = 0.0;
            p.iter()
                .position(|q| {
                    mass += q;
                    u < mass
                })
                .unwrap_or(p.len() - 1) as u32
        })
        .collect();
    let got = draw(11);
    let first = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        first.is_none(),
        "with seed 11 your sampler's draw {} is id {}, the checks' id {}: draw one u = \
         self.rng.random::<f64>() per token, whatever the settings, and take the first id, in \
         id order, at which the probabilities added up so far exceed u",
        first.unwrap_or(0),
        got[first.unwrap_or(0)],
        want[first.unwrap_or(0)]
    );
}

// ---------------------------------------------------------------------------- generation

/// Your GPT-2 as `generate` sees it, counting the positions of each call: `(true, T)` for a
/// step on the cache, `(false, T)` for a whole forward pass.
struct Counting {
    model: Gpt2,
    calls: Mutex<Vec<(bool, usize)>>,
}

impl Counting {
    fn new(model: Gpt2) -> Self {
        Self {
            model,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(bool, usize)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Module for Counting {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.calls.lock().unwrap().push((false, xs.dims()[1]));
        self.model.forward(xs)
    }
}

impl Decoder for Counting {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        self.model.new_cache()
    }

    fn block_size(&self) -> usize {
        Decoder::block_size(&self.model)
    }

    fn has_room(&self, cache: &Cache) -> bool {
        self.model.has_room(cache)
    }

    fn forward_step(&self, tokens: &Tensor, cache: &mut Cache) -> candle_core::Result<Tensor> {
        self.calls.lock().unwrap().push((true, tokens.dims()[1]));
        self.model.forward_step(tokens, cache)
    }
}

/// What your `generate` wrote, or its error, with the calls it made.
fn written(
    model: Gpt2,
    sampler: &mut Sampler,
    prompt: &[u32],
    n: usize,
    use_cache: bool,
    stop: Option<u32>,
) -> (Vec<u32>, Vec<(bool, usize)>) {
    let counting = Counting::new(model);
    let out = generate(&counting, sampler, prompt, n, use_cache, stop).unwrap_or_else(|e| {
        panic!(
            "generate from a prompt of {} ({}) failed: {}",
            kv_cache::plural(prompt.len(), "token"),
            if use_cache {
                "with the cache"
            } else {
                "without it"
            },
            first_wrong_part().unwrap_or_else(|| kv_cache::first_line(&e))
        )
    });
    (out, counting.calls())
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_the_cache() {
    let runs = fixture()["greedy"]["runs"].as_array().unwrap();
    let eos = fixture_config().eos_token_id;
    for (i, (text, prompt)) in prompts().into_iter().enumerate() {
        for (use_cache, key) in [(true, "cached"), (false, "uncached")] {
            let want = fixture::ids(&runs[i][key]);
            let mut sampler = Sampler::new(Sampling::GREEDY, 0);
            let (got, _) = written(
                loaded(Layout::Transformers),
                &mut sampler,
                &prompt,
                want.len(),
                use_cache,
                eos,
            );
            assert!(
                got.starts_with(&prompt) && got[prompt.len()..] == want[..],
                "greedy generation {} from prompt {i} ({text:?}) wrote {:?}, transformers' \
                 generate(do_sample=False) {want:?}. {}",
                if use_cache {
                    "with the cache"
                } else {
                    "without it"
                },
                got.get(prompt.len()..).unwrap_or(&got),
                first_wrong_part().unwrap_or_else(|| {
                    "The logits are right (the other checks say so): each token is the most \
                     likely after the prompt and the tokens before it, and generate returns the \
                     prompt then the new tokens"
                        .into()
                })
            );
        }
    }
}

#[test]
fn after_the_prompt_each_new_token_runs_one_position() {
    let (model, _, cfg) = tiny_gpt2(10);
    let prompt = tokens(10, 3, cfg.vocab_size);
    let mut sampler = Sampler::new(Sampling::PLAIN, 10);
    let (out, calls) = written(model.clone(), &mut sampler, &prompt, 4, true, None);
    assert_eq!(
        out.len(),
        7,
        "a prompt of 3 and 4 new tokens make 7: {out:?}"
    );
    assert_eq!(
        calls,
        vec![(true, 3), (true, 1), (true, 1), (true, 1)],
        "with the cache, a prompt of 3 and 4 new tokens run as steps of 3, 1, 1 and 1 positions \
         on the cache (the last token is drawn and never run); (true, T) is a step of T on the \
         cache, (false, T) a whole forward pass"
    );
    let mut sampler = Sampler::new(Sampling::PLAIN, 10);
    let (_, calls) = written(model, &mut sampler, &prompt, 4, false, None);
    assert_eq!(
        calls,
        vec![(false, 3), (false, 4), (false, 5), (false, 6)],
        "without the cache, each new token but the last runs the whole text so far, with no \
         cache: forward passes of 3, 4, 5 and 6 positions"
    );
}

#[test]
fn past_n_positions_the_cache_is_rebuilt_and_the_text_is_the_same() {
    let (model, _, cfg) = tiny_gpt2(11);
    let prompt = tokens(11, 5, cfg.vocab_size);
    let n = 12;
    let mut sampler = Sampler::new(Sampling::PLAIN, 12);
    let (cached, calls) = written(model.clone(), &mut sampler, &prompt, n, true, None);
    let mut sampler = Sampler::new(Sampling::PLAIN, 12);
    let (uncached, _) = written(model, &mut sampler, &prompt, n, false, None);
    assert_eq!(
        cached, uncached,
        "past n_positions ({}), generation with the cache wrote another text than without it: \
         once the cache holds n_positions, rebuild it from the last n_positions tokens",
        cfg.n_positions
    );
    let want: Vec<(bool, usize)> = kv_cache::expected_calls(5, n, cfg.n_positions)
        .into_iter()
        .map(|len| (true, len))
        .collect();
    assert_eq!(
        calls, want,
        "with the cache, from a prompt of 5 and n_positions 8, the calls run the prompt, one \
         position per token until the cache is full, then the last 8 tokens each time"
    );
}

#[test]
fn generation_stops_after_end_of_text() {
    let (model, w, cfg) = tiny_gpt2(13);
    let prompt = tokens(13, 2, cfg.vocab_size);
    // The checks' own greedy text, and a token of it to stop at: the first that comes twice
    // is not it, so take the first new token that has not come before.
    let mut text = prompt.clone();
    for _ in 0..5 {
        let logits = gpt2_f64(&w, &cfg, &text, &Way::RIGHT);
        let last = &logits[(text.len() - 1) * cfg.vocab_size..];
        let next = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        text.push(next);
    }
    let j = (prompt.len() + 1..text.len())
        .find(|&j| !text[prompt.len()..j].contains(&text[j]))
        .unwrap_or(prompt.len());
    let stop = text[j];
    let mut sampler = Sampler::new(Sampling::GREEDY, 0);
    let (got, _) = written(model, &mut sampler, &prompt, 5, true, Some(stop));
    assert_eq!(
        got,
        text[..=j].to_vec(),
        "greedy generation with stop = {stop} should end right after writing {stop} (kept as \
         the last token), as transformers' generate ends at eos_token_id; the text without a \
         stop is {text:?}"
    );
}

#[test]
fn generate_refuses_an_empty_prompt() {
    let (model, _, _) = tiny_gpt2(14);
    let mut sampler = Sampler::new(Sampling::PLAIN, 0);
    assert!(
        generate(&model, &mut sampler, &[], 3, true, None).is_err(),
        "generate from an empty prompt has no logits to draw the first token from: it should \
         be an error"
    );
}

// ---------------------------------------------------------------------------- the tokenizer

#[test]
fn your_task8_tokenizer_reads_the_folder_and_encodes_as_gpt2_tokenizer_fast() {
    use checks::learner::task8::Bpe;
    let bpe = Bpe::load(&folder()).unwrap_or_else(|e| {
        panic!(
            "your Task 8 Bpe::load cannot read the fixture's vocab.json and merges.txt: {e}. \
             Task 9 reads text with your Task 8 tokenizer: `cargo xtask check task8` grades it"
        )
    });
    let battery = fixture()["battery"].as_array().unwrap();
    let cases = battery
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                fixture::ids(&c["ids"]),
            )
        })
        .chain(prompts());
    for (text, want) in cases {
        let got = bpe.encode(&text);
        assert_eq!(
            got, want,
            "your Task 8 tokenizer, loaded from the fixture's folder, encodes {text:?} as \
             {got:?}; GPT2TokenizerFast writes {want:?}"
        );
    }
    assert_eq!(
        bpe.end_of_text(),
        356,
        "<|endoftext|> is the fixture vocabulary's last id"
    );
}
