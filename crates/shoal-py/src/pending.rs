//! The result of `apply_async` without callbacks, in Rust.
//!
//! One is made per call, so creating it and `get` are on the per-task path:
//! as a Python object with a lock and ten attributes they cost ~2.5 µs of
//! the ~5 µs the parent spends per task. Calls with callbacks keep the
//! Python `ApplyResult`, which the engine notifies.

use crate::{single_value, PyEngine};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};
use std::sync::{Mutex, TryLockError};

static TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A task's outcome, once known: `(succeeded, value or exception)`.
type Outcome = (bool, Py<PyAny>);

/// The outcome of one `apply_async` call: `get`, `wait`, `ready` and
/// `successful`, as `multiprocessing.pool.AsyncResult` has them.
#[pyclass(frozen, module = "shoal._shoal", name = "PendingResult")]
pub struct Pending {
    engine: Py<PyEngine>,
    job: u32,
    /// Unpickles a plain result.
    loads: Py<PyAny>,
    /// `decode(status, payload) -> (succeeded, value)` for every other outcome.
    decode: Py<PyAny>,
    outcome: PyOnceLock<Outcome>,
    /// Held while the outcome is taken from the engine and decoded, so that
    /// a second thread waits for it instead of finding the job gone.
    collecting: Mutex<()>,
}

impl Pending {
    /// A new result object for job `job`, not tracked by the garbage collector.
    ///
    /// Every `#[pyclass]` is a GC type, so 20k results waiting in a list were
    /// walked by every collection that the calls themselves set off (~10%
    /// of the parent's time for 20k `apply_async`). The collector could do
    /// nothing with them anyway: without `__traverse__` they report no
    /// references, so no cycle through one is ever found.
    pub(crate) fn create<'py>(
        py: Python<'py>,
        engine: Py<PyEngine>,
        job: u32,
        loads: Py<PyAny>,
        decode: Py<PyAny>,
    ) -> PyResult<Bound<'py, Pending>> {
        let this = Bound::new(
            py,
            Pending {
                engine,
                job,
                loads,
                decode,
                outcome: PyOnceLock::new(),
                collecting: Mutex::new(()),
            },
        )?;
        // SAFETY: a live object of a GC type, with the GIL held. Its
        // deallocator untracks it again, which is allowed for an untracked object.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(this.as_ptr().cast()) };
        Ok(this)
    }

    /// Take and decode the outcome if the task has finished; true once known.
    fn resolve(&self, py: Python<'_>) -> PyResult<bool> {
        if self.outcome.get(py).is_some() {
            return Ok(true);
        }
        let _guard = loop {
            match self.collecting.try_lock() {
                Ok(g) => break g,
                // A panic while decoding left it poisoned; the outcome
                // check below still holds.
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                // Another thread is decoding; let it have the GIL.
                Err(TryLockError::WouldBlock) => py.detach(std::thread::yield_now),
            }
        };
        if self.outcome.get(py).is_some() {
            return Ok(true);
        }
        let Some(out) = self.engine.get().engine()?.collect(self.job) else {
            return Ok(false);
        };
        let outcome = match out.into_iter().next() {
            Some(o) => match single_value(py, o.status, o.single, &o.payload, self.loads.bind(py))? {
                Some(v) => (true, v.unbind()),
                None => self
                    .decode
                    .call1(py, (o.status as u8, PyBytes::new(py, &o.payload)))?
                    .extract::<Outcome>(py)?,
            },
            // Taken by a call that was interrupted while decoding it.
            None => (
                false,
                PyRuntimeError::new_err("the result was lost: its decoding was interrupted")
                    .into_value(py)
                    .into_any(),
            ),
        };
        let _ = self.outcome.set(py, outcome);
        Ok(true)
    }

    /// Wait for the task to finish, up to `timeout` seconds; true once known.
    fn wait_resolved(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.resolve(py)? {
            return Ok(true);
        }
        if self.engine.get().wait(py, self.job, true, timeout)? {
            return self.resolve(py);
        }
        Ok(false)
    }
}

#[pymethods]
impl Pending {
    /// The result when it arrives; re-raises the task's exception. Raises
    /// `multiprocessing.TimeoutError` after `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        if !self.wait_resolved(py, timeout)? {
            let ty = TIMEOUT_ERROR.import(py, "multiprocessing", "TimeoutError")?;
            return Err(PyErr::from_type(ty.clone(), ()));
        }
        let (ok, value) = self.outcome.get(py).expect("resolved");
        if *ok {
            Ok(value.clone_ref(py))
        } else {
            Err(PyErr::from_value(value.bind(py).clone()))
        }
    }

    /// Wait until the result is available or `timeout` seconds pass.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.wait_resolved(py, timeout).map(|_| ())
    }

    /// Whether the call has completed.
    fn ready(&self, py: Python<'_>) -> PyResult<bool> {
        self.resolve(py)
    }

    /// Whether the call completed without raising; ValueError if not ready.
    fn successful(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if !this.resolve(py)? {
            return Err(PyValueError::new_err(format!("{} not ready", slf.repr()?)));
        }
        Ok(this.outcome.get(py).expect("resolved").0)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Nobody will read the outcome: let the engine drop it on arrival.
        // The task itself still runs, as with multiprocessing.
        if self.outcome.get_mut().is_none() {
            if let Ok(engine) = self.engine.get().engine() {
                engine.abandon(self.job);
            }
        }
    }
}
