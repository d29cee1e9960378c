//! Getting tiny Shakespeare onto this machine: downloading it, or installing a copy you have.
//!
//! Reading it is [`common::corpus`]'s, re-exported here. [`ensure`] is what the commands call
//! before they need the corpus: it downloads it from [`CORPUS_URL`] if it is nowhere to be
//! found, verifies its sha256 and writes it atomically, so that a crash or a bad download never
//! leaves a half-written file behind.

pub use common::corpus::*;

use common::files::{AtomicFile, WriteError, write_atomically};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// The corpus's canonical public address.
pub const CORPUS_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";

/// Loads the verified corpus, downloading it into the workbook first if it is nowhere to be found.
pub fn ensure() -> Result<String, CorpusError> {
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
    let bar = common::bars::bytes(total.unwrap_or(CORPUS_LEN), "downloading");
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
