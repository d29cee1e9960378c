//! A learner at work, played in a copy of the workbook so that the real `exercises/` are never
//! touched: `cargo xtask check warmup` on the untouched stub, on wrong answers and on a right
//! one, `status` along the way, `watch` in a terminal grading again on save, and `reset`.
//!
//! The copy builds into this workspace's target directory, so only the workbook's own crates
//! are compiled again, not candle. The tests share the copy and take turns.
#![cfg(unix)]

mod book;

use book::{HUNG, Workbook, workbook};
#[cfg(target_os = "linux")]
use notify_debouncer_mini::notify::{
    self,
    event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode},
};
use std::path::Path;
#[cfg(target_os = "linux")]
use std::path::PathBuf;
#[cfg(target_os = "linux")]
use std::sync::mpsc::{Receiver, channel};

/// The reference solution of `task` with `line` replaced; fails if the line is gone.
fn solution_with(book: &Workbook, task: &str, line: &str, replacement: &str) -> String {
    let right = book.solution(task);
    assert!(
        right.contains(line),
        "solutions/src/{task}.rs no longer has `{line}`: update this test"
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
    let last = "Tensor::new(&[[tokens[tokens.len() - 1]]], device)?";
    let first = "Tensor::new(&[[tokens[0]]], device)?";
    book.write_exercise("warmup", &solution_with(&book, "warmup", last, first));
    check_then_status(&book, state, 1, "wrong");

    // 3. `watch` in a terminal (on Linux, which reports the opens of a file that show when
    // watch has looked at a save).
    #[cfg(target_os = "linux")]
    watch_grades_each_change_of_content(&book, state);

    // 4. The right answer, graded once more without watch; status remembers it.
    check_then_status(&book, state, 0, "pass");
}

/// `cargo xtask check warmup`, which must exit with `code`, then `status`: their outputs
/// snapshotted as `learner_check_{name}` and `learner_status_{name}`.
fn check_then_status(book: &Workbook, state: &Path, code: i32, name: &str) {
    let (got, out) = book.run(state, &["check", "warmup"]);
    assert_eq!(got, code, "{out}");
    snapshot(&format!("learner_check_{name}"), &out);
    let (_, status) = book.run(state, &["status"]);
    snapshot(&format!("learner_status_{name}"), &status);
}

/// `cargo xtask watch warmup` on the wrong answer of a first session: it grades at once, then
/// again for each save that changes the file, and for nothing else.
#[cfg(target_os = "linux")]
fn watch_grades_each_change_of_content(book: &Workbook, state: &Path) {
    let mut watch = Watching::start(book, state);
    let first = watch.next_screen("watch grades the exercises at once");
    assert!(first.contains("\x1b[2J"), "a terminal gets a clear screen");
    // (rexpect reads the terminal byte by byte, so compare ASCII only.)
    assert!(first.contains("warmup: 4 of 6 checks pass"), "{first}");
    watch.save(&book.solution("warmup"));
    let second = watch.next_screen("watch grades again after a save");
    assert!(
        second.contains("\x1b[2J"),
        "each run starts on a clean screen"
    );
    assert!(second.contains("warmup: 6 of 6 checks pass"), "{second}");
    assert!(second.contains("Next: task1"), "{second}");
    // Reading the file, or saving it unchanged, grades nothing: the next grade is the one
    // for the next change of content.
    let _ = std::fs::read_to_string(book.exercise("warmup")).unwrap();
    watch.save_and_wait_until_opened(&book.solution("warmup"));
    watch.save(&format!("{}// done\n", book.solution("warmup")));
    let third = watch.next_screen("a grade after a change");
    assert_eq!(third.matches("Checking").count(), 1, "{third}");
    // A save that breaks compilation: one verdict, then quiet until the next change.
    let unbuildable = format!("{}\n}}\n", book.solution("warmup"));
    watch.save(&unbuildable);
    let broken = watch.next_screen("watch grades the broken file");
    assert!(broken.contains("does not compile"), "{broken}");
    watch.save_and_wait_until_opened(&unbuildable);
    watch.save(&book.solution("warmup"));
    let fixed = watch.next_screen("a grade after the fix");
    assert_eq!(
        fixed.matches("Checking").count(),
        1,
        "one verdict, then quiet: {fixed}"
    );
    assert!(fixed.contains("warmup: 6 of 6 checks pass"), "{fixed}");
    // A grade that was not for a change would have pushed one screen past the last.
    let rest = watch.stop(&book.solution("warmup"));
    assert!(!rest.contains("Checking"), "a grade for no change: {rest}");
}

/// `cargo xtask watch warmup` in a terminal, as a learner runs it, and the opens of the
/// learner's file, which tell the test when watch has looked at a save: whatever the speed
/// of the machine, a save is followed by the next one only once watch has seen it.
#[cfg(target_os = "linux")]
struct Watching {
    terminal: rexpect::session::PtySession,
    file: PathBuf,
    /// What happens to the learner's file and to the files in `marks`, in the order it happened.
    events: Receiver<notify::Result<notify::Event>>,
    _watcher: notify::RecommendedWatcher,
    /// A folder of the test's own, where a file written marks a point in `events`.
    marks: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl Watching {
    fn start(book: &Workbook, state: &Path) -> Self {
        use notify::Watcher as _;
        let (file, marks) = (book.exercise("warmup"), tempfile::tempdir().unwrap());
        let (tx, events) = channel();
        let mut watcher = notify::recommended_watcher(tx).expect("watch the files");
        for dir in [file.parent().unwrap(), marks.path()] {
            watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .expect("watch the files");
        }
        let command = book.xtask(state, &["watch", "warmup"]);
        let terminal = rexpect::session::spawn_command(command, Some(HUNG.as_millis() as u64))
            .expect("start watch in a pseudo-terminal");
        Watching {
            terminal,
            file,
            events,
            _watcher: watcher,
            marks,
        }
    }

    /// The screen up to watch's next "Watching" line: the grade of one save.
    fn next_screen(&mut self, what: &str) -> String {
        self.terminal
            .exp_string("Watching")
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Saves `text` as the learner's file the way many editors do: written beside it, then
    /// renamed over it, so that watch, which may be reading the file at any time, never reads
    /// half a save.
    fn save(&self, text: &str) {
        let beside = self.file.with_extension("rs.saving");
        std::fs::write(&beside, text).unwrap();
        std::fs::rename(&beside, &self.file).unwrap();
    }

    /// Saves `text` and waits until something opens the file after the save: watch, which has
    /// then begun to read what was saved, to decide whether to grade. (Linux reports every open
    /// of a file; not every kernel reports the close of one opened to read.)
    fn save_and_wait_until_opened(&self, text: &str) {
        // Past every event so far, so that the next save reported is this one.
        let mark = self.marks.path().join("mark");
        std::fs::write(&mark, "").unwrap();
        self.wait_for(
            &mark,
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        );
        self.save(text);
        self.wait_for(
            &self.file,
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        );
        self.wait_for(
            &self.file,
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
        );
    }

    /// The next event of `kind` on `file`.
    fn wait_for(&self, file: &Path, kind: EventKind) {
        loop {
            let event = match self.events.recv_timeout(HUNG) {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => panic!("watching the files: {e}"),
                Err(e) => panic!("no {kind:?} on {}: {e}", file.display()),
            };
            if event.kind == kind && event.paths.iter().any(|p| p == file) {
                return;
            }
        }
    }

    /// Stops watch once every grade it had decided on has begun; returns what it printed after
    /// the last screen. `text` is the file as it is: saved again and opened after, twice, so
    /// that whatever watch was deciding at the first open has begun by the second.
    fn stop(mut self, text: &str) -> String {
        self.save_and_wait_until_opened(text);
        self.save_and_wait_until_opened(text);
        self.terminal.process.exit().expect("stop watch");
        self.terminal.exp_eof().expect("watch's last words")
    }
}

/// Grades the reference warm-up with `line` replaced as the learner's; returns the output,
/// after asserting that every check of the task was reported and that the task failed.
fn grade_fault(book: &Workbook, line: &str, replacement: &str) -> String {
    let state = tempfile::tempdir().unwrap();
    book.write_exercise("warmup", &solution_with(book, "warmup", line, replacement));
    let (code, out) = book.run(state.path(), &["check", "warmup"]);
    assert_eq!(code, 1, "a fault must fail the task:\n{out}");
    assert_eq!(
        verdict_lines(&out).len(),
        6,
        "every check reports a verdict:\n{out}"
    );
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

/// Asserts that `check`'s verdict in `out` is `mark` (✓, ✗ or –) and that its block says each of
/// `phrases`.
#[track_caller]
fn assert_verdict(out: &str, check: &str, mark: char, phrases: &[&str]) {
    let block = verdict(out, check);
    assert!(block[0].contains(mark), "{check} is not {mark}:\n{out}");
    for phrase in phrases {
        assert!(
            block.iter().any(|l| l.contains(phrase)),
            "{check} does not say {phrase:?}: {block:?}"
        );
    }
}

#[test]
fn each_learner_fault_is_one_readable_verdict_and_the_other_checks_still_run() {
    let book = workbook();
    let forward = "self.token_embedding.forward(xs)\n";
    let (rows, table) = (
        "forward gives one row of logits per token",
        "forward returns the table row of each token",
    );

    // A panic inside forward: the message, and where it came from.
    let out = grade_fault(&book, forward, "panic!(\"forward is not finished\")\n");
    // The first failure in full, with its place; the next in a line.
    let place = "exercises/src/warmup.rs";
    assert_verdict(&out, rows, '✗', &["forward is not finished", place]);
    let v = verdict(&out, table);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[1].contains("forward is not finished"), "{v:?}");

    // A wrong output shape: what came and what was expected.
    let summed = "self.token_embedding.forward(xs)?.sum_keepdim(2)\n";
    let out = grade_fault(&book, forward, summed);
    let shapes = "returned shape [2, 5, 1], expected [2, 5, 65]";
    assert_verdict(&out, rows, '✗', &[shapes]);

    // NaN: the forward checks name it, and the graded training does not run.
    let nan = "self.token_embedding.forward(xs)?.affine(f64::NAN, 0.0)\n";
    let out = grade_fault(&book, forward, nan);
    assert_verdict(&out, table, '✗', &[]);
    let training = "graded training reaches eval loss below 2.6";
    let skipped = "skipped: the checks above must pass first";
    assert_verdict(&out, training, '–', &[skipped]);

    // A detached forward: the gradient check names the parameter that cannot learn.
    let detached = "Ok(self.token_embedding.forward(xs)?.detach())\n";
    let out = grade_fault(&book, forward, detached);
    let gradient = "the embedding receives a gradient";
    assert_verdict(&out, gradient, '✗', &["receive no gradient", "wte.weight"]);
    assert_verdict(&out, table, '✓', &[]);

    // An endless loop in generate: a time limit, and the forward checks still pass.
    let out = grade_fault(&book, "for _ in 1..max_length {", "for _ in 1.. {");
    let greedy = "generate is greedy from the start token";
    assert_verdict(&out, greedy, '✗', &["did not finish within 5 s"]);
    assert_verdict(&out, rows, '✓', &[]);
}

#[test]
fn an_endless_loop_without_a_time_limit_of_its_own_is_stopped() {
    let book = workbook();
    // Task 4's Adam never returns where ENDLESS_LOOP is set (no check of Task 4 guards it with a
    // time limit of its own), and fails at once where it is not: one build serves both runs.
    let step = "        self.t += 1;\n";
    let endless = "        assert!(std::env::var_os(\"ENDLESS_LOOP\").is_some(), \"no loop this time\");\n        while self.t > 0 {\n            std::hint::black_box(&self.t);\n        }\n";
    let looping = solution_with(&book, "task4", step, &format!("{step}{endless}"));
    book.write_exercise("task4", &looping);
    // How long Task 4's checks take on this machine, as busy as it is now: one run builds them,
    // the next is timed. Each check is then allowed four times what all of them took.
    let state = tempfile::tempdir().unwrap();
    book.run(state.path(), &["check", "task4"]);
    let started = std::time::Instant::now();
    let (code, out) = book.run(state.path(), &["check", "task4"]);
    assert_eq!(code, 1, "{out}");
    let limit = (4.0 * started.elapsed().as_secs_f64()).ceil().max(5.0) as u64;
    let (code, text) = book::output(
        book.xtask(state.path(), &["check", "task4"])
            .env("ENDLESS_LOOP", "1")
            .env("MINIGPT_CHECK_LIMIT", limit.to_string()),
    );
    book.write_exercise("task4", &book.stub("task4"));
    assert_eq!(code, 1, "{text}");
    let stopped = format!(
        "did not finish within {limit} s, so it was stopped: look for a loop in your code that \
         never ends"
    );
    assert_verdict(&text, "adam matches optax over ten steps", '✗', &[&stopped]);
    let cross_entropy = "cross entropy matches the reference on random logits";
    assert_verdict(&text, cross_entropy, '✓', &[]);
    let training = "graded training with your step reaches eval loss below 1.9";
    assert_verdict(&text, training, '–', &[]);
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
    let sqrt = "(self.head_dim as f64).sqrt()";
    let wrong = solution_with(&book, "task2", sqrt, "(self.head_dim as f64)");
    let (code, out) = book.check_with(state.path(), "task2", &wrong);
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
    let scale = "kit::ops::causal_softmax(&scores, 1.0 / (self.head_dim as f64).sqrt())";
    // The scores scaled twice: once by hand, once by the fused op.
    let twice = "kit::ops::causal_softmax(&(scores / (self.head_dim as f64).sqrt())?, 1.0 / (self.head_dim as f64).sqrt())";
    let wrong = solution_with(&book, "task3", scale, twice);
    let started = std::time::Instant::now();
    let (code, out) = book.check_with(state.path(), "task3", &wrong);
    assert_eq!(code, 1, "{out}");
    let training = "graded training with einsum attention reaches eval loss below 1.9";
    let skipped = "skipped: the checks above must pass first";
    assert_verdict(&out, training, '–', &[skipped]);
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
    let (code, out) = book.check_with(state.path(), "task2", &book.solution("task2"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Next: task1 is not passing yet (7 of 10 checks at your last check): cargo xtask check task1"),
        "{out}"
    );
    assert!(!out.contains("Every task passes"), "{out}");
}

/// Verdicts come as each check ends: on the reference Task 1, the quick checks' verdicts are
/// on the screen before the graded training's progress line, so a learner reads them while it
/// runs. The test then stops the check with Ctrl-C, as a learner would.
#[test]
fn verdicts_stream_while_the_training_runs() {
    let book = workbook();
    let state = tempfile::tempdir().unwrap();
    let command = book.xtask(state.path(), &["check", "task1", "--solutions"]);
    let mut terminal = rexpect::session::spawn_command(command, Some(HUNG.as_millis() as u64))
        .expect("start check in a pseudo-terminal");
    let (before, _) = terminal
        .exp_regex(r"graded training[^\n]*: step \d+ of at most")
        .expect("the graded training shows its progress");
    terminal.send_control('c').expect("press Ctrl-C");
    terminal.exp_eof().expect("check stops");
    // rexpect reads the terminal byte by byte: the bytes, back as text.
    let before: Vec<u8> = before.chars().map(|c| c as u8).collect();
    let before = String::from_utf8_lossy(&before);
    let quick = verdict_lines(&before);
    assert!(quick.len() >= 5, "the quick checks' verdicts:\n{before}");
    assert!(
        !quick.iter().any(|l| l.contains("graded training")),
        "the training's verdict came before its progress: {quick:?}"
    );
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
        let (code, out) = book.check_with(state.path(), &task, &source);
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
    let (code, out) = book.check_with(state.path(), &task, &source);
    assert_eq!(code, 1, "{out}");
    let model = "minigpt computes what the architecture says";
    assert_verdict(&out, model, '✗', &[]);
    for generate in [
        "generate extends the prompt with tokens of the vocabulary",
        "generate samples from the last position",
        "generate refuses an empty prompt",
    ] {
        assert_verdict(&out, generate, '✓', &[]);
    }
}
