//! Supervision: starting workers, reading what they send, and noticing and
//! handling their deaths.
//!
//! A death is noticed through the worker's pidfd the moment the process
//! exits. Frames it sent before dying are read first and delivered. Then
//! what it held is settled: a worker holding one chunk was running it, so
//! that chunk fails (worker lost, or timed out when the engine killed it at
//! its deadline, or cancelled when the engine killed it for a cancel); a
//! worker holding several sends results in batches, so which one was
//! running is unknown, and each runs again alone (a suspect).
//! The worker's slot is then filled by a fresh worker.
//!
//! A worker killed while starting, at the init timeout, held nothing: the
//! chunks waiting in the queue fail as timed out instead (MPIRE fails the
//! map). One killed while running its exit hook past the exit timeout
//! leaves an [`ExitReport::TimedOut`] among the exit results.
//!

use crate::engine::{ExitReport, Phase, Start, State, CANCELLED, TERMINATED};
use crate::frame::{Header, Kind, Status};
use crate::job::JobId;
use crate::launch::{Exit, Launched};
use crate::stats::{Slow, SlowInput};
use crate::sys;
use crate::worker::{Fate, Life, Task, Worker};
use std::io;
use std::time::{Duration, Instant};

/// Wait this long before launching again after a failed launch, or after
/// several workers in a row died during start-up.
const RELAUNCH_BACKOFF: Duration = Duration::from_millis(500);

/// The payload of a [`Status::WorkerLost`] or [`Status::TimedOut`]
/// outcome, for chunk `t` of the function named `name`: a first line the
/// binding parses, `pid kind value bits what_len name_len` (kind being
/// `code`, `signal` or `unknown`; bits the chunk's task bits; the lengths
/// in bytes), then the message for people, the function's name, and the
/// chunk's input as it was sent, so that the binding can show the call.
pub(crate) fn lost_message(pid: i32, exit: Exit, what: &str, name: &str, t: &Task) -> Vec<u8> {
    let (kind, value) = match exit {
        Exit::Code(c) => ("code", c),
        Exit::Signal(s) => ("signal", s),
        Exit::Unknown => ("unknown", 0),
    };
    let mut out = format!(
        "{pid} {kind} {value} {} {} {}\n{what}{name}",
        t.task_bits,
        what.len(),
        name.len()
    )
    .into_bytes();
    out.extend_from_slice(&t.payload);
    out
}

/// What chunk `t` of the function named `name` was running on, for people:
/// `parse on input item 6` (its job's input, counted from 0).
fn running(name: &str, t: &Task) -> String {
    let name = if name.is_empty() { "a task" } else { name };
    let items = match t.items {
        1 => format!("input item {}", t.first_item),
        n => format!("input items {} to {}", t.first_item, t.first_item + u64::from(n) - 1),
    };
    format!("{name} on {items}")
}

impl State {
    /// Workers that are starting or taking tasks, and launches under way.
    pub(crate) fn active_workers(&self) -> usize {
        let live = self
            .workers
            .iter()
            .filter(|w| matches!(w.life, Life::Starting | Life::Ready))
            .count();
        live + self.starting.len()
    }

    /// The lowest slot no live worker or launch holds. A retiring worker
    /// holds its slot until it has exited, so two live workers never share
    /// one (its replacement starts after it, as in `multiprocessing`).
    fn free_slot(&self) -> Option<u32> {
        (0..self.config.workers as u32).find(|&slot| {
            !self.workers.iter().any(|w| w.slot == slot && w.life != Life::Exited)
                && !self.starting.iter().any(|s| s.slot == slot)
        })
    }

    /// Launch workers until every slot is filled. Launches never wait:
    /// one the launcher answers later waits in [`State::starting`].
    pub(crate) fn launch_missing(&mut self) {
        let now = Instant::now();
        // Launches unanswered for too long have failed.
        let timeout = self.config.launch_timeout;
        let late = self.starting.iter().any(|s| now.duration_since(s.since) > timeout);
        if late {
            self.starting.retain(|s| now.duration_since(s.since) <= timeout);
            self.launch_failed(format!("a worker did not start within {:.1} s", timeout.as_secs_f64()));
        }
        if let Some(at) = self.launch_after {
            if now < at {
                return;
            }
            self.launch_after = None;
        }
        while self.wants_workers() {
            let Some(slot) = self.free_slot() else { break };
            let serial = self.next_serial;
            let launched = sys::socketpair().and_then(|(ours, theirs)| {
                sys::set_socket_buffers(std::os::fd::AsRawFd::as_raw_fd(&ours), 1 << 20);
                Ok((self.launcher.launch(serial, slot, theirs)?, ours))
            });
            match launched {
                Ok((mut proc, chan)) => {
                    self.next_serial += 1;
                    // A worker forked with its own channel brings our end.
                    let chan = proc.as_mut().and_then(|p| p.channel.take()).unwrap_or(chan);
                    let start = Start {
                        serial,
                        slot,
                        chan,
                        since: now,
                    };
                    match proc {
                        Some(proc) => self.adopt(start, proc),
                        None => self.starting.push(start),
                    }
                }
                Err(e) => {
                    self.launch_failed(e.to_string());
                    break;
                }
            }
        }
    }

