//! Nothing lost: a save killed midway leaves the previous file whole.
//!
//! The test starts this same binary again as a child that begins replacing a file through
//! `write_atomically_with`, writes half of the new content, says so, and waits; the parent then
//! kills it with SIGKILL, the way a crash or a pulled plug would end it.
//! (A test binary with its own `main`: `harness = false` in common/Cargo.toml.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "WORKBOOK_ATOMIC_TEST_CHILD";
const HALF: usize = 1 << 20;

fn main() {
    match std::env::var_os(CHILD) {
        Some(dest) => child(Path::new(&dest)),
        None => {
            a_save_killed_midway_leaves_the_previous_file_intact();
            println!("test a_save_killed_midway_leaves_the_previous_file_intact ... ok");
        }
    }
}

/// Writes half of the new content into the temporary file, announces its path, then hangs.
fn child(dest: &Path) {
    common::files::write_atomically_with(dest, |tmp| {
        std::fs::write(tmp, vec![b'n'; HALF])?;
        std::fs::write(ready_marker(dest), tmp.as_os_str().as_encoded_bytes())?;
        std::thread::sleep(Duration::from_secs(120));
        Ok(())
    })
    .unwrap();
    unreachable!("the parent kills this process before the rename");
}

fn ready_marker(dest: &Path) -> PathBuf {
    dest.with_file_name("child-is-midway")
}

fn a_save_killed_midway_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.safetensors");
    std::fs::write(&dest, b"previous checkpoint").unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &dest)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let tmp = loop {
        if let Ok(tmp) = std::fs::read(ready_marker(&dest)) {
            break PathBuf::from(String::from_utf8(tmp).unwrap());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child never started its save"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The save is under way: half the new content sits in a temporary file beside `dest`.
    assert_eq!(std::fs::metadata(&tmp).unwrap().len(), HALF as u64);
    assert_eq!(tmp.parent(), dest.parent());
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");

    let now = std::fs::read(&dest).unwrap();
    assert!(
        now == b"previous checkpoint",
        "the previous file must be intact; it holds {} bytes now",
        now.len()
    );
    // What the killed save leaves is its temporary file, under a name nothing reads.
    let name = tmp.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(".write-") && name.ends_with(".part"),
        "{name}"
    );

    // The next save replaces the file whole.
    common::files::write_atomically(&dest, b"new checkpoint").unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"new checkpoint");
}
