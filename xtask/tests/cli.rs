//! The xtask binary as a person uses it: its output, snapshotted.

mod book;

use book::says;
use std::process::Command;

fn xtask(args: &[&str], state: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("MINIGPT_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .output()
        .expect("run xtask");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        without_cargo_status(&String::from_utf8_lossy(&out.stderr))
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `text` without the status lines of the cargo that builds the model runner ("Compiling
/// runner", "Blocking waiting for file lock" while another test builds it): they depend on
/// what was built before, not on the command.
fn without_cargo_status(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let word = l.split_whitespace().next().unwrap_or("");
            !["Compiling", "Blocking", "Building", "Locking", "Adding"].contains(&word)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn hint_gives_the_next_hint_each_time_then_points_at_the_reference() {
    let state = tempfile::tempdir().unwrap();
    let shown: Vec<String> = (0..5)
        .map(|_| {
            let (code, text) = xtask(&["hint", "task2"], state.path());
            assert_eq!(code, 0, "{text}");
            text
        })
        .collect();
    assert!(shown[0].contains("hint 1 of 4"), "{}", shown[0]);
    assert!(shown[1].contains("hint 2 of 4"), "{}", shown[1]);
    assert!(shown[2].contains("hint 3 of 4"), "{}", shown[2]);
    assert!(
        shown[3].contains("hint 4 of 4") && shown[3].contains("last hint"),
        "{}",
        shown[3]
    );
    assert_eq!(
        shown[3], shown[4],
        "after the last hint, the last hint again"
    );
    insta::assert_snapshot!("hint_task2_first", shown[0]);
}

#[test]
fn hint_is_for_the_part_the_last_check_stopped_at() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("state.json"),
        r#"{"hints_shown": {}, "results": {"task1": {"passed": 9, "total": 12, "compiles": true,
            "first_failure": {"check": "generate_samples_from_the_last_position",
            "headline": "not yet implemented: MiniGPT::generate: sample max_new_tokens tokens (exercises/src/task1.rs:140)"}}}}"#,
    )
    .unwrap();
    let (code, text) = xtask(&["hint", "task1"], state.path());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("part generate (MiniGPT::generate), hint 1 of 4"),
        "the todo!() the last check hit picks the part: {text}"
    );
    // A failing check picks the part it grades.
    std::fs::write(
        state.path().join("state.json"),
        r#"{"hints_shown": {}, "results": {"task1": {"passed": 9, "total": 12, "compiles": true,
            "first_failure": {"check": "decoder_block_keeps_the_shape", "headline": "DecoderBlock::forward returned shape [2]"}}}}"#,
    )
    .unwrap();
    let (_, text) = xtask(&["hint", "task1"], state.path());
    assert!(text.contains("part block"), "{text}");
    // Asked again, the same part's next hint; another part's hints count apart.
    let (_, text) = xtask(&["hint", "task1"], state.path());
    assert!(
        text.contains("part block (DecoderBlock::forward), hint 2 of 4"),
        "{text}"
    );
    let (_, text) = xtask(&["hint", "task1", "model-new"], state.path());
    assert!(
        text.contains("part model-new (MiniGPT::new), hint 1 of 4"),
        "{text}"
    );
    let unknown = "task1 has no part \"nothing\": pick one of attention-new";
    let nothing = xtask(&["hint", "task1", "nothing"], state.path());
    says(nothing, 1, &[unknown]);
    let (_, text) = xtask(&["status"], state.path());
    let row = text.lines().find(|l| l.starts_with("task1 ")).unwrap();
    assert!(
        row.ends_with("3 of 28"),
        "status counts the hints seen: {row}"
    );
}

/// `cargo xtask status` on the results in `state`, snapshotted as `name`.
fn status_snapshot(state: &std::path::Path, name: &str) {
    let (code, text) = xtask(&["status"], state);
    assert_eq!(code, 0, "{text}");
    insta::assert_snapshot!(name, text);
}

#[test]
fn status_before_any_check() {
    let state = tempfile::tempdir().unwrap();
    status_snapshot(state.path(), "status_empty");
}

