//! Counters: what the workers and jobs have done, for progress bars and
//! insights.
//!
//! The engine updates them as it handles results, under the lock it already
//! holds, and a caller reads them as one [`Snapshot`] copied under that
//! lock: a few hundred bytes, so polling ten times a second costs nothing
//! next to the work.

use std::time::Duration;

/// How many of the slowest chunks a job or a worker slot remembers.
pub const SLOWEST: usize = 5;

/// Chunks and the items in them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Chunks.
    pub chunks: u64,
    /// Items in those chunks.
    pub items: u64,
}

impl Counts {
    fn add(&mut self, chunks: u64, items: u64) {
        self.chunks += chunks;
        self.items += items;
    }
}

/// What became of the chunks counted: `done` ran to the end (some of their
/// items may have raised: those are in `failed.items`), `failed` did not
/// (the chunk failed as a whole, its worker died, or it timed out),
/// `cancelled` never ran or was stopped on request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Chunks that ran to the end, and their items.
    pub done: Counts,
    /// Chunks that failed as a whole; items that raised or never ran.
    pub failed: Counts,
    /// Chunks cancelled, and their items.
    pub cancelled: Counts,
}

/// One of the slowest chunks: its run time and where its items start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slow {
    /// How long the worker spent on it.
    pub run: Duration,
    /// Its job.
    pub job: u32,
    /// Its index in the job.
    pub chunk: u32,
    /// The index, in the job's input, of its first item.
    pub first_item: u64,
    /// How many items it holds.
    pub items: u32,
}

/// Keeps the [`SLOWEST`] slowest chunks, slowest first. Empty until the
/// first offer, so a job that never records one allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slowest(Vec<Slow>);

impl Slowest {
    /// Consider a chunk that ran for `slow.run`.
    pub fn offer(&mut self, slow: Slow) {
        if self.0.len() == SLOWEST && self.0[SLOWEST - 1].run >= slow.run {
            return;
        }
        if self.0.capacity() == 0 {
            self.0.reserve_exact(SLOWEST + 1);
        }
        let at = self.0.partition_point(|s| s.run >= slow.run);
        self.0.insert(at, slow);
        self.0.truncate(SLOWEST);
    }

    /// The slowest chunks, slowest first.
    pub fn as_slice(&self) -> &[Slow] {
        &self.0
    }
}

/// A job's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Chunks and items submitted.
    pub submitted: Counts,
    /// What became of them so far.
    pub tally: Tally,
    /// Time workers spent on its chunks.
    pub busy: Duration,
    /// Its slowest chunks.
    pub slowest: Slowest,
}

/// A worker slot's counters, summed over every process that held the slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The slot, `0..workers`.
    pub slot: u32,
    /// The pid of the process holding the slot now, if one is running.
    pub pid: Option<i32>,
    /// Processes that held the slot after its first: replacements of
    /// workers that died, timed out or reached their lifespan.
    pub restarts: u64,
    /// What became of the chunks its workers were given.
    pub tally: Tally,
    /// From launch to ready, initializer included.
    pub start_up: Duration,
    /// In the initializer, as the workers measured it.
    pub init: Duration,
    /// Ready and holding no chunk.
    pub idle: Duration,
    /// Running chunks, as the workers measured it.
    pub busy: Duration,
    /// From being told to exit to having exited (exit hook included).
    pub exit: Duration,
    /// Its slowest chunks.
    pub slowest: Slowest,
}

impl Tally {
    /// Count a chunk of `items` items that ended with `status`, `failed`
    /// of its items having raised.
    pub fn count(&mut self, status: crate::frame::Status, items: u64, failed: u64) {
        use crate::frame::Status;
        match status {
            Status::Ok | Status::ItemErrors => {
                self.done.add(1, items.saturating_sub(failed));
                self.failed.items += failed.min(items);
            }
            Status::ChunkFailed | Status::WorkerLost | Status::TimedOut => self.failed.add(1, items),
            Status::Cancelled => self.cancelled.add(1, items),
        }
    }
}

/// Every counter, copied at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per slot, by slot.
    pub workers: Vec<WorkerStats>,
    /// The job asked about, if it is still known.
    pub job: Option<JobStats>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Status;

    fn slow(ms: u64) -> Slow {
        Slow {
            run: Duration::from_millis(ms),
            job: 1,
            chunk: ms as u32,
            first_item: ms,
            items: 1,
        }
    }

    #[test]
    fn slowest_keeps_the_top_few_in_order() {
        let mut s = Slowest::default();
        for ms in [5, 1, 9, 3, 7, 2, 8, 6] {
            s.offer(slow(ms));
        }
        let got: Vec<u64> = s.as_slice().iter().map(|x| x.first_item).collect();
        assert_eq!(got, [9, 8, 7, 6, 5]);
    }

    #[test]
    fn a_tally_counts_items_by_fate() {
        let mut t = Tally::default();
        t.count(Status::Ok, 10, 0);
        t.count(Status::ItemErrors, 10, 3);
        t.count(Status::WorkerLost, 4, 0);
        t.count(Status::Cancelled, 5, 0);
        assert_eq!(t.done, Counts { chunks: 2, items: 17 });
        assert_eq!(t.failed, Counts { chunks: 1, items: 7 });
        assert_eq!(t.cancelled, Counts { chunks: 1, items: 5 });
    }
}
