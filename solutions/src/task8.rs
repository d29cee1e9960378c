//! # Task 8: a byte-level BPE tokenizer
//!
//! Every model so far read characters: 65 of them, one token each. Real models read
//! **tokens** made by byte-pair encoding (BPE): start from the 256 bytes, so that any text at
//! all can be written, and learn merges, pairs of tokens that occur together often enough to
//! deserve a token of their own: `t`+`h`, then `th`+`e`, then ` `+`the`… A vocabulary of 512
//! tokens writes tiny Shakespeare in about half as many tokens as characters, so a model with
//! the same context window sees about twice as much text. This is GPT-2's tokenizer, and your
//! Task 9 will load OpenAI's files into it.
//!
//! Text is never merged across a chunk: `kit::bpe::chunks` cuts it the way GPT-2 does (a word
//! with at most one space before it, a number, a run of punctuation, whitespace), and the
//! special token `<|endoftext|>` (`kit::bpe::END_OF_TEXT`) is never cut or merged: it is always
//! one id, the one after the last merge. Ids `0..256` are the bytes, in byte order; the k-th
//! merge (from 0) makes id `256 + k`. A pair is `(left, right)`; pairs compare by the left id,
//! then the right one.
//!
//! Training, to a vocabulary of `vocab_size` ids before `<|endoftext|>`:
//!
//! 1. `words`: the text cut at every `<|endoftext|>` (which it drops), each piece cut into
//!    chunks; each distinct chunk once, as its bytes (ids `0..256`) with its number of
//!    occurrences. A trainer works on these distinct words (15,057 in tiny Shakespeare), not
//!    on the million characters of the text.
//! 2. `pair_counts`: how often each pair of adjacent ids occurs, a word counting as many times
//!    as it occurs.
//! 3. `best_pair`: the pair with the highest count; among pairs of equal count, the
//!    **smallest** pair. `None` when no pair occurs.
//! 4. `merge`: a word's tokens with every occurrence of the pair, from left to right, replaced
//!    by the new id: merging (a, a) in `a a a` gives `aa a`.
//! 5. `Bpe::train`: `vocab_size − 256` times (or until no pair is left): the best pair becomes
//!    the next id and is merged in every word that holds it. Only those words' pairs change:
//!    take each one's old pairs out of the counts and put its new pairs in, rather than
//!    counting every pair again after every merge.
//!
//! Encoding and decoding:
//!
//! 6. `Bpe::encode_chunk`: a chunk's bytes as their ids, then, until no adjacent pair is a
//!    merge, the adjacent pair whose merge was learnt first (the lowest id it makes) merged
//!    everywhere in the chunk.
//! 7. `Bpe::encode`: the text cut at every `<|endoftext|>`, which becomes its id; each piece
//!    cut into chunks, each chunk encoded. The result is what tiktoken writes with the same
//!    merges.
//! 8. `Bpe::decode_bytes`: each id's bytes, one after the other: `<|endoftext|>` is its 13
//!    bytes of text, an id outside the vocabulary an error. Decoding what `encode` wrote gives
//!    the text back exactly, whatever it was.
//!
//! GPT-2's files:
//!
//! 9. `Bpe::save`: `vocab.json`, every token written one `kit::bpe::byte_char` a byte, with
//!    its id, in id order, `<|endoftext|>` last; `merges.txt`, the merges in order, each the
//!    pair's two tokens written so. `kit::bpe::write_vocab` and `write_merges` write them.
//! 10. `Bpe::load`: the reverse, for any folder holding GPT-2's two files, OpenAI's included,
//!     whose bytes are not numbered in byte order: a token's bytes from its characters
//!     (`kit::bpe::char_byte`), each byte's id, each merge's pair and the id of the token it
//!     makes, looked up by its text. A file that breaks the rules is an error that names it.
//!
//! Check your work with `cargo xtask check task8`. `cargo xtask bench bpe` times your trainer
//! and your encoder against Hugging Face's and tiktoken's, and `cargo xtask train task8` trains
//! MiniGPT on your tokens.
//!
//! **Think about it.** Once it is green, this task's section of docs/guide.md ends with a
//! question to think about: the workbook keeps its questions there.

use kit::bpe::{self, BpeError, END_OF_TEXT, Pair, PairMap};
use std::collections::HashMap;
use std::path::Path;

/// A distinct chunk of the training text: its tokens so far, and how often it occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub tokens: Vec<u32>,
    pub count: usize,
}

/// The distinct chunks of `text`, cut at every `<|endoftext|>` first, each as its bytes.
pub fn words(text: &str) -> Vec<Word> {
    // Counting the chunks first is what makes training fast: tiny Shakespeare has a million
    // characters, but only 15,057 distinct chunks.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for piece in text.split(END_OF_TEXT) {
        for chunk in bpe::chunks(piece) {
            *counts.entry(chunk).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(chunk, count)| Word {
            tokens: chunk.bytes().map(u32::from).collect(),
            count,
        })
        .collect()
}

