//! shoal's engine, in pure Rust with no Python in it.
//!
//! An [`Engine`] runs a pool of worker processes. Callers create jobs, add
//! chunks of opaque bytes to them, and take the outcomes back, in order or as
//! they complete. The engine decides which worker runs each chunk, keeps each
//! job's in-flight window, orders results, and notices at once when a worker
//! dies, failing exactly the chunk it was running.
//!
//! Where things happen:
//! - [`chunking`]: chunk-size policy;
//! - [`frame`]: the wire format;
//! - [`funcs`]: pickled functions, shared by jobs and sent to a worker once;
//! - [`scheduler`]: which worker gets the next chunk;
//! - [`supervise`]: launching workers, reading results, noticing deaths;
//! - [`ordering`] and [`window`]: result order and the bound on work in flight;
//! - [`launch`]: how worker processes are started;
//! - [`engine`]: the I/O thread and the public API.

pub mod chunking;
pub mod engine;
pub mod fasthash;
pub mod frame;
pub mod funcs;
mod io;
pub mod job;
pub mod launch;
pub mod ordering;
pub mod scheduler;
pub mod supervise;
pub mod sys;
pub mod window;
pub mod worker;

pub use engine::{live_threads, Engine, EngineConfig, EngineError, Phase, Want};
pub use funcs::FuncId;
pub use job::{JobId, Order, Outcome};
pub use launch::{Exit, Launcher, SpawnLauncher, ZygoteLauncher};
