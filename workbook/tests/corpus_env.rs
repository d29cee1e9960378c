//! MINIGPT_CORPUS pointing at a missing file. Alone in its binary: it changes the environment.

use workbook::corpus::{self, CorpusError};

#[test]
fn a_missing_file_in_the_environment_variable_is_a_clear_error() {
    // SAFETY: this test binary has no other test and no other thread reads the environment.
    unsafe { std::env::set_var(corpus::CORPUS_ENV, "/nonexistent/tiny/input.txt") };
    let err = corpus::load().unwrap_err();
    assert!(matches!(err, CorpusError::EnvPathMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(corpus::CORPUS_ENV) && msg.contains("/nonexistent/tiny/input.txt"),
        "{msg}"
    );
}
