//! `JobResult`: the one result object behind `apply_async`, `map_async`
//! and the Executor's futures, in Rust. An Executor's future holds one and
//! takes its outcome when asked (`_outcome`), or once armed
//! (`_wake_on_outcome`) when something waits on it.
//!
//! One is made per `apply_async` call, so making it and `get` are on the
//! per-task path: as a Python object with a lock and ten attributes they
//! cost ~2.5 µs of the ~5 µs the parent spent per task. A map's result takes
//! each chunk's outcome as it arrives and decodes it then, while the workers
//! run the rest.
//!
//! Decoding has one fast case, a property of the data: a one-item chunk
//! that succeeded is unpickled here (or unpacked, `packed.rs`). Every other
//! outcome goes to the Python decoder, `shoal._results.decode`.
//!
//! Garbage collection: the object reports every reference it holds
//! (`__traverse__`) and drops them on request (`__clear__`), so a cycle
//! through it (a task's exception whose traceback holds the frame that holds
//! the result, say) is collected. A result made without callbacks starts
//! untracked, because 20k results waiting in a list were walked by every
//! collection their own creation set off (~10% of the parent's time for
//! 20k `apply_async`), and nothing it holds then can lead back to it; it is
//! tracked from the moment it holds something that can.
//!
//! A result with callbacks (`apply_async` with a callback, the future
//! `loop.run_in_executor` gets) is made by `Engine.apply_result`
//! ([`JobResult::create_applied`]): it is filed with the callback thread
//! under a reserved job id, then the call goes to the engine with its
//! watch flag. Watching it afterwards
//! (`Engine.watch`) took the engine's state lock on the caller's thread,
//! and with it the I/O thread's work of creating the job, which made a
//! callback cost ~2 µs more per task. The callback thread resolves a
//! result it finds filed directly, not through a Python call of `_resolve`.
//!
//! Awaiting (`await result`, `shoal._results._await_result`): the event
//! loop registers a waker, which whoever sets the outcome calls: the
//! engine's callback thread, through the same watch a result with callbacks
//! uses, or a thread that called `get`. No thread waits per result, and a
//! result nobody awaits pays nothing (the wakers live in [`More`]).

use crate::{packed_values, single_value, PyEngine};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};
use pyo3::{ffi, PyTraverseError, PyVisit};
use shoal_core::Outcome;
use shoal_core::{Engine, Status};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

static TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static AWAIT_RESULT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The caller's callbacks; `__clear__` drops them.
pub(crate) struct Hooks {
    callback: Option<Py<PyAny>>,
    error_callback: Option<Py<PyAny>>,
    /// Told the outcome instead, as `settle_on._shoal_settle(ok, value)`:
    /// the future `loop.run_in_executor` gets (`shoal._aio.LoopFuture`),
    /// which so needs no bound method per call.
    settle_on: Option<Py<PyAny>>,
}

impl Hooks {
    pub(crate) fn new(
        callback: Option<Py<PyAny>>,
        error_callback: Option<Py<PyAny>>,
        settle_on: Option<Py<PyAny>>,
    ) -> Option<Hooks> {
        (callback.is_some() || error_callback.is_some() || settle_on.is_some()).then_some(Hooks {
            callback,
            error_callback,
            settle_on,
        })
    }
}

/// What [`JobResult::finish`] runs before it sets the outcome.
enum Hook {
    Call(Py<PyAny>),
    Settle(Py<PyAny>),
}

/// What a result holds as it fills; every Python reference in it is
/// reported to the collector.
#[derive(Default)]
struct Held {
    /// `(succeeded, value or exception)`, once known.
    outcome: Option<(bool, Py<PyAny>)>,
    /// The rest, made only for a result that needs it (callbacks, a map,
    /// an interrupted decode): one is made per `apply_async` call, and its
    /// size is paid in allocating, filling and caching it.
    more: Option<Box<More>>,
}

