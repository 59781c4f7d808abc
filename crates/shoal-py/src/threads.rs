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
use std::sync::Arc;

/// A launcher whose workers are threads that call `serve(fd, slot)` and
/// exit with the int it returns.
pub(crate) fn launcher(serve: Py<PyAny>) -> ThreadLauncher {
    let serve = Arc::new(serve);
    ThreadLauncher::new(Box::new(move |start: ThreadStart| {
        let serve = serve.clone();
        let counted = ThreadCount::new();
        std::thread::Builder::new()
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
                // None: the interpreter is shutting down; nothing ran.
                exit.exited(code.unwrap_or(0));
            })
            .map(drop)
    }))
}
