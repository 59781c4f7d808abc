//! Dynamic scheduling: which worker gets the next chunk, and how many chunks
//! a worker may hold at once.
//!
//! There is no per-worker pre-assignment, except for a job that asks for it
//! (MPIRE's `order_tasks`: chunk `i` runs on worker `i % n`, see [`Queue`]).
//! Other chunks wait in one queue and go to the worker holding the fewest. A
//! worker holds more than the chunk it is running only when chunks are
//! short, the running one included: one queued behind a long chunk would
//! wait for it while another worker idles (head-of-line blocking), but a
//! worker with nothing queued behind a 5 µs chunk would idle for a whole
//! round trip. "Short" is what the function's items took so far: a running
//! chunk of a function not measured yet, or one run far past its estimate
//! (a task waiting on something), gets nothing behind it. A chunk with a deadline goes only to a worker holding
//! nothing, and nothing joins it, so its deadline runs from when it starts.

use crate::engine::{Lifespan, State};
use crate::frame::{task, Header};
use crate::funcs::Funcs;
use crate::worker::{Life, Task, Worker};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Chunks waiting for a worker: one queue any worker takes from, and one
/// per worker slot for the chunks of jobs that pin theirs (chunk `i` to slot
/// `i % slots`). A pinned chunk waits for its slot's worker even while
/// others idle, which is what pinning asks for; kept apart, it never holds
/// up the other jobs' chunks behind it. A pinned chunk whose worker died is
/// put back in its slot's queue, so that slot's replacement runs it.
#[derive(Debug)]
pub(crate) struct Queue {
    common: VecDeque<Task>,
    /// One per slot.
    pinned: Vec<VecDeque<Task>>,
    /// Chunks in `pinned`, so that the common case looks at no slot queue.
    n_pinned: usize,
}

impl Queue {
    /// Empty queues for an engine of `slots` worker slots.
    pub(crate) fn new(slots: usize) -> Self {
        Queue {
            common: VecDeque::new(),
            pinned: (0..slots).map(|_| VecDeque::new()).collect(),
            n_pinned: 0,
        }
    }

    /// The slot queue a pinned chunk waits in.
    fn lane(&mut self, t: &Task) -> &mut VecDeque<Task> {
        let slot = t.index as usize % self.pinned.len();
        &mut self.pinned[slot]
    }

    /// Queue a chunk behind the others of its lane.
    pub(crate) fn push_back(&mut self, t: Task) {
        if t.pinned {
            self.n_pinned += 1;
            self.lane(&t).push_back(t);
        } else {
            self.common.push_back(t);
        }
    }

    /// Queue a chunk ahead of the others of its lane (one a dead worker held).
    pub(crate) fn push_front(&mut self, t: Task) {
        if t.pinned {
            self.n_pinned += 1;
            self.lane(&t).push_front(t);
        } else {
            self.common.push_front(t);
        }
    }

    /// Whether no chunk waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.common.is_empty() && self.n_pinned == 0
    }

    /// Take every waiting chunk: the common queue's, then each slot's, each
    /// in its order.
    pub(crate) fn drain_all(&mut self) -> Vec<Task> {
        let mut out: Vec<Task> = self.common.drain(..).collect();
        for lane in &mut self.pinned {
            out.extend(lane.drain(..));
        }
        self.n_pinned = 0;
        out
    }

    /// Take the waiting chunks of `job`; the others keep their order.
    pub(crate) fn take_job(&mut self, job: crate::job::JobId) -> Vec<Task> {
        self.take_where(|t| t.job == job)
    }

    /// Take the waiting chunks `pred` picks, in one pass; the others keep
    /// their order.
    pub(crate) fn take_where(&mut self, pred: impl Fn(&Task) -> bool) -> Vec<Task> {
        let split = |q: &mut VecDeque<Task>, out: &mut Vec<Task>| {
            let (taken, kept): (VecDeque<Task>, VecDeque<Task>) = std::mem::take(q).into_iter().partition(&pred);
            *q = kept;
            out.extend(taken);
        };
        let mut out = Vec::new();
        split(&mut self.common, &mut out);
        if self.n_pinned > 0 {
            let before = out.len();
            for lane in &mut self.pinned {
                split(lane, &mut out);
            }
            self.n_pinned -= out.len() - before;
        }
        out
    }
}

