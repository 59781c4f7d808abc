//! What the engine offers the front doors beyond running chunks: worker
//! slots, counters, cancel, deadlines, exit results, lifespans in items.
//! Driven end to end with the protocol-speaking test worker.

use shoal_core::{Engine, EngineConfig, ExitReport, JobSpec, Status};
use std::time::{Duration, Instant};

mod common;
use common::{collect as outcomes, engine, engine_with, text, wait_for};

fn run(e: &Engine, spec: JobSpec, cmds: &[&str]) -> u32 {
    let job = e.new_job(spec).unwrap();
    let payloads = cmds.iter().map(|c| c.as_bytes().to_vec()).collect();
    e.submit(job, payloads).unwrap();
    e.finish_input(job).unwrap();
    job
}

#[test]
fn a_replacement_takes_the_slot_of_the_worker_it_replaces() {
    let e = engine(2);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Both slots answer; then the worker in one of them dies.
    let slots: Vec<String> = outcomes(&e, run(&e, JobSpec::new(f, 0), &["sleep:50:", "slot"]))
        .iter()
        .skip(1)
        .map(text)
        .collect();
    assert!(slots[0] == "0" || slots[0] == "1", "{slots:?}");
    let job = run(&e, JobSpec::new(f, 0), &["kill"]);
    assert_eq!(outcomes(&e, job)[0].status, Status::WorkerLost);
    wait_for("two workers", || e.worker_pids().len() == 2);
    // Every slot still answers with an id in 0..2, and the slot that lost
    // its worker shows one restart.
    let snap = e.stats(None);
    assert_eq!(snap.workers.len(), 2);
    assert_eq!(snap.workers.iter().map(|w| w.slot).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(snap.workers.iter().map(|w| w.restarts).sum::<u64>(), 1);
    let ids: Vec<String> = outcomes(
        &e,
        run(&e, JobSpec::new(f, 0), &["sleep:100:", "sleep:100:", "slot", "slot"]),
    )
    .iter()
    .skip(2)
    .map(text)
    .collect();
    assert!(ids.iter().all(|s| s == "0" || s == "1"), "{ids:?}");
}

#[test]
fn counters_add_up_and_can_be_read_while_work_runs() {
    let e = engine_with(EngineConfig::new(2, b"slowinit:30".to_vec()));
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let mut cmds: Vec<String> = (0..2000).map(|i| format!("echo:{i}")).collect();
    cmds[10] = "raise:1:x".into();
    cmds[20] = "sleep:40:slow".into();
    cmds[30] = "kill".into();
    let job = e.new_job(JobSpec::new(f, 0)).unwrap();
    let items: Vec<u32> = (0..2000).map(|i| if i == 10 { 3 } else { 1 }).collect();
    e.submit_items(job, cmds.into_iter().map(String::into_bytes).collect(), items)
        .unwrap();
    e.finish_input(job).unwrap();
    // Polled while the job runs, the counters only grow.
    let mut last = 0;
    let mut polls = 0;
    while !e.finished(job).unwrap() {
        let snap = e.stats(Some(job));
        let done = snap.job.expect("job known").tally.done.items;
        assert!(done >= last);
        last = done;
        polls += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(polls > 0);
    let snap = e.stats(Some(job));
    let j = snap.job.expect("job known until abandoned");
    assert_eq!(j.submitted.chunks, 2000);
    assert_eq!(j.submitted.items, 2002);
    // 1998 chunks ran fine, one ran with 1 of its 3 items raising, one died.
    assert_eq!(j.tally.done.chunks, 1999);
    assert_eq!(j.tally.done.items, 1998 + 2);
    assert_eq!(j.tally.failed.chunks, 1);
    assert_eq!(j.tally.failed.items, 2);
    // The slowest chunk is the 40 ms one, and it knows where its item is:
    // chunk 20 starts at item 22, after the three-item chunk 10.
    let slowest = j.slowest.as_slice()[0];
    assert_eq!((slowest.chunk, slowest.first_item), (20, 22));
    assert!(slowest.run >= Duration::from_millis(40));
    // Per slot: the same totals, split between the workers.
    let w = &snap.workers;
    let done: u64 = w.iter().map(|s| s.tally.done.chunks).sum();
    assert_eq!(done, 1999);
    assert_eq!(w.iter().map(|s| s.tally.failed.chunks).sum::<u64>(), 1);
    // The kill may first strike among batched results, then again when it
    // runs alone as a suspect: one death or two.
    let restarts: u64 = w.iter().map(|s| s.restarts).sum();
    assert!((1..=2).contains(&restarts), "{restarts}");
    assert!(w.iter().all(|s| s.init >= Duration::from_millis(30)), "{w:?}");
    assert!(w.iter().all(|s| s.start_up >= s.init), "{w:?}");
    assert!(w.iter().map(|s| s.busy).sum::<Duration>() >= Duration::from_millis(40));
    assert!(w
        .iter()
        .any(|s| s.slowest.as_slice()[0].run >= Duration::from_millis(40)));
    // The slot keeps the slowest chunk's input too, for insights to show
    // its arguments.
    let slow = w
        .iter()
        .find(|s| s.slowest.as_slice().first().is_some_and(|x| x.chunk == 20))
        .expect("a slot ran chunk 20");
    let kept = slow.slowest.inputs()[0].as_ref().expect("input kept");
    assert_eq!((kept.task_bits, &kept.payload[..]), (0, &b"sleep:40:slow"[..]));
    // Idle time grows while nothing runs.
    let before: Duration = w.iter().map(|s| s.idle).sum();
    std::thread::sleep(Duration::from_millis(50));
    let after: Duration = e.stats(None).workers.iter().map(|s| s.idle).sum();
    assert!(after >= before + Duration::from_millis(50), "{before:?} -> {after:?}");
}

#[test]
fn cancel_drops_queued_chunks_and_leaves_running_ones() {
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let job = run(&e, JobSpec::new(f, 0), &["sleep:1500:a", "echo:b", "echo:c"]);
    // The worker runs a; b and c wait in the engine's queue (a is long, and
    // the margin is wide for a loaded machine).
    wait_for("a to start", || e.stats(None).workers[0].pid.is_some());
    std::thread::sleep(Duration::from_millis(50));
    e.cancel(job, false).unwrap();
    let out = outcomes(&e, job);
    let got: Vec<(Status, String)> = out.iter().map(|o| (o.status, text(o))).collect();
    assert_eq!(got[0], (Status::Ok, "a".into()));
    assert_eq!(got[1].0, Status::Cancelled);
    assert_eq!(got[2].0, Status::Cancelled);
    // No more chunks may join it.
    assert!(e.submit(job, vec![b"echo:d".to_vec()]).is_err());
    assert_eq!(e.stats(Some(job)).job.unwrap().tally.cancelled.chunks, 2);
}

#[test]
fn cancel_queued_drops_every_queued_chunk_but_those_of_the_jobs_kept() {
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let first = run(&e, JobSpec::new(f, 0), &["sleep:1500:a", "echo:b"]);
    let other = run(&e, JobSpec::new(f, 0), &["echo:c", "echo:d"]);
    let kept = run(&e, JobSpec::new(f, 0), &["echo:e"]);
    wait_for("a to start", || e.stats(None).workers[0].pid.is_some());
    std::thread::sleep(Duration::from_millis(50));
    // a runs on; b, c and d were queued.
    let mut cancelled = e.cancel_queued(&[kept]);
    cancelled.sort_unstable();
    assert_eq!(cancelled, vec![first, other]);
    let got: Vec<(Status, String)> = outcomes(&e, first).iter().map(|o| (o.status, text(o))).collect();
    assert_eq!(got[0], (Status::Ok, "a".into()));
    assert_eq!(got[1].0, Status::Cancelled);
    assert!(outcomes(&e, other).iter().all(|o| o.status == Status::Cancelled));
    let out = outcomes(&e, kept);
    assert_eq!((out[0].status, text(&out[0])), (Status::Ok, "e".into()));
    assert!(e.submit(other, vec![b"echo:f".to_vec()]).is_err());
    assert!(e.cancel_queued(&[]).is_empty());
}

#[test]
fn cancel_with_kill_stops_a_running_chunk_and_replaces_its_worker() {
    let e = engine(2);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let long = run(&e, JobSpec::new(f, 0), &["sleep:60000:never"]);
    let other = run(&e, JobSpec::new(f, 0), &["sleep:300:other"]);
    std::thread::sleep(Duration::from_millis(100));
    let before = e.worker_pids();
    let t0 = Instant::now();
    e.cancel(long, true).unwrap();
    let out = outcomes(&e, long);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(out[0].status, Status::Cancelled);
    // The other job's chunk, on the other worker, is untouched.
    assert_eq!(text(&outcomes(&e, other)[0]), "other");
    wait_for("a replacement", || {
        let now = e.worker_pids();
        now.len() == 2 && now != before
    });
}

#[test]
fn a_chunk_past_its_deadline_is_killed_and_times_out() {
    let e = engine(2);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let spec = JobSpec::new(f, 0).timeout(Some(Duration::from_millis(200)));
    let t0 = Instant::now();
    let job = run(
        &e,
        spec,
        &["sleep:60000:never", "sleep:10:a", "sleep:10:b", "sleep:10:c"],
    );
    let out = outcomes(&e, job);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(out[0].status, Status::TimedOut);
    let msg = text(&out[0]);
    assert!(msg.contains("ran past its timeout of 0.200 s"), "{msg}");
    assert!(msg.contains("signal 9"), "{msg}");
    // The chunks behind it ran on the other worker, not queued behind it.
    for (o, want) in out[1..].iter().zip(["a", "b", "c"]) {
        assert_eq!((o.status, text(o)), (Status::Ok, want.to_string()));
    }
    assert_eq!(e.stats(Some(job)).job.unwrap().tally.failed.chunks, 1);
    wait_for("two workers", || e.worker_pids().len() == 2);
}

#[test]
fn a_deadline_is_never_spent_waiting_in_a_queue() {
    // One worker, twelve 100 ms chunks, each allowed 600 ms: queued behind
    // one another on the worker the later ones would time out; dispatched
    // one at a time, none does.
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Teach the scheduler the function is short, so it would queue deeply.
    outcomes(&e, run(&e, JobSpec::new(f, 0), &["echo:1"; 50]));
    let spec = JobSpec::new(f, 0).timeout(Some(Duration::from_millis(600)));
    let out = outcomes(&e, run(&e, spec, &["sleep:100:x"; 12]));
    assert!(out.iter().all(|o| o.status == Status::Ok), "{out:?}");
}

#[test]
fn exit_results_travel_back_and_lifespans_count_items() {
    let mut config = EngineConfig::new(1, b"ok".to_vec());
    config.lifespan.items = Some(5);
    let e = engine_with(config);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let job = e.new_job(JobSpec::new(f, 0)).unwrap();
    // Chunks of 3 items: a worker is done after its second chunk (6 >= 5).
    let payloads = (0..3).map(|_| b"pid".to_vec()).collect();
    e.submit_items(job, payloads, vec![3; 3]).unwrap();
    e.finish_input(job).unwrap();
    let pids: Vec<String> = outcomes(&e, job).iter().map(text).collect();
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
    // The retired worker's exit hook result came back, naming its slot.
    wait_for("an exit result", || {
        let got = e.take_exit_results();
        if got.is_empty() {
            return false;
        }
        assert_eq!(
            got[0],
            (0, ExitReport::Returned(format!("bye:0:{}", pids[0]).into_bytes()))
        );
        true
    });
    assert_eq!(e.stats(None).workers[0].restarts, 1);
    assert!(e.stats(None).workers[0].exit > Duration::ZERO);
    // Close: the last worker's exit result arrives too.
    e.close();
    assert!(e.wait_stopped(Duration::from_secs(10)));
    let last = e.take_exit_results();
    assert_eq!(last.len(), 1, "{last:?}");
    let ExitReport::Returned(bye) = &last[0].1 else {
        panic!("{last:?}")
    };
    assert!(String::from_utf8_lossy(bye).ends_with(&pids[2]));
}

#[test]
fn a_cancelled_jobs_chunks_are_not_run_again_after_a_crash() {
    let e = engine(1);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Short chunks teach the scheduler to queue several on the worker.
    outcomes(&e, run(&e, JobSpec::new(f, 0), &["echo:1"; 50]));
    let job = run(&e, JobSpec::new(f, 0), &["sleep:1500:a", "kill", "echo:c"]);
    std::thread::sleep(Duration::from_millis(100));
    // All three are on the worker; cancelling without killing leaves them.
    e.cancel(job, false).unwrap();
    let out = outcomes(&e, job);
    let got: Vec<(Status, String)> = out.iter().map(|o| (o.status, text(o))).collect();
    assert_eq!(got[0], (Status::Ok, "a".into()));
    // The crash puts the other two back in doubt; a cancelled job's chunks
    // are not run again.
    assert_eq!(got[1].0, Status::Cancelled, "{got:?}");
    assert_eq!(got[2].0, Status::Cancelled, "{got:?}");
}

#[test]
fn a_replacement_starts_only_once_the_worker_it_replaces_has_exited() {
    let mut config = shoal_core::EngineConfig::new(1, b"ok".to_vec());
    config.lifespan.chunks = Some(1);
    let e = engine_with(config);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let job = run(&e, JobSpec::new(f, 0), &["slot"; 6]);
    let mut most = 0;
    while !e.finished(job).unwrap() {
        most = most.max(e.worker_pids().len());
        std::thread::sleep(Duration::from_millis(1));
    }
    let slots: Vec<String> = outcomes(&e, job).iter().map(text).collect();
    assert_eq!(slots, ["0"; 6]);
    assert!(most <= 1, "{most} workers alive at once in one slot");
}

#[test]
fn a_pinned_job_runs_chunk_i_on_slot_i_mod_n_from_slot_0_each_job() {
    let e = engine(3);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    let cmds = ["slot"; 20];
    for _ in 0..2 {
        // Each job starts again at slot 0, whatever the last one ended on.
        let slots: Vec<String> = outcomes(&e, run(&e, JobSpec::new(f, 0).pinned(true), &cmds[..7]))
            .iter()
            .map(text)
            .collect();
        let want: Vec<String> = (0..7).map(|i| (i % 3).to_string()).collect();
        assert_eq!(slots, want);
    }
    // Pinned chunks wait for their own slot while the others idle, and an
    // unpinned job queued behind them is not held up by them.
    let slow = run(
        &e,
        JobSpec::new(f, 0).pinned(true),
        &["sleep:300:a", "echo:b", "echo:c", "sleep:10:d"],
    );
    let free = run(&e, JobSpec::new(f, 0), &["echo:x"; 4]);
    assert_eq!(outcomes(&e, free).len(), 4);
    let got: Vec<String> = outcomes(&e, slow).iter().map(text).collect();
    assert_eq!(got, ["a", "b", "c", "d"]);
}

#[test]
fn a_pinned_chunk_whose_worker_died_runs_on_that_slots_replacement() {
    let e = engine(2);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Chunk 3 kills the worker in slot 1; chunks 5 and 7 then run on its
    // replacement (a new pid, the same slot); slot 0's worker lives on.
    let cmds = ["pid", "pid", "pid", "kill", "pid", "pid", "pid", "pid"];
    let out = outcomes(&e, run(&e, JobSpec::new(f, 0).pinned(true), &cmds));
    assert_eq!(out[3].status, Status::WorkerLost);
    let pid = |i: usize| text(&out[i]);
    assert!([0, 2, 4, 6].iter().all(|&i| pid(i) == pid(0)), "{out:?}");
    assert_eq!(pid(5), pid(7));
    assert_ne!(pid(1), pid(5));
    assert_ne!(pid(0), pid(5));
    let slots = outcomes(&e, run(&e, JobSpec::new(f, 0).pinned(true), &["slot", "slot"]));
    assert_eq!(slots.iter().map(text).collect::<Vec<_>>(), ["0", "1"]);
}

#[test]
fn an_initializer_past_the_init_timeout_is_killed_and_the_queued_chunks_time_out() {
    let mut config = EngineConfig::new(1, b"slowinit:1500".to_vec());
    config.init_timeout = Some(Duration::from_millis(300));
    let e = engine_with(config);
    let first = e.worker_pids();
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    // Its input is left open, as a lazy map's is while it reads.
    let job_of_the_failed = e.new_job(JobSpec::new(f, 0)).unwrap();
    e.submit(job_of_the_failed, vec![b"echo:a".to_vec(), b"echo:b".to_vec()])
        .unwrap();
    let out = outcomes(&e, job_of_the_failed);
    assert!(out.iter().all(|o| o.status == Status::TimedOut), "{out:?}");
    // Its job failed: it takes no more chunks (none would run on a replacement).
    assert!(e.submit(job_of_the_failed, vec![b"echo:late".to_vec()]).is_err());
    let msg = text(&out[0]);
    assert!(
        msg.contains("the initializer of worker 0 (process ") && msg.contains("ran past its timeout of 0.300 s"),
        "{msg}"
    );
    // A longer limit set on the running engine reaches the worker starting
    // now (the replacement): its initializer finishes and it runs chunks.
    e.set_hook_timeouts(Some(Duration::from_secs(30)), None);
    let out = outcomes(&e, run(&e, JobSpec::new(f, 0), &["pid"]));
    assert_eq!(out[0].status, Status::Ok, "{}", text(&out[0]));
    assert!(!first.iter().any(|p| p.to_string() == text(&out[0])));
}

#[test]
fn an_exit_hook_past_the_exit_timeout_is_killed_and_reported() {
    let mut config = EngineConfig::new(2, b"slowexit:60000".to_vec());
    config.exit_timeout = Some(Duration::from_millis(300));
    let e = engine_with(config);
    let f = e.register_func(b"f".to_vec(), "f").unwrap();
    outcomes(&e, run(&e, JobSpec::new(f, 0), &["echo:a"; 4]));
    let t0 = Instant::now();
    e.close();
    assert!(e.wait_stopped(Duration::from_secs(20)));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let mut got = e.take_exit_results();
    got.sort_by_key(|r| r.0);
    assert_eq!(got.len(), 2, "{got:?}");
    for (slot, report) in got {
        let ExitReport::TimedOut(msg) = report else {
            panic!("{report:?}")
        };
        assert!(
            msg.starts_with(&format!("the exit hook of worker {slot} (process ")),
            "{msg}"
        );
        assert!(
            msg.ends_with("ran past its timeout of 0.300 s; the process was killed"),
            "{msg}"
        );
    }
}
