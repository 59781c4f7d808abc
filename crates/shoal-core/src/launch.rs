//! How worker processes come to exist.
//!
//! The engine never forks itself: it has threads, and a fork of a threaded
//! process can inherit locks held by threads that do not exist in the child.
//! Two launchers avoid that:
//!
//! * [`SpawnLauncher`] starts a fresh program with `posix_spawn` (through
//!   `std::process::Command` without `pre_exec`). The worker's end of its
//!   channel becomes the child's standard input.
//! * [`ZygoteLauncher`] asks a zygote to fork. The zygote is a single-threaded
//!   process (a fresh interpreter for "forkserver", or a fork of the Python
//!   parent taken before the engine's threads start for "fork"); it receives
//!   the channel over a Unix socket (`SCM_RIGHTS`), forks, reports the child's
//!   pid, and later reports its exit status, since only it can reap it.

use crate::sys;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// The status could not be learned (the zygote that reaps it is gone).
    Unknown,
}

impl Exit {
    /// Decode a raw `wait` status.
    pub fn from_wait_status(status: i32) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Unknown
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {} ({})", s, sys::signal_name(*s)),
            Exit::Unknown => write!(f, "an unknown exit status"),
        }
    }
}

/// A started worker process.
pub struct Launched {
    /// Its process id.
    pub pid: i32,
    /// Readable once the process has exited.
    pub pidfd: OwnedFd,
    /// The std handle, for processes this engine is the parent of.
    pub child: Option<Child>,
}

/// Starts worker processes and learns how they ended.
pub trait Launcher: Send {
    /// Start worker `worker_id` whose end of the channel is `channel`.
    fn launch(&mut self, worker_id: u32, channel: OwnedFd) -> io::Result<Launched>;

    /// How `w` ended, once its pidfd is readable. `None`: not known yet
    /// (a zygote's report is still on its way); call again after
    /// [`Launcher::poll_fd`] is readable.
    fn exit_status(&mut self, w: &mut Launched) -> Option<Exit>;

    /// A descriptor the engine should poll for this launcher, if any.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    /// Called when [`Launcher::poll_fd`] is readable.
    fn on_readable(&mut self) {}

    /// Ask the launcher to stop (the zygote exits once its channel closes).
    fn shutdown(&mut self) {}
}

/// Starts each worker as a fresh process running `program args...`.
pub struct SpawnLauncher {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl SpawnLauncher {
    /// A launcher for `program` with `args`. The engine adds
    /// `SHOAL_WORKER_ID` and `SHOAL_PARENT_PID` to the environment.
    pub fn new(program: impl Into<String>, args: Vec<String>) -> Self {
        SpawnLauncher {
            program: program.into(),
            args,
            env: Vec::new(),
        }
    }

    /// Add an environment variable for every worker.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl Launcher for SpawnLauncher {
    fn launch(&mut self, worker_id: u32, channel: OwnedFd) -> io::Result<Launched> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::from(channel))
            .env("SHOAL_WORKER_ID", worker_id.to_string())
            .env("SHOAL_PARENT_PID", sys::getpid().to_string());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let pidfd = sys::pidfd_open(pid)?;
        Ok(Launched {
            pid,
            pidfd,
            child: Some(child),
        })
    }

    fn exit_status(&mut self, w: &mut Launched) -> Option<Exit> {
        let child = w.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => Some(match (st.code(), st.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                _ => Exit::Unknown,
            }),
            Ok(None) => None,
            Err(_) => Some(Exit::Unknown),
        }
    }
}

/// Record tags in the zygote's replies.
const ZYGOTE_FORKED: u32 = 1;
const ZYGOTE_EXITED: u32 = 2;
/// Size of one reply record: tag, pid, value (all u32/i32, little-endian).
const ZYGOTE_RECORD: usize = 12;

/// Starts workers by asking a zygote process to fork.
///
/// Protocol, over a Unix stream socket: the engine sends 4 bytes (the worker
/// id, little-endian) with the worker's channel attached as `SCM_RIGHTS`.
/// The zygote answers with 12-byte records `(tag, pid, value)`: tag 1 =
/// forked worker `value` as `pid`; tag 2 = `pid` exited with raw wait status
/// `value`. `python/shoal/_zygote.py` is the other side.
pub struct ZygoteLauncher {
    ctrl: OwnedFd,
    zygote_pid: i32,
    buf: Vec<u8>,
    exits: HashMap<i32, Exit>,
    gone: bool,
}