/// The part of [`Held`] most results never use.
#[derive(Default)]
struct More {
    hooks: Option<Hooks>,
    /// A map's values so far, in order: the list `get` returns.
    values: Option<Py<PyList>>,
    /// A map's first failed item, by position.
    first_error: Option<(u64, Py<PyAny>)>,
    /// Chunks decoded so far.
    taken: usize,
    /// Outcomes taken from the engine and not decoded yet: decoding them
    /// runs Python, which Ctrl-C can interrupt, and an interrupted call
    /// must leave them for the next.
    backlog: VecDeque<Outcome>,
    /// Called without arguments once the outcome is set (or a decode was
    /// interrupted, so a waiter looks again): event loops awaiting it.
    wakers: Vec<Py<PyAny>>,
    /// `_resolve` is registered with the engine's callback thread for a
    /// result made without callbacks (one with callbacks has it from birth).
    watched: bool,
}

impl More {
    /// Whether the engine's callback thread will call `_resolve`.
    fn watched(&self) -> bool {
        self.watched || self.hooks.is_some()
    }
}

impl Held {
    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    /// Set the outcome; the wakers to call once the lock is let go.
    fn settle(&mut self, outcome: (bool, Py<PyAny>)) -> Vec<Py<PyAny>> {
        self.outcome = Some(outcome);
        self.take_wakers()
    }

    fn take_wakers(&mut self) -> Vec<Py<PyAny>> {
        self.more
            .as_mut()
            .map(|m| std::mem::take(&mut m.wakers))
            .unwrap_or_default()
    }
}

/// Call each waker; one that raises is reported, and the rest still run.
fn wake(py: Python<'_>, wakers: Vec<Py<PyAny>>) {
    for w in wakers {
        if let Err(e) = w.call0(py) {
            e.write_unraisable(py, Some(w.bind(py)));
        }
    }
}

/// The result of one `apply_async` (one value) or `map_async` (a list):
/// `get`, `wait`, `ready` and `successful`, as
/// `multiprocessing.pool.AsyncResult` has them.
#[pyclass(frozen, module = "shoal._shoal", name = "JobResult")]
pub struct JobResult {
    /// The engine and the job; `None` for a call that failed before it
    /// reached the engine.
    target: Option<(Py<PyEngine>, u32)>,
    /// Unpickles a one-item result. Like `decode`, a module's function:
    /// reported to the collector, never cleared (it cannot lead back here),
    /// and read without a lock on the per-task path.
    loads: Py<PyAny>,
    /// `decode(status, single, payload, n_items) -> (values, errors)` for
    /// every other outcome (`shoal._results.decode`).
    decode: Py<PyAny>,
    /// For a map, each chunk's item count and the input index of its first
    /// item; `None` for one value.
    chunks: Option<Box<[(u32, u64)]>>,
    held: Mutex<Held>,
    /// The outcome is set: read without the lock, once per call, on the
    /// per-task path.
    known: AtomicBool,
    /// A one-value result's outcome waits in `backlog`: its decoding was
    /// interrupted.
    stashed: AtomicBool,
    /// The thread taking outcomes from the engine and decoding them (0:
    /// none), a lock of its own: a second thread waits for them instead of
    /// finding them gone (never while holding the GIL, see `collect_guard`),
    /// and a callback or decoder that asks about its own result is told
    /// "not ready" instead of waiting for itself.
    collector: AtomicU64,
}

impl JobResult {
    /// A result for job `job` of `engine`; `lens` gives items per chunk for
    /// a map. One value without callbacks is made untracked (see the
    /// module docs).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create<'py>(
        py: Python<'py>,
        engine: Py<PyEngine>,
        job: u32,
        lens: Option<Vec<u32>>,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
        callback: Option<Py<PyAny>>,
        error_callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, JobResult>> {
        let watched = callback.is_some() || error_callback.is_some();
        let is_map = lens.is_some();
        let chunks = lens.map(|lens| {
            let mut start = 0u64;
            lens.into_iter()
                .map(|n| {
                    let at = start;
                    start += u64::from(n);
                    (n, at)
                })
                .collect()
        });
        let target = Some((engine, job));
        let this = Bound::new(
            py,
            JobResult::fresh(
                target,
                loads,
                decode,
                chunks,
                Hooks::new(callback, error_callback, None),
            ),
        )?;
        if !watched && !is_map {
            // SAFETY: a live object of a GC type, with the GIL held. Its
            // deallocator untracks it again, which is allowed for an
            // untracked object.
            unsafe { ffi::PyObject_GC_UnTrack(this.as_ptr().cast()) };
        }
        if watched {
            let (engine, _) = this.get().target.as_ref().expect("made with an engine");
            engine.get().watch_job(job, this.clone().into_any().unbind())?;
        }
        Ok(this)
    }

