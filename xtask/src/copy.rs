//! A copy of the workbook that builds beside it: `cargo xtask mutants` mutates one, and the
//! learner tests work in one, so that the workbook's own files are never touched.

use anyhow::Context as _;
use std::path::Path;

/// What a copy needs: the workspace without its build outputs, runs and corpus.
pub const PARTS: [&str; 16] = [
    "Cargo.toml",
    "Cargo.lock",
    ".cargo",
    "tasks.toml",
    "common",
    "workbook",
    "kit",
    "reference",
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
/// workbook's build outputs nor take another kind's for its own. The one exception is what a
/// learner copy shares with the workbook: see [`Purpose::shares`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// For the tests that play a learner: they edit `exercises/` and nothing else.
    Learner,
    /// For `cargo xtask mutants`, which edits the reference solutions.
    Mutants,
    /// For the tests that play a maintainer adding a task: they edit the task list and the
    /// files of exercises/, solutions/ and checks/.
    Author,
}

impl Purpose {
    fn version_suffix(self) -> &'static str {
        match self {
            Purpose::Learner => "copy",
            Purpose::Mutants => "mutants",
            Purpose::Author => "author",
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
            Purpose::Author => !["tasks.toml", "exercises", "solutions", "checks"].contains(&part),
            Purpose::Mutants => false,
        }
    }

    /// The crates whose copies keep the workbook's version, and so take the workbook's own
    /// builds of them instead of compiling them again (kit at opt-level 3 is most of a copy's
    /// first build). That is sound for a learner copy: these crates are never edited there, and
    /// their files keep their times. When the workbook has built them already (`cargo test`
    /// builds every crate before it runs a test), cargo finds those builds up to date and never
    /// writes them from the copy, whose folder will be gone.
    fn shares(self) -> &'static [&'static str] {
        match self {
            Purpose::Learner | Purpose::Author => {
                &["common", "workbook", "kit", "reference", "workspace-hack"]
            }
            Purpose::Mutants => &[],
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
    let version = mark_as_copy(to, purpose.version_suffix())?;
    for krate in purpose.shares() {
        keep_version(&to.join(krate).join("Cargo.toml"), &version)
            .with_context(|| format!("cannot give the copy's {krate} version {version}"))?;
    }
    Ok(())
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
            set_modified(to, std::fs::metadata(from)?.modified()?)?;
        }
        Ok(())
    }
}

/// Gives the copy's own crates a version of their own (`0.1.0-<suffix>`): see [`Purpose`].
/// Returns the workbook's version.
fn mark_as_copy(tree: &Path, suffix: &str) -> anyhow::Result<String> {
    let manifest = tree.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let mut section = String::new();
    let mut version = None;
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.trim().to_string();
        }
        let value = line
            .strip_prefix("version = \"")
            .and_then(|v| v.trim_end().strip_suffix('"'));
        match value {
            Some(value) if section == "[workspace.package]" && version.is_none() => {
                out.push_str(&format!("version = \"{value}-{suffix}\"\n"));
                version = Some(value.to_string());
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let version = version.with_context(|| {
        format!(
            "{} has no version in [workspace.package]",
            manifest.display()
        )
    })?;
    std::fs::write(&manifest, out)?;
    Ok(version)
}

/// Gives the crate of `manifest` the version `version` in place of the workspace's, keeping the
/// file's modification time: cargo runs a crate's build script again when one of the crate's
/// files is newer than its last run.
fn keep_version(manifest: &Path, version: &str) -> anyhow::Result<()> {
    const INHERITED: &str = "version.workspace = true";
    let modified = std::fs::metadata(manifest)?.modified()?;
    let text = std::fs::read_to_string(manifest)?;
    anyhow::ensure!(
        text.lines().any(|line| line.trim() == INHERITED),
        "{} does not take its version from the workspace",
        manifest.display()
    );
    let text: String = text
        .lines()
        .map(|line| match line.trim() {
            INHERITED => format!("version = \"{version}\"\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(manifest, text)?;
    set_modified(manifest, modified)?;
    Ok(())
}

fn set_modified(path: &Path, time: std::time::SystemTime) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_copy_gets_its_own_version_and_a_shared_crate_keeps_the_workbooks() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(
            tree.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"kit\"]\n\n[workspace.package]\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let kit = tree.path().join("kit").join("Cargo.toml");
        std::fs::create_dir_all(kit.parent().unwrap()).unwrap();
        std::fs::write(
            &kit,
            "[package]\nname = \"kit\"\nversion.workspace = true\n",
        )
        .unwrap();
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        set_modified(&kit, long_ago).unwrap();

        let version = mark_as_copy(tree.path(), "copy").unwrap();
        keep_version(&kit, &version).unwrap();

        assert_eq!(version, "0.1.0");
        let workspace = std::fs::read_to_string(tree.path().join("Cargo.toml")).unwrap();
        assert!(
            workspace.contains("\nversion = \"0.1.0-copy\"\n"),
            "{workspace}"
        );
        let shared = std::fs::read_to_string(&kit).unwrap();
        assert_eq!(shared, "[package]\nname = \"kit\"\nversion = \"0.1.0\"\n");
        let modified = std::fs::metadata(&kit).unwrap().modified().unwrap();
        assert_eq!(modified, long_ago, "the manifest keeps its time");
        // Twice is an error, not a silent second edit.
        assert!(keep_version(&kit, &version).is_err());
    }
}
