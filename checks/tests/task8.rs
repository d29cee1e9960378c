//! Task 8 checks: a byte-level BPE tokenizer.
//!
//! The checks' own BPE (`reference::bpe`, written from the chapter's definitions: every pair
//! counted again after every merge, encoding by tiktoken's rule over byte strings) grades each
//! part on hand-made and random texts. A fixture (`data/fixtures/task8_bpe.json`, made by
//! `data/fixtures/make_task8_fixture.py` with a plain Python trainer, tiktoken and Hugging
//! Face's tokenizers) carries the merges learnt from a small text and from tiny Shakespeare,
//! and the ids tiktoken and Hugging Face write for a battery of texts with the Shakespeare
//! merges. Hugging Face's `tokenizers` (Rust) reads the files your `save` writes.

use checks::diagnose::bpe as diagnose;
use checks::fixture;
use checks::learner::task8::{Bpe, Word, best_pair, merge, pair_counts, words};
use checks::support::{self, corpus, device, within};
use kit::bpe::{BpeError, END_OF_TEXT, Pair, PairMap, byte_char, write_merges, write_vocab};
use kit::nn::LayerNorm;
use kit::{Codec, Dataset, GptConfig, SeededVarMap};
use proptest::prelude::*;
use reference::RefGpt;
use reference::bpe as plain;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| fixture::load("task8_bpe.json"))
}

/// The fixture's small training text.
fn small_text() -> &'static str {
    include_str!("../../data/fixtures/task8_small.txt")
}

fn pairs(v: &Value) -> Vec<Pair> {
    v.as_array()
        .expect("a list of pairs")
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_u64().unwrap() as u32))
        .collect()
}

/// The merges the fixture's trainer learnt from tiny Shakespeare, 512 ids.
fn shakespeare_merges() -> Vec<Pair> {
    pairs(&fixture()["shakespeare"]["merges"])
}

/// The fixture's battery: each text with the ids tiktoken writes with the Shakespeare merges.
fn battery() -> Vec<(String, Vec<u32>)> {
    fixture()["battery"]
        .as_array()
        .expect("a battery")
        .iter()
        .map(|case| {
            let (tiktoken, hf) = (fixture::ids(&case["tiktoken"]), fixture::ids(&case["hf"]));
            assert_eq!(
                tiktoken, hf,
                "the fixture's tiktoken and Hugging Face agree"
            );
            (case["text"].as_str().unwrap().to_string(), tiktoken)
        })
        .collect()
}

/// A tokenizer with the Shakespeare merges, built by kit's `from_merges` (given code).
fn shakespeare_bpe() -> Bpe {
    Bpe::from_merges(&shakespeare_merges())
}

fn as_map(words: &[Word]) -> BTreeMap<Vec<u32>, usize> {
    let mut map = BTreeMap::new();
    for w in words {
        *map.entry(w.tokens.clone()).or_insert(0) += w.count;
    }
    map
}

// ---------------------------------------------------------------- words, pairs, best pair

#[test]
fn words_count_each_distinct_chunk_once() {
    let text = "the cat and the hat<|endoftext|>the  end\r\nthe cat";
    let got = words(text);
    let expected: BTreeMap<Vec<u32>, usize> = plain::chunk_counts(text)
        .into_iter()
        .map(|(bytes, n)| (bytes.into_iter().map(u32::from).collect(), n))
        .collect();
    let distinct = got.len() == as_map(&got).len();
    assert!(
        as_map(&got) == expected && distinct,
        "words: {}",
        diagnose::words(&as_map(&got), distinct, text)
    );
}

