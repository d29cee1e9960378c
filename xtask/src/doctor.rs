//! `cargo xtask doctor`: whether this machine is ready for the workbook, a line per fact, each
//! failing one with its fix. It needs no network and none of the learner's code.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use workbook::style;

/// Free space the build wants: candle and the workbook for every task, with room to spare.
const DISK_NEEDED_GB: f64 = 3.0;

/// One line of the report.
struct Finding {
    ok: bool,
    what: String,
    /// What to do about it, for a failing line.
    fix: Option<String>,
}

impl Finding {
    fn ok(what: String) -> Finding {
        Finding {
            ok: true,
            what,
            fix: None,
        }
    }

    fn bad(what: String, fix: String) -> Finding {
        Finding {
            ok: false,
            what,
            fix: Some(fix),
        }
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    let root = workbook::workspace_root();
    println!("{} this machine", style::bold("Checking"));
    let findings = [
        toolchain(&root),
        threads(),
        cpu(),
        corpus(),
        disk(&root),
        built(&root),
        gpt2(),
        colour(),
    ];
    for f in &findings {
        let mark = if f.ok {
            style::ok("✓")
        } else {
            style::bad("✗")
        };
        println!("  {mark} {}", f.what);
        if let Some(fix) = &f.fix {
            println!("      {fix}");
        }
    }
    let failing = findings.iter().filter(|f| !f.ok).count();
    if failing == 0 {
        let list = workbook::tasks::TaskList::here()?;
        println!(
            "\nThis machine is ready. Next: cargo xtask check {}",
            list.tasks[0].name
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\n{failing} thing(s) to see to. Next: do what the ✗ lines say, then run `cargo xtask doctor` again."
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `(major, minor)` of "1.94" or "rustc 1.95.0 (…)".
fn version(text: &str) -> Option<(u32, u32)> {
    let v = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The workspace's `rust-version`.
fn required_rust(root: &Path) -> Option<(u32, u32)> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))?;
    version(&line.replace('"', " "))
}

fn toolchain(root: &Path) -> Finding {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let found = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(found) = found.filter(|f| !f.is_empty()) else {
        return Finding::bad(
            "Rust: no rustc found".into(),
            "install Rust with rustup, then open a new terminal".into(),
        );
    };
    match (version(&found), required_rust(root)) {
        (Some(have), Some(need)) if have >= need => Finding::ok(format!(
            "Rust: {found} (the workbook needs {}.{} or newer)",
            need.0, need.1
        )),
        (Some(_), Some(need)) => Finding::bad(
            format!(
                "Rust: {found}, older than the {}.{} the workbook needs",
                need.0, need.1
            ),
            "run `rustup update stable`".into(),
        ),
        _ => Finding::ok(format!("Rust: {found}")),
    }
}

fn threads() -> Finding {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings: Vec<(&str, Option<String>)> = ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
        .into_iter()
        .map(|v| (v, std::env::var(v).ok()))
        .collect();
    let shown: Vec<String> = settings
        .iter()
        .map(|(v, value)| format!("{v}={}", value.as_deref().unwrap_or("(unset)")))
        .collect();
    let what = format!(
        "{cores} core(s); {}; training differentiates each batch in two parts, one per core",
        shown.join(", ")
    );
    if settings.iter().all(|(_, v)| v.as_deref() == Some("1")) {
        Finding::ok(what)
    } else {
        Finding::bad(
            what,
            "run the workbook through `cargo xtask`, whose .cargo/config.toml sets both to 1: \
             candle's own threads make these small tensors slower (BENCHMARKS.md)"
                .into(),
        )
    }
}

fn cpu() -> Finding {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx512 {
            Finding::ok("CPU: AVX-512, the fastest kind for gemm's kernels".into())
        } else if avx2 {
            Finding::ok(
                "CPU: AVX2 and FMA, no AVX-512: training runs at about half the speed of an \
                 AVX-512 machine (BENCHMARKS.md names both kinds)"
                    .into(),
            )
        } else {
            Finding::bad(
                "CPU: neither AVX2 nor AVX-512".into(),
                "the checks will pass, but a graded training will take several times longer; \
                 a machine with AVX2 is worth finding"
                    .into(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Finding::ok(format!(
            "CPU: {} (gemm uses its vector instructions; the figures in BENCHMARKS.md are x86-64)",
            std::env::consts::ARCH
        ))
    }
}

fn corpus() -> Finding {
    let (path, from_env) = match workbook::corpus::configured_path() {
        Ok(found) => found,
        Err(e) => {
            return Finding::bad(
                format!("corpus: {e}"),
                "fix the path, or run `cargo xtask data`".into(),
            );
        }
    };
    let source = if from_env {
        format!("found through {}", workbook::corpus::CORPUS_ENV)
    } else {
        "the workbook's own copy".into()
    };
    if !path.exists() {
        return Finding::bad(
            format!("corpus: not at {} yet", path.display()),
            "run `cargo xtask data` (downloads 1.1 MB), or `cargo xtask data --from PATH` \
             without a network"
                .into(),
        );
    }
    match workbook::corpus::read_verified(&path, workbook::corpus::CORPUS_SHA256) {
        Ok(_) => Finding::ok(format!(
            "corpus: {} ({source}), sha256 verified",
            path.display()
        )),
        Err(e) => Finding::bad(format!("corpus: {e}"), "run `cargo xtask data`".into()),
    }
}

/// The build's folder: `CARGO_TARGET_DIR`, else `target/` in the workbook.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Free gigabytes on the file system of `path`, from `df`.
fn free_gb(path: &Path) -> Option<f64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb: f64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

fn disk(root: &Path) -> Finding {
    let mut at = target_dir(root);
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => break,
        }
    }
    match free_gb(&at) {
        Some(gb) if gb >= DISK_NEEDED_GB => Finding::ok(format!(
            "disk: {gb:.0} GB free for the build (it needs about {DISK_NEEDED_GB:.0} GB)"
        )),
        Some(gb) => Finding::bad(
            format!("disk: {gb:.1} GB free, and the build needs about {DISK_NEEDED_GB:.0} GB"),
            "free some space, or point CARGO_TARGET_DIR at a disk with room".into(),
        ),
        None => Finding::ok("disk: free space unknown (no `df` here)".into()),
    }
}

/// Part III: what Task 9's `cargo xtask gpt2` runs, and how it gets there. Nothing to check
/// without a network, so never a failing line.
fn gpt2() -> Finding {
    Finding::ok(
        "GPT-2 (Task 9's `cargo xtask gpt2`): OpenAI's 124M, about 0.5 GB; `--download` fetches \
         it with a network, `--dir PATH` runs a folder of its four files (config.json, \
         model.safetensors, vocab.json, merges.txt) you have; Tasks 8 and 9 need nothing else"
            .into(),
    )
}

fn built(root: &Path) -> Finding {
    let deps = target_dir(root).join("debug").join("deps");
    let candle = std::fs::read_dir(&deps)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcandle_core-") && name.ends_with(".rlib")
        });
    if candle {
        Finding::ok("build: candle is built; a check starts in seconds".into())
    } else {
        Finding::ok(
            "build: candle is not built yet; the first check compiles it, with cargo's \
             progress on screen (the README gives the time on a 2-core laptop)"
                .into(),
        )
    }
}

fn colour() -> Finding {
    let why = if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        "off: NO_COLOR is set"
    } else if style::enabled() {
        "on"
    } else {
        "off: the output is not a terminal"
    };
    Finding::ok(format!("colour: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_rustc_and_the_manifest() {
        assert_eq!(
            version("rustc 1.95.0 (59807616e 2026-04-14)"),
            Some((1, 95))
        );
        assert_eq!(version("rust-version =  1.94 "), Some((1, 94)));
        assert_eq!(
            required_rust(&workbook::workspace_root()).map(|v| v >= (1, 80)),
            Some(true)
        );
        assert!((1, 100) > (1, 94) && (2, 0) > (1, 94));
    }
}
