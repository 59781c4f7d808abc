//! The engine: one I/O thread per pool that owns the workers' channels, and
//! the API the binding calls from Python threads.
//!
//! The I/O thread waits in `poll` on every worker's channel and pidfd, the
//! launcher, and an eventfd that callers use to wake it. Callers and the
//! thread share [`State`] behind one mutex; the thread never touches Python,
//! and payloads are bytes, so no lock here is ever held while waiting for the
//! GIL.

use crate::fasthash::FastMap;
use crate::frame::{self, task, FrameError, Header, Status};
use crate::funcs::{FuncId, Funcs};
use crate::io::{Inbound, Outgoing, ReadBufs};
use crate::job::{Job, JobId, JobSpec, Outcome};
use crate::launch::Launcher;
use crate::scheduler::Queue;
use crate::stats::{Snapshot, WorkerStats};
use crate::sys::{self, Waker};
use crate::worker::{Fate, Life, Task, Worker};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The outcome of a chunk that terminate stopped before it ran or finished.
pub(crate) const TERMINATED: &[u8] = b"the pool was terminated before this task finished";
/// The outcome of a chunk whose job was cancelled before it ran or finished.
pub(crate) const CANCELLED: &[u8] = b"the task was cancelled";

/// Engine threads running in this process, across all engines. A process
/// with none can be forked safely: no engine lock can be held by a thread
/// the child would not have.
static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many engine threads are running in this process.
pub fn live_threads() -> usize {
    LIVE_THREADS.load(Ordering::SeqCst)
}

/// Count a thread that is not an engine's own I/O thread (a binding's
/// callback thread, say) for [`live_threads`]. Call [`thread_ended`] when it ends.
pub fn thread_started() {
    LIVE_THREADS.fetch_add(1, Ordering::SeqCst);
}

/// The other half of [`thread_started`].
pub fn thread_ended() {
    LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
}

/// How long a worker may live, in chunks (`maxtasksperchild`) and in
/// items (MPIRE's `worker_lifespan`). A worker reaching either takes no more
/// chunks and is replaced once it has answered the ones it holds; so a
/// chunk may carry it past the item count, as in MPIRE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifespan {
    /// Chunks a worker runs before it is replaced.
    pub chunks: Option<u64>,
    /// Items a worker runs before it is replaced.
    pub items: Option<u64>,
}

impl Lifespan {
    /// Whether a worker given `chunks` chunks of `items` items has lived
    /// its span.
    pub(crate) fn reached(&self, chunks: u64, items: u64) -> bool {
        self.chunks.is_some_and(|m| chunks >= m) || self.items.is_some_and(|m| items >= m)
    }
}

/// How an engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of worker processes to keep running: their slots are
    /// `0..workers`.
    pub workers: usize,
    /// The payload of the `Init` frame every worker gets first.
    pub init_payload: Vec<u8>,
    /// When a worker is replaced by a fresh one.
    pub lifespan: Lifespan,
    /// After SIGTERM (terminate), how long a worker has before SIGKILL.
    pub kill_grace: Duration,
    /// After `Exit` (close, lifespan), how long a worker has to run its
    /// exit hook and exit before SIGKILL.
    pub exit_grace: Duration,
    /// How long a worker's initializer may run, from when the worker says
    /// it starts (`InitStarted`; a worker that never says so has no limit):
    /// past it, the worker is killed, like a chunk past its deadline, and
    /// every chunk waiting in the queue then fails as timed out, as an
    /// MPIRE map fails when a `worker_init` times out. `None`: no limit.
    pub init_timeout: Option<Duration>,
    /// Like `exit_grace`, but a worker still running its exit hook when it
    /// passes is reported ([`ExitReport::TimedOut`]) as well as killed.
    /// `None`: `exit_grace` applies, silently.
    pub exit_timeout: Option<Duration>,
    /// How long a launch may take to be answered before it counts as failed.
    pub launch_timeout: Duration,
}

impl EngineConfig {
    /// A configuration with `workers` workers and defaults for the rest.
    pub fn new(workers: usize, init_payload: Vec<u8>) -> Self {
        EngineConfig {
            workers,
            init_payload,
            lifespan: Lifespan::default(),
            kill_grace: Duration::from_millis(200),
            exit_grace: Duration::from_secs(10),
            init_timeout: None,
            exit_timeout: None,
            launch_timeout: Duration::from_secs(30),
        }
    }
}

/// Where the engine is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepting jobs.
    Running,
    /// No new jobs; finishing queued work, then stopping the workers.
    Closing,
    /// Killing the workers; unfinished chunks are cancelled.
    Terminating,
    /// All workers are gone and the I/O thread has finished.
    Stopped,
}

/// What a caller waits for in [`Engine::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// An outcome can be taken, or there is window room for more input.
    Progress,
    /// An outcome can be taken, or every chunk has one: what a caller that
    /// takes outcomes while another thread feeds the job waits for.
    Ready,
    /// Window room for at least this many chunks (at least one): what a
    /// thread that feeds the job while another takes its outcomes waits
    /// for. Asking for a batch's worth, not one chunk, spares the feeder a
    /// wake-up per outcome taken. Once the job takes no more chunks, the
    /// wait fails with the error a submit would get.
    Room(u32),
    /// Every chunk has an outcome.
    Finished,
}

/// What a worker's exit hook left, in [`Engine::take_exit_results`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReport {
    /// The hook's payload (an `ExitResult` frame).
    Returned(Vec<u8>),
    /// The hook ran past [`EngineConfig::exit_timeout`] and the worker was
    /// killed; the message says which worker and the limit.
    TimedOut(String),
}

