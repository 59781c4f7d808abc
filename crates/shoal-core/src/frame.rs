//! The wire format between the engine and a worker: the one codec both
//! sides use. The engine frames tasks and reads results with it; the
//! worker's loop (the binding's `worker_loop.rs`) reads tasks and frames
//! results with it, so the Python worker never packs or parses a frame.
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
//!      5     1  flags   Task: task bits ([`task`]); Result: a [`Status`]
//!      6     2  failed  Result: items of the chunk that raised (saturating)
//!      8     4  a       job id (Task, Result), function id (Func, Forget),
//!                       worker slot (Init)
//!     12     4  b       chunk index (Task, Result)
//!     16     8  c       function id (Task), run time in ns (Result),
//!                       initializer run time in ns (Ready), worker serial (Init)
//! ```
//!
//! Callers never read `a`, `b` or `c` by position: [`Header`]'s constructors
//! and accessors name what each holds for each kind.

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
    /// Engine to worker, first frame: the pickled start-up settings.
    Init = 1,
    /// Engine to worker: define a function from the pickled payload. Sent
    /// once per function and worker, before the first task that runs it.
    Func = 2,
    /// Engine to worker: run one chunk.
    Task = 3,
    /// Engine to worker: a function is no longer needed.
    Forget = 4,
    /// Engine to worker: finish and exit. A worker with an exit hook runs
    /// it first and sends its result (`ExitResult`).
    Exit = 5,
    /// Worker to engine: start-up done (the initializer ran).
    Ready = 64,
    /// Worker to engine: the outcome of one chunk.
    Result = 65,
    /// Worker to engine: the initializer raised; the payload describes it.
    InitFailed = 66,
    /// Worker to engine, last frame: the exit hook's pickled result.
    ExitResult = 67,
    /// Worker to engine, before `Ready`: the user's initializer starts now.
    /// The engine's init timeout counts from here, not from the launch, so a
    /// spawned interpreter's start-up is not charged to the initializer.
    InitStarted = 68,
}

impl Kind {
    /// Every kind, for tables and tests.
    pub const ALL: [Kind; 10] = [
        Kind::Init,
        Kind::Func,
        Kind::Task,
        Kind::Forget,
        Kind::Exit,
        Kind::Ready,
        Kind::Result,
        Kind::InitFailed,
        Kind::ExitResult,
        Kind::InitStarted,
    ];

    /// Decode a kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        // A match, not a search of ALL: every frame's header is decoded.
        Some(match v {
            1 => Kind::Init,
            2 => Kind::Func,
            3 => Kind::Task,
            4 => Kind::Forget,
            5 => Kind::Exit,
            64 => Kind::Ready,
            65 => Kind::Result,
            66 => Kind::InitFailed,
            67 => Kind::ExitResult,
            68 => Kind::InitStarted,
            _ => return None,
        })
    }
}

/// Task bits: how the worker calls the function on a chunk's items.
pub mod task {
    /// Call `f(*item)` for each item (starmap).
    pub const STAR: u8 = 1;
    /// Each item is `(args, kwargs)`; call `f(*args, **kwargs)`.
    pub const APPLY: u8 = 2;
    /// The payload is one item, not a list of items, and an `Ok` result is
    /// one value, not a list of values.
    pub const SINGLE: u8 = 4;
    /// Run this chunk alone and send its result at once. Set by the engine
    /// on chunks that were queued on a worker that died, so the one that
    /// crashed it can be told apart from the others.
    pub const ISOLATE: u8 = 8;
    /// MPIRE's rule, per item: a tuple is `f(*item)`, a dict is
    /// `f(**item)`, any other iterable but `str`, `bytes` and a numpy array
    /// is unpacked as positional arguments, anything else is `f(item)`.
    /// (`WorkerPool`'s maps, when no extra arguments precede the item's.)
    pub const UNPACK: u8 = 16;
}

/// What became of a chunk. A worker reports the first three; the engine
/// makes the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Every item succeeded: the payload is the pickled list of results, or
    /// the one result of a [`task::SINGLE`] chunk.
    Ok = 0,
    /// Some items raised: the payload is `(results, errors)`.
    ItemErrors = 1,
    /// The whole chunk failed before any item ran (it could not be
    /// unpickled, or the initializer raised); the payload describes it.
    ChunkFailed = 2,
    /// The worker running the chunk died. The payload is UTF-8: a first
    /// line `pid kind value` (kind being `code`, `signal` or `unknown`),
    /// then the message for people.
    WorkerLost = 3,
    /// The chunk was cancelled, or the pool terminated, before it finished.
    /// The payload is a UTF-8 message.
    Cancelled = 4,
    /// The chunk ran past its job's deadline and its worker was killed.
    /// The payload is laid out as for [`Status::WorkerLost`].
    TimedOut = 5,
}

