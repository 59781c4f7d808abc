//! The engine's view of one worker process: its channel, what it holds, and
//! its timing.
//!
//! A worker runs its chunks strictly in the order they were sent, and sends
//! results in batches. So the chunk it is running is one of those it holds
//! ([`Worker::outstanding`], oldest first): the oldest, unless results for
//! the ones before it are still waiting in its batch. When a worker holding
//! one chunk dies, that chunk killed it; when it held several, each runs
//! again alone (see `supervise.rs`), so a death always fails exactly the
//! chunk that caused it.

use crate::fasthash::FastSet;
use crate::frame::{self, FrameReader, Header};
use crate::funcs::FuncId;
use crate::job::JobId;
use crate::launch::Launched;
use crate::stats::WorkerStats;
use crate::sys;
use std::collections::VecDeque;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A chunk waiting in the queue or held by a worker.
#[derive(Debug)]
pub(crate) struct Task {
    /// The job it belongs to.
    pub(crate) job: JobId,
    /// Its index in the job.
    pub(crate) index: u32,
    /// The pickled chunk.
    pub(crate) payload: Vec<u8>,
    /// It was queued on a worker that died with more than one chunk, so it
    /// may be the one that killed it: it runs alone from now on.
    pub(crate) suspect: bool,
    /// Items in the chunk.
    pub(crate) items: u32,
    /// The input index of its first item.
    pub(crate) first_item: u64,
    /// Its job's function, task bits and deadline, copied here so that
    /// sending the chunk and recording its run time need no lookup in the
    /// job table.
    pub(crate) func: FuncId,
    /// See [`Task::func`].
    pub(crate) task_bits: u8,
    /// See [`Task::func`]; see [`Task::timeout_ns`].
    pub(crate) timeout: Option<NonZeroU64>,
    /// Its job pins chunks to workers (MPIRE's `order_tasks`): chunk `i`
    /// runs only on the worker in slot `i % workers`, or on that slot's
    /// replacement (see `scheduler::Queue`).
    pub(crate) pinned: bool,
}

impl Task {
    /// A job's deadline as a task carries it: in ns, and never 0 (a zero
    /// timeout counts as 1 ns), so that it takes 8 bytes where
    /// `Option<Duration>` takes 16, in a struct thousands of which wait
    /// queued.
    pub(crate) fn timeout_ns(timeout: Option<Duration>) -> Option<NonZeroU64> {
        timeout.map(|t| NonZeroU64::new(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(NonZeroU64::MIN))
    }
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Started; its initializer has not reported back yet.
    Starting,
    /// Taking tasks.
    Ready,
    /// Told to exit (lifespan reached, pool closing); takes no more tasks.
    Retiring,
    /// Its process has exited; waiting to learn the exit status.
    Exited,
}

/// Why the engine killed a worker itself, which decides what becomes of
/// the chunks it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Its chunk ran past the job's deadline, or, if it never became
    /// ready, its initializer ran past the engine's `init_timeout`.
    TimedOut(Duration),
    /// It was told to exit and its exit hook ran past the engine's
    /// `exit_timeout`.
    ExitTimedOut(Duration),
    /// It was running a chunk of a job cancelled with `kill_running`.
    Cancelled,
}

/// One worker process as the engine sees it.
pub(crate) struct Worker {
    /// Unique over the engine's life; replacements get new ones.
    pub(crate) serial: u32,
    /// Its slot, `0..workers`: a replacement takes the slot of the worker
    /// it replaces.
    pub(crate) slot: u32,
    /// The process.
    pub(crate) proc: Launched,
    chan: OwnedFd,
    reader: FrameReader,
    out: Vec<u8>,
    /// Chunks sent and not yet answered, oldest first. Change it only
    /// through [`Worker::hold`] and [`Worker::answered`], which keep the
    /// held totals in step.
    pub(crate) outstanding: VecDeque<Task>,
    held_bytes: usize,
    held_items: u64,
    /// When the oldest chunk held began to run, as far as the engine can
    /// tell: when it was sent to an empty worker, or when the result before
    /// it came back (a result waiting in the worker's batch makes this late,
    /// never early).
    front_since: Instant,
    /// Functions this worker has been sent.
    pub(crate) funcs: FastSet<FuncId>,
    /// Chunks and items sent to it over its life, for lifespans.
    pub(crate) assigned_chunks: u64,
    /// See [`Worker::assigned_chunks`].
    pub(crate) assigned_items: u64,
    /// Where it is in its life.
    pub(crate) life: Life,
    /// Its end of the channel reached end-of-file.
    pub(crate) chan_closed: bool,
    /// Its initializer finished (it sent `Ready`).
    pub(crate) was_ready: bool,
    /// When to escalate to SIGKILL if it has not exited (terminate, retire).
    pub(crate) kill_at: Option<Instant>,
    /// When the chunk it holds must have finished (jobs with a timeout),
    /// or, while it is starting, when its initializer must have (the
    /// engine's `init_timeout`, from `InitStarted`): a worker takes chunks
    /// only once ready, so the two never overlap.
    pub(crate) deadline: Option<(Instant, Duration)>,
    /// The engine killed it, and why.
    pub(crate) fate: Option<Fate>,
    /// When it was launched.
    pub(crate) launched_at: Instant,
    /// When it became idle (ready and holding nothing), while it is.
    pub(crate) idle_since: Option<Instant>,
    /// When it was told to exit.
    pub(crate) exit_sent_at: Option<Instant>,
    /// When its user initializer started (it sent `InitStarted`).
    pub(crate) init_started_at: Option<Instant>,
}

