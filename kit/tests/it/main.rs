//! kit's integration tests, one module per concern, in one test binary: each binary links kit
//! and candle at opt-level 3, so one binary builds much faster than one per file.
//! `atomic` and `corpus_env` have binaries of their own: the first runs itself as a child
//! process, the second changes the environment of its process.

mod common;
mod corpus;
mod ops;
mod resume;
mod train;
