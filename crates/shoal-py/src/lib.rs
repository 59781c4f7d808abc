//! `shoal._shoal`: the Python binding over `shoal-core`.
//!
//! Conversion and glue: Python bytes in, Python bytes out, and engine
//! errors into the exceptions `multiprocessing.Pool` raises; plus the pieces
//! that run once per task, where Python would cost more than the task: the
//! result object (`result.rs`), the worker's loop (`worker_loop.rs`) and
//! its batch of results (`outbox.rs`),
//! `apply_async`'s fast path (`plain_apply.rs`), packed numbers
//! (`packed.rs`) and shared-memory mappings (`mapping.rs`). No engine policy lives here. Every blocking
//! call releases the GIL and wakes every 50 ms to let Python run signal
//! handlers, so Ctrl-C interrupts a wait promptly.

// The same sentence as shoal-core's, in case this crate is built alone.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "shoal runs on Linux only (kernel 5.3 or newer): its engine watches worker processes with pidfd_open and \
     wakes with eventfd, which this system does not have; use multiprocessing.Pool here, or run shoal on Linux \
     (WSL 2, a container or a virtual machine)."
);

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet};
use pyo3::{PyTraverseError, PyVisit};
use shoal_core::frame::{self, task};
use shoal_core::{
    Engine, EngineConfig, EngineError, ExitReport, JobSpec, Order, Outcome, SpawnLauncher, Status, Tally, Want,
    ZygoteLauncher,
};
use std::collections::HashMap;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod mapping;
mod outbox;
mod packed;
mod plain_apply;
mod result;
mod threads;
mod worker_loop;
use plain_apply::PlainApply;
use result::JobResult;
use worker_loop::WorkerLoop;

/// Longest a blocking call stays in Rust before checking for signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The value of a one-item chunk that succeeded, unpickled with `loads`,
/// or unpacked if it travelled packed (`packed.rs`: no bytes object made);
/// `None` for any other outcome, or if unpickling fails, which the caller's
/// Python decoder then reports. Ctrl-C while unpickling is the caller's,
/// not the result's, so it propagates.
fn single_value<'py>(
    py: Python<'py>,
    status: Status,
    single: bool,
    payload: &[u8],
    loads: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if status != Status::Ok || !single {
        return Ok(None);
    }
    let loaded = if packed::is_packed_scalar(payload) {
        packed::unpack_scalar(py, payload)
    } else {
        loads.call1((PyBytes::new(py, payload),))
    };
    match loaded {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The values of a chunk of several items that succeeded and travelled
/// packed (plain ints or floats), unpacked straight from the engine's bytes:
/// no bytes object, no call into the Python decoder. `None` for any other
/// outcome (or a packed chunk that does not unpack), which the decoder
/// then takes.
fn packed_values<'py>(py: Python<'py>, status: Status, single: bool, payload: &[u8]) -> Option<Bound<'py, PyList>> {
    if status != Status::Ok || single || !packed::is_packed(payload) {
        return None;
    }
    packed::unpack_chunk(py, payload).ok()
}

/// Outcomes as (values, chunks, rest): the values of the leading run of
/// outcomes decoded here (single values, unpickled with `loads`, and packed
/// chunks), how many outcomes that run was; from the first other outcome
/// on, `(index, status, single, payload)` for the caller to decode. `lens`:
/// the caller's chunk lengths by index, if it keeps them for its decoder;
/// a packed chunk decoded here has its entry removed. `into`: the list the
/// values go to (and which is returned), else a new one.
fn decode_values<'py>(
    py: Python<'py>,
    out: Vec<Outcome>,
    loads: &Bound<'py, PyAny>,
    lens: Option<&Bound<'py, PyDict>>,
    into: Option<Bound<'py, PyList>>,
) -> PyResult<(Bound<'py, PyList>, usize, Bound<'py, PyList>)> {
    let values = into.unwrap_or_else(|| PyList::empty(py));
    let rest = PyList::empty(py);
    let mut run = 0;
    for (i, o) in out.iter().enumerate() {
        if run == i {
            if let Some(v) = single_value(py, o.status, o.single, &o.payload, loads)? {
                values.append(v)?;
                run += 1;
                continue;
            }
            if let Some(chunk) = packed_values(py, o.status, o.single, &o.payload) {
                result::extend(&values, &chunk)?;
                if let Some(lens) = lens {
                    if lens.contains(o.index)? {
                        lens.del_item(o.index)?;
                    }
                }
                run += 1;
                continue;
            }
        }
        rest.append(outcome_tuple(py, o))?;
    }
    Ok((values, run, rest))
}

/// An outcome as Python sees it: `(index, status, single, payload)`.
fn outcome_tuple<'py>(py: Python<'py>, o: &Outcome) -> (u32, u8, bool, Bound<'py, PyBytes>) {
    (o.index, o.status as u8, o.single, PyBytes::new(py, &o.payload))
}

fn engine_err(e: EngineError) -> PyErr {
    match e {
        EngineError::NotRunning => PyValueError::new_err("Pool not running"),
        EngineError::UnknownJob(_)
        | EngineError::UnknownFunc(_)
        | EngineError::Cancelled(_)
        | EngineError::InputComplete(_) => PyRuntimeError::new_err(e.to_string()),
        EngineError::TooLarge(n) => PyValueError::new_err(too_large(n, "a task's input (or its function)")),
    }
}