    /// `engine.apply` of one chunk and its result, watched from the job's
    /// creation: the result is filed with the callback thread under a
    /// reserved id before the call reaches the engine, so however soon the
    /// job ends, the thread finds it (see `PyEngine::apply_result`).
    ///
    /// A result told to `settle_on` is made untracked, as one without
    /// callbacks is: the object it tells never holds its result object (an
    /// `Executor` keeps it from its callers), so no cycle runs through it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_applied<'py>(
        engine: &Bound<'py, PyEngine>,
        func: u32,
        task_bits: u8,
        payload: Vec<u8>,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
        hooks: Option<Hooks>,
    ) -> PyResult<Bound<'py, JobResult>> {
        let py = engine.py();
        let owner = engine.get();
        let core = owner.engine()?;
        let job = core.reserve_job();
        let hooked = hooks.is_some();
        let settles = hooks.as_ref().is_some_and(|h| h.settle_on.is_some());
        let target = Some((engine.clone().unbind(), job));
        let this = Bound::new(py, JobResult::fresh(target, loads, decode, None, hooks))?;
        if settles {
            // SAFETY: as in `create`.
            unsafe { ffi::PyObject_GC_UnTrack(this.as_ptr().cast()) };
        }
        if !hooked {
            // Watched all the same: an await registers no second watch.
            this.get().lock().more().watched = true;
        }
        owner.file_watch(job, this.clone().into_any().unbind());
        if let Err(e) = core.apply_as(job, func, task_bits, payload, true) {
            drop(owner.unwatch_job(job));
            return Err(crate::engine_err(e));
        }
        Ok(this)
    }

    /// The engine's callback thread heard that the watched job finished.
    pub(crate) fn watched_done(slf: &Bound<'_, Self>) -> PyResult<()> {
        let resolved = Self::resolve(slf);
        if resolved.is_err() {
            // Decoding failed here: an awaiting loop looks for itself, and
            // meets the error there.
            let wakers = slf.get().lock().take_wakers();
            wake(slf.py(), wakers);
        }
        resolved.map(|_| ())
    }

    /// A result with no outcome yet, for `job` of `engine` if it has one.
    fn fresh(
        target: Option<(Py<PyEngine>, u32)>,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
        chunks: Option<Box<[(u32, u64)]>>,
        hooks: Option<Hooks>,
    ) -> JobResult {
        JobResult {
            target,
            loads,
            decode,
            chunks,
            held: Mutex::new(Held {
                outcome: None,
                more: hooks.map(|hooks| {
                    Box::new(More {
                        hooks: Some(hooks),
                        ..More::default()
                    })
                }),
            }),
            known: AtomicBool::new(false),
            stashed: AtomicBool::new(false),
            collector: AtomicU64::new(0),
        }
    }

    /// The engine and the job, if the call reached the engine.
    fn engine_job(&self) -> Option<(&Py<PyEngine>, u32)> {
        self.target.as_ref().map(|(engine, job)| (engine, *job))
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic while holding it cannot leave `Held` half-changed in a
        // way that matters more than losing the result; go on.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outcome(&self, py: Python<'_>) -> Option<(bool, Py<PyAny>)> {
        self.lock().outcome.as_ref().map(|(ok, v)| (*ok, v.clone_ref(py)))
    }

    /// Whether this thread is the collector: it is running this result's
    /// callback or decoder.
    fn collecting_here(&self) -> bool {
        self.collector.load(Ordering::Acquire) == this_thread()
    }

    /// Become the collector without ever blocking while holding the GIL:
    /// the collector may be running a callback that needs it. A long wait
    /// (a slow callback) sleeps rather than spins, and Ctrl-C ends it.
    fn collect_guard(&self, py: Python<'_>) -> PyResult<Collecting<'_>> {
        let me = this_thread();
        let mut tries = 0u32;
        while self
            .collector
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            tries += 1;
            if tries < 16 {
                py.detach(std::thread::yield_now);
            } else {
                py.detach(|| std::thread::sleep(std::time::Duration::from_millis(1)));
                py.check_signals()?;
            }
        }
        Ok(Collecting { owner: &self.collector })
    }

    /// Take and decode what has arrived; true once the outcome is known.
    ///
    /// Wakers run once this thread is no longer the collector: a waker may
    /// wait for a lock whose holder is waiting, in `collect_guard`, to
    /// become the collector (an Executor future's lock, held by
    /// `concurrent.futures.wait` while it reads the future's state).
    fn resolve(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let mut woken = Vec::new();
        let resolved = Self::resolve_collecting(slf, &mut woken);
        wake(slf.py(), woken);
        resolved
    }

    /// [`JobResult::resolve`] as the collector; the wakers to call after.
    fn resolve_collecting(slf: &Bound<'_, Self>, woken: &mut Vec<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if this.known.load(Ordering::Acquire) {
            return Ok(true);
        }
        if this.collecting_here() {
            // Asked from its own callback or decoder: not ready yet.
            return Ok(false);
        }
        let _guard = this.collect_guard(py)?;
        if this.known.load(Ordering::Acquire) {
            return Ok(true);
        }
        let Some((engine, job)) = this.engine_job() else {
            return Ok(true);
        };
        let engine = engine.get().engine()?;
        let outcome = match &this.chunks {
            None => this.take_one(py, engine, job, woken)?,
            Some(chunks) => this.take_chunks(py, engine, job, chunks, woken)?,
        };
        match outcome {
            Some(outcome) => {
                this.finish(slf, outcome, woken)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One value's outcome, if its job has finished. The engine forgets the
    /// job as it hands the outcome over.
    fn take_one(
        &self,
        py: Python<'_>,
        engine: &Engine,
        job: u32,
        woken: &mut Vec<Py<PyAny>>,
    ) -> PyResult<Option<(bool, Py<PyAny>)>> {
        // An outcome an interrupted call took first, else the engine's.
        let stashed = if self.stashed.load(Ordering::Acquire) {
            self.stashed.store(false, Ordering::Release);
            self.lock().more().backlog.pop_front()
        } else {
            None
        };
        let o = match stashed {
            Some(o) => o,
            None => {
                let Some(out) = engine.collect(job) else {
                    return Ok(None);
                };
                match out.into_iter().next() {
                    Some(o) => o,
                    None => return Ok(Some((false, lost(py)))),
                }
            }
        };
        match self.decode_one(py, &o) {
            Ok(outcome) => Ok(Some(outcome)),
            Err(e) => {
                // Interrupted (Ctrl-C while unpickling): the next call decodes
                // it, and an awaiting loop is told to make that call.
                let wakers = {
                    let mut held = self.lock();
                    held.more().backlog.push_front(o);
                    held.take_wakers()
                };
                self.stashed.store(true, Ordering::Release);
                woken.extend(wakers);
                Err(e)
            }
        }
    }

    fn decode_one(&self, py: Python<'_>, o: &Outcome) -> PyResult<(bool, Py<PyAny>)> {
        if let Some(v) = single_value(py, o.status, o.single, &o.payload, self.loads.bind(py))? {
            return Ok((true, v.unbind()));
        }
        let (values, errors) = call_decode(py, &self.decode, o.status, o.single, &o.payload, 1)?;
        Ok(match first_error(&errors)? {
            Some((_, e)) => (false, e),
            None => (true, values.get_item(0)?.unbind()),
        })
    }

    /// Decode one of a map's chunks onto the end of its list; the first
    /// failed item's index in the chunk and its error, if any failed.
    fn decode_chunk(
        &self,
        py: Python<'_>,
        o: &Outcome,
        chunks: &[(u32, u64)],
        list: &Bound<'_, PyList>,
    ) -> PyResult<Option<(u64, Py<PyAny>)>> {
        if let Some(v) = single_value(py, o.status, o.single, &o.payload, self.loads.bind(py))? {
            list.append(v)?;
            return Ok(None);
        }
        if let Some(values) = packed_values(py, o.status, o.single, &o.payload) {
            extend(list, &values)?;
            return Ok(None);
        }
        let n = chunks.get(o.index as usize).map_or(1, |c| c.0);
        let (values, errors) = call_decode(py, &self.decode, o.status, o.single, &o.payload, n)?;
        let error = first_error(&errors)?;
        extend(list, &values)?;
        Ok(error)
    }

    /// Decode a map's chunks that have arrived into its list; its outcome
    /// once every chunk has, when the job is let go.
    fn take_chunks(
        &self,
        py: Python<'_>,
        engine: &Engine,
        job: u32,
        chunks: &[(u32, u64)],
        woken: &mut Vec<Py<PyAny>>,
    ) -> PyResult<Option<(bool, Py<PyAny>)>> {
        let list = self
            .lock()
            .more()
            .values
            .get_or_insert_with(|| PyList::empty(py).unbind())
            .clone_ref(py);
        let list = list.bind(py);
        let taken = engine.take(job, usize::MAX).map_err(crate::engine_err)?;
        self.lock().more().backlog.extend(taken);
        loop {
            let Some(o) = self.lock().more().backlog.pop_front() else {
                break;
            };
            let decoded = self.decode_chunk(py, &o, chunks, list);
            let error = match decoded {
                Ok(error) => error,
                Err(e) => {
                    // Interrupted: this outcome and the rest wait for the next
                    // call, which an awaiting loop is told to make.
                    let wakers = {
                        let mut held = self.lock();
                        held.more().backlog.push_front(o);
                        held.take_wakers()
                    };
                    woken.extend(wakers);
                    return Err(e);
                }
            };
            let start = chunks.get(o.index as usize).map_or(0, |c| c.1);
            let mut held = self.lock();
            let held = held.more();
            if let Some((k, e)) = error {
                if held.first_error.as_ref().is_none_or(|(at, _)| start + k < *at) {
                    held.first_error = Some((start + k, e));
                }
            }
            held.taken += 1;
        }
        let mut held = self.lock();
        let more = held.more();
        if more.taken < chunks.len() {
            return Ok(None);
        }
        let values = more.values.take();
        let error = more.first_error.take();
        drop(held);
        engine.abandon(job);
        Ok(Some(match error {
            Some((_, e)) => (false, e),
            None => (
                true,
                values.map_or_else(|| PyList::empty(py).into_any().unbind(), Py::into_any),
            ),
        }))
    }

    /// Run the callback for `outcome`, then set it: as in
    /// `multiprocessing`, a result is ready only once its callback has run.
    /// A callback that raises is reported as unraisable: it must not stop
    /// result delivery. Called with `collecting` held, or on a result no
    /// other thread can see yet. The wakers are added to `woken`, for the
    /// caller to call once it is no longer the collector.
    fn finish(&self, slf: &Bound<'_, Self>, outcome: (bool, Py<PyAny>), woken: &mut Vec<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let ok = outcome.0;
        let needs_tracking = !is_atomic(outcome.1.bind(py));
        let callback = {
            let mut held = self.lock();
            let callback = held.more.as_ref().and_then(|m| m.hooks.as_ref()).and_then(|h| {
                if let Some(target) = &h.settle_on {
                    return Some(Hook::Settle(target.clone_ref(py)));
                }
                let cb = if ok { &h.callback } else { &h.error_callback };
                cb.as_ref().map(|c| Hook::Call(c.clone_ref(py)))
            });
            if callback.is_none() {
                // The common case: nothing to run first.
                let wakers = held.settle(outcome);
                drop(held);
                self.known.store(true, Ordering::Release);
                if needs_tracking {
                    track(slf);
                }
                woken.extend(wakers);
                return Ok(());
            }
            callback
        };
        let value = outcome.1.clone_ref(py);
        if let Some(cb) = callback {
            // Resolved here: the engine's callback thread need not call back.
            if let Some((engine, job)) = self.engine_job() {
                drop(engine.get().unwatch_job(job));
            }
            let called = match cb {
                Hook::Call(cb) => cb.call1(py, (value.clone_ref(py),)),
                Hook::Settle(target) => {
                    target.call_method1(py, pyo3::intern!(py, "_shoal_settle"), (ok, value.clone_ref(py)))
                }
            };
            if let Err(e) = called {
                if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    // The outcome stands: the job's outcomes are already
                    // taken, and a retry must see them, not an empty result.
                    let wakers = self.lock().settle(outcome);
                    self.known.store(true, Ordering::Release);
                    woken.extend(wakers);
                    return Err(e);
                }
                e.write_unraisable(py, Some(slf.as_any()));
            }
        }
        let wakers = self.lock().settle(outcome);
        self.known.store(true, Ordering::Release);
        if needs_tracking {
            track(slf);
        }
        woken.extend(wakers);
        Ok(())
    }

    /// Wait for the outcome, up to `timeout` seconds; true once known.
    fn wait_resolved(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if Self::resolve(slf)? {
            return Ok(true);
        }
        let Some((engine, job)) = this.engine_job() else {
            return Ok(true);
        };
        let engine = engine.get();
        if this.collecting_here() {
            // Waiting from its own callback or decoder would wait for itself.
            if timeout.is_none() {
                return Err(PyRuntimeError::new_err(
                    "a result's own callback waited for that result, which is set only after the callback returns",
                ));
            }
            return Ok(false);
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + std::time::Duration::from_secs_f64(t.max(0.0)));
        loop {
            py.check_signals()?;
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()).as_secs_f64());
            // A map decodes each chunk as it arrives; one value waits for the end.
            let progressed = engine.wait(py, job, this.chunks.is_none(), left)?;
            if Self::resolve(slf)? {
                return Ok(true);
            }
            if !progressed || deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(false);
            }
        }
    }
}