/// Errors the engine's API returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// No such job (never created, or released and finished).
    UnknownJob(JobId),
    /// No such function (never registered, or released and unused).
    UnknownFunc(FuncId),
    /// The engine no longer accepts work.
    NotRunning,
    /// The job was cancelled: it takes no more chunks.
    Cancelled(JobId),
    /// A payload of this many bytes does not fit a frame
    /// ([`crate::frame::MAX_PAYLOAD`]).
    TooLarge(usize),
    /// The job's input was marked complete (or the job abandoned): it takes
    /// no more chunks.
    InputComplete(JobId),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::UnknownJob(j) => write!(f, "no job with id {j}"),
            EngineError::UnknownFunc(id) => write!(f, "no function with id {id}"),
            EngineError::NotRunning => write!(f, "Pool not running"),
            EngineError::Cancelled(j) => write!(f, "job {j} was cancelled"),
            EngineError::TooLarge(n) => write!(f, "{}", FrameError::TooLarge(*n)),
            EngineError::InputComplete(j) => write!(f, "job {j} takes no more input"),
        }
    }
}

impl std::error::Error for EngineError {}

/// `Ok` if `payload` fits a frame.
fn fits(payload: &[u8]) -> Result<(), EngineError> {
    frame::payload_len(payload.len())
        .map(drop)
        .map_err(|_| EngineError::TooLarge(payload.len()))
}

/// Everything the I/O thread and callers share.
pub(crate) struct State {
    pub(crate) config: EngineConfig,
    pub(crate) phase: Phase,
    /// Boxed: with 20k `apply_async` jobs in flight, growing a table of
    /// 160-byte entries copied megabytes under the lock, and each lookup
    /// strode through them.
    pub(crate) jobs: FastMap<JobId, Box<Job>>,
    pub(crate) funcs: Funcs,
    /// The other buffer of [`Shared::calls`], swapped in when they are taken.
    spare_calls: Vec<Call>,
    /// Frames read from a worker and not yet handled (kept for its capacity).
    pub(crate) frames: Vec<(Header, Vec<u8>)>,
    /// Chunks waiting for a worker, in submission order (per lane: see [`Queue`]).
    pub(crate) queue: Queue,
    pub(crate) workers: Vec<Worker>,
    /// Launches asked for and not answered yet.
    pub(crate) starting: Vec<Start>,
    /// The serial of the next worker launched.
    pub(crate) next_serial: u32,
    /// Counters per slot, summed over the workers that held it. Their
    /// `pid` is filled in only in snapshots.
    pub(crate) slots: Vec<WorkerStats>,
    /// Whether each slot has had a worker, so the next one is a restart.
    pub(crate) slot_filled: Vec<bool>,
    /// What exit hooks returned, by slot, in the order workers exited.
    pub(crate) exit_results: Vec<(u32, ExitReport)>,
    pub(crate) launcher: Box<dyn Launcher>,
    /// Workers that died before their initializer finished, in a row.
    pub(crate) init_failures: u32,
    /// What the last failed initializer reported.
    pub(crate) init_error: Option<Vec<u8>>,
    /// Why the last launch failed, if it did.
    pub(crate) launch_error: Option<String>,
    /// Do not try to launch before this time (after failures).
    pub(crate) launch_after: Option<Instant>,
    done_tx: Option<Sender<JobId>>,
    io_sleeping: bool,
    /// Callers blocked on the condition variable. Notifying costs a system
    /// call even with nobody waiting, so the I/O thread checks this first.
    waiters: u32,
    started: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    waker: Waker,
    /// `apply` calls not yet in the job table. A caller adds one without
    /// the state lock, which the I/O thread holds while it handles a batch
    /// of results: at `apply_async`'s rate the caller blocked on it, and
    /// each block cost two context switches. Whoever takes the state lock
    /// next moves them in ([`Shared::lock`]), so no reader of the state
    /// ever misses one.
    calls: Mutex<Vec<Call>>,
    /// Whether `calls` holds any, so that locking the state costs no
    /// second lock when none are waiting.
    has_calls: AtomicBool,
    /// The next job id; calls take theirs without the state lock.
    next_job: AtomicU32,
    /// Mirrors `phase == Running`, for calls made without the state lock.
    accepting: AtomicBool,
    /// The I/O thread is asleep while a worker holds nothing: the next call
    /// must wake it. Otherwise a worker's result wakes it, and it takes
    /// every call made meanwhile in one batch.
    wake_on_call: AtomicBool,
}

/// An `apply` call waiting in [`Shared::calls`].
struct Call {
    job: JobId,
    func: FuncId,
    task_bits: u8,
    payload: Vec<u8>,
    /// Send the job's id on the done listener when it finishes.
    watched: bool,
}

/// A launch the launcher will answer later (see [`Launcher::started`]).
pub(crate) struct Start {
    pub(crate) serial: u32,
    pub(crate) slot: u32,
    /// Our end of the new worker's channel.
    pub(crate) chan: OwnedFd,
    pub(crate) since: Instant,
}

