//! The engine: one I/O thread per pool that owns the workers' channels, and
//! the API the binding calls from Python threads.
//!
//! The I/O thread waits in `poll` on every worker's channel and pidfd, the
//! launcher, and an eventfd that callers use to wake it. Callers and the
//! thread share [`State`] behind one mutex; the thread never touches Python,
//! and payloads are bytes, so no lock here is ever held while waiting for the
//! GIL.

use crate::fasthash::FastMap;
use crate::frame::{flags, Header, Kind};
use crate::funcs::{FuncId, Funcs};
use crate::io::{Inbound, Outgoing, ReadBufs};
use crate::job::{Job, JobId, Order, Outcome};
use crate::launch::Launcher;
use crate::sys::{self, Waker};
use crate::worker::{Life, Task, Worker};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The outcome of a chunk that terminate stopped before it ran or finished.
const TERMINATED: &[u8] = b"the pool was terminated before this task finished";

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

/// How an engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of worker processes to keep running.
    pub workers: usize,
    /// The payload of the `Init` frame every worker gets first.
    pub init_payload: Vec<u8>,
    /// Retire a worker after this many chunks (`maxtasksperchild`).
    pub max_tasks_per_worker: Option<u64>,
    /// After SIGTERM, how long a worker has before SIGKILL.
    pub kill_grace: Duration,
}

impl EngineConfig {
    /// A configuration with `workers` workers and defaults for the rest.
    pub fn new(workers: usize, init_payload: Vec<u8>) -> Self {
        EngineConfig {
            workers,
            init_payload,
            max_tasks_per_worker: None,
            kill_grace: Duration::from_millis(200),
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
    /// Every chunk has an outcome.
    Finished,
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
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::UnknownJob(j) => write!(f, "no job with id {j}"),
            EngineError::UnknownFunc(id) => write!(f, "no function with id {id}"),
            EngineError::NotRunning => write!(f, "Pool not running"),
        }
    }
}

