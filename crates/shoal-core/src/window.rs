//! The in-flight window: how many chunks of a job may be submitted but not
//! yet handed back to the caller.
//!
//! A lazy job (`imap` over a generator) reads its input only while the window
//! has room, so memory is bounded by the window, not by the input. Results
//! wait in the window until the caller takes them, so a slow consumer holds
//! back the reading of input instead of letting results pile up.
//!
//! The window is bounded in chunks and in bytes. One budget,
//! [`DEFAULT_MAX_BYTES`], covers the input of chunks still running, the
//! results waiting for the caller ([`Results`]), and the results expected
//! from the chunks still running (at the mean size of those seen so far).
//! Until the first result says how large results are, only
//! [`Window::probe`] chunks may be in flight. 1,500 results of 1 MB with
//! `chunksize=8` and a slow consumer took the parent to 2.7 GB when only
//! chunks were counted (multiprocessing: 1.1 GB).

/// Counts chunks submitted and chunks taken, against a capacity, and the
/// input bytes of chunks still running, against a budget: many tiny chunks
/// may be in flight, but not many large ones.
#[derive(Debug, Clone)]
pub struct Window {
    capacity: Option<u32>,
    submitted: u32,
    taken: u32,
    bytes: usize,
}

/// Bytes a bounded window lets be in flight at once: input of chunks
/// running, and results waiting or expected.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// Result bytes a caller takes from a bounded window at once (at least one
/// outcome): what it has taken waits in its own memory, outside the budget.
pub const TAKE_BYTES: usize = DEFAULT_MAX_BYTES / 4;

/// The results of a bounded window's chunks: bytes waiting for the caller,
/// and the sizes seen, from which the results of chunks still running are
/// expected. (Kept apart from [`Window`], which every `apply_async` job has.)
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Bytes of results that arrived and were not taken yet.
    waiting: usize,
    /// Chunks whose result arrived.
    seen: u32,
    /// Their bytes.
    seen_bytes: u64,
}

impl Results {
    /// A result of `bytes` arrived and waits for the caller.
    pub fn arrived(&mut self, bytes: usize) {
        self.waiting += bytes;
        self.seen += 1;
        self.seen_bytes += bytes as u64;
    }

    /// The caller took (or let go of) results of `bytes` in all.
    pub fn taken(&mut self, bytes: usize) {
        self.waiting = self.waiting.saturating_sub(bytes);
    }

    /// Bytes of results waiting for the caller.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The mean bytes of a chunk's result so far; `None` before the first.
    fn per_chunk(&self) -> Option<u64> {
        self.seen_bytes.checked_div(u64::from(self.seen))
    }
}

impl Window {
    /// A window of `capacity` chunks; `None` is unbounded (eager jobs whose
    /// input is already in memory).
    pub fn new(capacity: Option<u32>) -> Self {
        if let Some(c) = capacity {
            assert!(c > 0, "a window needs room for at least one chunk");
        }
        Window {
            capacity,
            submitted: 0,
            taken: 0,
            bytes: 0,
        }
    }

    /// How many more chunks may be submitted now. None while the input
    /// bytes in flight are over budget.
    pub fn room(&self) -> u32 {
        match self.capacity {
            None => u32::MAX,
            Some(_) if self.bytes >= DEFAULT_MAX_BYTES => 0,
            Some(c) => c.saturating_sub(self.in_flight()),
        }
    }

    /// [`Window::room`], with the bytes of `results` counted against the
    /// budget too: those waiting, and those expected from the chunks still
    /// running. Before any result, at most [`Window::probe`] chunks.
    pub fn room_with(&self, results: &Results) -> u32 {
        let Some(c) = self.capacity else {
            return u32::MAX;
        };
        let by_count = self.room();
        let Some(per_chunk) = results.per_chunk() else {
            return by_count.min(Self::probe(c).saturating_sub(self.in_flight()));
        };
        let running = u64::from(self.submitted.saturating_sub(results.seen));
        let used = (self.bytes as u64)
            .saturating_add(results.waiting as u64)
            .saturating_add(running.saturating_mul(per_chunk));
        let left = (DEFAULT_MAX_BYTES as u64).saturating_sub(used);
        let mut by_bytes = u32::try_from(left / per_chunk.max(1)).unwrap_or(u32::MAX);
        if self.in_flight() == 0 {
            // Results larger than the budget: one chunk at a time, never none.
            by_bytes = by_bytes.max(1);
        }
        by_count.min(by_bytes)
    }

