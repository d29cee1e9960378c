//! One home for every answer: a part's last hint is its code in the reference solution, and a
//! learner who pastes the last hint of every part of a task ends with that reference, word for
//! word (which CI proves passes every check).

use workbook::answers;
use workbook::tasks::TaskList;

fn read(rel: &str) -> String {
    let path = workbook::workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_task_assembled_from_its_last_hints_is_its_reference_solution() {
    let list = TaskList::here().expect("the task list");
    for task in &list.tasks {
        let (stub, solution) = (read(&task.exercise), read(&task.solution));
        let todos: Vec<&str> = task.parts.iter().map(|p| p.todo.as_str()).collect();
        let assembled = answers::assemble(&stub, &solution, &todos)
            .unwrap_or_else(|e| panic!("{}: {e}", task.name));
        if assembled != solution {
            let line = assembled
                .lines()
                .zip(solution.lines())
                .position(|(a, b)| a != b)
                .map_or(
                    assembled.lines().count().min(solution.lines().count()),
                    |n| n,
                );
            panic!(
                "{}: the stub with every part's code differs from {} from line {}: either a body \
                 that no part names differs, or the files differ outside the bodies\n  stub + hints: {:?}\n  solution:     {:?}",
                task.name,
                task.solution,
                line + 1,
                assembled.lines().nth(line).unwrap_or(""),
                solution.lines().nth(line).unwrap_or(""),
            );
        }
    }
}

#[test]
fn every_parts_code_is_a_function_body_without_a_todo() {
    let list = TaskList::here().expect("the task list");
    for task in &list.tasks {
        let solution = read(&task.solution);
        for part in &task.parts {
            let code = part
                .code(&solution)
                .unwrap_or_else(|e| panic!("{} part {}: {e}", task.name, part.id));
            assert!(
                !code.trim().is_empty() && !code.contains("todo!("),
                "{} part {}: {code}",
                task.name,
                part.id
            );
        }
    }
}
