//! Supervision: starting workers, reading what they send, and noticing and
//! handling their deaths.
//!
//! A death is noticed through the worker's pidfd the moment the process
//! exits. Frames it sent before dying are read first and delivered; then the
//! chunk it was running (the head of its outstanding list) fails with a
//! message naming the pid, the exit status and the chunk, and the chunks
//! queued behind it, which never started, go back to the front of the queue.

use crate::engine::{Phase, State};
use crate::frame::{flags, Kind};
use crate::launch::Exit;
use crate::sys;
use crate::worker::{Life, Worker};
use std::time::{Duration, Instant};

/// Wait this long before launching again after a failed launch, or after
/// several workers in a row died during start-up.
const RELAUNCH_BACKOFF: Duration = Duration::from_millis(500);

/// The payload of a [`flags::WORKER_LOST`] outcome: a first line the binding
/// parses (`pid kind value`, kind being `code`, `signal` or `unknown`), then
/// the message for people.
pub fn lost_message(pid: i32, exit: Exit, task: &str) -> String {
    let (kind, value) = match exit {
        Exit::Code(c) => ("code", c),
        Exit::Signal(s) => ("signal", s),
        Exit::Unknown => ("unknown", 0),
    };
    format!("{pid} {kind} {value}\nthe worker process {pid} running {task} died with {exit}")
}

impl State {
    /// Workers that are starting or taking tasks.
    pub(crate) fn active_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| matches!(w.life, Life::Starting | Life::Ready))
            .count()
    }

    /// Launch workers until the configured number are active.
    pub(crate) fn launch_missing(&mut self) {
        if let Some(at) = self.launch_after {
            if Instant::now() < at {
                return;
            }
            self.launch_after = None;
        }
        while self.wants_workers() && self.active_workers() < self.config.workers {
            let id = self.next_worker_id;
            let launched = sys::socketpair().and_then(|(ours, theirs)| {
                sys::set_socket_buffers(std::os::fd::AsRawFd::as_raw_fd(&ours), 1 << 20);
                let proc = self.launcher.launch(id, theirs)?;
                Worker::new(id, proc, ours)
            });
            match launched {
                Ok(mut w) => {
                    self.next_worker_id += 1;
                    w.send(Kind::Init, 0, 0, 0, u64::from(id), &self.config.init_payload);
                    self.workers.push(w);
                    self.launch_error = None;
                }
                Err(e) => {
                    self.launch_error = Some(e.to_string());
                    self.launch_after = Some(Instant::now() + RELAUNCH_BACKOFF);
                    break;
                }
            }
        }
    }

    /// When no worker can start (launches fail, or every initializer
    /// raises), fail the queued chunks instead of leaving callers waiting.
    pub(crate) fn fail_if_unstartable(&mut self) {
        if self.queue.is_empty() || self.workers.iter().any(|w| w.was_ready && w.life != Life::Exited) {
            return;
        }
        let threshold = (self.config.workers as u32).max(3);
        let (flag, payload) = if self.launch_error.is_some() && self.active_workers() == 0 {
            let msg = format!(
                "could not start a worker process: {}",
                self.launch_error.as_deref().unwrap_or("")
            );
            (flags::WORKER_LOST, msg.into_bytes())
        } else if self.init_failures >= threshold {
            match &self.init_error {
                Some(p) => (flags::CHUNK_FAILED, p.clone()),
                None => (
                    flags::WORKER_LOST,
                    b"worker processes keep dying during start-up".to_vec(),
                ),
            }
        } else {
            return;
        };
        let queued: Vec<_> = self.queue.drain(..).collect();
        for t in queued {
            self.complete(&t, flag, payload.clone(), 0);
        }
    }

    /// Handle `bytes` that worker `i` sent; `closed`: its channel ended.
    pub(crate) fn deliver(&mut self, i: usize, bytes: &[u8], closed: bool) {
        if self.workers[i].chan_closed {
            return;
        }
        if closed {
            self.workers[i].chan_closed = true;
        }
        // A buffer kept in the state, so a batch of results allocates no list.
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        match self.workers[i].feed(bytes, &mut frames) {
            Ok(()) => {}
            Err(_) => {
                // A stream that is not frames: the worker is broken. Kill it;
                // its death is then handled like any other.
                let w = &mut self.workers[i];
                w.chan_closed = true;
                sys::kill(w.proc.pid, libc::SIGKILL);
                return;
            }
        };
        for (h, payload) in frames.drain(..) {
            match h.kind {
                Kind::Ready => {
                    let w = &mut self.workers[i];
                    if w.life == Life::Starting {
                        w.life = Life::Ready;
                    }
                    w.was_ready = true;
                    self.init_failures = 0;
                }
                Kind::InitFailed => {
                    self.init_error = Some(payload);
                }
                Kind::Result => {
                    let w = &mut self.workers[i];
                    let matches_head = w
                        .outstanding
                        .front()
                        .is_some_and(|t| t.job == h.job && t.index == h.index);
                    if !matches_head {
                        // Results come back in the order chunks were sent;
                        // anything else means the worker is confused.
                        w.chan_closed = true;
                        sys::kill(w.proc.pid, libc::SIGKILL);
                        return;
                    }
                    let task = w.answered().expect("head checked above");
                    self.funcs.record(task.func, h.aux, task.items);
                    self.complete(&task, h.flags, payload, h.aux);
                }
                // Engine-to-worker kinds never arrive here.
                _ => {}
            }
        }
        self.frames = frames;
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
        if !w.was_ready && self.phase == Phase::Running {
            self.init_failures += 1;
            if self.init_failures >= (self.config.workers as u32).max(3) {
                self.launch_after = Some(Instant::now() + RELAUNCH_BACKOFF);
            }
        }
        let flag = if self.phase == Phase::Terminating {
            flags::CANCELLED
        } else {
            flags::WORKER_LOST
        };
        // A worker sends results in batches, so with several chunks
        // outstanding it is unknown which one was running: the others may
        // have finished with their results unsent. Run them all again, each
        // alone, so the one that kills a worker does it by itself and fails
        // exactly. With one chunk outstanding there is no doubt.
        let exact = w.outstanding.len() == 1 || flag == flags::CANCELLED;
        if exact {
            if let Some(running) = w.answered() {
                let msg = lost_message(
                    w.proc.pid,
                    exit,
                    &format!("task {} of job {}", running.index, running.job),
                );
                self.complete(&running, flag, msg.into_bytes(), 0);
            }
        }
        for mut t in w.take_all().into_iter().rev() {
            t.suspect |= !exact;
            self.queue.push_front(t);
        }
    }
}