#[test]
fn pair_counts_weigh_each_word_by_its_count() {
    let ws = vec![
        Word {
            tokens: vec![1, 2, 3],
            count: 5,
        },
        Word {
            tokens: vec![2, 3, 2, 3],
            count: 2,
        },
        Word {
            tokens: vec![7],
            count: 9,
        },
    ];
    let got: BTreeMap<Pair, usize> = pair_counts(&ws)
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect();
    let plain_words: Vec<(Vec<u32>, usize)> =
        ws.iter().map(|w| (w.tokens.clone(), w.count)).collect();
    let expected = plain::pair_counts(&plain_words);
    assert!(
        got == expected,
        "pair_counts: {}",
        diagnose::pair_counts(&got, &expected, &plain_words)
    );
}

#[test]
fn best_pair_takes_the_highest_count_then_the_smallest_pair() {
    let cases: [&[(Pair, usize)]; 4] = [
        &[((5, 6), 3), ((1, 2), 7), ((9, 9), 4)],
        &[((300, 2), 7), ((4, 300), 7), ((4, 9), 7), ((8, 1), 2)],
        &[((2, 9), 5), ((2, 3), 5), ((1, 400), 1)],
        &[((1, 1), 0), ((3, 3), 1)],
    ];
    for case in cases {
        let counts: PairMap<usize> = case.iter().copied().collect();
        let ordered: BTreeMap<Pair, usize> = case.iter().copied().collect();
        let expected = plain::best_pair(
            &ordered
                .clone()
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .collect(),
        );
        let got = best_pair(&counts);
        assert!(
            got == expected,
            "best_pair: {}",
            diagnose::best_pair(got, &ordered)
        );
    }
    assert_eq!(
        best_pair(&PairMap::default()),
        None,
        "best_pair of no pairs is None"
    );
    let zeros: PairMap<usize> = [((1, 2), 0)].into_iter().collect();
    assert_eq!(
        best_pair(&zeros),
        None,
        "best_pair: a pair whose count fell to 0 no longer occurs, so it is never the best"
    );
}

// ------------------------------------------------------------------------------- merge

#[test]
fn merge_replaces_left_to_right_without_overlap() {
    let cases: [(&[u32], Pair); 5] = [
        (&[97, 97, 97], (97, 97)),
        (&[97, 97, 97, 97], (97, 97)),
        (&[1, 2, 3, 1, 2], (1, 2)),
        (&[2, 1, 2, 1], (1, 2)),
        (&[], (1, 2)),
    ];
    for (tokens, pair) in cases {
        let got = merge(tokens, pair, 256);
        let expected = plain::merge(tokens, pair, 256);
        assert!(
            got == expected,
            "merge: {}",
            diagnose::merge(&got, tokens, pair, 256)
        );
    }
}

proptest! {
    #[test]
    fn merge_equals_the_plain_merge(tokens in prop::collection::vec(0u32..4, 0..30), a in 0u32..4, b in 0u32..4) {
        let got = merge(&tokens, (a, b), 9);
        let expected = plain::merge(&tokens, (a, b), 9);
        prop_assert!(got == expected, "merge: {}", diagnose::merge(&got, &tokens, (a, b), 9));
    }
}

// ------------------------------------------------------------------------------- train

/// `Bpe::train`'s merges, within a minute.
fn trained(text: &'static str, vocab_size: usize) -> Vec<Pair> {
    within(Duration::from_secs(60), "Bpe::train", move || {
        Bpe::train(text, vocab_size).merges()
    })
}

fn assert_same_merges(got: &[Pair], expected: &[Pair], text: &str, vocab_size: usize) {
    assert!(
        got == expected,
        "Bpe::train: {}",
        diagnose::train(got, expected, text, vocab_size)
    );
}

#[test]
fn training_a_small_text_learns_the_fixtures_merges() {
    let small = &fixture()["small"];
    let vocab_size = small["vocab_size"].as_u64().unwrap() as usize;
    let expected = pairs(&small["merges"]);
    assert_same_merges(
        &trained(small_text(), vocab_size),
        &expected,
        small_text(),
        vocab_size,
    );
    let bpe = Bpe::from_merges(&expected);
    assert_eq!(
        (bpe.vocab_size(), bpe.end_of_text()),
        (vocab_size + 1, vocab_size as u32),
        "a vocabulary of {vocab_size} ids has <|endoftext|> after them: {} ids in all",
        vocab_size + 1
    );
}

