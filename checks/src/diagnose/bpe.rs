//! Task 8: what a wrong part of the BPE tokenizer does instead.
//!
//! Each part's output is recomputed the ways a catalogue of learners' mistakes allows (the
//! largest pair among equals, a merge scanned from the right, the latest merge applied first,
//! the text encoded as one chunk, …) with `reference::bpe`'s plain code, and the way that
//! reproduces the learner's output is named. A wrong trainer is located at its first wrong
//! merge, with the counts of the pairs at that point.

use kit::bpe::{END_OF_TEXT, Pair, chunks};
use reference::bpe::{self as plain, Encoder};
use serde_json::Value;
use std::collections::BTreeMap;

/// A token's bytes as text, for messages: `" the"`.
fn shown(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// A pair of ids with the text of each token, given the vocabulary they come from.
fn pair_text(pair: Pair, vocab: &[Vec<u8>]) -> String {
    let token = |id: u32| {
        vocab
            .get(id as usize)
            .map_or_else(|| format!("id {id}"), |b| shown(b))
    };
    format!(
        "({}, {}) = ({}, {})",
        pair.0,
        pair.1,
        token(pair.0),
        token(pair.1)
    )
}

/// Why `got`, the learner's distinct chunks of `text` (tokens → total count), is wrong.
/// `distinct` is whether each chunk was listed once.
pub fn words(got: &BTreeMap<Vec<u32>, usize>, distinct: bool, text: &str) -> String {
    let expected: BTreeMap<Vec<u32>, usize> = plain::chunk_counts(text)
        .into_iter()
        .map(|(bytes, n)| (bytes.into_iter().map(u32::from).collect(), n))
        .collect();
    let special: Vec<u32> = END_OF_TEXT.bytes().map(u32::from).collect();
    let holds_special = got.keys().any(|w| {
        w.windows(special.len().min(w.len()).max(1))
            .any(|s| s == special.as_slice())
    });
    if !distinct {
        return "a chunk is listed more than once: list each distinct chunk once, with the number \
                of times it occurs"
            .into();
    }
    if got.keys().flatten().any(|&id| id > 255) {
        return "a word holds an id above 255: a chunk's tokens are its UTF-8 bytes (ids 0..256), \
                not its characters"
            .into();
    }
    if holds_special || got.keys().any(|w| w.as_slice() == [60, 124]) {
        return format!(
            "the text of {END_OF_TEXT} is in your words: cut the text at every {END_OF_TEXT}, \
             which is dropped, before cutting each piece into chunks"
        );
    }
    if got.len() == 1 && expected.len() > 1 {
        return "the whole text is one word: cut it into chunks with kit::bpe::chunks".into();
    }
    if got.values().all(|&n| n == 1) && expected.values().any(|&n| n > 1) {
        return "every word has the count 1: count how many times each distinct chunk occurs"
            .into();
    }
    let chunk = |w: &Vec<u32>| shown(&w.iter().map(|&b| b as u8).collect::<Vec<u8>>());
    for (word, n) in &expected {
        match got.get(word) {
            None => return format!("the chunk {} is missing", chunk(word)),
            Some(m) if m != n => {
                return format!(
                    "the chunk {} has the count {m}; the text holds it {n} times",
                    chunk(word)
                );
            }
            Some(_) => {}
        }
    }
    let extra = got.keys().find(|w| !expected.contains_key(*w));
    extra.map_or_else(
        || "the words differ from the text's chunks".into(),
        |w| {
            format!(
                "{} is not a chunk of the text: kit::bpe::chunks cuts it",
                chunk(w)
            )
        },
    )
}

/// Why `got` is not `expected`, the pair counts of `words`.
pub fn pair_counts(
    got: &BTreeMap<Pair, usize>,
    expected: &BTreeMap<Pair, usize>,
    words: &[(Vec<u32>, usize)],
) -> String {
    let once: Vec<(Vec<u32>, usize)> = words.iter().map(|(t, _)| (t.clone(), 1)).collect();
    if *got == plain::pair_counts(&once) {
        return "each word's pairs are counted once: a word that occurs n times brings each of its \
                pairs n times (word.count)"
            .into();
    }
    for (pair, n) in expected {
        let m = got.get(pair).copied().unwrap_or(0);
        if m != *n {
            return format!("the pair {pair:?} has the count {m}; the words hold it {n} times");
        }
    }
    "a pair that occurs in no word has a count above zero".into()
}

/// Why `got` is not the best pair of `counts`.
pub fn best_pair(got: Option<Pair>, counts: &BTreeMap<Pair, usize>) -> String {
    let occurring: BTreeMap<Pair, usize> = counts
        .iter()
        .filter(|&(_, &n)| n > 0)
        .map(|(&p, &n)| (p, n))
        .collect();
    let Some(top) = occurring.values().copied().max() else {
        return format!("no pair occurs, so there is no best pair: None, not {got:?}");
    };
    let tied: Vec<Pair> = occurring
        .iter()
        .filter(|&(_, &n)| n == top)
        .map(|(&p, _)| p)
        .collect();
    let Some(got) = got else {
        return format!("None, though {} pairs occur", occurring.len());
    };
    let count = counts.get(&got).copied();
    match count {
        None => format!("{got:?} is not one of the pairs counted"),
        Some(0) => format!("{got:?} has the count 0: it no longer occurs, skip it"),
        Some(n) if n < top => {
            let lowest = occurring.values().min() == Some(&n);
            format!(
                "{got:?} occurs {n} times{}; {:?} occurs {top}: take the highest count",
                if lowest { ", the lowest count" } else { "" },
                tied[0]
            )
        }
        Some(_) if tied.last() == Some(&got) => format!(
            "among the pairs of equal count {tied:?}, yours takes the largest, {got:?}: the \
             chapter's rule is the smallest, {:?} (the left id first, then the right one)",
            tied[0]
        ),
        Some(_) => format!(
            "among the pairs of equal count {tied:?}, yours takes {got:?}: compare the pairs \
             themselves, the left id first, then the right one, and take the smallest, {:?}",
            tied[0]
        ),
    }
}

/// `tokens` merged the wrong ways the catalogue knows.
fn merge_mistakes(tokens: &[u32], pair: Pair, id: u32) -> Vec<(Vec<u32>, &'static str)> {
    let reversed: Vec<u32> = tokens.iter().rev().copied().collect();
    let mut from_right = plain::merge(&reversed, (pair.1, pair.0), id);
    from_right.reverse();
    let first_only = match tokens.windows(2).position(|w| (w[0], w[1]) == pair) {
        Some(i) => [&tokens[..i], &[id], &tokens[i + 2..]].concat(),
        None => tokens.to_vec(),
    };
    // A step of one token after a merge as well as after a token kept: a a a becomes aa aa a.
    let overlapping = (0..tokens.len())
        .map(|i| match tokens.get(i + 1) {
            Some(&next) if (tokens[i], next) == pair => id,
            _ => tokens[i],
        })
        .collect();
    vec![
        (
            from_right,
            "scans from the right: scan from the left, so that merging (a, a) in a a a gives aa a",
        ),
        (
            first_only,
            "replaces the first occurrence only: replace every one",
        ),
        (
            overlapping,
            "lets occurrences overlap (a a a becomes aa aa a): after a merge, go on after the \
             pair, two tokens on",
        ),
    ]
}

/// Why `got` is not `tokens` with `pair` merged into `id`.
pub fn merge(got: &[u32], tokens: &[u32], pair: Pair, id: u32) -> String {
    let expected = plain::merge(tokens, pair, id);
    let named = merge_mistakes(tokens, pair, id)
        .into_iter()
        .find(|(m, _)| m.as_slice() == got && *m != expected);
    match named {
        Some((_, what)) => format!("merging {pair:?} in {tokens:?}, yours {what}"),
        None => format!("merging {pair:?} into {id} in {tokens:?} gives {expected:?}, not {got:?}"),
    }
}

/// Why `got`, the merges a trainer learnt from `text`, are not `expected`, the plain trainer's.
pub fn train(got: &[Pair], expected: &[Pair], text: &str, vocab_size: usize) -> String {
    let k = got.iter().zip(expected).take_while(|(a, b)| a == b).count();
    if k == got.len() && k < expected.len() {
        return format!(
            "yours stops after {k} merges; a vocabulary of {vocab_size} takes {} (stop early \
             only when no pair is left)",
            expected.len()
        );
    }
    if k == expected.len() && k < got.len() {
        return format!(
            "yours makes {} merges; a vocabulary of {vocab_size} takes {} (256 ids are the \
             bytes{})",
            got.len(),
            vocab_size - 256,
            if k < vocab_size - 256 {
                ", and then no pair is left"
            } else {
                ""
            }
        );
    }
    // The words after the k right merges, and the pairs' counts at that point.
    let mut words: Vec<(Vec<u32>, usize)> = plain::chunk_counts(text)
        .into_iter()
        .map(|(b, n)| (b.into_iter().map(u32::from).collect(), n))
        .collect();
    for (i, &pair) in expected[..k].iter().enumerate() {
        for (tokens, _) in &mut words {
            *tokens = plain::merge(tokens, pair, 256 + i as u32);
        }
    }
    let counts = plain::pair_counts(&words);
    let vocab = plain::vocabulary(&expected[..k]);
    let (theirs, yours) = (expected[k], got[k]);
    let (n_theirs, n_yours) = (counts[&theirs], counts.get(&yours).copied().unwrap_or(0));
    let occurs = match n_yours {
        0 => "which no longer occurs at that point".to_string(),
        n => format!("which occurs {n} times at that point"),
    };
    let head = format!(
        "merge {k} (id {}) joins {}, {occurs}; the most frequent pair then is {}, {n_theirs} \
         times",
        256 + k,
        pair_text(yours, &vocab),
        pair_text(theirs, &vocab)
    );
    if n_yours == n_theirs {
        format!("{head}: among equal counts take the smallest pair (best_pair)")
    } else if k == 0 {
        format!("{head}: count the pairs of every word, word.count times (pair_counts)")
    } else {
        let before = if k == 1 {
            "The merge before it was right".to_string()
        } else {
            format!("The {k} merges before it were right")
        };
        format!(
            "{head}. {before}, so the counts your train keeps drift from its words after a \
             merge: for each word the merge changes, take its old pairs out of the counts and \
             put its new ones in, each word.count times"
        )
    }
}

/// One chunk encoded the wrong ways the catalogue knows.
fn chunk_mistakes(chunk: &[u8], merges: &[Pair]) -> Vec<(Vec<u32>, &'static str)> {
    let rank: BTreeMap<Pair, u32> = merges.iter().copied().zip(256..).collect();
    let by = |pick_last: bool, leftmost: bool| {
        let mut tokens: Vec<u32> = chunk.iter().map(|&b| u32::from(b)).collect();
        loop {
            let found: Vec<(u32, Pair)> = tokens
                .windows(2)
                .filter_map(|w| rank.get(&(w[0], w[1])).map(|&id| (id, (w[0], w[1]))))
                .collect();
            let pick = if leftmost {
                found.first().copied()
            } else if pick_last {
                found.iter().max().copied()
            } else {
                found.iter().min().copied()
            };
            let Some((id, pair)) = pick else { break };
            tokens = plain::merge(&tokens, pair, id);
        }
        tokens
    };
    vec![
        (
            by(true, false),
            "applies the latest merge first (the highest id): the merge learnt first applies first",
        ),
        (
            by(false, true),
            "merges the leftmost pair that is a merge, whatever its order: among the adjacent \
             pairs, merge the one learnt first",
        ),
    ]
}

/// Why `got` is not one chunk's encoding with `merges`.
pub fn encode_chunk(got: &[u32], chunk: &[u8], merges: &[Pair]) -> String {
    let expected = Encoder::new(merges).encode_chunk(chunk);
    let vocab = plain::vocabulary(merges);
    let pieces = |ids: &[u32]| -> String {
        let tokens: Vec<String> = ids
            .iter()
            .map(|&i| {
                vocab
                    .get(i as usize)
                    .map_or_else(|| format!("id {i}"), |b| shown(b))
            })
            .collect();
        format!("[{}]", tokens.join(", "))
    };
    match chunk_mistakes(chunk, merges)
        .into_iter()
        .find(|(m, _)| m.as_slice() == got && *m != expected)
    {
        Some((_, what)) => format!("on {}, yours {what}", shown(chunk)),
        None => format!(
            "{} encodes as {}, not {}",
            shown(chunk),
            pieces(&expected),
            pieces(got)
        ),
    }
}

/// Why `got` is not `text` encoded with `merges` as tiktoken does.
pub fn encode(got: &[u32], text: &str, merges: &[Pair]) -> String {
    let encoder = Encoder::new(merges);
    let eot = 256 + merges.len() as u32;
    let specials = text.matches(END_OF_TEXT).count();
    if got.iter().filter(|&&id| id == eot).count() != specials {
        return format!(
            "the text holds {specials} {END_OF_TEXT}, your ids {} times its id {eot}: cut the \
             text at every {END_OF_TEXT}, which becomes that one id, before cutting the rest \
             into chunks",
            got.iter().filter(|&&id| id == eot).count()
        );
    }
    let whole: Vec<u32> = text
        .split(END_OF_TEXT)
        .enumerate()
        .flat_map(|(i, piece)| {
            let mut ids = if i > 0 { vec![eot] } else { vec![] };
            ids.extend(encoder.encode_chunk(piece.as_bytes()));
            ids
        })
        .collect();
    if got == whole && whole != encoder.encode(text) {
        return "yours merges across chunks: cut each piece with kit::bpe::chunks and encode every \
                chunk on its own"
            .into();
    }
    for piece in text.split(END_OF_TEXT) {
        for chunk in chunks(piece) {
            let expected = encoder.encode_chunk(chunk.as_bytes());
            let named = chunk_mistakes(chunk.as_bytes(), merges)
                .into_iter()
                .find(|(m, _)| *m != expected);
            if let Some((mistake, _)) = named {
                let contains = got.windows(mistake.len()).any(|w| w == mistake.as_slice());
                if contains
                    && !got
                        .windows(expected.len())
                        .any(|w| w == expected.as_slice())
                {
                    return format!(
                        "encode_chunk: {}",
                        encode_chunk(&mistake, chunk.as_bytes(), merges)
                    );
                }
            }
        }
    }
    let expected = encoder.encode(text);
    let at = got
        .iter()
        .zip(&expected)
        .take_while(|(a, b)| a == b)
        .count();
    format!(
        "the ids first differ at position {at}: yours {:?}, tiktoken's {:?} ({} ids in all where \
         tiktoken writes {})",
        got.get(at),
        expected.get(at),
        got.len(),
        expected.len()
    )
}

/// Why `got`, the learner's `vocab.json`, is not `expected`.
pub fn vocab_json(got: &Value, expected: &Value) -> String {
    let (Some(got), Some(expected)) = (got.as_object(), expected.as_object()) else {
        return "vocab.json is a JSON object of token → id".into();
    };
    if !got.contains_key(END_OF_TEXT) {
        return format!(
            "vocab.json has no {END_OF_TEXT}: it comes last, with the id after every token"
        );
    }
    if got.keys().any(|k| k.contains(' ') || k.contains('\n')) {
        return "a token in vocab.json holds a space or a newline: write each byte with \
                kit::bpe::byte_char (a space is Ġ), not the token's text"
            .into();
    }
    for (token, id) in expected {
        match got.get(token) {
            None => return format!("vocab.json has no token {token:?} (id {id})"),
            Some(v) if v != id => {
                return format!("vocab.json gives {token:?} the id {v}, not {id}");
            }
            Some(_) => {}
        }
    }
    format!(
        "vocab.json has {} entries; the vocabulary has {}",
        got.len(),
        expected.len()
    )
}

/// Why a loaded tokenizer (`got`: each id's bytes, then its merges) is not the saved one.
pub fn loaded(got: (&[Option<Vec<u8>>], &[Pair]), saved: (&[Option<Vec<u8>>], &[Pair])) -> String {
    if got.0.len() != saved.0.len() {
        return format!(
            "it has {} ids; the files hold {}",
            got.0.len(),
            saved.0.len()
        );
    }
    if let Some(id) = (0..got.0.len()).find(|&i| got.0[i] != saved.0[i]) {
        return format!(
            "token {id} is {:?}; the files say {:?}: a token's bytes come from its characters \
             (kit::bpe::char_byte)",
            got.0[id].as_deref().map(String::from_utf8_lossy),
            saved.0[id].as_deref().map(String::from_utf8_lossy)
        );
    }
    match (0..saved.1.len()).find(|&k| got.1.get(k) != saved.1.get(k)) {
        Some(k) => format!(
            "merge {k} is {:?}; merges.txt says {:?}",
            got.1.get(k),
            saved.1[k]
        ),
        None => format!(
            "it has {} merges; merges.txt holds {}",
            got.1.len(),
            saved.1.len()
        ),
    }
}