#[test]
fn status_after_checks() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("state.json"),
        r#"{"hints_shown": {}, "results": {"warmup": {"passed": 6, "total": 6}, "task1": {"passed": 7, "total": 10}}}"#,
    )
    .unwrap();
    status_snapshot(state.path(), "status_partway");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let state = tempfile::tempdir().unwrap();
    let (code, text) = xtask(&["check", "task99"], state.path());
    assert_eq!(code, 2);
    insta::assert_snapshot!("unknown_task", text);
    says(xtask(&["hint", "all"], state.path()), 2, &["pick one task"]);
    for args in [
        &["train", "task1", "--steps", "0"][..],
        &["train", "task1", "--batch", "0"],
        &["train", "task1", "--steps", "-5"],
        &["generate", "--checkpoint", "runs/task1", "--top-k", "0"],
        &["bench", "train", "--steps", "zero"],
        &["bench", "bpe", "--repeats", "0"],
    ] {
        let (code, text) = xtask(args, state.path());
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.starts_with("error: "), "{args:?}: {text}");
    }
    // Values that parse but cannot work are refused before any training.
    let huge: Vec<&str> = "train warmup --solutions --block 200000 --steps 1"
        .split(' ')
        .collect();
    let (code, text) = xtask(&huge, state.path());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("error: ") && l.contains("too large")),
        "{text}"
    );
}

/// Numbers out of range, unknown task names and missing files, answered in the workbook's
/// words: what is wrong and what would be right.
#[test]
fn edges_are_answered_in_the_workbooks_words() {
    let state = tempfile::tempdir().unwrap();
    let mut shown = String::new();
    for args in [
        &["train", "task1", "--steps", "-5"][..],
        &["train", "task1", "--steps", "0"],
        &["train", "task1", "--lr", "-1"],
        &["hint", "task99"],
        &["reset", "task99"],
        &["watch", "task99"],
        &["solution", "task99"],
        &["generate", "--checkpoint", "runs/task1", "--temperature=-1"],
        &["generate", "--checkpoint", "runs/task1", "--top-k", "0"],
        &["data", "--from", "/nonexistent/input.txt"],
    ] {
        let (code, text) = xtask(args, state.path());
        assert_ne!(code, 0, "{args:?}: {text}");
        for plumbing in ["to pass '-", "18446744073709551615", "invalid variant"] {
            assert!(!text.contains(plumbing), "{args:?}: {text}");
        }
        shown.push_str(&format!("$ cargo xtask {}\n{text}\n", args.join(" ")));
    }
    assert_eq!(
        shown.matches("No such file or directory").count(),
        1,
        "a missing file is named once: {shown}"
    );
    insta::assert_snapshot!("edges", shown);
}

#[test]
fn doctor_reports_each_fact_of_this_machine() {
    let state = tempfile::tempdir().unwrap();
    let (code, text) = xtask(&["doctor"], state.path());
    assert!(code == 0 || text.contains("CPU: neither"), "{text}");
    insta::with_settings!({
        filters => vec![
            (r"rustc \S+ \([^)]*\)", "rustc [VERSION]"),
            (r"\d+ core\(s\)", "[N] core(s)"),
            (r"CPU: .*", "CPU: [KIND]"),
            (r"corpus: \S+ \((found through MINIGPT_CORPUS|the workbook's own copy)\)", "corpus: [PATH] ([WHERE])"),
            (r"disk: \d+ GB free", "disk: [N] GB free"),
        ],
    }, {
        insta::assert_snapshot!("doctor", text);
    });
}

#[test]
fn a_truncated_corpus_is_refused_with_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    let (real, _) = workbook::corpus::configured_path().expect("the corpus");
    let bytes = std::fs::read(real).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("input.txt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["train", "warmup", "--solutions", "--steps", "1"])
        .env("MINIGPT_STATE_DIR", state.path())
        .env("MINIGPT_CORPUS", &cut)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sha256") && text.contains("cargo xtask data"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&cut).unwrap().len(),
        bytes.len() / 2,
        "a bad corpus is reported, not changed"
    );
}

