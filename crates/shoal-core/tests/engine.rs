//! The engine driven end to end with the protocol-speaking test worker.

use shoal_core::{Engine, EngineConfig, EngineError, JobSpec, Order, Phase, SpawnLauncher, Status, Want};
use std::time::{Duration, Instant};

mod common;
use common::{collect, engine, engine_with, text};

fn chunks(cmds: impl IntoIterator<Item = String>) -> Vec<Vec<u8>> {
    cmds.into_iter().map(String::into_bytes).collect()
}

#[test]
fn ordered_results_come_back_in_order() {
    let e = engine(2);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks((0..200).map(|i| format!("echo:{i}")))).unwrap();
    e.finish_input(job).unwrap();
    let out = collect(&e, job);
    let got: Vec<String> = out.iter().map(text).collect();
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    assert!(out.iter().all(|o| o.status == Status::Ok));
}

#[test]
fn a_slow_chunk_does_not_block_the_ones_behind_it() {
    let e = engine(2);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0).order(Order::Unordered))
        .unwrap();
    let mut cmds = vec!["sleep:1500:slow".to_string()];
    cmds.extend((0..6).map(|i| format!("sleep:20:{i}")));
    e.submit(job, chunks(cmds)).unwrap();
    e.finish_input(job).unwrap();
    // The six short chunks all finish on the other worker before the slow one.
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.len() < 6 {
        assert!(Instant::now() < deadline);
        e.wait(job, Want::Progress, Duration::from_millis(100)).unwrap();
        first.extend(e.take(job, usize::MAX).unwrap().iter().map(text));
    }
    assert!(!first.contains(&"slow".to_string()), "slow chunk came first: {first:?}");
    assert!(e.wait(job, Want::Finished, Duration::from_secs(10)).unwrap());
}

#[test]
fn a_lazy_job_is_held_to_its_window() {
    let e = engine(2);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0).window(Some(4)))
        .unwrap();
    assert_eq!(e.room(job).unwrap(), 4);
    e.submit(job, chunks((0..4).map(|i| format!("echo:{i}")))).unwrap();
    assert_eq!(e.room(job).unwrap(), 0);
    // Finished outcomes still occupy the window until taken.
    assert!(e.wait(job, Want::Progress, Duration::from_secs(10)).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(e.room(job).unwrap(), 0);
    let taken = e.take(job, 2).unwrap();
    assert_eq!(taken.iter().map(text).collect::<Vec<_>>(), vec!["0", "1"]);
    assert_eq!(e.room(job).unwrap(), 2);
}

#[test]
fn a_reader_waits_for_outcomes_and_a_feeder_for_room_each_alone() {
    let e = engine(2);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0).window(Some(2)))
        .unwrap();
    // Room but nothing to take: a reader (Ready) waits, a feeder (Room) does not.
    assert!(!e.wait(job, Want::Ready, Duration::from_millis(50)).unwrap());
    assert!(e.wait(job, Want::Room(1), Duration::ZERO).unwrap());
    e.submit(job, chunks((0..2).map(|i| format!("echo:{i}")))).unwrap();
    assert!(e.wait(job, Want::Ready, Duration::from_secs(10)).unwrap());
    // Outcomes to take but the window full: the feeder waits until as many
    // as it asks room for are taken.
    assert!(!e.wait(job, Want::Room(1), Duration::from_millis(50)).unwrap());
    assert_eq!(e.take(job, 1).unwrap().len(), 1);
    assert!(!e.wait(job, Want::Room(2), Duration::from_millis(50)).unwrap());
    assert!(e.wait(job, Want::Room(1), Duration::ZERO).unwrap());
    // An ended input fails a feeder's wait, and a late chunk is refused,
    // not a panic.
    e.finish_input(job).unwrap();
    let ended = shoal_core::EngineError::InputComplete(job);
    assert_eq!(e.wait(job, Want::Room(1), Duration::from_secs(10)), Err(ended.clone()));
    assert_eq!(e.submit(job, chunks(["echo:2".to_string()])), Err(ended));
    assert!(e.wait(job, Want::Finished, Duration::from_secs(10)).unwrap());
    assert_eq!(e.take(job, usize::MAX).unwrap().len(), 1);
}

#[test]
fn a_killed_worker_fails_only_its_chunk_and_is_replaced() {
    let e = engine(2);
    let before = e.worker_pids();
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    let mut cmds: Vec<String> = (0..10).map(|i| format!("sleep:5:{i}")).collect();
    cmds[4] = "kill".into();
    e.submit(job, chunks(cmds)).unwrap();
    e.finish_input(job).unwrap();
    let t0 = Instant::now();
    assert!(e.wait(job, Want::Finished, Duration::from_secs(10)).unwrap());
    assert!(t0.elapsed() < Duration::from_secs(2));
    let out = e.take(job, usize::MAX).unwrap();
    assert_eq!(out.len(), 10);
    for (i, o) in out.iter().enumerate() {
        if i == 4 {
            assert_eq!(o.status, Status::WorkerLost);
            let msg = text(o);
            assert!(msg.contains("signal 9 (SIGKILL)"), "{msg}");
            assert!(msg.contains("running f on input item 4 died"), "{msg}");
            // The first line the binding parses: pid, how it ended, the task
            // bits and the lengths of the message and the function's name;
            // the chunk's input closes the payload.
            let head = msg.lines().next().unwrap();
            let pid = head.split(' ').next().unwrap();
            assert!(head.starts_with(&format!("{pid} signal 9 0 ")), "{msg}");
            assert!(msg.ends_with("died with signal 9 (SIGKILL)fkill"), "{msg}");
        } else {
            assert_eq!(o.status, Status::Ok, "chunk {i}: {}", text(o));
            assert_eq!(text(o), i.to_string());
        }
    }
    // The pool is back to two workers, one of them new.
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.worker_pids().len() < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(e.worker_pids(), before);
}

