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

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use checks::diagnose::attention::{self, Subject};
use checks::diagnose::kv_cache::{
    self, Append, AttentionSteps, AttnWeights, StepSubject, TokenSteps, expected_calls,
};
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

/// A fresh `LayerCache` of yours, as the probes append to it.
fn fresh_layer_cache() -> Box<Append<'static>> {
    let mut cache = LayerCache::default();
    Box::new(move |k, v| cache.append(k, v))
}

/// Your `LayerCache::append`, probed: `None` if it keeps every position in order, else what it
/// does.
fn append_verdict() -> Option<String> {
    kv_cache::append_probe("LayerCache::append", &fresh_layer_cache, &[3, 2, 1], None)
}

#[test]
fn append_puts_the_new_positions_after_the_cached_ones() {
    // Keys and values of 3, then 2, then 1 new positions: each append returns the cached ones
    // and then the new ones, (B, n, S + T, h), every position's rows as they were given.
    if let Some(why) = append_verdict() {
        panic!("{why}");
    }
    let mut cache = LayerCache::default();
    for len in [3, 2] {
        let kv = support::random_tensor(len as u64, &[1, 2, len, 4]);
        cache.append(&kv, &kv).expect("LayerCache::append");
    }
    assert_eq!(
        cache.positions(),
        5,
        "the cache holds 5 positions after appending 3 and 2"
    );
}

/// Why everything after the cache is graded after it: `Some` when your append is wrong.
fn append_first() -> Option<String> {
    append_verdict().map(|why| {
        format!(
            "your LayerCache::append is wrong first ({why}); the check “append puts the new \
             positions after the cached ones” fails for it too: fix it first"
        )
    })
}

/// Your `attn` on an empty cache of its own, as the probes run it.
fn on_an_empty_cache(attn: &CachedAttention) -> Box<AttentionSteps<'_>> {
    let mut cache = LayerCache::default();
    Box::new(move |x, _| attn.forward_step(x, &mut cache))
}

/// Your CachedAttention, made by `fresh`, with the weights `weights`, as the probes see it.
fn subject<'a>(
    fresh: &'a dyn Fn() -> Box<AttentionSteps<'a>>,
    weights: AttnWeights,
) -> StepSubject<'a> {
    StepSubject {
        what: "CachedAttention::forward_step",
        fresh,
        weights,
        window: None,
    }
}

/// The first part of the model that is wrong on its own, the cache first, then each block's
/// attention with that block's weights: why, and the check that grades it.
fn first_wrong_part(params: &SeededVarMap, cfg: &GptConfig) -> Option<String> {
    if let Some(why) = append_first() {
        return Some(why);
    }
    let vb = params.var_builder(&device());
    let (n, h) = (cfg.num_heads, cfg.head_dim());
    for l in 0..cfg.num_layers {
        let attn = CachedAttention::new(cfg.hidden, n, h, vb.pp(format!("h.{l}.attn")))
            .expect("CachedAttention::new");
        let fresh = || on_an_empty_cache(&attn);
        let subject = subject(
            &fresh,
            AttnWeights::task6(params, &format!("h.{l}.attn."), n, h),
        );
        let steps = [3, 2, 1, 1];
        let x = support::random_tensor(40 + l as u64, &[1, 7, cfg.hidden]);
        let why = match kv_cache::run_in_steps(&subject, &x, &steps) {
            Err(failed) => Some(failed),
            Ok(got) => kv_cache::attention_in_steps(&subject, &x, &steps, &got),
        };
        if let Some(why) = why {
            return Some(format!(
                "your CachedAttention with the weights of h.{l}.attn, run in steps of {steps:?} \
                 positions, is wrong first ({why}); the check “attention in steps equals \
                 attention over the whole” fails for it too: fix it first"
            ));
        }
    }
    None
}