/// What to say about `what`, pickled to `n` bytes, which a frame cannot carry.
pub(crate) fn too_large(n: usize, what: &str) -> String {
    format!(
        "{what} pickles to {n} bytes, and shoal sends at most {} bytes in one piece: pass large data as \
         numpy arrays or other buffers (they travel through shared memory), or split it into smaller tasks",
        shoal_core::frame::MAX_PAYLOAD
    )
}

/// A tally as `{"done": (chunks, items), "failed": ..., "cancelled": ...}`.
fn tally_dict<'py>(py: Python<'py>, t: &Tally) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("done", (t.done.chunks, t.done.items))?;
    d.set_item("failed", (t.failed.chunks, t.failed.items))?;
    d.set_item("cancelled", (t.cancelled.chunks, t.cancelled.items))?;
    Ok(d)
}

/// The slowest chunks as `[(seconds, job, chunk, first_item, items,
/// input)]`; `input` is `(task_bits, pickled chunk)` where the engine kept
/// it (a worker slot's slowest, of up to `KEEP_INPUT_BYTES`), else None.
fn slowest_list<'py>(py: Python<'py>, s: &shoal_core::Slowest) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (i, x) in s.as_slice().iter().enumerate() {
        let input = match s.inputs().get(i) {
            Some(Some(k)) => Some((k.task_bits, PyBytes::new(py, &k.payload))),
            _ => None,
        };
        out.append((x.run.as_secs_f64(), x.job, x.chunk, x.first_item, x.items, input))?;
    }
    Ok(out)
}

/// A job's counters as `stats` gives them to Python.
fn job_dict<'py>(py: Python<'py>, j: &shoal_core::JobStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("submitted", (j.submitted.chunks, j.submitted.items))?;
    d.set_item("tally", tally_dict(py, &j.tally)?)?;
    d.set_item("busy", j.busy.as_secs_f64())?;
    d.set_item("slowest", slowest_list(py, &j.slowest)?)?;
    Ok(d)
}

type Callbacks = Arc<Mutex<HashMap<u32, Py<PyAny>>>>;

/// Bumped in every forked child. An engine made in another generation
/// belongs to an ancestor process: its I/O thread does not exist here, its
/// lock may be held by a thread that vanished in the fork, and its workers
/// are the ancestor's. Such an engine must not be used or dropped.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn foreign_engine() -> PyErr {
    PyRuntimeError::new_err(
        "this pool belongs to the process that created it; a forked child cannot use it (create a new Pool in the child)",
    )
}

/// A pool's engine: worker processes, scheduling, ordering and the window.
#[pyclass(frozen, module = "shoal._shoal", name = "Engine")]
pub(crate) struct PyEngine {
    engine: ManuallyDrop<Engine>,
    generation: u64,
    callbacks: Callbacks,
    notifier: Mutex<Notifier>,
    /// Objects outcomes may need to be decoded (the pool's shared-memory
    /// arenas), kept as long as the engine, and so as long as any result.
    kept: Mutex<Vec<Py<PyAny>>>,
    /// Its workers' threads, if its workers are threads of this process
    /// (which cannot be killed).
    threads: Option<threads::Threads>,
}

/// The error for `what` (a timeout, a cancel that kills) asked of a pool
/// whose workers are threads.
fn cannot_kill_threads(what: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{what} needs a worker that can be killed, and this pool's workers are threads, which cannot be \
         (a thread runs its task to the end): use worker processes (start_method 'fork', 'forkserver' or \
         'spawn') for timeouts and for stopping running tasks, or make the task check a deadline itself"
    ))
}

/// The thread that runs watch callbacks: not started, running, or joined.
enum Notifier {
    Idle,
    Running(std::thread::JoinHandle<()>),
    Joined,
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        if self.generation == FORK_GENERATION.load(Ordering::SeqCst) {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.engine) };
        }
        // In a forked child the engine is leaked on purpose: dropping it
        // would signal the parent's workers and join a thread that is not here.
    }
}

