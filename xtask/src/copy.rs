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

/// Copies the workbook at `root` into `to` (which should not exist yet) and marks it as a copy.
pub fn workbook(root: &Path, to: &Path) -> anyhow::Result<()> {
    for part in PARTS {
        copy_tree(&root.join(part), &to.join(part))
            .with_context(|| format!("cannot copy {part} to {}", to.display()))?;
    }
    mark_as_copy(to)
}

/// `from` into `to`, files and folders, leaving out any `target` folder.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            if entry.file_name() != "target" {
                copy_tree(&entry.path(), &to.join(entry.file_name()))?;
            }
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Gives the copy's own crates a version of their own (`0.1.0-copy`). Cargo names build outputs
/// by package, version and path relative to the workspace, so without this a copy building into
/// the workbook's target directory would overwrite the workbook's outputs, and cargo would
/// later take them (built from the copy) as up to date for the workbook.
fn mark_as_copy(tree: &Path) -> anyhow::Result<()> {
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
            out.push_str("-copy\"\n");
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
