//! Chunk sizes: how many items travel to a worker as one task, and how
//! many chunks a lazy job keeps in flight. Every chunk-size decision is made
//! here; the Python job layer asks.

/// Most items in a chunk of `map` when the caller gives no chunk size.
///
/// Four chunks per worker make huge chunks of a long input: a million
/// trivial items come back as eight 125k-item chunks, so the parent waits
/// for the first while both workers compute, then decodes the rest in a
/// burst, and each worker allocates (and faults in) fresh memory for every
/// chunk. Chunks of 8192 stream: the parent decodes while the workers run,
/// and a worker's memory is reused from one chunk to the next. A chunk still
/// carries hundreds of microseconds of even the most trivial work, against
/// tens of microseconds of overhead.
pub const MAX_MAP_CHUNK: usize = 8192;

/// `multiprocessing.Pool.map`'s default, `ceil(n / (4 * workers))`, so each
/// worker gets about four chunks, at most [`MAX_MAP_CHUNK`] items. Zero
/// items give a chunk size of 0.
pub fn default_map_chunksize(n_items: usize, workers: usize) -> usize {
    let per = workers.max(1) * 4;
    n_items.div_ceil(per).min(MAX_MAP_CHUNK)
}

/// Chunk lengths for `map` when the caller gives no chunk size: guided
/// self-scheduling.
///
/// Each chunk takes a `1 / (4 * workers)` share of the items not yet
/// chunked (at most [`MAX_MAP_CHUNK`]), so the first chunk is the size
/// [`default_map_chunksize`] gives and later ones shrink as the input runs
/// out, down to single items. With equal chunks, one worker can sit idle for
/// most of a chunk at the end while the other finishes its last one: 25 items
/// of 5 ms each for 200 items on 2 workers, made worse when the host slows one
/// worker down. With shrinking chunks the workers finish within about one
/// item of each other, for about `4 * workers * ln(chunk)` more chunks, a few
/// microseconds each.
pub fn guided_map_chunks(n_items: usize, workers: usize) -> Vec<usize> {
    let per = workers.max(1) * 4;
    let mut lens = Vec::new();
    let mut left = n_items;
    while left > 0 {
        let len = left.div_ceil(per).min(MAX_MAP_CHUNK);
        lens.push(len);
        left -= len;
    }
    lens
}

/// Why a chunk plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A chunk size below 1.
    BadChunksize(i64),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // multiprocessing's wording, which programs may match.
            PlanError::BadChunksize(n) => write!(f, "Chunksize must be 1+, not {n}"),
        }
    }
}

/// Chunk lengths for `map` of `n_items` on `workers` workers.
///
/// A `chunksize` the caller gives is used as given. Without one, chunks are
/// guided (they shrink towards the end, so the workers finish together),
/// unless `equal` asks for `multiprocessing`'s equal chunks of
/// `ceil(n / (4 * workers))` (at most 8192 items): a lifespan
/// counted in chunks (`maxtasksperchild`) then replaces workers as often as
/// it would there.
pub fn map_chunks(
    n_items: usize,
    workers: usize,
    chunksize: Option<i64>,
    equal: bool,
) -> Result<Vec<usize>, PlanError> {
    let size = match chunksize {
        Some(c) if c < 1 => return Err(PlanError::BadChunksize(c)),
        Some(c) => c as usize,
        None if !equal => return Ok(guided_map_chunks(n_items, workers)),
        None => default_map_chunksize(n_items, workers).max(1),
    };
    let mut lens = vec![size; n_items / size];
    if n_items % size != 0 {
        lens.push(n_items % size);
    }
    Ok(lens)
}