#[pymethods]
impl PyEngine {
    /// Start `processes` workers. Workers are spawned from `argv`, or forked
    /// by the zygote listening on `zygote_fd`, which the engine takes over
    /// and closes, or are threads of this process that each call
    /// `threads(fd, slot)` and exit with the int it returns. With a zygote,
    /// `first_workers`: `(pid, fd)` of workers this process forked itself
    /// before the engine, `fd` the engine's end of each one's channel (taken
    /// over): the first launches take them. `exit_grace`: seconds a worker
    /// told to exit has to run its exit hook before SIGKILL.
    #[new]
    // The signature is the Python keyword interface; a struct would only move it.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (processes, init_payload, *, argv=None, zygote_fd=None, threads=None, lifespan_chunks=None, lifespan_items=None, kill_grace=0.2, exit_grace=10.0, first_workers=None))]
    fn new(
        py: Python<'_>,
        processes: usize,
        init_payload: &Bound<'_, PyBytes>,
        argv: Option<Vec<String>>,
        zygote_fd: Option<i32>,
        threads: Option<Py<PyAny>>,
        lifespan_chunks: Option<u64>,
        lifespan_items: Option<u64>,
        kill_grace: f64,
        exit_grace: f64,
        first_workers: Option<Vec<(i32, i32)>>,
    ) -> PyResult<Self> {
        let mut worker_threads = None;
        if first_workers.as_ref().is_some_and(|w| !w.is_empty()) && zygote_fd.is_none() {
            return Err(PyValueError::new_err("first_workers needs a zygote"));
        }
        // Taken over first, so that each is closed whatever fails below.
        let mut first = Vec::new();
        for (pid, fd) in first_workers.unwrap_or_default() {
            if fd < 0 {
                return Err(PyValueError::new_err(format!("bad channel descriptor {fd}")));
            }
            // SAFETY: the caller hands each descriptor over (socket.detach()).
            first.push((pid, unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let launcher: Box<dyn shoal_core::Launcher> = match (argv, zygote_fd, threads) {
            (None, None, Some(serve)) => {
                let (launcher, started) = threads::launcher(serve);
                worker_threads = Some(started);
                Box::new(launcher)
            }
            (Some(argv), None, None) => {
                let (program, args) = argv
                    .split_first()
                    .ok_or_else(|| PyValueError::new_err("argv is empty"))?;
                Box::new(SpawnLauncher::new(program.clone(), args.to_vec()))
            }
            (None, Some(fd), None) => {
                if fd < 0 {
                    return Err(PyValueError::new_err(format!("bad zygote descriptor {fd}")));
                }
                // SAFETY: the caller hands the descriptor over (socket.detach()).
                let zygote = ZygoteLauncher::new(unsafe { OwnedFd::from_raw_fd(fd) });
                Box::new(
                    zygote
                        .with_first_workers(first)
                        .map_err(|e| PyOSError::new_err(e.to_string()))?,
                )
            }
            _ => return Err(PyValueError::new_err("give exactly one of argv, zygote_fd and threads")),
        };

        let mut config = EngineConfig::new(processes, init_payload.as_bytes().to_vec());
        config.lifespan.chunks = lifespan_chunks;
        config.lifespan.items = lifespan_items;
        config.kill_grace = Duration::from_secs_f64(kill_grace.max(0.0));
        config.exit_grace = Duration::try_from_secs_f64(exit_grace.max(0.0))
            .map_err(|e| PyValueError::new_err(format!("exit_grace: {e}")))?;
        let engine = py
            .detach(|| Engine::start(config, launcher))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PyEngine {
            engine: ManuallyDrop::new(engine),
            generation: FORK_GENERATION.load(Ordering::SeqCst),
            callbacks: Arc::default(),
            notifier: Mutex::new(Notifier::Idle),
            kept: Mutex::new(Vec::new()),
            threads: worker_threads,
        })
    }

    /// Add a pickled function; returns its id. Workers receive it once and
    /// keep it until `release_func` and the end of the last job using it.
    #[pyo3(signature = (payload, name = ""))]
    fn register_func(&self, payload: &Bound<'_, PyBytes>, name: &str) -> PyResult<u32> {
        self.engine()?
            .register_func(payload.as_bytes().to_vec(), name)
            .map_err(engine_err)
    }

    /// Let go of a function registered with `register_func`.
    fn release_func(&self, func: u32) -> PyResult<()> {
        self.engine()?.release_func(func);
        Ok(())
    }

    /// Create a job running function `func`; returns its id. `window`
    /// bounds chunks in flight; past `timeout` seconds a chunk's worker is
    /// killed and the chunk times out; `pinned`: chunk `i` runs only on the
    /// worker in slot `i % processes` (MPIRE's `order_tasks`).
    #[pyo3(signature = (func, task_bits, ordered, window=None, timeout=None, pinned=false))]
    fn new_job(
        &self,
        func: u32,
        task_bits: u8,
        ordered: bool,
        window: Option<u32>,
        timeout: Option<f64>,
        pinned: bool,
    ) -> PyResult<u32> {
        if self.threads.is_some() && timeout.is_some() {
            return Err(cannot_kill_threads("a task timeout"));
        }
        let order = if ordered { Order::Ordered } else { Order::Unordered };
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let spec = JobSpec::new(func, task_bits)
            .order(order)
            .window(window)
            .timeout(timeout)
            .pinned(pinned);
        self.engine()?.new_job(spec).map_err(engine_err)
    }

    /// A job of one chunk, input complete (`apply_async`); returns its id.
    fn apply(&self, func: u32, task_bits: u8, payload: &Bound<'_, PyBytes>) -> PyResult<u32> {
        self.engine()?
            .apply(func, task_bits, payload.as_bytes().to_vec())
            .map_err(engine_err)
    }

    /// `apply` and `result` in one call, for a result with callbacks
    /// (`apply_async` with a callback, a `run_in_executor` call): the job is
    /// watched from its creation, with the flag travelling with the call,
    /// instead of by a second call that takes the engine's state lock (and
    /// does the I/O thread's work of creating the job on this thread).
    /// `settle_on`: instead of the callbacks, an object told the outcome as
    /// `settle_on._shoal_settle(ok, value)`, which never holds the result
    /// object (`shoal._aio.LoopFuture`).
    #[pyo3(signature = (func, task_bits, payload, loads, decode, callback=None, error_callback=None, settle_on=None))]
    #[allow(clippy::too_many_arguments)]
    fn apply_result<'py>(
        slf: &Bound<'py, Self>,
        func: u32,
        task_bits: u8,
        payload: &Bound<'py, PyBytes>,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
        callback: Option<Py<PyAny>>,
        error_callback: Option<Py<PyAny>>,
        settle_on: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, JobResult>> {
        JobResult::create_applied(
            slf,
            func,
            task_bits,
            payload.as_bytes().to_vec(),
            loads,
            decode,
            result::Hooks::new(callback, error_callback, settle_on),
        )
    }

    /// The result object of `job`: one value, or with `lens` (items per
    /// chunk) a map's list. `loads` unpickles a one-item result;
    /// `decode(status, single, payload, n_items)` gives `(values, errors)`
    /// for any other outcome. A callback runs when the job finishes, on
    /// the engine's callback thread or on a caller's thread that was waiting
    /// for the result, whichever takes the outcome first.
    #[pyo3(signature = (job, lens, loads, decode, callback=None, error_callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn result<'py>(
        slf: &Bound<'py, Self>,
        job: u32,
        lens: Option<Vec<u32>>,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
        callback: Option<Py<PyAny>>,
        error_callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, JobResult>> {
        JobResult::create(
            slf.py(),
            slf.clone().unbind(),
            job,
            lens,
            loads,
            decode,
            callback,
            error_callback,
        )
    }

    /// Add pickled chunks to a job; returns the index of the first. `items`
    /// says how many items each chunk holds (one each if not given).
    #[pyo3(signature = (job, chunks, items=None))]
    fn submit(&self, job: u32, chunks: Vec<Bound<'_, PyBytes>>, items: Option<Vec<u32>>) -> PyResult<u32> {
        let items = items.unwrap_or_else(|| vec![1; chunks.len()]);
        if items.len() != chunks.len() {
            return Err(PyValueError::new_err("items must give a count for every chunk"));
        }
        let chunks = chunks.iter().map(|c| c.as_bytes().to_vec()).collect();
        self.engine()?.submit_items(job, chunks, items).map_err(engine_err)
    }

    /// The size for the job's next chunk when the caller gave none.
    fn chunk_hint(&self, job: u32) -> PyResult<u32> {
        Ok(self.engine()?.chunk_hint(job))
    }

    /// Mark a job's input complete.
    fn finish_input(&self, job: u32) -> PyResult<()> {
        self.engine()?.finish_input(job).map_err(engine_err)
    }

    /// Chunks that may be added to the job now.
    fn room(&self, job: u32) -> PyResult<u32> {
        self.engine()?.room(job).map_err(engine_err)
    }

    /// Wait, without the GIL, until the job has an outcome to take or room
    /// for input (`finished=False`) or has every outcome (`finished=True`).
    /// Returns False on timeout. Raises what a signal handler raises.
    #[pyo3(signature = (job, finished, timeout=None))]
    fn wait(&self, py: Python<'_>, job: u32, finished: bool, timeout: Option<f64>) -> PyResult<bool> {
        let want = if finished { Want::Finished } else { Want::Progress };
        self.wait_for(py, job, want, timeout)
    }

    /// Wait, without the GIL, until the job has an outcome to take or has
    /// every outcome: a reader's wait while another thread feeds the job.
    /// Returns False on timeout. Raises what a signal handler raises.
    #[pyo3(signature = (job, timeout=None))]
    fn wait_ready(&self, py: Python<'_>, job: u32, timeout: Option<f64>) -> PyResult<bool> {
        self.wait_for(py, job, Want::Ready, timeout)
    }

    /// Wait, without the GIL, until the job has room for `chunks` more
    /// chunks (at least one): a feeder's wait while another thread takes
    /// the outcomes. Returns False on timeout; raises what `submit` would
    /// once the job takes no more chunks (input complete, job cancelled,
    /// engine terminating).
    #[pyo3(signature = (job, chunks=1, timeout=None))]
    fn wait_room(&self, py: Python<'_>, job: u32, chunks: u32, timeout: Option<f64>) -> PyResult<bool> {
        self.wait_for(py, job, Want::Room(chunks), timeout)
    }

    /// Take up to `max` outcomes, decoding successful ones on the way:
    /// single results unpickled with `loads`, packed chunks unpacked.
    /// Returns `(values, chunks, rest)`: the values of the leading run of
    /// such outcomes, how many outcomes that run was, then every later
    /// outcome taken, as `(index, status, single, payload)` tuples, for the
    /// caller to decode. A result whose unpickling fails ends the run and
    /// is returned in `rest`. `lens`: the caller's chunk lengths by index,
    /// whose entries for the packed chunks decoded here are removed.
    /// `into`: a list the values are appended to, and returned as `values`
    /// (a map's list: no second list of them made and copied).
    #[pyo3(signature = (job, max, loads, lens=None, into=None))]
    fn take_values<'py>(
        &self,
        py: Python<'py>,
        job: u32,
        max: usize,
        loads: &Bound<'py, PyAny>,
        lens: Option<&Bound<'py, PyDict>>,
        into: Option<Bound<'py, PyList>>,
    ) -> PyResult<(Bound<'py, PyList>, usize, Bound<'py, PyList>)> {
        let out = self.engine()?.take(job, max).map_err(engine_err)?;
        decode_values(py, out, loads, lens, into)
    }

    /// Call `callback(job)` once, on the engine's callback thread, as soon
    /// as the job has an outcome to take or has finished: how an event
    /// loop hears of results without a thread waiting for them. Returns
    /// False, and keeps nothing, if that is so already: look again instead.
    /// One callback a job at a time (a caller multiplexes its waiters).
    fn notify_ready(&self, job: u32, callback: Py<PyAny>) -> PyResult<bool> {
        let engine = self.engine()?;
        self.start_notifier();
        // In the map before the engine may send: the callback thread looks
        // it up as soon as it hears.
        self.callbacks.lock().expect("callbacks lock").insert(job, callback);
        if engine.watch_ready(job) {
            return Ok(true);
        }
        drop(self.unwatch_job(job));
        Ok(false)
    }

    /// Whether a worker holds (or has run) a chunk of the job: the engine's
    /// answer to `concurrent.futures.Future.running()`.
    fn dispatched(&self, job: u32) -> PyResult<bool> {
        Ok(self.engine()?.dispatched(job))
    }

    /// Whether every chunk of the job has an outcome.
    fn finished(&self, job: u32) -> PyResult<bool> {
        self.engine()?.finished(job).map_err(engine_err)
    }

    /// Let go of a job: its outcomes are dropped as they arrive.
    fn abandon(&self, job: u32) -> PyResult<()> {
        self.engine()?.abandon(job);
        Ok(())
    }

    /// Cancel every queued chunk of every job but those in `keep` (see
    /// `Engine::cancel_queued`), and add the jobs that had chunks cancelled
    /// to `into`; returns how many. The GIL is held throughout, so no
    /// Python code sees one of those outcomes before `into` has its job.
    fn cancel_queued(&self, keep: Vec<u32>, into: &Bound<'_, PySet>) -> PyResult<usize> {
        let jobs = self.engine()?.cancel_queued(&keep);
        for job in &jobs {
            into.add(job)?;
        }
        Ok(jobs.len())
    }

    /// Cancel a job: its queued chunks end as cancelled and it takes no
    /// more. With `kill_running`, workers running its chunks are killed
    /// and replaced, and those chunks end as cancelled too. Returns how
    /// many chunks this call ended as cancelled.
    #[pyo3(signature = (job, kill_running=false))]
    fn cancel(&self, job: u32, kill_running: bool) -> PyResult<u32> {
        if self.threads.is_some() && kill_running {
            return Err(cannot_kill_threads("cancelling a running task"));
        }
        self.engine()?.cancel(job, kill_running).map_err(engine_err)
    }

    /// Every counter at one moment, read without the GIL: `{"workers":
    /// [per slot], "job": the job's, or None}`. Times are in seconds; a
    /// tally maps "done", "failed" and "cancelled" to `(chunks, items)`;
    /// slowest chunks are `(seconds, job, chunk, first_item, items, input)`,
    /// `input` being `(task_bits, pickled chunk)` for a slot's slowest
    /// chunks of at most `KEEP_INPUT_BYTES` (else None).
    #[pyo3(signature = (job=None))]
    fn stats<'py>(&self, py: Python<'py>, job: Option<u32>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine()?;
        let snap = py.detach(|| engine.stats(job));
        let workers = PyList::empty(py);
        for w in &snap.workers {
            let d = PyDict::new(py);
            d.set_item("slot", w.slot)?;
            d.set_item("pid", w.pid)?;
            d.set_item("restarts", w.restarts)?;
            d.set_item("tally", tally_dict(py, &w.tally)?)?;
            d.set_item("start_up", w.start_up.as_secs_f64())?;
            d.set_item("init", w.init.as_secs_f64())?;
            d.set_item("idle", w.idle.as_secs_f64())?;
            d.set_item("busy", w.busy.as_secs_f64())?;
            d.set_item("exit", w.exit.as_secs_f64())?;
            d.set_item("slowest", slowest_list(py, &w.slowest)?)?;
            workers.append(d)?;
        }
        let out = PyDict::new(py);
        out.set_item("workers", workers)?;
        match &snap.job {
            Some(j) => out.set_item("job", job_dict(py, j)?)?,
            None => out.set_item("job", py.None())?,
        }
        Ok(out)
    }

