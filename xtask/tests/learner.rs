//! A learner at work, played in a copy of the workbook so that the real `exercises/` are never
//! touched: `cargo xtask check warmup` on the untouched stub, on wrong answers and on a right
//! one, `status` along the way, `watch` in a terminal grading again on save, and `reset`.
//!
//! The copy builds into this workspace's target directory, so only the workbook's own crates
//! are compiled again, not candle. The tests share the copy and take turns.
#![cfg(unix)]

mod book;

use std::process::Command;

use book::{Workbook, workbook};

/// The reference warm-up with one line replaced; fails if the line is gone.
fn warmup_with(book: &Workbook, line: &str, replacement: &str) -> String {
    let right = book.solution("warmup");
    assert!(
        right.contains(line),
        "solutions/src/warmup.rs no longer has `{line}`: update this test"
    );
    right.replacen(line, replacement, 1)
}

/// Losses and steps depend on the floating-point details of the machine; the verdicts do not.
fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        filters => vec![
            (r"eval loss \d+\.\d+ at step \d+", "eval loss [LOSS] at step [STEP]"),
            (r"\(\d+\.\d+ s\)", "([TIME])"),
            // A property's cases are random, and so is the smallest failing one it shrinks to.
            (
                r"(any sizes\n *SelfAttention differs from the reference by )[0-9.e+-]+ for input shape \[[0-9, ]+\], head_dim \d+",
                "${1}[DIFF] for input shape [SHAPE], head_dim [D]",
            ),
            // Where in the checks a failure is reported moves as the checks are edited.
            (r"(checks/tests/\w+\.rs):\d+", "$1:[LINE]"),
            // The inner cargo's progress depends on what was built before.
            (r"(?m)^ +(Compiling|Blocking) .*\n", ""),
        ],
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn check_status_and_watch_through_a_first_session() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let state = state.path();

    // 1. The untouched stub: every check reports the todo!() it hit.
    book.write_exercise("warmup", &book.stub("warmup"));
    let (code, out) = book.run(state, &["check", "warmup"]);
    assert_eq!(code, 1, "{out}");
    snapshot("learner_check_stub", &out);

    // 2. A wrong answer that compiles: generation looks at the start token every time.
    let wrong = warmup_with(
        &book,
        "Tensor::new(&[[tokens[tokens.len() - 1]]], device)?",
        "Tensor::new(&[[tokens[0]]], device)?",
    );
    book.write_exercise("warmup", &wrong);
    let (code, out) = book.run(state, &["check", "warmup"]);
    assert_eq!(code, 1, "{out}");
    snapshot("learner_check_wrong", &out);
    let (_, status) = book.run(state, &["status"]);
    snapshot("learner_status_wrong", &status);

    // 3. `watch` in a terminal: it grades at once, then again when the file is saved.
    let mut watch =
        rexpect::session::spawn_command(book.xtask(state, &["watch", "warmup"]), Some(300_000))
            .expect("start watch in a pseudo-terminal");
    let first = watch
        .exp_string("Watching")
        .expect("watch grades the exercises at once");
    assert!(first.contains("\x1b[2J"), "a terminal gets a clear screen");
    // (rexpect reads the terminal byte by byte, so compare ASCII only.)
    assert!(first.contains("warmup: 4 of 6 checks pass"), "{first}");
    book.write_exercise("warmup", &book.solution("warmup"));
    let second = watch
        .exp_string("Watching")
        .expect("watch grades again after a save");
    assert!(
        second.contains("\x1b[2J"),
        "each run starts on a clean screen"
    );
    assert!(second.contains("warmup: 6 of 6 checks pass"), "{second}");
    assert!(second.contains("Next: task1"), "{second}");
    // Reading the file, or saving it unchanged, grades nothing: the next grade is the one
    // for the next change of content.
    let _ = std::fs::read_to_string(book.exercise("warmup")).unwrap();
    book.write_exercise("warmup", &book.solution("warmup"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    book.write_exercise("warmup", &format!("{}// done\n", book.solution("warmup")));
    let third = watch
        .exp_string("Watching")
        .expect("a grade after a change");
    assert_eq!(third.matches("Checking").count(), 1, "{third}");
    // A save that breaks compilation: one verdict, then quiet until the next change.
    book.write_exercise("warmup", &format!("{}\n}}\n", book.solution("warmup")));
    let broken = watch
        .exp_string("Watching")
        .expect("watch grades the broken file");
    assert!(broken.contains("does not compile"), "{broken}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    book.write_exercise("warmup", &book.solution("warmup"));
    let fixed = watch.exp_string("Watching").expect("a grade after the fix");
    assert_eq!(
        fixed.matches("Checking").count(),
        1,
        "one verdict, then quiet: {fixed}"
    );
    assert!(fixed.contains("warmup: 6 of 6 checks pass"), "{fixed}");
    watch.process.exit().expect("stop watch");
    book.write_exercise("warmup", &book.solution("warmup"));

    // 4. The right answer, graded once more without watch; status remembers it.
    let (code, out) = book.run(state, &["check", "warmup"]);
    assert_eq!(code, 0, "{out}");
    snapshot("learner_check_pass", &out);
    let (_, status) = book.run(state, &["status"]);
    snapshot("learner_status_pass", &status);
}

/// Grades `source` as the learner's warm-up; returns the output, after asserting that every
/// check of the task was reported and that the task failed.
fn grade_fault(book: &Workbook, source: &str) -> String {
    let state = tempfile::tempdir().unwrap();
    book.write_exercise("warmup", source);
    let (code, out) = book.run(state.path(), &["check", "warmup"]);
    assert_eq!(code, 1, "a fault must fail the task:\n{out}");
    let reported = out
        .lines()
        .filter(|l| {
            ["✓ ", "✗ ", "– "]
                .iter()
                .any(|m| l.trim_start().starts_with(m))
        })
        .count();
    assert_eq!(reported, 6, "every check reports a verdict:\n{out}");
    out
}

/// The verdict block of one check: its ✓/✗ line and the indented lines under it.
fn verdict<'a>(out: &'a str, check: &str) -> Vec<&'a str> {
    let mut lines = out.lines().skip_while(|l| !l.ends_with(check));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no verdict for `{check}`:\n{out}"));
    let mut block = vec![head];
    block.extend(lines.take_while(|l| l.starts_with("      ")));
    block
}

