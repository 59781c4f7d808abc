//! A worker's outgoing frames: the batch its results wait in, and the
//! thread that sends a batch the worker cannot.
//!
//! Results wait in a batch because a write per result costs ~6 µs and a
//! task may take 1 µs (see `worker_loop.rs` for when the worker sends it).
//! But the worker sends only between tasks, so a result made just before a
//! long task would wait for that whole task: a task that waits on something
//! only an earlier result lets happen (the caller opens a gate, a barrier
//! needs the caller's next submit) would wait forever. So while a task runs
//! with results unsent, a flusher thread sends any batch older than
//! [`STALL_NS`]. It holds no GIL (the batch is Rust bytes), so a task inside C
//! code holding the GIL does not stop it either. It exits once batches stay
//! empty, and [`Outbox::quiesce`] stops it before the process forks, so a
//! worker with no task running has one thread, as `os.fork` in a task
//! expects (CPython warns about forking a threaded process).

use crate::worker_loop::now_ns;
use crate::ThreadCount;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Age at which the flusher sends a batch the worker has not: the longest a
/// result waits behind a task, give or take one [`TICK`].
const STALL_NS: i64 = 1_000_000;
/// How often the flusher looks: rarely, as it competes for the cores the
/// tasks run on, and a result late by a few ms is no hang.
const TICK: Duration = Duration::from_millis(4);
/// Looks in a row that found nothing to send before the flusher exits.
const IDLE_TICKS: u32 = 25;
/// A batch buffer larger than this is freed after a send, not kept.
const KEEP_CAPACITY: usize = 4 << 20;

/// The batch and the flusher's state, under one lock: whoever holds it may
/// write to the channel, so frames go out whole and in order.
struct Batch {
    bytes: Vec<u8>,
    /// Frames in `bytes`.
    frames: usize,
    /// The flusher thread, while it runs.
    flusher: Option<JoinHandle<()>>,
    /// Tells the flusher to exit now.
    stop: bool,
    /// A write failed (the parent is gone): nothing more is sent.
    broken: bool,
}

struct Shared {
    fd: RawFd,
    batch: Mutex<Batch>,
    /// When the first frame in the batch was made (`now_ns`); 0 while it is
    /// empty. Changed only with the lock held; read without it by the
    /// worker's own thread before each task (the only thread that adds).
    since: AtomicI64,
    /// The flusher runs (changed only with the lock held).
    flushing: AtomicBool,
    /// Wakes the flusher early to stop.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write the whole batch (the lock held, so nothing interleaves).
    fn send(&self, b: &mut Batch) -> io::Result<()> {
        if b.bytes.is_empty() || b.broken {
            b.bytes.clear();
            b.frames = 0;
            self.since.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let written = write_all(self.fd, &b.bytes);
        if b.bytes.capacity() > KEEP_CAPACITY {
            b.bytes = Vec::new();
        } else {
            b.bytes.clear();
        }
        b.frames = 0;
        self.since.store(0, Ordering::Relaxed);
        if written.is_err() {
            b.broken = true;
        }
        written
    }

    fn flusher(&self) {
        let _counted = ThreadCount::new();
        let mut idle = 0;
        let mut b = self.lock();
        while !b.stop {
            match self.since.load(Ordering::Relaxed) {
                0 => idle += 1,
                at if now_ns() - at >= STALL_NS => {
                    idle = 0;
                    let _ = self.send(&mut b);
                }
                _ => idle = 0,
            }
            if idle > IDLE_TICKS {
                break;
            }
            b = self.wake.wait_timeout(b, TICK).unwrap_or_else(|e| e.into_inner()).0;
        }
        // Exiting: the next task that runs with results unsent starts another.
        b.flusher = None;
        self.flushing.store(false, Ordering::Relaxed);
    }
}

/// `data` written to `fd` whole, retrying short writes and interruptions.
fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from a live slice to a descriptor this worker owns.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// The frames a worker sends on channel `fd`, batched; see the module doc.
#[pyclass(frozen, module = "shoal._shoal", name = "Outbox")]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Add one frame, `header` then `body`, made at `made_ns`
    /// ([`now_ns`]); returns the frames waiting.
    pub(crate) fn push(&self, header: &[u8], body: &[u8], made_ns: i64) -> usize {
        let mut b = self.shared.lock();
        if b.frames == 0 {
            self.shared.since.store(made_ns, Ordering::Relaxed);
        }
        b.bytes.extend_from_slice(header);
        b.bytes.extend_from_slice(body);
        b.frames += 1;
        b.frames
    }

    /// A task is about to run at `now_ns`: whether the frames waiting must
    /// go first (the task runs alone, or the oldest is `flush_ns` old).
    /// Otherwise, with frames waiting, make sure the flusher runs, so they
    /// go out even if the task takes long.
    pub(crate) fn before_task(&self, now_ns: i64, alone: bool, flush_ns: i64) -> bool {
        // No lock in the common cases: only this thread adds frames, so a
        // batch seen empty stays so, and one the flusher empties meanwhile
        // is at worst flushed again (a no-op) or watched for nothing. A
        // flusher seen running has not decided to exit: it decides with
        // the lock held, and would have seen these frames.
        let since = self.shared.since.load(Ordering::Relaxed);
        if since == 0 {
            return false;
        }
        if alone || now_ns - since > flush_ns {
            return true;
        }
        if self.shared.flushing.load(Ordering::Relaxed) {
            return false;
        }
        let mut b = self.shared.lock();
        if b.flusher.is_none() && !b.broken {
            b.stop = false;
            let shared = Arc::clone(&self.shared);
            // No thread: the batch goes out between tasks, as before.
            if let Ok(handle) = std::thread::Builder::new()
                .name("shoal-flusher".into())
                .spawn(move || shared.flusher())
            {
                b.flusher = Some(handle);
                self.shared.flushing.store(true, Ordering::Relaxed);
            }
        }
        false
    }
}

#[pymethods]
impl Outbox {
    #[new]
    fn new(fd: RawFd) -> Self {
        Outbox {
            shared: Arc::new(Shared {
                fd,
                batch: Mutex::new(Batch {
                    bytes: Vec::new(),
                    frames: 0,
                    flusher: None,
                    stop: false,
                    broken: false,
                }),
                since: AtomicI64::new(0),
                flushing: AtomicBool::new(false),
                wake: Condvar::new(),
            }),
        }
    }

    /// Send every frame waiting, without the GIL.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &self.shared;
        // Called before every blocking read: nothing waiting (only this
        // thread adds, and a send clears `since` once the frames are out)
        // costs no GIL hand-over.
        if shared.since.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        py.detach(|| shared.send(&mut shared.lock()))
            .map_err(|e| PyOSError::new_err((e.raw_os_error().unwrap_or(0), e.to_string())))
    }

    /// Send what waits and stop the flusher: called before this process
    /// forks, so the fork sees one thread. The next task that runs with
    /// results unsent starts it again.
    fn quiesce(&self, py: Python<'_>) {
        let shared = &self.shared;
        py.detach(|| {
            let handle = {
                let mut b = shared.lock();
                let _ = shared.send(&mut b);
                b.stop = true;
                shared.flushing.store(false, Ordering::Relaxed);
                b.flusher.take()
            };
            shared.wake.notify_all();
            if let Some(h) = handle {
                let _ = h.join();
            }
        });
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut b = self.shared.lock();
        b.stop = true;
        drop(b);
        self.shared.wake.notify_all();
    }
}
