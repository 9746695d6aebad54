//! Tokenization with Hugging Face's `tokenizers` crate from the model's `tokenizer.json`, the
//! Gemma chat template, and streaming detokenization that never splits a UTF-8 character.

use std::path::Path;

use crate::error::{Error, Result};

/// Gemma's turn markers.
pub const START_OF_TURN: &str = "<start_of_turn>";
/// End of a chat turn; instruction-tuned models emit it when done.
pub const END_OF_TURN: &str = "<end_of_turn>";

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Parses `tokenizer.json` bytes; `label` names the file in errors.
    pub fn from_bytes(bytes: &[u8], label: &Path) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| Error::Tokenizer(format!("{}: {e}", label.display()));
        // Through the non-generic `FromStr`, whose JSON deserializer is compiled (for size) in
        // the `tokenizers` crate; the generic `from_bytes` would instantiate all of it again
        // here, at this crate's -O3 (about 75 KB of libava_runtime.so).
        let text = std::str::from_utf8(bytes).map_err(|e| err(&e))?;
        check_json_syntax(text).map_err(|e| err(&e))?;
        let inner: tokenizers::Tokenizer = text.parse().map_err(|e| err(&e))?;
        Ok(Tokenizer { inner })
    }

    /// Token ids of `text`; `special` adds the model's special tokens (Gemma: `<bos>`).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` read as plain text: special-token strings in it (`<unk>`,
    /// `<bos>`...) are split like any other text, as llama.cpp tokenizes documents
    /// (`parse_special = false`). No special tokens are added.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let mut plain = self.inner.clone();
        plain.set_encode_special_tokens(true);
        let encoding = plain
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The id of a token such as `<end_of_turn>`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming decoder: feed ids one at a time, get text pieces that are whole characters.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            tokenizer: self,
            ids: Vec::new(),
            emitted: 0,
        }
    }
}

/// The Gemma chat template for one user turn, ready for the model's answer. `first` adds
/// nothing before the turn; later turns start by closing the model's previous turn.
pub fn gemma_chat_turn(user: &str, first: bool) -> String {
    let open = if first { "" } else { "\n" };
    format!("{open}{START_OF_TURN}user\n{user}{END_OF_TURN}\n{START_OF_TURN}model\n")
}

/// Incremental detokenizer: decodes everything so far and emits only the new, complete text.
///
/// Byte-fallback tokens can end inside a multi-byte character; the decoder then yields a
/// replacement character at the end, which is held back until the character completes.
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream<'_> {
    /// Adds a token; returns the new text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        let stable = text.trim_end_matches('\u{FFFD}');
        if stable.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = stable[self.emitted..].to_string();
        self.emitted = stable.len();
        Ok(piece)
    }

    /// Whatever is still held back (a dangling partial character becomes U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tokenizer.decode(&self.ids)?;
        let rest = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len();
        Ok(rest)
    }
}

/// Checks that `text` is well-formed JSON before `tokenizers` reads it: `tokenizers` 0.23 panics
/// instead of failing on a `decoder` value that is not (found by fuzzing the runtime's archive
/// open path, `fuzz/fuzz_targets/runtime_archive.rs`).
pub fn check_json_syntax(text: &str) -> std::result::Result<(), serde_json::Error> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::IgnoredAny::deserialize(&mut de)?;
    de.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer.json whose `decoder` is `decoder` (raw JSON text).
    fn with_decoder(decoder: &str) -> String {
        format!(
            r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {{"type": "Whitespace"}},
            "post_processor": null, "decoder": {decoder},
            "model": {{"type": "WordLevel", "vocab": {{"[UNK]": 0, "a": 1}},
            "unk_token": "[UNK]"}}}}"#
        )
    }

    #[test]
    fn a_malformed_decoder_is_an_error_not_a_panic() {
        let label = Path::new("tokenizer.json");
        assert!(Tokenizer::from_bytes(with_decoder("null").as_bytes(), label).is_ok());
        // What fuzzing found: a syntax error inside the `decoder` value (tokenizers 0.23
        // panics there), and other broken values beside it.
        for bad in [
            "[1,,2]",
            "{\"type\": }",
            "{\"type\": \"Fuse\",]",
            "tru",
            "\"\\x\"",
        ] {
            let r = Tokenizer::from_bytes(with_decoder(bad).as_bytes(), label);
            assert!(r.is_err(), "{bad}");
        }
    }
}
