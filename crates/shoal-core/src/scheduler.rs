//! Dynamic scheduling: which worker gets the next chunk, and how many chunks
//! a worker may hold at once.
//!
//! There is no per-worker pre-assignment. Chunks wait in one queue and go to
//! the worker holding the fewest. A worker holds more than the chunk it is
//! running only when chunks are short: one queued behind a long chunk would
//! wait for it while another worker idles (head-of-line blocking), but a
//! worker with nothing queued behind a 5 µs chunk would idle for a whole
//! round trip.

use crate::engine::State;
use crate::frame::Kind;
use crate::worker::{Life, Worker};
use std::time::Duration;

/// Work a worker should have queued ahead of it, in time.
const TARGET_QUEUED: Duration = Duration::from_micros(500);
/// Most chunks a worker may hold.
pub const MAX_DEPTH: usize = 512;
/// Most payload bytes a worker may hold beyond the chunk it is running.
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// How many chunks a worker whose chunks take `ewma_ns` may hold.
/// Unknown duration: one, so a first long chunk cannot block another.
pub fn depth_for(ewma_ns: Option<u64>) -> usize {
    match ewma_ns {
        None => 1,
        Some(ns) => {
            let ns = ns.max(1);
            let d = (TARGET_QUEUED.as_nanos() as u64 / ns) as usize + 1;
            d.clamp(1, MAX_DEPTH)
        }
    }
}

fn can_take(w: &Worker, max_tasks: Option<u64>, next_is_suspect: bool) -> bool {
    if w.life != Life::Ready {
        return false;
    }
    if let Some(m) = max_tasks {
        if w.assigned >= m {
            return false;
        }
    }
    let held = w.outstanding.len();
    if held == 0 {
        return true;
    }
    // A suspect runs alone, and nothing joins a worker running one.
    let holds_suspect = w.outstanding.front().is_some_and(|t| t.suspect);
    !next_is_suspect && !holds_suspect && held < depth_for(w.ewma_ns) && w.held_bytes() < MAX_QUEUED_BYTES
}

impl State {
    /// Whether a worker could take the chunk at the head of the queue now.
    /// When none can, new chunks wait for the next result, which wakes the
    /// I/O thread anyway: waking it for each submission would cost a system
    /// call and a context switch per `apply_async`.
    pub(crate) fn could_dispatch(&self) -> bool {
        let Some(head) = self.queue.front() else {
            return false;
        };
        let max_tasks = self.config.max_tasks_per_worker;
        self.workers.iter().any(|w| can_take(w, max_tasks, head.suspect))
    }

    /// Hand queued chunks to workers, each to the worker holding the fewest.
    pub(crate) fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            let max_tasks = self.config.max_tasks_per_worker;
            let next_is_suspect = self.queue.front().is_some_and(|t| t.suspect);
            let pick = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| can_take(w, max_tasks, next_is_suspect))
                .min_by_key(|(_, w)| w.outstanding.len())
                .map(|(i, _)| i);
            let Some(slot) = pick else { break };
            let task = self.queue.pop_front().expect("queue checked non-empty");
            let Some(job) = self.jobs.get(&task.job) else {
                continue;
            };
            // A released job still runs: the caller dropped its result object,
            // not its work (fire-and-forget `apply_async`).
            let (fid, flags) = (job.func, job.task_flags);
            let w = &mut self.workers[slot];
            if !w.funcs.contains(&fid) {
                w.funcs.insert(fid);
                let func = self.funcs.payload(fid).expect("a job's function outlives the job");
                w.send(Kind::Func, 0, fid, 0, 0, func);
            }
            let flags = if task.suspect {
                flags | crate::frame::flags::ISOLATE
            } else {
                flags
            };
            w.send(Kind::Task, flags, task.job, task.index, u64::from(fid), &task.payload);
            w.assigned += 1;
            w.hold(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_chunk_duration() {
        assert_eq!(depth_for(None), 1);
        assert_eq!(depth_for(Some(100)), MAX_DEPTH);
        assert_eq!(depth_for(Some(1_000)), 501);
        assert_eq!(depth_for(Some(100_000)), 6);
        assert_eq!(depth_for(Some(2_000_000)), 1);
        assert_eq!(depth_for(Some(0)), MAX_DEPTH);
    }
}