impl ZygoteLauncher {
    /// A launcher talking to the zygote `zygote_pid` over `ctrl`.
    pub fn new(ctrl: OwnedFd, zygote_pid: i32) -> Self {
        ZygoteLauncher {
            ctrl,
            zygote_pid,
            buf: Vec::new(),
            exits: HashMap::new(),
            gone: false,
        }
    }

    /// The zygote's pid.
    pub fn zygote_pid(&self) -> i32 {
        self.zygote_pid
    }

    /// Read what the zygote sent; returns the records (tag, pid, value).
    fn read_records(&mut self, block_for: Option<Duration>) -> io::Result<Vec<(u32, i32, i32)>> {
        let fd = self.ctrl.as_raw_fd();
        let mut pfd = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        if sys::poll(&mut pfd, block_for.or(Some(Duration::ZERO)))? == 0 {
            return Ok(Vec::new());
        }
        let mut tmp = [0u8; 4096];
        // SAFETY: reading into a live stack buffer of the given size.
        let n = unsafe { libc::recv(fd, tmp.as_mut_ptr().cast(), tmp.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        if n == 0 {
            self.gone = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the zygote process has exited",
            ));
        }
        self.buf.extend_from_slice(&tmp[..n as usize]);
        let mut out = Vec::new();
        let whole = self.buf.len() / ZYGOTE_RECORD * ZYGOTE_RECORD;
        for rec in self.buf[..whole].chunks_exact(ZYGOTE_RECORD) {
            let word = |i: usize| [rec[i], rec[i + 1], rec[i + 2], rec[i + 3]];
            out.push((
                u32::from_le_bytes(word(0)),
                i32::from_le_bytes(word(4)),
                i32::from_le_bytes(word(8)),
            ));
        }
        self.buf.drain(..whole);
        for &(tag, pid, value) in &out {
            if tag == ZYGOTE_EXITED {
                self.exits.insert(pid, Exit::from_wait_status(value));
            }
        }
        Ok(out)
    }
}

impl Launcher for ZygoteLauncher {
    fn launch(&mut self, worker_id: u32, channel: OwnedFd) -> io::Result<Launched> {
        if self.gone {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the zygote process has exited",
            ));
        }
        sys::send_with_fd(self.ctrl.as_raw_fd(), &worker_id.to_le_bytes(), channel.as_raw_fd())?;
        drop(channel);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the zygote did not answer within 30 s",
                ));
            }
            for (tag, pid, value) in self.read_records(Some(left.min(Duration::from_millis(100))))? {
                if tag == ZYGOTE_FORKED && value as u32 == worker_id {
                    let pidfd = match sys::pidfd_open(pid) {
                        Ok(fd) => fd,
                        // Already gone and reaped: its exit report is on its
                        // way, so hand out a descriptor that is readable now.
                        Err(_) => sys::ready_fd()?,
                    };
                    return Ok(Launched {
                        pid,
                        pidfd,
                        child: None,
                    });
                }
            }
        }
    }

    fn exit_status(&mut self, w: &mut Launched) -> Option<Exit> {
        if let Some(e) = self.exits.remove(&w.pid) {
            return Some(e);
        }
        let _ = self.read_records(None);
        if let Some(e) = self.exits.remove(&w.pid) {
            return Some(e);
        }
        if self.gone {
            return Some(Exit::Unknown);
        }
        None
    }

    fn poll_fd(&self) -> Option<RawFd> {
        if self.gone {
            None
        } else {
            Some(self.ctrl.as_raw_fd())
        }
    }

    fn on_readable(&mut self) {
        let _ = self.read_records(None);
    }

    fn shutdown(&mut self) {
        // SAFETY: shutting down our own socket makes the zygote see EOF.
        unsafe { libc::shutdown(self.ctrl.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl Drop for ZygoteLauncher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_named() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "signal 9 (SIGKILL)");
        assert_eq!(Exit::from_wait_status(3 << 8), Exit::Code(3));
        assert_eq!(Exit::from_wait_status(libc::SIGSEGV), Exit::Signal(libc::SIGSEGV));
    }
}