/// How often each adjacent pair of ids occurs, each word counting `count` times.
pub fn pair_counts(words: &[Word]) -> PairMap<usize> {
    let mut counts = PairMap::default();
    for word in words {
        for pair in word.tokens.windows(2) {
            *counts.entry((pair[0], pair[1])).or_default() += word.count;
        }
    }
    counts
}

/// The pair with the highest count, the smallest pair among equals; `None` if none occurs.
pub fn best_pair(counts: &PairMap<usize>) -> Option<Pair> {
    // A count that fell to zero is a pair that no longer occurs.
    counts
        .iter()
        .filter(|&(_, &count)| count > 0)
        .max_by(|(a, count_a), (b, count_b)| count_a.cmp(count_b).then(b.cmp(a)))
        .map(|(&pair, _)| pair)
}

/// `tokens` with every occurrence of `pair`, from left to right, replaced by `id`.
pub fn merge(tokens: &[u32], pair: Pair, id: u32) -> Vec<u32> {
    let mut merged = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if i + 1 < tokens.len() && (tokens[i], tokens[i + 1]) == pair {
            merged.push(id);
            i += 2;
        } else {
            merged.push(tokens[i]);
            i += 1;
        }
    }
    merged
}

/// A byte-level BPE tokenizer, GPT-2's kind: the bytes of every token, and the merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bpe {
    /// The bytes of each token, by id. `<|endoftext|>` is the id after the last.
    vocab: Vec<Vec<u8>>,
    /// The id of each byte's token: the byte itself in the vocabularies `train` makes.
    byte_ids: Vec<u32>,
    /// Each merge: the pair it joins → the id of the token it makes. A merge learnt earlier
    /// makes a lower id, and applies first.
    merges: PairMap<u32>,
}

impl Bpe {
    /// The tokenizer whose k-th merge joins `merges[k]` into id `256 + k`.
    pub fn from_merges(merges: &[Pair]) -> Bpe {
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut map = PairMap::default();
        for &(left, right) in merges {
            let bytes = [&vocab[left as usize][..], &vocab[right as usize][..]].concat();
            map.insert((left, right), vocab.len() as u32);
            vocab.push(bytes);
        }
        Bpe {
            vocab,
            byte_ids: (0..256).collect(),
            merges: map,
        }
    }

