//! Every way of getting the corpus, and every way it can go wrong, against a loopback HTTP
//! server and temporary files. Nothing here touches the network.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use workbook::corpus::{self, CorpusError};

/// Serves one HTTP response on 127.0.0.1 and returns its URL. `declared_len` may differ from
/// the body's length, to simulate a connection that drops mid-way.
fn serve_once(body: Vec<u8>, declared_len: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {declared_len}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}/input.txt")
}

/// A URL on which nothing listens.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/input.txt")
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

const TEXT: &[u8] = b"First Citizen:\nBefore we proceed any further, hear me speak.\n";

/// [`TEXT`] written to `name` in `dir`, a local copy to install, and where to install it.
fn local_copy(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let src = dir.join(name);
    std::fs::write(&src, TEXT).unwrap();
    (src, dir.join("data").join("input.txt"))
}

#[test]
fn download_verifies_and_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub").join("input.txt");
    let url = serve_once(TEXT.to_vec(), TEXT.len());
    corpus::download(&url, &dest, &corpus::sha256_hex(TEXT)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), TEXT);
    assert_eq!(
        leftovers(dest.parent().unwrap()),
        vec!["input.txt"],
        "no temporary file is left behind"
    );
}

#[test]
fn no_network_says_how_to_supply_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("input.txt");
    let err = corpus::download(&dead_url(), &dest, corpus::CORPUS_SHA256).unwrap_err();
    assert!(matches!(err, CorpusError::Download { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cargo xtask data --from") && msg.contains(corpus::CORPUS_ENV),
        "{msg}"
    );
    assert!(!dest.exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_download_with_the_wrong_checksum_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("input.txt");
    let url = serve_once(TEXT.to_vec(), TEXT.len());
    let err = corpus::download(&url, &dest, corpus::CORPUS_SHA256).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CorpusError::Checksum { .. }), "{err:?}");
    assert!(
        msg.contains(corpus::CORPUS_SHA256) && msg.contains(&corpus::sha256_hex(TEXT)),
        "expected and found: {msg}"
    );
    assert!(msg.contains("deleted"), "{msg}");
    assert!(
        !dest.exists() && leftovers(dir.path()).is_empty(),
        "the bad download was not kept"
    );
}

#[test]
fn a_download_cut_short_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("input.txt");
    std::fs::write(&dest, b"previous").unwrap();
    let url = serve_once(TEXT[..10].to_vec(), TEXT.len());
    let err = corpus::download(&url, &dest, &corpus::sha256_hex(TEXT)).unwrap_err();
    assert!(matches!(err, CorpusError::Download { .. }), "{err:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous");
    assert_eq!(leftovers(dir.path()), vec!["input.txt"]);
}

#[test]
fn an_unreadable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, even by root.
    let err = corpus::read_verified(dir.path(), corpus::CORPUS_SHA256).unwrap_err();
    assert!(matches!(err, CorpusError::Unreadable { .. }), "{err:?}");
    let missing = dir.path().join("nope.txt");
    let err = corpus::read_verified(&missing, corpus::CORPUS_SHA256).unwrap_err();
    assert!(err.to_string().contains("nope.txt"), "{err}");
}

#[test]
fn a_file_that_is_not_utf8_names_the_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.txt");
    std::fs::write(&path, b"Hello\xff world").unwrap();
    let err = corpus::read_verified(&path, corpus::CORPUS_SHA256).unwrap_err();
    assert!(
        matches!(err, CorpusError::NotUtf8 { offset: 5, .. }),
        "{err:?}"
    );
}

#[test]
fn a_local_copy_with_the_wrong_checksum_is_reported_and_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = local_copy(dir.path(), "truncated.txt");
    let err = corpus::install_from(&src, &dest, corpus::CORPUS_SHA256).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("expected sha256") && msg.contains(&format!("({} bytes)", TEXT.len())),
        "{msg}"
    );
    assert!(msg.contains("nothing was installed"), "{msg}");
    assert!(!dest.exists());
}

#[test]
fn a_verified_local_copy_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = local_copy(dir.path(), "copy.txt");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"old").unwrap();
    corpus::install_from(&src, &dest, &corpus::sha256_hex(TEXT)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), TEXT);
    assert_eq!(leftovers(dest.parent().unwrap()), vec!["input.txt"]);
}

#[test]
fn the_real_corpus_is_tiny_shakespeare() {
    // From MINIGPT_CORPUS, or data/tinyshakespeare/input.txt, or downloaded once.
    let text = corpus::load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text.len() as u64, corpus::CORPUS_LEN);
    assert!(text.starts_with("First Citizen:"));
}
