//! Where the tiny Shakespeare corpus comes from, and proof that it is the right file.
//!
//! The corpus is read from the file named by [`CORPUS_ENV`] if that variable is set, else from
//! `data/tinyshakespeare/input.txt` in the workbook. When neither exists, [`load`] downloads it
//! from [`CORPUS_URL`], verifies its sha256 and writes it atomically: a crash or a bad download
//! never leaves a half-written file behind.

use crate::files::{AtomicFile, WriteError, write_atomically};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable that names a corpus file to use instead of the workbook's copy.
pub const CORPUS_ENV: &str = "MINIGPT_CORPUS";
/// The corpus's canonical public address.
pub const CORPUS_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
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

/// Loads the verified corpus, downloading it into the workbook first if it is nowhere to be found.
pub fn load() -> Result<String, CorpusError> {
    let (path, from_env) = configured_path()?;
    if !from_env && !path.exists() {
        eprintln!(
            "tiny Shakespeare is not in {} yet: downloading it once.",
            path.display()
        );
        download(CORPUS_URL, &path, CORPUS_SHA256)?;
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

/// Verifies a local copy and installs it at `dest` atomically.
pub fn install_from(src: &Path, dest: &Path, expected_sha256: &str) -> Result<(), CorpusError> {
    let text = read_verified(src, expected_sha256).map_err(|e| match e {
        CorpusError::Checksum {
            what,
            expected,
            found,
            found_len,
            ..
        } => CorpusError::Checksum {
            what,
            expected,
            found,
            found_len,
            kept: format!("; nothing was installed at {}", dest.display()),
        },
        other => other,
    })?;
    Ok(write_atomically(dest, text.as_bytes())?)
}

/// Downloads `url` into `dest`, verifying the sha256 before the file appears at `dest`.
///
/// Shows a progress bar on a terminal. The bytes go to a temporary file beside `dest` that is
/// renamed into place only once it is complete and verified; on any error it is deleted.
pub fn download(url: &str, dest: &Path, expected_sha256: &str) -> Result<(), CorpusError> {
    let fail = |reason: String| CorpusError::Download {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let mut file = AtomicFile::create(dest)?;
    let bar = crate::bars::bytes(total.unwrap_or(CORPUS_LEN), "downloading");
    let mut hasher = Sha256::new();
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received: u64 = 0;
    loop {
        let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|source| WriteError::new(dest, source))?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    if let Some(total) = total
        && received != total
    {
        return Err(fail(format!(
            "the connection closed after {received} of {total} bytes"
        )));
    }
    let found = hex(&hasher.finalize());
    if found != expected_sha256 {
        // `file` is deleted when dropped: the bad download is not kept.
        return Err(checksum_error(
            format!("the download from {url}"),
            expected_sha256,
            found,
            received,
            "; the bad download was deleted".to_string(),
        ));
    }
    file.commit()?;
    Ok(())
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn checksum_error(
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