#[test]
fn an_exit_code_is_reported() {
    let e = engine(1);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks(["exit:7".to_string(), "echo:after".to_string()]))
        .unwrap();
    e.finish_input(job).unwrap();
    assert!(e.wait(job, Want::Finished, Duration::from_secs(10)).unwrap());
    let out = e.take(job, usize::MAX).unwrap();
    assert!(text(&out[0]).contains("exit code 7"), "{}", text(&out[0]));
    assert_eq!(text(&out[1]), "after");
}

#[test]
fn workers_retire_after_their_lifespan() {
    let mut config = EngineConfig::new(1, b"ok".to_vec());
    config.lifespan.chunks = Some(2);
    let e = engine_with(config);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks((0..6).map(|_| "pid".to_string()))).unwrap();
    e.finish_input(job).unwrap();
    assert!(e.wait(job, Want::Finished, Duration::from_secs(20)).unwrap());
    let pids: Vec<String> = e.take(job, usize::MAX).unwrap().iter().map(text).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[2], pids[3]);
    assert_ne!(pids[1], pids[2]);
    assert_ne!(pids[3], pids[4]);
}

#[test]
fn close_finishes_queued_work_then_stops() {
    let e = engine(2);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks((0..20).map(|i| format!("sleep:10:{i}")))).unwrap();
    e.finish_input(job).unwrap();
    e.close();
    assert!(e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .is_err());
    assert!(e.wait_stopped(Duration::from_secs(20)));
    e.join();
    assert_eq!(e.phase(), Phase::Stopped);
    let out = e.take(job, usize::MAX).unwrap();
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|o| o.status == Status::Ok));
}

#[test]
fn terminate_cancels_everything_promptly() {
    let e = engine(2);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks((0..1000).map(|_| "sleep:60000:x".to_string())))
        .unwrap();
    e.finish_input(job).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    e.terminate();
    assert!(e.wait_stopped(Duration::from_secs(5)));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(e.finished(job).unwrap());
    let out = e.take(job, usize::MAX).unwrap();
    assert_eq!(out.len(), 1000);
    assert!(out.iter().all(|o| o.status == Status::Cancelled));
}

#[test]
fn a_failing_initializer_fails_tasks_instead_of_hanging() {
    let e = engine_with(EngineConfig::new(2, b"fail".to_vec()));
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks(["echo:x".to_string()])).unwrap();
    e.finish_input(job).unwrap();
    assert!(e.wait(job, Want::Finished, Duration::from_secs(20)).unwrap());
    let out = e.take(job, usize::MAX).unwrap();
    assert_eq!(out[0].status, Status::ChunkFailed);
    assert_eq!(text(&out[0]), "init failed on purpose");
}

#[test]
fn a_missing_program_is_a_start_error() {
    let r = Engine::start(
        EngineConfig::new(1, vec![]),
        Box::new(SpawnLauncher::new("/nonexistent/shoal-worker", vec![])),
    );
    let err = r.err().expect("start fails").to_string();
    assert!(err.contains("could not start worker processes"), "{err}");
}

#[test]
fn an_abandoned_job_still_runs_its_chunks() {
    let e = engine(1);
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(job, chunks((0..5).map(|i| format!("sleep:10:{i}")))).unwrap();
    e.finish_input(job).unwrap();
    e.abandon(job);
    let probe = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(probe, chunks(["echo:after".to_string()])).unwrap();
    e.finish_input(probe).unwrap();
    // The probe queued behind the abandoned job's five chunks, so it can only
    // finish after they ran.
    let t0 = Instant::now();
    assert!(e.wait(probe, Want::Finished, Duration::from_secs(10)).unwrap());
    assert!(
        t0.elapsed() >= Duration::from_millis(45),
        "abandoned chunks were skipped"
    );
    assert!(e.finished(job).unwrap());
}

