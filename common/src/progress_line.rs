//! The line a graded training writes after each evaluation, and `cargo xtask check` reads to
//! keep a live progress line: one format, written and parsed here.
//!
//! "graded training: step 250 of at most 4000, eval loss 2.370 (bar 1.9)"

use std::fmt;

/// One evaluation of a graded training, as its progress line says it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradedProgress {
    pub step: usize,
    /// The most steps the run may take.
    pub steps: usize,
    pub eval_loss: f32,
    pub bar: f32,
}

const START: &str = "graded training: step ";

impl fmt::Display for GradedProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{START}{} of at most {}, eval loss {:.3} (bar {})",
            self.step, self.steps, self.eval_loss, self.bar
        )
    }
}

impl GradedProgress {
    /// The progress a line says, if it is a progress line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(START)?;
        let (step, rest) = rest.split_once(" of at most ")?;
        let (steps, rest) = rest.split_once(", eval loss ")?;
        let (loss, rest) = rest.split_once(" (bar ")?;
        Some(Self {
            step: step.parse().ok()?,
            steps: steps.parse().ok()?,
            eval_loss: loss.parse().ok()?,
            bar: rest.strip_suffix(')')?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_line_reads_back_and_other_lines_are_not_progress() {
        let p = GradedProgress {
            step: 250,
            steps: 4000,
            eval_loss: 2.37,
            bar: 1.9,
        };
        let line = p.to_string();
        assert_eq!(
            line,
            "graded training: step 250 of at most 4000, eval loss 2.370 (bar 1.9)"
        );
        assert_eq!(GradedProgress::parse(&line), Some(p));
        assert_eq!(GradedProgress::parse("step 250: train loss 2.4"), None);
    }
}
