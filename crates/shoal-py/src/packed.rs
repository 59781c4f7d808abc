//! Packed chunks: a list of plain ints or plain floats as a raw array.
//!
//! Trivial functions over numbers are the case where a pool spends more
//! time moving data than computing. Pickling a list of 125k ints costs a
//! worker ~7 ms (`save_long` per item), and unpickling it costs the parent
//! ~5 ms; as 8-byte machine values both sides take well under a millisecond
//! plus the objects themselves. Only exact `int` (within 64 bits) and exact
//! `float` qualify: subclasses such as `bool` or `IntEnum`, and big ints,
//! are pickled as before, so a packed chunk always comes back equal and of
//! the same types.
//!
//! The same holds for one value, a task's argument or result at
//! `chunksize=1` and in `apply_async`: there the cost is creating a pickler
//! and an unpickler on each side, several times the cost of the call. A
//! plain int, a plain float, or a short tuple of them (an argument tuple)
//! travels as tagged 8-byte values instead.
//!
//! Layout: one tag byte, then the values, little-endian. A pickle (protocol
//! 2 and up) always starts with 0x80, so the first byte tells the two apart.
//! The tags of chunks (`q`, `d`) and of single values (`i`, `f`, `t`) differ,
//! though the frame's flags already say which of the two a payload is.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// Tag of a chunk of 64-bit ints (array typecode `q`).
const INTS: u8 = b'q';
/// Tag of a chunk of floats (array typecode `d`).
const FLOATS: u8 = b'd';

/// `obj` as 8 little-endian bytes if it is an exact int within 64 bits.
fn int_word(obj: *mut ffi::PyObject) -> Option<[u8; 8]> {
    // SAFETY: a type check and a conversion on a live object that call no
    // Python code (an exact int has no `__index__` to run).
    unsafe {
        if ffi::PyLong_CheckExact(obj) == 0 {
            return None;
        }
        let mut overflow = 0;
        let v = ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow);
        (overflow == 0).then(|| v.to_le_bytes())
    }
}

/// `obj` as 8 little-endian bytes if it is an exact float.
fn float_word(obj: *mut ffi::PyObject) -> Option<[u8; 8]> {
    // SAFETY: a type check and a field read on a live object.
    unsafe { (ffi::PyFloat_CheckExact(obj) != 0).then(|| float_value(obj).to_le_bytes()) }
}

// The list and float macros below read object fields directly, which the
// limited API (the `abi3` feature) does not allow; there the same calls go
// through the functions it exports, which check their arguments.

#[cfg(not(feature = "abi3"))]
unsafe fn float_value(obj: *mut ffi::PyObject) -> f64 {
    unsafe { ffi::PyFloat_AS_DOUBLE(obj) }
}

#[cfg(feature = "abi3")]
unsafe fn float_value(obj: *mut ffi::PyObject) -> f64 {
    unsafe { ffi::PyFloat_AsDouble(obj) }
}

#[cfg(not(feature = "abi3"))]
unsafe fn list_len(list: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    unsafe { ffi::PyList_GET_SIZE(list) }
}

#[cfg(feature = "abi3")]
unsafe fn list_len(list: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    unsafe { ffi::PyList_Size(list) }
}

#[cfg(not(feature = "abi3"))]
unsafe fn list_item(list: *mut ffi::PyObject, i: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    unsafe { ffi::PyList_GET_ITEM(list, i) }
}

#[cfg(feature = "abi3")]
unsafe fn list_item(list: *mut ffi::PyObject, i: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    unsafe { ffi::PyList_GetItem(list, i) }
}

/// Fills slot `i` of a new list, taking over the reference `item`.
#[cfg(not(feature = "abi3"))]
unsafe fn list_fill(list: *mut ffi::PyObject, i: ffi::Py_ssize_t, item: *mut ffi::PyObject) {
    unsafe { ffi::PyList_SET_ITEM(list, i, item) }
}