/// Why your model's steps of `steps` tokens, which gave `got`, differ from the checks' uncached
/// model: the first wrong part, else what the step does instead.
fn model_why(
    params: &SeededVarMap,
    theirs: &RefGpt<FusedHeads>,
    tokens: &[u32],
    steps: &[usize],
    got: &[f64],
) -> String {
    first_wrong_part(params, &SMALL)
        .unwrap_or_else(|| kv_cache::minigpt_steps(got, theirs, tokens, steps))
}

/// Your model's logits for `tokens` run in steps of `steps`, on a new cache; or what failed,
/// with the first wrong part when there is one.
fn in_steps(mine: &CachedGpt, tokens: &[u32], steps: &[usize]) -> Result<Vec<f64>, String> {
    let mut cache = mine.new_cache();
    let step: &mut TokenSteps = &mut |t: &[u32]| mine.forward_step(&ids(t), &mut cache);
    kv_cache::run_tokens_in_steps("CachedGpt::forward_step", step, tokens, steps).map_err(
        |failed| match first_wrong_part(&models(0).2, &SMALL) {
            Some(part) => format!("{failed}; {part}"),
            None => failed,
        },
    )
}

/// Whether your forward_step, one token at a time on a model of the checks' own, is wrong:
/// the first wrong part, else what the step does. A verdict about the generation loop holds
/// only when this is `None`.
fn step_verdict(seed: u64) -> Option<String> {
    let (mine, theirs, params) = models(seed);
    if let Some(part) = first_wrong_part(&params, &SMALL) {
        return Some(part);
    }
    let tokens = prompt(seed, SMALL.block_size);
    let steps = [1; 8];
    let why = match in_steps(&mine, &tokens, &steps) {
        Err(failed) => failed,
        Ok(got) => {
            let full = values(&theirs.forward(&ids(&tokens)).unwrap());
            if max_abs_diff(&got, &full) < 1e-4 {
                return None;
            }
            kv_cache::minigpt_steps(&got, &theirs, &tokens, &steps)
        }
    };
    Some(format!(
        "your forward_step, run one token at a time, is wrong first ({why}); the check “cached \
         logits equal the full forward at every step” fails for it too: fix it first"
    ))
}