impl Shared {
    /// Lock the state, first moving in the calls made since it was last locked.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().expect("engine lock poisoned");
        if !self.has_calls.load(Ordering::SeqCst) {
            return st;
        }
        {
            let mut calls = self.calls.lock().expect("engine lock poisoned");
            std::mem::swap(&mut *calls, &mut st.spare_calls);
            self.has_calls.store(false, Ordering::SeqCst);
        }
        let mut calls = std::mem::take(&mut st.spare_calls);
        for call in calls.drain(..) {
            st.add_call(call);
        }
        st.spare_calls = calls;
        st
    }

    /// A fresh job id (0 is never one).
    fn new_job_id(&self) -> JobId {
        loop {
            let id = self.next_job.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// A pool's engine. Dropping it terminates the workers.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Start the I/O thread and the workers. Returns once every first
    /// launch has been answered (the workers need not be initialised yet),
    /// or with the launch error if none started.
    pub fn start(config: EngineConfig, launcher: Box<dyn Launcher>) -> io::Result<Engine> {
        if config.workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an engine needs at least one worker",
            ));
        }
        if let Err(e) = frame::payload_len(config.init_payload.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the start-up settings: {e}"),
            ));
        }
        let config_workers = config.workers;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                phase: Phase::Running,
                jobs: FastMap::default(),
                funcs: Funcs::default(),
                spare_calls: Vec::new(),
                frames: Vec::new(),
                queue: Queue::new(config_workers),
                workers: Vec::new(),
                starting: Vec::new(),
                next_serial: 0,
                slots: (0..config_workers)
                    .map(|slot| WorkerStats {
                        slot: slot as u32,
                        ..WorkerStats::default()
                    })
                    .collect(),
                slot_filled: vec![false; config_workers],
                exit_results: Vec::new(),
                launcher,
                init_failures: 0,
                init_error: None,
                launch_error: None,
                launch_after: None,
                done_tx: None,
                io_sleeping: false,
                waiters: 0,
                started: false,
            }),
            cond: Condvar::new(),
            waker: Waker::new()?,
            calls: Mutex::new(Vec::new()),
            has_calls: AtomicBool::new(false),
            next_job: AtomicU32::new(1),
            accepting: AtomicBool::new(true),
            wake_on_call: AtomicBool::new(false),
        });
        let s2 = shared.clone();
        LIVE_THREADS.fetch_add(1, Ordering::SeqCst);
        let thread = std::thread::Builder::new()
            .name("shoal-engine".into())
            .spawn(move || {
                run(&s2);
                LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
            })
            .inspect_err(|_| {
                LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
            })?;
        let engine = Engine {
            shared,
            thread: Mutex::new(Some(thread)),
        };
        let mut st = engine.lock();
        while !st.started {
            st = engine.shared.cond.wait(st).expect("engine lock poisoned");
        }
        // None started: not "none alive now", as a worker whose initializer
        // fails at once (a thread's can, within microseconds) may have
        // started, failed and been reaped before this caller woke up.
        if !st.slot_filled.iter().any(|&filled| filled) {
            let why = st.launch_error.clone().unwrap_or_else(|| "unknown error".into());
            drop(st);
            engine.terminate();
            engine.join();
            return Err(io::Error::other(format!("could not start worker processes: {why}")));
        }
        drop(st);
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn wake(&self, st: &mut State) {
        if st.io_sleeping {
            st.io_sleeping = false;
            self.shared.waker.wake();
        }
    }

    /// Wake the I/O thread for new chunks only if an idle worker can take
    /// one; busy workers are served when their results wake it.
    fn wake_for_work(&self, st: &mut State) {
        if st.io_sleeping && !st.queue.is_empty() && st.has_idle_worker() {
            self.wake(st);
        }
    }

    /// Add a pickled function, named `name` in messages about its tasks;
    /// it is kept until [`Engine::release_func`] and no job uses it.
    pub fn register_func(&self, payload: Vec<u8>, name: &str) -> Result<FuncId, EngineError> {
        fits(&payload)?;
        Ok(self.lock().funcs.register(payload, name))
    }

    /// Let go of function `id`; workers forget it once no job uses it.
    pub fn release_func(&self, id: FuncId) {
        let mut st = self.lock();
        if st.funcs.unhold(id) {
            st.forget_func(id);
            self.wake(&mut st);
        }
    }

    /// Create a job as `spec` says.
    pub fn new_job(&self, spec: JobSpec) -> Result<JobId, EngineError> {
        let id = self.shared.new_job_id();
        let mut st = self.lock();
        st.create_job(id, spec)?;
        Ok(id)
    }

    /// A job of one chunk, `payload`, input complete: `apply_async` in one
    /// call. Returns the job's id.
    ///
    /// It does not take the state lock: the call waits in a list of its own
    /// until the next lock. `func` must stay registered until this returns
    /// (a function released later is kept for the job, as with any job).
    pub fn apply(&self, func: FuncId, task_bits: u8, payload: Vec<u8>) -> Result<JobId, EngineError> {
        let job = self.reserve_job();
        self.apply_as(job, func, task_bits, payload, false)?;
        Ok(job)
    }

    /// A fresh job id for [`Engine::apply_as`], for a caller that must
    /// file the id (with whoever hears of the job's end) before the job
    /// can finish. An id reserved and never used costs nothing.
    pub fn reserve_job(&self) -> JobId {
        self.shared.new_job_id()
    }

    /// [`Engine::apply`] under an id from [`Engine::reserve_job`]. With
    /// `watched`, the job's id is sent on the done listener when it
    /// finishes, as after [`Engine::watch`], but without taking the state
    /// lock here: the flag travels with the call.
    pub fn apply_as(
        &self,
        job: JobId,
        func: FuncId,
        task_bits: u8,
        payload: Vec<u8>,
        watched: bool,
    ) -> Result<(), EngineError> {
        fits(&payload)?;
        let shared = &*self.shared;
        if !shared.accepting.load(Ordering::Acquire) {
            return Err(EngineError::NotRunning);
        }
        {
            let mut calls = shared.calls.lock().expect("engine lock poisoned");
            calls.push(Call {
                job,
                func,
                task_bits,
                payload,
                watched,
            });
            shared.has_calls.store(true, Ordering::SeqCst);
        }
        // Pairs with the I/O thread's check of `calls` after it sets the
        // flag: either it sees this call, or this sees the flag.
        if shared.wake_on_call.swap(false, Ordering::SeqCst) {
            shared.waker.wake();
        }
        Ok(())
    }

    /// Add chunks to a job; returns the index of the first. Chunks may be
    /// added while the engine is closing (a lazy job still reading input).
    pub fn submit(&self, job: JobId, payloads: Vec<Vec<u8>>) -> Result<u32, EngineError> {
        let items = vec![1; payloads.len()];
        self.submit_items(job, payloads, items)
    }

    /// [`Engine::submit`], saying how many items each chunk holds: the
    /// adaptive chunk size ([`Engine::chunk_hint`]), item lifespans and the
    /// counters count them.
    pub fn submit_items(&self, job: JobId, payloads: Vec<Vec<u8>>, items: Vec<u32>) -> Result<u32, EngineError> {
        assert_eq!(payloads.len(), items.len(), "one item count per chunk");
        // Checked here, so the I/O thread never meets a payload it cannot frame.
        payloads.iter().try_for_each(|p| fits(p))?;
        let mut st = self.lock();
        if matches!(st.phase, Phase::Terminating | Phase::Stopped) {
            return Err(EngineError::NotRunning);
        }
        let j = st.jobs.get_mut(&job).ok_or(EngineError::UnknownJob(job))?;
        if j.cancelled {
            return Err(EngineError::Cancelled(job));
        }
        if !j.takes_input() {
            // A feeder racing whoever ended its input: refused, not a panic
            // with the engine's lock held.
            return Err(EngineError::InputComplete(job));
        }
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        let (first, mut first_item) = j.add_chunks(&items, bytes);
        let spec = j.spec;
        for (i, (payload, n)) in payloads.into_iter().zip(items).enumerate() {
            let starts_at = first_item;
            first_item += u64::from(n);
            st.queue.push_back(Task {
                job,
                index: first + i as u32,
                payload,
                suspect: false,
                items: n,
                first_item: starts_at,
                func: spec.func,
                task_bits: spec.task_bits,
                timeout: Task::timeout_ns(spec.timeout),
                pinned: spec.pinned,
            });
        }
        self.wake_for_work(&mut st);
        Ok(first)
    }

    /// Cancel `job`: its queued chunks end as cancelled at once, and no
    /// more may be added or run again after a crash. With `kill_running`,
    /// a worker whose oldest held chunk is the job's (the one it runs, or
    /// one whose result waits in its batch) is killed (SIGKILL, so C code
    /// stops too) and replaced: its chunks of the job end as cancelled, and
    /// the other jobs' chunks it held run again elsewhere. Chunks already
    /// sent that are not killed so run and deliver as usual, like
    /// `concurrent.futures`' cancel; so does one queued on a worker behind
    /// another job's chunk.
    ///
    /// Returns how many of the job's chunks this call ends as cancelled:
    /// those dropped from the queue and those held by a worker it killed.
    /// For a job of one chunk, 0 means it runs (or ran) and delivers, which
    /// is what a future's `cancel()` must know to answer.
    pub fn cancel(&self, job: JobId, kill_running: bool) -> Result<u32, EngineError> {
        let mut st = self.lock();
        // A job the engine has forgotten has every outcome: nothing to cancel.
        let Some(j) = st.jobs.get_mut(&job) else {
            return Ok(0);
        };
        j.cancelled = true;
        j.finish_input();
        let dropped = st.queue.take_job(job);
        let none_dropped = dropped.is_empty();
        let mut ended = dropped.len() as u32;
        for t in dropped {
            // `complete` tells the job's watcher if this finished it.
            st.complete(&t, Status::Cancelled, CANCELLED.to_vec(), 0, 0);
        }
        if kill_running {
            let st = &mut *st;
            for w in &mut st.workers {
                let runs_it = w.outstanding.front().is_some_and(|t| t.job == job);
                if runs_it && w.life != Life::Exited && w.fate.is_none() {
                    st.launcher.kill(&w.proc, libc::SIGKILL);
                    w.fate = Some(Fate::Cancelled);
                    ended += w.outstanding.iter().filter(|t| t.job == job).count() as u32;
                }
            }
        }
        if none_dropped && st.jobs.get(&job).is_some_and(|j| j.finished()) {
            // Finished by marking its input complete.
            st.job_finished(job);
        }
        self.wake(&mut st);
        self.shared.cond.notify_all();
        Ok(ended)
    }

    /// Cancel every queued chunk of every job but those in `keep`, as
    /// [`Engine::cancel`] does one job's, in one pass over the queue: an
    /// Executor's `shutdown(cancel_futures=True)`, which keeps its maps.
    /// Running chunks run on. Returns the jobs that had chunks cancelled.
    pub fn cancel_queued(&self, keep: &[JobId]) -> Vec<JobId> {
        let mut st = self.lock();
        let dropped = st.queue.take_where(|t| !keep.contains(&t.job));
        let mut jobs: Vec<JobId> = dropped.iter().map(|t| t.job).collect();
        jobs.sort_unstable();
        jobs.dedup();
        for job in &jobs {
            if let Some(j) = st.jobs.get_mut(job) {
                j.cancelled = true;
                j.finish_input();
            }
        }
        for t in dropped {
            // `complete` tells the job's watcher if this finished it.
            st.complete(&t, Status::Cancelled, CANCELLED.to_vec(), 0, 0);
        }
        self.wake(&mut st);
        self.shared.cond.notify_all();
        jobs
    }

    /// Every counter, copied at one moment, with `job`'s if it is given and
    /// still known.
    pub fn stats(&self, job: Option<JobId>) -> Snapshot {
        let st = self.lock();
        let now = Instant::now();
        let mut workers = st.slots.clone();
        for w in &st.workers {
            let s = &mut workers[w.slot as usize];
            if matches!(w.life, Life::Starting | Life::Ready) {
                s.pid = Some(w.proc.pid);
            }
            // The stretch of idleness under way counts too.
            if let Some(since) = w.idle_since {
                s.idle += now.saturating_duration_since(since);
            }
        }
        Snapshot {
            workers,
            job: job.and_then(|j| st.jobs.get(&j)).map(|j| j.stats()),
        }
    }

    /// What workers' exit hooks returned since the last call, as
    /// `(slot, payload)` in the order they exited.
    pub fn take_exit_results(&self) -> Vec<(u32, ExitReport)> {
        std::mem::take(&mut self.lock().exit_results)
    }

    /// Set [`EngineConfig::init_timeout`] and [`EngineConfig::exit_timeout`]
    /// of a running engine: a front door whose workers outlive one call
    /// (MPIRE's `keep_alive`) takes these per call. Workers whose
    /// initializer is running get the new init deadline, counted from when
    /// it started; workers already told to exit keep the time they were given.
    pub fn set_hook_timeouts(&self, init: Option<Duration>, exit: Option<Duration>) {
        let mut st = self.lock();
        st.config.init_timeout = init;
        st.config.exit_timeout = exit;
        for w in &mut st.workers {
            if let (Life::Starting, None, Some(at)) = (w.life, w.fate, w.init_started_at) {
                w.deadline = init.map(|t| (at + t, t));
            }
        }
        self.wake(&mut st);
    }

    /// Mark a job's input complete.
    pub fn finish_input(&self, job: JobId) -> Result<(), EngineError> {
        let mut st = self.lock();
        let j = st.jobs.get_mut(&job).ok_or(EngineError::UnknownJob(job))?;
        j.finish_input();
        let finished = j.finished();
        if finished {
            st.job_finished(job);
        }
        self.wake(&mut st);
        self.shared.cond.notify_all();
        Ok(())
    }

    /// The size, in items, for `job`'s next chunk when its caller gave none
    /// (it aims at ~2 ms of work a chunk, learnt from the job's chunks so far).
    pub fn chunk_hint(&self, job: JobId) -> u32 {
        let mut st = self.lock();
        st.jobs.get_mut(&job).map_or(1, |j| j.chunk_hint())
    }

    /// Chunks that may be added to `job` now. A job the engine has
    /// forgotten (released and finished) has no room.
    pub fn room(&self, job: JobId) -> Result<u32, EngineError> {
        let st = self.lock();
        Ok(st.jobs.get(&job).map_or(0, |j| j.room()))
    }

    /// Wait up to `timeout` for `want`. Returns whether it happened. A job
    /// the engine has forgotten (released and finished) is finished.
    /// Waiting for room fails once no chunk can be added (see `Want::Room`).
    pub fn wait(&self, job: JobId, want: Want, timeout: Duration) -> Result<bool, EngineError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let Some(j) = st.jobs.get(&job) else {
                return if matches!(want, Want::Room(_)) {
                    Err(EngineError::UnknownJob(job))
                } else {
                    Ok(true)
                };
            };
            let ok = match want {
                Want::Progress => j.has_ready() || j.room() > 0 || j.finished(),
                Want::Ready => j.has_ready() || j.finished(),
                Want::Room(n) => {
                    // In the order submit checks them.
                    if matches!(st.phase, Phase::Terminating | Phase::Stopped) {
                        return Err(EngineError::NotRunning);
                    }
                    if j.cancelled {
                        return Err(EngineError::Cancelled(job));
                    }
                    if !j.takes_input() {
                        return Err(EngineError::InputComplete(job));
                    }
                    // Or whatever room there is, once nothing is in flight:
                    // no outcome can make more (a window may give less room
                    // than asked: before its first result, say).
                    let room = j.room();
                    room >= n.max(1) || (room > 0 && j.in_flight() == 0)
                }
                Want::Finished => j.finished(),
            };
            if ok {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            st.waiters += 1;
            st = self.shared.cond.wait_timeout(st, left).expect("engine lock poisoned").0;
            st.waiters -= 1;
        }
    }

    /// Take up to `max` outcomes of `job`, in the job's order.
    pub fn take(&self, job: JobId, max: usize) -> Result<Vec<Outcome>, EngineError> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get_mut(&job) else {
            return Ok(Vec::new());
        };
        let out = j.take(max);
        if !out.is_empty() && j.room() > 0 {
            self.wake(&mut st);
            // A feeder waiting for room (`Want::Room`) goes on at once,
            // without a turn of the I/O thread.
            if st.waiters > 0 {
                self.shared.cond.notify_all();
            }
        }
        Ok(out)
    }

    /// Whether every chunk of `job` has an outcome.
    pub fn finished(&self, job: JobId) -> Result<bool, EngineError> {
        let st = self.lock();
        Ok(st.jobs.get(&job).is_none_or(|j| j.finished()))
    }

    /// Let go of `job`: its chunks still run, but their outcomes are dropped
    /// as they arrive, and the job is forgotten once the last one has.
    pub fn abandon(&self, job: JobId) {
        let mut st = self.lock();
        if let Some(j) = st.jobs.get_mut(&job) {
            j.abandon();
            if j.finished() && st.forget_job(job) {
                self.wake(&mut st);
            }
            // Its input is complete now: a feeder waiting for room stops.
            if st.waiters > 0 {
                self.shared.cond.notify_all();
            }
        }
    }

    /// If `job` has finished: all its outcomes, and the job forgotten, in
    /// one step (`apply_async`'s result); `None` if it has not.
    pub fn collect(&self, job: JobId) -> Option<Vec<Outcome>> {
        let mut st = self.lock();
        let Some(j) = st.jobs.get_mut(&job) else {
            return Some(Vec::new());
        };
        if !j.finished() {
            return None;
        }
        let out = j.take(usize::MAX);
        if st.forget_job(job) {
            self.wake(&mut st);
        }
        Some(out)
    }

    /// Send `job`'s id on the done listener when it finishes.
    pub fn watch(&self, job: JobId) -> Result<(), EngineError> {
        let mut st = self.lock();
        let j = st.jobs.get_mut(&job).ok_or(EngineError::UnknownJob(job))?;
        j.watched = true;
        if j.finished() {
            if let Some(tx) = &st.done_tx {
                let _ = tx.send(job);
            }
        }
        Ok(())
    }

    /// Send `job`'s id on the done listener once, as soon as it has an
    /// outcome to take or has finished: a re-armable "something is ready"
    /// for a reader that must not block (`async for` over `imap`), which
    /// arms it again after it has taken what there was. Returns false, and
    /// arms nothing, if that is so already (or the job is forgotten, which
    /// is finished): the caller looks again instead of waiting.
    pub fn watch_ready(&self, job: JobId) -> bool {
        let mut st = self.lock();
        let Some(j) = st.jobs.get_mut(&job) else {
            return false;
        };
        if j.has_ready() || j.finished() {
            return false;
        }
        j.ready_watched = true;
        true
    }

    /// Whether a worker holds a chunk of `job` (runs it, or has it queued
    /// behind the one it runs), or one has an outcome: what
    /// `concurrent.futures` calls running. Asked, not told, so a caller
    /// that never asks pays nothing.
    pub fn dispatched(&self, job: JobId) -> bool {
        let st = self.lock();
        let Some(j) = st.jobs.get(&job) else {
            // Forgotten: every outcome was handed over.
            return true;
        };
        j.completed() > 0 || st.workers.iter().any(|w| w.outstanding.iter().any(|t| t.job == job))
    }

    /// Where watched jobs' ids are sent when they finish.
    pub fn set_done_listener(&self, tx: Sender<JobId>) {
        self.lock().done_tx = Some(tx);
    }

    /// Stop accepting jobs; finish queued work, then stop the workers.
    pub fn close(&self) {
        let mut st = self.lock();
        if st.phase == Phase::Running {
            st.phase = Phase::Closing;
            self.shared.accepting.store(false, Ordering::Release);
        }
        self.shared.waker.wake();
    }

    /// Cancel all unfinished chunks and kill the workers (SIGTERM, then
    /// SIGKILL after the grace period).
    pub fn terminate(&self) {
        self.stop_workers(false);
    }

    /// [`Engine::terminate`], with SIGKILL at once: no worker runs another
    /// instruction (`Executor.kill_workers`).
    pub fn kill(&self) {
        self.stop_workers(true);
    }

    fn stop_workers(&self, at_once: bool) {
        let mut st = self.lock();
        self.shared.accepting.store(false, Ordering::Release);
        if matches!(st.phase, Phase::Running | Phase::Closing) {
            st.begin_terminate(at_once);
        }
        self.shared.cond.notify_all();
        self.shared.waker.wake();
    }

    /// Wait up to `timeout` for the engine to stop. Returns whether it has.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.phase != Phase::Stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st.waiters += 1;
            st = self.shared.cond.wait_timeout(st, left).expect("engine lock poisoned").0;
            st.waiters -= 1;
        }
        true
    }

    /// Join the I/O thread (after [`Engine::wait_stopped`] returned true).
    pub fn join(&self) {
        let handle = self.thread.lock().expect("engine lock poisoned").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// The engine's phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Pids of the worker processes not yet known to have exited (retiring
    /// ones included), in the order they were launched.
    pub fn worker_pids(&self) -> Vec<i32> {
        let st = self.lock();
        st.workers
            .iter()
            .filter(|w| w.life != Life::Exited)
            .map(|w| w.proc.pid)
            .collect()
    }

    /// Whether `pid` is one of this engine's live workers.
    pub fn is_alive(&self, pid: i32) -> bool {
        let st = self.lock();
        st.workers.iter().any(|w| w.proc.pid == pid && w.life != Life::Exited)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.terminate();
        self.join();
    }
}