/// This thread is the collector while this lives.
struct Collecting<'a> {
    owner: &'a AtomicU64,
}

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        self.owner.store(0, Ordering::Release);
    }
}

/// A number for the calling thread, never 0.
fn this_thread() -> u64 {
    // SAFETY: pthread_self always succeeds.
    (unsafe { libc::pthread_self() }) as u64
}

/// `decode(status, single, payload, n_items)`, as `(values, errors or None)`.
fn call_decode<'py>(
    py: Python<'py>,
    decode: &Py<PyAny>,
    status: Status,
    single: bool,
    payload: &[u8],
    n: u32,
) -> PyResult<(Bound<'py, PyList>, Option<Bound<'py, PyDict>>)> {
    let got = decode.call1(py, (status as u8, single, PyBytes::new(py, payload), n))?;
    let pair = got.bind(py).cast::<PyTuple>()?;
    let values = pair.get_item(0)?.cast_into::<PyList>()?;
    let errors = pair.get_item(1)?;
    let errors = if errors.is_none() {
        None
    } else {
        Some(errors.cast_into::<PyDict>()?)
    };
    Ok((values, errors))
}

/// The error of the lowest failed item, and its index in the chunk.
fn first_error(errors: &Option<Bound<'_, PyDict>>) -> PyResult<Option<(u64, Py<PyAny>)>> {
    let Some(errors) = errors else { return Ok(None) };
    let mut best: Option<(u64, Py<PyAny>)> = None;
    for (k, v) in errors.iter() {
        let k: u64 = k.extract()?;
        if best.as_ref().is_none_or(|(b, _)| k < *b) {
            best = Some((k, v.unbind()));
        }
    }
    Ok(best)
}

