//! A job: one call such as `map`, `imap` or `apply_async`, split into chunks.
//!
//! The job names its function (see [`crate::funcs`]) and owns its in-flight
//! [`Window`], the [`Reorder`] buffer its outcomes wait in until the caller
//! takes them, and its counters.

use crate::chunking::Adaptive;
use crate::frame::Status;
use crate::funcs::FuncId;
use crate::ordering::Reorder;
use crate::stats::{JobStats, Slow};
use crate::window::Window;
use std::time::Duration;

/// Identifies a job within an engine.
pub type JobId = u32;

/// What became of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Chunk index within the job.
    pub index: u32,
    /// How it ended.
    pub status: Status,
    /// The chunk was one item ([`crate::frame::task::SINGLE`]): an `Ok` payload is one
    /// value, not a list.
    pub single: bool,
    /// The worker's pickled result, or the engine's message.
    pub payload: Vec<u8>,
    /// How long the worker spent on the chunk, in ns (0 if it never ran).
    pub run_ns: u64,
}

/// How a job's outcomes are handed to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// In chunk order (`map`, `imap`, `apply`).
    Ordered,
    /// In completion order (`imap_unordered`).
    Unordered,
}

/// What a job is: the function its chunks run and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// The function every chunk runs.
    pub func: FuncId,
    /// Task bits for every chunk ([`crate::frame::task`]).
    pub task_bits: u8,
    /// The order outcomes are handed back in.
    pub order: Order,
    /// Chunks in flight at most (`None`: unbounded, for input already in memory).
    pub window: Option<u32>,
    /// How long one chunk may run before its worker is killed and the
    /// chunk fails as timed out. A job with one gets one chunk per worker
    /// at a time, so its deadline is never spent waiting in a worker's queue.
    pub timeout: Option<Duration>,
}

impl JobSpec {
    /// An ordered, unbounded job without a deadline.
    pub fn new(func: FuncId, task_bits: u8) -> Self {
        JobSpec {
            func,
            task_bits,
            order: Order::Ordered,
            window: None,
            timeout: None,
        }
    }

    /// The same job, handing outcomes back in `order`.
    pub fn order(self, order: Order) -> Self {
        JobSpec { order, ..self }
    }

    /// The same job, with at most `window` chunks in flight.
    pub fn window(self, window: Option<u32>) -> Self {
        JobSpec { window, ..self }
    }

    /// The same job, with a deadline per chunk.
    pub fn timeout(self, timeout: Option<Duration>) -> Self {
        JobSpec { timeout, ..self }
    }
}

/// One job's state inside the engine.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(crate) spec: JobSpec,
    window: Window,
    reorder: Reorder<Outcome>,
    input_done: bool,
    completed: u32,
    /// Items submitted so far: the input index of the next chunk's first item.
    next_item: u64,
    /// Chunk sizes for a caller that gave none.
    pub(crate) adaptive: Adaptive,
    pub(crate) stats: JobStats,
    /// The caller wants to hear when the job finishes.
    pub(crate) watched: bool,
    /// The caller has let go of the job: drop its outcomes as they come.
    pub(crate) abandoned: bool,
    /// Cancelled: its queued chunks were dropped and no more may be added.
    pub(crate) cancelled: bool,
}

impl Job {
    pub(crate) fn new(id: JobId, spec: JobSpec) -> Self {
        Job {
            id,
            spec,
            window: Window::new(spec.window),
            reorder: match spec.order {
                Order::Ordered => Reorder::ordered(),
                Order::Unordered => Reorder::unordered(),
            },
            input_done: false,
            completed: 0,
            next_item: 0,
            adaptive: Adaptive::default(),
            stats: JobStats::default(),
            watched: false,
            abandoned: false,
            cancelled: false,
        }
    }

    /// Reserve indices for chunks of `items` items each, `bytes` of input in
    /// all. Returns the index of the first chunk and the input index of its
    /// first item (each later chunk's items follow the one before's).
    pub(crate) fn add_chunks(&mut self, items: &[u32], bytes: usize) -> (u32, u64) {
        assert!(!self.input_done, "chunks added after the input was marked complete");
        self.window.add_bytes(bytes);
        let first = self.window.submit(items.len() as u32);
        let first_item = self.next_item;
        let total: u64 = items.iter().map(|&n| u64::from(n)).sum();
        self.next_item += total;
        self.stats.submitted.chunks += items.len() as u64;
        self.stats.submitted.items += total;
        (first, first_item)
    }