impl State {
    /// A job has every outcome: tell its watcher, and let the workers forget
    /// its function.
    pub(crate) fn job_finished(&mut self, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.watched || std::mem::take(&mut j.ready_watched) {
            if let Some(tx) = &self.done_tx {
                let _ = tx.send(job);
            }
        }
        if j.abandoned {
            self.forget_job(job);
        }
    }

    fn create_job(&mut self, id: JobId, spec: JobSpec) -> Result<(), EngineError> {
        if self.phase != Phase::Running {
            return Err(EngineError::NotRunning);
        }
        if !self.funcs.add_user(spec.func) {
            return Err(EngineError::UnknownFunc(spec.func));
        }
        self.jobs.insert(id, Box::new(Job::new(id, spec)));
        Ok(())
    }

    /// Make the job of an `apply` call and queue its chunk. The call was
    /// accepted while the engine ran, so it gets a job whatever the phase
    /// now: one the engine can no longer run, or whose function is gone,
    /// gets an outcome that says so at once.
    fn add_call(&mut self, call: Call) {
        let known = self.funcs.add_user(call.func);
        let mut j = Box::new(Job::new(call.job, JobSpec::new(call.func, call.task_bits)));
        // Before anything can finish it (a forgotten function, below).
        j.watched = call.watched;
        let (index, _) = j.add_chunks(&[1], call.payload.len());
        j.finish_input();
        self.jobs.insert(call.job, j);
        let task = Task {
            job: call.job,
            index,
            payload: call.payload,
            suspect: false,
            items: 1,
            first_item: 0,
            func: call.func,
            task_bits: call.task_bits,
            timeout: None,
            pinned: false,
        };
        if !known {
            let msg = format!("no function with id {} (it was released before the call)", call.func);
            self.complete(&task, Status::Cancelled, msg.into_bytes(), 0, 0);
        } else if matches!(self.phase, Phase::Terminating | Phase::Stopped) {
            self.complete(&task, Status::Cancelled, TERMINATED.to_vec(), 0, 0);
        } else {
            self.queue.push_back(task);
        }
    }