#[test]
fn training_on_tiny_shakespeare_learns_the_fixtures_merges() {
    let sha = fixture()["shakespeare"]["sha256"].as_str().unwrap();
    assert_eq!(
        common::corpus::sha256_hex(corpus().as_bytes()),
        sha,
        "the fixture's corpus"
    );
    let expected = shakespeare_merges();
    let got = trained(corpus(), 512);
    assert_same_merges(&got, &expected, corpus(), 512);
}

#[test]
fn training_stops_when_no_pair_is_left() {
    let got = trained("ab ab ab", 1000);
    assert_eq!(
        got,
        plain::train("ab ab ab", 1000),
        "Bpe::train on \"ab ab ab\": once every chunk is one token, no pair is left to merge"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn training_learns_what_the_plain_trainer_learns(text in text_strategy(), extra in 1usize..40) {
        let expected = plain::train(&text, 256 + extra);
        let got = Bpe::train(&text, 256 + extra).merges();
        prop_assert!(got == expected, "Bpe::train on {text:?}: {}", diagnose::train(&got, &expected, &text, 256 + extra));
    }
}

// ------------------------------------------------------------------------------ encode

#[test]
fn encode_chunk_applies_the_earliest_merge_first() {
    // (b, c) is learnt before (a, b): "abc" is a + bc, never ab + c.
    let bpe = Bpe::from_merges(&[(98, 99), (97, 98), (97, 257), (256, 100)]);
    let merges = bpe.merges();
    for chunk in ["abc", "abcd", "ab", "bcd", "ababc", "x"] {
        let got = bpe.encode_chunk(chunk.as_bytes());
        let expected = plain::Encoder::new(&merges).encode_chunk(chunk.as_bytes());
        assert!(
            got == expected,
            "Bpe::encode_chunk({chunk:?}): {}",
            diagnose::encode_chunk(&got, chunk.as_bytes(), &merges)
        );
    }
}

#[test]
fn encoding_equals_tiktoken_on_the_battery() {
    let bpe = shakespeare_bpe();
    let merges = shakespeare_merges();
    for (text, expected) in battery() {
        let got = bpe.encode(&text);
        assert!(
            got == expected,
            "Bpe::encode({text:?}) is not what tiktoken writes with the same merges: {}",
            diagnose::encode(&got, &text, &merges)
        );
    }
}

#[test]
fn encoding_the_start_of_tiny_shakespeare_equals_tiktoken() {
    let prefix = &fixture()["corpus_prefix"];
    let chars = prefix["chars"].as_u64().unwrap() as usize;
    let text: String = corpus().chars().take(chars).collect();
    let got = shakespeare_bpe().encode(&text);
    assert!(
        got == fixture::ids(&prefix["ids"]),
        "Bpe::encode of the first {chars} characters of tiny Shakespeare: {}",
        diagnose::encode(&got, &text, &shakespeare_merges())
    );
}

#[test]
fn encode_never_merges_across_chunks() {
    // Runs of spaces teach (" ", " ") early; across a chunk's edge it would join the space
    // that starts " the" to the one before it.
    let merges = plain::train("the   then   thief   they", 262);
    let plain_encoder = plain::Encoder::new(&merges);
    let text = "then  the thief   they,  ";
    let whole = plain_encoder.encode_chunk(text.as_bytes());
    assert_ne!(
        whole,
        plain_encoder.encode(text),
        "the cut matters on this text"
    );
    let got = Bpe::from_merges(&merges).encode(text);
    assert!(
        got == plain_encoder.encode(text),
        "Bpe::encode({text:?}): {}",
        diagnose::encode(&got, text, &merges)
    );
}

#[test]
fn end_of_text_is_one_id_never_cut_nor_merged() {
    let bpe = shakespeare_bpe();
    let eot = bpe.end_of_text();
    let ids = bpe.encode("the end<|endoftext|><|endoftext|>The");
    assert_eq!(
        ids.iter().filter(|&&i| i == eot).count(),
        2,
        "two <|endoftext|>, two ids: {ids:?}"
    );
    let plain_text = bpe.encode("<|endoftext");
    assert!(
        !plain_text.contains(&eot),
        "\"<|endoftext\" is ordinary text, not the special token"
    );
}

// ------------------------------------------------------------------------------ decode

#[test]
fn decode_names_an_unknown_id() {
    let bpe = shakespeare_bpe();
    let err = bpe.decode_bytes(&[104, 9999]);
    assert!(
        err.is_err(),
        "Bpe::decode_bytes(&[104, 9999]): 9999 is no token, so an error"
    );
    assert_eq!(
        bpe.decode_bytes(&[bpe.end_of_text()]).unwrap(),
        END_OF_TEXT.as_bytes()
    );
}

#[test]
fn decode_writes_text_and_marks_a_cut_character() {
    let bpe = shakespeare_bpe();
    let text = "héllo 👋<|endoftext|>";
    assert_eq!(
        bpe.decode(&bpe.encode(text)).unwrap(),
        text,
        "Bpe::decode(Bpe::encode(text))"
    );
    // The first byte of é alone is no character: it reads as U+FFFD.
    assert_eq!(
        bpe.decode(&[104, 0xC3]).unwrap(),
        "h\u{FFFD}",
        "Bpe::decode of a token that cuts a character in two"
    );
}

/// Texts that stress a byte-level tokenizer: any printable Unicode (emoji, combining marks,
/// every script), runs of whitespace, `\r\n`, and the special token.
fn text_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "\\PC{0,12}",
        2 => "[ \t\r\n]{1,5}",
        2 => "[a-z]{1,6}( [a-z]{1,6}){0,3}",
        1 => Just(END_OF_TEXT.to_string()),
        1 => "[\u{1F600}-\u{1F64F}\u{200D}\u{0301}\u{0300}é]{1,4}",
        1 => Just("'ll 've 's".to_string()),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|ps| ps.concat())
}