/// Work a worker should have queued ahead of it, in time.
const TARGET_QUEUED: Duration = Duration::from_micros(500);
/// Longest a running chunk may be expected to take for a chunk to queue
/// behind it.
const RUNNING_SHORT: Duration = Duration::from_millis(1);
/// How far past its estimate a running chunk may be for a chunk to queue
/// behind it: past that, it waits on something. Beyond a time slice or
/// two, as a worker the machine has not run for a while looks the same.
const OVERRUN: Duration = Duration::from_millis(20);
/// Most chunks a worker may hold.
const MAX_DEPTH: usize = 512;
/// Most payload bytes a worker may hold beyond the chunk it is running.
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// Whether a worker whose items take `per_item_ns` each (`None`: not
/// measured yet), holding `held` chunks of `held_items` items of which
/// `running_items` are in the chunk it runs, may queue a chunk of
/// `next_items` more: only if the work queued behind the running chunk stays
/// under [`TARGET_QUEUED`]. The estimate is per item, so a large chunk after
/// many small ones is not mistaken for a small one.
fn queue_allows(per_item_ns: Option<u64>, held: usize, held_items: u64, running_items: u64, next_items: u64) -> bool {
    if held == 0 {
        return true;
    }
    let Some(per_item) = per_item_ns else {
        return false;
    };
    let queued = (held_items - running_items + next_items).saturating_mul(per_item.max(1));
    held < MAX_DEPTH && queued <= TARGET_QUEUED.as_nanos() as u64
}

/// Whether a worker takes chunks at all: ready, short of its lifespan, and
/// neither killed by the engine nor cut off (its death is not noticed yet,
/// but a chunk sent to it would die with it).
fn takes_chunks(w: &Worker, lifespan: Lifespan) -> bool {
    w.life == Life::Ready
        && w.fate.is_none()
        && !w.chan_closed
        && !lifespan.reached(w.assigned_chunks, w.assigned_items)
}

/// Whether a running chunk of `items` items, of a function whose items take
/// `per_item_ns` each (`None`: not measured yet), running for `running_for`,
/// is expected to end soon: it is short by that estimate and has not run
/// far past it.
fn ends_soon(items: u32, per_item_ns: Option<u64>, running_for: Duration) -> bool {
    let Some(per_item) = per_item_ns else {
        return false;
    };
    let expected = Duration::from_nanos(u64::from(items).saturating_mul(per_item));
    expected <= RUNNING_SHORT && running_for <= expected + OVERRUN
}

/// Whether worker `w` may take chunk `next` at `now`. `next_per_item` is
/// the estimate for `next`'s function; `funcs` gives others' (looked up
/// only when the running chunk's function differs, as the lookups are most
/// of the cost of dispatching a 1 µs task).
fn can_take(
    w: &Worker,
    lifespan: Lifespan,
    next: &Task,
    next_per_item: Option<u64>,
    funcs: &Funcs,
    now: Instant,
) -> bool {
    if !takes_chunks(w, lifespan) {
        return false;
    }
    // Holding nothing, a worker takes anything.
    let Some(running) = w.outstanding.front() else {
        return true;
    };
    // A suspect runs alone, and so does a chunk with a deadline.
    let alone = |t: &Task| t.suspect || t.timeout.is_some();
    let running_per_item = || {
        if running.func == next.func {
            next_per_item
        } else {
            funcs.per_item_ns(running.func)
        }
    };
    !alone(next)
        && !alone(running)
        && w.held_bytes() < MAX_QUEUED_BYTES
        && queue_allows(
            next_per_item,
            w.outstanding.len(),
            w.held_items(),
            u64::from(running.items),
            u64::from(next.items),
        )
        && ends_soon(running.items, running_per_item(), w.front_running(now))
}

impl State {
    /// Whether a worker holds nothing and may take a chunk: the only case
    /// where new work must wake the I/O thread. A worker that holds a chunk
    /// will send its result, which wakes the thread anyway, and it then
    /// hands out everything queued meanwhile in one batch. Waking it for
    /// each submission instead cost an eventfd write, a poll and a send per
    /// `apply_async`, about as much CPU as the task itself, on the cores the
    /// workers need. Any chunk suits such a worker (`can_take`).
    pub(crate) fn has_idle_worker(&self) -> bool {
        let lifespan = self.config.lifespan;
        self.workers
            .iter()
            .any(|w| w.outstanding.is_empty() && takes_chunks(w, lifespan))
    }

