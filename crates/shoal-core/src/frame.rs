//! The wire format between the engine and a worker.
//!
//! Every message is a frame: a fixed 24-byte little-endian header followed by
//! `len` payload bytes. Payloads are opaque to the engine (pickles, made and
//! read by Python). Frames are written back to back, so one `write` can carry
//! a batch of tasks and one `read` can return a batch of results.
//!
//! ```text
//! offset  size  field
//!      0     4  len     payload length in bytes
//!      4     1  kind    see [`Kind`]
//!      5     1  flags   kind-specific bits, see [`flags`]
//!      6     2  reserved, zero
//!      8     4  job     job id (or function id for Func/Forget)
//!     12     4  index   chunk index within the job
//!     16     8  aux     function id for Task; run time in ns for Result
//! ```
//!
//! The Python worker (`python/shoal/_worker.py`) implements the same layout
//! with `struct.Struct("<IBBHIIQ")`; `tests/api/test_protocol.py` checks the two agree.

use std::fmt;

/// Size of a frame header in bytes.
pub const HEADER_LEN: usize = 24;

/// Largest payload a frame may carry (the `len` field is 32 bits).
pub const MAX_PAYLOAD: usize = u32::MAX as usize;

/// What a frame means. Values below 64 travel from the engine to a worker,
/// values from 64 travel from a worker to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Engine to worker, first frame: the pickled start-up settings
    /// (sys.path, initializer, worker id). `aux` is the worker id.
    Init = 1,
    /// Engine to worker: define function `job` from the pickled payload.
    /// Sent once per job and worker, before that job's first task.
    Func = 2,
    /// Engine to worker: run chunk `index` of job `job` with function `aux`.
    Task = 3,
    /// Engine to worker: function `job` is no longer needed.
    Forget = 4,
    /// Engine to worker: finish and exit.
    Exit = 5,
    /// Worker to engine: start-up done (initializer ran). `aux` is the pid.
    Ready = 64,
    /// Worker to engine: the outcome of chunk `index` of job `job`.
    Result = 65,
    /// Worker to engine: the initializer raised; payload describes it.
    InitFailed = 66,
}

impl Kind {
    /// Decode a kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Init,
            2 => Kind::Func,
            3 => Kind::Task,
            4 => Kind::Forget,
            5 => Kind::Exit,
            64 => Kind::Ready,
            65 => Kind::Result,
            66 => Kind::InitFailed,
            _ => return None,
        })
    }
}

/// Flag bits. Task flags say how the worker calls the function; result
/// flags say how the payload is laid out.
pub mod flags {
    /// Task: call `f(*item)` for each item (starmap).
    pub const STAR: u8 = 1;
    /// Task: each item is `(args, kwargs)`; call `f(*args, **kwargs)` (apply).
    pub const APPLY: u8 = 2;
    /// Task: the payload is one item, not a list of items.
    pub const SINGLE: u8 = 4;
    /// Task: run this chunk alone and send its result at once. Set by the
    /// engine on chunks that were queued on a worker that died, so the one
    /// that crashed it can be told apart from the others.
    pub const ISOLATE: u8 = 8;

    /// Result: payload is the pickled list of results, all succeeded.
    pub const OK: u8 = 0;
    /// Result: payload is `(results, errors)`; some items raised.
    pub const ITEM_ERRORS: u8 = 1;
    /// Result: the whole chunk failed before any item ran (for example the
    /// task could not be unpickled); payload describes the error.
    pub const CHUNK_FAILED: u8 = 2;
    /// Result made by the engine, not a worker: the worker running the chunk
    /// died. Payload is a UTF-8 message naming the pid, exit status and task.
    pub const WORKER_LOST: u8 = 3;
    /// Result made by the engine: the pool was terminated before the chunk
    /// finished. Payload is a UTF-8 message.
    pub const CANCELLED: u8 = 4;
    /// Result bit, with `OK`: the payload is one pickled value, not a list.
    pub const SINGLE_VALUE: u8 = 16;
}