proptest! {
    #[test]
    fn decode_inverts_encode_on_any_text(text in text_strategy()) {
        let bpe = shakespeare_bpe();
        let ids = bpe.encode(&text);
        let back = bpe.decode_bytes(&ids).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(back == text.as_bytes(), "Bpe::decode_bytes(Bpe::encode({text:?})) gave {:?}", String::from_utf8_lossy(&back));
    }

    #[test]
    fn encode_equals_the_plain_encoder(text in text_strategy()) {
        let merges = shakespeare_merges();
        let got = shakespeare_bpe().encode(&text);
        let expected = plain::Encoder::new(&merges).encode(&text);
        prop_assert!(got == expected, "Bpe::encode({text:?}): {}", diagnose::encode(&got, &text, &merges));
    }
}

// --------------------------------------------------------------------------- save, load

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn save_writes_the_files_of_the_fixture() {
    let small = &fixture()["small"];
    let bpe = Bpe::from_merges(&pairs(&small["merges"]));
    let dir = tempfile::tempdir().unwrap();
    bpe.save(dir.path()).expect("Bpe::save");
    let vocab: Value = serde_json::from_str(&read(&dir.path().join("vocab.json")))
        .expect("Bpe::save: vocab.json is JSON");
    assert!(
        vocab == small["vocab_json"],
        "Bpe::save: {}",
        diagnose::vocab_json(&vocab, &small["vocab_json"])
    );
    assert_eq!(
        read(&dir.path().join("merges.txt")),
        small["merges_txt"].as_str().unwrap(),
        "Bpe::save: merges.txt is \"#version: 0.2\" and then one merge a line, its two tokens \
         written with kit::bpe::byte_char and separated by a space"
    );
}

