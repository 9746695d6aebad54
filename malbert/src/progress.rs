//! How the conversion reports its longest step, encoding the utterances a head is fitted on:
//! a [`Progress`] sink the caller provides (the CLI adapts its terminal progress bar to it;
//! [`NoProgress`] discards everything).

/// Receives utterance counts while the frozen encoder runs. Called from several threads.
pub trait Progress: Sync {
    /// `count` utterances will be encoded in all.
    fn set_total(&self, count: u64);
    /// `count` more were encoded.
    fn advance(&self, count: u64);
    /// Encoding is over (the head fit that follows reports nothing).
    fn finish(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&self, _count: u64) {}
    fn advance(&self, _count: u64) {}
}