impl Status {
    /// Every status, for tables and tests.
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::ItemErrors,
        Status::ChunkFailed,
        Status::WorkerLost,
        Status::Cancelled,
        Status::TimedOut,
    ];

    /// Decode a status byte.
    pub fn from_u8(v: u8) -> Option<Status> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::ItemErrors,
            2 => Status::ChunkFailed,
            3 => Status::WorkerLost,
            4 => Status::Cancelled,
            5 => Status::TimedOut,
            _ => return None,
        })
    }

    /// Whether the worker ran the chunk to the end (its items' run time
    /// says something about the function).
    pub fn ran(self) -> bool {
        matches!(self, Status::Ok | Status::ItemErrors)
    }
}

/// A decoded frame header. Build one with the constructor for its kind and
/// read it with the accessors, which name what each field holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// Frame kind.
    pub kind: Kind,
    flags: u8,
    failed: u16,
    a: u32,
    b: u32,
    c: u64,
}

impl Header {
    fn new(kind: Kind, len: usize) -> Header {
        Header {
            // A length that does not fit is refused where a frame is
            // written (`encode`, or `payload_len` before `to_bytes`).
            len: u32::try_from(len).unwrap_or(u32::MAX),
            kind,
            flags: 0,
            failed: 0,
            a: 0,
            b: 0,
            c: 0,
        }
    }

    /// `Init` for the worker in `slot` (0..n-1, reused by replacements),
    /// the `serial`-th worker the engine started.
    pub fn init(slot: u32, serial: u32, len: usize) -> Header {
        Header {
            a: slot,
            c: u64::from(serial),
            ..Header::new(Kind::Init, len)
        }
    }

    /// `Func` defining function `func`.
    pub fn func(func: u32, len: usize) -> Header {
        Header {
            a: func,
            ..Header::new(Kind::Func, len)
        }
    }

    /// `Task`: run chunk `index` of `job` with function `func`.
    pub fn task(job: u32, index: u32, func: u32, task_bits: u8, len: usize) -> Header {
        Header {
            flags: task_bits,
            a: job,
            b: index,
            c: u64::from(func),
            ..Header::new(Kind::Task, len)
        }
    }

    /// `Forget` function `func`.
    pub fn forget(func: u32) -> Header {
        Header {
            a: func,
            ..Header::new(Kind::Forget, 0)
        }
    }

    /// `Exit`.
    pub fn exit() -> Header {
        Header::new(Kind::Exit, 0)
    }

    /// `Ready`, after an initializer that ran `init_ns`.
    pub fn ready(init_ns: u64) -> Header {
        Header {
            c: init_ns,
            ..Header::new(Kind::Ready, 0)
        }
    }

    /// `Result` of chunk `index` of `job`: `status`, with `failed` items
    /// that raised, after `run_ns` of work.
    pub fn result(job: u32, index: u32, status: Status, failed: u32, run_ns: u64, len: usize) -> Header {
        Header {
            flags: status as u8,
            failed: failed.min(u32::from(u16::MAX)) as u16,
            a: job,
            b: index,
            c: run_ns,
            ..Header::new(Kind::Result, len)
        }
    }

    /// `InitFailed`.
    pub fn init_failed(len: usize) -> Header {
        Header::new(Kind::InitFailed, len)
    }

    /// `ExitResult`.
    pub fn exit_result(len: usize) -> Header {
        Header::new(Kind::ExitResult, len)
    }

    /// `InitStarted`.
    pub fn init_started() -> Header {
        Header::new(Kind::InitStarted, 0)
    }

    /// Task, Result: the job.
    pub fn job(&self) -> u32 {
        self.a
    }

    /// Task, Result: the chunk's index in its job.
    pub fn index(&self) -> u32 {
        self.b
    }

    /// Task: the function to run; Func, Forget: the function defined or forgotten.
    pub fn func_id(&self) -> u32 {
        match self.kind {
            Kind::Task => self.c as u32,
            _ => self.a,
        }
    }

    /// Task: the task bits ([`task`]).
    pub fn task_bits(&self) -> u8 {
        self.flags
    }

    /// Result: the status; `None` if the byte is not one.
    pub fn status(&self) -> Option<Status> {
        Status::from_u8(self.flags)
    }

    /// Result: items that raised (saturating at 65535).
    pub fn failed(&self) -> u32 {
        u32::from(self.failed)
    }

    /// Result: the chunk's run time; Ready: the initializer's.
    pub fn run_ns(&self) -> u64 {
        self.c
    }

    /// Init: the worker's slot.
    pub fn slot(&self) -> u32 {
        self.a
    }

