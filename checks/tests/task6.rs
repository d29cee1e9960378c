//! Task 6 checks: generation with a KV cache.
//!
//! The learner's cached model is built on the same parameters as the checks' own uncached
//! MiniGPT with Task 3's attention (`reference::RefGpt` with `reference::FusedHeads`, written
//! independently): at every step the cached logits must equal the full forward pass over the
//! whole prefix, the same seed must write the same text, and, counted by wrapping the model,
//! each new token must run one position only. A fixture from JAX/Flax
//! (`data/fixtures/task6_kv_cache.json`, made by `data/fixtures/make_task6_fixture.py`, which
//! runs its own KV cache) carries a small model's parameters, its logits at every position and
//! a greedy text written past block_size.

use candle_core::{DType, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use checks::fixture;
use checks::learner::task6::{CachedAttention, CachedGpt, LayerCache, generate_cached};
use checks::support::{
    self, SMALL, assert_every_parameter_learns, device, ids, max_abs_diff, move_off_init, values,
    within,
};
use kit::decode::Decoder;
use kit::nn::LayerNorm;
use kit::{GptConfig, Sampler, SeededVarMap};
use proptest::prelude::*;
use reference::{FusedHeads, RefGpt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Your cached model and the checks' uncached one, on the same parameters, moved off their
/// initial values so that every part shows.
fn models(seed: u64) -> (CachedGpt, RefGpt<FusedHeads>, SeededVarMap) {
    let params = SeededVarMap::new(seed);
    let vb = params.var_builder(&device());
    let mine = CachedGpt::new(SMALL, vb.clone()).expect("CachedGpt::new");
    let theirs =
        RefGpt::with_norm(SMALL, vb, FusedHeads::new, LayerNorm::new).expect("the reference");
    move_off_init(&params, seed + 100);
    (mine, theirs, params)
}

/// `len` tokens of the small model's vocabulary, a pattern that `seed` shifts.
fn prompt(seed: u64, len: usize) -> Vec<u32> {
    support::tokens(seed, len, SMALL.vocab_size)
}

#[test]
fn append_puts_the_new_positions_after_the_cached_ones() {
    let first = support::random_tensor(1, &[1, 2, 3, 4]);
    let second = support::random_tensor(2, &[1, 2, 2, 4]);
    let mut cache = LayerCache::default();
    let (k, v) = cache
        .append(&first, &(&first * 2.0).unwrap())
        .expect("LayerCache::append");
    assert_eq!(
        (k.dims(), v.dims()),
        (&[1, 2, 3, 4][..], &[1, 2, 3, 4][..]),
        "appending 3 positions to an empty cache should give them back, (B, n, 3, h)"
    );
    let (k, v) = cache
        .append(&second, &(&second * 2.0).unwrap())
        .expect("LayerCache::append");
    assert_eq!(
        k.dims(),
        &[1, 2, 5, 4],
        "3 cached positions and 2 new ones should make keys of (B, n, 5, h), the positions on \
         dimension 2; got {:?}",
        k.dims()
    );
    let both = Tensor::cat(&[&first, &second], 2).unwrap();
    assert!(
        max_abs_diff(&values(&k), &values(&both)) == 0.0,
        "the keys after appending should be the cached ones, then the new ones, in that order"
    );
    assert!(
        max_abs_diff(&values(&v), &values(&(both * 2.0).unwrap())) == 0.0,
        "the values after appending should be the cached ones, then the new ones"
    );
    assert_eq!(
        cache.positions(),
        5,
        "the cache holds 5 positions after appending 3 and 2"
    );
}

/// `x` (B, T, C) through your CachedAttention in steps of `chunks` positions, each on top of
/// the ones before, against the checks' attention over the whole of `x`.
fn attention_in_steps(seed: u64, b: usize, chunks: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (c, n, h) = (8, 2, 4);
    let t: usize = chunks.iter().sum();
    let params = SeededVarMap::new(seed);
    let vb = params.var_builder(&device());
    let mine = CachedAttention::new(c, n, h, vb.clone()).expect("CachedAttention::new");
    let theirs = FusedHeads::new(c, n, h, vb).unwrap();
    move_off_init(&params, seed + 1);
    let x = support::random_tensor(seed + 2, &[b, t, c]);
    let mut cache = LayerCache::default();
    let mut outs = Vec::new();
    let mut start = 0;
    for &len in chunks {
        let part = x.narrow(1, start, len).unwrap();
        outs.push(
            mine.forward_step(&part, &mut cache)
                .expect("CachedAttention::forward_step"),
        );
        start += len;
    }
    let got = values(&Tensor::cat(&outs, 1).unwrap());
    let want = values(&theirs.forward(&x).unwrap());
    // What each chunk would give on its own, without the cache.
    let alone: Vec<Tensor> = {
        let mut start = 0;
        chunks
            .iter()
            .map(|&len| {
                let out = theirs.forward(&x.narrow(1, start, len).unwrap()).unwrap();
                start += len;
                out
            })
            .collect()
    };
    (got, want, values(&Tensor::cat(&alone, 1).unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn attention_in_steps_equals_attention_over_the_whole(
        b in 1usize..3, chunks in prop::collection::vec(1usize..4, 1..5), seed in 0u64..1000,
    ) {
        let (got, want, alone) = attention_in_steps(seed, b, &chunks);
        let diff = max_abs_diff(&got, &want);
        let why = if max_abs_diff(&got, &alone) < 1e-5 {
            "each step attends to its own new positions only, as if the cache were empty: \
             the new queries must see the cached keys too".to_string()
        } else if max_abs_diff(&got[..chunks[0] * 8], &want[..chunks[0] * 8]) < 1e-5 {
            "the first step matches and the later ones do not: do the later steps' queries see \
             every cached key at or before their position (query i of T new ones is at position \
             S + i), and no later one?".to_string()
        } else {
            "even the first step, on an empty cache, differs: it should be plain causal \
             multi-head attention, as in Task 3".to_string()
        };
        prop_assert!(diff < 1e-5,
            "CachedAttention run in steps of {chunks:?} positions differs from attention over all \
             of them at once by {diff:.2e}: {why}");
    }

    #[test]
    fn cached_logits_equal_the_full_forward_at_every_step(len in 1usize..=8, seed in 0u64..1000) {
        let (mine, theirs, _) = models(seed);
        let tokens = prompt(seed, SMALL.block_size);
        let mut cache = mine.new_cache();
        let logits = mine.forward_step(&ids(&tokens[..len]), &mut cache).expect("CachedGpt::forward_step");
        let full = theirs.forward(&ids(&tokens[..len])).unwrap();
        let diff = max_abs_diff(&values(&logits), &values(&full));
        prop_assert!(diff < 1e-4,
            "the logits of a prompt of {len} on an empty cache differ from the full forward pass \
             by {diff:.2e}: on an empty cache, forward_step is MiniGPT's forward");
        for t in len..SMALL.block_size {
            let step = mine.forward_step(&ids(&tokens[t..t + 1]), &mut cache).expect("CachedGpt::forward_step");
            let full = theirs.forward(&ids(&tokens[..t + 1])).unwrap().i((.., t..t + 1)).unwrap();
            let diff = max_abs_diff(&values(&step), &values(&full));
            let alone = theirs.forward(&ids(&tokens[t..t + 1])).unwrap();
            let why = if max_abs_diff(&values(&step), &values(&alone)) < 1e-4 {
                "they are the logits of the new token alone, at position 0: embed it at its \
                 position, S, and let its queries see the cached keys"
            } else {
                "embed the new token at its position S (wpe of S, not of 0), and pass each \
                 block's own layer of the cache to its attention"
            };
            prop_assert!(diff < 1e-4,
                "with {t} positions cached, the logits of the next one differ from the full \
                 forward pass over all {} by {diff:.2e}: {why}", t + 1);
        }
    }
}

/// Your CachedGpt with the parameters of the JAX/Flax fixture, and the fixture.
fn fixture_model() -> (CachedGpt, serde_json::Value) {
    let fixture = fixture::load("task6_kv_cache.json");
    let size = |key: &str| fixture["config"][key].as_u64().expect("config") as usize;
    let cfg = GptConfig {
        vocab_size: size("vocab_size"),
        hidden: size("hidden"),
        block_size: size("block_size"),
        num_layers: size("num_layers"),
        num_heads: size("num_heads"),
    };
    let weights: HashMap<String, Tensor> = fixture["params"]
        .as_object()
        .expect("params")
        .iter()
        .map(|(name, p)| {
            let t = fixture::tensor(&p["values"], &fixture::dims(&p["shape"]));
            (name.clone(), t)
        })
        .collect();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &device());
    let model = CachedGpt::new(cfg, vb).expect("CachedGpt::new with the fixture's parameters");
    (model, fixture)
}

fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    fixture::floats(v).into_iter().map(|t| t as u32).collect()
}

#[test]
fn each_step_matches_the_jax_flax_fixture() {
    let (model, fixture) = fixture_model();
    let sequence = token_ids(&fixture["sequence"]);
    let p = fixture["prompt_len"].as_u64().expect("prompt_len") as usize;
    let want = fixture::floats(&fixture["logits"]);
    let v = fixture::dims(&fixture["logits_shape"])[1];
    let mut cache = model.new_cache();
    let prompt = model
        .forward_step(&ids(&sequence[..p]), &mut cache)
        .expect("CachedGpt::forward_step");
    let diff = max_abs_diff(&values(&prompt), &want[..p * v]);
    assert!(
        diff < 1e-4,
        "the logits of the fixture's prompt of {p} on an empty cache differ from Flax's by          {diff:.2e}: on an empty cache forward_step is MiniGPT's forward (Task 3's attention,          Task 3's names)"
    );
    for t in p..sequence.len() {
        let step = model
            .forward_step(&ids(&sequence[t..t + 1]), &mut cache)
            .expect("CachedGpt::forward_step");
        let diff = max_abs_diff(&values(&step), &want[t * v..(t + 1) * v]);
        assert!(
            diff < 1e-4,
            "with {t} positions cached, your logits of position {t} differ from those Flax              computes over the whole sequence by {diff:.2e}: a step must give the logits the              full forward pass gives at that position"
        );
    }
}

#[test]
fn greedy_generation_matches_the_jax_flax_fixture() {
    let (model, fixture) = fixture_model();
    let greedy = &fixture["greedy"];
    let prompt = token_ids(&greedy["prompt"]);
    let n = greedy["new_tokens"].as_u64().expect("new_tokens") as usize;
    let want = token_ids(&greedy["tokens"]);
    let block = fixture["config"]["block_size"]
        .as_u64()
        .expect("block_size") as usize;
    let got = within(Duration::from_secs(60), "generate_cached", move || {
        let mut greedy = Sampler::new(0).with_temperature(0.0);
        generate_cached(&model, &mut greedy, &prompt, n).expect("generate_cached")
    });
    let first = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "greedy from the fixture's prompt with block_size {block}, you wrote {got:?}, the \
         cached generation in JAX/Flax writes {want:?}{}",
        match first {
            // Token `block` still has a position; the one after it needs the cache rebuilt.
            Some(i) if i > block => format!(
                ": the first difference is token {i}, past block_size: there the cache must be \
                 rebuilt from the last {block} tokens"
            ),
            Some(i) => format!(": the first difference is token {i}"),
            None => " (a different length)".to_string(),
        }
    );
}

#[test]
fn steps_of_several_positions_fill_the_cache_up_to_block_size() {
    let (mine, theirs, _) = models(11);
    let tokens = prompt(11, SMALL.block_size);
    let mut cache = mine.new_cache();
    let mut start = 0;
    for len in [3, 3, 2] {
        let step = mine
            .forward_step(&ids(&tokens[start..start + len]), &mut cache)
            .unwrap_or_else(|e| {
                panic!(
                    "with {start} positions cached, a step of {len} more ({} in all, block_size \
                     {}) was refused: {e}",
                    start + len,
                    SMALL.block_size
                )
            });
        let full = theirs.forward(&ids(&tokens[..start + len])).unwrap();
        let full = full.i((.., start..start + len)).unwrap();
        let diff = max_abs_diff(&values(&step), &values(&full));
        assert!(
            diff < 1e-4,
            "with {start} positions cached, the logits of the next {len} differ from the full \
             forward pass by {diff:.2e}"
        );
        start += len;
    }
}

#[test]
fn forward_step_refuses_more_positions_than_block_size() {
    let (mine, _, _) = models(3);
    let mut cache = mine.new_cache();
    mine.forward_step(&ids(&prompt(3, 6)), &mut cache)
        .expect("CachedGpt::forward_step");
    let more = mine.forward_step(&ids(&prompt(4, 3)), &mut cache);
    assert!(
        more.is_err(),
        "6 cached positions and 3 new ones are 9, more than block_size 8: there is no position \
         embedding for the 9th, so forward_step should refuse them with an error"
    );
}

#[test]
fn every_parameter_receives_a_gradient() {
    let (mine, _, params) = models(4);
    let loss = support::next_token_loss(&mine, &[prompt(4, 8)], SMALL.vocab_size);
    assert_every_parameter_learns("CachedGpt", &params, &loss);
}

/// Your model, as `generate_cached` sees it, recording how many new positions each call runs.
struct Counting {
    model: CachedGpt,
    calls: Mutex<Vec<usize>>,
}

impl Decoder for Counting {
    type Cache = <CachedGpt as Decoder>::Cache;

    fn new_cache(&self) -> Self::Cache {
        Decoder::new_cache(&self.model)
    }

    fn block_size(&self) -> usize {
        Decoder::block_size(&self.model)
    }

    fn has_room(&self, cache: &Self::Cache) -> bool {
        self.model.has_room(cache)
    }

    fn forward_step(
        &self,
        tokens: &Tensor,
        cache: &mut Self::Cache,
    ) -> candle_core::Result<Tensor> {
        self.calls.lock().unwrap().push(tokens.dims()[1]);
        Decoder::forward_step(&self.model, tokens, cache)
    }
}

/// `generate_cached` on your model from `prompt`, with the positions of each call.
fn counted(seed: u64, prompt: Vec<u32>, n: usize) -> (Vec<u32>, Vec<usize>) {
    let (model, _, _) = models(seed);
    let counting = Arc::new(Counting {
        model,
        calls: Mutex::new(Vec::new()),
    });
    let c = counting.clone();
    let tokens = within(Duration::from_secs(60), "generate_cached", move || {
        generate_cached(c.as_ref(), &mut Sampler::new(seed), &prompt, n).expect("generate_cached")
    });
    let calls = counting.calls.lock().unwrap().clone();
    (tokens, calls)
}

#[test]
fn after_the_prompt_each_new_token_runs_one_position() {
    let (tokens, calls) = counted(5, prompt(5, 3), 4);
    assert_eq!(
        tokens.len(),
        7,
        "a prompt of 3 and 4 new tokens make 7: {tokens:?}"
    );
    assert_eq!(
        calls,
        vec![3, 1, 1, 1],
        "generate_cached ran the model on {calls:?} positions per call: the prompt's 3 once, \
         then 1 for each new token but the last, which needs no logits after it"
    );
}

#[test]
fn the_same_seed_writes_the_same_text_with_and_without_the_cache() {
    for (seed, len, n) in [(6, 1, 7), (7, 3, 5), (8, 8, 1)] {
        let (_, theirs, _) = models(seed);
        let want = theirs
            .generate(&mut Sampler::new(seed), &prompt(seed, len), n)
            .unwrap();
        let (got, _) = counted(seed, prompt(seed, len), n);
        assert_eq!(
            got, want,
            "with seed {seed}, a prompt of {len} and {n} new tokens, the cached generation wrote \
             another text than the uncached one: the cache must change the cost, never the text"
        );
    }
}

#[test]
fn past_block_size_the_cache_is_rebuilt_and_the_text_stays_the_same() {
    let seed = 9;
    let (_, theirs, _) = models(seed);
    let start = prompt(seed, 6);
    let want = theirs.generate(&mut Sampler::new(seed), &start, 6).unwrap();
    let (got, calls) = counted(seed, start, 6);
    assert_eq!(
        got, want,
        "past block_size (8), the cached generation wrote another text than the uncached one, \
         which runs the last 8 tokens: rebuild the cache from them"
    );
    insta::with_settings!({
        description => "Positions your generate_cached runs per call of the model, for a prompt \
            of 6 and 6 new tokens with block_size 8: the prompt once, then one per token while \
            the cache has room, then the last 8 tokens again each time (the cache rebuilt).",
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!("{calls:?}"));
    });
}

#[test]
fn generate_cached_refuses_an_empty_prompt() {
    let (model, _, _) = models(10);
    let refused = within(Duration::from_secs(60), "generate_cached", move || {
        generate_cached(&model, &mut Sampler::new(0), &[], 3).is_err()
    });
    assert!(
        refused,
        "generate_cached(&[], …) returned tokens: an empty prompt has no last position to sample from"
    );
}