/// Append `values` to `list` in one C call (a slice assignment at the end).
pub(crate) fn extend(list: &Bound<'_, PyList>, values: &Bound<'_, PyList>) -> PyResult<()> {
    let n = list.len() as ffi::Py_ssize_t;
    // SAFETY: both are live lists and the GIL is held.
    let r = unsafe { ffi::PyList_SetSlice(list.as_ptr(), n, n, values.as_ptr()) };
    if r < 0 {
        return Err(PyErr::fetch(list.py()));
    }
    Ok(())
}

fn cleared() -> PyErr {
    PyRuntimeError::new_err("the result was cleared by the garbage collector")
}

fn lost(py: Python<'_>) -> Py<PyAny> {
    PyRuntimeError::new_err("the result was lost: its decoding was interrupted")
        .into_value(py)
        .into_any()
}

/// Whether `v` can hold no reference to anything (so a result holding it
/// needs no tracking): None, and exact bools, ints, floats, strings, bytes.
fn is_atomic(v: &Bound<'_, PyAny>) -> bool {
    let p = v.as_ptr();
    // SAFETY: type checks on a live object.
    unsafe {
        v.is_none()
            || ffi::PyBool_Check(p) != 0
            || ffi::PyLong_CheckExact(p) != 0
            || ffi::PyFloat_CheckExact(p) != 0
            || ffi::PyUnicode_CheckExact(p) != 0
            || ffi::PyBytes_CheckExact(p) != 0
    }
}

