//! Where the tiny Shakespeare corpus comes from, and proof that it is the right file.
//!
//! The corpus is read from the file named by [`CORPUS_ENV`] if that variable is set, else from
//! `data/tinyshakespeare/input.txt` in the workbook, and its sha256 is checked on every read.
//! Getting it there (a download, or a copy installed by `cargo xtask data --from`) is the
//! command line's job: `workbook::corpus`.

use crate::files::WriteError;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Environment variable that names a corpus file to use instead of the workbook's copy.
pub const CORPUS_ENV: &str = "MINIGPT_CORPUS";
/// sha256 of the one true tiny Shakespeare.
pub const CORPUS_SHA256: &str = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";
/// Its size in bytes.
pub const CORPUS_LEN: u64 = 1_115_394;

/// What can go wrong while finding, fetching or reading the corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error(
        "could not download the corpus from {url}: {reason}\n\
         To work without a network, get tiny Shakespeare's input.txt by other means, then either\n  \
         cargo xtask data --from PATH/TO/input.txt    (verifies and installs it into data/tinyshakespeare/)\n\
         or\n  \
         export {CORPUS_ENV}=PATH/TO/input.txt"
    )]
    Download { url: String, reason: String },

    #[error(
        "{what} is not tiny Shakespeare: expected sha256 {expected} ({CORPUS_LEN} bytes), \
         found {found} ({found_len} bytes){kept}"
    )]
    Checksum {
        what: String,
        expected: String,
        found: String,
        found_len: u64,
        /// Says whether the bad file was kept, and what to do about it.
        kept: String,
    },

    #[error("cannot read the corpus at {}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the corpus at {} is not UTF-8 text (invalid byte at offset {offset}); \
         is it the right file?", path.display()
    )]
    NotUtf8 { path: PathBuf, offset: usize },

    #[error(
        "{CORPUS_ENV} is set to {}, but there is no file there; fix the path, or unset {CORPUS_ENV} \
         to use data/tinyshakespeare/input.txt", path.display()
    )]
    EnvPathMissing { path: PathBuf },

    #[error(
        "tiny Shakespeare is not at {} yet: `cargo xtask data` downloads it, and \
         `cargo xtask data --from PATH/TO/input.txt` installs a copy you have", path.display()
    )]
    Missing { path: PathBuf },

    #[error("cannot install the corpus: {0}")]
    Write(#[from] WriteError),
}

/// The workbook's own copy: `data/tinyshakespeare/input.txt` (git-ignored).
pub fn default_path() -> PathBuf {
    let this = Path::new(env!("CARGO_MANIFEST_DIR"));
    this.parent()
        .unwrap_or(this)
        .join("data")
        .join("tinyshakespeare")
        .join("input.txt")
}

/// Where the corpus will be read from: the file in [`CORPUS_ENV`] if set, else [`default_path`].
pub fn configured_path() -> Result<(PathBuf, bool), CorpusError> {
    match std::env::var_os(CORPUS_ENV) {
        Some(p) if !p.is_empty() => {
            let path = PathBuf::from(p);
            if path.exists() {
                Ok((path, true))
            } else {
                Err(CorpusError::EnvPathMissing { path })
            }
        }
        _ => Ok((default_path(), false)),
    }
}

/// Reads the verified corpus from where [`configured_path`] says it is.
pub fn load() -> Result<String, CorpusError> {
    let (path, from_env) = configured_path()?;
    if !from_env && !path.exists() {
        return Err(CorpusError::Missing { path });
    }
    read_verified(&path, CORPUS_SHA256)
}

/// Reads a file as UTF-8 and checks its sha256.
pub fn read_verified(path: &Path, expected_sha256: &str) -> Result<String, CorpusError> {
    let bytes = std::fs::read(path).map_err(|source| CorpusError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| CorpusError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    let found = sha256_hex(text.as_bytes());
    if found != expected_sha256 {
        return Err(checksum_error(
            path.display().to_string(),
            expected_sha256,
            found,
            text.len() as u64,
            format!(
                "; the file was left as it is: replace it with `cargo xtask data` (downloads) or \
                 `cargo xtask data --from PATH`{}",
                if path == default_path() {
                    String::new()
                } else {
                    format!(", or unset {CORPUS_ENV}")
                }
            ),
        ));
    }
    Ok(text)
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The error for a file or download whose sha256 is not `expected`; `kept` says what became
/// of it.
pub fn checksum_error(
    what: String,
    expected: &str,
    found: String,
    found_len: u64,
    kept: String,
) -> CorpusError {
    CorpusError::Checksum {
        what,
        expected: expected.to_string(),
        found,
        found_len,
        kept,
    }
}
