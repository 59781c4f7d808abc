//! How worker processes come to exist.
//!
//! The engine never forks itself: it has threads, and a fork of a threaded
//! process can inherit locks held by threads that do not exist in the child.
//! Two launchers avoid that:
//!
//! * [`SpawnLauncher`] starts a fresh program with `posix_spawn` (through
//!   `std::process::Command` without `pre_exec`). The worker's end of its
//!   channel becomes the child's standard input.
//! * [`ThreadLauncher`] starts no process at all: its workers are threads
//!   of this process, started by a callback the binding gives (a thread
//!   that runs the worker loop on its end of the channel). An eventfd the
//!   thread signals as it ends stands in for the pidfd, so the engine's
//!   death detection and reaping work unchanged; [`Launcher::kill`] tells
//!   such a worker to stop, as no signal can.
//! * [`ZygoteLauncher`] asks a zygote to fork. The zygote is a single-threaded
//!   process (a fresh interpreter for "forkserver", or a fork of the Python
//!   parent taken before the engine's threads start for "fork"); it receives
//!   the channel over a Unix socket (`SCM_RIGHTS`), forks, reports the child's
//!   pid, and later reports its exit status, since only it can reap it. It
//!   keeps an heir, a fork of itself, that takes over if it is killed.

use crate::sys;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

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
    /// The engine's end of the worker's channel, when the launcher has it
    /// (a worker forked before the engine, with its own end already):
    /// the engine then uses it instead of the pair it made for the launch.
    pub channel: Option<OwnedFd>,
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

    /// The engine will ask for no more launches (it is closing, with no
    /// work left): a launcher may let go now of what only launches need,
    /// while the workers exit, rather than after. Called once per step.
    fn idle(&mut self) {}

    /// Send `signal` (SIGTERM or SIGKILL) to worker `w`. Every kill the
    /// engine makes goes through here, so a launcher whose workers are not
    /// processes can stop them its own way.
    fn kill(&mut self, w: &Launched, signal: i32) {
        sys::kill(w.pid, signal);
    }
}

/// Ids given to thread workers where a pid goes. Linux pids stay below
/// 2^22 (`pid_max`), so these can never name a process: a signal sent to
/// one by mistake reaches nobody.
const THREAD_IDS: i32 = 1 << 30;

/// How a thread worker ended, shared by the thread and its launcher: the
/// first to say wins, then the eventfd is signalled.
struct ThreadEnd {
    exit: Mutex<Option<Exit>>,
    /// Readable once the worker has ended (or was given up on).
    event: OwnedFd,
}