    /// Every id, `<|endoftext|>`'s included: the size of a model's embedding table.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len() + 1
    }

    /// The id of `<|endoftext|>`: the one after every other.
    pub fn end_of_text(&self) -> u32 {
        self.vocab.len() as u32
    }

    /// The bytes of token `id`, if it is one (not `<|endoftext|>`).
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        self.vocab.get(id as usize).map(Vec::as_slice)
    }

    /// The merges, in the order they apply.
    pub fn merges(&self) -> Vec<Pair> {
        let mut merges: Vec<(u32, Pair)> = self.merges.iter().map(|(&p, &id)| (id, p)).collect();
        merges.sort_unstable();
        merges.into_iter().map(|(_, pair)| pair).collect()
    }

    /// Token ids to text; bytes that are not UTF-8 (a character cut between two tokens)
    /// become U+FFFD (�).
    pub fn decode(&self, ids: &[u32]) -> Result<String, BpeError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// Learns `vocab_size − 256` merges from `text` (fewer if it runs out of pairs).
    pub fn train(text: &str, vocab_size: usize) -> Bpe {
        let mut words = words(text);
        let mut counts = pair_counts(&words);
        // Which words hold each pair: a merge looks at those words only, not at all of them.
        // A word stays listed under a pair it no longer holds, and is skipped there.
        let mut holders: PairMap<Vec<usize>> = PairMap::default();
        for (i, word) in words.iter().enumerate() {
            for p in word.tokens.windows(2) {
                holders.entry((p[0], p[1])).or_default().push(i);
            }
        }
        let mut merges = Vec::new();
        while 256 + merges.len() < vocab_size {
            let Some(pair) = best_pair(&counts) else {
                break;
            };
            let id = (256 + merges.len()) as u32;
            for i in holders.remove(&pair).unwrap_or_default() {
                let word = &mut words[i];
                if !word.tokens.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                let merged = merge(&word.tokens, pair, id);
                // Only this word's pairs change: its old ones out, its new ones in.
                for p in word.tokens.windows(2) {
                    *counts.entry((p[0], p[1])).or_default() -= word.count;
                }
                for p in merged.windows(2) {
                    *counts.entry((p[0], p[1])).or_default() += word.count;
                    // The pairs with the new token are the ones it was not listed under.
                    if p.contains(&id) {
                        holders.entry((p[0], p[1])).or_default().push(i);
                    }
                }
                word.tokens = merged;
            }
            merges.push(pair);
        }
        Bpe::from_merges(&merges)
    }

    /// The ids of one chunk's bytes, merged by the merges' order.
    pub fn encode_chunk(&self, chunk: &[u8]) -> Vec<u32> {
        let mut tokens: Vec<u32> = chunk.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let merge_of = |left: u32, right: u32| self.merges.get(&(left, right)).copied();
        // made[i]: the id tokens i and i + 1 merge into, if they are a merge.
        let mut made: Vec<Option<u32>> = tokens.windows(2).map(|p| merge_of(p[0], p[1])).collect();
        // The merge learnt first, at its leftmost place, until none is left. Its other places
        // come next, as if merged everywhere at once: a pair holding the new token merges, if
        // at all, into a later id. Only the two pairs beside the new token change, so only
        // they are looked up again.
        while let Some((id, i)) = made
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.map(|id| (id, i)))
            .min()
        {
            tokens[i] = id;
            tokens.remove(i + 1);
            made.remove(i);
            if i > 0 {
                made[i - 1] = merge_of(tokens[i - 1], id);
            }
            if i < made.len() {
                made[i] = merge_of(id, tokens[i + 1]);
            }
        }
        tokens
    }

    /// Text to token ids, `<|endoftext|>` whole.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (i, piece) in text.split(END_OF_TEXT).enumerate() {
            // Between two pieces, the special token that separated them.
            if i > 0 {
                ids.push(self.end_of_text());
            }
            for chunk in bpe::chunks(piece) {
                ids.extend(self.encode_chunk(chunk.as_bytes()));
            }
        }
        ids
    }

    /// Token ids to the bytes they stand for.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, BpeError> {
        let mut bytes = Vec::new();
        for &id in ids {
            if id == self.end_of_text() {
                bytes.extend_from_slice(END_OF_TEXT.as_bytes());
            } else {
                bytes.extend_from_slice(self.token(id).ok_or(BpeError::UnknownId(id))?);
            }
        }
        Ok(bytes)
    }

    /// Writes `vocab.json` and `merges.txt` into `dir`, as GPT-2's.
    pub fn save(&self, dir: &Path) -> Result<(), BpeError> {
        let text = |id: u32| -> String {
            self.vocab[id as usize]
                .iter()
                .map(|&b| bpe::byte_char(b))
                .collect()
        };
        let mut vocab: Vec<(String, u32)> =
            (0..self.end_of_text()).map(|id| (text(id), id)).collect();
        vocab.push((END_OF_TEXT.to_string(), self.end_of_text()));
        let merges: Vec<(String, String)> = self
            .merges()
            .into_iter()
            .map(|(l, r)| (text(l), text(r)))
            .collect();
        bpe::write_vocab(&dir.join("vocab.json"), &vocab)?;
        bpe::write_merges(&dir.join("merges.txt"), &merges)
    }

    /// Reads GPT-2's `vocab.json` and `merges.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Bpe, BpeError> {
        let (vocab_path, merges_path) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let error = |path: &Path, what: String| BpeError::Format {
            path: path.to_path_buf(),
            what,
        };
        let entries = bpe::read_vocab(&vocab_path)?;
        let mut vocab = Vec::new();
        let mut ids: HashMap<&str, u32> = HashMap::new();
        for (i, (token, id)) in entries.iter().enumerate() {
            // The ids must be 0, 1, 2, …, with <|endoftext|> last.
            let last = i + 1 == entries.len();
            if *id as usize != i || (token == END_OF_TEXT) != last {
                return Err(error(
                    &vocab_path,
                    format!(
                        "{token:?} has id {id}: the ids must be 0, 1, 2, … with {END_OF_TEXT} the last"
                    ),
                ));
            }
            if !last {
                let bytes: Option<Vec<u8>> = token.chars().map(bpe::char_byte).collect();
                vocab.push(bytes.ok_or_else(|| {
                    error(
                        &vocab_path,
                        format!("{token:?} has a character that stands for no byte"),
                    )
                })?);
                ids.insert(token, *id);
            }
        }
        let id_of = |token: &str| {
            ids.get(token)
                .copied()
                .ok_or_else(|| error(&vocab_path, format!("{token:?} is missing")))
        };
        let byte_ids = (0..=255u8)
            .map(|b| id_of(&bpe::byte_char(b).to_string()))
            .collect::<Result<_, _>>()?;
        let mut merges = PairMap::default();
        let mut last = 0;
        for (left, right) in bpe::read_merges(&merges_path)? {
            let id = id_of(&format!("{left}{right}"))?;
            // Each merge makes a higher id than the one before it: the order encoding follows.
            if id <= last {
                return Err(error(
                    &merges_path,
                    format!("\"{left} {right}\" makes id {id}, not after the merge before it"),
                ));
            }
            merges.insert((id_of(&left)?, id_of(&right)?), id);
            last = id;
        }
        Ok(Bpe {
            vocab,
            byte_ids,
            merges,
        })
    }
}
