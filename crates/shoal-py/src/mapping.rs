//! Shared-memory mappings for `python/shoal/_shm.py`: the four system calls
//! its arenas need and a buffer over a mapped range.
//!
//! Here rather than through ctypes, whose import and set-up cost every
//! pool's start ~1.5 ms (the parent maps its arenas as the pool is made),
//! and rather than `mmap.mmap`, which keeps a duplicate descriptor per
//! mapping. The arena logic (which block, when to map, when to free) stays
//! in Python; these only do what they are told.

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use std::io;
use std::os::raw::{c_int, c_void};

/// Map `length` bytes of `fd` from `offset`, shared and writable; the
/// address. `OSError` if the kernel refuses (an address-space limit, too
/// many mappings).
#[pyfunction]
pub fn mmap_shared(fd: c_int, length: usize, offset: i64) -> PyResult<usize> {
    // SAFETY: a fresh mapping at an address the kernel picks; nothing
    // existing is touched.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error().into());
    }
    Ok(addr as usize)
}

/// Unmap what [`mmap_shared`] mapped. The caller guarantees that nothing
/// still reads it (`_shm.py` unmaps once the last object over it has died).
#[pyfunction]
pub fn munmap(addr: usize, length: usize) -> PyResult<()> {
    // SAFETY: the caller's guarantee above; a wrong range fails with EINVAL
    // or unmaps memory only `_shm.py` mapped.
    if unsafe { libc::munmap(addr as *mut c_void, length) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// Give back the pages under a mapped range (`MADV_REMOVE`): the file's
/// bytes there read as zeros afterwards.
#[pyfunction]
pub fn discard_pages(addr: usize, length: usize) -> PyResult<()> {
    // SAFETY: the range is one `_shm.py` mapped; MADV_REMOVE frees the
    // backing pages and leaves the mapping in place.
    if unsafe { libc::madvise(addr as *mut c_void, length, libc::MADV_REMOVE) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// Free the file's pages from `offset` for `length` bytes, keeping its size
/// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`).
#[pyfunction]
pub fn punch_hole(fd: c_int, offset: i64, length: i64) -> PyResult<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: integer arguments only.
    if unsafe { libc::fallocate(fd, mode, offset, length) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// A writable buffer over `length` bytes at `address`, in a mapping made by
/// [`mmap_shared`]. It owns nothing: `_shm.py` watches it die (a weak
/// reference) to free the block and unmap it, so it must outlive every
/// view taken of it, which the buffer protocol ensures (a view holds it).
#[pyclass(module = "shoal._shoal", frozen, weakref)]
pub struct Span {
    addr: usize,
    len: usize,
}

#[pymethods]
impl Span {
    #[new]
    fn new(address: usize, length: usize) -> PyResult<Self> {
        if address == 0 || isize::try_from(length).is_err() {
            return Err(PyValueError::new_err(format!(
                "a Span needs a mapped address and a length below 2**63, not {address:#x} and {length}"
            )));
        }
        Ok(Span {
            addr: address,
            len: length,
        })
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// # Safety
    ///
    /// Called by Python with a valid `view`; fills it as a writable buffer
    /// of bytes, holding a reference to this object.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let (addr, len) = (slf.get().addr, slf.get().len);
        // SAFETY: `view` is Python's; the memory stays mapped while this
        // object lives (see the type's doc), and the view keeps it alive.
        let ok = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), addr as *mut c_void, len as isize, 0, flags) };
        if ok != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// # Safety
    ///
    /// Nothing to release: the memory belongs to the mapping.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// The system's page size in bytes.
fn page_size() -> usize {
    // SAFETY: a plain query.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Map several [`Span`]s' pages again, end to end, into one new region,
/// without copying them (`mremap` with an old size of 0 duplicates a shared
/// mapping); returns the region's address and its mapped length. The
/// caller unmaps it with [`munmap`] once nothing reads it, and keeps the
/// spans (so their blocks stay in use) until then. `WorkerPool.map`
/// concatenates numpy results this way (python/shoal/_shm.py, `joined`).
/// `parts`: `(span, address, length)` for each piece in order, each
/// starting at its span's start, each but the last a whole number of pages.
/// `ValueError` for pieces that cannot be laid end to end, `OSError` if the
/// kernel refuses a mapping.
#[pyfunction]
pub fn join_spans(parts: Vec<(Bound<'_, Span>, usize, usize)>) -> PyResult<(usize, usize)> {
    let page = page_size();
    let mut len = 0usize;
    for (k, (span, addr, n)) in parts.iter().enumerate() {
        let s = span.get();
        if *addr != s.addr || *n > s.len || s.addr % page != 0 {
            return Err(PyValueError::new_err(
                "a piece does not start at its span's start, page-aligned",
            ));
        }
        if k + 1 < parts.len() && n % page != 0 {
            return Err(PyValueError::new_err(
                "a piece before the last is not a whole number of pages",
            ));
        }
        len += n;
    }
    if len == 0 {
        return Err(PyValueError::new_err("nothing to join"));
    }
    let mapped = len.div_ceil(page) * page;
    // SAFETY: a fresh reservation at an address the kernel picks.
    let region = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapped,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if region == libc::MAP_FAILED {
        return Err(io::Error::last_os_error().into());
    }
    let mut off = 0usize;
    for (_, addr, n) in &parts {
        let size = n.div_ceil(page) * page;
        if size == 0 {
            continue;
        }
        // SAFETY: `addr` starts a live shared mapping of at least `size`
        // bytes (a span's block, whose capacity is whole pages), and the
        // target lies inside the reservation just made, which MREMAP_FIXED
        // replaces piece by piece.
        let got = unsafe {
            libc::mremap(
                *addr as *mut c_void,
                0,
                size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                (region as usize + off) as *mut c_void,
            )
        };
        if got == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            // SAFETY: the reservation made above, with what was mapped into it.
            unsafe { libc::munmap(region, mapped) };
            return Err(err.into());
        }
        off += size;
    }
    Ok((region as usize, mapped))
}
