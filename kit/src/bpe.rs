//! What Task 8's byte-level BPE tokenizer is given: GPT-2's way of cutting text into chunks,
//! its printable stand-in for every byte, a fast map keyed by pairs of ids, and its two files.
//!
//! A byte-level BPE tokenizer never merges across a chunk: [`chunks`] cuts text the way GPT-2
//! and tiktoken do, so that "dog", " dog" and "dog." stay apart and a merge never joins a word
//! to the punctuation after it. The files are GPT-2's: `vocab.json` maps each token, written
//! with [`byte_char`] one character a byte, to its id, and `merges.txt` lists the merges in
//! order, one pair a line, after a `#version: 0.2` line.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The special token that separates documents. It is never cut or merged: it is one id.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's split pattern, tiktoken's `r50k_base`: contractions, a letter run, a digit run or a
/// run of other symbols (each with at most one space before it), then whitespace. The
/// look-ahead `\s+(?!\S)` leaves the last space of a run to the word after it.
pub const PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// [`PATTERN`] without its look-ahead, which the automata of the `regex` crate (regex-automata)
/// have no way to run: [`Chunks`] does the look-ahead's work by hand, and the automata find a
/// chunk several times faster than a backtracking engine runs the whole pattern.
static SPLITTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+")
        .expect("GPT-2's pattern without its look-ahead compiles")
});

/// The chunks of `text`, in order, by GPT-2's [`PATTERN`]: together they are the whole text.
/// ("Hello  world!" → "Hello", " ", " world", "!".)
pub fn chunks(text: &str) -> Chunks<'_> {
    Chunks { text, at: 0 }
}

/// The chunks of a text, one after the other: [`chunks`].
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    text: &'a str,
    /// Where the next chunk starts.
    at: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        // Every character starts a chunk of some alternative, so the next chunk starts where
        // the last one ended: a search anchored there only looks for its end.
        let from_here = Input::new(self.text)
            .range(self.at..)
            .anchored(Anchored::Yes);
        let found = SPLITTER.find(from_here)?;
        let mut end = found.end();
        // Only the last alternative ends in whitespace: a whole run of it. Before more text,
        // `\s+(?!\S)` leaves the run's last character to the chunk after it ("  world" →
        // " ", " world"), unless that character is the whole run.
        let run = &self.text[found.range()];
        if end < self.text.len() && run.ends_with(char::is_whitespace) {
            let last = run.chars().next_back().map_or(0, char::len_utf8);
            if run.len() > last {
                end -= last;
            }
        }
        self.at = end;
        Some(&self.text[found.start()..end])
    }
}

/// Two adjacent token ids, left then right. Pairs compare by the left id, then the right one.
pub type Pair = (u32, u32);

/// A `HashMap` keyed by [`Pair`]s that hashes them in two multiplications: a tokenizer looks
/// pairs up millions of times, and std's default hasher, made to resist crafted keys, is
/// several times slower at it.
pub type PairMap<V> = HashMap<Pair, V, BuildHasherDefault<PairHasher>>;

/// The hasher of [`PairMap`]: a multiply and a rotate per `u32` (rustc's FxHash).
#[derive(Debug, Default, Clone, Copy)]
pub struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(SEED);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Whether GPT-2 writes byte `b` as itself: the 188 bytes that print in Latin-1.
fn prints(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 bytes that do not print (the controls, the space, the soft hyphen), in byte order:
/// the n-th of them is written U+0100 + n.
static HIDDEN: LazyLock<Vec<u8>> = LazyLock::new(|| (0..=255).filter(|&b| !prints(b)).collect());

/// GPT-2's character for byte `b` in `vocab.json` and `merges.txt`: the byte itself if it
/// prints in Latin-1 (`!`…`~`, `¡`…`¬`, `®`…`ÿ`), else U+0100, U+0101, … in byte order, so
/// that a space is written `Ġ` and a newline `Ċ`. Every token is then printable text.
pub fn byte_char(b: u8) -> char {
    if prints(b) {
        char::from(b)
    } else {
        let n = HIDDEN
            .iter()
            .position(|&h| h == b)
            .expect("a byte that does not print");
        char::from_u32(0x100 + n as u32).expect("U+0100 to U+0143 are characters")
    }
}

/// The byte that [`byte_char`] writes as `c`, if it writes one so.
pub fn char_byte(c: char) -> Option<u8> {
    match u32::from(c) {
        code @ 0..=0xFF => Some(code as u8).filter(|&b| prints(b)),
        code => HIDDEN.get((code - 0x100) as usize).copied(),
    }
}

/// What can go wrong with a tokenizer's files or ids.
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] common::files::WriteError),
    #[error("{} is not a JSON object of token → id: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    #[error("token id {0} is not in the vocabulary")]
    UnknownId(u32),
}

