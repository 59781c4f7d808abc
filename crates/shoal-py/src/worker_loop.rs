//! The worker's loop, in Rust: every frame a worker receives is read here,
//! every task is timed here, and every result frame is made and batched
//! here, by one policy.
//!
//! At `chunksize=1` and for `apply_async` a worker spends more time reading
//! frames, timing tasks and packing results than running them: ~2 µs a
//! task of Python bytecode around `loads`, the call and `dumps`. So a task of
//! one item (`SINGLE`), one argument tuple (`STAR | SINGLE`) or one item
//! called by MPIRE's rule (`UNPACK | SINGLE`, for a tuple, a dict or a
//! scalar) whose function loaded is run here outright: its one fast case,
//! a property of the data. Every other stage is Python's, called through the worker's
//! host object (`python/shoal/_worker.py`, `_Host`): a chunk of several
//! items, a stage that fails (reported exactly as Python reports it),
//! defining a function, and start-up.
//!
//! It holds no engine state: workers may be forked from a threaded parent,
//! and this is plain code over Python objects.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PySlice, PyString, PyTuple, PyType,
};
use shoal_core::frame::{self, task, Header, Kind, HEADER_LEN};
use shoal_core::Status;

use crate::outbox::Outbox;
use crate::packed;

/// Results wait in the worker's [`Outbox`] and go out together: a write per
/// result costs ~6 µs here, 0.07 µs in a batch. They go when the worker is
/// about to block on a read (the caller flushes then), when
/// [`FLUSH_RESULTS`] have piled up, or, before the next task starts, when
/// the oldest is [`FLUSH_NS`] old; while that task runs, the outbox's
/// flusher sends them if it takes long. A task longer than
/// [`FLUSH_AFTER_NS`] sends its result at once: a write is cheap next to
/// it, and the next task may be long too. A chunk the engine marks
/// `ISOLATE` (a crash suspect) goes out alone: the batch is sent before it
/// runs and its result right after.
const FLUSH_RESULTS: usize = 256;
/// See [`FLUSH_RESULTS`].
const FLUSH_NS: i64 = 100_000;
/// See [`FLUSH_RESULTS`].
const FLUSH_AFTER_NS: i64 = 50_000;

/// What the caller must do after [`WorkerLoop::run`] returns.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Next {
    /// Read more bytes: the buffer ends inside a frame (or is used up).
    Read = 0,
    /// Write the batch of results, then call `run` again.
    Flush = 1,
    /// Write the batch, then exit with code 0 (`Exit`).
    Exit = 2,
    /// Write the batch, then exit with code 1 (the initializer failed).
    Fail = 3,
}

/// `time.perf_counter_ns()`: the same clock the Python side stamps with.
pub(crate) fn now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// A task's outcome: status, items that raised, payload.
type Ran<'py> = (u8, u32, Bound<'py, PyBytes>);

/// The worker's loop over frames. Built once, from the worker's host object,
/// whose attributes it reads then: `funcs` (function id to function),
/// `outbox` (the [`Outbox`] result frames wait in), `deferred` (shared blocks to free
/// after a flush), `big` (a result's large buffers), `loads`, `dumps`,
/// `load_error` (the type standing in for a function that failed to load),
/// and the stages left to Python: `run_task`, `fail_task`, `careful`,
/// `define`, `init` (which returns `(succeeded, initializer ns,
/// failure)`; the reply frame is made here) and `exit` (the exit hook's
/// payload, or None). After `init` it reads `buffer_callback`. Every frame
/// the worker sends is made here.
#[pyclass(frozen, module = "shoal._shoal", name = "WorkerLoop")]
pub struct WorkerLoop {
    host: Py<PyAny>,
    funcs: Py<PyDict>,
    outbox: Py<Outbox>,
    deferred: Py<PyList>,
    big: Py<PyList>,
    loads: Py<PyAny>,
    dumps: Py<PyAny>,
    /// `{"buffer_callback": ...}` for `dumps`, set at `Init`.
    dumps_kwargs: Py<PyDict>,
    load_error: Py<PyType>,
    run_task: Py<PyAny>,
    fail_task: Py<PyAny>,
    careful: Py<PyAny>,
    /// `_worker._chunk_failed(exc, where)`: a whole chunk's failure.
    chunk_failed: Py<PyAny>,
    define: Py<PyAny>,
    /// `_worker._call_unpacked(func, item)`: MPIRE's rule, whole.
    call_unpacked: Py<PyAny>,
}

/// Where [`WorkerLoop::run`] stopped, and what to do next.
type Stop = (usize, u8);