    /// Drop a finished, released job, and its function if nothing else uses
    /// it; true if that queued frames for the I/O thread to send.
    fn forget_job(&mut self, job: JobId) -> bool {
        match self.jobs.remove(&job) {
            Some(j) if self.funcs.drop_user(j.spec.func) => self.forget_func(j.spec.func),
            _ => false,
        }
    }

    /// Tell the workers that have function `id` to drop it; true if any had it.
    fn forget_func(&mut self, id: FuncId) -> bool {
        let mut sent = false;
        for w in &mut self.workers {
            if w.funcs.remove(&id) && w.life != Life::Exited {
                w.send(Header::forget(id), &[]);
                sent = true;
            }
        }
        sent
    }

    /// Record the outcome of `task` in its job: `status`, after `run_ns`,
    /// with `failed` of its items having raised.
    pub(crate) fn complete(&mut self, task: &Task, status: Status, payload: Vec<u8>, run_ns: u64, failed: u32) {
        let Some(j) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let outcome = Outcome {
            index: task.index,
            status,
            single: task.task_bits & task::SINGLE != 0,
            payload,
            run_ns,
        };
        j.complete(outcome, task.payload.len(), task.items, task.first_item, failed);
        if j.finished() {
            self.job_finished(task.job);
        } else if j.ready_watched && j.has_ready() {
            j.ready_watched = false;
            if let Some(tx) = &self.done_tx {
                let _ = tx.send(task.job);
            }
        }
    }

