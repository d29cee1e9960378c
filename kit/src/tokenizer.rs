//! Character-level tokenizer: one token per distinct character of the corpus.

use std::collections::HashMap;

/// A character that the vocabulary does not contain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "character {ch:?} (U+{code:04X}) at position {position} is not in the vocabulary; \
     the model knows only these {size} characters: {known}",
    code = *ch as u32
)]
pub struct UnknownChar {
    pub ch: char,
    /// Position in characters (not bytes) from the start of the text.
    pub position: usize,
    pub size: usize,
    pub known: String,
}

/// Text to a model's token ids and back: what a [`Dataset`](crate::Dataset) was cut with, so
/// that a run can read a prompt and write its samples. The characters' [`Tokenizer`] is one;
/// Task 8's byte-level BPE is another.
pub trait Codec: Send + Sync {
    /// Number of distinct ids: the size of a model's embedding table.
    fn vocab_size(&self) -> usize;
    fn encode_text(&self, text: &str) -> anyhow::Result<Vec<u32>>;
    fn decode_text(&self, ids: &[u32]) -> String;
    /// The characters in id order, which a checkpoint records to rebuild a character
    /// tokenizer; `None` for a tokenizer whose files are saved beside the checkpoint.
    fn vocabulary(&self) -> Option<String>;
}

impl Codec for Tokenizer {
    fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    fn encode_text(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        Ok(self.encode(text)?)
    }

    fn decode_text(&self, ids: &[u32]) -> String {
        self.decode(ids)
    }

    fn vocabulary(&self) -> Option<String> {
        Some(self.chars.iter().collect())
    }
}

/// Maps characters to token ids and back. The vocabulary is the sorted distinct characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl Tokenizer {
    /// Builds the vocabulary from every distinct character of `text`, sorted.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    /// Builds a tokenizer from an already sorted, distinct list of characters.
    pub fn from_chars(chars: Vec<char>) -> Self {
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Self { chars, ids }
    }

    /// Number of distinct tokens.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// The vocabulary, in token-id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Text to token ids; the first character outside the vocabulary is an error.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, UnknownChar> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| {
                self.ids.get(&ch).copied().ok_or_else(|| UnknownChar {
                    ch,
                    position,
                    size: self.chars.len(),
                    known: self
                        .chars
                        .iter()
                        .collect::<String>()
                        .escape_debug()
                        .to_string(),
                })
            })
            .collect()
    }

    /// Token ids to text. An id outside the vocabulary becomes U+FFFD (�).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| {
                self.chars
                    .get(id as usize)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }

    /// The character of one token id, if it exists.
    pub fn char_of(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vocabulary_is_sorted_and_distinct() {
        let t = Tokenizer::from_text("hello world");
        assert_eq!(t.chars(), &[' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']);
        assert_eq!(t.encode("hello").unwrap(), vec![3, 2, 4, 4, 5]);
    }

    #[test]
    fn unknown_character_names_itself_and_its_position() {
        let t = Tokenizer::from_text("abc");
        let err = t.encode("abzc").unwrap_err();
        assert_eq!((err.ch, err.position), ('z', 2));
        let msg = err.to_string();
        assert!(msg.contains("'z'") && msg.contains("position 2"), "{msg}");
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(text in "[a-zA-Z ,.;:!?'\\n-]{0,200}") {
            let t = Tokenizer::from_text(&text);
            let ids = t.encode(&text).unwrap();
            prop_assert_eq!(ids.len(), text.chars().count());
            prop_assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
            prop_assert_eq!(t.decode(&ids), text);
        }

        #[test]
        fn encode_inverts_decode(corpus in "\\PC{1,64}", picks in prop::collection::vec(any::<prop::sample::Index>(), 0..100)) {
            let t = Tokenizer::from_text(&corpus);
            let ids: Vec<u32> = picks.iter().map(|p| p.index(t.vocab_size()) as u32).collect();
            prop_assert_eq!(t.encode(&t.decode(&ids)).unwrap(), ids);
        }
    }
}
