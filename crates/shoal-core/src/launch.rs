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
///
/// A launch must not block: the engine calls it with its lock held, and
/// callers wait for that lock holding the GIL. A launcher that needs an
/// answer from elsewhere returns `None` and reports the start later
/// through [`Launcher::started`].
pub trait Launcher: Send {
    /// Start the `serial`-th worker, for `slot`, whose end of the channel
    /// is `channel`. `Some`: it started; `None`: [`Launcher::started`] will
    /// say how it went.
    fn launch(&mut self, serial: u32, slot: u32, channel: OwnedFd) -> io::Result<Option<Launched>>;

    /// Launches that finished since the last call, by serial.
    fn started(&mut self) -> Vec<(u32, io::Result<Launched>)> {
        Vec::new()
    }

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
    /// A launcher for `program` with `args`. Each worker gets its slot as
    /// `SHOAL_WORKER_ID` and the engine's pid as `SHOAL_PARENT_PID`.
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
    fn launch(&mut self, _serial: u32, slot: u32, channel: OwnedFd) -> io::Result<Option<Launched>> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::from(channel))
            .env("SHOAL_WORKER_ID", slot.to_string())
            .env("SHOAL_PARENT_PID", sys::getpid().to_string());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let pidfd = sys::pidfd_open(pid)?;
        Ok(Some(Launched {
            pid,
            pidfd,
            child: Some(child),
        }))
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
/// Protocol, over a Unix stream socket: the engine sends 4 bytes (the
/// worker's serial, little-endian) with the worker's channel attached as
/// `SCM_RIGHTS`. The zygote answers with 12-byte records `(tag, pid,
/// value)`: tag 1 = forked worker `value` as `pid`; tag 2 = `pid` exited
/// with raw wait status `value`. `python/shoal/_zygote.py` is the other side.
/// A request is answered later, through [`Launcher::started`], so a slow
/// fork never holds up the engine (which gives up on an answer that takes
/// too long).
pub struct ZygoteLauncher {
    ctrl: OwnedFd,
    buf: Vec<u8>,
    /// Serials of requests sent and not answered.
    asked: Vec<u32>,
    started: Vec<(u32, io::Result<Launched>)>,
    exits: HashMap<i32, Exit>,
    gone: bool,
}

impl ZygoteLauncher {
    /// A launcher talking to a zygote over `ctrl`.
    pub fn new(ctrl: OwnedFd) -> Self {
        ZygoteLauncher {
            ctrl,
            buf: Vec::new(),
            asked: Vec::new(),
            started: Vec::new(),
            exits: HashMap::new(),
            gone: false,
        }
    }

    /// Read what the zygote sent, without blocking, and sort it into
    /// started workers and exit statuses.
    fn read_records(&mut self) {
        let fd = self.ctrl.as_raw_fd();
        loop {
            let mut tmp = [0u8; 4096];
            // SAFETY: reading into a live stack buffer of the given size.
            let n = unsafe { libc::recv(fd, tmp.as_mut_ptr().cast(), tmp.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.zygote_gone();
                }
                break;
            }
            if n == 0 {
                self.zygote_gone();
                break;
            }
            self.buf.extend_from_slice(&tmp[..n as usize]);
        }
        let whole = self.buf.len() / ZYGOTE_RECORD * ZYGOTE_RECORD;
        let records: Vec<(u32, i32, i32)> = self.buf[..whole]
            .chunks_exact(ZYGOTE_RECORD)
            .map(|rec| {
                let word = |i: usize| [rec[i], rec[i + 1], rec[i + 2], rec[i + 3]];
                (
                    u32::from_le_bytes(word(0)),
                    i32::from_le_bytes(word(4)),
                    i32::from_le_bytes(word(8)),
                )
            })
            .collect();
        self.buf.drain(..whole);
        for (tag, pid, value) in records {
            match tag {
                ZYGOTE_FORKED => {
                    let serial = value as u32;
                    self.asked.retain(|s| *s != serial);
                    let pidfd = match sys::pidfd_open(pid) {
                        Ok(fd) => Ok(fd),
                        // Already gone and reaped: its exit report is on its
                        // way, so hand out a descriptor that is readable now.
                        Err(_) => sys::ready_fd(),
                    };
                    let launched = pidfd.map(|pidfd| Launched {
                        pid,
                        pidfd,
                        child: None,
                    });
                    self.started.push((serial, launched));
                }
                ZYGOTE_EXITED => {
                    self.exits.insert(pid, Exit::from_wait_status(value));
                }
                _ => {}
            }
        }
    }

    fn zygote_gone(&mut self) {
        self.gone = true;
        for serial in self.asked.drain(..) {
            let err = io::Error::new(io::ErrorKind::UnexpectedEof, "the zygote process has exited");
            self.started.push((serial, Err(err)));
        }
    }
}

impl Launcher for ZygoteLauncher {
    fn launch(&mut self, serial: u32, _slot: u32, channel: OwnedFd) -> io::Result<Option<Launched>> {
        if self.gone {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the zygote process has exited",
            ));
        }
        sys::send_with_fd(self.ctrl.as_raw_fd(), &serial.to_le_bytes(), channel.as_raw_fd())?;
        self.asked.push(serial);
        Ok(None)
    }

    fn started(&mut self) -> Vec<(u32, io::Result<Launched>)> {
        std::mem::take(&mut self.started)
    }

    fn exit_status(&mut self, w: &mut Launched) -> Option<Exit> {
        if let Some(e) = self.exits.remove(&w.pid) {
            return Some(e);
        }
        self.read_records();
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
        self.read_records();
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
