//! The worker's inner loop for plain tasks, in Rust.
//!
//! At `chunksize=1` and for `apply_async` a worker spends more time reading
//! frames, timing tasks and packing results than running them: ~2 µs a
//! task of Python bytecode around `loads`, the call and `dumps`. This loop
//! does that part natively for the common frames, a task of one item
//! (`SINGLE`) or one argument tuple (`STAR | SINGLE`) whose function loaded
//! fine, and returns to `python/shoal/_worker.py` for everything else:
//! other frames, a task whose stage fails (the Python helpers report it
//! exactly as the Python loop would) and every flush.
//!
//! It holds no engine state: workers may be forked from a threaded parent,
//! and this is plain code over Python objects.

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyTuple, PyType};
use shoal_core::frame::{task, Header, Kind, HEADER_LEN};
use shoal_core::Status;

use crate::packed;

/// `time.perf_counter_ns()`: the same clock the Python loop stamps with.
fn now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The worker's state the fast loop reads, gathered once after Init.
#[pyclass(frozen, module = "shoal._shoal", name = "PlainTasks")]
pub struct PlainTasks {
    funcs: Py<PyDict>,
    parts: Py<PyList>,
    pending: Py<PyList>,
    loads: Py<PyAny>,
    dumps: Py<PyAny>,
    dumps_kwargs: Py<PyDict>,
    big: Py<PyList>,
    load_error: Py<PyType>,
    run_task: Py<PyAny>,
    fail_task: Py<PyAny>,
    careful: Py<PyAny>,
    flush_ns: i64,
    flush_after_ns: i64,
    flush_parts: usize,
}

/// Where `run` stopped.
type Stop = (usize, i64, bool);

/// A task's outcome as the Python helpers give it: status, items that
/// raised, payload.
type Ran<'py> = (u8, u32, Bound<'py, PyBytes>);

#[pymethods]
impl PlainTasks {
    /// `funcs`, `parts` (the outbox), `pending` (shared blocks to free after
    /// a flush), `loads`, `dumps` with `buffer_callback` and the list it
    /// fills (`big`), the type standing in for a function that failed to
    /// load, the helpers for the slow stages, and the flush policy.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        funcs: Py<PyDict>,
        parts: Py<PyList>,
        pending: Py<PyList>,
        loads: Py<PyAny>,
        dumps: Py<PyAny>,
        buffer_callback: Py<PyAny>,
        big: Py<PyList>,
        load_error: Py<PyType>,
        run_task: Py<PyAny>,
        fail_task: Py<PyAny>,
        careful: Py<PyAny>,
        flush_ns: i64,
        flush_after_ns: i64,
        flush_parts: usize,
    ) -> PyResult<Self> {
        let dumps_kwargs = PyDict::new(py);
        dumps_kwargs.set_item("buffer_callback", buffer_callback)?;
        Ok(PlainTasks {
            funcs,
            parts,
            pending,
            loads,
            dumps,
            dumps_kwargs: dumps_kwargs.unbind(),
            big,
            load_error,
            run_task,
            fail_task,
            careful,
            flush_ns,
            flush_after_ns,
            flush_parts,
        })
    }

    /// Run plain tasks from `buf[pos..end]`, appending result frames to the
    /// outbox. Returns `(pos, since, flush)`: where it stopped, when the
    /// oldest unsent result was made, and whether the caller must flush
    /// before going on. It stops before the first frame it does not take.
    fn run(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyByteArray>,
        mut pos: usize,
        end: usize,
        mut since: i64,
    ) -> PyResult<Stop> {
        let funcs = self.funcs.bind(py);
        let parts = self.parts.bind(py);
        let big = self.big.bind(py);
        // When one task follows another here, the clock read that ends one
        // starts the next: reading the clock took ~10% of a worker's time at
        // chunksize=1 (perf, imap of 200k ints), ~100 ns a read on this VM.
        let mut last_end: Option<i64> = None;
        loop {
            if end < pos + HEADER_LEN {
                return Ok((pos, since, false));
            }
            let header = {
                // SAFETY: only _Inbox resizes this buffer, never while this runs;
                // the slice is dropped before any Python code is called.
                let b = unsafe { buf.as_bytes() };
                Header::parse(&b[pos..pos + HEADER_LEN])
            };
            // A frame this loop does not take, or cannot read, is the Python loop's.
            let Ok(h) = header else {
                return Ok((pos, since, false));
            };
            let stop = pos + HEADER_LEN + h.len as usize;
            let bits = h.task_bits();
            let star = bits == task::STAR | task::SINGLE;
            if stop > end || h.kind != Kind::Task || !(bits == task::SINGLE || star) {
                return Ok((pos, since, false));
            }
            let (job, index, fid) = (h.job(), h.index(), h.func_id());
            let Some(func) = funcs.get_item(fid)? else {
                return Ok((pos, since, false));
            };
            if func.is_instance(self.load_error.bind(py))? {
                return Ok((pos, since, false));
            }
            let t0 = last_end.unwrap_or_else(now_ns);
            if !parts.is_empty() && t0 - since > self.flush_ns {
                return Ok((pos, since, true));
            }
            let payload = {
                // SAFETY: as above.
                let b = unsafe { buf.as_bytes() };
                PyBytes::new(py, &b[pos + HEADER_LEN..stop])
            };
            pos = stop;
            let (status, failed, result) = self.run_one(py, &func, bits, star, &payload, big)?;
            let t1 = now_ns();
            last_end = Some(t1);
            if parts.is_empty() {
                since = t1;
            }
            let body = result.as_bytes();
            let status = Status::from_u8(status).unwrap_or(Status::ChunkFailed);
            let run_ns = (t1 - t0).max(0) as u64;
            let header = Header::result(job, index, status, failed, run_ns, body.len());
            let frame = PyBytes::new_with(py, HEADER_LEN + body.len(), |out| {
                out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
                out[HEADER_LEN..].copy_from_slice(body);
                Ok(())
            })?;
            parts.append(frame)?;
            if t1 - t0 > self.flush_after_ns || parts.len() >= self.flush_parts || !self.pending.bind(py).is_empty() {
                return Ok((pos, since, true));
            }
        }
    }
}

impl PlainTasks {
    /// Load, call and pickle one task; a stage that fails goes to the
    /// Python helper that reports it. Returns the status, the items that
    /// raised, and the payload.
    fn run_one<'py>(
        &self,
        py: Python<'py>,
        func: &Bound<'py, PyAny>,
        task_bits: u8,
        star: bool,
        payload: &Bound<'py, PyBytes>,
        big: &Bound<'py, PyList>,
    ) -> PyResult<Ran<'py>> {
        let bytes = payload.as_bytes();
        let loaded = if packed::is_packed_scalar(bytes) {
            packed::unpack_scalar(py, bytes)
        } else {
            self.loads.bind(py).call1((payload,))
        };
        let item = match loaded {
            Ok(item) => item,
            Err(_) => return self.run_task.bind(py).call1((func, task_bits, payload))?.extract(),
        };
        let called = if star {
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
                    .call1((e.into_value(py), func, &item, task_bits))?
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
        self.careful.bind(py).call1((&value, task_bits))?.extract()
    }
}