#[test]
fn every_command_has_help() {
    let state = tempfile::tempdir().unwrap();
    for cmd in [
        "check",
        "data",
        "train",
        "bench",
        "generate",
        "attention",
        "gpt2",
        "hint",
        "status",
        "reset",
        "solution",
        "watch",
        "doctor",
        "mutants",
    ] {
        let (code, text) = xtask(&[cmd, "--help"], state.path());
        assert_eq!(code, 0, "{cmd} --help: {text}");
        assert!(text.contains("Usage: cargo xtask"), "{cmd}: {text}");
    }
}

#[test]
fn train_saves_a_checkpoint_and_a_loss_curve_that_generate_reads() {
    let state = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let (code, text) = xtask(
        &[
            "train",
            "warmup",
            "--solutions",
            "--steps",
            "200",
            "--sample",
            "20",
            "--out",
            out,
        ],
        state.path(),
    );
    assert_eq!(code, 0, "{text}");
    for file in ["model.safetensors", "model.json", "loss.svg"] {
        let path = run.path().join(file);
        assert!(path.is_file(), "{file} missing: {text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o644,
                "{file} has mode {mode:o}, not the usual rw-r--r--"
            );
        }
    }
    let svg = std::fs::read_to_string(run.path().join("loss.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 2,
        "{svg}"
    );

    let (code, text) = xtask(
        &[
            "generate",
            "--checkpoint",
            out,
            "--prompt",
            "KI",
            "--tokens",
            "20",
            "--temperature",
            "0",
        ],
        state.path(),
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("KI") && text.trim_end().chars().count() == 22,
        "{text:?}"
    );

    let naive = ["generate", "--checkpoint", out, "--prompt", "naïve"];
    says(xtask(&naive, state.path()), 1, &["'ï'", "position 2"]);

    let missing = run.path().join("nothing");
    let missing = ["generate", "--checkpoint", missing.to_str().unwrap()];
    says(xtask(&missing, state.path()), 1, &["no checkpoint file"]);

    std::fs::write(run.path().join("model.safetensors"), b"not safetensors").unwrap();
    let damaged = xtask(&["generate", "--checkpoint", out], state.path());
    says(damaged, 1, &["is truncated or damaged"]);
}

/// `gpt2 --download` where the hub cannot be reached (its client pointed at a closed port of
/// this machine, its cache empty): no download, and an error that says what to do instead.
#[test]
fn gpt2_download_without_a_network_says_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["gpt2", "--download", "--solutions"])
        .env("MINIGPT_STATE_DIR", state.path())
        .env("NO_COLOR", "1")
        .env("HF_HOME", cache.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("run xtask");
    let text = without_cargo_status(&String::from_utf8_lossy(&out.stderr));
    says(
        (out.status.code().unwrap_or(-1), text),
        1,
        &[
            "error: cannot fetch openai-community/gpt2 from the Hugging Face hub",
            "get its four files (config.json, model.safetensors, vocab.json, merges.txt)",
            "Next: cargo xtask gpt2 --dir PATH/TO/THAT/FOLDER",
        ],
    );
}

/// `bench gpt2` at GPT-2 small's size, one token after one: a rate, the model's memory, and
/// why transformers was not timed (the peer's Python pointed at nothing).
#[test]
fn bench_gpt2_reports_tokens_per_second_and_memory() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "gpt2",
            "--repeats",
            "1",
            "--prompt",
            "1",
            "--tokens",
            "1",
        ])
        .arg("--json")
        .env("MINIGPT_STATE_DIR", state.path())
        .env("NO_COLOR", "1")
        .env("MINIGPT_PYTHON", "/nonexistent/python3")
        .output()
        .expect("run xtask");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("transformers not timed: /nonexistent/python3 does not start"),
        "{text}"
    );
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(last["tokens_per_s"].as_f64().unwrap() > 0.0, "{text}");
    assert_eq!(last["parameters"], 124_439_808, "{text}");
    assert!(last["rss_mb"].as_f64().unwrap() > 400.0, "{text}");
}