    /// Chunks a window of capacity `c` lets be in flight before any
    /// result: enough to start every worker (capacities are made from the
    /// worker count, `chunking::window_chunks`), few enough that unknown
    /// results cannot swamp memory: 16 chunks of 8 MB results are 128 MB.
    pub fn probe(c: u32) -> u32 {
        (c / 64).max(c.min(16))
    }

    /// Record `bytes` of input submitted.
    pub fn add_bytes(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// Record `bytes` of input whose chunk has finished.
    pub fn finish_bytes(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Chunks submitted and not yet taken by the caller.
    pub fn in_flight(&self) -> u32 {
        self.submitted - self.taken
    }

    /// Record `n` chunks submitted. Returns the index of the first.
    pub fn submit(&mut self, n: u32) -> u32 {
        let first = self.submitted;
        self.submitted += n;
        first
    }

    /// Record `n` chunks handed back to the caller.
    pub fn take(&mut self, n: u32) {
        assert!(self.taken + n <= self.submitted, "took more chunks than were submitted");
        self.taken += n;
    }

    /// Chunks submitted so far.
    pub fn submitted(&self) -> u32 {
        self.submitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_shrinks_and_grows() {
        let mut w = Window::new(Some(4));
        assert_eq!(w.room(), 4);
        assert_eq!(w.submit(3), 0);
        assert_eq!(w.room(), 1);
        assert_eq!(w.submit(1), 3);
        assert_eq!(w.room(), 0);
        w.take(2);
        assert_eq!(w.room(), 2);
        assert_eq!(w.in_flight(), 2);
    }

    #[test]
    fn large_inputs_are_bounded_by_bytes() {
        let mut w = Window::new(Some(1000));
        w.submit(2);
        w.add_bytes(DEFAULT_MAX_BYTES);
        assert_eq!(w.room(), 0);
        w.finish_bytes(1);
        assert_eq!(w.room(), 998);
    }

    #[test]
    fn results_waiting_and_expected_count_against_the_budget() {
        let mut w = Window::new(Some(1024));
        let mut r = Results::default();
        // Before any result: a probe's worth of chunks.
        assert_eq!(w.room_with(&r), 16);
        w.submit(16);
        assert_eq!(w.room_with(&r), 0);
        // 8 MB results: 15 running expected at 8 MB each is over budget.
        r.arrived(8 << 20);
        assert_eq!(w.room_with(&r), 0);
        for _ in 0..15 {
            r.arrived(8 << 20);
        }
        assert_eq!(r.waiting(), 128 << 20);
        // The caller takes 12 of the 16: 32 MB wait, room for 4 more.
        w.take(12);
        r.taken(96 << 20);
        assert_eq!(w.room_with(&r), 4);
        // Results larger than the budget: one chunk at a time, never none.
        let mut huge = Results::default();
        huge.arrived(2 * DEFAULT_MAX_BYTES);
        let mut one = Window::new(Some(1024));
        one.submit(1);
        assert_eq!(one.room_with(&huge), 0);
        one.take(1);
        assert_eq!(one.room_with(&huge), 1);
        // Tiny results: the chunk count bounds the window, as before.
        let mut small = Results::default();
        small.arrived(10);
        assert_eq!(w.room_with(&small), w.room());
    }

    #[test]
    fn unbounded_window_always_has_room() {
        let mut w = Window::new(None);
        w.submit(1_000_000);
        assert_eq!(w.room(), u32::MAX);
    }

    #[test]
    #[should_panic(expected = "took more chunks")]
    fn taking_more_than_submitted_is_a_bug() {
        let mut w = Window::new(Some(2));
        w.submit(1);
        w.take(2);
    }
}
