//! The I/O thread's side of the worker channels.
//!
//! Reading and writing are system calls, and the engine lock is held by
//! callers too (a caller submitting a task holds the GIL while it waits for
//! the lock), so they happen here, outside the lock. Under the lock the I/O
//! thread only moves bytes: frames encoded by the scheduler are taken out of
//! each worker, and bytes read are fed to each worker's frame reader.

use crate::fasthash::FastMap;
use crate::sys;
use std::io;
use std::os::fd::RawFd;

/// Most bytes read from one channel per turn of the loop, so one busy
/// worker cannot starve the others.
const READ_CAP: usize = 8 << 20;

/// Bytes waiting to be written to one channel.
struct Unsent {
    fd: RawFd,
    buf: Vec<u8>,
    pos: usize,
}

/// Outgoing bytes per worker (by its serial), owned by the I/O thread.
#[derive(Default)]
pub(crate) struct Outgoing {
    unsent: FastMap<u32, Unsent>,
}

impl Outgoing {
    /// Queue the bytes in `bytes` for worker `id` on channel `fd`, leaving
    /// `bytes` empty. Buffers are swapped rather than dropped, so both sides
    /// keep their capacity from one turn to the next: at tens of thousands
    /// of frames a second, fresh buffers kept the allocator busy.
    pub(crate) fn queue(&mut self, id: u32, fd: RawFd, bytes: &mut Vec<u8>) {
        let p = self.unsent.entry(id).or_insert_with(|| Unsent {
            fd,
            buf: Vec::new(),
            pos: 0,
        });
        if p.buf.is_empty() {
            std::mem::swap(&mut p.buf, bytes);
            p.pos = 0;
        } else {
            p.buf.extend_from_slice(bytes);
        }
        empty_keeping_capacity(bytes);
    }

    /// Whether worker `id` has bytes waiting.
    pub(crate) fn waiting(&self, id: u32) -> bool {
        self.unsent.get(&id).is_some_and(|p| p.pos < p.buf.len())
    }

    /// Write what each channel accepts without blocking. Returns the ids of
    /// workers whose channel is broken.
    pub(crate) fn flush_all(&mut self) -> Vec<u32> {
        let mut broken = Vec::new();
        for (&id, p) in &mut self.unsent {
            while p.pos < p.buf.len() {
                match sys::write_some(p.fd, &p.buf[p.pos..]) {
                    Ok(0) => break,
                    Ok(n) => p.pos += n,
                    Err(_) => {
                        broken.push(id);
                        break;
                    }
                }
            }
            if p.pos == p.buf.len() {
                empty_keeping_capacity(&mut p.buf);
                p.pos = 0;
            }
        }
        for id in &broken {
            self.unsent.remove(id);
        }
        broken
    }

    /// Drop the buffers of workers not in `live`.
    pub(crate) fn retain(&mut self, live: &[u32]) {
        self.unsent.retain(|id, _| live.contains(id));
    }
}

/// A buffer that grew past this is dropped after use rather than kept for
/// the next turn.
const KEEP_BUF: usize = 4 << 20;

/// Empty `buf`, keeping its capacity for reuse unless it is over
/// [`KEEP_BUF`]: one huge payload must not pin its size for the pool's life.
fn empty_keeping_capacity(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUF {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// What one read of a channel found.
pub(crate) struct Inbound {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// The worker closed its end (or the channel broke).
    pub closed: bool,
}

/// Read buffers kept from one turn of the I/O loop to the next. A fresh
/// 64 KiB buffer per read, freed after use, made glibc consolidate its free
/// lists on every free (a free that large triggers it).
#[derive(Default)]
pub(crate) struct ReadBufs {
    spare: Vec<Vec<u8>>,
}

impl ReadBufs {
    /// Read whatever `fd` has without blocking, up to [`READ_CAP`].
    pub(crate) fn read(&mut self, fd: RawFd) -> Inbound {
        read_available(fd, self.spare.pop().unwrap_or_default())
    }

    /// Take back the buffer of a read that has been handled.
    pub(crate) fn recycle(&mut self, mut bytes: Vec<u8>) {
        empty_keeping_capacity(&mut bytes);
        self.spare.push(bytes);
    }
}

/// Read whatever `fd` has without blocking, up to [`READ_CAP`], into `bytes`
/// (empty, perhaps with capacity).
fn read_available(fd: RawFd, mut bytes: Vec<u8>) -> Inbound {
    let mut closed = false;
    while bytes.len() < READ_CAP {
        if bytes.capacity() - bytes.len() < (16 << 10) {
            bytes.reserve(64 << 10);
        }
        let spare = bytes.spare_capacity_mut();
        // SAFETY: `read` writes at most `spare.len()` bytes into the spare
        // capacity, and only what it reports becomes part of the vector.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
        if n > 0 {
            unsafe { bytes.set_len(bytes.len() + n as usize) };
            continue;
        }
        if n == 0 {
            closed = true;
            break;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => break,
            _ => {
                closed = true;
                break;
            }
        }
    }
    Inbound { bytes, closed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_unless_they_grew_huge() {
        let mut bufs = ReadBufs::default();
        let mut small = Vec::with_capacity(64 << 10);
        small.extend_from_slice(b"frames");
        let ptr = small.as_ptr();
        bufs.recycle(small);
        // The next read gets the same allocation back, emptied.
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        r.set_nonblocking(true).unwrap();
        std::io::Write::write_all(&mut &w, b"abc").unwrap();
        use std::os::fd::AsRawFd;
        let got = bufs.read(r.as_raw_fd());
        assert_eq!(got.bytes, b"abc");
        assert!(!got.closed);
        assert_eq!(got.bytes.as_ptr(), ptr);

        let mut huge = vec![0u8; KEEP_BUF + 1];
        empty_keeping_capacity(&mut huge);
        assert_eq!(huge.capacity(), 0);
        let mut kept = vec![0u8; 1024];
        empty_keeping_capacity(&mut kept);
        assert!(kept.is_empty() && kept.capacity() >= 1024);
    }
}
