//! Result ordering: hands chunk outcomes out either in input order (`map`,
//! `imap`) or as they complete (`imap_unordered`).

use std::collections::{BTreeMap, VecDeque};

/// Buffers outcomes that arrive in any order and hands them out in the order
/// the job asks for.
#[derive(Debug)]
pub enum Reorder<T> {
    /// Strictly by index: an outcome waits until every lower index has been
    /// handed out.
    Ordered {
        /// Next index to hand out.
        next: u32,
        /// The outcome for `next`, once it arrived. Outcomes mostly arrive
        /// in order, and an `apply_async` job has only this one: kept
        /// inline, it needs no tree node allocated and freed.
        head: Option<T>,
        /// Outcomes that arrived further ahead of `next`; made on the first
        /// (a job made per `apply_async` call never needs one, and is kept
        /// small: boxed, it takes 8 bytes inline instead of 24).
        #[allow(clippy::box_collection)]
        waiting: Option<Box<BTreeMap<u32, T>>>,
    },
    /// In arrival order.
    Unordered(VecDeque<T>),
}

impl<T> Reorder<T> {
    /// A buffer that hands out in index order.
    pub fn ordered() -> Self {
        Reorder::Ordered {
            next: 0,
            head: None,
            waiting: None,
        }
    }

    /// A buffer that hands out in arrival order.
    pub fn unordered() -> Self {
        Reorder::Unordered(VecDeque::new())
    }

    /// Add the outcome for chunk `index`.
    pub fn insert(&mut self, index: u32, item: T) {
        match self {
            Reorder::Ordered { next, head, waiting } => {
                debug_assert!(index >= *next, "chunk {index} handed out twice");
                if index == *next {
                    debug_assert!(head.is_none(), "chunk {index} arrived twice");
                    *head = Some(item);
                } else {
                    let old = waiting.get_or_insert_with(Box::default).insert(index, item);
                    debug_assert!(old.is_none(), "chunk {index} arrived twice");
                }
            }
            Reorder::Unordered(q) => q.push_back(item),
        }
    }

    /// Number of outcomes that can be handed out now.
    #[cfg(test)]
    pub fn ready_count(&self) -> usize {
        match self {
            Reorder::Ordered { next, head, waiting } => {
                if head.is_none() {
                    return 0;
                }
                let mut n = 1usize;
                let mut i = *next + 1;
                while waiting.as_ref().is_some_and(|w| w.contains_key(&i)) {
                    n += 1;
                    i += 1;
                }
                n
            }
            Reorder::Unordered(q) => q.len(),
        }
    }

    /// Whether at least one outcome can be handed out now.
    pub fn has_ready(&self) -> bool {
        match self {
            Reorder::Ordered { head, .. } => head.is_some(),
            Reorder::Unordered(q) => !q.is_empty(),
        }
    }

    /// Hand out up to `max` outcomes.
    pub fn pop_ready(&mut self, max: usize) -> Vec<T> {
        let mut out = Vec::new();
        match self {
            Reorder::Ordered { next, head, waiting } => {
                while out.len() < max {
                    let Some(item) = head.take() else { break };
                    out.push(item);
                    *next += 1;
                    if let Some(w) = waiting {
                        *head = w.remove(next);
                    }
                }
            }
            Reorder::Unordered(q) => {
                let n = max.min(q.len());
                out.extend(q.drain(..n));
            }
        }
        out
    }

    /// Drop every outcome held, ready or not; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        match self {
            Reorder::Ordered { head, waiting, .. } => {
                // The next index stays: those chunks are accounted as taken.
                *head = None;
                *waiting = None;
            }
            Reorder::Unordered(q) => q.clear(),
        }
        n
    }

    /// Outcomes held (ready to hand out or not).
    pub fn len(&self) -> usize {
        match self {
            Reorder::Ordered { head, waiting, .. } => {
                waiting.as_ref().map_or(0, |w| w.len()) + usize::from(head.is_some())
            }
            Reorder::Unordered(q) => q.len(),
        }
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_waits_for_the_gap() {
        let mut r = Reorder::ordered();
        r.insert(2, "c");
        r.insert(1, "b");
        assert!(!r.has_ready());
        assert_eq!(r.pop_ready(10), Vec::<&str>::new());
        r.insert(0, "a");
        assert_eq!(r.ready_count(), 3);
        assert_eq!(r.pop_ready(2), vec!["a", "b"]);
        assert_eq!(r.pop_ready(2), vec!["c"]);
        assert!(r.is_empty());
    }

    #[test]
    fn unordered_hands_out_in_arrival_order() {
        let mut r = Reorder::unordered();
        r.insert(5, 5);
        r.insert(0, 0);
        r.insert(3, 3);
        assert_eq!(r.pop_ready(2), vec![5, 0]);
        assert_eq!(r.pop_ready(2), vec![3]);
    }

    #[test]
    fn ordered_is_a_permutation_inverse() {
        // Any arrival order hands out 0..n in order.
        let n = 200u32;
        let mut order: Vec<u32> = (0..n).collect();
        // A fixed pseudo-random shuffle (xorshift), no dependency needed.
        let mut s = 0x9E37_79B9u32;
        for i in (1..order.len()).rev() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            order.swap(i, (s as usize) % (i + 1));
        }
        let mut r = Reorder::ordered();
        let mut out = Vec::new();
        for i in order {
            r.insert(i, i);
            out.extend(r.pop_ready(usize::MAX));
        }
        assert_eq!(out, (0..n).collect::<Vec<_>>());
    }
}