    fn launch_failed(&mut self, why: String) {
        self.launch_error = Some(why);
        self.launch_after = Some(Instant::now() + RELAUNCH_BACKOFF);
    }

    /// Take in the launches the launcher has answered.
    pub(crate) fn adopt_started(&mut self) {
        for (serial, result) in self.launcher.started() {
            let Some(at) = self.starting.iter().position(|s| s.serial == serial) else {
                // Given up on: the worker finds its channel closed and exits.
                continue;
            };
            let start = self.starting.swap_remove(at);
            match result {
                Ok(proc) => self.adopt(start, proc),
                // The launcher has a new way to start workers (a zygote's
                // heir): the slot is free again and is filled at once.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.launch_failed(e.to_string()),
            }
        }
    }

    /// A launched worker joins the pool and is sent its settings.
    fn adopt(&mut self, start: Start, proc: Launched) {
        match Worker::new(start.serial, start.slot, proc, start.chan, start.since) {
            Ok(mut w) => {
                w.send(
                    Header::init(start.slot, start.serial, self.config.init_payload.len()),
                    &self.config.init_payload,
                );
                let filled = &mut self.slot_filled[start.slot as usize];
                if *filled {
                    self.slots[start.slot as usize].restarts += 1;
                }
                *filled = true;
                self.workers.push(w);
                self.launch_error = None;
            }
            Err(e) => self.launch_failed(e.to_string()),
        }
    }

    /// When no worker can start (launches fail, or every initializer
    /// raises), fail the queued chunks instead of leaving callers waiting.
    pub(crate) fn fail_if_unstartable(&mut self) {
        if self.queue.is_empty() || self.workers.iter().any(|w| w.was_ready && w.life != Life::Exited) {
            return;
        }
        let threshold = (self.config.workers as u32).max(3);
        let (status, payload) = if self.launch_error.is_some() && self.active_workers() == 0 {
            let msg = format!(
                "could not start a worker process: {}",
                self.launch_error.as_deref().unwrap_or("")
            );
            (Status::WorkerLost, msg.into_bytes())
        } else if self.init_failures >= threshold {
            match &self.init_error {
                Some(p) => (Status::ChunkFailed, p.clone()),
                None => (
                    Status::WorkerLost,
                    b"worker processes keep dying during start-up".to_vec(),
                ),
            }
        } else {
            return;
        };
        for t in self.queue.drain_all() {
            self.complete(&t, status, payload.clone(), 0, 0);
        }
    }

