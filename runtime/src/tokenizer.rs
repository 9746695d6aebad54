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
        let inner = match bpe_json::load(text) {
            Some(inner) => inner,
            None => text.parse().map_err(|e| err(&e))?,
        };
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

/// `tokenizer.json` of a BPE model read part by part. `tokenizers` reads its `model` through
/// an untagged enum, which first copies the whole value into a generic tree: for Gemma 3's
/// 262k tokens and 515k merges that tree, not the tokenizer, was most of the runtime's peak
/// memory (about 280 MB of heap for a 33 MB file). Here the vocabulary and merges go straight
/// into the types the BPE builder takes; the other parts and the added tokens are then set
/// exactly as `tokenizers`' own deserializer does. Anything else (another model type, legacy
/// `"a b"` merges, truncation or padding) gives `None`, and the caller uses `tokenizers`'.
mod bpe_json {
    use serde::Deserialize;
    use tokenizers::decoders::DecoderWrapper;
    use tokenizers::models::bpe::{Merges, Vocab, BPE};
    use tokenizers::models::ModelWrapper;
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::processors::PostProcessorWrapper;
    use tokenizers::{AddedToken, TokenizerBuilder};

    /// The one format version `tokenizers` reads.
    const VERSION: &str = "1.0";

    #[derive(Deserialize)]
    struct File {
        version: String,
        truncation: Option<serde::de::IgnoredAny>,
        padding: Option<serde::de::IgnoredAny>,
        added_tokens: Vec<Added>,
        normalizer: Option<NormalizerWrapper>,
        pre_tokenizer: Option<PreTokenizerWrapper>,
        model: Model,
        post_processor: Option<PostProcessorWrapper>,
        decoder: Option<DecoderWrapper>,
    }

    #[derive(Deserialize)]
    struct Added {
        content: String,
        single_word: bool,
        lstrip: bool,
        rstrip: bool,
        normalized: bool,
        special: bool,
    }

    #[derive(Deserialize)]
    struct Model {
        #[serde(rename = "type")]
        kind: String,
        dropout: Option<f32>,
        unk_token: Option<String>,
        continuing_subword_prefix: Option<String>,
        end_of_word_suffix: Option<String>,
        fuse_unk: Option<bool>,
        byte_fallback: Option<bool>,
        ignore_merges: Option<bool>,
        vocab: Vocab,
        merges: Merges,
    }

    /// The tokenizer of `text` when it is a plain BPE `tokenizer.json`.
    pub(super) fn load(text: &str) -> Option<tokenizers::Tokenizer> {
        let file: File = serde_json::from_str(text).ok()?;
        let plain = file.version == VERSION
            && file.model.kind == "BPE"
            && file.truncation.is_none()
            && file.padding.is_none();
        if !plain {
            return None;
        }
        let m = file.model;
        let mut bpe = BPE::builder().vocab_and_merges(m.vocab, m.merges);
        if let Some(p) = m.dropout {
            bpe = bpe.dropout(p);
        }
        if let Some(unk) = m.unk_token {
            bpe = bpe.unk_token(unk);
        }
        if let Some(prefix) = m.continuing_subword_prefix {
            bpe = bpe.continuing_subword_prefix(prefix);
        }
        if let Some(suffix) = m.end_of_word_suffix {
            bpe = bpe.end_of_word_suffix(suffix);
        }
        if let Some(b) = m.fuse_unk {
            bpe = bpe.fuse_unk(b);
        }
        if let Some(b) = m.byte_fallback {
            bpe = bpe.byte_fallback(b);
        }
        if let Some(b) = m.ignore_merges {
            bpe = bpe.ignore_merges(b);
        }
        let built = TokenizerBuilder::new()
            .with_model(ModelWrapper::BPE(bpe.build().ok()?))
            .with_normalizer(file.normalizer)
            .with_pre_tokenizer(file.pre_tokenizer)
            .with_post_processor(file.post_processor)
            .with_decoder(file.decoder)
            .build()
            .ok()?;
        let mut tokenizer = tokenizers::Tokenizer::from(built);
        let added = file.added_tokens.into_iter().map(|t| {
            AddedToken::from(t.content, t.special)
                .single_word(t.single_word)
                .lstrip(t.lstrip)
                .rstrip(t.rstrip)
                .normalized(t.normalized)
        });
        tokenizer.add_tokens(added).ok()?;
        Some(tokenizer)
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
    fn the_bpe_reader_builds_what_tokenizers_builds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/gemma3-tiny");
        let text = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
        let ours = bpe_json::load(&text).expect("the fixture is a plain BPE tokenizer.json");
        let theirs: tokenizers::Tokenizer = text.parse().unwrap();
        assert_eq!(ours.get_vocab(true), theirs.get_vocab(true));
        let samples = [
            "The capital of France is",
            "  two  spaces, tabs\t\tand\nnewlines\n\n",
            "<start_of_turn>user\nhi<end_of_turn>\n<bos><unk>",
            "ünïcödé 日本語 😀 bytes",
        ];
        for text in samples {
            for special in [false, true] {
                let (a, b) = (
                    ours.encode(text, special).unwrap(),
                    theirs.encode(text, special).unwrap(),
                );
                assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
                assert_eq!(
                    ours.decode(a.get_ids(), true).unwrap(),
                    theirs.decode(b.get_ids(), true).unwrap()
                );
            }
        }
        assert!(bpe_json::load(&with_decoder("null")).is_none(), "WordLevel");
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