#[test]
fn each_learner_fault_is_one_readable_verdict_and_the_other_checks_still_run() {
    let book = workbook();
    let forward = "self.token_embedding.forward(xs)\n";

    // A panic inside forward: the message, and where it came from.
    let out = grade_fault(
        &book,
        &warmup_with(&book, forward, "panic!(\"forward is not finished\")\n"),
    );
    // The first failure in full, with its place; the next in a line.
    let v = verdict(&out, "forward gives one row of logits per token");
    assert!(v[0].contains('✗'), "{out}");
    assert!(
        v.iter().any(|l| l.contains("forward is not finished")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|l| l.contains("exercises/src/warmup.rs")),
        "{v:?}"
    );
    let v = verdict(&out, "forward returns the table row of each token");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[1].contains("forward is not finished"), "{v:?}");

    // A wrong output shape: what came and what was expected.
    let out = grade_fault(
        &book,
        &warmup_with(
            &book,
            forward,
            "self.token_embedding.forward(xs)?.sum_keepdim(2)\n",
        ),
    );
    let v = verdict(&out, "forward gives one row of logits per token");
    assert!(
        v.iter()
            .any(|l| l.contains("returned shape [2, 5, 1], expected [2, 5, 65]")),
        "{v:?}"
    );

    // NaN: the forward checks name it, and the graded training does not run.
    let out = grade_fault(
        &book,
        &warmup_with(
            &book,
            forward,
            "self.token_embedding.forward(xs)?.affine(f64::NAN, 0.0)\n",
        ),
    );
    let v = verdict(&out, "forward returns the table row of each token");
    assert!(v[0].contains('✗'), "{out}");
    let v = verdict(&out, "graded training reaches eval loss below 2.6");
    assert!(
        v[0].contains('–') && v[1].contains("skipped: the checks above must pass first"),
        "{v:?}"
    );

    // A detached forward: the gradient check names the parameter that cannot learn.
    let out = grade_fault(
        &book,
        &warmup_with(
            &book,
            forward,
            "Ok(self.token_embedding.forward(xs)?.detach())\n",
        ),
    );
    let v = verdict(&out, "the embedding receives a gradient");
    assert!(v.iter().any(|l| l.contains("receive no gradient")), "{v:?}");
    assert!(v.iter().any(|l| l.contains("wte.weight")), "{v:?}");
    assert!(verdict(&out, "forward returns the table row of each token")[0].contains('✓'));

    // An endless loop in generate: a time limit, and the forward checks still pass.
    let out = grade_fault(
        &book,
        &warmup_with(&book, "for _ in 1..max_length {", "for _ in 1.. {"),
    );
    let v = verdict(&out, "generate is greedy from the start token");
    assert!(v[0].contains('✗'), "{out}");
    assert!(
        v.iter().any(|l| l.contains("did not finish within 5 s")),
        "{v:?}"
    );
    assert!(verdict(&out, "forward gives one row of logits per token")[0].contains('✓'));
}

