//! What a caller that must not block learns from the engine without asking
//! in a loop: a re-armable "an outcome is ready" (`watch_ready`), and
//! whether a job's chunk has reached a worker (`dispatched`).

use shoal_core::{JobSpec, Want};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::{engine, text, wait_for};

const LONG: Duration = Duration::from_secs(20);

#[test]
fn a_ready_watch_is_told_once_per_arming_and_when_the_job_finishes() {
    let e = engine(2);
    let (tx, rx) = mpsc::channel();
    e.set_done_listener(tx);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let job = e.new_job(JobSpec::new(f, 0).window(Some(4))).unwrap();
    // Nothing to take: armed.
    assert!(e.watch_ready(job));
    e.submit(job, vec![b"sleep:100:a".to_vec(), b"sleep:100:b".to_vec()])
        .unwrap();
    assert_eq!(rx.recv_timeout(LONG), Ok(job));
    // Told once for the arming, however many outcomes arrive after it.
    assert!(e.wait(job, Want::Ready, LONG).unwrap());
    let mut got = Vec::new();
    while got.len() < 2 {
        // An outcome waits: nothing is armed, the caller takes it.
        if !e.watch_ready(job) {
            got.extend(e.take(job, usize::MAX).unwrap().iter().map(text));
            continue;
        }
        assert_eq!(rx.recv_timeout(LONG), Ok(job));
    }
    assert_eq!(got, ["a", "b"]);
    assert!(rx.try_recv().is_err(), "told without being armed");
    // Armed with nothing in flight: the end of the input finishes the job.
    assert!(e.watch_ready(job));
    e.finish_input(job).unwrap();
    assert_eq!(rx.recv_timeout(LONG), Ok(job));
    assert!(!e.watch_ready(job), "a finished job arms nothing");
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
}

#[test]
fn a_ready_watch_on_a_forgotten_job_arms_nothing() {
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let job = e.apply(f, 0, b"echo:x".to_vec()).unwrap();
    assert!(e.wait(job, Want::Finished, LONG).unwrap());
    assert!(e.collect(job).is_some());
    assert!(!e.watch_ready(job));
}

#[test]
fn a_chunk_is_dispatched_once_a_worker_holds_it() {
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Jobs with a deadline get one chunk a worker at a time, so the second
    // waits in the engine's queue while the first runs.
    let spec = JobSpec::new(f, 0).timeout(Some(LONG));
    let first = e.new_job(spec).unwrap();
    let second = e.new_job(spec).unwrap();
    e.submit(first, vec![b"sleep:400:a".to_vec()]).unwrap();
    e.submit(second, vec![b"echo:b".to_vec()]).unwrap();
    e.finish_input(first).unwrap();
    e.finish_input(second).unwrap();
    wait_for("the first chunk to reach the worker", || e.dispatched(first));
    assert!(!e.dispatched(second), "a queued chunk counted as dispatched");
    assert!(e.wait(second, Want::Finished, LONG).unwrap());
    // Run and finished, outcome not yet taken, then taken and forgotten.
    assert!(e.dispatched(second));
    assert!(e.collect(second).is_some());
    assert!(e.dispatched(second));
}