    /// The header's 24 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4] = self.kind as u8;
        out[5] = self.flags;
        out[6..8].copy_from_slice(&self.failed.to_le_bytes());
        out[8..12].copy_from_slice(&self.a.to_le_bytes());
        out[12..16].copy_from_slice(&self.b.to_le_bytes());
        out[16..24].copy_from_slice(&self.c.to_le_bytes());
        out
    }

    /// Decode a header from the first [`HEADER_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Header, FrameError> {
        assert!(b.len() >= HEADER_LEN, "a header needs {HEADER_LEN} bytes");
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&b[16..24]);
        Ok(Header {
            len: u32_at(0),
            kind: Kind::from_u8(b[4]).ok_or(FrameError::UnknownKind(b[4]))?,
            flags: b[5],
            failed: u16::from_le_bytes([b[6], b[7]]),
            a: u32_at(8),
            b: u32_at(12),
            c: u64::from_le_bytes(c),
        })
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}(flags={} failed={} a={} b={} c={} len={})",
            self.kind, self.flags, self.failed, self.a, self.b, self.c, self.len
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

/// Append one frame, `header` then `payload`, to `out`. The header's `len`
/// is set from the payload.
pub fn encode(out: &mut Vec<u8>, mut header: Header, payload: &[u8]) -> Result<(), FrameError> {
    header.len = payload_len(payload.len())?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// `n` as a frame's length field, if a frame can carry `n` bytes.
pub fn payload_len(n: usize) -> Result<u32, FrameError> {
    u32::try_from(n).map_err(|_| FrameError::TooLarge(n))
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
        let h = Header::parse(avail)?;
        let total = HEADER_LEN + h.len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..total].to_vec();
        self.start += total;
        Ok(Some((h, payload)))
    }

    /// Bytes of an incomplete frame still waiting for the rest.
    pub fn buffered(&self) -> usize {
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
    fn a_length_a_frame_cannot_carry_is_an_error_not_a_wrap() {
        assert_eq!(payload_len(MAX_PAYLOAD), Ok(u32::MAX));
        assert_eq!(payload_len(MAX_PAYLOAD + 1), Err(FrameError::TooLarge(MAX_PAYLOAD + 1)));
    }

    #[test]
    fn round_trip_in_odd_pieces() {
        let mut wire = Vec::new();
        encode(&mut wire, Header::task(7, 3, 11, task::STAR, 0), b"hello").unwrap();
        encode(&mut wire, Header::exit(), b"").unwrap();
        let result = Header::result(9, 4_000_000, Status::ItemErrors, 70_000, u64::MAX, 0);
        encode(&mut wire, result, &[0xAB; 1000]).unwrap();
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
        let (t, payload) = &got[0];
        assert_eq!(t.kind, Kind::Task);
        assert_eq!((t.job(), t.index(), t.func_id(), t.task_bits()), (7, 3, 11, task::STAR));
        assert_eq!(payload, b"hello");
        assert_eq!(got[1].0.kind, Kind::Exit);
        assert!(got[1].1.is_empty());
        let r0 = got[2].0;
        assert_eq!((r0.job(), r0.index(), r0.run_ns()), (9, 4_000_000, u64::MAX));
        assert_eq!(r0.status(), Some(Status::ItemErrors));
        assert_eq!(r0.failed(), 65_535, "saturates");
        assert_eq!(got[2].1.len(), 1000);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn header_layout_is_fixed() {
        let mut wire = Vec::new();
        encode(
            &mut wire,
            Header::result(0x0102_0304, 5, Status::ChunkFailed, 3, 6, 0),
            b"xy",
        )
        .unwrap();
        assert_eq!(wire.len(), HEADER_LEN + 2);
        assert_eq!(&wire[0..4], &2u32.to_le_bytes());
        assert_eq!(wire[4], 65);
        assert_eq!(wire[5], 2);
        assert_eq!(&wire[6..8], &3u16.to_le_bytes());
        assert_eq!(&wire[8..12], &0x0102_0304u32.to_le_bytes());
        assert_eq!(&wire[12..16], &5u32.to_le_bytes());
        assert_eq!(&wire[16..24], &6u64.to_le_bytes());
        let init = Header::init(1, 9, 0).to_bytes();
        assert_eq!((&init[8..12], init[16]), (&1u32.to_le_bytes()[..], 9));
    }

    #[test]
    fn every_code_decodes_to_itself_and_status_is_apart_from_task_bits() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        for s in Status::ALL {
            assert_eq!(Status::from_u8(s as u8), Some(s));
        }
        assert_eq!(Status::from_u8(200), None);
        // Task bits and a status never share a byte of the same frame: a
        // Task carries bits, a Result a status.
        let t = Header::task(1, 0, 1, task::SINGLE | task::STAR, 0);
        assert_eq!(t.task_bits(), task::SINGLE | task::STAR);
        let t = Header::task(1, 0, 1, task::SINGLE | task::UNPACK | task::ISOLATE, 0);
        assert_eq!(t.task_bits(), task::SINGLE | task::UNPACK | task::ISOLATE);
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut wire = Vec::new();
        encode(&mut wire, Header::exit(), b"").unwrap();
        wire[4] = 200;
        let mut r = FrameReader::new();
        r.push(&wire);
        assert_eq!(r.next_frame(), Err(FrameError::UnknownKind(200)));
    }
}
