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
    // TODO: the text cut at every END_OF_TEXT (dropped), each piece cut into chunks by
    // kit::bpe::chunks; each distinct chunk once, as its bytes (ids 0..256), with how many times it
    // occurs.
    todo!("words: the distinct chunks of the text, each as its bytes with its count")
}

/// How often each adjacent pair of ids occurs, each word counting `count` times.
pub fn pair_counts(words: &[Word]) -> PairMap<usize> {
    // TODO: for every word, every adjacent pair of its tokens, counted `word.count` times.
    todo!("pair_counts: each adjacent pair's count, a word counting as often as it occurs")
}

/// The pair with the highest count, the smallest pair among equals; `None` if none occurs.
pub fn best_pair(counts: &PairMap<usize>) -> Option<Pair> {
    // TODO: the pair with the highest count (above zero); among equal counts, the smallest pair
    // (left id first, then right). None if no pair occurs.
    todo!("best_pair: the most frequent pair, the smallest among equals")
}

/// `tokens` with every occurrence of `pair`, from left to right, replaced by `id`.
pub fn merge(tokens: &[u32], pair: Pair, id: u32) -> Vec<u32> {
    // TODO: a new list of tokens: scanning left to right, each occurrence of `pair` becomes `id`,
    // and the scan goes on after it, so that merging (a, a) in a a a gives aa a.
    todo!("merge: every occurrence of the pair, from left to right, replaced by the new id")
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
        // TODO: start from `words(text)` and their `pair_counts`; while 256 + merges < vocab_size
        // and a best pair exists: it makes id 256 + merges; merge it in every word that holds it,
        // taking that word's old pairs out of the counts and its new pairs in; remember the pair.
        // Then `Bpe::from_merges`.
        todo!(
            "Bpe::train: the best pair merged, vocab_size − 256 times, the counts updated word by word"
        )
    }

    /// The ids of one chunk's bytes, merged by the merges' order.
    pub fn encode_chunk(&self, chunk: &[u8]) -> Vec<u32> {
        // TODO: the chunk's bytes as ids (self.byte_ids); then, while some adjacent pair is in
        // self.merges, merge everywhere the one that makes the lowest id.
        todo!("Bpe::encode_chunk: the bytes' ids, merged by the order the merges were learnt")
    }

    /// Text to token ids, `<|endoftext|>` whole.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        // TODO: the text cut at every END_OF_TEXT, which becomes self.end_of_text(); each piece cut
        // into chunks by kit::bpe::chunks, each chunk encoded, all the ids in order.
        todo!("Bpe::encode: <|endoftext|> whole, every chunk of the rest encoded")
    }

    /// Token ids to the bytes they stand for.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, BpeError> {
        // TODO: each id's bytes one after the other: END_OF_TEXT's bytes for self.end_of_text(),
        // BpeError::UnknownId for an id that is neither a token nor it.
        todo!("Bpe::decode_bytes: the bytes of every id, one after the other")
    }

    /// Writes `vocab.json` and `merges.txt` into `dir`, as GPT-2's.
    pub fn save(&self, dir: &Path) -> Result<(), BpeError> {
        // TODO: vocab.json: every token but <|endoftext|> as its bytes written by
        // kit::bpe::byte_char, with its id, in id order, then END_OF_TEXT with its id; merges.txt:
        // each merge, in order, as its two tokens written so. kit::bpe::write_vocab and
        // write_merges write the files into dir.
        todo!("Bpe::save: vocab.json and merges.txt in GPT-2's format")
    }

    /// Reads GPT-2's `vocab.json` and `merges.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Bpe, BpeError> {
        // TODO: read dir's vocab.json and merges.txt (kit::bpe::read_vocab, read_merges); the ids
        // must be 0, 1, 2, … with END_OF_TEXT last; each token's bytes from its characters
        // (char_byte); each byte's id; each merge's two ids and the id of the token it makes (the
        // two texts joined), each merge making a higher id than the one before. Any rule broken:
        // BpeError::Format.
        todo!("Bpe::load: GPT-2's vocab.json and merges.txt, read back")
    }
}