#[test]
fn a_crash_among_batched_results_fails_only_the_crashing_chunk() {
    let e = engine(1);
    // Short chunks teach the scheduler to queue many on the worker.
    let warm = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    e.submit(warm, chunks((0..50).map(|i| format!("echo:{i}")))).unwrap();
    e.finish_input(warm).unwrap();
    assert!(e.wait(warm, Want::Finished, Duration::from_secs(10)).unwrap());
    // The worker holds back a and b, then dies: which chunk killed it is
    // unknown until each suspect has run alone.
    let job = e
        .new_job(JobSpec::new(e.register_func(b"f".to_vec(), "f").unwrap(), 0))
        .unwrap();
    let cmds = ["quick:a", "quick:b", "kill", "quick:c", "echo:d"].map(String::from);
    e.submit(job, chunks(cmds)).unwrap();
    e.finish_input(job).unwrap();
    assert!(e.wait(job, Want::Finished, Duration::from_secs(10)).unwrap());
    let out = e.take(job, usize::MAX).unwrap();
    let got: Vec<(Status, String)> = out.iter().map(|o| (o.status, text(o))).collect();
    assert_eq!(got[0], (Status::Ok, "a".into()));
    assert_eq!(got[1], (Status::Ok, "b".into()));
    assert_eq!(got[2].0, Status::WorkerLost, "{got:?}");
    assert!(got[2].1.contains("f on input item 2"), "{got:?}");
    assert_eq!(got[3], (Status::Ok, "c".into()));
    assert_eq!(got[4], (Status::Ok, "d".into()));
}

#[test]
fn apply_runs_one_chunk_and_functions_are_shared() {
    let e = engine(2);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let jobs: Vec<u32> = (0..20)
        .map(|i| e.apply(f, 0, format!("echo:{i}").into_bytes()).unwrap())
        .collect();
    e.release_func(f); // the jobs keep it alive
    for (i, job) in jobs.into_iter().enumerate() {
        assert!(e.wait(job, Want::Finished, Duration::from_secs(10)).unwrap());
        let out = e.take(job, 10).unwrap();
        assert_eq!(text(&out[0]), i.to_string());
        e.abandon(job);
    }
    // Every job is gone, and with them the function.
    assert!(e.new_job(JobSpec::new(f, 0)).is_err());
}

#[test]
fn collect_takes_a_finished_job_whole_and_forgets_it() {
    let e = engine(1);
    let func = e.register_func(b"f".to_vec(), "f").unwrap();
    let slow = e.apply(func, 0, b"sleep:300:slow".to_vec()).unwrap();
    let quick = e.apply(func, 0, b"echo:quick".to_vec()).unwrap();
    // Not finished: nothing is taken and the job stays.
    assert!(e.collect(quick).is_none());
    assert!(e.wait(quick, Want::Finished, Duration::from_secs(20)).unwrap());
    let out = e.collect(quick).expect("finished");
    assert_eq!(out.iter().map(text).collect::<Vec<_>>(), ["quick"]);
    // Collected means forgotten: the job is gone.
    assert!(e.collect(quick).unwrap().is_empty());
    assert!(e.wait(slow, Want::Finished, Duration::from_secs(20)).unwrap());
    assert_eq!(e.collect(slow).unwrap().iter().map(text).collect::<Vec<_>>(), ["slow"]);
}

#[test]
fn apply_calls_wait_outside_the_lock_and_are_never_lost() {
    let e = std::sync::Arc::new(engine(2));
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Calls from several threads at once, while the I/O thread handles
    // results: every one runs, and each job gets its own chunk's outcome.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| {
                        (
                            e.apply(f, 0, format!("echo:{t}-{i}").into_bytes()).unwrap(),
                            format!("{t}-{i}"),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (job, want) in t.join().unwrap() {
            assert_eq!(collect(&e, job).iter().map(text).collect::<Vec<_>>(), [want]);
        }
    }
    // A function nobody registered: the call still gets a job, whose
    // outcome says what went wrong, instead of a hang.
    let bad = e.apply(9999, 0, b"echo:x".to_vec()).unwrap();
    let out = collect(&e, bad);
    assert_eq!(out[0].status, Status::Cancelled);
    assert!(text(&out[0]).contains("no function with id 9999"), "{}", text(&out[0]));
    // After close, calls are refused, and the queued ones still finish.
    let last = e.apply(f, 0, b"sleep:50:last".to_vec()).unwrap();
    e.close();
    assert!(e.apply(f, 0, b"echo:late".to_vec()).is_err());
    assert_eq!(collect(&e, last).iter().map(text).collect::<Vec<_>>(), ["last"]);
}

#[test]
fn a_payload_a_frame_cannot_carry_is_refused_before_it_is_queued() {
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Zeroed and never touched: the kernel commits none of it.
    let n = shoal_core::frame::MAX_PAYLOAD + 1;
    let big = vec![0u8; n];
    assert_eq!(e.apply(f, 0, big), Err(EngineError::TooLarge(n)));
    let job = e.new_job(JobSpec::new(f, 0)).unwrap();
    let big = vec![0u8; n];
    assert_eq!(
        e.submit(job, vec![b"echo:a".to_vec(), big]),
        Err(EngineError::TooLarge(n))
    );
    assert_eq!(e.register_func(vec![0u8; n], "g"), Err(EngineError::TooLarge(n)));
    // Nothing of the refused submission was queued, and the engine goes on.
    e.submit(job, vec![b"echo:a".to_vec()]).unwrap();
    e.finish_input(job).unwrap();
    let out = collect(&e, job);
    assert_eq!(out.iter().map(text).collect::<Vec<_>>(), ["a"]);
}