    /// One job's counters, as `stats(job)["job"]` gives them, or None once
    /// the job is finished and forgotten: what a progress bar polls, without
    /// building every worker's.
    fn job_stats<'py>(&self, py: Python<'py>, job: u32) -> PyResult<Option<Bound<'py, PyDict>>> {
        let engine = self.engine()?;
        let snap = py.detach(|| engine.stats(Some(job)));
        snap.job.as_ref().map(|j| job_dict(py, j)).transpose()
    }

    /// What workers' exit hooks returned since the last call, in the order
    /// they exited, as `[(slot, payload, None)]`, or `(slot, None, message)`
    /// for a hook killed at the exit timeout.
    fn take_exit_results<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let got = self.engine()?.take_exit_results();
        PyList::new(
            py,
            got.into_iter().map(|(slot, report)| match report {
                ExitReport::Returned(p) => (slot, Some(PyBytes::new(py, &p)), None),
                ExitReport::TimedOut(msg) => (slot, None, Some(msg)),
            }),
        )
    }

    /// Seconds a worker's initializer may run (`init`, counted from when it
    /// is sent its settings) and a worker told to exit may run its exit hook
    /// (`exit`) before it is killed; either failure is reported (see
    /// `EngineConfig::init_timeout`, `exit_timeout`). None: no limit (for
    /// `exit`, the exit grace, unreported).
    #[pyo3(signature = (init=None, exit=None))]
    fn set_hook_timeouts(&self, init: Option<f64>, exit: Option<f64>) -> PyResult<()> {
        let secs = |what: &str, t: Option<f64>| -> PyResult<Option<Duration>> {
            t.map(|t| {
                Duration::try_from_secs_f64(t.max(0.0)).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
            })
            .transpose()
        };
        let (init, exit) = (secs("init", init)?, secs("exit", exit)?);
        if self.threads.is_some() && (init.is_some() || exit.is_some()) {
            return Err(cannot_kill_threads("a worker_init_timeout or worker_exit_timeout"));
        }
        self.engine()?.set_hook_timeouts(init, exit);
        Ok(())
    }

    /// Stop accepting jobs; queued work finishes, then workers exit.
    fn close(&self) -> PyResult<()> {
        self.engine()?.close();
        Ok(())
    }

    /// Cancel unfinished work and kill the workers (SIGTERM, then SIGKILL
    /// after the grace period).
    fn terminate(&self) -> PyResult<()> {
        self.engine()?.terminate();
        Ok(())
    }

    /// `terminate`, with SIGKILL at once.
    fn kill(&self) -> PyResult<()> {
        self.engine()?.kill();
        Ok(())
    }

    /// Wait for the workers and the engine thread to finish. Returns False
    /// on timeout.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let engine = self.engine()?;
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK),
                None => SIGNAL_CHECK,
            };
            if py.detach(|| engine.wait_stopped(slice)) {
                py.detach(|| {
                    engine.join();
                    if let Some(threads) = &self.threads {
                        threads.join_ended();
                    }
                });
                return self.join_notifier(py, deadline);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Pids of live worker processes.
    fn worker_pids(&self) -> PyResult<Vec<i32>> {
        Ok(self.engine()?.worker_pids())
    }

    /// Whether `pid` is a live worker of this engine.
    fn is_alive(&self, pid: i32) -> PyResult<bool> {
        Ok(self.engine()?.is_alive(pid))
    }

    /// Keep `obj` alive as long as the engine: something its outcomes need
    /// to be decoded, such as the pool's shared-memory arenas, which must
    /// outlive the pool while a result still holds undecoded outcomes.
    fn keep(&self, obj: Py<PyAny>) {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).push(obj);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Busy elsewhere: report nothing now (reporting too little only
        // keeps objects alive longer).
        if let Ok(callbacks) = self.callbacks.try_lock() {
            for cb in callbacks.values() {
                visit.call(cb)?;
            }
        }
        if let Ok(kept) = self.kept.try_lock() {
            for obj in kept.iter() {
                visit.call(obj)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let callbacks = std::mem::take(&mut *self.callbacks.lock().unwrap_or_else(|p| p.into_inner()));
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        drop((callbacks, kept));
    }

    /// The engine's phase: "running", "closing", "terminating" or "stopped".
    #[getter]
    fn phase(&self) -> PyResult<&'static str> {
        Ok(match self.engine()?.phase() {
            shoal_core::Phase::Running => "running",
            shoal_core::Phase::Closing => "closing",
            shoal_core::Phase::Terminating => "terminating",
            shoal_core::Phase::Stopped => "stopped",
        })
    }
}

impl PyEngine {
    /// Wait for `want` without the GIL, waking every `SIGNAL_CHECK` to run
    /// signal handlers. Returns False on timeout.
    fn wait_for(&self, py: Python<'_>, job: u32, want: Want, timeout: Option<f64>) -> PyResult<bool> {
        let engine = self.engine()?;
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK),
                None => SIGNAL_CHECK,
            };
            if py.detach(|| engine.wait(job, want, slice)).map_err(engine_err)? {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Forget the callback of `job`: its result was resolved by a caller.
    pub(crate) fn unwatch_job(&self, job: u32) -> Option<Py<PyAny>> {
        self.callbacks.lock().expect("callbacks lock").remove(&job)
    }

    /// Call `callback(job)` from the callback thread when the job finishes.
    pub(crate) fn watch_job(&self, job: u32, callback: Py<PyAny>) -> PyResult<()> {
        let engine = self.engine()?;
        self.file_watch(job, callback);
        engine.watch(job).map_err(engine_err)
    }

    /// File `callback` for `job` with the callback thread, started if need
    /// be, before the engine can send the job's id: the thread looks the id
    /// up as soon as it hears it. A `JobResult` is filed as itself and
    /// resolved directly; anything else is called with the job's id.
    pub(crate) fn file_watch(&self, job: u32, callback: Py<PyAny>) {
        self.start_notifier();
        self.callbacks.lock().expect("callbacks lock").insert(job, callback);
    }

    /// The engine, if this process owns it.
    pub(crate) fn engine(&self) -> PyResult<&Engine> {
        if self.generation == FORK_GENERATION.load(Ordering::SeqCst) {
            Ok(&self.engine)
        } else {
            Err(foreign_engine())
        }
    }

    /// Wait for the callbacks of finished jobs to run, as
    /// `multiprocessing.Pool.join` waits for its result handler: the engine
    /// has stopped, so the thread drains what is queued and ends. Not from
    /// a callback itself, which would wait for itself.
    fn join_notifier(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<bool> {
        let handle = {
            let mut n = self.notifier.lock().expect("notifier lock");
            match std::mem::replace(&mut *n, Notifier::Joined) {
                Notifier::Running(h) if h.thread().id() == std::thread::current().id() => {
                    *n = Notifier::Running(h);
                    return Ok(true);
                }
                Notifier::Running(h) => h,
                other => {
                    *n = other;
                    return Ok(true);
                }
            }
        };
        // Poll, so Ctrl-C can interrupt a callback that never returns.
        while !handle.is_finished() {
            py.detach(|| std::thread::sleep(Duration::from_millis(1)));
            if let Err(e) = py.check_signals() {
                *self.notifier.lock().expect("notifier lock") = Notifier::Running(handle);
                return Err(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                *self.notifier.lock().expect("notifier lock") = Notifier::Running(handle);
                return Ok(false);
            }
        }
        let _ = handle.join();
        Ok(true)
    }

    /// Start the thread that runs watch callbacks, once.
    fn start_notifier(&self) {
        let mut notifier = self.notifier.lock().expect("notifier lock");
        if !matches!(*notifier, Notifier::Idle) {
            return;
        }
        let (tx, rx) = mpsc::channel::<u32>();
        self.engine.set_done_listener(tx);
        let callbacks = self.callbacks.clone();
        let counted = ThreadCount::new();
        let handle = std::thread::Builder::new()
            .name("shoal-callbacks".into())
            .spawn(move || {
                let _counted = counted;
                // Ends when the engine stops and drops the sender.
                while let Ok(first) = rx.recv() {
                    // Every job finished by now runs under one hold of the
                    // GIL: taking it once per job, from a caller's thread that
                    // holds it (an event loop, a submit loop), cost a hand-over
                    // each, which made 20k futures several times slower.
                    let ran = Python::try_attach(|py| {
                        let mut next = Some(first);
                        let mut ran = 0;
                        while let Some(job) = next {
                            let cb = callbacks.lock().expect("callbacks lock").remove(&job);
                            if let Some(cb) = cb {
                                let cb = cb.into_bound(py);
                                // A result is resolved here, not through a
                                // Python call of its `_resolve`: one call
                                // and one bound method fewer per task.
                                let done = match cb.cast::<JobResult>() {
                                    Ok(result) => JobResult::watched_done(result),
                                    Err(_) => cb.call1((job,)).map(drop),
                                };
                                if let Err(e) = done {
                                    e.write_unraisable(py, None);
                                }
                                drop(cb);
                            }
                            ran += 1;
                            // A bounded batch, so a caller waiting for the
                            // GIL is not held off for long.
                            next = if ran < CALLBACK_BATCH { rx.try_recv().ok() } else { None };
                        }
                    });
                    if ran.is_none() {
                        // The interpreter is shutting down: nobody is left to call back.
                        return;
                    }
                }
            })
            .expect("spawn callback thread");
        *notifier = Notifier::Running(handle);
    }
}

/// Callbacks the callback thread runs under one hold of the GIL, at most.
const CALLBACK_BATCH: usize = 256;

/// Counts a callback thread (or a thread worker) in
/// [`shoal_core::live_threads`] from before it starts until it ends.
pub(crate) struct ThreadCount;

impl ThreadCount {
    pub(crate) fn new() -> Self {
        shoal_core::thread_started();
        ThreadCount
    }
}

impl Drop for ThreadCount {
    fn drop(&mut self) {
        shoal_core::thread_ended();
    }
}

/// Engine threads (I/O and callback threads) running in this process.
/// Hide `obj` from the cyclic garbage collector, for an object that holds
/// nothing yet that can lead back to it: an Executor's future, made by the
/// thousand and kept until read, which every full collection walked
/// (`shoal.executor.ShoalFuture` says when it is tracked again).
#[pyfunction]
fn gc_untrack(obj: &Bound<'_, PyAny>) {
    let p = obj.as_ptr();
    // SAFETY: GC calls on a live object with the GIL held; untracking is
    // allowed for any object of a GC type, and the deallocator copes.
    unsafe {
        if pyo3::ffi::PyObject_IS_GC(p) != 0 && pyo3::ffi::PyObject_GC_IsTracked(p) != 0 {
            pyo3::ffi::PyObject_GC_UnTrack(p.cast());
        }
    }
}

/// Let the cyclic garbage collector see `obj` again (see [`gc_untrack`]).
#[pyfunction]
fn gc_track(obj: &Bound<'_, PyAny>) {
    let p = obj.as_ptr();
    // SAFETY: as above; tracking twice is an error, so it is checked first.
    unsafe {
        if pyo3::ffi::PyObject_IS_GC(p) != 0 && pyo3::ffi::PyObject_GC_IsTracked(p) == 0 {
            pyo3::ffi::PyObject_GC_Track(p.cast());
        }
    }
}

#[pyfunction]
fn live_threads() -> usize {
    shoal_core::live_threads()
}

/// Chunk lengths for `map` of `n` items on `workers` workers: `chunksize`
/// as given, else chunks that shrink towards the end so the workers finish
/// together, or `multiprocessing`'s equal chunks if `equal`.
#[pyfunction]
#[pyo3(signature = (n, workers, chunksize=None, equal=false))]
fn map_chunks(n: usize, workers: usize, chunksize: Option<i64>, equal: bool) -> PyResult<Vec<usize>> {
    shoal_core::map_chunks(n, workers, chunksize, equal).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Chunks a lazy job keeps in flight on `workers` workers.
#[pyfunction]
fn window_chunks(workers: usize, adaptive: bool) -> u32 {
    shoal_core::window_chunks(workers, adaptive)
}

/// Whether this process is dumpable (`prctl(PR_GET_DUMPABLE)`): only then
/// may a process it did not fork open its descriptors through `/proc`.
/// Here rather than through ctypes, whose import cost every pool ~4 ms.
#[pyfunction]
fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE reads a flag and takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) > 0 }
}

/// Fork a child that exits at once, and reap it; whether the fork
/// happened. The fork runs the `pthread_atfork` handlers of C libraries,
/// so one that stops its own threads before any fork (OpenBLAS's pool) has
/// stopped them when this returns. No Python code runs in the child, nor
/// Python's at-fork hooks or its warning about forking with threads. Here
/// rather than through ctypes, whose import cost every numpy program's
/// first pool ~2 ms.
#[pyfunction]
fn fork_and_reap() -> bool {
    // SAFETY: the child only calls _exit, which is async-signal-safe, so
    // no lock another thread held can matter to it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; no destructor or atexit handler may run here.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return false;
    }
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        // ECHILD: reaped by the program's own SIGCHLD handler.
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true;
        }
    }
}

