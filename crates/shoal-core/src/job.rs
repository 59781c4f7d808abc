//! A job: one call such as `map`, `imap` or `apply_async`, split into chunks.
//!
//! The job names its function (see [`crate::funcs`]) and owns its in-flight
//! [`Window`] and the [`Reorder`] buffer its outcomes wait in until the
//! caller takes them.

use crate::chunking::Adaptive;
use crate::funcs::FuncId;
use crate::ordering::Reorder;
use crate::window::Window;

/// Identifies a job within an engine.
pub type JobId = u32;

/// What became of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Chunk index within the job.
    pub index: u32,
    /// A result flag from [`crate::frame::flags`].
    pub flags: u8,
    /// The worker's pickled result, or the engine's message.
    pub payload: Vec<u8>,
    /// How long the worker spent on the chunk, in ns (0 if it never ran).
    pub duration_ns: u64,
}

/// How a job's outcomes are released to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// In chunk order (`map`, `imap`, `apply`).
    Ordered,
    /// In completion order (`imap_unordered`).
    Unordered,
}

/// One job's state inside the engine.
#[derive(Debug)]
pub struct Job {
    /// The function its chunks run.
    pub func: FuncId,
    /// Task flags for every chunk ([`crate::frame::flags::STAR`], ...).
    pub task_flags: u8,
    window: Window,
    reorder: Reorder<Outcome>,
    input_done: bool,
    completed: u32,
    /// Chunk sizes for a caller that gave none.
    pub adaptive: Adaptive,
    /// The caller wants to hear when the job finishes.
    pub watched: bool,
    /// The caller has let go of the job: drop its outcomes as they come.
    pub released: bool,
}

impl Job {
    /// A new job. `window` bounds chunks in flight (`None`: unbounded).
    pub fn new(func: FuncId, task_flags: u8, order: Order, window: Option<u32>) -> Self {
        Job {
            func,
            task_flags,
            window: Window::new(window),
            reorder: match order {
                Order::Ordered => Reorder::ordered(),
                Order::Unordered => Reorder::unordered(),
            },
            input_done: false,
            completed: 0,
            adaptive: Adaptive::default(),
            watched: false,
            released: false,
        }
    }

    /// Reserve indices for `n` new chunks of `bytes` input in all; returns the first.
    pub fn add_chunks(&mut self, n: u32, bytes: usize) -> u32 {
        assert!(!self.input_done, "chunks added after the input was marked complete");
        self.window.add_bytes(bytes);
        self.window.submit(n)
    }

    /// No more chunks will be added.
    pub fn finish_input(&mut self) {
        self.input_done = true;
    }

    /// Whether the input is complete.
    pub fn input_done(&self) -> bool {
        self.input_done
    }

    /// Chunks that may be added now without exceeding the window.
    pub fn room(&self) -> u32 {
        if self.input_done {
            0
        } else {
            self.window.room()
        }
    }

    /// Record a chunk's outcome; its input was `input_bytes` long.
    pub fn complete(&mut self, outcome: Outcome, input_bytes: usize) {
        self.completed += 1;
        self.window.release_bytes(input_bytes);
        debug_assert!(self.completed <= self.window.submitted());
        if self.released {
            self.window.take(1);
            return;
        }
        self.reorder.insert(outcome.index, outcome);
    }

    /// Whether every chunk has an outcome and no more will be added.
    pub fn finished(&self) -> bool {
        self.input_done && self.completed == self.window.submitted()
    }

    /// Whether everything has been handed to the caller.
    pub fn drained(&self) -> bool {
        self.finished() && self.window.taken() == self.window.submitted()
    }

    /// Whether an outcome can be taken now.
    pub fn has_releasable(&self) -> bool {
        self.reorder.has_releasable()
    }

    /// Take up to `max` outcomes in the job's order.
    pub fn take(&mut self, max: usize) -> Vec<Outcome> {
        let out = self.reorder.release(max);
        self.window.take(out.len() as u32);
        out
    }

    /// Chunks submitted so far.
    pub fn submitted(&self) -> u32 {
        self.window.submitted()
    }

    /// Chunks with an outcome so far.
    pub fn completed(&self) -> u32 {
        self.completed
    }

    /// Let go of the job: held outcomes are dropped and later ones discarded.
    pub fn release(&mut self) {
        self.released = true;
        let held = self.reorder.len() as u32;
        let _ = self.reorder.release(usize::MAX);
        // Outcomes held but not releasable (ordered gaps) are dropped too.
        if let Reorder::Ordered { waiting, .. } = &mut self.reorder {
            waiting.clear();
        }
        self.window.take(held);
        self.input_done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(index: u32) -> Outcome {
        Outcome {
            index,
            flags: 0,
            payload: vec![index as u8],
            duration_ns: 1,
        }
    }

    #[test]
    fn lazy_job_is_bounded_by_its_window() {
        let mut j = Job::new(0, 0, Order::Ordered, Some(3));
        assert_eq!(j.room(), 3);
        assert_eq!(j.add_chunks(3, 0), 0);
        assert_eq!(j.room(), 0);
        j.complete(outcome(1), 0);
        // A completed but untaken outcome still occupies the window.
        assert_eq!(j.room(), 0);
        j.complete(outcome(0), 0);
        assert_eq!(j.take(10).iter().map(|o| o.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(j.room(), 2);
        j.finish_input();
        assert!(!j.finished());
        j.complete(outcome(2), 0);
        assert!(j.finished());
        assert!(!j.drained());
        j.take(1);
        assert!(j.drained());
    }

    #[test]
    fn released_job_discards_outcomes() {
        let mut j = Job::new(0, 0, Order::Ordered, None);
        j.add_chunks(3, 0);
        j.complete(outcome(2), 0);
        j.release();
        j.complete(outcome(0), 0);
        j.complete(outcome(1), 0);
        assert!(j.drained());
        assert!(!j.has_releasable());
    }
}
