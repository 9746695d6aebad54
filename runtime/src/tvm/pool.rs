//! The persistent thread pool behind `TVMBackendParallelLaunch`: workers spin briefly, then
//! sleep, waiting for the next launch, so a launch costs a few microseconds, not a thread spawn.
//! A launch from inside [`crate::threads::Threads::run`] is split into at most that many tasks;
//! workers whose id is past the task count sit it out.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `TVMParallelGroupEnv`.
#[repr(C)]
pub struct ParallelEnv {
    pub sync_handle: *mut c_void,
    pub num_task: i32,
}

/// The body of a parallel loop: `int f(int task_id, TVMParallelGroupEnv* env, void* cdata)`.
pub type ParallelLambda = unsafe extern "C" fn(c_int, *mut ParallelEnv, *mut c_void) -> c_int;

/// Environment variable overriding the number of threads kernels use.
pub const THREADS_ENV: &str = "AVA_NUM_THREADS";
/// Threads asked for by [`request_threads`] before the pool started (0: none).
static REQUESTED: AtomicUsize = AtomicUsize::new(0);
/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

struct Job {
    f: ParallelLambda,
    cdata: *mut c_void,
    env: *mut ParallelEnv,
}

struct Pool {
    /// Worker threads started (a launch uses them plus the calling thread).
    workers: AtomicUsize,
    /// Serialises launches; a launch that finds it taken runs its tasks inline.
    launch: Mutex<()>,
    /// Launch counter: workers start a task when it moves.
    generation: AtomicUsize,
    /// Tasks of the current launch not yet finished.
    remaining: AtomicUsize,
    /// Failed tasks of the current launch.
    failures: AtomicUsize,
    /// The current launch: its generation, task count and job (`None` between launches).
    job: Mutex<Launch>,
    wake: Condvar,
    sleep: Mutex<()>,
}

#[derive(Clone, Copy, Default)]
struct Launch {
    generation: usize,
    tasks: usize,
    job: Option<JobPtr>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the job outlives the launch, which waits for every worker to finish with it.
unsafe impl Send for JobPtr {}

static POOL: OnceLock<&'static Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let requested = REQUESTED.load(Ordering::Acquire);
        let wanted = Some(requested)
            .filter(|&n| n > 0)
            .or_else(|| std::env::var(THREADS_ENV).ok().and_then(|v| v.parse().ok()))
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers: AtomicUsize::new(0),
            launch: Mutex::new(()),
            generation: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            job: Mutex::new(Launch::default()),
            wake: Condvar::new(),
            sleep: Mutex::new(()),
        }));
        for id in 1..wanted {
            let spawned = std::thread::Builder::new()
                .name(format!("ava-tvm-{id}"))
                .spawn(move || worker(pool, id));
            if spawned.is_err() {
                break;
            }
            pool.workers.store(id, Ordering::Release);
        }
        pool
    })
}

/// Threads a launch uses.
pub fn threads() -> usize {
    pool().workers.load(Ordering::Acquire) + 1
}

/// Sizes the pool to `n` threads when it starts (before any kernel runs); a pool already
/// running another count is an error.
pub(crate) fn request_threads(n: usize) -> crate::Result<()> {
    REQUESTED.store(n, Ordering::Release);
    let Some(pool) = POOL.get() else {
        return Ok(());
    };
    let running = pool.workers.load(Ordering::Acquire) + 1;
    if running != n {
        return Err(crate::Error::Request(format!(
            "the kernel thread pool already runs {running} threads, {n} asked for"
        )));
    }
    Ok(())
}

fn worker(pool: &'static Pool, id: usize) {
    let mut seen = 0;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = pool.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a spin: look at it every 64 rounds.
            if spins % 64 != 0 || started.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
            if pool.generation.load(Ordering::Acquire) == seen {
                let _ = pool.wake.wait_timeout(guard, Duration::from_millis(50));
            }
        }
        let launch = *pool.job.lock().unwrap_or_else(|e| e.into_inner());
        // A launch started after the one seen is taken as it is: the worker joins it once.
        seen = seen.max(launch.generation);
        if let (Some(JobPtr(job)), true) = (launch.job, id < launch.tasks) {
            // SAFETY: the launching thread keeps `job` alive until `remaining` reaches zero.
            let job = unsafe { &*job };
            // SAFETY: TVM's contract for parallel lambdas.
            if unsafe { (job.f)(id as i32, job.env, job.cdata) } != 0 {
                pool.failures.fetch_add(1, Ordering::AcqRel);
            }
            pool.remaining.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// `TVMBackendParallelLaunch`, the host hook kernels call for a parallel loop: runs `f` on the
/// persistent pool.
pub unsafe extern "C" fn parallel_launch(
    f: ParallelLambda,
    cdata: *mut c_void,
    _num_task: c_int,
) -> c_int {
    launch(f, cdata)
}

/// Runs `f(task, env, cdata)` for every task id, on the pool; returns 0 or -1.
fn launch(f: ParallelLambda, cdata: *mut c_void) -> i32 {
    let pool = pool();
    let n = match crate::threads::tvm_task_cap() {
        0 => threads(),
        cap => cap.min(threads()),
    };
    let mut env = ParallelEnv {
        sync_handle: std::ptr::null_mut(),
        num_task: n as i32,
    };
    let Ok(_guard) = pool.launch.try_lock() else {
        // Another thread's launch holds the pool: run every task here.
        let mut rc = 0;
        for task in 0..n {
            // SAFETY: TVM's contract for parallel lambdas.
            rc |= unsafe { f(task as i32, &mut env, cdata) };
        }
        return if rc == 0 { 0 } else { -1 };
    };
    let job = Job {
        f,
        cdata,
        env: &mut env,
    };
    pool.failures.store(0, Ordering::Release);
    pool.remaining.store(n - 1, Ordering::Release);
    {
        let mut launch = pool.job.lock().unwrap_or_else(|e| e.into_inner());
        *launch = Launch {
            generation: pool.generation.load(Ordering::Acquire) + 1,
            tasks: n,
            job: Some(JobPtr(&job)),
        };
        let _s = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
        pool.generation.fetch_add(1, Ordering::AcqRel);
        pool.wake.notify_all();
    }
    // SAFETY: TVM's contract for parallel lambdas.
    let rc = unsafe { f(0, job.env, cdata) };
    let mut spins = 0u32;
    while pool.remaining.load(Ordering::Acquire) != 0 {
        // On a machine busy with other processes a worker may be descheduled: after a short
        // spin, give the core away instead of burning the time slice it needs.
        spins = spins.saturating_add(1);
        if spins < 4096 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    pool.job.lock().unwrap_or_else(|e| e.into_inner()).job = None;
    if rc == 0 && pool.failures.load(Ordering::Acquire) == 0 {
        0
    } else {
        -1
    }
}