/// Raise `OSError` saying what shoal requires if this kernel cannot run the
/// engine (no `pidfd_open`: before Linux 5.3, or refused by seccomp).
/// `Pool()` calls it before starting anything, so nothing needs cleaning up.
#[pyfunction]
fn check_kernel() -> PyResult<()> {
    let Err(e) = shoal_core::probe_pidfd() else {
        return Ok(());
    };
    let (errno, name) = match e.raw_os_error() {
        Some(libc::ENOSYS) => (libc::ENOSYS, "ENOSYS, Function not implemented"),
        Some(libc::EPERM) => (libc::EPERM, "EPERM, Operation not permitted"),
        // Not a missing feature (say, out of descriptors): the kernel's own error.
        _ => return Err(e.into()),
    };
    let msg = format!(
        "shoal needs Linux 5.3 or newer with the pidfd_open system call allowed, and pidfd_open failed here \
         ({name}), so the kernel is older than 5.3 or a seccomp profile blocks the call: run on a newer kernel, \
         allow pidfd_open in the container's or sandbox's seccomp profile, or use multiprocessing.Pool"
    );
    // OSError(errno, message): Python makes EPERM a PermissionError.
    Err(PyOSError::new_err((errno, msg)))
}

/// Called first in a worker: die with the parent. Returns False if the
/// parent is already gone.
#[pyfunction]
fn worker_prelude(parent_pid: i32) -> bool {
    // SAFETY: prctl with integer arguments; getppid always succeeds.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        libc::getppid() == parent_pid
    }
}