#[test]
fn hugging_face_tokenizers_reads_your_files() {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};
    let dir = tempfile::tempdir().unwrap();
    shakespeare_bpe().save(dir.path()).expect("Bpe::save");
    let (vocab, merges) = (dir.path().join("vocab.json"), dir.path().join("merges.txt"));
    let model = BPE::from_file(vocab.to_str().unwrap(), merges.to_str().unwrap())
        .build()
        .unwrap_or_else(|e| panic!("Hugging Face's BPE cannot read what Bpe::save wrote: {e}"));
    let mut hf = Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    hf.add_special_tokens([AddedToken::from(END_OF_TEXT, true)])
        .expect("Hugging Face adds <|endoftext|>");
    for (text, expected) in battery() {
        let got = hf
            .encode(text.as_str(), false)
            .expect("Hugging Face encodes");
        assert_eq!(
            got.get_ids(),
            expected,
            "Hugging Face's tokenizers, reading the files Bpe::save wrote, encodes {text:?} \
             otherwise than tiktoken with the same merges"
        );
    }
}

#[test]
fn load_reads_back_what_save_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let bpe = shakespeare_bpe();
    bpe.save(dir.path()).expect("Bpe::save");
    let back = Bpe::load(dir.path()).expect("Bpe::load of what Bpe::save wrote");
    let view = |b: &Bpe| -> (Vec<Option<Vec<u8>>>, Vec<Pair>) {
        let tokens = (0..b.vocab_size() as u32)
            .map(|id| b.token(id).map(<[u8]>::to_vec))
            .collect();
        (tokens, b.merges())
    };
    let (got, saved) = (view(&back), view(&bpe));
    assert!(
        back == bpe,
        "Bpe::load(save(bpe)) is not bpe: {}",
        diagnose::loaded((&got.0, &got.1), (&saved.0, &saved.1))
    );
}

/// GPT-2's own numbering of the bytes: those that print first, in byte order, then the others.
fn gpt2_byte_id(b: u8) -> u32 {
    let prints = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let order: Vec<u8> = (0..=255)
        .filter(|&b| prints(b))
        .chain((0..=255).filter(|&b| !prints(b)))
        .collect();
    order.iter().position(|&x| x == b).unwrap() as u32
}

#[test]
fn load_reads_files_that_number_the_bytes_as_openai_does() {
    let merges = shakespeare_merges();
    let vocab = plain::vocabulary(&merges);
    let text = |bytes: &[u8]| -> String { bytes.iter().map(|&b| byte_char(b)).collect() };
    let renumber = |id: u32| if id < 256 { gpt2_byte_id(id as u8) } else { id };
    let mut entries: Vec<(String, u32)> = vocab
        .iter()
        .zip(0..)
        .map(|(bytes, id)| (text(bytes), renumber(id)))
        .collect();
    entries.sort_by_key(|&(_, id)| id);
    entries.push((END_OF_TEXT.to_string(), vocab.len() as u32));
    let merge_lines: Vec<(String, String)> = merges
        .iter()
        .map(|&(l, r)| (text(&vocab[l as usize]), text(&vocab[r as usize])))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_vocab(&dir.path().join("vocab.json"), &entries).unwrap();
    write_merges(&dir.path().join("merges.txt"), &merge_lines).unwrap();
    let bpe = Bpe::load(dir.path()).expect("Bpe::load of files numbered as GPT-2's");
    for (text, ids) in battery() {
        let expected: Vec<u32> = ids.into_iter().map(renumber).collect();
        assert_eq!(
            bpe.encode(&text),
            expected,
            "Bpe::load of files that number the bytes as GPT-2's do (! is 0, a space 220), then \
             Bpe::encode({text:?}): each byte's id comes from vocab.json, not from its value"
        );
    }
}