    /// Handle `bytes` that worker `i` sent, read at `now`; `closed`: its
    /// channel ended.
    pub(crate) fn deliver(&mut self, i: usize, bytes: &[u8], closed: bool, now: Instant) {
        if self.workers[i].chan_closed {
            return;
        }
        if closed {
            self.workers[i].chan_closed = true;
        }
        // A buffer kept in the state, so a batch of results allocates no list.
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        if self.workers[i].feed(bytes, &mut frames).is_err() {
            // A stream that is not frames: the worker is broken. Kill it;
            // its death is then handled like any other.
            self.disown(i);
            return;
        }
        for (h, payload) in frames.drain(..) {
            match h.kind {
                Kind::Ready => {
                    let w = &mut self.workers[i];
                    if w.life == Life::Starting {
                        w.life = Life::Ready;
                        // The init deadline, if any: a starting worker holds
                        // no chunk, so no chunk's deadline is lost with it.
                        if w.fate.is_none() && w.outstanding.is_empty() {
                            w.deadline = None;
                        }
                    }
                    w.was_ready = true;
                    let stats = &mut self.slots[w.slot as usize];
                    stats.start_up += now.saturating_duration_since(w.launched_at);
                    stats.init += Duration::from_nanos(h.run_ns());
                    self.init_failures = 0;
                }
                Kind::InitStarted => {
                    let w = &mut self.workers[i];
                    w.init_started_at = Some(now);
                    if w.life == Life::Starting && w.fate.is_none() {
                        w.deadline = self.config.init_timeout.map(|t| (now + t, t));
                    }
                }
                Kind::InitFailed => {
                    self.init_error = Some(payload);
                }
                Kind::ExitResult => {
                    let slot = self.workers[i].slot;
                    self.exit_results.push((slot, ExitReport::Returned(payload)));
                }
                Kind::Result => {
                    let w = &mut self.workers[i];
                    let matches_head = w
                        .outstanding
                        .front()
                        .is_some_and(|t| t.job == h.job() && t.index == h.index());
                    let Some(status) = h.status().filter(|s| s.ran() || *s == Status::ChunkFailed) else {
                        self.disown(i);
                        return;
                    };
                    if !matches_head {
                        // Results come back in the order chunks were sent;
                        // anything else means the worker is confused.
                        self.disown(i);
                        return;
                    }
                    let task = w.answered(now).expect("head checked above");
                    let stats = &mut self.slots[w.slot as usize];
                    stats.tally.count(status, u64::from(task.items), u64::from(h.failed()));
                    if status.ran() {
                        let run = Duration::from_nanos(h.run_ns());
                        stats.busy += run;
                        // The input too, for insights to show the slowest
                        // tasks' arguments: copied only for a chunk that
                        // enters the list.
                        let slow = Slow {
                            run,
                            job: task.job,
                            chunk: task.index,
                            first_item: task.first_item,
                            items: task.items,
                        };
                        stats
                            .slowest
                            .offer_with(slow, || SlowInput::keep(task.task_bits, &task.payload));
                    }
                    self.funcs.record(task.func, h.run_ns(), task.items);
                    self.complete(&task, status, payload, h.run_ns(), h.failed());
                }
                // Engine-to-worker kinds never arrive here.
                Kind::Init | Kind::Func | Kind::Task | Kind::Forget | Kind::Exit => {}
            }
        }
        self.workers[i].maybe_idle(now);
        self.frames = frames;
    }

    /// Stop listening to worker `i` and kill it; its death is then handled
    /// like any other.
    fn disown(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.chan_closed = true;
        self.launcher.kill(&w.proc, libc::SIGKILL);
    }

