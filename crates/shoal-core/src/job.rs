//! A job: one call such as `map`, `imap` or `apply_async`, split into chunks.
//!
//! The job names its function (see [`crate::funcs`]) and owns its in-flight
//! [`Window`], the [`Reorder`] buffer its outcomes wait in until the caller
//! takes them, and its counters.
//!
//! One job is made per `apply_async` call, and 20k of them can be waiting at
//! once, in memory that is fresh each time, so a job is kept small: what
//! only a job of many chunks needs (its adaptive chunk size, its slowest
//! chunks) is made when it gets its second chunk or is asked for a chunk
//! size. At 304 bytes a job (and 72 a task) the I/O thread spent ~75% more
//! time per `apply_async` than at 160 (and 48); at 200 (and 64), ~15%.

use crate::chunking::Adaptive;
use crate::frame::Status;
use crate::funcs::FuncId;
use crate::ordering::Reorder;
use crate::stats::{Counts, JobStats, Slow, Slowest, Tally};
use crate::window::{Results, Window, TAKE_BYTES};
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
    /// Pin chunk `i` to the worker in slot `i % workers` (MPIRE's
    /// `order_tasks`), instead of giving each chunk to whichever worker is
    /// free. Indices start at 0 in every job, so each job starts at slot 0.
    pub pinned: bool,
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
            pinned: false,
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

    /// The same job, with its chunks pinned to worker slots (or not).
    pub fn pinned(self, pinned: bool) -> Self {
        JobSpec { pinned, ..self }
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
    submitted_items: u64,
    /// What became of its chunks.
    tally: Tally,
    /// Time workers spent on its chunks, in ns.
    busy_ns: u64,
    /// What a job of more than one chunk keeps besides; `None` until then
    /// (a job with a bounded window has it from the start).
    many: Option<Box<Many>>,
    /// The caller wants to hear when the job finishes.
    pub(crate) watched: bool,
    /// The caller has let go of the job: drop its outcomes as they come.
    pub(crate) abandoned: bool,
    /// Cancelled: its queued chunks were dropped and no more may be added.
    pub(crate) cancelled: bool,
}