#[pymethods]
impl WorkerLoop {
    #[new]
    fn new(py: Python<'_>, host: Py<PyAny>) -> PyResult<Self> {
        let h = host.bind(py);
        let get = |name: &str| h.getattr(name).map(Bound::unbind);
        Ok(WorkerLoop {
            funcs: h.getattr("funcs")?.cast_into::<PyDict>()?.unbind(),
            outbox: h.getattr("outbox")?.cast_into::<Outbox>()?.unbind(),
            deferred: h.getattr("deferred")?.cast_into::<PyList>()?.unbind(),
            big: h.getattr("big")?.cast_into::<PyList>()?.unbind(),
            loads: get("loads")?,
            dumps: get("dumps")?,
            dumps_kwargs: PyDict::new(py).unbind(),
            load_error: h.getattr("load_error")?.cast_into::<PyType>()?.unbind(),
            run_task: get("run_task")?,
            fail_task: get("fail_task")?,
            careful: get("careful")?,
            chunk_failed: get("chunk_failed")?,
            define: get("define")?,
            call_unpacked: py.import("shoal._worker")?.getattr("_call_unpacked")?.unbind(),
            host,
        })
    }

    /// Handle the frames in `buf[pos..end]`, adding result frames to the
    /// outbox. Returns `(pos, next)`: where it stopped, and what the caller
    /// must do (0: read more; 1: flush, then call again; 2: flush and exit;
    /// 3: flush and exit with code 1).
    fn run(&self, py: Python<'_>, buf: &Bound<'_, PyByteArray>, mut pos: usize, end: usize) -> PyResult<Stop> {
        let outbox = self.outbox.get();
        // When one task follows another here, the clock read that ends one
        // starts the next: reading the clock took ~10% of a worker's time at
        // chunksize=1 (perf, imap of 200k ints), ~100 ns a read on this VM.
        let mut last_end: Option<i64> = None;
        loop {
            if end < pos + HEADER_LEN {
                return Ok((pos, Next::Read as u8));
            }
            // SAFETY: only _Inbox resizes this buffer, never while this runs;
            // the slice is dropped before any Python code is called.
            let h = Header::parse(unsafe { &buf.as_bytes()[pos..pos + HEADER_LEN] })
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            let (start, stop) = (pos + HEADER_LEN, pos + HEADER_LEN + h.len as usize);
            if stop > end {
                return Ok((pos, Next::Read as u8));
            }
            match h.kind {
                Kind::Task => {
                    let bits = h.task_bits();
                    let isolate = bits & task::ISOLATE != 0;
                    let t0 = last_end.unwrap_or_else(now_ns);
                    if outbox.before_task(t0, isolate, FLUSH_NS) {
                        return Ok((pos, Next::Flush as u8));
                    }
                    pos = stop;
                    let (status, failed, result) = self.run_task(py, &h, buf, start, stop)?;
                    let t1 = now_ns();
                    last_end = Some(t1);
                    let (status, failed, result) = self.fit_frame(py, status, failed, result)?;
                    let body = result.as_bytes();
                    let status = Status::from_u8(status).unwrap_or(Status::ChunkFailed);
                    let run_ns = (t1 - t0).max(0) as u64;
                    let header = Header::result(h.job(), h.index(), status, failed, run_ns, body.len());
                    let waiting = outbox.push(&framed(header, body)?, body, t1);
                    if isolate
                        || t1 - t0 > FLUSH_AFTER_NS
                        || waiting >= FLUSH_RESULTS
                        // Shared blocks wait for the results that used them to be out.
                        || !self.deferred.bind(py).is_empty()
                    {
                        return Ok((pos, Next::Flush as u8));
                    }
                }
                Kind::Func => {
                    let payload = bytes_at(py, buf, start, stop);
                    pos = stop;
                    self.define.call1(py, (h.func_id(), payload))?;
                    last_end = None;
                }
                Kind::Forget => {
                    pos = stop;
                    let funcs = self.funcs.bind(py);
                    if funcs.contains(h.func_id())? {
                        funcs.del_item(h.func_id())?;
                    }
                }
                Kind::Init => {
                    let payload = bytes_at(py, buf, start, stop);
                    pos = stop;
                    let (ok, init_ns, failure): (bool, u64, Bound<'_, PyBytes>) =
                        self.host.call_method1(py, "init", (payload, h.slot()))?.extract(py)?;
                    let reply = if ok {
                        Header::ready(init_ns)
                    } else {
                        Header::init_failed(failure.as_bytes().len())
                    };
                    outbox.push(&framed(reply, failure.as_bytes())?, failure.as_bytes(), now_ns());
                    // Large result buffers go where Init said.
                    let cb = self.host.getattr(py, "buffer_callback")?;
                    self.dumps_kwargs.bind(py).set_item("buffer_callback", cb)?;
                    let next = if ok { Next::Flush } else { Next::Fail };
                    return Ok((pos, next as u8));
                }
                Kind::Exit => {
                    self.exit_result(py)?;
                    return Ok((stop, Next::Exit as u8));
                }
                // Worker-to-engine kinds never arrive here.
                Kind::Ready | Kind::Result | Kind::InitFailed | Kind::ExitResult | Kind::InitStarted => pos = stop,
            }
        }
    }
}

/// `func` called on `item` by MPIRE's rule ([`task::UNPACK`]) for the item
/// types that settle it at once: a tuple, a dict, or a scalar that is not
/// iterable (or a `str` or `bytes`, which are one argument). `None`: any
/// other type, whose rule the host applies.
fn unpacked_call<'py>(func: &Bound<'py, PyAny>, item: &Bound<'py, PyAny>) -> Option<PyResult<Bound<'py, PyAny>>> {
    if let Ok(args) = item.cast_exact::<PyTuple>() {
        return Some(func.call1(args.clone()));
    }
    if let Ok(kwargs) = item.cast_exact::<PyDict>() {
        return Some(func.call((), Some(kwargs)));
    }
    one_argument(item).then(|| func.call1((item,)))
}

/// Whether MPIRE's rule passes `item` as the one argument, by its exact
/// type alone: `None`, a number, a `str` or `bytes`.
fn one_argument(item: &Bound<'_, PyAny>) -> bool {
    item.is_none()
        || item.is_exact_instance_of::<PyInt>()
        || item.is_exact_instance_of::<PyFloat>()
        || item.is_exact_instance_of::<PyBool>()
        || item.is_exact_instance_of::<PyString>()
        || item.is_exact_instance_of::<PyBytes>()
}

/// [`unpack_shape`]: every item is the one argument of its call.
pub const SHAPE_ONE: u8 = 1;
/// [`unpack_shape`]: every item is an exact tuple, its arguments.
pub const SHAPE_TUPLES: u8 = 2;
/// [`unpack_shape`]: neither, or not known: each item takes the whole rule.
pub const SHAPE_MIXED: u8 = 0;

/// How MPIRE's rule calls the items of an `UNPACK` chunk, when one answer
/// holds for all of them, so the worker's loop can call the function as a
/// plain map ([`SHAPE_ONE`]) or a starmap ([`SHAPE_TUPLES`]) does: a
/// `range`'s items are ints; a list's are checked by exact type, ~1 ns an
/// item (the same check in Python, `set(map(type, items))`, costs ~20 ns,
/// half of calling a small function). [`SHAPE_MIXED`] for anything else.
#[pyfunction]
pub fn unpack_shape(items: &Bound<'_, PyAny>) -> u8 {
    if items.is_exact_instance_of::<pyo3::types::PyRange>() {
        return SHAPE_ONE;
    }
    let Ok(list) = items.cast_exact::<PyList>() else {
        return SHAPE_MIXED;
    };
    let Some(first) = list.iter().next() else {
        return SHAPE_ONE;
    };
    let (shape, fits): (u8, fn(&Bound<'_, PyAny>) -> bool) = if one_argument(&first) {
        (SHAPE_ONE, one_argument)
    } else if first.is_exact_instance_of::<PyTuple>() {
        (SHAPE_TUPLES, |item| item.is_exact_instance_of::<PyTuple>())
    } else {
        return SHAPE_MIXED;
    };
    if list.iter().all(|item| fits(&item)) {
        shape
    } else {
        SHAPE_MIXED
    }
}

/// The header bytes of a frame of `header` whose payload is `body`.
fn framed(mut header: Header, body: &[u8]) -> PyResult<[u8; HEADER_LEN]> {
    header.len = frame::payload_len(body.len()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(header.to_bytes())
}

/// `buf[start..stop]` as a new bytes object.
fn bytes_at<'py>(py: Python<'py>, buf: &Bound<'py, PyByteArray>, start: usize, stop: usize) -> Bound<'py, PyBytes> {
    // SAFETY: as in `run`: no Python code runs while the slice lives.
    PyBytes::new(py, unsafe { &buf.as_bytes()[start..stop] })
}

impl WorkerLoop {
    /// `Exit`: run the host's exit hook (`exit`, which returns bytes or
    /// None) and add its payload to the batch as the `ExitResult` frame,
    /// the last this worker sends. A payload too large for a frame becomes
    /// an error that says so, made as a failed chunk's is.
    fn exit_result(&self, py: Python<'_>) -> PyResult<()> {
        let got = self.host.call_method0(py, "exit")?.into_bound(py);
        if got.is_none() {
            return Ok(());
        }
        let mut payload = got.cast_into::<PyBytes>()?;
        let n = payload.as_bytes().len();
        if frame::payload_len(n).is_err() {
            let exc = PyValueError::new_err(crate::too_large(n, "the worker's exit result")).into_value(py);
            payload = self.chunk_failed.bind(py).call1((exc, ""))?.cast_into::<PyBytes>()?;
        }
        let header = Header::exit_result(payload.as_bytes().len());
        let body = payload.as_bytes();
        self.outbox.get().push(&framed(header, body)?, body, now_ns());
        Ok(())
    }

    /// A chunk's outcome as it can travel: one too large for a frame
    /// fails the chunk with an error that says so, instead.
    fn fit_frame<'py>(
        &self,
        py: Python<'py>,
        status: u8,
        failed: u32,
        result: Bound<'py, PyBytes>,
    ) -> PyResult<(u8, u32, Bound<'py, PyBytes>)> {
        let n = result.as_bytes().len();
        if frame::payload_len(n).is_ok() {
            return Ok((status, failed, result));
        }
        drop(result);
        let exc = PyValueError::new_err(crate::too_large(n, "the task's result")).into_value(py);
        let payload = self.chunk_failed.bind(py).call1((exc, ""))?.cast_into::<PyBytes>()?;
        Ok((Status::ChunkFailed as u8, 0, payload))
    }

    /// Run one task. A plain one (one item or one argument tuple, its
    /// function loaded) runs here; any other goes to the host's `run_task`,
    /// with a view of its payload in the buffer.
    fn run_task<'py>(
        &self,
        py: Python<'py>,
        h: &Header,
        buf: &Bound<'py, PyByteArray>,
        start: usize,
        stop: usize,
    ) -> PyResult<Ran<'py>> {
        let bits = h.task_bits() & !task::ISOLATE;
        let star = bits == task::STAR | task::SINGLE;
        let plain = bits == task::SINGLE || bits == task::UNPACK | task::SINGLE || star;
        let func = self.funcs.bind(py).get_item(h.func_id())?;
        if let Some(func) = &func {
            if plain && !func.is_instance(self.load_error.bind(py))? {
                let payload = bytes_at(py, buf, start, stop);
                return self.run_plain(py, func, bits, star, &payload);
            }
        }
        let view = PyMemoryView::from(buf.as_any())?;
        let payload = view.get_item(PySlice::new(py, start as isize, stop as isize, 1))?;
        let func = func.unwrap_or_else(|| py.None().into_bound(py));
        let ran = self.run_task.bind(py).call1((func, h.task_bits(), &payload));
        // Let go of the buffer before it may be resized.
        view.call_method0("release")?;
        ran?.extract()
    }

