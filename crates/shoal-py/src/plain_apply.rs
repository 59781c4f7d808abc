//! `apply_async(func, args)` without keywords or callbacks, wholly in Rust.
//!
//! At `chunksize=1` the Python around the engine call (the state check,
//! converting and pickling the arguments, the function-cache lookup) cost
//! as much as the engine's own work. The pool makes one of these and calls
//! it first; it returns `None`, having queued nothing, for any call that
//! needs the general path in `python/shoal/pool.py`.

use crate::{engine_err, packed, JobResult, PyEngine};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use shoal_core::frame::task;

/// The pool's pieces the fast path uses: its engine, its function cache
/// (`id(func) -> (func, fid)`), `dumps_one` with its out-of-band buffers,
/// and the decoders each result object keeps.
#[pyclass(frozen, module = "shoal._shoal", name = "PlainApply")]
pub struct PlainApply {
    engine: Py<PyEngine>,
    funcs: Py<PyDict>,
    dumps_one: Py<PyAny>,
    oob: Py<PyAny>,
    loads: Py<PyAny>,
    decode: Py<PyAny>,
}

#[pymethods]
impl PlainApply {
    #[new]
    fn new(
        engine: Py<PyEngine>,
        funcs: Py<PyDict>,
        dumps_one: Py<PyAny>,
        oob: Py<PyAny>,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
    ) -> Self {
        PlainApply {
            engine,
            funcs,
            dumps_one,
            oob,
            loads,
            decode,
        }
    }

    /// Queue `func(*args)` and return its result object, or `None` when the
    /// call needs the general path: `args` not a tuple, arguments that fail
    /// to pickle (the general path reports it), or `func` not cached yet.
    /// `settle_on`: an object told the outcome as it arrives, as
    /// `settle_on._shoal_settle(ok, value)` (see `PyEngine::apply_result`).
    #[pyo3(signature = (func, args, settle_on=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyAny>,
        settle_on: Option<Py<PyAny>>,
    ) -> PyResult<Option<Bound<'py, JobResult>>> {
        if !args.is_exact_instance_of::<PyTuple>() {
            return Ok(None);
        }
        // A function not cached takes the general path: known before the
        // arguments are pickled, so no pickle is made for nothing (for a
        // thread pool, no object put in its table that nobody would take).
        let key = PyInt::new(py, func.as_ptr() as usize);
        if !self.funcs.bind(py).contains(&key)? {
            return Ok(None);
        }
        let payload = match packed::pack_scalar(args) {
            Some(v) => v,
            None => match self.dumps_one.bind(py).call1((args, self.oob.bind(py))) {
                Ok(data) => match data.cast::<PyBytes>() {
                    Ok(b) => b.as_bytes().to_vec(),
                    Err(_) => return Ok(None),
                },
                Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => return Err(e),
                Err(_) => return Ok(None),
            },
        };
        // No Python code runs from this lookup until the engine has the
        // call, so the cache cannot evict and release the function between.
        let Some(hit) = self.funcs.bind(py).get_item(key)? else {
            return Ok(None);
        };
        let hit = hit.cast_into::<PyTuple>()?;
        if !hit.get_item(0)?.is(func) {
            return Ok(None);
        }
        let fid: u32 = hit.get_item(1)?.extract()?;
        if settle_on.is_some() {
            return JobResult::create_applied(
                self.engine.bind(py),
                fid,
                task::STAR | task::SINGLE,
                payload,
                self.loads.clone_ref(py),
                self.decode.clone_ref(py),
                crate::result::Hooks::new(None, None, settle_on),
            )
            .map(Some);
        }
        let job = self
            .engine
            .get()
            .engine()?
            .apply(fid, task::STAR | task::SINGLE, payload)
            .map_err(engine_err)?;
        JobResult::create(
            py,
            self.engine.clone_ref(py),
            job,
            None,
            self.loads.clone_ref(py),
            self.decode.clone_ref(py),
            None,
            None,
        )
        .map(Some)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.engine)?;
        visit.call(&self.funcs)?;
        visit.call(&self.dumps_one)?;
        visit.call(&self.oob)?;
        visit.call(&self.loads)?;
        visit.call(&self.decode)
    }
}