#[test]
fn an_endless_loop_without_a_time_limit_of_its_own_is_stopped() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    // Task 4's Adam never returns: no check of Task 4 guards it with a time limit of its own.
    let looping = book.solution("task4").replacen(
        "        self.t += 1;\n",
        "        self.t += 1;\n        while self.t > 0 {\n            std::hint::black_box(&self.t);\n        }\n",
        1,
    );
    assert_ne!(looping, book.solution("task4"), "the loop went in");
    book.write_exercise("task4", &looping);
    let out = book
        .xtask(state.path(), &["check", "task4"])
        .env("MINIGPT_CHECK_LIMIT", "5")
        .output()
        .expect("run xtask");
    book.write_exercise("task4", &book.stub("task4"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    let v = verdict(&text, "adam matches optax over ten steps");
    assert!(v[0].contains('✗'), "{text}");
    assert!(
        v.iter().any(|l| l.contains("did not finish within 5 s")
            && l.contains("a loop in your code that never ends")),
        "{v:?}"
    );
    let v = verdict(
        &text,
        "cross entropy matches the reference on random logits",
    );
    assert!(v[0].contains('✓'), "{text}");
    let v = verdict(
        &text,
        "graded training with your step reaches eval loss below 1.9",
    );
    assert!(v[0].contains('–'), "{text}");
    assert!(text.contains("Next: "), "{text}");
}

#[test]
fn reset_restores_the_stub_and_keeps_the_learners_file() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let mine = format!("{}// my own notes\n", book.solution("warmup"));
    book.write_exercise("warmup", &mine);
    let (code, out) = book.run(state.path(), &["reset", "warmup", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(book.read("exercises/src/warmup.rs"), book.stub("warmup"));
    let backup = out
        .split("Your version is in ")
        .nth(1)
        .and_then(|rest| rest.split(".rs.").next())
        .map(|p| format!("{p}.rs"))
        .unwrap_or_else(|| panic!("reset names its backup:\n{out}"));
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), mine);
    assert!(out.contains("Next: cargo xtask check warmup"), "{out}");
}

/// The ✓, ✗ and – lines of an output.
fn verdict_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| {
            ["✓ ", "✗ ", "– "]
                .iter()
                .any(|m| l.trim_start().starts_with(m))
        })
        .collect()
}