impl ThreadEnd {
    fn end(&self, exit: Exit) {
        let mut e = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(exit);
            drop(e);
            let one = 1u64.to_ne_bytes();
            // SAFETY: an 8-byte write from a live buffer to our eventfd;
            // adding 1 to a counter this small cannot block or fail.
            unsafe { libc::write(self.event.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// What a [`ThreadLauncher`]'s callback gets for one worker: its slot, its
/// end of the channel, and the handle to report its end with.
pub struct ThreadStart {
    /// The worker's slot, `0..workers`.
    pub slot: u32,
    /// The worker's end of its channel, which it reads frames from and
    /// writes results to.
    pub channel: OwnedFd,
    /// Report the worker's end with [`ThreadExit::exited`]; dropped
    /// unreported (the thread panicked, or never started), it reports exit
    /// code 1.
    pub exit: ThreadExit,
}

/// The thread worker's side of its end: see [`ThreadStart::exit`].
pub struct ThreadExit {
    end: Arc<ThreadEnd>,
}

impl ThreadExit {
    /// The worker has ended with exit code `code` (0: told to exit, or its
    /// channel closed; 1: its initializer failed).
    pub fn exited(self, code: i32) {
        self.end.end(Exit::Code(code));
    }
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        self.end.end(Exit::Code(1));
    }
}

/// What the launcher keeps of a running thread worker.
struct ThreadWorker {
    end: Arc<ThreadEnd>,
    /// A copy of the worker's end of its channel: shutting it down makes
    /// the worker's next read end, so it exits after the task it runs.
    channel: OwnedFd,
}

/// The callback a [`ThreadLauncher`] starts each worker with.
pub type SpawnThread = Box<dyn FnMut(ThreadStart) -> io::Result<()> + Send>;

/// Starts each worker as a thread of this process (`ThreadPool`,
/// `start_method="threading"`), through a callback: the core has no
/// Python, so the binding's callback starts the thread and runs the worker
/// loop in it. A thread cannot be killed: SIGTERM shuts its channel down,
/// so it exits once its task returns; SIGKILL also counts it as ended at
/// once (with that signal), so terminate never waits for a task that does
/// not return. Such a thread runs its task to the end, alone, and its
/// result goes nowhere.
pub struct ThreadLauncher {
    spawn: SpawnThread,
    next: i32,
    workers: HashMap<i32, ThreadWorker>,
}

impl ThreadLauncher {
    /// A launcher that starts each worker with `spawn`, which must not
    /// block (the engine calls it with its lock held).
    pub fn new(spawn: SpawnThread) -> Self {
        ThreadLauncher {
            spawn,
            next: 0,
            workers: HashMap::new(),
        }
    }
}

impl Launcher for ThreadLauncher {
    fn launch(&mut self, _serial: u32, slot: u32, channel: OwnedFd) -> io::Result<Option<Launched>> {
        // SAFETY: plain system call; the result is a fresh descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned here alone.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        let pidfd = event.try_clone()?;
        let stop = channel.try_clone()?;
        let end = Arc::new(ThreadEnd {
            exit: Mutex::new(None),
            event,
        });
        let exit = ThreadExit { end: end.clone() };
        (self.spawn)(ThreadStart { slot, channel, exit })?;
        let pid = THREAD_IDS + self.next;
        self.next = (self.next + 1) % THREAD_IDS;
        self.workers.insert(pid, ThreadWorker { end, channel: stop });
        Ok(Some(Launched {
            pid,
            pidfd,
            child: None,
            channel: None,
        }))
    }

    fn exit_status(&mut self, w: &mut Launched) -> Option<Exit> {
        let Some(t) = self.workers.remove(&w.pid) else {
            return Some(Exit::Unknown);
        };
        let exit = *t.end.exit.lock().unwrap_or_else(|p| p.into_inner());
        Some(exit.unwrap_or(Exit::Unknown))
    }

    fn kill(&mut self, w: &Launched, signal: i32) {
        let Some(t) = self.workers.get(&w.pid) else {
            return;
        };
        // SAFETY: shutting down our copy of the worker's socket; the
        // worker's reads then end and its writes fail.
        unsafe { libc::shutdown(t.channel.as_raw_fd(), libc::SHUT_RDWR) };
        if signal == libc::SIGKILL {
            t.end.end(Exit::Signal(libc::SIGKILL));
        }
    }
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
            channel: None,
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
const ZYGOTE_HEIR: u32 = 3;
/// Size of one reply record: tag, pid, value (all u32/i32, little-endian).
const ZYGOTE_RECORD: usize = 12;

/// Starts workers by asking a zygote process to fork.
///
/// Protocol, over a Unix stream socket: the engine sends 4 bytes (the
/// worker's serial, little-endian) with the worker's channel attached as
/// `SCM_RIGHTS`. The zygote answers with 12-byte records `(tag, pid,
/// value)`: tag 1 = forked worker `value` as `pid`; tag 2 = `pid` exited
/// with raw wait status `value`; tag 3 = it forked `pid` as its heir, whose
/// control socket is attached. `python/shoal/_zygote.py` is the other side.
/// A request is answered later, through [`Launcher::started`], so a slow
/// fork never holds up the engine (which gives up on an answer that takes
/// too long).
///
/// The heir is a standby: a fork of the zygote that forks nothing until it
/// is asked. When the zygote's socket ends (it was killed), the launcher
/// turns to the heir, which then makes an heir of its own. The zygote
/// sends its heir before its first worker, so whenever a worker it forked
/// has started there is a standby, unless it too has been killed. Workers
/// the pool's process forked itself ([`ZygoteLauncher::with_first_workers`])
/// need none: they do not die with the zygote.
pub struct ZygoteLauncher {
    ctrl: OwnedFd,
    /// The heir's control socket: the zygote to turn to next.
    standby: Option<OwnedFd>,
    buf: Vec<u8>,
    /// Descriptors received and not yet matched to their heir record.
    received: VecDeque<OwnedFd>,
    /// Serials of requests sent and not answered.
    asked: Vec<u32>,
    started: Vec<(u32, io::Result<Launched>)>,
    exits: HashMap<i32, Exit>,
    /// Workers the current zygote forked and has not reported as exited.
    forked: HashSet<i32>,
    /// Workers of zygotes that have exited: they die with their zygote
    /// (their parent-death signal) and nobody can report how.
    orphans: HashSet<i32>,
    /// Heirs that have taken over so far.
    successions: u32,
    gone: bool,
    /// Workers the pool's process forked itself before the engine started
    /// (see [`ZygoteLauncher::with_first_workers`]), not taken by a launch
    /// yet: their pid, pidfd and the engine's end of their channel.
    first: VecDeque<(i32, OwnedFd, OwnedFd)>,
    /// Those taken: children of this process, which it reaps itself.
    own: HashSet<i32>,
}

impl ZygoteLauncher {
    /// A launcher talking to a zygote over `ctrl`.
    pub fn new(ctrl: OwnedFd) -> Self {
        ZygoteLauncher {
            ctrl,
            standby: None,
            buf: Vec::new(),
            received: VecDeque::new(),
            asked: Vec::new(),
            started: Vec::new(),
            exits: HashMap::new(),
            forked: HashSet::new(),
            orphans: HashSet::new(),
            successions: 0,
            gone: false,
            first: VecDeque::new(),
            own: HashSet::new(),
        }
    }

    /// Add workers the pool's process forked itself, before the engine
    /// started (while it had one thread, as for the zygote's own fork):
    /// each is `(pid, the engine's end of its channel)`. The first
    /// launches take them instead of asking the zygote, so a pool's start
    /// waits for no fork in the zygote (its start-up, its heir's fork):
    /// ~4 ms less per pool. They are this process's children, reaped here,
    /// and outlive the zygote; the zygote forks every later worker.
    pub fn with_first_workers(mut self, workers: Vec<(i32, OwnedFd)>) -> io::Result<Self> {
        for (pid, channel) in workers {
            let pidfd = sys::pidfd_open(pid)?;
            self.first.push_back((pid, pidfd, channel));
        }
        Ok(self)
    }

    /// Read what the zygote sent, without blocking, and sort it into
    /// started workers, exit statuses and heirs. If its socket has ended,
    /// turn to the heir once every record it sent has been taken.
    fn read_records(&mut self) {
        if self.gone {
            return;
        }
        let fd = self.ctrl.as_raw_fd();
        let mut ended = false;
        loop {
            let mut tmp = [0u8; 4096];
            match recv_with_fds(fd, &mut tmp, &mut self.received) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
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
                    self.forked.insert(pid);
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
                        channel: None,
                    });
                    self.started.push((serial, launched));
                }
                ZYGOTE_EXITED => {
                    self.forked.remove(&pid);
                    self.exits.insert(pid, Exit::from_wait_status(value));
                }
                ZYGOTE_HEIR => {
                    // Its socket came with the bytes that end this record
                    // (a read stops after a message that carries
                    // descriptors), so heirs and sockets pair in order.
                    // A new heir replaces one that has exited.
                    if let Some(sock) = self.received.pop_front() {
                        self.standby = Some(sock);
                    }
                }
                _ => {}
            }
        }
        if ended {
            self.zygote_gone();
        }
    }

