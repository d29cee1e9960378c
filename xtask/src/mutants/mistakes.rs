//! The hand-written mistakes of `xtask/mutants.toml`: learner-like errors, each applied to the
//! copy's reference solution in turn, which some check must catch.

use super::workbench::Workbench;
use anyhow::Context;
use std::path::Path;
use std::process::Stdio;
use workbook::style;
use workbook::tasks::TaskList;

/// One learner-like mistake from `xtask/mutants.toml`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Mistake {
    pub task: String,
    pub name: String,
    edits: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
struct MistakeFile {
    mistake: Vec<Mistake>,
}

pub(super) fn load_mistakes(root: &Path) -> anyhow::Result<Vec<Mistake>> {
    let path = root.join("xtask").join("mutants.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file: MistakeFile =
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    Ok(file.mistake)
}

/// Applies one mistake to the copy's reference solution, runs the task's checks, puts the file
/// back, and returns the names of the checks that failed.
fn try_mistake(bench: &Workbench, list: &TaskList, m: &Mistake) -> anyhow::Result<Vec<String>> {
    let task = list
        .get(&m.task)
        .map_err(|e| anyhow::anyhow!("xtask/mutants.toml, mistake `{}`: {e}", m.name))?;
    let solution = &task.solution;
    let file = bench.tree.join(solution);
    let original = std::fs::read_to_string(&file)?;
    let mut broken = original.clone();
    for (find, replace) in &m.edits {
        anyhow::ensure!(
            broken.contains(find.as_str()),
            "mistake `{}`: {solution} has no `{find}`; update xtask/mutants.toml",
            m.name,
        );
        broken = broken.replace(find.as_str(), replace);
    }
    std::fs::write(&file, &broken)?;
    let out = bench
        .checks(task)
        .args(["--format", "pretty", "--color", "never"])
        .stdin(Stdio::null())
        .output();
    std::fs::write(&file, &original)?;
    let out = out.context("cannot run cargo test")?;
    let verdicts = crate::verdict::parse_libtest(&String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(
        !verdicts.is_empty(),
        "mistake `{}` does not compile, so it tests nothing; fix xtask/mutants.toml:\n{}",
        m.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(verdicts
        .into_iter()
        .filter(|v| !v.passed())
        .map(|v| v.name)
        .collect())
}

/// Tries each mistake, printing as it goes; returns each with the checks that caught it.
pub(super) fn try_mistakes<'m>(
    bench: &Workbench,
    list: &TaskList,
    mistakes: &'m [Mistake],
) -> anyhow::Result<Vec<(&'m Mistake, Vec<String>)>> {
    println!(
        "\n{} the hand-written mistakes of xtask/mutants.toml",
        style::bold("Trying")
    );
    let mut tried = Vec::new();
    for m in mistakes {
        let caught_by = try_mistake(bench, list, m)?;
        if caught_by.is_empty() {
            let line = format!("{}: {} — no check fails", m.task, m.name);
            println!("  {} {line}", style::bad("✗"));
        } else {
            println!("  {} {}: {}", style::ok("✓"), m.task, m.name);
            println!("      caught by: {}", caught_by.join(", "));
        }
        tried.push((m, caught_by));
    }
    Ok(tried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use workbook::workspace_root;

    #[test]
    fn every_hand_written_mistake_applies_to_its_reference_solution() {
        let root = workspace_root();
        let list = TaskList::load(&root).unwrap();
        let mistakes = load_mistakes(&root).unwrap();
        for task in &list.tasks {
            assert!(
                mistakes.iter().filter(|m| m.task == task.name).count() >= 4,
                "{}: at least four mistakes",
                task.name
            );
        }
        for m in &mistakes {
            let task = list
                .get(&m.task)
                .unwrap_or_else(|_| panic!("`{}` names an unknown task {}", m.name, m.task));
            let file = root.join(&task.solution);
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|_| panic!("`{}` names an unknown task {}", m.name, m.task));
            assert!(!m.edits.is_empty(), "`{}` changes nothing", m.name);
            for (find, replace) in &m.edits {
                assert!(
                    text.contains(find.as_str()),
                    "`{}`: no `{find}` in {}",
                    m.name,
                    m.task
                );
                assert_ne!(find, replace, "`{}` changes nothing", m.name);
            }
        }
    }
}