/// The `InitStarted` frame a worker sends as its user initializer starts
/// (the engine's init timeout counts from it).
#[pyfunction]
fn init_started_frame(py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
    let mut out = Vec::new();
    frame::encode(&mut out, frame::Header::init_started(), &[]).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &out))
}

/// `ItemErrors` as `ITEM_ERRORS`: the name of a protocol constant.
fn upper_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[pymodule(gil_used = false)]
mod _shoal {
    #[pymodule_export]
    use super::mapping::{discard_pages, join_spans, mmap_shared, munmap, punch_hole, Span};
    #[pymodule_export]
    use super::outbox::Outbox;
    #[pymodule_export]
    use super::packed::{pack_each, pack_one, pack_values, unpack_one, unpack_values};
    #[pymodule_export]
    use super::worker_loop::unpack_shape;
    #[pymodule_export]
    use super::{
        check_kernel, dumpable, fork_and_reap, gc_track, gc_untrack, init_started_frame, live_threads, map_chunks,
        window_chunks, worker_prelude, JobResult, PlainApply, PyEngine, WorkerLoop,
    };

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        // SAFETY: registers a handler that only bumps an atomic counter,
        // which is async-signal-safe as a fork child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(super::after_fork_in_child)) };
        // The protocol's numbers the Python side uses, from the one codec
        // (python/shoal/_protocol.py).
        for status in super::Status::ALL {
            m.add(
                format!("STATUS_{}", super::upper_snake(&format!("{status:?}"))),
                status as u8,
            )?;
        }
        m.add("TASK_STAR", super::task::STAR)?;
        m.add("TASK_APPLY", super::task::APPLY)?;
        m.add("TASK_SINGLE", super::task::SINGLE)?;
        m.add("TASK_ISOLATE", super::task::ISOLATE)?;
        m.add("TASK_UNPACK", super::task::UNPACK)?;
        m.add("SHAPE_MIXED", super::worker_loop::SHAPE_MIXED)?;
        m.add("SHAPE_ONE", super::worker_loop::SHAPE_ONE)?;
        m.add("SHAPE_TUPLES", super::worker_loop::SHAPE_TUPLES)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
