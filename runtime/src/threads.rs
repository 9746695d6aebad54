//! How many threads the kernels use. The native kernels run on rayon, the TVM kernels on the
//! pool of [`crate::tvm`]; [`set_process_threads`] sizes both for the whole process (the CLI's
//! `--threads`), a [`Threads`] runs one engine's or classifier's calls on `n` threads (the C
//! and Java open options).

use std::cell::Cell;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Most threads a pool may be asked for.
pub const MAX_THREADS: usize = 1024;

thread_local! {
    /// Tasks a TVM parallel launch from this thread is split into (0: the whole pool).
    static TVM_TASKS: Cell<usize> = const { Cell::new(0) };
}

/// The TVM task cap of the calling thread (0: none).
pub(crate) fn tvm_task_cap() -> usize {
    TVM_TASKS.with(Cell::get)
}

fn check(n: usize) -> Result<()> {
    if n == 0 || n > MAX_THREADS {
        return Err(Error::Request(format!(
            "thread count {n}: must be between 1 and {MAX_THREADS}"
        )));
    }
    Ok(())
}

/// Sizes the process's kernel pools (rayon's global pool and the TVM pool) to `n` threads.
/// Call it before any model runs: a pool already started with another size is an error.
pub fn set_process_threads(n: usize) -> Result<()> {
    check(n)?;
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .is_ok();
    if !built && rayon::current_num_threads() != n {
        return Err(Error::Request(format!(
            "the thread pool already runs {} threads, {n} asked for",
            rayon::current_num_threads()
        )));
    }
    crate::tvm::pool::request_threads(n)
}

/// A thread count for one engine or classifier: its calls run on a pool of their own.
#[derive(Clone, Default)]
pub struct Threads {
    /// `None`: the process's pools.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("count", &self.count())
            .finish()
    }
}

impl Threads {
    /// `n` threads of their own; 0 shares the process's pools.
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 {
            return Ok(Self::default());
        }
        check(n)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("ava-kernels-{i}"))
            .build()
            .map_err(|e| Error::Request(format!("starting {n} threads: {e}")))?;
        Ok(Threads {
            pool: Some(Arc::new(pool)),
        })
    }

    /// Threads the calls use.
    pub fn count(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `f` on these threads: rayon work inside goes to this pool, TVM launches are split
    /// into at most as many tasks.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let Some(pool) = &self.pool else {
            return f();
        };
        let n = pool.current_num_threads();
        pool.install(|| {
            let previous = TVM_TASKS.with(|c| c.replace(n));
            let out = f();
            TVM_TASKS.with(|c| c.set(previous));
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pools_run_on_their_threads() {
        let t = Threads::new(3).unwrap();
        assert_eq!(t.count(), 3);
        assert_eq!(t.run(rayon::current_num_threads), 3);
        assert_eq!(t.run(tvm_task_cap), 3);
        assert_eq!(tvm_task_cap(), 0);
        let shared = Threads::new(0).unwrap();
        assert_eq!(
            shared.run(rayon::current_num_threads),
            rayon::current_num_threads()
        );
    }

    #[test]
    fn counts_out_of_range_are_refused() {
        assert!(Threads::new(MAX_THREADS + 1).is_err());
        assert!(set_process_threads(0).is_err());
    }
}