#[cfg(feature = "abi3")]
unsafe fn list_fill(list: *mut ffi::PyObject, i: ffi::Py_ssize_t, item: *mut ffi::PyObject) {
    unsafe { ffi::PyList_SetItem(list, i, item) };
}

/// A new int or float object from 8 little-endian bytes.
fn number<'py>(py: Python<'py>, int: bool, word: [u8; 8]) -> PyResult<Bound<'py, PyAny>> {
    Ok(if int {
        i64::from_le_bytes(word).into_pyobject(py)?.into_any()
    } else {
        f64::from_le_bytes(word).into_pyobject(py)?.into_any()
    })
}

/// The bytes of `data`, bytes or any contiguous buffer, for `f` to read.
fn with_bytes<T>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<T>) -> PyResult<T> {
    let buf = PyBuffer::<u8>::get(data)?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("packed data must be a contiguous buffer"));
    }
    // SAFETY: a contiguous buffer of `len_bytes` bytes, held by `buf` for
    // as long as `f` runs.
    f(unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) })
}

/// `values` as a packed chunk, or `None` if any item is not an exact int in
/// 64 bits (for a list of ints) or an exact float (for a list of floats).
/// Lists of fewer than two items are never packed: a pickle is as small.
#[pyfunction]
pub fn pack_values<'py>(py: Python<'py>, values: &Bound<'py, PyList>) -> Option<Bound<'py, PyBytes>> {
    let list = values.as_ptr();
    // SAFETY: `values` is a list (the signature checked it) and the GIL is
    // held, so its size and items are stable while no Python code runs, and
    // none runs below.
    let n = unsafe { list_len(list) };
    if n < 2 {
        return None;
    }
    // SAFETY: as above; 0 <= i < n.
    let item = |i| unsafe { list_item(list, i) };
    let ints = int_word(item(0)).is_some();
    let mut out = Vec::<u8>::with_capacity(1 + 8 * n as usize);
    out.push(if ints { INTS } else { FLOATS });
    for i in 0..n {
        let word = if ints { int_word(item(i)) } else { float_word(item(i)) };
        out.extend_from_slice(&word?);
    }
    Some(PyBytes::new(py, &out))
}

/// Whether a payload's first byte marks a packed chunk rather than a pickle.
fn is_packed_chunk(first: u8) -> bool {
    first == INTS || first == FLOATS
}

/// The list a packed chunk holds. `data` is bytes or any contiguous buffer.
#[pyfunction]
pub fn unpack_values<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    with_bytes(data, |bytes| unpack_chunk(py, bytes))
}

/// Whether a chunk's payload is packed (else it is a pickle).
pub(crate) fn is_packed(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&tag| is_packed_chunk(tag))
}

/// The list the packed chunk `bytes` holds: [`unpack_values`] on bytes the
/// caller already has (an outcome the engine handed over), with no Python
/// bytes object made for them.
pub(crate) fn unpack_chunk<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyList>> {
    let (&tag, body) = bytes
        .split_first()
        .ok_or_else(|| PyValueError::new_err("an empty packed chunk"))?;
    if !is_packed_chunk(tag) || body.len() % 8 != 0 {
        return Err(PyValueError::new_err(format!(
            "not a packed chunk (tag {tag:#04x}, {} bytes of values)",
            body.len()
        )));
    }
    let n = body.len() / 8;
    // SAFETY: PyList_New returns a new list of n NULL slots (or NULL with
    // an error set); each slot is filled exactly once below, and on a
    // failed conversion the list is dropped with its remaining slots
    // NULL, which list_dealloc allows.
    unsafe {
        let list =
            Bound::from_owned_ptr_or_err(py, ffi::PyList_New(n as ffi::Py_ssize_t))?.cast_into_unchecked::<PyList>();
        for (i, word) in body.chunks_exact(8).enumerate() {
            let word = word.try_into().expect("chunks_exact(8)");
            let item = number(py, tag == INTS, word)?;
            list_fill(list.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr());
        }
        Ok(list)
    }
}

