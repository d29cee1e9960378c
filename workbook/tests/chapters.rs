//! Every chapter has one shape: its title written once (tasks.toml) and repeated word for word
//! where a learner meets it, its question to think about in one place (its guide section), and
//! its parts named by one convention.

use workbook::tasks::{Task, TaskList};

fn read(rel: &str) -> String {
    let path = workbook::workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tasks() -> Vec<Task> {
    TaskList::here().expect("the task list").tasks
}

/// The guide's section of `task`: from its heading to the next heading of its level or above.
fn guide_section<'g>(guide: &'g str, task: &Task) -> &'g str {
    let heading = format!("### {} (`{}`)\n", task.title, task.exercise);
    let start = guide.find(&heading).unwrap_or_else(|| {
        panic!(
            "docs/guide.md has no heading {:?}: a task's section is headed by its title in \
             tasks.toml and its file",
            heading.trim_end()
        )
    });
    let body = &guide[start + heading.len()..];
    let end = ["\n### ", "\n## "]
        .iter()
        .filter_map(|h| body.find(h))
        .min()
        .unwrap_or(body.len());
    &body[..end]
}

#[test]
fn every_stub_and_solution_opens_with_its_title_from_the_task_list() {
    for task in tasks() {
        for file in [&task.exercise, &task.solution] {
            let first = read(file).lines().next().unwrap_or_default().to_string();
            assert_eq!(
                first,
                format!("//! # {}", task.title),
                "{file} should open with its title as tasks.toml writes it"
            );
        }
    }
}

#[test]
fn every_question_to_think_about_is_in_its_guide_section_alone() {
    let guide = read("docs/guide.md");
    for task in tasks() {
        let section = guide_section(&guide, &task);
        assert_eq!(
            section.matches("**Think about it.**").count(),
            1,
            "the guide's section of {} should end with one question to think about",
            task.name
        );
        let stub = read(&task.exercise);
        let question = stub
            .lines()
            .skip_while(|l| !l.contains("**Think about it.**"))
            .take_while(|l| *l != "//!" && l.starts_with("//!"))
            .any(|l| l.contains('?'));
        assert!(
            !question,
            "{} asks its question to think about itself: the guide's section holds it",
            task.exercise
        );
    }
}

#[test]
fn part_ids_are_kebab_case_and_the_same_function_has_the_same_id_everywhere() {
    let mut seen: Vec<(String, String)> = Vec::new();
    for task in tasks() {
        for part in &task.parts {
            assert!(
                part.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}: part id {:?} is not kebab case",
                task.name,
                part.id
            );
            assert_eq!(
                task.parts.iter().filter(|p| p.id == part.id).count(),
                1,
                "{}: two parts are called {:?}",
                task.name,
                part.id
            );
            // `Type::method` without what tells parts apart: the same function, the same id.
            let function = part
                .todo
                .split(" (")
                .next()
                .unwrap_or(&part.todo)
                .to_string();
            if let Some((_, id)) = seen.iter().find(|(f, _)| *f == function) {
                assert_eq!(
                    id, &part.id,
                    "{}: {function} is part {id:?} elsewhere, {:?} here",
                    task.name, part.id
                );
            }
            seen.push((function, part.id.clone()));
        }
    }
}