#[test]
fn load_names_the_file_that_breaks_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    shakespeare_bpe().save(dir.path()).unwrap();
    let merges = dir.path().join("merges.txt");
    std::fs::write(&merges, read(&merges) + "Ġq zz\n").unwrap();
    match Bpe::load(dir.path()) {
        Ok(_) => panic!(
            "Bpe::load of a merges.txt whose last line joins tokens that are not in vocab.json must fail"
        ),
        Err(e) => assert!(
            e.to_string().contains("vocab.json") || e.to_string().contains("merges.txt"),
            "Bpe::load's error names the file: {e}"
        ),
    }
    assert!(
        Bpe::load(&dir.path().join("nowhere")).is_err(),
        "Bpe::load of a missing folder fails"
    );
    // vocab.json's ids must be 0, 1, 2, … with <|endoftext|> the last: a gap, or the special
    // token anywhere else, is an error too.
    let small = Bpe::from_merges(&[(104, 101)]);
    let texts: Vec<String> = (0..small.end_of_text())
        .map(|id| {
            small
                .token(id)
                .unwrap()
                .iter()
                .map(|&b| byte_char(b))
                .collect()
        })
        .collect();
    let gap: Vec<(String, u32)> = texts
        .iter()
        .cloned()
        .zip((0..).map(|id| if id < 100 { id } else { id + 1 }))
        .chain([(END_OF_TEXT.to_string(), 258)])
        .collect();
    let early: Vec<(String, u32)> = [(END_OF_TEXT.to_string(), 0)]
        .into_iter()
        .chain(texts.iter().cloned().zip(1..))
        .collect();
    for (what, entries) in [("a gap in the ids", gap), ("<|endoftext|> first", early)] {
        let dir = tempfile::tempdir().unwrap();
        write_vocab(&dir.path().join("vocab.json"), &entries).unwrap();
        write_merges(&dir.path().join("merges.txt"), &[("h".into(), "e".into())]).unwrap();
        assert!(
            Bpe::load(dir.path()).is_err(),
            "Bpe::load of a vocab.json with {what} must fail: the ids are 0, 1, 2, … with \
             <|endoftext|> the last"
        );
    }
}

// ------------------------------------------------------------------- MiniGPT on your tokens

/// Your tokenizer as the training loop reads it.
struct Yours(Bpe);

impl Codec for Yours {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn encode_text(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        Ok(self.0.encode(text))
    }

    fn decode_text(&self, ids: &[u32]) -> String {
        self.0
            .decode(ids)
            .unwrap_or_else(|e: BpeError| e.to_string())
    }

    fn vocabulary(&self) -> Option<String> {
        None
    }
}

#[test]
fn graded_training_on_your_tokens_reaches_the_bar() {
    let vocab = support::task("task8")
        .model
        .and_then(|m| m.bpe_vocab)
        .expect("tasks.toml gives task8 a bpe_vocab");
    let bpe = within(Duration::from_secs(120), "Bpe::train", move || {
        Bpe::train(corpus(), vocab)
    });
    let tokens = within(Duration::from_secs(120), "Bpe::encode", {
        let bpe = bpe.clone();
        move || bpe.encode(corpus())
    });
    let data = Dataset::from_tokens(&tokens, Arc::new(Yours(bpe)));
    let params = SeededVarMap::new(0);
    let cfg = GptConfig::graded(data.vocab_size());
    let model = RefGpt::minigpt(cfg, params.var_builder(&device()), LayerNorm::new)
        .expect("the checks' MiniGPT");
    support::graded_training_on("task8", &model, &params, &data).assert_below_the_bar(
        "The model is the checks' own MiniGPT and the loop kit's: what it reads is your tokens. \
         The other checks compare every part with the plain BPE; if they pass, the tokens are \
         right, and a run this far off is one of the rare seeds a bar cannot rule out: run the \
         check again.",
    );
}
