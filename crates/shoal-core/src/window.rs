//! The in-flight window: how many chunks of a job may be submitted but not
//! yet handed back to the caller.
//!
//! A lazy job (`imap` over a generator) reads its input only while the window
//! has room, so memory is bounded by the window, not by the input. Results
//! wait in the window until the caller takes them, so a slow consumer holds
//! back the reading of input instead of letting results pile up.

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

/// Input bytes a bounded window lets run at once.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

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