#[test]
fn a_compile_error_is_one_verdict_and_every_other_command_still_works() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let stub = book.stub("warmup");
    let syntax = stub.replacen(
        "pub struct SimpleDecoder {",
        "pub struct SimpleDecoder { {",
        1,
    );
    let types = stub.replacen(
        "    fn forward(&self, xs: &Tensor) -> Result<Tensor> {\n",
        "    fn forward(&self, xs: &Tensor) -> Result<Tensor> {\n        let y: u32 = xs.clone();\n",
        1,
    );
    // An unclosed brace is reported where the file ends; the type error on the line it is on.
    let last_line = stub.lines().count();
    let type_line = types
        .lines()
        .position(|l| l.contains("let y: u32"))
        .map_or(0, |i| i + 1);
    for (kind, broken, line) in [("syntax", syntax, last_line), ("type", types, type_line)] {
        assert_ne!(
            broken, stub,
            "the {kind} error was not inserted: update this test"
        );
        book.write_exercise("warmup", &broken);
        let (code, out) = book.run(state, &["check", "warmup"]);
        assert_eq!(code, 1, "{out}");
        let verdicts = verdict_lines(&out);
        assert_eq!(verdicts.len(), 1, "one verdict for a {kind} error:\n{out}");
        assert!(
            verdicts[0].contains(&format!(
                "exercises/src/warmup.rs does not compile (line {line})"
            )),
            "{out}"
        );
        assert!(
            out.contains("error"),
            "the compiler's errors follow:\n{out}"
        );
        assert!(out.contains("Next: fix the compile errors above"), "{out}");
        if kind == "syntax" {
            snapshot("learner_check_compile_error", &out);
        }
        // The commands that need no model work while the file does not compile.
        for args in [
            &["hint", "warmup"][..],
            &["status"],
            &["solution", "warmup"],
        ] {
            let (code, out) = book.run(state, args);
            assert_eq!(code, 0, "{args:?} with a {kind} error:\n{out}");
        }
        let (_, status) = book.run(state, &["status"]);
        assert!(status.contains("does not compile"), "{status}");
        // A model command says the file does not compile, and what to do.
        let (code, out) = book.run(state, &["train", "warmup", "--steps", "1"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("exercises/src/warmup.rs does not compile") && out.contains("Next:"),
            "{out}"
        );
        let (code, out) = book.run(state, &["reset", "warmup", "--yes"]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = book.run(state, &["check", "warmup"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("not yet implemented"), "{out}");
    }
}

#[test]
fn one_mistake_gives_one_headline_without_plumbing() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let right = book.solution("task2");
    let sqrt = "(self.head_dim as f64).sqrt()";
    assert!(
        right.contains(sqrt),
        "solutions/src/task2.rs changed: update this test"
    );
    book.write_exercise("task2", &right.replacen(sqrt, "(self.head_dim as f64)", 1));
    let (code, out) = book.run(state.path(), &["check", "task2"]);
    book.write_exercise("task2", &book.stub("task2"));
    assert_eq!(code, 1, "{out}");
    let failed: Vec<&str> = verdict_lines(&out)
        .into_iter()
        .filter(|l| l.contains('✗'))
        .collect();
    assert!(failed.len() > 1, "{out}");
    assert!(
        out.contains("it matches scores divided by head_dim"),
        "the first failure in full:\n{out}"
    );
    for plumbing in [
        "called `Result::unwrap()`",
        "cargo insta",
        "Snapshot Summary",
        ".cargo/registry",
        "PROPTEST_MAX_SHRINK_ITERS",
        "minimal failing input",
        "Case failed",
    ] {
        assert!(!out.contains(plumbing), "{plumbing}:\n{out}");
    }
    snapshot("learner_check_task2_wrong", &out);
}

#[test]
fn a_wrong_answer_does_not_pay_for_the_training() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let right = book.solution("task3");
    let scale = "kit::ops::causal_softmax(&scores, 1.0 / (self.head_dim as f64).sqrt())";
    assert!(
        right.contains(scale),
        "solutions/src/task3.rs changed: update this test"
    );
    // The scores scaled twice: once by hand, once by the fused op.
    let twice = "kit::ops::causal_softmax(&(scores / (self.head_dim as f64).sqrt())?, 1.0 / (self.head_dim as f64).sqrt())";
    book.write_exercise("task3", &right.replacen(scale, twice, 1));
    let started = std::time::Instant::now();
    let (code, out) = book.run(state.path(), &["check", "task3"]);
    book.write_exercise("task3", &book.stub("task3"));
    assert_eq!(code, 1, "{out}");
    let training = verdict(
        &out,
        "graded training with einsum attention reaches eval loss below 1.9",
    );
    assert!(
        training[0].contains('–')
            && training[1].contains("skipped: the checks above must pass first"),
        "{out}"
    );
    assert!(
        !out.contains(" at step "),
        "no training ran ({:?}):\n{out}",
        started.elapsed()
    );
}

#[test]
fn next_reads_the_record_of_every_task() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("state.json"),
        r#"{"hints_shown": {}, "results": {"warmup": {"passed": 6, "total": 6}, "task1": {"passed": 7, "total": 10}, "task3": {"passed": 6, "total": 6}}}"#,
    )
    .unwrap();
    book.write_exercise("task2", &book.solution("task2"));
    let (code, out) = book.run(state.path(), &["check", "task2"]);
    book.write_exercise("task2", &book.stub("task2"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Next: task1 is not passing yet (7 of 10 checks at your last check): cargo xtask check task1"),
        "{out}"
    );
    assert!(!out.contains("Every task passes"), "{out}");
}

/// Verdicts come as each check ends: on the reference Task 1, the quick checks' verdicts are
/// printed while the graded training still runs. The test stops the training once that is
/// clear: ten seconds after the last quick verdict, with no verdict of the training yet.
#[test]
fn verdicts_stream_while_the_training_runs() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc::{RecvTimeoutError, channel};
    use std::time::Duration;
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let mut child = book
        .xtask(state.path(), &["check", "task1", "--solutions"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, arriving) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut quick = Vec::new();
    loop {
        match arriving.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                if verdict_lines(&line).len() == 1 {
                    assert!(
                        !line.contains("graded training"),
                        "the training's verdict came less than 10 s after the quick ones: \
                         {quick:?}, then {line}"
                    );
                    quick.push(line);
                }
            }
            // Ten seconds of silence after the quick verdicts: the training is running.
            Err(RecvTimeoutError::Timeout) if quick.len() >= 5 => break,
            // Still building.
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("check ended early: {quick:?}"),
        }
    }
    let group = format!("-{}", child.id());
    let kill = Command::new("kill").args(["-TERM", "--", &group]).status();
    assert!(kill.unwrap().success());
    child.wait().unwrap();
    assert!(quick.iter().all(|l| l.contains('✓')), "{quick:?}");
}