impl std::error::Error for EngineError {}

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
    /// Chunks waiting for a worker, in submission order.
    pub(crate) queue: VecDeque<Task>,
    pub(crate) workers: Vec<Worker>,
    pub(crate) next_worker_id: u32,
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
    flags: u8,
    payload: Vec<u8>,
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
    /// Start the I/O thread and the workers. Returns once every worker has
    /// been launched (not necessarily initialised), or the launch error.
    pub fn start(config: EngineConfig, launcher: Box<dyn Launcher>) -> io::Result<Engine> {
        if config.workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an engine needs at least one worker",
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                phase: Phase::Running,
                jobs: FastMap::default(),
                funcs: Funcs::default(),
                spare_calls: Vec::new(),
                frames: Vec::new(),
                queue: VecDeque::new(),
                workers: Vec::new(),
                next_worker_id: 0,
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
        if st.workers.is_empty() {
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

    /// Add a pickled function; it is kept until [`Engine::release_func`]
    /// and no job uses it.
    pub fn register_func(&self, payload: Vec<u8>) -> FuncId {
        self.lock().funcs.register(payload)
    }

    /// Let go of function `id`; workers forget it once no job uses it.
    pub fn release_func(&self, id: FuncId) {
        let mut st = self.lock();
        if st.funcs.unhold(id) {
            st.forget_func(id);
            self.wake(&mut st);
        }
    }

    /// Create a job whose chunks run function `func` with `task_flags`.
    /// `window` bounds chunks in flight (`None`: unbounded).
    pub fn new_job(
        &self,
        func: FuncId,
        task_flags: u8,
        order: Order,
        window: Option<u32>,
    ) -> Result<JobId, EngineError> {
        let id = self.shared.new_job_id();
        let mut st = self.lock();
        st.create_job(id, func, task_flags, order, window)?;
        Ok(id)
    }

    /// A job of one chunk, `payload`, input complete: `apply_async` in one
    /// call. Returns the job's id.
    ///
    /// It does not take the state lock: the call waits in [`Shared::calls`]
    /// until the next lock. `func` must stay registered until this returns
    /// (a function released later is kept for the job, as with any job).
    pub fn apply(&self, func: FuncId, task_flags: u8, payload: Vec<u8>) -> Result<JobId, EngineError> {
        let shared = &*self.shared;
        if !shared.accepting.load(Ordering::Acquire) {
            return Err(EngineError::NotRunning);
        }
        let job = shared.new_job_id();
        {
            let mut calls = shared.calls.lock().expect("engine lock poisoned");
            calls.push(Call {
                job,
                func,
                flags: task_flags,
                payload,
            });
            shared.has_calls.store(true, Ordering::SeqCst);
        }
        // Pairs with the I/O thread's check of `calls` after it sets the
        // flag: either it sees this call, or this sees the flag.
        if shared.wake_on_call.swap(false, Ordering::SeqCst) {
            shared.waker.wake();
        }
        Ok(job)
    }

    /// Add chunks to a job; returns the index of the first. Chunks may be
    /// added while the engine is closing (a lazy job still reading input).
    pub fn submit(&self, job: JobId, payloads: Vec<Vec<u8>>) -> Result<u32, EngineError> {
        let items = vec![1; payloads.len()];
        self.submit_items(job, payloads, items)
    }

    /// [`Engine::submit`], saying how many items each chunk holds, which
    /// the adaptive chunk size ([`Engine::chunk_hint`]) learns from.
    pub fn submit_items(&self, job: JobId, payloads: Vec<Vec<u8>>, items: Vec<u32>) -> Result<u32, EngineError> {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Terminating | Phase::Stopped) {
            return Err(EngineError::NotRunning);
        }
        let j = st.jobs.get_mut(&job).ok_or(EngineError::UnknownJob(job))?;
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        let first = j.add_chunks(payloads.len() as u32, bytes);
        j.adaptive
            .submitted(items.iter().map(|&n| u64::from(n)).sum(), bytes as u64);
        let (func, task_flags) = (j.func, j.task_flags);
        for (i, (payload, n)) in payloads.into_iter().zip(items).enumerate() {
            st.queue.push_back(Task {
                job,
                index: first + i as u32,
                payload,
                suspect: false,
                items: n,
                func,
                flags: task_flags,
            });
        }
        self.wake_for_work(&mut st);
        Ok(first)
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
    /// (see [`crate::chunking::Adaptive`]).
    pub fn chunk_hint(&self, job: JobId) -> u32 {
        let mut st = self.lock();
        st.jobs.get_mut(&job).map_or(1, |j| j.adaptive.next_size())
    }

    /// Chunks that may be added to `job` now. A job the engine has
    /// forgotten (released and finished) has no room.
    pub fn room(&self, job: JobId) -> Result<u32, EngineError> {
        let st = self.lock();
        Ok(st.jobs.get(&job).map_or(0, |j| j.room()))
    }

    /// Wait up to `timeout` for `want`. Returns whether it happened. A job
    /// the engine has forgotten (released and finished) is finished.
    pub fn wait(&self, job: JobId, want: Want, timeout: Duration) -> Result<bool, EngineError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let Some(j) = st.jobs.get(&job) else {
                return Ok(true);
            };
            let ok = match want {
                Want::Progress => j.has_releasable() || j.room() > 0 || j.finished(),
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
    pub fn release(&self, job: JobId) {
        let mut st = self.lock();
        if let Some(j) = st.jobs.get_mut(&job) {
            j.release();
            if j.finished() && st.forget_job(job) {
                self.wake(&mut st);
            }
        }
    }

    /// If `job` has finished: all its outcomes, and the job released, in
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
        let mut st = self.lock();
        self.shared.accepting.store(false, Ordering::Release);
        if matches!(st.phase, Phase::Running | Phase::Closing) {
            st.begin_terminate();
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

    /// Pids of the worker processes that are alive or starting.
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
        let Some(j) = self.jobs.get(&job) else { return };
        if j.watched {
            if let Some(tx) = &self.done_tx {
                let _ = tx.send(job);
            }
        }
        if j.released {
            self.forget_job(job);
        }
    }

    fn create_job(
        &mut self,
        id: JobId,
        func: FuncId,
        task_flags: u8,
        order: Order,
        window: Option<u32>,
    ) -> Result<(), EngineError> {
        if self.phase != Phase::Running {
            return Err(EngineError::NotRunning);
        }
        if !self.funcs.acquire(func) {
            return Err(EngineError::UnknownFunc(func));
        }
        self.jobs
            .insert(id, Box::new(Job::new(func, task_flags, order, window)));
        Ok(())
    }

    /// Make the job of an `apply` call and queue its chunk. The call was
    /// accepted while the engine ran, so it gets a job whatever the phase
    /// now: one the engine can no longer run, or whose function is gone,
    /// gets an outcome that says so at once.
    fn add_call(&mut self, call: Call) {
        let known = self.funcs.acquire(call.func);
        let mut j = Box::new(Job::new(call.func, call.flags, Order::Ordered, None));
        let index = j.add_chunks(1, call.payload.len());
        j.finish_input();
        self.jobs.insert(call.job, j);
        let task = Task {
            job: call.job,
            index,
            payload: call.payload,
            suspect: false,
            items: 1,
            func: call.func,
            flags: call.flags,
        };
        if !known {
            let msg = format!("no function with id {} (it was released before the call)", call.func);
            self.complete(&task, flags::CANCELLED, msg.into_bytes(), 0);
        } else if matches!(self.phase, Phase::Terminating | Phase::Stopped) {
            self.complete(&task, flags::CANCELLED, TERMINATED.to_vec(), 0);
        } else {
            self.queue.push_back(task);
        }
    }

    /// Drop a finished, released job, and its function if nothing else uses
    /// it; true if that queued frames for the I/O thread to send.
    fn forget_job(&mut self, job: JobId) -> bool {
        match self.jobs.remove(&job) {
            Some(j) if self.funcs.release(j.func) => self.forget_func(j.func),
            _ => false,
        }
    }

    /// Tell the workers that have function `id` to drop it; true if any had it.
    fn forget_func(&mut self, id: FuncId) -> bool {
        let mut sent = false;
        for w in &mut self.workers {
            if w.funcs.remove(&id) && w.life != Life::Exited {
                w.send(Kind::Forget, 0, id, 0, 0, &[]);
                sent = true;
            }
        }
        sent
    }

    /// Record the outcome of `task` in its job.
    pub(crate) fn complete(&mut self, task: &Task, flags: u8, payload: Vec<u8>, duration_ns: u64) {
        let Some(j) = self.jobs.get_mut(&task.job) else {
            return;
        };
        let outcome = Outcome {
            index: task.index,
            flags,
            payload,
            duration_ns,
        };
        if flags == crate::frame::flags::OK
            || flags == crate::frame::flags::ITEM_ERRORS
            || flags == crate::frame::flags::OK | crate::frame::flags::SINGLE_VALUE
        {
            j.adaptive.finished(task.items, duration_ns);
        }
        j.complete(outcome, task.payload.len());
        if j.finished() {
            self.job_finished(task.job);
        }
    }

    /// Cancel every unfinished chunk and signal the workers.
    fn begin_terminate(&mut self) {
        self.phase = Phase::Terminating;
        let msg = TERMINATED.to_vec();
        let queued: Vec<Task> = self.queue.drain(..).collect();
        let mut held = Vec::new();
        for w in &mut self.workers {
            held.extend(w.take_all());
            if w.life != Life::Exited {
                sys::kill(w.proc.pid, libc::SIGTERM);
                w.kill_at = Some(Instant::now() + self.config.kill_grace);
                w.life = if w.life == Life::Exited {
                    Life::Exited
                } else {
                    Life::Retiring
                };
            }
        }
        for t in queued.into_iter().chain(held) {
            self.complete(&t, flags::CANCELLED, msg.clone(), 0);
        }
    }

    /// Work to do before sleeping: retire, launch, dispatch, close.
    fn step(&mut self) {
        let now = Instant::now();
        // Retire workers that reached their lifespan once they are idle.
        if let Some(max) = self.config.max_tasks_per_worker {
            for w in &mut self.workers {
                if w.life == Life::Ready && w.assigned >= max && w.outstanding.is_empty() {
                    w.send(Kind::Exit, 0, 0, 0, 0, &[]);
                    w.life = Life::Retiring;
                    w.kill_at = Some(now + Duration::from_secs(10));
                }
            }
        }
        if self.phase == Phase::Closing && self.queue.is_empty() && self.jobs.values().all(|j| j.finished()) {
            for w in &mut self.workers {
                if matches!(w.life, Life::Ready | Life::Starting) && w.outstanding.is_empty() {
                    w.send(Kind::Exit, 0, 0, 0, 0, &[]);
                    w.life = Life::Retiring;
                    w.kill_at = Some(now + Duration::from_secs(10));
                }
            }
        }
        self.launch_missing();
        self.fail_if_unstartable();
        self.dispatch();
        for w in &mut self.workers {
            if let Some(at) = w.kill_at {
                if now >= at && w.life != Life::Exited {
                    sys::kill(w.proc.pid, libc::SIGKILL);
                    w.kill_at = None;
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
        kills.chain(self.launch_after).min()
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
    st.started = true;
    shared.cond.notify_all();
    let mut out = Outgoing::default();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut inbound: Vec<(usize, Inbound)> = Vec::new();
    let mut read_bufs = ReadBufs::default();
    let mut exited: Vec<usize> = Vec::new();
    let mut live: Vec<u32> = Vec::new();
    loop {
        st.step();
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
                let (id, fd) = (w.id, w.chan_fd());
                if let Some(bytes) = w.out_frames() {
                    out.queue(id, fd, bytes);
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
                if out.waiting(w.id) {
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
        st.io_sleeping = false;
        shared.wake_on_call.store(false, Ordering::SeqCst);
        if launcher_ready {
            st.launcher.on_readable();
        }
        for (i, got) in inbound.drain(..) {
            st.deliver(i, &got.bytes, got.closed);
            read_bufs.recycle(got.bytes);
        }
        for &i in &exited {
            // Deliver whatever it sent before it died, then mark it.
            let fd = st.workers[i].chan_fd();
            if !st.workers[i].chan_closed {
                let got = read_bufs.read(fd);
                st.deliver(i, &got.bytes, got.closed);
                read_bufs.recycle(got.bytes);
            }
            st.workers[i].life = Life::Exited;
        }
        for w in &mut st.workers {
            if broken.contains(&w.id) {
                w.chan_closed = true;
            }
        }
        st.reap_exited();
        live.clear();
        live.extend(st.workers.iter().filter(|w| !w.chan_closed).map(|w| w.id));
        out.retain(&live);
    }
    st.launcher.shutdown();
    // Lets a binding's callback thread, which waits on this, end too.
    st.done_tx = None;
    drop(st);
    shared.cond.notify_all();
}
