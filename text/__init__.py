"""The text rules (CJK, words, sentences, normal form, language) every layer counts by."""
