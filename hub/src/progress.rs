//! How the client reports bytes: a [`Progress`] sink the caller provides (the CLI adapts its
//! terminal progress bar to it; [`NoProgress`] discards everything).

/// Receives byte counts while files download. Called from several download threads at once.
pub trait Progress: Sync {
    /// `bytes` more are expected (a file about to be fetched, or bytes of a restarted one).
    fn add_total(&self, bytes: u64);
    /// `bytes` more were received.
    fn advance(&self, bytes: u64);
}

/// A [`Progress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn add_total(&self, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}
