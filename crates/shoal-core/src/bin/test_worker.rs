//! A worker that speaks shoal's protocol with no Python, for the engine's
//! own tests. Its standard input is the channel. Each task payload is a
//! command:
//!
//! - `echo:TEXT`: the result is `TEXT`;
//! - `sleep:MS:TEXT`: sleep MS milliseconds, then echo `TEXT`;
//! - `exit:CODE`: exit at once with CODE;
//! - `kill`: SIGKILL itself;
//! - `pid`: the result is this process's pid;
//! - `slot`: the result is the worker slot its `Init` named;
//! - `raise:N:TEXT`: report `TEXT` with status `ItemErrors`, N items failed;
//! - `quick:TEXT`: echo `TEXT`, but hold the result back until the end of the
//!   batch of frames read together, as the Python worker batches results
//!   (unless the task carries the `ISOLATE` bit).
//!
//! An init payload of `fail` reports `InitFailed` and exits with code 1;
//! `slowinit:MS` sleeps MS milliseconds before `Ready`. On `Exit` it sends
//! `ExitResult` with `bye:SLOT:PID` and exits; with an init payload of
//! `slowexit:MS`, it first sleeps MS milliseconds (a stuck exit hook).

use shoal_core::frame::{self, task, FrameReader, Header, Kind};
use shoal_core::Status;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

fn main() {
    // SAFETY: fd 0 is the channel the engine handed us; we own it from here.
    let mut out = unsafe { std::fs::File::from_raw_fd(0) };
    let mut reader = FrameReader::new();
    let pid = std::process::id();
    let mut slot = u32::MAX;
    let mut exit_sleep = Duration::ZERO;
    loop {
        match reader.read_from(0, 1 << 16) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let mut reply = Vec::new();
        while let Some((h, payload)) = reader.next_frame().expect("valid frames") {
            match h.kind {
                Kind::Init => {
                    slot = h.slot();
                    let t0 = Instant::now();
                    if payload == b"fail" {
                        frame::encode(&mut reply, Header::init_failed(0), b"init failed on purpose").unwrap();
                        out.write_all(&reply).unwrap();
                        std::process::exit(1);
                    }
                    if let Some(ms) = payload.strip_prefix(b"slowexit:") {
                        exit_sleep = Duration::from_millis(String::from_utf8_lossy(ms).parse().unwrap());
                    }
                    if let Some(ms) = payload.strip_prefix(b"slowinit:") {
                        // The initializer proper starts now (the init timeout counts from here).
                        frame::encode(&mut reply, Header::init_started(), b"").unwrap();
                        out.write_all(&reply).unwrap();
                        reply.clear();
                        let ms: u64 = String::from_utf8_lossy(ms).parse().unwrap();
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    let init_ns = t0.elapsed().as_nanos() as u64;
                    frame::encode(&mut reply, Header::ready(init_ns), b"").unwrap();
                }
                Kind::Task => {
                    let t0 = Instant::now();
                    let cmd = String::from_utf8_lossy(&payload).into_owned();
                    let isolate = h.task_bits() & task::ISOLATE != 0;
                    let result = |status: Status, failed: u32, len: usize| {
                        let ns = t0.elapsed().as_nanos() as u64;
                        Header::result(h.job(), h.index(), status, failed, ns, len)
                    };
                    if let Some(text) = cmd.strip_prefix("quick:") {
                        frame::encode(&mut reply, result(Status::Ok, 0, 0), text.as_bytes()).unwrap();
                        if isolate {
                            out.write_all(&reply).unwrap();
                            reply.clear();
                        }
                        continue;
                    }
                    let (status, failed, body): (Status, u32, Vec<u8>) = if let Some(text) = cmd.strip_prefix("echo:") {
                        (Status::Ok, 0, text.as_bytes().to_vec())
                    } else if let Some(rest) = cmd.strip_prefix("sleep:") {
                        let (ms, text) = rest.split_once(':').unwrap_or((rest, ""));
                        std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
                        (Status::Ok, 0, text.as_bytes().to_vec())
                    } else if let Some(rest) = cmd.strip_prefix("raise:") {
                        let (n, text) = rest.split_once(':').unwrap_or((rest, ""));
                        (Status::ItemErrors, n.parse().unwrap(), text.as_bytes().to_vec())
                    } else if let Some(code) = cmd.strip_prefix("exit:") {
                        // A sudden death: results held back are lost with it.
                        std::process::exit(code.parse().unwrap());
                    } else if cmd == "kill" {
                        // SAFETY: signalling ourselves.
                        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                        unreachable!();
                    } else if cmd == "pid" {
                        (Status::Ok, 0, pid.to_string().into_bytes())
                    } else if cmd == "slot" {
                        (Status::Ok, 0, slot.to_string().into_bytes())
                    } else {
                        panic!("unknown command {cmd:?}");
                    };
                    frame::encode(&mut reply, result(status, failed, 0), &body).unwrap();
                    // Send each result as it is made so timing tests see it.
                    out.write_all(&reply).unwrap();
                    reply.clear();
                }
                Kind::Exit => {
                    std::thread::sleep(exit_sleep);
                    let bye = format!("bye:{slot}:{pid}");
                    frame::encode(&mut reply, Header::exit_result(0), bye.as_bytes()).unwrap();
                    out.write_all(&reply).unwrap();
                    return;
                }
                Kind::Func | Kind::Forget => {}
                _ => panic!("unexpected frame {h:?}"),
            }
        }
        out.write_all(&reply).unwrap();
    }
}
