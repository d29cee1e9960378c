//! What a check's run means to a learner: passed or not, and why, in the workbook's words.
//! Rust's and the test libraries' plumbing (unwrap on an Err, insta's advice to maintainers,
//! proptest's shrinking banner, paths inside the cargo registry) is taken out.

use std::io::Write as _;
use workbook::style;

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub outcome: Outcome,
    /// Why it failed, or for a pass the last line the check printed (a graded check prints the
    /// loss and the step it reached).
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// Not run, because the checks before it failed.
    Skipped,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    /// The first line of the message: all that is shown of a failure after the first.
    pub fn headline(&self) -> Option<&str> {
        self.message.as_deref().and_then(|m| m.lines().next())
    }
}

/// Reads libtest's plain output of a whole test binary: the `test NAME ... ok|FAILED` lines and
/// each failure's captured output.
pub fn parse_libtest(stdout: &str) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, result) = rest.rsplit_once(" ... ")?;
            let outcome = match result.trim() {
                "ok" => Outcome::Passed,
                r if r.starts_with("FAILED") => Outcome::Failed,
                _ => return None,
            };
            Some(Verdict {
                name: name.to_string(),
                outcome,
                message: None,
            })
        })
        .collect();
    // Output sections: "---- NAME stdout ----" up to the next section or the list that ends
    // them ("failures:" or "successes:").
    let mut current: Option<(String, Vec<&str>)> = None;
    let mut sections = Vec::new();
    for line in stdout.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            sections.extend(current.take());
            current = Some((name.to_string(), Vec::new()));
        } else if line == "failures:" || line == "successes:" {
            sections.extend(current.take());
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    sections.extend(current);
    for (name, lines) in sections {
        if let Some(v) = verdicts.iter_mut().find(|v| v.name == name) {
            v.message = if v.passed() {
                lines
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_string())
            } else {
                Some(failure_message(&lines))
            };
        }
    }
    verdicts
}

/// The panic message of a failed check, with a `todo!()` shown as
/// "not yet implemented: WHAT (FILE:LINE)". A property test panics once per case it tries;
/// its verdict is the last panic, with the first one's place.
fn failure_message(lines: &[&str]) -> String {
    // insta prints a description and a diff under a legend of its own; the legend goes first.
    let snapshot = lines.iter().any(|l| l.trim() == "-old snapshot");
    let lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !is_plumbing(l) && !["-old snapshot", "+new results"].contains(&l.trim()))
        .collect();
    let panics: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("thread '") && l.contains(" panicked at "))
        .map(|(i, _)| i)
        .collect();
    let (Some(&first), Some(&last)) = (panics.first(), panics.last()) else {
        let text = lines.iter().map(|l| l.trim_end()).collect::<Vec<_>>();
        return text.join("\n").trim().to_string();
    };
    let body: Vec<&str> = lines[last + 1..]
        .iter()
        .take_while(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .copied()
        .collect();
    let (body, named) = readable_panic(body.join("\n").trim());
    let mut output: Vec<&str> = lines[..first]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if snapshot {
        output.insert(
            0,
            "the output differs from the recorded snapshot (-: expected, +: yours):",
        );
    }
    let mut message = if body.starts_with("not yet implemented") {
        let what = body.lines().next().unwrap_or("");
        format!("{what} ({})", panic_place(lines[first]))
    } else {
        match named.unwrap_or_else(|| panic_place(lines[last])) {
            place if place.is_empty() => body,
            place => format!("{body}\n(at {place})"),
        }
    };
    if !output.is_empty() {
        message = format!("{}\n{message}", output.join("\n"));
    }
    message.trim().to_string()
}

/// Lines written by the test libraries for their maintainers, not for the learner.
fn is_plumbing(line: &str) -> bool {
    let plain = line.trim();
    plain.contains("Snapshot Summary")
        || [
            "proptest: ",
            "Snapshot file: ",
            "Snapshot: ",
            "Source: ",
            "Expression: ",
            "To update snapshots",
            "Stopped on the first failure",
            "info: ",
            "Hint: ",
        ]
        .iter()
        .any(|p| plain.starts_with(p))
        || (!plain.is_empty() && plain.chars().all(|c| c == '━' || c == '─'))
}

