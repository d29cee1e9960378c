//! A copy of the workbook that builds beside it: `cargo xtask mutants` mutates one, and the
//! learner tests work in one, so that the workbook's own files are never touched.

use anyhow::Context as _;
use std::path::Path;

/// What a copy needs: the workspace without its build outputs, runs and corpus.
pub const PARTS: [&str; 12] = [
    "Cargo.toml",
    "Cargo.lock",
    ".cargo",
    "kit",
    "exercises",
    "solutions",
    "checks",
    "xtask",
    "runner",
    "workspace-hack",
    "data/fixtures",
    "data/reference",
];

/// Who a copy is for. Copies build into the workbook's target directory, and cargo tells
/// builds apart by package name, version and path inside the workspace: each kind of copy gets
/// a version of its own (`0.1.0-copy`, `0.1.0-mutants`), so that it can neither overwrite the
/// workbook's build outputs nor take another kind's for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// For the tests that play a learner: they edit `exercises/` and nothing else.
    Learner,
    /// For `cargo xtask mutants`, which edits the reference solutions.
    Mutants,
}

impl Purpose {
    fn version_suffix(self) -> &'static str {
        match self {
            Purpose::Learner => "copy",
            Purpose::Mutants => "mutants",
        }
    }

    /// Whether the files of `part` keep their modification time. Cargo compiles a crate again
    /// when one of its files is newer than its last build, so a fresh copy whose unchanged files
    /// keep their times reuses what the last copy of its kind built, kit included. That is only
    /// sound for files no copy of the kind ever edits: an edited file may have been built last in
    /// its edited form, and the same file, unedited but older, would then pass for built.
    fn keeps_times(self, part: &str) -> bool {
        match self {
            Purpose::Learner => part != "exercises",
            Purpose::Mutants => false,
        }
    }
}

/// Copies the workbook at `root` into `to` (which should not exist yet) for `purpose`, and
/// marks it as that kind of copy.
pub fn workbook(root: &Path, to: &Path, purpose: Purpose) -> anyhow::Result<()> {
    for part in PARTS {
        copy_tree(&root.join(part), &to.join(part), purpose.keeps_times(part))
            .with_context(|| format!("cannot copy {part} to {}", to.display()))?;
    }
    mark_as_copy(to, purpose.version_suffix())
}

/// `from` into `to`, files and folders, leaving out any `target` folder; with `keep_times`,
/// each file keeps its modification time.
fn copy_tree(from: &Path, to: &Path, keep_times: bool) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            if entry.file_name() != "target" {
                copy_tree(&entry.path(), &to.join(entry.file_name()), keep_times)?;
            }
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to)?;
        if keep_times {
            let modified = std::fs::metadata(from)?.modified()?;
            std::fs::File::options()
                .write(true)
                .open(to)?
                .set_modified(modified)?;
        }
        Ok(())
    }
}

/// Gives the copy's own crates a version of their own (`0.1.0-<suffix>`): see [`Purpose`].
fn mark_as_copy(tree: &Path, suffix: &str) -> anyhow::Result<()> {
    let manifest = tree.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let mut section = String::new();
    let mut marked = false;
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.trim().to_string();
        }
        if section == "[workspace.package]" && !marked && line.starts_with("version = \"") {
            out.push_str(line.trim_end().trim_end_matches('"'));
            out.push_str(&format!("-{suffix}\"\n"));
            marked = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    anyhow::ensure!(
        marked,
        "{} has no version in [workspace.package]",
        manifest.display()
    );
    std::fs::write(&manifest, out)?;
    Ok(())
}