    /// Hand queued chunks to workers: pinned ones to their slot's worker,
    /// the others each to the worker holding the fewest; `now` stamps when
    /// they were sent.
    pub(crate) fn dispatch(&mut self, now: Instant) {
        let lifespan = self.config.lifespan;
        if self.queue.n_pinned > 0 {
            for i in 0..self.workers.len() {
                let slot = self.workers[i].slot as usize;
                while let Some(head) = self.queue.pinned[slot].front() {
                    let per_item = self.funcs.per_item_ns(head.func);
                    if !can_take(&self.workers[i], lifespan, head, per_item, &self.funcs, now) {
                        break;
                    }
                    let task = self.queue.pinned[slot].pop_front().expect("lane checked non-empty");
                    self.queue.n_pinned -= 1;
                    self.hand_over(i, task, now);
                }
            }
        }
        // While a worker starts, nothing queues behind a running chunk: the
        // starting one takes it as soon as it is ready. Tasks that wait for
        // each other (a Barrier of all workers) need every worker to get
        // one before any holds two.
        let starting = self
            .workers
            .iter()
            .any(|w| w.life == Life::Starting && w.fate.is_none());
        while let Some(head) = self.queue.common.front() {
            let per_item = self.funcs.per_item_ns(head.func);
            let pick = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| !starting || w.outstanding.is_empty())
                .filter(|(_, w)| can_take(w, lifespan, head, per_item, &self.funcs, now))
                .min_by_key(|(_, w)| w.outstanding.len())
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            // An abandoned job still runs: the caller dropped its result
            // object, not its work (fire-and-forget `apply_async`). Its job,
            // and so its function, lasts until its last chunk has an outcome.
            let task = self.queue.common.pop_front().expect("queue checked non-empty");
            self.hand_over(i, task, now);
        }
    }

    /// Send chunk `task` to worker `i` (its function first, if the worker
    /// has not had it) and record that the worker holds it.
    fn hand_over(&mut self, i: usize, task: Task, now: Instant) {
        let w = &mut self.workers[i];
        if w.funcs.insert(task.func) {
            let func = self
                .funcs
                .payload(task.func)
                .expect("a job's function outlives the job");
            w.send(Header::func(task.func, func.len()), func);
        }
        let bits = if task.suspect {
            task.task_bits | task::ISOLATE
        } else {
            task.task_bits
        };
        let header = Header::task(task.job, task.index, task.func, bits, task.payload.len());
        w.send(header, &task.payload);
        w.hold(task, now, &mut self.slots[w.slot as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: u32, index: u32, pinned: bool) -> Task {
        Task {
            job,
            index,
            payload: Vec::new(),
            suspect: false,
            items: 1,
            first_item: u64::from(index),
            func: 0,
            task_bits: 0,
            timeout: None,
            pinned,
        }
    }

    fn ids(tasks: &[Task]) -> Vec<(u32, u32)> {
        tasks.iter().map(|t| (t.job, t.index)).collect()
    }

    #[test]
    fn pinned_chunks_wait_in_their_slots_lane() {
        let mut q = Queue::new(3);
        assert!(q.is_empty());
        for i in 0..5 {
            q.push_back(task(1, i, true));
        }
        q.push_back(task(2, 0, false));
        assert_eq!(ids(q.pinned[1].make_contiguous()), [(1, 1), (1, 4)]);
        assert_eq!(q.n_pinned, 5);
        // One a dead worker held goes back to the front of its own lane.
        q.push_front(task(1, 7, true));
        assert_eq!(ids(q.pinned[1].make_contiguous()), [(1, 7), (1, 1), (1, 4)]);
        // A cancel takes a job's chunks from every lane.
        assert_eq!(ids(&q.take_job(1)).len(), 6);
        assert_eq!(q.n_pinned, 0);
        assert!(!q.is_empty());
        q.push_back(task(3, 2, true));
        assert_eq!(ids(&q.drain_all()), [(2, 0), (3, 2)]);
        assert!(q.is_empty());
    }

    #[test]
    fn queue_depth_follows_work_per_item() {
        // Nothing measured yet: one chunk at a time.
        assert!(queue_allows(None, 0, 0, 0, 1));
        assert!(!queue_allows(None, 1, 1, 1, 1));
        // 1 µs items: hundreds of one-item chunks may queue.
        assert!(queue_allows(Some(1_000), 100, 100, 1, 1));
        assert!(!queue_allows(Some(1_000), 600, 600, 1, 1));
        // The same worker must not queue a 125k-item chunk behind another.
        assert!(!queue_allows(Some(100), 1, 125_000, 125_000, 125_000));
        // 2 ms items: never more than the one running.
        assert!(!queue_allows(Some(2_000_000), 1, 1, 1, 1));
    }

    #[test]
    fn nothing_queues_behind_a_long_or_stuck_chunk() {
        let us = Duration::from_micros;
        // Short by its function's estimate, and on time.
        assert!(ends_soon(10, Some(5_000), us(20)));
        // Not measured yet: it may take any time.
        assert!(!ends_soon(1, None, us(0)));
        // Long by its estimate (a 10 ms task), though just started.
        assert!(!ends_soon(1, Some(10_000_000), us(0)));
        // Late, as a worker the machine has not run for a few ms is.
        assert!(ends_soon(1, Some(5_000), us(5_000)));
        // Short by its estimate, yet running far longer: waiting on
        // something (a lock, a gate) that the chunk behind it may need.
        assert!(!ends_soon(1, Some(5_000), us(50_000)));
    }
}