    /// Reap workers whose process has exited and whose exit status is known.
    pub(crate) fn reap_exited(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            if self.workers[i].life != Life::Exited {
                i += 1;
                continue;
            }
            let Some(exit) = ({
                let w = &mut self.workers[i];
                self.launcher.exit_status(&mut w.proc)
            }) else {
                i += 1;
                continue;
            };
            let w = self.workers.remove(i);
            self.worker_died(w, exit);
        }
    }

    fn worker_died(&mut self, mut w: Worker, exit: Exit) {
        let now = Instant::now();
        let stats = &mut self.slots[w.slot as usize];
        w.stop_idling(now, Some(stats));
        if let Some(at) = w.exit_sent_at {
            stats.exit += now.saturating_duration_since(at);
        }
        // A worker whose zygote was killed dies with it, in an unknown way:
        // that says nothing about whether workers can start.
        if !w.was_ready && exit != Exit::Unknown && self.phase == Phase::Running {
            self.init_failures += 1;
            if self.init_failures >= (self.config.workers as u32).max(3) {
                self.launch_after = Some(Instant::now() + RELAUNCH_BACKOFF);
            }
        }
        let pid = w.proc.pid;
        if self.phase == Phase::Terminating {
            // terminate took what it held already; this is a safety net.
            for t in w.take_all() {
                self.settle(&t, w.slot, Status::Cancelled, TERMINATED.to_vec());
            }
            return;
        }
        match w.fate {
            // Killed at the init timeout: it never took a chunk. Nothing it
            // held can fail, so what waits for a worker does.
            Some(Fate::TimedOut(limit)) if !w.was_ready => {
                self.init_timed_out(pid, w.slot, exit, limit);
                return;
            }
            // Killed in its exit hook: it held nothing (a worker is told to
            // exit once it holds nothing).
            Some(Fate::ExitTimedOut(limit)) => {
                let msg = format!(
                    "the exit hook of worker {} (process {pid}) ran past its timeout of {:.3} s; the process was killed",
                    w.slot,
                    limit.as_secs_f64()
                );
                self.exit_results.push((w.slot, ExitReport::TimedOut(msg)));
            }
            // Killed at its deadline: it held that one chunk alone (a chunk
            // with a deadline runs alone, and a killed worker takes no more).
            Some(Fate::TimedOut(limit)) => {
                let timed = w.outstanding.front().is_some_and(|t| t.timeout.is_some());
                if let Some(t) = if timed { w.answered(now) } else { None } {
                    let name = self.funcs.name(t.func);
                    let what = format!(
                        "{} ran past its timeout of {:.3} s; the worker process {pid} running it was killed",
                        running(name, &t),
                        limit.as_secs_f64()
                    );
                    let payload = lost_message(pid, exit, &what, name, &t);
                    self.settle(&t, w.slot, Status::TimedOut, payload);
                }
            }
            // Killed for a cancel: it was running a chunk of the cancelled
            // job; the other chunks it held never failed, so they run again
            // as they were (below).
            Some(Fate::Cancelled) => {
                let held = w.take_all();
                for t in held.into_iter().rev() {
                    self.requeue(t, w.slot, false);
                }
                return;
            }
            None => {
                // A worker sends results in batches, so with several chunks
                // outstanding it is unknown which one was running: the others
                // may have finished with their results unsent. Run them all
                // again, each alone, so the one that kills a worker does it by
                // itself and fails exactly. With one chunk outstanding there is
                // no doubt.
                if w.outstanding.len() == 1 {
                    let t = w.answered(now).expect("one chunk held");
                    let name = self.funcs.name(t.func);
                    let what = format!(
                        "the worker process {pid} running {} died with {exit}",
                        running(name, &t)
                    );
                    let payload = lost_message(pid, exit, &what, name, &t);
                    self.settle(&t, w.slot, Status::WorkerLost, payload);
                }
            }
        }
        let suspect = w.outstanding.len() > 1;
        for t in w.take_all().into_iter().rev() {
            self.requeue(t, w.slot, suspect);
        }
    }

    /// A worker in `slot` was killed because its initializer ran past
    /// `limit`: every chunk waiting in the queue fails as timed out, so a
    /// caller waiting on one hears of it instead of waiting for a worker
    /// whose initializer may never finish, and their jobs are cancelled, so
    /// that none of their later chunks runs on a replacement (the job
    /// failed, as an MPIRE map does). Chunks other workers hold go on.
    fn init_timed_out(&mut self, pid: i32, slot: u32, exit: Exit, limit: Duration) {
        let what = format!(
            "the initializer of worker {slot} (process {pid}) ran past its timeout of {:.3} s; \
             the process was killed and the tasks waiting for a worker were failed",
            limit.as_secs_f64()
        );
        let mut failed_jobs: Vec<JobId> = Vec::new();
        for t in self.queue.drain_all() {
            if !failed_jobs.contains(&t.job) {
                failed_jobs.push(t.job);
            }
            // No function name: the message is about the worker, not a call.
            let payload = lost_message(pid, exit, &what, "", &t);
            // Not counted against `slot`: no worker there ever held it.
            self.complete(&t, Status::TimedOut, payload, 0, 0);
        }
        for job in failed_jobs {
            let Some(j) = self.jobs.get_mut(&job) else { continue };
            let was_open = j.takes_input();
            j.cancelled = true;
            j.finish_input();
            // Finished by ending its input: `complete` did not see it finish.
            if was_open && j.finished() {
                self.job_finished(job);
            }
        }
    }

    /// Put a chunk a dead worker held back at the front of the queue
    /// (alone from now on if `suspect`), unless its job was cancelled:
    /// then it ends cancelled, as the cancel promised.
    fn requeue(&mut self, mut t: Task, slot: u32, suspect: bool) {
        if self.jobs.get(&t.job).is_some_and(|j| j.cancelled) {
            self.settle(&t, slot, Status::Cancelled, CANCELLED.to_vec());
        } else {
            t.suspect |= suspect;
            self.queue.push_front(t);
        }
    }

    /// A chunk that worker `slot` held ends with `status` and `message`.
    fn settle(&mut self, t: &Task, slot: u32, status: Status, message: Vec<u8>) {
        self.slots[slot as usize].tally.count(status, u64::from(t.items), 0);
        self.complete(t, status, message, 0, 0);
    }
}
