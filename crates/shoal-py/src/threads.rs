//! Thread workers: the engine's [`ThreadLauncher`] with a callback that
//! starts each worker as a thread of this process, running the same worker
//! loop a process runs (`shoal._threads.serve`, over
//! `crates/shoal-py/src/worker_loop.rs`) on its end of the channel.
//!
//! The launch runs on the engine's thread with its lock held, so it must
//! not wait for the GIL: it only starts an OS thread, which attaches to the
//! interpreter itself.

use crate::ThreadCount;
use pyo3::prelude::*;
use shoal_core::{ThreadLauncher, ThreadStart};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A pool's worker threads, so that its `join` can wait for the OS threads
/// themselves to end, not only for their workers to report that they
/// ended: a thread that has reported its exit still runs for a moment, and
/// a pool that returns from `join` leaves none of its threads behind (a
/// default pool started next counts them: `_start._fork_zygote`).
#[derive(Clone, Default)]
pub(crate) struct Threads(Arc<Mutex<Vec<Started>>>);

/// One worker thread, and whether its worker has reported its end (then
/// nothing is left for the thread to do but end).
struct Started {
    handle: JoinHandle<()>,
    reported: Arc<AtomicBool>,
}

impl Threads {
    fn add(&self, started: Started) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Threads replaced on the way (a lifespan) are gone already.
        all.retain(|s| !s.handle.is_finished());
        all.push(started);
    }

    /// Join every thread whose worker has reported its end. One that has
    /// not (its task never returned, and terminate counted it ended) runs
    /// on alone, as a thread that cannot be killed must; it is not waited for.
    pub(crate) fn join_ended(&self) {
        let me = std::thread::current().id();
        let ended: Vec<Started> = {
            let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let (ended, running) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|s| s.reported.load(Ordering::Acquire) && s.handle.thread().id() != me);
            *all = running;
            ended
        };
        for s in ended {
            let _ = s.handle.join();
        }
    }
}

/// A launcher whose workers are threads that call `serve(fd, slot)` and
/// exit with the int it returns, and the threads it starts.
pub(crate) fn launcher(serve: Py<PyAny>) -> (ThreadLauncher, Threads) {
    let serve = Arc::new(serve);
    let threads = Threads::default();
    let registry = threads.clone();
    let launcher = ThreadLauncher::new(Box::new(move |start: ThreadStart| {
        let serve = serve.clone();
        let counted = ThreadCount::new();
        let reported = Arc::new(AtomicBool::new(false));
        let flag = reported.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shoal-worker-{}", start.slot))
            .spawn(move || {
                let _counted = counted;
                let ThreadStart { slot, channel, exit } = start;
                // Python only borrows the descriptor: it is closed here,
                // after the loop, whatever happened in it.
                let code = Python::try_attach(|py| {
                    let code = match serve.bind(py).call1((channel.as_raw_fd(), slot)) {
                        Ok(v) => v.extract::<i32>().unwrap_or(1),
                        Err(e) => {
                            e.write_unraisable(py, None);
                            1
                        }
                    };
                    // Let go of the pool's objects here, with the GIL, before
                    // the end is reported: once the engine has seen every
                    // worker end, no worker thread holds anything of the pool.
                    drop(serve);
                    code
                });
                drop(channel);
                // Before the report: whoever sees the engine stopped may join.
                flag.store(true, Ordering::Release);
                // None: the interpreter is shutting down; nothing ran.
                exit.exited(code.unwrap_or(0));
            })?;
        registry.add(Started { handle, reported });
        Ok(())
    }));
    (launcher, threads)
}
