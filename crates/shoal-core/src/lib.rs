//! shoal's engine, in pure Rust with no Python in it.
//!
//! An [`Engine`] runs a pool of worker processes. Callers create jobs, add
//! chunks of opaque bytes to them, and take the outcomes back, in order or as
//! they complete. The engine decides which worker runs each chunk, keeps each
//! job's in-flight window, orders results, kills a chunk that runs past its
//! job's deadline or is cancelled, counts what every worker and job did, and
//! notices at once when a worker dies, failing exactly the chunk that killed
//! it.
//!
//! Where things happen:
//! - `chunking`: chunk-size policy ([`map_chunks`], [`window_chunks`], and
//!   the adaptive size a job's [`Engine::chunk_hint`] gives);
//! - [`frame`]: the wire format, the one codec for both sides;
//! - `funcs`: pickled functions, shared by jobs and sent to a worker once;
//! - `scheduler`: which worker gets the next chunk;
//! - `supervise`: launching workers, reading results, noticing deaths,
//!   settling what a dead worker held;
//! - `ordering` and `window`: result order and the bound on work in flight;
//! - `stats`: the counters;
//! - `launch`: how workers are started ([`Launcher`]): processes, or threads
//!   of this process ([`ThreadLauncher`]);
//! - `engine`: the I/O thread, deadlines, cancel, and the public API.
//!
//! Linux only, kernel 5.3 or newer: see [`probe_pidfd`] for what a kernel
//! must allow at run time.

// Said first, before rustc's errors about the Linux calls `sys` makes, so
// that `pip install` on another system ends with what is required.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "shoal runs on Linux only (kernel 5.3 or newer): its engine watches worker processes with pidfd_open and \
     wakes with eventfd, which this system does not have; use multiprocessing.Pool here, or run shoal on Linux \
     (WSL 2, a container or a virtual machine)."
);

mod chunking;
mod engine;
mod fasthash;
pub mod frame;
mod funcs;
mod io;
mod job;
mod launch;
mod ordering;
mod scheduler;
mod stats;
mod supervise;
mod sys;
mod window;
mod worker;

pub use chunking::{map_chunks, window_chunks, PlanError};
pub use engine::{
    live_threads, thread_ended, thread_started, Engine, EngineConfig, EngineError, ExitReport, Lifespan, Phase, Want,
};
pub use frame::Status;
pub use funcs::FuncId;
pub use job::{JobId, JobSpec, Order, Outcome};
pub use launch::{
    Exit, Launched, Launcher, SpawnLauncher, SpawnThread, ThreadExit, ThreadLauncher, ThreadStart, ZygoteLauncher,
};
pub use stats::{Counts, JobStats, Slow, SlowInput, Slowest, Snapshot, Tally, WorkerStats, KEEP_INPUT_BYTES, SLOWEST};
pub use sys::probe_pidfd;