/// What only a job of more than one chunk keeps.
#[derive(Debug, Default)]
struct Many {
    /// Chunk sizes for a caller that gave none.
    adaptive: Adaptive,
    /// Its slowest chunks.
    slowest: Slowest,
    /// A bounded window's results, in bytes (unused by other jobs).
    results: Results,
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
            submitted_items: 0,
            tally: Tally::default(),
            busy_ns: 0,
            // A bounded window counts its results' bytes from the first.
            many: spec.window.map(|_| Box::default()),
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
        let total: u64 = items.iter().map(|&n| u64::from(n)).sum();
        if self.many.is_some() || self.window.submitted() as usize + items.len() > 1 {
            self.many().adaptive.submitted(total, bytes as u64);
        }
        self.window.add_bytes(bytes);
        let first = self.window.submit(items.len() as u32);
        let first_item = self.submitted_items;
        self.submitted_items += total;
        (first, first_item)
    }

    /// What a job of more than one chunk keeps, made on first use. A first
    /// chunk that already ran is counted among the slowest then; the
    /// adaptive size learns from the chunks after it.
    fn many(&mut self) -> &mut Many {
        if self.many.is_none() {
            let mut many = Many::default();
            if self.completed == 1 && self.busy_ns > 0 {
                many.slowest.offer(Slow {
                    run: Duration::from_nanos(self.busy_ns),
                    job: self.id,
                    chunk: 0,
                    first_item: 0,
                    items: self.submitted_items as u32,
                });
            }
            self.many = Some(Box::new(many));
        }
        self.many.as_mut().expect("made above")
    }

    /// The size, in items, for the job's next chunk when its caller gave none.
    pub(crate) fn chunk_hint(&mut self) -> u32 {
        self.many().adaptive.next_size()
    }

    /// The job's counters, as a caller reads them.
    pub(crate) fn stats(&self) -> JobStats {
        JobStats {
            submitted: Counts {
                chunks: u64::from(self.window.submitted()),
                items: self.submitted_items,
            },
            tally: self.tally,
            busy: Duration::from_nanos(self.busy_ns),
            slowest: self.many.as_ref().map(|m| m.slowest.clone()).unwrap_or_default(),
        }
    }

    /// Whether chunks may still be added (its input is not complete).
    pub(crate) fn takes_input(&self) -> bool {
        !self.input_done
    }

    /// No more chunks will be added.
    pub(crate) fn finish_input(&mut self) {
        self.input_done = true;
    }

    /// Chunks that may be added now without exceeding the window, in
    /// chunks and in bytes (results count; see `window`).
    /// Chunks submitted and not yet taken by the caller.
    pub(crate) fn in_flight(&self) -> u32 {
        self.window.in_flight()
    }

    pub(crate) fn room(&self) -> u32 {
        if self.input_done {
            0
        } else if let (Some(_), Some(many)) = (self.spec.window, &self.many) {
            self.window.room_with(&many.results)
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
        self.tally.count(outcome.status, u64::from(items), u64::from(failed));
        if outcome.status.ran() {
            self.busy_ns += outcome.run_ns;
            // A job of one chunk (an `apply` call) has no `many`: the
            // worker slot's counters have its chunk.
            if let Some(many) = &mut self.many {
                many.adaptive.finished(items, outcome.run_ns);
                many.slowest.offer(Slow {
                    run: Duration::from_nanos(outcome.run_ns),
                    job: self.id,
                    chunk: outcome.index,
                    first_item,
                    items,
                });
            }
        }
        if self.abandoned {
            self.window.take(1);
            return;
        }
        if let (Some(_), Some(many)) = (self.spec.window, &mut self.many) {
            many.results.arrived(outcome.payload.len());
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

    /// Take up to `max` outcomes in the job's order; from a bounded
    /// window, no more than [`TAKE_BYTES`] of results (but at least one),
    /// as what the caller takes is out of the window's budget.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Outcome> {
        let out = match (self.spec.window, &mut self.many) {
            (Some(_), Some(many)) => {
                let out = if many.results.waiting() <= TAKE_BYTES {
                    self.reorder.pop_ready(max)
                } else {
                    let mut out: Vec<Outcome> = Vec::new();
                    let mut bytes = 0;
                    while out.len() < max && bytes < TAKE_BYTES {
                        let Some(o) = self.reorder.pop_ready(1).pop() else {
                            break;
                        };
                        bytes += o.payload.len();
                        out.push(o);
                    }
                    out
                };
                many.results.taken(out.iter().map(|o| o.payload.len()).sum());
                out
            }
            _ => self.reorder.pop_ready(max),
        };
        self.window.take(out.len() as u32);
        out
    }

    /// Let go of the job: held outcomes are dropped and later ones discarded.
    pub(crate) fn abandon(&mut self) {
        self.abandoned = true;
        let held = self.reorder.clear() as u32;
        self.window.take(held);
        if let Some(many) = &mut self.many {
            let waiting = many.results.waiting();
            many.results.taken(waiting);
        }
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

    fn big(index: u32, bytes: usize) -> Outcome {
        Outcome {
            payload: vec![0; bytes],
            ..outcome(index)
        }
    }

    #[test]
    fn results_waiting_for_the_caller_are_bounded_in_bytes() {
        use crate::window::DEFAULT_MAX_BYTES;
        let mb = 1 << 20;
        let mut j = Job::new(1, JobSpec::new(0, 0).window(Some(1024)));
        // Until a result says how large results are: a probe's worth.
        let probe = j.room();
        assert!(probe < 1024);
        j.add_chunks(&vec![1; probe as usize], 0);
        assert_eq!(j.room(), 0);
        // Results of 8 MB arrive and wait: no room until the caller takes.
        for i in 0..probe {
            j.complete(big(i, 8 * mb), 0, 1, u64::from(i), 0);
        }
        assert_eq!(j.room(), 0);
        // A take hands over at most TAKE_BYTES (at least one outcome)...
        let taken = j.take(256);
        assert_eq!(taken.len(), TAKE_BYTES / (8 * mb));
        // ...and room comes back only for what the budget allows.
        while !j.take(256).is_empty() {}
        assert_eq!(j.room() as usize, DEFAULT_MAX_BYTES / (8 * mb));
        // A result larger than TAKE_BYTES is still taken, alone.
        j.add_chunks(&[1], 0);
        j.complete(big(probe, 2 * TAKE_BYTES), 0, 1, 0, 0);
        assert_eq!(j.take(256).len(), 1);
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
        let s = j.stats();
        assert_eq!(s.submitted.items, 14);
        assert_eq!((s.tally.done.items, s.tally.failed.items), (1, 1));
        assert_eq!(s.slowest.as_slice()[0].first_item, 8);
    }

    #[test]
    fn a_first_chunk_that_ran_alone_is_still_among_the_slowest() {
        // A lazy job's first chunk can finish before its second is added,
        // while the job keeps no list of slowest chunks yet.
        let mut j = Job::new(1, JobSpec::new(0, 0));
        j.add_chunks(&[3], 0);
        let mut first = outcome(0);
        first.run_ns = 7_000;
        j.complete(first, 0, 3, 0, 0);
        j.add_chunks(&[2], 0);
        complete(&mut j, 1);
        let s = j.stats();
        assert_eq!((s.submitted.chunks, s.submitted.items), (2, 5));
        assert_eq!(s.tally.done.chunks, 2);
        assert_eq!(s.busy, Duration::from_nanos(7_001));
        let first = s.slowest.as_slice()[0];
        assert_eq!(
            (first.chunk, first.items, first.run),
            (0, 3, Duration::from_nanos(7_000))
        );
    }

    #[test]
    fn a_job_and_a_task_stay_small() {
        // One of each is made per `apply_async` call (see the module docs).
        assert!(
            std::mem::size_of::<Job>() <= 200,
            "Job is {} bytes",
            std::mem::size_of::<Job>()
        );
        let task = std::mem::size_of::<crate::worker::Task>();
        assert!(task <= 64, "Task is {task} bytes");
    }
}