/// A panic message without the wrapping of `unwrap()`, proptest's report and insta's: the
/// message the check wrote, and the place it names, if any.
fn readable_panic(body: &str) -> (String, Option<String>) {
    let mut text = body.to_string();
    let mut place = None;
    if let Some(rest) = text.strip_prefix("called `Result::unwrap()` on an `Err` value: ") {
        text = rest.to_string();
        if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            text = inner.replace("\\n", "\n").replace("\\\"", "\"");
        }
    }
    if let Some(rest) = text.strip_prefix("Test failed: ") {
        // proptest: "Test failed: MESSAGE at FILE:LINE.\nminimal failing input: INPUT\n...". The
        // checks' messages name the input they failed on in the workbook's words.
        let why = rest
            .split("minimal failing input: ")
            .next()
            .unwrap_or(rest)
            .trim_end()
            .trim_end_matches(';');
        let why = why.strip_suffix('.').unwrap_or(why);
        text = match why.rsplit_once(" at ") {
            Some((msg, at)) if at.contains(".rs:") && !at.contains(' ') => {
                place = Some(at.to_string());
                msg.to_string()
            }
            _ => why.to_string(),
        };
    }
    if let Some(rest) = text.strip_prefix("Case failed: ") {
        text = rest.to_string();
    }
    if text.starts_with("snapshot assertion for ") {
        // insta's diff, printed before its panic, says it all.
        text.clear();
    }
    (text, place)
}

/// "thread 'NAME' (ID) panicked at FILE:LINE:COL:" → "FILE:LINE"; nothing for a place outside
/// the workbook (inside a library in the cargo registry).
fn panic_place(line: &str) -> String {
    let location = line
        .split_once(" panicked at ")
        .map(|(_, loc)| loc.trim_end_matches(':'))
        .unwrap_or("");
    let place = match location.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
        [_col, line, file] => format!("{file}:{line}"),
        _ => location.to_string(),
    };
    if std::path::Path::new(&place).is_absolute() || place.contains(".cargo") {
        String::new()
    } else {
        place
    }
}

/// Possessives a test name cannot spell, an identifier having no apostrophe: the words as the
/// name has them, and as they are read.
const POSSESSIVES: [(&str, &str); 7] = [
    ("candle nns", "candle-nn's"),
    ("candles", "candle's"),
    ("kits", "kit's"),
    ("adams", "adam's"),
    ("each vectors", "each vector's"),
    ("a rows", "a row's"),
    ("the challenges", "the challenge's"),
];

/// `graded_training_reaches_eval_loss_below_2_6` → "graded training reaches eval loss below 2.6";
/// `adam_matches_kits_adam` → "adam matches kit's adam".
pub fn readable(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let words: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if c != '_' {
                c
            } else if i > 0
                && chars[i - 1].is_ascii_digit()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())
            {
                '.'
            } else {
                ' '
            }
        })
        .collect();
    let mut padded = format!(" {words} ");
    for (written, read) in POSSESSIVES {
        padded = padded.replace(&format!(" {written} "), &format!(" {read} "));
    }
    padded.trim().to_string()
}

/// Prints verdicts: the first failure in full, each later one as its first line.
#[derive(Default)]
pub struct Printer {
    failed_before: bool,
}