    /// Cancel every unfinished chunk and signal the workers.
    /// Enter `Terminating`: every unfinished chunk ends cancelled, and every
    /// worker gets SIGTERM and SIGKILL after the grace period, or SIGKILL
    /// now if `at_once`.
    fn begin_terminate(&mut self, at_once: bool) {
        self.phase = Phase::Terminating;
        let msg = TERMINATED.to_vec();
        let queued: Vec<Task> = self.queue.drain_all();
        let mut held = Vec::new();
        for w in &mut self.workers {
            for t in w.take_all() {
                self.slots[w.slot as usize]
                    .tally
                    .count(Status::Cancelled, u64::from(t.items), 0);
                held.push(t);
            }
            if w.life != Life::Exited {
                if at_once {
                    self.launcher.kill(&w.proc, libc::SIGKILL);
                } else {
                    self.launcher.kill(&w.proc, libc::SIGTERM);
                    w.kill_at = Some(Instant::now() + self.config.kill_grace);
                }
                w.life = Life::Retiring;
            }
        }
        // Launches still unanswered: their workers will find the channel
        // closed and exit.
        self.starting.clear();
        for t in queued.into_iter().chain(held) {
            self.complete(&t, Status::Cancelled, msg.clone(), 0, 0);
        }
    }

    /// Work to do before sleeping: retire, launch, dispatch, kill, close.
    fn step(&mut self) {
        let now = Instant::now();
        let grace = self.config.exit_timeout.unwrap_or(self.config.exit_grace);
        // Retire workers that reached their lifespan once they are idle.
        let lifespan = self.config.lifespan;
        let closing = self.phase == Phase::Closing && self.queue.is_empty() && self.jobs.values().all(|j| j.finished());
        for w in &mut self.workers {
            let spent = w.life == Life::Ready && lifespan.reached(w.assigned_chunks, w.assigned_items);
            let done = closing && matches!(w.life, Life::Ready | Life::Starting);
            if (spent || done) && w.outstanding.is_empty() {
                w.retire(now, grace, &mut self.slots[w.slot as usize]);
            }
        }
        self.launch_missing();
        if closing && self.starting.is_empty() {
            self.launcher.idle();
        }
        self.fail_if_unstartable();
        self.dispatch(now);
        for w in &mut self.workers {
            if w.life == Life::Exited {
                continue;
            }
            if let Some(at) = w.kill_at {
                if now >= at {
                    self.launcher.kill(&w.proc, libc::SIGKILL);
                    w.kill_at = None;
                    // Told to exit (not terminated) and still in its exit
                    // hook: reported when its death is handled.
                    let exiting = w.exit_sent_at.is_some() && self.phase != Phase::Terminating;
                    if let (true, Some(limit), None) = (exiting, self.config.exit_timeout, w.fate) {
                        w.fate = Some(Fate::ExitTimedOut(limit));
                    }
                }
            }
            // A chunk past its job's deadline, or an initializer past the
            // init timeout: kill the worker, even inside C code; the death
            // is then handled as a time-out.
            if let Some((at, limit)) = w.deadline {
                if now >= at && w.fate.is_none() {
                    self.launcher.kill(&w.proc, libc::SIGKILL);
                    w.fate = Some(Fate::TimedOut(limit));
                }
            }
        }
        if matches!(self.phase, Phase::Closing | Phase::Terminating) && self.workers.is_empty() {
            let all_done =
                self.phase == Phase::Terminating || (self.queue.is_empty() && self.jobs.values().all(|j| j.finished()));
            if all_done {
                self.phase = Phase::Stopped;
            }
        }
    }

