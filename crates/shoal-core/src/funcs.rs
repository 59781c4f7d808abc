//! The function table: pickled callables by id, shared by the jobs that
//! run them.
//!
//! A function is sent to a worker once, before the first chunk that needs
//! it, and stays there for every later job that uses it, so a caller that
//! runs `apply_async(f, ...)` a thousand times ships `f` once per worker. A
//! function is dropped, and workers told to forget it, when its caller has
//! let go of it and no job uses it any more.

use crate::fasthash::FastMap;
use std::sync::Arc;

/// Identifies a function within an engine.
pub type FuncId = u32;

#[derive(Debug)]
struct Entry {
    payload: Arc<Vec<u8>>,
    /// What people call it (`parse`, `Model.predict`), for messages.
    name: Box<str>,
    /// Jobs using it, plus one while the caller holds it.
    users: u32,
    held: bool,
    /// Smoothed run time per item, once one of its chunks has finished.
    per_item_ns: Option<u64>,
}

/// Pickled functions by id, with their users counted.
#[derive(Debug, Default)]
pub struct Funcs {
    map: FastMap<FuncId, Entry>,
    next: FuncId,
}

impl Funcs {
    /// Add a function; the caller holds it until [`Funcs::unhold`].
    pub fn register(&mut self, payload: Vec<u8>, name: &str) -> FuncId {
        self.next = self.next.wrapping_add(1).max(1);
        let id = self.next;
        let entry = Entry {
            payload: Arc::new(payload),
            name: name.into(),
            users: 1,
            held: true,
            per_item_ns: None,
        };
        self.map.insert(id, entry);
        id
    }

    /// The pickle of function `id`.
    pub fn payload(&self, id: FuncId) -> Option<&Arc<Vec<u8>>> {
        self.map.get(&id).map(|e| &e.payload)
    }

    /// The name function `id` was registered with ("" if unknown).
    pub fn name(&self, id: FuncId) -> &str {
        self.map.get(&id).map_or("", |e| &e.name)
    }

    /// A job starts using `id`. False if there is no such function.
    pub fn add_user(&mut self, id: FuncId) -> bool {
        match self.map.get_mut(&id) {
            Some(e) => {
                e.users += 1;
                true
            }
            None => false,
        }
    }

    /// A job stopped using `id`. True if that dropped the function.
    pub fn drop_user(&mut self, id: FuncId) -> bool {
        let Some(e) = self.map.get_mut(&id) else {
            return false;
        };
        e.users -= 1;
        if e.users == 0 {
            self.map.remove(&id);
            return true;
        }
        false
    }

    /// The caller lets go of `id`. True if that dropped the function.
    pub fn unhold(&mut self, id: FuncId) -> bool {
        match self.map.get_mut(&id) {
            Some(e) if e.held => {
                e.held = false;
                self.drop_user(id)
            }
            _ => false,
        }
    }

    /// A chunk of `items` items of function `id` ran in `ns` nanoseconds.
    pub fn record(&mut self, id: FuncId, ns: u64, items: u32) {
        if let Some(e) = self.map.get_mut(&id) {
            let ns = ns / u64::from(items.max(1));
            e.per_item_ns = Some(e.per_item_ns.map_or(ns, |prev| (prev * 3 + ns) / 4));
        }
    }

    /// Smoothed run time per item of function `id`, once measured. It is
    /// the function's, not the worker's: one function's short items say
    /// nothing about the next function's.
    pub fn per_item_ns(&self, id: FuncId) -> Option<u64> {
        self.map.get(&id).and_then(|e| e.per_item_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_lives_while_held_or_used() {
        let mut f = Funcs::default();
        let id = f.register(b"f".to_vec(), "f");
        assert!(f.add_user(id));
        assert!(!f.unhold(id), "a job still uses it");
        assert!(f.payload(id).is_some());
        assert!(f.drop_user(id), "last user gone");
        assert!(f.payload(id).is_none());
        assert!(!f.add_user(id));
    }

    #[test]
    fn unhold_twice_is_harmless() {
        let mut f = Funcs::default();
        let id = f.register(vec![], "f");
        assert!(f.unhold(id));
        assert!(!f.unhold(id));
        assert!(f.payload(id).is_none());
    }
}
