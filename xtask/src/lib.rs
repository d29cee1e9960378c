//! What `cargo xtask` shares with its own tests: copies of the workbook that build beside it.
//! Everything else the command line needs is in the `workbook` crate; this crate links none of
//! the learner's code, so its commands work while an exercise does not compile.

pub mod copy;