impl Printer {
    pub fn print(&mut self, v: &Verdict) {
        let name = readable(&v.name);
        match v.outcome {
            Outcome::Passed => {
                println!("  {} {name}", style::ok("✓"));
                if let Some(note) = &v.message {
                    println!("      {note}");
                }
            }
            Outcome::Skipped => {
                println!("  {} {name}", style::dim("–"));
                if let Some(note) = &v.message {
                    println!("      {}", style::dim(note));
                }
            }
            Outcome::Failed if self.failed_before => {
                println!("  {} {name}", style::bad("✗"));
                if let Some(line) = v.headline() {
                    println!("      {line}");
                }
            }
            Outcome::Failed => {
                self.failed_before = true;
                println!("  {} {name}", style::bad("✗"));
                for line in v.message.as_deref().unwrap_or("").lines() {
                    println!("      {line}");
                }
            }
        }
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\nrunning 3 tests\ntest a_passes ... ok\ntest stub_is_hit ... FAILED\ntest wrong_shape ... FAILED\n\nfailures:\n\n---- stub_is_hit stdout ----\n\nthread 'stub_is_hit' (1234) panicked at exercises/src/warmup.rs:52:9:\nnot yet implemented: SimpleDecoder::forward: look up rows\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n---- wrong_shape stdout ----\nstep 1\n\nthread 'wrong_shape' panicked at checks/src/support.rs:30:5:\nassertion `left == right` failed: forward returned shape [2]\n  left: [2]\n right: [2, 3]\n\n\nfailures:\n    stub_is_hit\n    wrong_shape\n\ntest result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n";

    #[test]
    fn todo_panics_read_as_not_yet_implemented_with_their_place() {
        let v = parse_libtest(OUTPUT);
        assert_eq!(v.len(), 3);
        let stub = v.iter().find(|v| v.name == "stub_is_hit").unwrap();
        assert_eq!(
            stub.message.as_deref(),
            Some(
                "not yet implemented: SimpleDecoder::forward: look up rows (exercises/src/warmup.rs:52)"
            )
        );
        let shape = v.iter().find(|v| v.name == "wrong_shape").unwrap();
        let msg = shape.message.as_deref().unwrap();
        assert!(
            msg.starts_with("step 1\nassertion `left == right` failed: forward returned shape [2]"),
            "{msg}"
        );
        assert!(msg.ends_with("(at checks/src/support.rs:30)"), "{msg}");
        assert!(v.iter().find(|v| v.name == "a_passes").unwrap().passed());
    }

    /// The message of one failed check whose captured output is `output`, read from libtest's
    /// output.
    fn message(output: &str) -> String {
        let stdout = format!(
            "test t ... FAILED\n\nfailures:\n\n---- t stdout ----\n{output}\n\nfailures:\n    t\n"
        );
        let v = parse_libtest(&stdout).remove(0);
        v.message.expect("a failure has a message")
    }

    #[test]
    fn a_property_test_reads_as_its_last_panic_without_proptest_plumbing() {
        let cases = [
            (
                "thread 't' (1) panicked at exercises/src/task2.rs:53:9:\nnot yet implemented: forward\nthread 't' (1) panicked at exercises/src/task2.rs:53:9:\nnot yet implemented: forward\nproptest: Aborting shrinking after the PROPTEST_MAX_SHRINK_ITERS limit\nthread 't' (1) panicked at checks/tests/task2.rs:170:1:\nTest failed: not yet implemented: forward.\nminimal failing input: (b, t) = (1, 1)\n\tsuccesses: 0\n",
                "not yet implemented: forward (exercises/src/task2.rs:53)",
            ),
            (
                "thread 't' (1) panicked at checks/tests/task2.rs:170:1:\nTest failed: differs for input shape [1, 2, 1], head_dim 1 at checks/tests/task2.rs:245.\nminimal failing input: (b, t, c, d, seed) = (1, 2, 1, 1, 7)\n\tsuccesses: 3\n",
                "differs for input shape [1, 2, 1], head_dim 1\n(at checks/tests/task2.rs:245)",
            ),
        ];
        for (output, readable) in cases {
            assert_eq!(message(output), readable);
        }
    }

    #[test]
    fn unwrap_and_registry_places_are_not_shown() {
        assert_eq!(
            message(
                "thread 't' (1) panicked at checks/tests/task2.rs:99:10:\ncalled `Result::unwrap()` on an `Err` value: \"Case failed: it differs\\nby 0.1\"\n"
            ),
            "it differs\nby 0.1\n(at checks/tests/task2.rs:99)"
        );
        let msg = message(
            "━━━━━━━━\nSnapshot Summary ━━━━━━━━\nSnapshot: small\nSource: checks/tests/task2.rs:208\n────────\n-old snapshot\n+new results\n    0     0 │ 0.5\n────────\nTo update snapshots run `cargo insta review`\nStopped on the first failure. Run `cargo insta test` to run all snapshots.\nthread 't' (1) panicked at /home/me/.cargo/registry/src/x/insta-1.49.0/src/runtime.rs:719:13:\nsnapshot assertion for 'small' failed in line 208\n",
        );
        assert!(
            msg.starts_with("the output differs from the recorded snapshot") && msg.contains("0.5"),
            "{msg}"
        );
        for plumbing in ["cargo insta", ".cargo", "Snapshot Summary", "━", "Source:"] {
            assert!(!msg.contains(plumbing), "{plumbing}: {msg}");
        }
    }

    #[test]
    fn a_pass_reads_as_the_last_line_the_check_printed() {
        let out = "test graded ... ok\n\nsuccesses:\n\n---- graded stdout ----\nstep 250: loss 2.0\ntask1: eval loss 1.891 at step 1750\n\n\nsuccesses:\n    graded\n";
        let v = parse_libtest(out).remove(0);
        assert_eq!(
            v.message.as_deref(),
            Some("task1: eval loss 1.891 at step 1750")
        );
    }

    #[test]
    fn names_read_as_sentences() {
        assert_eq!(
            readable("graded_training_reaches_eval_loss_below_2_6"),
            "graded training reaches eval loss below 2.6"
        );
        assert_eq!(
            readable("gradients_match_candles_autograd_through_the_composed_layer_norm"),
            "gradients match candle's autograd through the composed layer norm"
        );
        assert_eq!(
            readable("candle_nns_layer_norm_stops_the_gradients_that_yours_lets_through"),
            "candle-nn's layer norm stops the gradients that yours lets through"
        );
        assert_eq!(
            readable("a_rotation_keeps_each_vectors_length_and_position_zero_is_still"),
            "a rotation keeps each vector's length and position zero is still"
        );
        assert_eq!(
            readable("rows_of_zeros_and_of_tiny_values_stay_finite"),
            "rows of zeros and of tiny values stay finite"
        );
    }
}