/// Progress kept by earlier versions in `target/minigpt/` moves to `.minigpt/`, where
/// `cargo clean` cannot reach it.
#[test]
fn progress_moves_out_of_target_on_first_use() {
    let book = workbook();
    let root = book.dir.path();
    let old = root.join("target").join("minigpt");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("state.json"),
        r#"{"hints_shown": {}, "results": {"warmup": {"passed": 6, "total": 6}}}"#,
    )
    .unwrap();
    let out = book
        .xtask(root, &["status"])
        .env_remove("MINIGPT_STATE_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (moved, left) = (root.join(".minigpt/state.json").is_file(), old.exists());
    let _ = std::fs::remove_dir_all(root.join(".minigpt"));
    let _ = std::fs::remove_dir_all(root.join("target"));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("✓ pass (6 checks)"), "{text}");
    assert!(
        moved && !left,
        "the old folder is moved to .minigpt/, not copied"
    );
}

#[derive(serde::Deserialize)]
struct Mistake {
    task: String,
    name: String,
    edits: Vec<(String, String)>,
}

#[derive(serde::Deserialize)]
struct Mistakes {
    mistake: Vec<Mistake>,
}

/// The reference solution with the mistake called `name` in xtask/mutants.toml made in it:
/// its task, and the source.
fn with_mistake(book: &Workbook, name: &str) -> (String, String) {
    let all: Mistakes = toml::from_str(&book.read("xtask/mutants.toml")).unwrap();
    let m = all
        .mistake
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("xtask/mutants.toml has no mistake `{name}`"));
    let mut source = book.solution(&m.task);
    for (find, replace) in &m.edits {
        source = source.replace(find, replace);
    }
    (m.task.clone(), source)
}

/// Learner-like mistakes from xtask/mutants.toml, each written into the learner's file: the
/// first failing check's message names what went wrong, not only that something did.
#[test]
fn a_mistake_gets_a_headline_that_names_it() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let mut shown = String::new();
    for name in [
        "ln_2 before the attention and ln_1 before the feed-forward layer",
        "no position embeddings",
        "mask off by one: a position sees one step ahead",
        "softmax over the query axis instead of the key axis",
        "heads merged in the wrong order",
        "scores scaled twice: divided by √h, then by causal_softmax's scale too",
        "cross-entropy without the max subtracted: exp overflows on large logits",
        "Adam without bias correction",
        "dx without the term that comes from the variance",
        "each row overwrites dgamma and dbeta instead of adding to them",
        "new tokens embedded at positions 0..T instead of S..S+T",
        "the attention of a step ignores the cached keys and values",
        "RMSNorm subtracts the row's mean",
        "SwiGLU with ReLU in place of SiLU",
    ] {
        let (task, source) = with_mistake(&book, name);
        book.write_exercise(&task, &source);
        let (code, out) = book.run(state.path(), &["check", &task]);
        book.write_exercise(&task, &book.stub(&task));
        assert_eq!(code, 1, "{out}");
        // The first ✗ and the first line of its message.
        let first = out
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("✗ "))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        shown.push_str(&format!("{task} / {name}:\n{first}\n\n"));
    }
    insta::with_settings!({
        filters => vec![
            (r"by [0-9.]+e-?[0-9]+", "by [DIFF]"),
            // A property's cases are random: the chunks and lengths it failed on.
            (r"in steps of \[[0-9, ]+\]", "in steps of [CHUNKS]"),
            (r"with \d+ positions? cached", "with [S] positions cached"),
            (r"over all \d+", "over all [T]"),
            (r"batch row \d+, position \d+", "batch row [B], position [T]"),
        ],
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("learner_mistake_headlines", shown);
    });
}

/// A mistake inside the model fails the checks of the model; `generate`, graded against the
/// learner's own model, still passes.
#[test]
fn a_mistake_in_the_model_is_not_blamed_on_generate() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let (task, source) = with_mistake(
        &book,
        "no residual connection around the feed-forward layer",
    );
    book.write_exercise(&task, &source);
    let (code, out) = book.run(state.path(), &["check", &task]);
    book.write_exercise(&task, &book.stub(&task));
    assert_eq!(code, 1, "{out}");
    assert!(
        verdict(&out, "minigpt computes what the architecture says")[0].contains('✗'),
        "{out}"
    );
    for generate in [
        "generate extends the prompt with tokens of the vocabulary",
        "generate samples from the last position",
        "generate refuses an empty prompt",
    ] {
        assert!(
            verdict(&out, generate)[0].contains('✓'),
            "{generate}:\n{out}"
        );
    }
}