    /// No more chunks will be added.
    pub(crate) fn finish_input(&mut self) {
        self.input_done = true;
    }

    /// Chunks that may be added now without exceeding the window.
    pub(crate) fn room(&self) -> u32 {
        if self.input_done {
            0
        } else {
            self.window.room()
        }
    }

    /// Record a chunk's outcome; its input was `input_bytes` long, it held
    /// `items` items from input index `first_item`, `failed` of which raised.
    pub(crate) fn complete(&mut self, outcome: Outcome, input_bytes: usize, items: u32, first_item: u64, failed: u32) {
        self.completed += 1;
        self.window.finish_bytes(input_bytes);
        debug_assert!(self.completed <= self.window.submitted());
        self.stats
            .tally
            .count(outcome.status, u64::from(items), u64::from(failed));
        if outcome.status.ran() {
            let run = Duration::from_nanos(outcome.run_ns);
            self.stats.busy += run;
        }
        // A job of one chunk (an `apply` call) keeps no list of slowest
        // chunks: the worker slot's has it, and a job is made per call.
        if outcome.status.ran() && self.stats.submitted.chunks > 1 {
            let run = Duration::from_nanos(outcome.run_ns);
            self.stats.slowest.offer(Slow {
                run,
                job: self.id,
                chunk: outcome.index,
                first_item,
                items,
            });
        }
        if self.abandoned {
            self.window.take(1);
            return;
        }
        self.reorder.insert(outcome.index, outcome);
    }

    /// Whether every chunk has an outcome and no more will be added.
    pub(crate) fn finished(&self) -> bool {
        self.input_done && self.completed == self.window.submitted()
    }

    /// Whether an outcome can be taken now.
    pub(crate) fn has_ready(&self) -> bool {
        self.reorder.has_ready()
    }

    /// Take up to `max` outcomes in the job's order.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Outcome> {
        let out = self.reorder.pop_ready(max);
        self.window.take(out.len() as u32);
        out
    }

    /// Let go of the job: held outcomes are dropped and later ones discarded.
    pub(crate) fn abandon(&mut self) {
        self.abandoned = true;
        let held = self.reorder.clear() as u32;
        self.window.take(held);
        self.input_done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::task;

    fn outcome(index: u32) -> Outcome {
        Outcome {
            index,
            status: Status::Ok,
            single: false,
            payload: vec![index as u8],
            run_ns: 1,
        }
    }

    fn complete(j: &mut Job, index: u32) {
        j.complete(outcome(index), 0, 1, u64::from(index), 0);
    }

    #[test]
    fn lazy_job_is_bounded_by_its_window() {
        let mut j = Job::new(1, JobSpec::new(0, 0).window(Some(3)));
        assert_eq!(j.room(), 3);
        assert_eq!(j.add_chunks(&[1, 1, 1], 0).0, 0);
        assert_eq!(j.room(), 0);
        complete(&mut j, 1);
        // A completed but untaken outcome still occupies the window.
        assert_eq!(j.room(), 0);
        complete(&mut j, 0);
        assert_eq!(j.take(10).iter().map(|o| o.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(j.room(), 2);
        j.finish_input();
        assert!(!j.finished());
        complete(&mut j, 2);
        assert!(j.finished());
        assert_eq!(j.take(1).len(), 1);
        assert!(!j.has_ready());
    }

    #[test]
    fn abandoned_job_discards_outcomes() {
        let mut j = Job::new(1, JobSpec::new(0, 0));
        j.add_chunks(&[1, 1, 1], 0);
        complete(&mut j, 2);
        j.abandon();
        complete(&mut j, 0);
        complete(&mut j, 1);
        assert!(j.finished());
        assert!(!j.has_ready());
    }

    #[test]
    fn chunks_know_where_their_items_start_and_the_slowest_are_kept() {
        let mut j = Job::new(1, JobSpec::new(0, task::STAR));
        assert_eq!(j.add_chunks(&[3, 5, 2], 0), (0, 0));
        assert_eq!(j.add_chunks(&[4], 0), (3, 10));
        let mut slow = outcome(2);
        slow.run_ns = 9_000;
        j.complete(slow, 0, 2, 8, 1);
        let s = &j.stats;
        assert_eq!(s.submitted.items, 14);
        assert_eq!((s.tally.done.items, s.tally.failed.items), (1, 1));
        assert_eq!(s.slowest.as_slice()[0].first_item, 8);
    }
}