    /// Load, call and pickle one plain task; a stage that fails goes to the
    /// host's helper that reports it.
    fn run_plain<'py>(
        &self,
        py: Python<'py>,
        func: &Bound<'py, PyAny>,
        bits: u8,
        star: bool,
        payload: &Bound<'py, PyBytes>,
    ) -> PyResult<Ran<'py>> {
        let big = self.big.bind(py);
        let bytes = payload.as_bytes();
        let loaded = if packed::is_packed_scalar(bytes) {
            packed::unpack_scalar(py, bytes)
        } else {
            self.loads.bind(py).call1((payload,))
        };
        let item = match loaded {
            Ok(item) => item,
            Err(_) => return self.run_task.bind(py).call1((func, bits, payload))?.extract(),
        };
        let called = if bits & task::UNPACK != 0 {
            // An item of another type (a list, a namedtuple, an array):
            // Python applies the whole rule, to the item loaded here (a
            // payload may be loaded only once: under threading it takes the
            // item out of the pool's table).
            unpacked_call(func, &item).unwrap_or_else(|| self.call_unpacked.bind(py).call1((func, &item)))
        } else if star {
            match item.cast::<PyTuple>() {
                Ok(args) => func.call1(args.clone()),
                Err(_) => py
                    .get_type::<PyTuple>()
                    .call1((&item,))
                    .and_then(|t| func.call1(t.cast_into::<PyTuple>()?)),
            }
        } else {
            func.call1((&item,))
        };
        let value = match called {
            Ok(v) => v,
            Err(e) => {
                return self
                    .fail_task
                    .bind(py)
                    .call1((e.into_value(py), func, &item, bits))?
                    .extract()
            }
        };
        if let Some(v) = packed::pack_scalar(&value) {
            return Ok((Status::Ok as u8, 0, PyBytes::new(py, &v)));
        }
        let pickled = self.dumps.bind(py).call((&value, 5), Some(self.dumps_kwargs.bind(py)));
        if let Ok(data) = pickled {
            if let Ok(data) = data.cast_into::<PyBytes>() {
                if big.is_empty() && !data.as_bytes().windows(8).any(|w| w == b"__main__") {
                    return Ok((Status::Ok as u8, 0, data));
                }
            }
        }
        // Large buffers, a __main__ reference, or no pickle at all: the
        // careful path says which.
        big.call_method0("clear")?;
        self.careful.bind(py).call1((&value, bits))?.extract()
    }
}
