//! A task added the way the task list promises, in a copy of the workbook: one entry in
//! tasks.toml and the task's files (its exercise, its solution and its checks, with the `pub mod`
//! line that makes each file part of its crate). Every command that takes a task then knows
//! it, with no change to the commands' code.
#![cfg(unix)]

mod book;

use book::{Purpose, Workbook, says};

const STUB: &str = r#"//! # Extra: doubling
//!
//! A task added by a test: twice its input, element by element.

use candle_core::{Result, Tensor};

/// Twice `x`, element by element.
pub fn double(x: &Tensor) -> Result<Tensor> {
    // TODO: every element of x times two.
    todo!("double: every element of x times two")
}
"#;

const SOLUTION: &str = r#"//! # Extra: doubling
//!
//! A task added by a test: twice its input, element by element.

use candle_core::{Result, Tensor};

/// Twice `x`, element by element.
pub fn double(x: &Tensor) -> Result<Tensor> {
    x.affine(2.0, 0.0)
}
"#;

const CHECKS: &str = r#"//! Extra checks: doubling.

use candle_core::{Device, Tensor};
use checks::learner::extra::double;

#[test]
fn double_doubles_every_element() {
    let x = Tensor::new(&[1f32, -2.0, 3.5], &Device::Cpu).unwrap();
    let y = double(&x).expect("double").to_vec1::<f32>().unwrap();
    assert_eq!(y, vec![2.0, -4.0, 7.0], "double([1, -2, 3.5])");
}

#[test]
fn double_keeps_the_shape() {
    let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(double(&x).expect("double").dims(), &[2, 3]);
}
"#;

const ENTRY: &str = r#"
[[task]]
name = "extra"
title = "Extra: doubling"
exercise = "exercises/src/extra.rs"
solution = "solutions/src/extra.rs"
checks = "checks/tests/extra.rs"

[[task.part]]
id = "double"
todo = "double"
hints = ["Every element, times two."]
"#;

#[test]
fn a_task_added_to_the_list_works_with_every_command() {
    let book = Workbook::new(Purpose::Author);
    let root = book.dir.path();
    let write = |rel: &str, text: &str| std::fs::write(root.join(rel), text).unwrap();
    let append = |rel: &str, text: &str| {
        let old = std::fs::read_to_string(root.join(rel)).unwrap();
        std::fs::write(root.join(rel), old + text).unwrap();
    };
    write("exercises/src/extra.rs", STUB);
    write("solutions/src/extra.rs", SOLUTION);
    write("checks/tests/extra.rs", CHECKS);
    append("exercises/src/lib.rs", "pub mod extra;\n");
    append("solutions/src/lib.rs", "pub mod extra;\n");
    append("tasks.toml", ENTRY);
    // The task ships with the workbook: `reset` takes its stub from git.
    book.commit("a new task");
    let state = tempfile::tempdir().unwrap();
    let state = state.path();

    let todo = "not yet implemented: double: every element of x times two";
    let stub = book.run(state, &["check", "extra"]);
    says(stub, 1, &[todo, "extra: 0 of 2 checks pass"]);
    let reference = book.run(state, &["check", "extra", "--solutions"]);
    says(reference, 0, &["extra: 2 of 2 checks pass"]);

    let hint = "Extra: doubling (exercises/src/extra.rs), hint 1 of 2";
    let first_hint = book.run(state, &["hint", "extra"]);
    says(first_hint, 0, &[hint, "Every element, times two."]);

    let out = says(book.run(state, &["status"]), 0, &[]);
    let row = out
        .lines()
        .find(|l| l.starts_with("extra "))
        .unwrap_or_else(|| panic!("no row for extra:\n{out}"));
    assert!(
        row.contains("Extra: doubling") && row.contains("0 of 2 checks pass"),
        "{row}"
    );

    book.write_exercise("extra", SOLUTION);
    says(book.run(state, &["check", "extra"]), 0, &[]);
    let solution = book.run(state, &["solution", "extra"]);
    says(solution, 0, &["is the same as the reference"]);

    says(book.run(state, &["reset", "extra", "--yes"]), 0, &[]);
    assert_eq!(book.read("exercises/src/extra.rs"), STUB);
    let solution = book.run(state, &["solution", "extra"]);
    says(solution, 0, &["+    x.affine(2.0, 0.0)"]);

    // A name the list does not have is refused with the names it has, the new one among them.
    says(book.run(state, &["hint", "extra2"]), 2, &[" or extra"]);
}