/// A decoded frame header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// Frame kind.
    pub kind: Kind,
    /// Kind-specific flag bits.
    pub flags: u8,
    /// Job id, or function id for `Func`/`Forget`.
    pub job: u32,
    /// Chunk index within the job.
    pub index: u32,
    /// Function id for `Task`, run time in ns for `Result`, pid for `Ready`.
    pub aux: u64,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}(job={} index={} flags={} aux={} len={})",
            self.kind, self.job, self.index, self.flags, self.aux, self.len
        )
    }
}

/// Errors in a byte stream that cannot be frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The kind byte is not a known [`Kind`].
    UnknownKind(u8),
    /// The payload does not fit the 32-bit length field.
    TooLarge(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::TooLarge(n) => {
                write!(f, "payload of {n} bytes exceeds the frame limit of {MAX_PAYLOAD} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Append one frame to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    kind: Kind,
    flags: u8,
    job: u32,
    index: u32,
    aux: u64,
    payload: &[u8],
) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
    out.push(flags);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&job.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&aux.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decode a header from the first [`HEADER_LEN`] bytes of `b`.
pub fn decode_header(b: &[u8]) -> Result<Header, FrameError> {
    assert!(b.len() >= HEADER_LEN, "decode_header needs {HEADER_LEN} bytes");
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut aux = [0u8; 8];
    aux.copy_from_slice(&b[16..24]);
    Ok(Header {
        len: u32_at(0),
        kind: Kind::from_u8(b[4]).ok_or(FrameError::UnknownKind(b[4]))?,
        flags: b[5],
        job: u32_at(8),
        index: u32_at(12),
        aux: u64::from_le_bytes(aux),
    })
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Read whatever `fd` has (up to `max` bytes) into the buffer.
    /// Returns the number of bytes read; 0 means end of stream.
    pub fn read_from(&mut self, fd: std::os::fd::RawFd, max: usize) -> std::io::Result<usize> {
        self.compact();
        self.buf.reserve(max);
        let spare = self.buf.spare_capacity_mut();
        let want = spare.len().min(max);
        // SAFETY: `read` writes at most `want` bytes into the spare capacity,
        // and only the bytes it reports are made part of the vector.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(Header, Vec<u8>)>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = decode_header(avail)?;
        let total = HEADER_LEN + h.len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..total].to_vec();
        self.start += total;
        Ok(Some((h, payload)))
    }

    /// Bytes of an incomplete frame still waiting for the rest.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_odd_pieces() {
        let mut wire = Vec::new();
        encode(&mut wire, Kind::Task, flags::STAR, 7, 3, 11, b"hello").unwrap();
        encode(&mut wire, Kind::Exit, 0, 0, 0, 0, b"").unwrap();
        encode(&mut wire, Kind::Result, 1, 9, 4_000_000, u64::MAX, &[0xAB; 1000]).unwrap();
        // Feed the stream one byte, then three bytes, then the rest.
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for piece in [&wire[..1], &wire[1..4], &wire[4..]] {
            r.push(piece);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0.kind, Kind::Task);
        assert_eq!((got[0].0.job, got[0].0.index, got[0].0.aux), (7, 3, 11));
        assert_eq!(got[0].1, b"hello");
        assert_eq!(got[1].0.kind, Kind::Exit);
        assert!(got[1].1.is_empty());
        assert_eq!(got[2].0.index, 4_000_000);
        assert_eq!(got[2].0.aux, u64::MAX);
        assert_eq!(got[2].1.len(), 1000);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn header_layout_is_fixed() {
        let mut wire = Vec::new();
        encode(&mut wire, Kind::Result, 2, 0x0102_0304, 5, 6, b"xy").unwrap();
        assert_eq!(wire.len(), HEADER_LEN + 2);
        assert_eq!(&wire[0..4], &2u32.to_le_bytes());
        assert_eq!(wire[4], 65);
        assert_eq!(wire[5], 2);
        assert_eq!(&wire[8..12], &0x0102_0304u32.to_le_bytes());
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut wire = Vec::new();
        encode(&mut wire, Kind::Exit, 0, 0, 0, 0, b"").unwrap();
        wire[4] = 200;
        let mut r = FrameReader::new();
        r.push(&wire);
        assert_eq!(r.next_frame(), Err(FrameError::UnknownKind(200)));
    }
}
