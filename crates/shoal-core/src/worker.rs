//! The engine's view of one worker process: its channel, what it holds, and
//! its timing.
//!
//! A worker runs its chunks strictly in the order they were sent, so the
//! head of [`Worker::outstanding`] is the chunk it is running now and the rest
//! have not started. That is how a death fails exactly the chunk that was
//! running and nothing else.

use crate::fasthash::FastSet;
use crate::frame::{self, FrameReader, Header, Kind};
use crate::funcs::FuncId;
use crate::job::JobId;
use crate::launch::Launched;
use crate::sys;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// A chunk waiting in the queue or held by a worker.
#[derive(Debug)]
pub struct Task {
    /// The job it belongs to.
    pub job: JobId,
    /// Its index in the job.
    pub index: u32,
    /// The pickled chunk.
    pub payload: Vec<u8>,
    /// It was queued on a worker that died with more than one chunk, so it
    /// may be the one that killed it: it runs alone from now on.
    pub suspect: bool,
    /// Items in the chunk, for the adaptive chunk size.
    pub items: u32,
    /// Its job's function and task flags, copied here so that sending the
    /// chunk and recording its run time need no lookup in the job table.
    pub func: FuncId,
    /// See [`Task::func`].
    pub flags: u8,
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Started; its initializer has not reported back yet.
    Starting,
    /// Taking tasks.
    Ready,
    /// Told to exit (lifespan reached, pool closing); takes no more tasks.
    Retiring,
    /// Its process has exited; waiting to learn the exit status.
    Exited,
}

/// One worker process as the engine sees it.
pub struct Worker {
    /// Unique id of this worker over the engine's life (replacements get new ids).
    pub id: u32,
    /// The process.
    pub proc: Launched,
    chan: OwnedFd,
    reader: FrameReader,
    out: Vec<u8>,
    /// Chunks sent and not yet answered, oldest (running) first. Change it
    /// only through [`Worker::hold`] and [`Worker::answered`], which keep
    /// [`Worker::held_bytes`] in step.
    pub outstanding: VecDeque<Task>,
    held_bytes: usize,
    held_items: u64,
    /// Functions this worker has been sent.
    pub funcs: FastSet<FuncId>,
    /// Chunks sent to it over its life.
    pub assigned: u64,
    /// Where it is in its life.
    pub life: Life,
    /// Its end of the channel reached end-of-file.
    pub chan_closed: bool,
    /// Its initializer finished (it sent `Ready`).
    pub was_ready: bool,
    /// When it was started.
    pub started: Instant,
    /// When to escalate to SIGKILL if it has not exited (terminate, retire).
    pub kill_at: Option<Instant>,
}

impl Worker {
    /// Wrap a launched process whose channel end (ours) is `chan`.
    pub fn new(id: u32, proc: Launched, chan: OwnedFd) -> io::Result<Self> {
        sys::set_nonblocking(chan.as_raw_fd())?;
        Ok(Worker {
            id,
            proc,
            chan,
            reader: FrameReader::new(),
            out: Vec::new(),
            outstanding: VecDeque::new(),
            held_bytes: 0,
            held_items: 0,
            funcs: FastSet::default(),
            assigned: 0,
            life: Life::Starting,
            chan_closed: false,
            was_ready: false,
            started: Instant::now(),
            kill_at: None,
        })
    }

    /// The channel descriptor.
    pub fn chan_fd(&self) -> RawFd {
        self.chan.as_raw_fd()
    }

    /// Queue a frame for sending.
    pub fn send(&mut self, kind: Kind, flags: u8, job: u32, index: u32, aux: u64, payload: &[u8]) {
        // Payloads over 4 GiB are rejected in the Python layer before they get here.
        frame::encode(&mut self.out, kind, flags, job, index, aux, payload)
            .expect("payload size checked at submission");
    }

    /// Frames encoded since the I/O thread last took them, if any. The I/O
    /// thread empties the buffer (see `Outgoing::queue`).
    pub fn out_frames(&mut self) -> Option<&mut Vec<u8>> {
        (!self.out.is_empty()).then_some(&mut self.out)
    }

    /// Feed bytes read from the channel; the frames now complete are added
    /// to `frames`.
    pub fn feed(&mut self, bytes: &[u8], frames: &mut Vec<(Header, Vec<u8>)>) -> io::Result<()> {
        self.reader.push(bytes);
        while let Some(f) = self
            .reader
            .next_frame()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            frames.push(f);
        }
        Ok(())
    }

    /// Bytes of chunk payloads sent and not answered.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Items in the chunks sent and not answered.
    pub fn held_items(&self) -> u64 {
        self.held_items
    }

    /// Record a chunk sent to this worker.
    pub fn hold(&mut self, task: Task) {
        self.held_bytes += task.payload.len();
        self.held_items += u64::from(task.items);
        self.outstanding.push_back(task);
    }

    /// The oldest chunk, answered (or lost): no longer held.
    pub fn answered(&mut self) -> Option<Task> {
        let t = self.outstanding.pop_front()?;
        self.held_bytes -= t.payload.len();
        self.held_items -= u64::from(t.items);
        Some(t)
    }

    /// Every chunk held, oldest first; the worker holds none after.
    pub fn take_all(&mut self) -> Vec<Task> {
        self.held_bytes = 0;
        self.held_items = 0;
        self.outstanding.drain(..).collect()
    }
}
