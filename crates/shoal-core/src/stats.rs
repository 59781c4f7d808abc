//! Counters: what the workers and jobs have done, for progress bars and
//! insights.
//!
//! The engine updates them as it handles results, under the lock it already
//! holds, and a caller reads them as one [`Snapshot`] copied under that
//! lock: a few hundred bytes, so polling ten times a second costs nothing
//! next to the work.

use std::sync::Arc;
use std::time::Duration;

/// How many of the slowest chunks a job or a worker slot remembers.
pub const SLOWEST: usize = 5;

/// The largest chunk input a worker slot keeps for one of its slowest
/// chunks. Insights show the arguments of the slowest tasks; a larger
/// input would make five kept chunks per slot cost real memory, and its
/// repr would be cut short anyway.
pub const KEEP_INPUT_BYTES: usize = 64 << 10;

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

/// The input of one of the slowest chunks, as the parent sent it, so that
/// the parent can show the arguments of its slowest tasks without keeping
/// every input it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowInput {
    /// The chunk's task bits ([`crate::frame::task`]): how to read `payload`.
    pub task_bits: u8,
    /// The pickled chunk. Shared, so that copying a [`Snapshot`] (ten
    /// times a second, for a progress bar) copies no input.
    pub payload: Arc<[u8]>,
}

impl SlowInput {
    /// A copy of `payload` to keep, unless it is larger than
    /// [`KEEP_INPUT_BYTES`].
    pub fn keep(task_bits: u8, payload: &[u8]) -> Option<SlowInput> {
        (payload.len() <= KEEP_INPUT_BYTES).then(|| SlowInput {
            task_bits,
            payload: Arc::from(payload),
        })
    }
}

/// Keeps the [`SLOWEST`] slowest chunks, slowest first, and the inputs of
/// those whose input was offered. Empty until the first offer, so a job
/// that never records one allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slowest {
    list: Vec<Slow>,
    /// In step with `list`.
    inputs: Vec<Option<SlowInput>>,
}

impl Slowest {
    /// Consider a chunk that ran for `slow.run`.
    pub fn offer(&mut self, slow: Slow) {
        self.offer_with(slow, || None);
    }

    /// Consider a chunk that ran for `slow.run`, and keep what `input`
    /// returns beside it if it is among the slowest. `input` runs only
    /// then, so a chunk that is not (nearly every one, once the list is
    /// full) costs one comparison.
    pub fn offer_with(&mut self, slow: Slow, input: impl FnOnce() -> Option<SlowInput>) {
        if self.list.len() == SLOWEST && self.list[SLOWEST - 1].run >= slow.run {
            return;
        }
        if self.list.capacity() == 0 {
            self.list.reserve_exact(SLOWEST + 1);
            self.inputs.reserve_exact(SLOWEST + 1);
        }
        let at = self.list.partition_point(|s| s.run >= slow.run);
        self.list.insert(at, slow);
        self.inputs.insert(at, input());
        self.list.truncate(SLOWEST);
        self.inputs.truncate(SLOWEST);
    }

    /// The slowest chunks, slowest first.
    pub fn as_slice(&self) -> &[Slow] {
        &self.list
    }

    /// The kept inputs of [`Slowest::as_slice`]'s chunks, in step with it:
    /// `None` where no input was offered or it was too large to keep.
    pub fn inputs(&self) -> &[Option<SlowInput>] {
        &self.inputs
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
    fn slowest_keeps_the_inputs_of_the_slowest_only() {
        let mut s = Slowest::default();
        let mut asked = 0;
        for ms in [5, 1, 9, 3, 7, 2, 8, 6, 4] {
            s.offer_with(slow(ms), || {
                asked += 1;
                SlowInput::keep(0, &[ms as u8])
            });
        }
        let kept: Vec<u8> = s.inputs().iter().map(|i| i.as_ref().unwrap().payload[0]).collect();
        assert_eq!(kept, [9, 8, 7, 6, 5]);
        // Asked only for chunks that entered the list: all but the last,
        // 4, which came once the list was full of slower ones.
        assert_eq!(asked, 8);
        assert!(SlowInput::keep(0, &vec![0; KEEP_INPUT_BYTES + 1]).is_none());
        // A plain offer keeps no input.
        s.offer(slow(10));
        assert!(s.inputs()[0].is_none());
        assert_eq!(s.inputs().len(), SLOWEST);
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
