//! Progress bars on standard error, drawn only when someone is watching.

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// A bar counting `len` training steps, labelled `label`; hidden unless `enabled`.
pub fn steps(len: u64, label: &str, enabled: bool) -> ProgressBar {
    bar(
        len,
        label,
        enabled,
        "{prefix:>11} [{bar:30.cyan/blue}] {pos:>5}/{len} steps  {msg}  {elapsed} (eta {eta})",
    )
}

/// A bar counting `len` bytes (a download), labelled `label`.
pub fn bytes(len: u64, label: &str) -> ProgressBar {
    bar(
        len,
        label,
        true,
        "{prefix:>11} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({eta})",
    )
}

fn bar(len: u64, label: &str, enabled: bool, template: &str) -> ProgressBar {
    // indicatif draws nothing when standard error is not a terminal.
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}
