//! The checks' own byte-level BPE, written from Task 8's definitions as plainly as they read:
//! every pair counted again after every merge, and encoding by tiktoken's rule (the adjacent
//! pair whose joined bytes are the token of lowest id), over byte strings rather than merges.
//! Slow and obviously right; the learner's trainer and encoder must agree with it exactly.

use kit::bpe::{END_OF_TEXT, Pair, chunks};
use std::collections::{BTreeMap, HashMap};

/// The distinct chunks of `text` (cut at every `<|endoftext|>` first) with their counts.
pub fn chunk_counts(text: &str) -> BTreeMap<Vec<u8>, usize> {
    let mut counts = BTreeMap::new();
    for piece in text.split(END_OF_TEXT) {
        for chunk in chunks(piece) {
            *counts.entry(chunk.as_bytes().to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// Every adjacent pair's count over `words`, each word counting as often as it occurs.
pub fn pair_counts(words: &[(Vec<u32>, usize)]) -> BTreeMap<Pair, usize> {
    let mut counts = BTreeMap::new();
    for (tokens, count) in words {
        for w in tokens.windows(2) {
            *counts.entry((w[0], w[1])).or_insert(0) += count;
        }
    }
    counts
}

/// The most frequent pair, the smallest of the most frequent ones.
pub fn best_pair(counts: &BTreeMap<Pair, usize>) -> Option<Pair> {
    let top = counts.values().copied().max()?;
    // A BTreeMap walks its pairs in order: the first with the top count is the smallest.
    counts.iter().find(|&(_, &c)| c == top).map(|(&p, _)| p)
}

/// `tokens` with `pair` replaced by `id`, left to right.
pub fn merge(tokens: &[u32], pair: Pair, id: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if i + 1 < tokens.len() && tokens[i] == pair.0 && tokens[i + 1] == pair.1 {
            out.push(id);
            i += 2;
        } else {
            out.push(tokens[i]);
            i += 1;
        }
    }
    out
}

/// The merges a trainer learns from `text` for a vocabulary of `vocab_size` ids (ids 0..256 the
/// bytes, merge k making 256 + k), counting every pair again after every merge.
pub fn train(text: &str, vocab_size: usize) -> Vec<Pair> {
    let mut words: Vec<(Vec<u32>, usize)> = chunk_counts(text)
        .into_iter()
        .map(|(bytes, count)| (bytes.into_iter().map(u32::from).collect(), count))
        .collect();
    let mut merges = Vec::new();
    while 256 + merges.len() < vocab_size {
        let Some(pair) = best_pair(&pair_counts(&words)) else {
            break;
        };
        let id = (256 + merges.len()) as u32;
        for (tokens, _) in &mut words {
            *tokens = merge(tokens, pair, id);
        }
        merges.push(pair);
    }
    merges
}

/// The bytes of every token of the vocabulary `merges` makes, by id.
pub fn vocabulary(merges: &[Pair]) -> Vec<Vec<u8>> {
    let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for &(l, r) in merges {
        let joined = [vocab[l as usize].clone(), vocab[r as usize].clone()].concat();
        vocab.push(joined);
    }
    vocab
}

/// tiktoken's encoder over the vocabulary `merges` makes, `<|endoftext|>` the id after it.
pub struct Encoder {
    ranks: HashMap<Vec<u8>, u32>,
    end_of_text: u32,
}

impl Encoder {
    pub fn new(merges: &[Pair]) -> Self {
        let vocab = vocabulary(merges);
        let end_of_text = vocab.len() as u32;
        let ranks = vocab.into_iter().zip(0..).collect();
        Self { ranks, end_of_text }
    }

    /// One chunk: its bytes, then the adjacent pair whose join has the lowest id merged, the
    /// leftmost among equals, until no join is a token.
    pub fn encode_chunk(&self, chunk: &[u8]) -> Vec<u32> {
        let mut parts: Vec<Vec<u8>> = chunk.iter().map(|&b| vec![b]).collect();
        loop {
            let best = (0..parts.len().saturating_sub(1))
                .filter_map(|i| {
                    let joined = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
                    self.ranks.get(&joined).map(|&rank| (rank, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = parts.remove(i + 1);
            parts[i].extend(right);
        }
        parts.iter().map(|p| self.ranks[p]).collect()
    }

    /// Text to ids, `<|endoftext|>` whole.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (i, piece) in text.split(END_OF_TEXT).enumerate() {
            if i > 0 {
                ids.push(self.end_of_text);
            }
            for chunk in chunks(piece) {
                ids.extend(self.encode_chunk(chunk.as_bytes()));
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_merges_of_a_small_text_are_those_worked_by_hand() {
        // Chunks "aaab" ×1 and " aab" ×1 → pairs (a,a) 3, (a,b) 2, (' ',a) 1: (a, a) first.
        let merges = train("aaab aab", 258);
        assert_eq!(merges[0], (97, 97));
        // Then "aaab" is [aa, a, b] and " aab" [' ', aa, b]: (aa,a) 1, (a,b) 1, (' ',aa) 1,
        // (aa,b) 1; the smallest of the four is (32, 256).
        assert_eq!(merges[1], (32, 256));
    }

    #[test]
    fn encoding_round_trips_and_keeps_the_special_token_whole() {
        let enc = Encoder::new(&train("the cat, the hat<|endoftext|>the end", 280));
        let ids = enc.encode("the<|endoftext|>the");
        assert!(ids.contains(&enc.end_of_text));
        let vocab = vocabulary(&train("the cat, the hat<|endoftext|>the end", 280));
        let mut bytes = Vec::new();
        for id in enc.encode("the cat sat, héé 🐈") {
            bytes.extend(&vocab[id as usize]);
        }
        assert_eq!(String::from_utf8(bytes).unwrap(), "the cat sat, héé 🐈");
    }
}