/// `gpt2 --dir` on the fixture's tiny GPT-2, with the reference's code: the prompt, its
/// continuation, and what it cost.
#[test]
fn gpt2_writes_from_a_folder() {
    let state = tempfile::tempdir().unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fixtures/task9-gpt2");
    let args = [
        "gpt2",
        "--dir",
        dir,
        "--solutions",
        "--prompt",
        "Hello",
        "--tokens",
        "8",
    ];
    let (code, text) = xtask(&args, state.path());
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("Hello"), "{text}");
    assert!(
        text.contains("new tokens in") && text.contains("with the KV cache"),
        "{text}"
    );
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    let args = ["gpt2", "--dir", empty, "--solutions"];
    says(xtask(&args, state.path()), 1, &["has no config.json"]);
}

#[test]
fn solution_shows_the_reference_as_a_diff() {
    let state = tempfile::tempdir().unwrap();
    // On the pristine exercise, the diff replaces the todo!() with the reference's body.
    let diff = xtask(&["solution", "task2"], state.path());
    says(diff, 0, &["solutions/src/task2.rs", "+        let scores"]);
}

#[test]
fn reset_without_a_terminal_or_yes_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let (code, text) = xtask(&["reset", "task2"], state.path());
    // On a pristine checkout there is nothing to reset; otherwise it must refuse to ask.
    assert!(
        (code == 0 && text.contains("nothing to do")) || (code == 1 && text.contains("--yes")),
        "{code}: {text}"
    );
}

#[test]
fn attention_draws_every_layer_and_head_of_a_checkpoint() {
    let state = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let small = [
        "--steps", "3", "--layers", "2", "--heads", "2", "--hidden", "16", "--block", "8",
        "--sample", "5",
    ];
    let (code, text) = xtask(
        &[&["train", "task1", "--solutions", "--out", out][..], &small].concat(),
        state.path(),
    );
    assert_eq!(code, 0, "{text}");
    let (code, text) = xtask(
        &[
            "attention",
            "--checkpoint",
            out,
            "--prompt",
            "ROMEO: hi there",
        ],
        state.path(),
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2 layers × 2 heads over 8 characters"),
        "only the last block_size characters: {text}"
    );
    assert!(
        text.contains(
            "The prompt has 15 characters and the model sees at most 8: drawing the last 8."
        ),
        "a prompt longer than the context is said: {text}"
    );
    let svg = std::fs::read_to_string(run.path().join("attention.svg")).unwrap();
    assert!(
        svg.contains("layer 1, head 1") && svg.contains("<title>"),
        "{svg}"
    );
    let pound = xtask(
        &["attention", "--checkpoint", out, "--prompt", "ROMEO£"],
        state.path(),
    );
    says(pound, 1, &["'£'"]);
}

#[test]
fn data_refuses_a_copy_that_is_not_tiny_shakespeare() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("input.txt");
    std::fs::write(&other, "To be, or not to be\n").unwrap();
    let refused = xtask(&["data", "--from", other.to_str().unwrap()], state.path());
    says(
        refused,
        1,
        &["is not tiny Shakespeare", "nothing was installed"],
    );
}

#[test]
fn bench_reports_its_figures_as_json() {
    let state = tempfile::tempdir().unwrap();
    let (code, text) = xtask(
        &[
            "bench",
            "train",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--eval-repeats",
            "1",
            "--json",
        ],
        state.path(),
    );
    assert_eq!(code, 0, "{text}");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(last["ms_per_step"].as_f64().unwrap() > 0.0, "{text}");
    assert_eq!(last["steps"], 3);

    let (code, text) = xtask(
        &["bench", "attention", "--repeats", "1", "--json"],
        state.path(),
    );
    assert_eq!(code, 0, "{text}");
    let rows: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        4,
        "T 32 and 256, forward and forward+backward: {text}"
    );
    for row in rows {
        for key in ["task2_heads_ms", "task1_heads_ms", "einsum_ms", "speedup"] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {text}");
        }
    }
}
