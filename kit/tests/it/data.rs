//! The real corpus as the workbook's dataset.

#[test]
fn tiny_shakespeare_has_65_characters_and_a_ninety_ten_split() {
    // From MINIGPT_CORPUS, or data/tinyshakespeare/input.txt, or downloaded once.
    let data = kit::Dataset::load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.vocab_size(), 65);
    assert_eq!(data.train.len(), 1_003_854, "int(0.9 * 1_115_394)");
}