    /// The zygote's socket has ended: turn to its heir, or if there is
    /// none, fail every launch from now on.
    fn zygote_gone(&mut self) {
        self.orphans.extend(self.forked.drain());
        self.buf.clear();
        self.received.clear();
        if let Some(heir) = self.standby.take() {
            self.ctrl = heir;
            self.successions += 1;
            // Asked of the dead zygote: its workers, if it forked them,
            // died with it. The engine asks the heir again, with no penalty.
            for serial in self.asked.drain(..) {
                let err = io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the zygote process exited before it answered; its heir takes over",
                );
                self.started.push((serial, Err(err)));
            }
            return;
        }
        self.gone = true;
        for serial in self.asked.drain(..) {
            let err = io::Error::new(io::ErrorKind::UnexpectedEof, "the zygote process has exited");
            self.started.push((serial, Err(err)));
        }
    }
}

/// Receive bytes into `buf` without blocking, and any descriptors sent
/// with them into `fds` (close-on-exec, so spawned processes never hold
/// them). Returns the number of bytes; 0 at end of stream.
fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    const MAX_FDS: usize = 4;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; its pointers refer to `iov` (over
    // `buf`) and `control`, which outlive the call. The control messages
    // walked after it are the ones the kernel wrote within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push_back(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(n as usize)
    }
}

