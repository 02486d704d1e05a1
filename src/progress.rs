//! Progress reporting from long library calls, without tying the library to a terminal: the
//! command line implements [`Progress`] with progress bars, library users pass [`NoProgress`] or
//! their own.

/// Receives progress events. A long call announces each stage with [`Progress::start`] (its
/// name and number of steps, 0 when unknown) and then counts its steps with [`Progress::inc`].
/// Calls may come from several threads.
pub trait Progress: Sync {
    /// A new stage of `len` steps begins.
    fn start(&self, _what: &str, _len: u64) {}
    /// `n` more steps are done.
    fn inc(&self, _n: u64) {}
    /// A short status line for the current stage.
    fn message(&self, _msg: &str) {}
    /// The current stage is over.
    fn finish(&self) {}
}

/// Ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