/// `x` (B, T, C) through your CachedAttention in steps of `chunks` positions, each on top of
/// the ones before, against the checks' attention over the whole of `x`: the largest
/// difference, and why when it is not small.
fn attention_in_steps(seed: u64, b: usize, chunks: &[usize]) -> (f64, String) {
    let (c, n, h) = (8, 2, 4);
    let t: usize = chunks.iter().sum();
    let params = SeededVarMap::new(seed);
    let vb = params.var_builder(&device());
    let mine = CachedAttention::new(c, n, h, vb.clone()).expect("CachedAttention::new");
    let theirs = FusedHeads::new(c, n, h, vb).unwrap();
    move_off_init(&params, seed + 1);
    let x = support::random_tensor(seed + 2, &[b, t, c]);
    let fresh = || on_an_empty_cache(&mine);
    let subject = subject(&fresh, AttnWeights::task6(&params, "", n, h));
    let run = kv_cache::run_in_steps(&subject, &x, chunks);
    let diff = match &run {
        Ok(got) => max_abs_diff(got, &values(&theirs.forward(&x).unwrap())),
        Err(_) => f64::INFINITY,
    };
    if diff < 1e-5 {
        return (diff, String::new());
    }
    if let Some(why) = append_first() {
        return (diff, why);
    }
    let got = match run {
        Ok(got) => got,
        Err(failed) => return (diff, failed),
    };
    let why = kv_cache::attention_in_steps(&subject, &x, chunks, &got)
        .unwrap_or_else(|| "it differs by a rounding-sized amount only".into());
    let why = if why.starts_with("even the first step") {
        // On an empty cache a step is Task 3's attention: its catalogue says what it does.
        let first = |x: &Tensor| fresh()(x, 0);
        let says = attention::diagnose(&Subject {
            forward: &first,
            params: &params,
            heads: n,
            head_dim: h,
        });
        format!("{why}; on its own, {says}")
    } else {
        why
    };
    (diff, why)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn attention_in_steps_equals_attention_over_the_whole(
        b in 1usize..3, chunks in prop::collection::vec(1usize..4, 1..5), seed in 0u64..1000,
    ) {
        let (diff, why) = attention_in_steps(seed, b, &chunks);
        prop_assert!(diff < 1e-5,
            "CachedAttention run in steps of {chunks:?} positions differs from attention over all \
             of them at once by {diff:.2e}: {why}");
    }

    #[test]
    fn cached_logits_equal_the_full_forward_at_every_step(len in 1usize..=8, seed in 0u64..1000) {
        let (mine, theirs, params) = models(seed);
        let tokens = prompt(seed, SMALL.block_size);
        // The prompt of `len`, then one token at a time up to block_size.
        let steps: Vec<usize> = std::iter::once(len)
            .chain(std::iter::repeat_n(1, SMALL.block_size - len))
            .collect();
        let got = match in_steps(&mine, &tokens, &steps) {
            Ok(got) => got,
            Err(failed) => return Err(TestCaseError::fail(failed)),
        };
        let full = values(&theirs.forward(&ids(&tokens)).unwrap());
        let v = SMALL.vocab_size;
        let diff = max_abs_diff(&got[..len * v], &full[..len * v]);
        prop_assert!(diff < 1e-4,
            "the logits of a prompt of {len} on an empty cache differ from the full forward pass \
             by {diff:.2e}: {}", model_why(&params, &theirs, &tokens, &steps, &got));
        for t in len..SMALL.block_size {
            let diff = max_abs_diff(&got[t * v..(t + 1) * v], &full[t * v..(t + 1) * v]);
            prop_assert!(diff < 1e-4,
                "with {} cached, the logits of the next one differ from the full forward \
                 pass over all {} by {diff:.2e}: {}",
                kv_cache::plural(t, "position"), t + 1,
                model_why(&params, &theirs, &tokens, &steps, &got));
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

/// Your steps on the fixture's sequence (its prompt, then one token at a time) against the
/// logits Flax computes over the whole sequence: `None` if they agree, else where they part.
fn fixture_steps_verdict(model: &CachedGpt, fixture: &serde_json::Value) -> Option<String> {
    let sequence = token_ids(&fixture["sequence"]);
    let p = fixture["prompt_len"].as_u64().expect("prompt_len") as usize;
    let want = fixture::floats(&fixture["logits"]);
    let v = fixture::dims(&fixture["logits_shape"])[1];
    let steps: Vec<usize> = std::iter::once(p)
        .chain(std::iter::repeat_n(1, sequence.len() - p))
        .collect();
    let got = match in_steps(model, &sequence, &steps) {
        Ok(got) => got,
        Err(failed) => return Some(failed),
    };
    // What your step does on a model of the checks' own, where its parts can be probed.
    let own = || {
        step_verdict(1).map_or(String::new(), |why| {
            format!(". On the checks' own model, {why}")
        })
    };
    let diff = max_abs_diff(&got[..p * v], &want[..p * v]);
    if diff >= 1e-4 {
        return Some(format!(
            "the logits of the fixture's prompt of {p} on an empty cache differ from Flax's by \
             {diff:.2e}: on an empty cache forward_step is MiniGPT's forward (Task 3's attention, \
             Task 3's names){}",
            own()
        ));
    }
    (p..sequence.len()).find_map(|t| {
        let diff = max_abs_diff(&got[t * v..(t + 1) * v], &want[t * v..(t + 1) * v]);
        (diff >= 1e-4).then(|| {
            format!(
                "with {} cached, your logits of position {t} differ from those Flax computes \
                 over the whole sequence by {diff:.2e}: a step must give the logits the full \
                 forward pass gives at that position{}",
                kv_cache::plural(t, "position"),
                own()
            )
        })
    })
}

#[test]
fn each_step_matches_the_jax_flax_fixture() {
    let (model, fixture) = fixture_model();
    if let Some(why) = fixture_steps_verdict(&model, &fixture) {
        panic!("{why}");
    }
}

#[test]
fn greedy_generation_matches_the_jax_flax_fixture() {
    let (model, fixture) = fixture_model();
    // A verdict on the loop holds only when the steps it runs are right.
    if let Some(why) = fixture_steps_verdict(&model, &fixture) {
        panic!(
            "your steps differ from Flax's before any generation: {why}. The check “each step \
             matches the jax flax fixture” fails for it too: fix it first"
        );
    }
    let greedy = &fixture["greedy"];
    let prompt = token_ids(&greedy["prompt"]);
    let n = greedy["new_tokens"].as_u64().expect("new_tokens") as usize;
    let want = token_ids(&greedy["tokens"]);
    let block = fixture["config"]["block_size"]
        .as_u64()
        .expect("block_size") as usize;
    let got = within(Duration::from_secs(60), "generate_cached", move || {
        let mut greedy = Sampler::new(0).with_temperature(0.0);
        generate_cached(&model, &mut greedy, &prompt, n).map_err(|e| kv_cache::first_line(&e))
    });
    let got = got.unwrap_or_else(|e| {
        panic!("generate_cached from the fixture's prompt with block_size {block} failed: {e}")
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
    let (mine, theirs, params) = models(11);
    let tokens = prompt(11, SMALL.block_size);
    let steps = [3, 3, 2];
    let got = in_steps(&mine, &tokens, &steps).unwrap_or_else(|failed| {
        panic!(
            "{failed}; block_size is {}, and 8 positions in all fit",
            SMALL.block_size
        )
    });
    let full = values(&theirs.forward(&ids(&tokens)).unwrap());
    let v = SMALL.vocab_size;
    let mut start = 0;
    for len in steps {
        let range = start * v..(start + len) * v;
        let diff = max_abs_diff(&got[range.clone()], &full[range]);
        assert!(
            diff < 1e-4,
            "with {} cached, the logits of the next {len} differ from the full forward pass \
             by {diff:.2e}: {}",
            kv_cache::plural(start, "position"),
            model_why(&params, &theirs, &tokens, &steps, &got)
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
    let Err(e) = more else {
        panic!(
            "6 cached positions and 3 new ones are 9, more than block_size 8: there is no \
             position embedding for the 9th, so forward_step should refuse them with an error"
        )
    };
    // The chapter's refusal, not an error that candle raises on its own further in.
    if let Some(op) = kv_cache::incidental(&e) {
        panic!(
            "6 cached positions and 3 new ones, 9 in all with block_size 8, gave an error, but \
             it came from {op}, not from a refusal of yours: “{}”. Compare the cached and the \
             new positions with block_size at the top of forward_step, before anything is \
             looked up, and refuse with an error that gives the sizes (candle_core::bail!)",
            kv_cache::first_line(&e)
        );
    }
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

/// What `generate_cached` on your model wrote from `prompt` (or its error), with the positions
/// of each call.
fn counted(seed: u64, prompt: Vec<u32>, n: usize) -> (Result<Vec<u32>, String>, Vec<usize>) {
    let (model, _, _) = models(seed);
    let counting = Arc::new(Counting {
        model,
        calls: Mutex::new(Vec::new()),
    });
    let c = counting.clone();
    let tokens = within(Duration::from_secs(60), "generate_cached", move || {
        generate_cached(c.as_ref(), &mut Sampler::new(seed), &prompt, n)
            .map_err(|e| kv_cache::first_line(&e))
    });
    let calls = counting.calls.lock().unwrap().clone();
    (tokens, calls)
}

/// What [`texts`] gives: the prompt, the checks' text, yours, the positions of your calls.
type Texts = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<usize>);

/// A prompt of `len` tokens made from `seed`; the text the checks' uncached model writes from
/// it with `n` new tokens drawn with `seed`; the one your `generate_cached` writes, and the
/// positions of its calls.
fn texts(seed: u64, len: usize, n: usize) -> Texts {
    let start = prompt(seed, len);
    let (_, theirs, _) = models(seed);
    let want = theirs.generate(&mut Sampler::new(seed), &start, n).unwrap();
    let (got, calls) = written(seed, &start, n);
    (start, want, got, calls)
}

/// The text your `generate_cached` wrote, or a verdict that says why it wrote none: the
/// positions of its calls, and your forward_step first if a step is wrong.
fn written(seed: u64, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<usize>) {
    let (tokens, calls) = counted(seed, prompt.to_vec(), n);
    match tokens {
        Ok(tokens) => (tokens, calls),
        Err(e) => panic!(
            "generate_cached from a prompt of {} with {} failed: {e}. {}",
            prompt.len(),
            kv_cache::plural(n, "new token"),
            kv_cache::capitalised(&loop_why(seed, prompt.len(), n, &calls))
        ),
    }
}

/// Why the calls your loop made, `calls`, are not those it should make: your forward_step
/// first, if it is wrong, else what the calls show.
fn loop_why(seed: u64, p: usize, n: usize, calls: &[usize]) -> String {
    step_verdict(seed).unwrap_or_else(|| {
        let want = expected_calls(p, n, SMALL.block_size);
        kv_cache::calls_say(calls, &want, p, n, SMALL.block_size)
    })
}

/// Why your generation wrote another text than the uncached model for the same seed: your
/// forward_step first, if its steps are wrong, else the calls the loop made.
fn text_why(seed: u64, start: &[u32], n: usize, calls: &[usize]) -> String {
    let want = expected_calls(start.len(), n, SMALL.block_size);
    match step_verdict(seed) {
        Some(why) => why,
        None if calls == want => "your steps are right and each call ran the positions it \
             should: look at what is sampled, from the logits of the last position of each call, \
             and what is appended to the text"
            .into(),
        None => kv_cache::calls_say(calls, &want, start.len(), n, SMALL.block_size),
    }
}

#[test]
fn after_the_prompt_each_new_token_runs_one_position() {
    let (tokens, calls) = written(5, &prompt(5, 3), 4);
    assert_eq!(
        tokens.len(),
        7,
        "a prompt of 3 and 4 new tokens make 7: {tokens:?}"
    );
    assert_eq!(calls, vec![3, 1, 1, 1], "{}", loop_why(5, 3, 4, &calls));
}

#[test]
fn the_same_seed_writes_the_same_text_with_and_without_the_cache() {
    for (seed, len, n) in [(6, 1, 7), (7, 3, 5), (8, 8, 1)] {
        let (start, want, got, calls) = texts(seed, len, n);
        assert_eq!(
            got,
            want,
            "with seed {seed}, a prompt of {len} and {n} new tokens, the cached generation wrote \
             another text than the uncached one: the cache must change the cost, never the \
             text. {}",
            kv_cache::capitalised(&text_why(seed, &start, n, &calls))
        );
    }
}

#[test]
fn past_block_size_the_cache_is_rebuilt_and_the_text_stays_the_same() {
    let seed = 9;
    let (start, want, got, calls) = texts(seed, 6, 6);
    assert_eq!(
        got,
        want,
        "past block_size (8), the cached generation wrote another text than the uncached one, \
         which runs the last 8 tokens: rebuild the cache from them. {}",
        kv_cache::capitalised(&text_why(seed, &start, 6, &calls))
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
fn a_prompt_longer_than_block_size_runs_its_last_block_size_tokens() {
    // The model has positions for block_size tokens: the uncached model reads the last 8 of a
    // prompt of 12, and so must the cached one, then go on past block_size as before.
    let seed = 12;
    let (start, want, got, calls) = texts(seed, 12, 4);
    let runs = expected_calls(12, 4, SMALL.block_size);
    assert_eq!(calls, runs, "{}", loop_why(seed, 12, 4, &calls));
    assert_eq!(
        got,
        want,
        "from a prompt of 12 with block_size 8, the cached generation wrote another text than \
         the uncached one, which reads the prompt's last 8 tokens. {}",
        kv_cache::capitalised(&text_why(seed, &start, 4, &calls))
    );
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