/// Whether a send failed because the other end of the socket has closed.
fn peer_closed(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN))
}

impl Launcher for ZygoteLauncher {
    fn launch(&mut self, serial: u32, _slot: u32, channel: OwnedFd) -> io::Result<Option<Launched>> {
        if let Some((pid, pidfd, ours)) = self.first.pop_front() {
            // Forked with its own end of a channel: the pair made for this
            // launch goes unused.
            drop(channel);
            self.own.insert(pid);
            return Ok(Some(Launched {
                pid,
                pidfd,
                child: None,
                channel: Some(ours),
            }));
        }
        // At most twice: a zygote that has just exited, then its heir.
        loop {
            if self.gone {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the zygote process and its heir have exited",
                ));
            }
            match sys::send_with_fd(self.ctrl.as_raw_fd(), &serial.to_le_bytes(), channel.as_raw_fd()) {
                Ok(()) => {
                    self.asked.push(serial);
                    return Ok(None);
                }
                Err(e) if peer_closed(&e) => {
                    // Take what it sent before it went; that ends its
                    // socket and turns to the heir.
                    let before = self.successions;
                    self.read_records();
                    if !self.gone && self.successions == before {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn started(&mut self) -> Vec<(u32, io::Result<Launched>)> {
        std::mem::take(&mut self.started)
    }

    fn exit_status(&mut self, w: &mut Launched) -> Option<Exit> {
        if self.own.contains(&w.pid) {
            let mut status = 0;
            // SAFETY: waitpid on our own child, writing to a local.
            let got = unsafe { libc::waitpid(w.pid, &mut status, libc::WNOHANG) };
            return match got {
                0 => None,
                _ => {
                    self.own.remove(&w.pid);
                    // -1: reaped by someone else (os.wait in the program).
                    Some(if got == w.pid {
                        Exit::from_wait_status(status)
                    } else {
                        Exit::Unknown
                    })
                }
            };
        }
        if let Some(e) = self.exits.remove(&w.pid) {
            return Some(e);
        }
        self.read_records();
        if let Some(e) = self.exits.remove(&w.pid) {
            return Some(e);
        }
        if self.orphans.remove(&w.pid) || self.gone {
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

    fn idle(&mut self) {
        // The zygote's workers die with it: it stays until they have exited
        // (workers the pool's process forked do not depend on it).
        if self.forked.is_empty() && self.asked.is_empty() && !self.gone {
            self.shutdown();
        }
    }

    fn shutdown(&mut self) {
        // SAFETY: shutting down our own sockets makes the zygote and its
        // heir see end of stream, whoever else holds a copy of them.
        unsafe {
            libc::shutdown(self.ctrl.as_raw_fd(), libc::SHUT_RDWR);
            if let Some(heir) = &self.standby {
                libc::shutdown(heir.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
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

    fn record(tag: u32, pid: i32, value: i32) -> Vec<u8> {
        [tag.to_le_bytes(), pid.to_le_bytes(), value.to_le_bytes()].concat()
    }

    /// What the fake zygote on `sock` was asked: the serials, in order.
    fn requests(sock: &OwnedFd) -> Vec<u32> {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a live stack buffer of the given size.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        let n = usize::try_from(n).unwrap_or(0);
        buf[..n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn channel() -> OwnedFd {
        sys::socketpair().unwrap().1
    }

    /// Close a fake zygote's end as its death would. Dropping the descriptor
    /// is not enough: a process another test forks at that moment holds a
    /// copy until it execs, so the launcher would see no end of stream.
    /// Shutting the socket down ends it for every copy.
    fn hang_up(sock: OwnedFd) {
        // SAFETY: shutting down a live socket we own.
        unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
    }

    #[test]
    fn first_workers_are_launched_without_the_zygote_and_reaped_here() {
        let (engine_end, zygote) = sys::socketpair().unwrap();
        // A child of this process stands for a worker the pool forked.
        let child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        std::mem::forget(child); // the launcher reaps it
        let (ours, _theirs) = sys::socketpair().unwrap();
        let ours_fd = ours.as_raw_fd();
        let mut launcher = ZygoteLauncher::new(engine_end)
            .with_first_workers(vec![(pid, ours)])
            .unwrap();
        let mut w = launcher.launch(0, 0, channel()).unwrap().expect("started at once");
        assert_eq!(w.pid, pid);
        assert_eq!(w.channel.as_ref().map(AsRawFd::as_raw_fd), Some(ours_fd));
        // The zygote was not asked.
        assert!(requests(&zygote).is_empty());
        // Its exit is read here, once its pidfd is readable.
        let mut pfd = libc::pollfd {
            fd: w.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one live descriptor.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
        assert_eq!(launcher.exit_status(&mut w), Some(Exit::Code(0)));
        // The next launch asks the zygote.
        assert!(launcher.launch(1, 0, channel()).unwrap().is_none());
        assert_eq!(requests(&zygote), vec![1]);
    }

    #[test]
    fn heir_takes_over_when_the_zygote_exits() {
        let (engine_end, zygote) = sys::socketpair().unwrap();
        let (heir_engine_end, heir) = sys::socketpair().unwrap();
        let mut launcher = ZygoteLauncher::new(engine_end);
        assert!(launcher.launch(0, 0, channel()).unwrap().is_none());
        assert_eq!(requests(&zygote), vec![0]);
        // The zygote makes its heir before its first worker.
        let me = sys::getpid();
        sys::send_with_fd(
            zygote.as_raw_fd(),
            &record(ZYGOTE_HEIR, 4242, 0),
            heir_engine_end.as_raw_fd(),
        )
        .unwrap();
        drop(heir_engine_end);
        assert_eq!(
            sys::write_some(zygote.as_raw_fd(), &record(ZYGOTE_FORKED, me, 0)).unwrap(),
            12
        );
        launcher.on_readable();
        let mut got = launcher.started();
        assert_eq!(got.len(), 1);
        let (serial, worker) = got.pop().unwrap();
        let mut worker = worker.unwrap();
        assert_eq!((serial, worker.pid), (0, me));
        // A launch the zygote never answers: it is killed.
        assert!(launcher.launch(1, 1, channel()).unwrap().is_none());
        hang_up(zygote);
        // Its worker died with it, and how is unknown.
        assert_eq!(launcher.exit_status(&mut worker), Some(Exit::Unknown));
        let got = launcher.started();
        assert_eq!(got.len(), 1);
        let (serial, result) = &got[0];
        assert_eq!(*serial, 1);
        assert_eq!(
            result.as_ref().err().map(io::Error::kind),
            Some(io::ErrorKind::Interrupted)
        );
        // The heir is asked from now on.
        assert!(launcher.launch(2, 1, channel()).unwrap().is_none());
        assert_eq!(requests(&heir), vec![2]);
        // With the heir gone too, launches fail.
        hang_up(heir);
        let Err(err) = launcher.launch(3, 1, channel()) else {
            panic!("a launch with no zygote left succeeded");
        };
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        assert!(launcher.poll_fd().is_none());
    }

    #[test]
    fn launch_after_the_zygote_exits_goes_to_its_heir() {
        let (engine_end, zygote) = sys::socketpair().unwrap();
        let (heir_engine_end, heir) = sys::socketpair().unwrap();
        let mut launcher = ZygoteLauncher::new(engine_end);
        sys::send_with_fd(
            zygote.as_raw_fd(),
            &record(ZYGOTE_HEIR, 4242, 0),
            heir_engine_end.as_raw_fd(),
        )
        .unwrap();
        drop(heir_engine_end);
        launcher.on_readable();
        hang_up(zygote);
        // Nothing has read the end of the zygote's socket yet.
        assert!(launcher.launch(0, 0, channel()).unwrap().is_none());
        assert_eq!(requests(&heir), vec![0]);
        assert!(launcher.started().is_empty());
    }

    /// A thread worker that reads its channel until it ends, then exits 0.
    fn reader_launcher() -> ThreadLauncher {
        ThreadLauncher::new(Box::new(|start: ThreadStart| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                // SAFETY: reading into a live stack buffer of the given size.
                while unsafe { libc::read(start.channel.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
                start.exit.exited(0);
            });
            Ok(())
        }))
    }

    fn wait_readable(fd: &OwnedFd) {
        let mut pfd = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(
            sys::poll(&mut pfd, Some(std::time::Duration::from_secs(10))).unwrap(),
            1
        );
    }

    #[test]
    fn thread_worker_stops_when_told_and_reports_its_code() {
        let mut launcher = reader_launcher();
        let (_ours, theirs) = sys::socketpair().unwrap();
        let mut w = launcher.launch(0, 0, theirs).unwrap().unwrap();
        assert!(w.pid >= THREAD_IDS, "a thread worker's id can never be a pid");
        launcher.kill(&w, libc::SIGTERM);
        wait_readable(&w.pidfd);
        assert_eq!(launcher.exit_status(&mut w), Some(Exit::Code(0)));
    }

    #[test]
    fn sigkill_ends_a_thread_worker_at_once() {
        // A worker stuck in its task: it never reads, and never exits.
        let (tx, rx) = std::sync::mpsc::channel::<ThreadStart>();
        let mut launcher = ThreadLauncher::new(Box::new(move |start| {
            tx.send(start).map_err(|_| io::Error::other("gone"))
        }));
        let (_ours, theirs) = sys::socketpair().unwrap();
        let mut w = launcher.launch(0, 0, theirs).unwrap().unwrap();
        let held = rx.recv().unwrap();
        launcher.kill(&w, libc::SIGKILL);
        wait_readable(&w.pidfd);
        // Its late report changes nothing.
        held.exit.exited(0);
        assert_eq!(launcher.exit_status(&mut w), Some(Exit::Signal(libc::SIGKILL)));
    }

    #[test]
    fn exit_status_is_named() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "signal 9 (SIGKILL)");
        assert_eq!(Exit::from_wait_status(3 << 8), Exit::Code(3));
        assert_eq!(Exit::from_wait_status(libc::SIGSEGV), Exit::Signal(libc::SIGSEGV));
    }
}