/// Chunks a lazy job (`imap`) keeps in flight on `workers` workers.
///
/// With adaptive chunks each already carries ~2 ms of work:
/// a few per worker keep them busy, and input read ahead stays small. With
/// a fixed size there must be room for every worker to hold a deep queue of
/// tiny chunks; large ones are held back by the window's byte budget
/// instead.
pub fn window_chunks(workers: usize, adaptive: bool) -> u32 {
    let w = workers.max(1) as u32;
    if adaptive {
        4 * w + 4
    } else {
        (64 * w).max(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_plans_use_the_callers_size_else_guided_or_equal_chunks() {
        assert_eq!(map_chunks(10, 2, Some(4), false), Ok(vec![4, 4, 2]));
        assert_eq!(map_chunks(0, 2, Some(4), false), Ok(vec![]));
        assert_eq!(map_chunks(16, 2, None, false), Ok(guided_map_chunks(16, 2)));
        assert_eq!(map_chunks(17, 2, None, true), Ok(vec![3, 3, 3, 3, 3, 2]));
        assert_eq!(map_chunks(0, 2, None, true), Ok(vec![]));
        let err = map_chunks(5, 2, Some(0), false).unwrap_err();
        assert_eq!(err.to_string(), "Chunksize must be 1+, not 0");
        assert_eq!(window_chunks(2, true), 12);
        assert_eq!(window_chunks(2, false), 1024);
        assert_eq!(window_chunks(64, false), 4096);
    }

    #[test]
    fn guided_chunks_start_at_the_stdlib_size_and_shrink_to_one() {
        assert!(guided_map_chunks(0, 2).is_empty());
        assert_eq!(guided_map_chunks(4, 2), [1, 1, 1, 1]);
        assert_eq!(guided_map_chunks(16, 2), [2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]);
        for (n, workers) in [(200, 2), (1_000_000, 2), (12_345, 3), (7, 1)] {
            let lens = guided_map_chunks(n, workers);
            assert_eq!(lens.iter().sum::<usize>(), n);
            assert_eq!(lens[0], default_map_chunksize(n, workers));
            assert!(lens.windows(2).all(|w| w[0] >= w[1]), "never grows: {lens:?}");
            // At least the last 4 * workers - 1 chunks are single items.
            assert!(lens.iter().rev().take(4 * workers - 1).all(|&len| len == 1));
        }
        // 200 items on 2 workers: 29 chunks instead of 8 of 25.
        assert_eq!(guided_map_chunks(200, 2).len(), 29);
    }

    #[test]
    fn matches_the_stdlib_formula_up_to_the_cap() {
        // divmod(len, len(pool) * 4), plus one if there is a remainder.
        assert_eq!(default_map_chunksize(0, 4), 0);
        assert_eq!(default_map_chunksize(10, 4), 1);
        assert_eq!(default_map_chunksize(16, 4), 1);
        assert_eq!(default_map_chunksize(17, 4), 2);
        assert_eq!(default_map_chunksize(65_536, 2), 8_192);
        assert_eq!(default_map_chunksize(500_000, 2), MAX_MAP_CHUNK);
    }
}

/// Work a chunk should carry when the chunk size adapts: enough that the
/// per-chunk cost (a few µs) is well under 1%, little enough that results
/// keep streaming and the last chunks balance across workers.
pub const TARGET_CHUNK_NS: u64 = 2_000_000;
/// Most items in an adaptive chunk.
pub const MAX_CHUNK_ITEMS: u32 = 4_096;
/// Most input bytes in an adaptive chunk.
pub const MAX_CHUNK_BYTES: u64 = 1 << 20;

/// Chunk sizes that adapt to the measured run time per item, for calls
/// where the caller gave no chunk size.
///
/// The first chunks hold one item each, so the first result arrives as soon
/// as one task is done. Once items have finished, the size aims at
/// [`TARGET_CHUNK_NS`] of work, growing at most twofold per step (a few
/// slow items must not be followed by a huge chunk of slow items).
#[derive(Debug, Clone)]
pub struct Adaptive {
    size: u32,
    done_items: u64,
    done_ns: u64,
    sent_items: u64,
    sent_bytes: u64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            size: 1,
            done_items: 0,
            done_ns: 0,
            sent_items: 0,
            sent_bytes: 0,
        }
    }
}

impl Adaptive {
    /// Chunks of `items` items and `bytes` bytes in all were submitted.
    pub fn submitted(&mut self, items: u64, bytes: u64) {
        self.sent_items += items;
        self.sent_bytes += bytes;
    }

    /// A chunk of `items` items ran in `ns` nanoseconds.
    pub fn finished(&mut self, items: u32, ns: u64) {
        self.done_items += u64::from(items);
        self.done_ns += ns;
    }

    /// The size for the next chunk.
    pub fn next_size(&mut self) -> u32 {
        if self.done_items == 0 {
            return self.size;
        }
        let per_item = (self.done_ns / self.done_items).max(1);
        let mut want = (TARGET_CHUNK_NS / per_item).max(1);
        if let Some(per_item_bytes) = self.sent_bytes.checked_div(self.sent_items) {
            want = want.min((MAX_CHUNK_BYTES / per_item_bytes.max(1)).max(1));
        }
        let want = want.min(u64::from(MAX_CHUNK_ITEMS)) as u32;
        self.size = want.min(self.size.saturating_mul(2)).max(1);
        self.size
    }
}

#[cfg(test)]
mod adaptive_tests {
    use super::*;

    #[test]
    fn starts_at_one_and_grows_for_short_items() {
        let mut a = Adaptive::default();
        assert_eq!(a.next_size(), 1);
        a.submitted(1, 8);
        a.finished(1, 1_000); // 1 µs per item
        let sizes: Vec<u32> = (0..20).map(|_| a.next_size()).collect();
        assert_eq!(&sizes[..4], &[2, 4, 8, 16]);
        assert_eq!(*sizes.last().unwrap(), 2_000.min(MAX_CHUNK_ITEMS));
    }

    #[test]
    fn stays_at_one_for_long_items() {
        let mut a = Adaptive::default();
        a.submitted(1, 8);
        a.finished(1, 300_000_000);
        assert_eq!(a.next_size(), 1);
        assert_eq!(a.next_size(), 1);
    }

    #[test]
    fn large_items_are_capped_by_bytes() {
        let mut a = Adaptive::default();
        a.submitted(10, 10 * 100_000);
        a.finished(10, 10);
        let size = (0..30).map(|_| a.next_size()).last().unwrap();
        assert_eq!(size, 10);
    }
}