/// Let the collector see `slf`, if it does not already.
fn track(slf: &Bound<'_, JobResult>) {
    let p = slf.as_ptr();
    // SAFETY: a live GC object, with the GIL held; tracking twice is an
    // error, so it is checked first.
    unsafe {
        if ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
    }
}

#[pymethods]
impl JobResult {
    /// A result that failed before it reached the engine (its arguments
    /// could not be pickled, say): `error_callback` runs at once, as in
    /// `multiprocessing`.
    #[staticmethod]
    #[pyo3(signature = (exc, callback=None, error_callback=None))]
    fn failed<'py>(
        py: Python<'py>,
        exc: Py<PyAny>,
        callback: Option<Py<PyAny>>,
        error_callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, JobResult>> {
        let this = Bound::new(
            py,
            JobResult::fresh(
                None,
                py.None(),
                py.None(),
                None,
                Hooks::new(callback, error_callback, None),
            ),
        )?;
        let mut woken = Vec::new();
        this.get().finish(&this, (false, exc), &mut woken)?;
        Ok(this)
    }

    /// The result when it arrives; re-raises the task's exception. Raises
    /// `shoal._errors.ResultTimeoutError` (a `multiprocessing.TimeoutError`
    /// and a builtin `TimeoutError`) after `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn get(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if !Self::wait_resolved(slf, timeout)? {
            let ty = TIMEOUT_ERROR.import(py, "shoal._errors", "ResultTimeoutError")?;
            return Err(PyErr::from_type(ty.clone(), ()));
        }
        let (ok, value) = slf.get().outcome(py).ok_or_else(cleared)?;
        if ok {
            Ok(value)
        } else {
            Err(PyErr::from_value(value.into_bound(py)))
        }
    }

    /// Wait until the result is available or `timeout` seconds pass.
    #[pyo3(signature = (timeout=None))]
    fn wait(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<()> {
        Self::wait_resolved(slf, timeout).map(|_| ())
    }

    /// Whether the call has completed.
    fn ready(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let this = slf.get();
        if let (Some((engine, job)), Some(_)) = (this.engine_job(), &this.chunks) {
            // A map is ready when every chunk is, not when some have arrived.
            if !this.known.load(Ordering::Acquire)
                && !engine.get().engine()?.finished(job).map_err(crate::engine_err)?
            {
                return Ok(false);
            }
        }
        Self::resolve(slf)
    }

    /// The outcome, `(succeeded, value or exception)`, taken and decoded
    /// here if it has arrived; None while the job runs. How an Executor's
    /// future learns its state when asked (`shoal.executor.ShoalFuture`).
    fn _outcome(slf: &Bound<'_, Self>) -> PyResult<Option<(bool, Py<PyAny>)>> {
        if !Self::resolve(slf)? {
            return Ok(None);
        }
        slf.get().outcome(slf.py()).ok_or_else(cleared).map(Some)
    }

    /// Whether the call completed without raising; ValueError if not ready.
    fn successful(slf: &Bound<'_, Self>) -> PyResult<bool> {
        if !Self::ready(slf)? {
            return Err(PyValueError::new_err(format!("{} not ready", slf.repr()?)));
        }
        Ok(slf.get().lock().outcome.as_ref().is_some_and(|(ok, _)| *ok))
    }

    /// The engine's id of the job behind this result (for `Engine.cancel`),
    /// or `None` for a call that failed before it reached the engine.
    #[getter]
    fn job(&self) -> Option<u32> {
        self.engine_job().map(|(_, job)| job)
    }

    /// What the engine's callback thread does when the job finishes
    /// (it calls [`JobResult::watched_done`] directly).
    fn _resolve(slf: &Bound<'_, Self>, _job: u32) -> PyResult<()> {
        Self::watched_done(slf)
    }

    /// Have `waker()` called (on whichever thread sets the outcome) once
    /// the outcome is known; False if it is known already, or if the
    /// engine has handed the outcome to another caller still decoding it:
    /// then look again (`ready()`), and `waker` is not kept. How `await`
    /// hears of the outcome without a thread waiting for it.
    fn _wake_on_outcome(slf: &Bound<'_, Self>, waker: Py<PyAny>) -> PyResult<bool> {
        let this = slf.get();
        if this.known.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some((engine, job)) = this.engine_job() else {
            return Ok(false);
        };
        // A forked child's copy of a pool says so here.
        engine.get().engine()?;
        let py = slf.py();
        let watch = {
            let mut held = this.lock();
            if held.outcome.is_some() {
                return Ok(false);
            }
            let more = held.more();
            more.wakers.push(waker.clone_ref(py));
            let watch = !more.watched();
            more.watched = true;
            watch
        };
        // It holds a waker now, which may lead back to it (a coroutine
        // that holds the result).
        track(slf);
        if watch && engine.get().watch_job(job, slf.clone().into_any().unbind()).is_err() {
            // The engine has forgotten the job: a caller took its outcome
            // and is decoding it (or was interrupted, leaving it for the
            // next call). Undo, and let the caller look.
            drop(engine.get().unwatch_job(job));
            let mut held = this.lock();
            if let Some(more) = held.more.as_mut() {
                more.watched = false;
                more.wakers.retain(|w| !w.is(&waker));
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Forget a waker given to `_wake_on_outcome` (its awaiting task was
    /// cancelled), so the result holds no reference to its loop.
    fn _forget_waker(&self, waker: &Bound<'_, PyAny>) {
        let mut held = self.lock();
        if let Some(more) = held.more.as_mut() {
            more.wakers.retain(|w| !w.is(waker));
        }
    }

    /// `await result`: the value, or the task's exception raised, without
    /// blocking the event loop; see `shoal._results._await_result`.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let make = AWAIT_RESULT.import(py, "shoal._results", "_await_result")?;
        make.call1((slf,))?.call_method0(pyo3::intern!(py, "__await__"))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some((engine, _)) = &self.target {
            visit.call(engine)?;
        }
        visit.call(&self.loads)?;
        visit.call(&self.decode)?;
        // Busy elsewhere: report nothing now. Reporting too little only
        // keeps objects alive longer; the next collection sees them.
        let Ok(held) = self.held.try_lock() else {
            return Ok(());
        };
        if let Some((_, v)) = &held.outcome {
            visit.call(v)?;
        }
        let Some(more) = &held.more else {
            return Ok(());
        };
        if let Some(h) = &more.hooks {
            visit.call(&h.callback)?;
            visit.call(&h.error_callback)?;
            visit.call(&h.settle_on)?;
        }
        visit.call(&more.values)?;
        if let Some((_, e)) = &more.first_error {
            visit.call(e)?;
        }
        for w in &more.wakers {
            visit.call(w)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Dropped outside the lock: dropping may run finalizers that read it.
        let held = std::mem::take(&mut *self.lock());
        drop(held);
    }
}

impl Drop for JobResult {
    fn drop(&mut self) {
        // Nobody will read the outcome: let the engine drop it on arrival.
        // The task itself still runs, as with multiprocessing.
        let known = self.held.get_mut().map(|h| h.outcome.is_some()).unwrap_or(true);
        if !known {
            if let Some((engine, job)) = self.engine_job() {
                if let Ok(engine) = engine.get().engine() {
                    engine.abandon(job);
                }
            }
        }
    }
}
