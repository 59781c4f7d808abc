//! What the engine's integration tests share: an engine of test workers,
//! and reading its outcomes.

// Each test file uses its own subset.
#![allow(dead_code)]

use shoal_core::{Engine, EngineConfig, Outcome, SpawnLauncher, Want};
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_shoal-test-worker");

/// An engine of `workers` test workers.
pub fn engine(workers: usize) -> Engine {
    engine_with(EngineConfig::new(workers, b"ok".to_vec()))
}

/// An engine of test workers, set up as `config` says.
pub fn engine_with(config: EngineConfig) -> Engine {
    Engine::start(config, Box::new(SpawnLauncher::new(WORKER, vec![]))).expect("engine starts")
}

/// Wait for a finished job and take every outcome.
pub fn collect(e: &Engine, job: u32) -> Vec<Outcome> {
    assert!(
        e.wait(job, Want::Finished, Duration::from_secs(20)).unwrap(),
        "job did not finish"
    );
    e.take(job, usize::MAX).unwrap()
}

/// An outcome's payload as text.
pub fn text(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.payload).into_owned()
}

/// Wait up to 10 s for `cond`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
