//! Chunk sizes: how many items travel to a worker as one task.

/// `multiprocessing.Pool.map`'s default: `ceil(n / (4 * workers))`, so each
/// worker gets about four chunks. Zero items give a chunk size of 0.
pub fn default_map_chunksize(n_items: usize, workers: usize) -> usize {
    let per = workers.max(1) * 4;
    n_items.div_ceil(per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_stdlib_formula() {
        // divmod(len, len(pool) * 4), plus one if there is a remainder.
        assert_eq!(default_map_chunksize(0, 4), 0);
        assert_eq!(default_map_chunksize(10, 4), 1);
        assert_eq!(default_map_chunksize(16, 4), 1);
        assert_eq!(default_map_chunksize(17, 4), 2);
        assert_eq!(default_map_chunksize(500_000, 2), 62_500);
    }
}