// One value: what `apply_async` and `chunksize=1` send for each task, where
// creating a pickler and an unpickler costs more than the call itself.

/// Tag of one plain int (8 bytes follow).
const ONE_INT: u8 = b'i';
/// Tag of one plain float (8 bytes follow).
const ONE_FLOAT: u8 = b'f';
/// Tag of a tuple of plain ints and floats, each a tag and 8 bytes.
const TUPLE: u8 = b't';
/// Most items in a packed tuple: argument tuples are short.
const MAX_TUPLE: usize = 16;

/// Appends `obj` as a tag and 8 bytes if it is an exact int within 64 bits
/// or an exact float; false (and nothing appended) otherwise.
fn push_scalar(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> bool {
    let ptr = obj.as_ptr();
    let (tag, word) = match (int_word(ptr), float_word(ptr)) {
        (Some(w), _) => (ONE_INT, w),
        (None, Some(w)) => (ONE_FLOAT, w),
        (None, None) => return false,
    };
    out.push(tag);
    out.extend_from_slice(&word);
    true
}

/// `obj` packed, if it is a plain int, a plain float, or an exact tuple of
/// at most [`MAX_TUPLE`] of them.
pub fn pack_scalar(obj: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(9);
    if push_scalar(obj, &mut out) {
        return Some(out);
    }
    let tuple = obj.cast_exact::<PyTuple>().ok()?;
    if tuple.len() > MAX_TUPLE {
        return None;
    }
    out.reserve(9 * tuple.len());
    out.push(TUPLE);
    for item in tuple.iter() {
        if !push_scalar(&item, &mut out) {
            return None;
        }
    }
    Some(out)
}

/// Whether `data` starts like a packed single value rather than a pickle.
pub fn is_packed_scalar(data: &[u8]) -> bool {
    matches!(data.first(), Some(&(ONE_INT | ONE_FLOAT | TUPLE)))
}

fn scalar_at<'py>(py: Python<'py>, tag: u8, word: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let word: [u8; 8] = word
        .try_into()
        .map_err(|_| PyValueError::new_err("a packed value needs 8 bytes"))?;
    match tag {
        ONE_INT | ONE_FLOAT => number(py, tag == ONE_INT, word),
        _ => Err(PyValueError::new_err(format!("not a packed value (tag {tag:#04x})"))),
    }
}

/// The value [`pack_scalar`] packed.
pub fn unpack_scalar<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match data.split_first() {
        Some((&TUPLE, body)) if body.len() % 9 == 0 => {
            let items = body
                .chunks_exact(9)
                .map(|c| scalar_at(py, c[0], &c[1..]))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any())
        }
        Some((&tag, word)) if tag != TUPLE && word.len() == 8 => scalar_at(py, tag, word),
        _ => Err(PyValueError::new_err(format!(
            "not a packed value ({} bytes starting {:?})",
            data.len(),
            data.first()
        ))),
    }
}

/// `obj` packed as one value, or `None` if it is not a plain int, a plain
/// float or a short tuple of them.
#[pyfunction]
pub fn pack_one<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    pack_scalar(obj).map(|v| PyBytes::new(py, &v))
}

/// Each of `items` packed as one value, or `None` unless every item packs.
#[pyfunction]
pub fn pack_each<'py>(py: Python<'py>, items: &Bound<'py, PyList>) -> Option<Vec<Bound<'py, PyBytes>>> {
    items
        .iter()
        .map(|item| pack_scalar(&item).map(|v| PyBytes::new(py, &v)))
        .collect()
}

/// The value [`pack_one`] packed; `data` is bytes or a contiguous buffer.
#[pyfunction]
pub fn unpack_one<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    with_bytes(data, |bytes| unpack_scalar(py, bytes))
}
