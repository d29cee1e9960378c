//! Building with an inner cargo: its progress shown as it comes, its JSON messages read for
//! the built program and for compile errors, which become a verdict instead of a wall of text.

use crate::interrupt;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use workbook::style;

/// A cargo command run in `root`, without the package variables `cargo run` gave this process
/// (CARGO_PKG_NAME, ...): passed on, they would make cargo rebuild everything under it.
pub fn command(root: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_BIN_NAME",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.current_dir(root).stdin(Stdio::null());
    cmd
}

/// One compiler message about a file of the workbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub error: bool,
    /// The file of its primary span, relative to the workbook's root.
    pub file: String,
    pub line: usize,
    /// As the compiler prints it (in colour where colour is on).
    pub rendered: String,
}

/// The files named by `errors`, each once, in the order they first appear.
pub fn files_with_errors(errors: &[Diagnostic]) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for e in errors {
        if !files.contains(&e.file) {
            files.push(e.file.clone());
        }
    }
    files
}

/// What a build gave.
pub enum Built {
    /// The program to run, and the warnings on the way.
    Program {
        executable: PathBuf,
        warnings: Vec<Diagnostic>,
    },
    /// The errors that stopped it. Empty if cargo failed without a compiler error (a broken
    /// manifest, a missing toolchain): cargo's own message was printed.
    Failed(Vec<Diagnostic>),
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    executable: Option<PathBuf>,
    message: Option<CompilerMessage>,
}

#[derive(Deserialize)]
struct CompilerMessage {
    level: String,
    rendered: Option<String>,
    spans: Vec<Span>,
}

#[derive(Deserialize)]
struct Span {
    file_name: String,
    line_start: usize,
    is_primary: bool,
}

/// Runs `cargo ARGS` (a build that makes one program), showing a line for each crate it
/// compiles, and returns the program or the compile errors.
pub fn build(root: &Path, args: &[&str]) -> anyhow::Result<Built> {
    let format = if style::enabled() {
        "--message-format=json-diagnostic-rendered-ansi"
    } else {
        "--message-format=json"
    };
    let mut child = command(root)
        .args(args)
        .arg(format)
        .env(
            "CARGO_TERM_COLOR",
            if style::enabled() { "always" } else { "never" },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run cargo ({e}): is Rust installed and on PATH? (`cargo xtask doctor` checks this machine)"
            )
        })?;
    let stderr = child.stderr.take().expect("piped");
    let progress = std::thread::spawn(move || show_progress(stderr));
    let mut executable = None;
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(msg) = serde_json::from_str::<Message>(&line?) else {
            continue;
        };
        match msg.reason.as_str() {
            "compiler-artifact" => executable = msg.executable.or(executable),
            "compiler-message" => {
                if let Some(d) = msg.message.and_then(|m| diagnostic(root, m))
                    && !diagnostics.contains(&d)
                {
                    diagnostics.push(d);
                }
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    let _ = progress.join();
    interrupt::check()?;
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics.into_iter().partition(|d| d.error);
    Ok(match executable {
        Some(executable) if status.success() => Built::Program {
            executable,
            warnings,
        },
        _ => Built::Failed(errors),
    })
}

/// A compiler message with a primary span in a file of the workbook.
fn diagnostic(root: &Path, m: CompilerMessage) -> Option<Diagnostic> {
    let span = m.spans.iter().find(|s| s.is_primary)?;
    let file = Path::new(&span.file_name);
    let file = file.strip_prefix(root).unwrap_or(file);
    if file.is_absolute() {
        return None;
    }
    Some(Diagnostic {
        error: m.level == "error",
        file: file.to_string_lossy().replace('\\', "/"),
        line: span.line_start,
        rendered: m.rendered?.trim_end().to_string(),
    })
}

/// Passes cargo's stderr on, less what says nothing to a learner: "Finished", "Executable",
/// "Running" and the "could not compile" summary, which the verdict says better.
fn show_progress(stderr: impl Read) {
    let mut out = std::io::stderr();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let plain = style::strip(&line);
        let word = plain.split_whitespace().next().unwrap_or("");
        if ["Finished", "Executable", "Running"].contains(&word)
            || plain.starts_with("error: could not compile")
            || plain.starts_with("warning: build failed")
            || plain.contains("generated") && plain.contains("warning")
        {
            continue;
        }
        let _ = writeln!(out, "{line}");
    }
}
