//! # common: what the model code and the command line share
//!
//! - [`config`]: the settings of a model and of a training run, checked in one place;
//! - [`corpus`]: finding tiny Shakespeare and proving that it is the right file;
//! - [`files`]: files written whole or not at all;
//! - [`bars`] and [`progress_line`]: progress bars, and the graded training's progress line.
//!
//! `kit` (and so your exercises) builds on this crate alone of the workbook's own: the argument
//! parser, the task list and the corpus download belong to the command line, in `workbook`.

pub mod bars;
pub mod config;
pub mod corpus;
pub mod files;
pub mod progress_line;
