//! What a wrong answer actually does, in the workbook's words: each module recomputes a part
//! every way a catalogue of learners' mistakes allows and names the one that reproduces the
//! learner's output, or probes it as a black box when none does.

pub mod attention;
pub mod bpe;
pub mod gpt2;
pub mod kv_cache;
pub mod layer_norm;
pub mod llama;
pub mod minigpt;
pub mod training;