/// Reads GPT-2's `vocab.json`: every token (in [`byte_char`]s) with its id, in id order.
pub fn read_vocab(path: &Path) -> Result<Vec<(String, u32)>, BpeError> {
    let text = read(path)?;
    let map: HashMap<String, u32> =
        serde_json::from_str(&text).map_err(|source| BpeError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let mut entries: Vec<(String, u32)> = map.into_iter().collect();
    entries.sort_by_key(|&(_, id)| id);
    Ok(entries)
}

/// Reads GPT-2's `merges.txt`: the pairs of tokens (in [`byte_char`]s), in merge order. The
/// `#version` line and empty lines are skipped.
pub fn read_merges(path: &Path) -> Result<Vec<(String, String)>, BpeError> {
    let text = read(path)?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || (i == 0 && line.starts_with("#version")) {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [left, right] if !left.is_empty() && !right.is_empty() => {
                merges.push((left.to_string(), right.to_string()));
            }
            _ => {
                return Err(BpeError::Format {
                    path: path.to_path_buf(),
                    what: format!(
                        "line {}: expected two tokens separated by one space, found {line:?}",
                        i + 1
                    ),
                });
            }
        }
    }
    Ok(merges)
}

/// Writes `vocab.json`, the entries in the order given.
pub fn write_vocab(path: &Path, entries: &[(String, u32)]) -> Result<(), BpeError> {
    let body: Vec<String> = entries
        .iter()
        .map(|(token, id)| format!("{}: {id}", serde_json::Value::from(token.as_str())))
        .collect();
    let json = format!("{{{}}}\n", body.join(", "));
    Ok(common::files::write_atomically(path, json.as_bytes())?)
}

/// Writes `merges.txt`: the `#version: 0.2` line, then a pair a line.
pub fn write_merges(path: &Path, merges: &[(String, String)]) -> Result<(), BpeError> {
    let mut text = String::from("#version: 0.2\n");
    for (left, right) in merges {
        text.push_str(&format!("{left} {right}\n"));
    }
    Ok(common::files::write_atomically(path, text.as_bytes())?)
}

fn read(path: &Path) -> Result<String, BpeError> {
    std::fs::read_to_string(path).map_err(|source| BpeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_as_gpt2_does() {
        let cut: Vec<&str> = chunks("Hello  world! I'll go\n\n  now 123").collect();
        assert_eq!(
            cut,
            [
                "Hello", " ", " world", "!", " I", "'ll", " go", "\n\n ", " now", " 123"
            ]
        );
        assert_eq!(chunks("").count(), 0);
    }

    /// [`PATTERN`] itself, run by a backtracking engine that has look-ahead.
    fn pattern_chunks(text: &str) -> Vec<&str> {
        let pattern = fancy_regex::Regex::new(PATTERN).unwrap();
        pattern
            .find_iter(text)
            .map(|found| found.unwrap().as_str())
            .collect()
    }

    #[test]
    fn chunks_are_the_patterns_on_every_kind_of_whitespace() {
        let texts = [
            "a   b",
            "  leading",
            "trailing   ",
            " \t \n \r\n  mixed  \n\n",
            "x\n\n\ny \n\tz\t\t!",
            "no-break\u{a0}space, \u{a0} twice\u{3000}\u{3000}ideographic\u{2028}\u{2028}x",
            "vertical\u{b}tab, form\u{c}feed, \u{1c}file separator, next\u{85}line",
            "  12 ,,, 'll  's\u{a0}'ve   \u{a0}\u{a0}é",
        ];
        for text in texts {
            assert_eq!(
                chunks(text).collect::<Vec<_>>(),
                pattern_chunks(text),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn chunks_are_the_patterns(text in "[ asl1!'\t\r\n\u{a0}\u{3000}é]{0,40}") {
            proptest::prop_assert_eq!(chunks(&text).collect::<Vec<_>>(), pattern_chunks(&text));
        }
    }

    #[test]
    fn the_byte_table_is_gpt2s_and_inverts() {
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(0), '\u{100}');
        assert_eq!(byte_char(0xAD), '\u{143}');
        for b in 0..=255u8 {
            assert_eq!(char_byte(byte_char(b)), Some(b));
        }
        assert_eq!(char_byte('\u{144}'), None);
        assert_eq!(char_byte(' '), None);
        assert_eq!(char_byte('€'), None);
    }

    #[test]
    fn files_round_trip_and_name_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = vec![("a\"b".to_string(), 0), ("Ġx".to_string(), 1)];
        write_vocab(&dir.path().join("vocab.json"), &vocab).unwrap();
        assert_eq!(read_vocab(&dir.path().join("vocab.json")).unwrap(), vocab);
        let merges = vec![("Ġ".to_string(), "x".to_string())];
        write_merges(&dir.path().join("merges.txt"), &merges).unwrap();
        assert_eq!(read_merges(&dir.path().join("merges.txt")).unwrap(), merges);
        std::fs::write(dir.path().join("bad.txt"), "#version: 0.2\na b\nabc\n").unwrap();
        let err = read_merges(&dir.path().join("bad.txt")).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