impl Worker {
    /// Wrap a launched process whose channel end (ours) is `chan`.
    pub(crate) fn new(serial: u32, slot: u32, proc: Launched, chan: OwnedFd, launched_at: Instant) -> io::Result<Self> {
        sys::set_nonblocking(chan.as_raw_fd())?;
        Ok(Worker {
            serial,
            slot,
            proc,
            chan,
            reader: FrameReader::new(),
            out: Vec::new(),
            outstanding: VecDeque::new(),
            held_bytes: 0,
            held_items: 0,
            front_since: launched_at,
            funcs: FastSet::default(),
            assigned_chunks: 0,
            assigned_items: 0,
            life: Life::Starting,
            chan_closed: false,
            was_ready: false,
            kill_at: None,
            deadline: None,
            fate: None,
            launched_at,
            idle_since: None,
            exit_sent_at: None,
            init_started_at: None,
        })
    }

    /// The channel descriptor.
    pub(crate) fn chan_fd(&self) -> RawFd {
        self.chan.as_raw_fd()
    }

    /// Queue a frame for sending.
    pub(crate) fn send(&mut self, header: Header, payload: &[u8]) {
        // A payload a frame cannot carry is refused by the engine's API
        // (`Engine::apply`, `submit_items`, `register_func`: `TooLarge`)
        // before it is queued.
        frame::encode(&mut self.out, header, payload).expect("payload size checked at submission");
    }

    /// Tell it to run its exit hook and exit; SIGKILL after `grace`.
    pub(crate) fn retire(&mut self, now: Instant, grace: Duration, stats: &mut WorkerStats) {
        self.send(Header::exit(), &[]);
        self.life = Life::Retiring;
        self.kill_at = Some(now + grace);
        self.exit_sent_at = Some(now);
        self.stop_idling(now, Some(stats));
    }

    /// Frames encoded since the I/O thread last took them, if any. The I/O
    /// thread empties the buffer (see `Outgoing::queue`).
    pub(crate) fn out_frames(&mut self) -> Option<&mut Vec<u8>> {
        (!self.out.is_empty()).then_some(&mut self.out)
    }

    /// Feed bytes read from the channel; the frames now complete are added
    /// to `frames`.
    pub(crate) fn feed(&mut self, bytes: &[u8], frames: &mut Vec<(Header, Vec<u8>)>) -> io::Result<()> {
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
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Items in the chunks sent and not answered.
    pub(crate) fn held_items(&self) -> u64 {
        self.held_items
    }

    /// Record a chunk sent to this worker at `now`.
    pub(crate) fn hold(&mut self, task: Task, now: Instant, stats: &mut WorkerStats) {
        self.held_bytes += task.payload.len();
        self.held_items += u64::from(task.items);
        self.assigned_chunks += 1;
        self.assigned_items += u64::from(task.items);
        if let Some(t) = task.timeout {
            let t = Duration::from_nanos(t.get());
            self.deadline = Some((now + t, t));
        }
        self.stop_idling(now, Some(stats));
        if self.outstanding.is_empty() {
            self.front_since = now;
        }
        self.outstanding.push_back(task);
    }

    /// How long the oldest chunk held has been running, at `now`.
    pub(crate) fn front_running(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.front_since)
    }

    /// The oldest chunk, answered (or lost) at `now`: no longer held.
    pub(crate) fn answered(&mut self, now: Instant) -> Option<Task> {
        let t = self.outstanding.pop_front()?;
        self.front_since = now;
        self.held_bytes -= t.payload.len();
        self.held_items -= u64::from(t.items);
        if t.timeout.is_some() {
            self.deadline = None;
        }
        Some(t)
    }

    /// Every chunk held, oldest first; the worker holds none after.
    pub(crate) fn take_all(&mut self) -> Vec<Task> {
        self.held_bytes = 0;
        self.held_items = 0;
        self.deadline = None;
        self.outstanding.drain(..).collect()
    }

    /// Start counting idle time if it is ready and holds nothing.
    pub(crate) fn maybe_idle(&mut self, now: Instant) {
        if self.life == Life::Ready && self.outstanding.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(now);
        }
    }

    /// Stop counting idle time, adding the stretch to `stats` if given.
    pub(crate) fn stop_idling(&mut self, now: Instant, stats: Option<&mut WorkerStats>) {
        if let Some(since) = self.idle_since.take() {
            if let Some(s) = stats {
                s.idle += now.saturating_duration_since(since);
            }
        }
    }
}