    /// Whether more workers should be running than are.
    pub(crate) fn wants_workers(&self) -> bool {
        match self.phase {
            Phase::Running => true,
            Phase::Closing => !(self.queue.is_empty() && self.jobs.values().all(|j| j.finished())),
            _ => false,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let kills = self.workers.iter().filter_map(|w| w.kill_at);
        let deadlines = self
            .workers
            .iter()
            .filter(|w| w.fate.is_none())
            .filter_map(|w| w.deadline.map(|(at, _)| at));
        let launches = self.starting.iter().map(|s| s.since + self.config.launch_timeout);
        kills.chain(deadlines).chain(launches).chain(self.launch_after).min()
    }
}

/// Which descriptor a pollfd entry belongs to.
#[derive(Clone, Copy)]
enum Source {
    Waker,
    Channel(usize),
    Pidfd(usize),
    Launcher,
}

/// The I/O thread's loop.
fn run(shared: &Shared) {
    let mut st = shared.lock();
    st.launch_missing();
    let mut out = Outgoing::default();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut inbound: Vec<(usize, Inbound)> = Vec::new();
    let mut read_bufs = ReadBufs::default();
    let mut exited: Vec<usize> = Vec::new();
    let mut live: Vec<u32> = Vec::new();
    loop {
        st.step();
        if !st.started && st.starting.is_empty() {
            // Every first launch is answered: `Engine::start` may return.
            st.started = true;
            shared.cond.notify_all();
        }
        if st.waiters > 0 {
            shared.cond.notify_all();
        }
        if st.phase == Phase::Stopped {
            break;
        }
        // Take the frames the scheduler encoded; they are written below,
        // without the lock.
        for w in &mut st.workers {
            if !w.chan_closed {
                let (serial, fd) = (w.serial, w.chan_fd());
                if let Some(bytes) = w.out_frames() {
                    out.queue(serial, fd, bytes);
                }
            }
        }
        pfds.clear();
        sources.clear();
        let mut add = |fd, events, src| {
            pfds.push(libc::pollfd { fd, events, revents: 0 });
            sources.push(src);
        };
        add(shared.waker.fd(), libc::POLLIN, Source::Waker);
        for (i, w) in st.workers.iter().enumerate() {
            if !w.chan_closed {
                let mut ev = libc::POLLIN;
                if out.waiting(w.serial) {
                    ev |= libc::POLLOUT;
                }
                add(w.chan_fd(), ev, Source::Channel(i));
            }
            if w.life != Life::Exited {
                use std::os::fd::AsRawFd;
                add(w.proc.pidfd.as_raw_fd(), libc::POLLIN, Source::Pidfd(i));
            }
        }
        if let Some(fd) = st.launcher.poll_fd() {
            add(fd, libc::POLLIN, Source::Launcher);
        }
        // Exited workers waiting for a zygote's report are re-checked each turn.
        let waiting_status = st.workers.iter().any(|w| w.life == Life::Exited);
        let mut timeout = st.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        if waiting_status {
            timeout = Some(timeout.map_or(Duration::from_millis(20), |t| t.min(Duration::from_millis(20))));
        }
        st.io_sleeping = true;
        shared.wake_on_call.store(st.has_idle_worker(), Ordering::SeqCst);
        // A call made before the flag was set did not wake this thread:
        // look again at once instead of sleeping on it.
        if shared.has_calls.load(Ordering::SeqCst) {
            timeout = Some(Duration::ZERO);
        }
        drop(st);

        // Without the lock: write, wait, read.
        let mut broken = out.flush_all();
        let _ = sys::poll(&mut pfds, timeout);
        inbound.clear();
        exited.clear();
        let mut wake = false;
        let mut launcher_ready = false;
        for (p, src) in pfds.iter().zip(sources.iter()) {
            if p.revents == 0 {
                continue;
            }
            match *src {
                Source::Waker => wake = true,
                Source::Launcher => launcher_ready = true,
                Source::Channel(i) => {
                    if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                        inbound.push((i, read_bufs.read(p.fd)));
                    }
                }
                Source::Pidfd(i) => exited.push(i),
            }
        }
        if wake {
            shared.waker.drain();
        }
        broken.extend(out.flush_all());

        st = shared.lock();
        let now = Instant::now();
        st.io_sleeping = false;
        shared.wake_on_call.store(false, Ordering::SeqCst);
        if launcher_ready {
            st.launcher.on_readable();
        }
        for (i, got) in inbound.drain(..) {
            st.deliver(i, &got.bytes, got.closed, now);
            read_bufs.recycle(got.bytes);
        }
        for &i in &exited {
            // Deliver whatever it sent before it died, then mark it.
            let fd = st.workers[i].chan_fd();
            if !st.workers[i].chan_closed {
                let got = read_bufs.read(fd);
                st.deliver(i, &got.bytes, got.closed, now);
                read_bufs.recycle(got.bytes);
            }
            st.workers[i].life = Life::Exited;
        }
        for w in &mut st.workers {
            if broken.contains(&w.serial) {
                w.chan_closed = true;
            }
        }
        st.reap_exited();
        // Launches answered: whichever read of the zygote's socket took
        // the answers (an exit status read may take a launch's too).
        st.adopt_started();
        live.clear();
        live.extend(st.workers.iter().filter(|w| !w.chan_closed).map(|w| w.serial));
        out.retain(&live);
    }
    st.launcher.shutdown();
    // Lets a binding's callback thread, which waits on this, end too.
    st.done_tx = None;
    drop(st);
    shared.cond.notify_all();
}
