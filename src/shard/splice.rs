//! The rest of a large length-delimited body moved socket → pipe → socket with splice(2), never
//! copied into user space: what `body::relay` does past `SPLICE_PAST` bytes still to come when its
//! buffer is empty. Owns the shard's spare pipe (one per thread, reused; a pipe that may still hold
//! bytes after a failure is closed, never reused). Each splice is a direct non-blocking syscall; a
//! side that is not ready is waited for through the ring, within the relay's idle limit. Moves
//! exactly the given length: bytes after the body stay in the source socket.

use super::timer::Timers;
use monoio::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A body with at least this many bytes still to come (none buffered) is spliced. Measured with
/// bench/ab.sh (bench/README.md, 2026-12-02): splicing a 256 KiB or 1 MiB body cost 15-30 % less
/// CPU per request than copying it, at 1 and 64 connections; a 64 KiB one (~48 KiB after the
/// head's read) cost ~8 % more at 1 connection and ~8 % less at 64, so it is copied.
pub(super) const SPLICE_PAST: u64 = 128 * 1024;

/// The pipe's capacity asked for (the kernel may round it; what it gives is what is used).
const PIPE_SIZE: usize = 256 * 1024;

/// Why a splice relay stopped early (`body` maps it to its `RelayError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpliceError {
    /// The sender closed early or failed.
    Read,
    /// The receiver failed.
    Write,
    /// Neither side was ready within the idle limit.
    Idle,
}

/// A pipe: read end, write end, capacity in bytes.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

thread_local! {
    /// This shard's spare pipe, empty; a relay takes it (or makes one) and gives it back empty.
    static SPARE: std::cell::Cell<Option<Pipe>> = const { std::cell::Cell::new(None) };
}

impl Pipe {
    fn take() -> std::io::Result<Pipe> {
        if let Some(p) = SPARE.with(|s| s.take()) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills `fds` with two new descriptors we own from here on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; a refusal leaves the default size.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        // SAFETY: as above; F_GETPIPE_SZ only reads.
        let size =
            if size > 0 { size } else { unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) } };
        Ok(Pipe { read, write, size: usize::try_from(size).unwrap_or(0).max(4096) })
    }

    /// Keeps an empty pipe as the shard's spare (unless one is there already).
    fn give_back(self) {
        SPARE.with(|s| {
            let spare = s.take();
            s.set(Some(spare.unwrap_or(self)));
        });
    }
}

/// One non-blocking splice of up to `len` bytes from `from` to `to`: Some(n) moved (0 = the source
/// ended), None when a side was not ready.
fn splice_now(from: RawFd, to: RawFd, len: usize) -> std::io::Result<Option<usize>> {
    // SAFETY: both descriptors are owned by the caller's streams and pipe, alive for this call;
    // null offsets are what sockets and pipes take; SPLICE_F_NONBLOCK keeps the pipe side from
    // blocking, and the socket side is non-blocking (`nonblocking`). A peer that closed gives
    // EPIPE: Rust programs start with SIGPIPE ignored.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Marks `stream`'s socket non-blocking (an accepted one may not be), so a splice never blocks the
/// shard; the ring's operations on it work the same either way.
fn nonblocking(stream: &TcpStream) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    // SAFETY: fcntl on a descriptor `stream` owns, alive for this call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if flags & libc::O_NONBLOCK == 0
        && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `ready` within `idle` when given.
async fn ready_within(
    ready: impl std::future::Future<Output = std::io::Result<()>>,
    idle: Option<(&Timers, Duration)>,
    failed: SpliceError,
) -> Result<(), SpliceError> {
    let ready = match idle {
        Some((timers, limit)) => timers.limit(limit, ready).await.ok_or(SpliceError::Idle)?,
        None => ready.await,
    };
    ready.map_err(|_| failed)
}

/// Splices exactly `len` bytes from `src` to `dst`. None: splicing could not start (no pipe, a
/// socket that cannot be made non-blocking); nothing was moved and the caller copies instead.
pub(super) async fn relay(
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    idle: Option<(&Timers, Duration)>,
) -> Option<Result<(), SpliceError>> {
    if nonblocking(src).is_err() || nonblocking(dst).is_err() {
        return None;
    }
    let pipe = Pipe::take().ok()?;
    let moved = relay_through(&pipe, src, dst, len, idle).await;
    if moved.is_ok() {
        pipe.give_back();
    }
    Some(moved)
}

async fn relay_through(
    pipe: &Pipe,
    src: &TcpStream,
    dst: &TcpStream,
    mut remaining: u64,
    idle: Option<(&Timers, Duration)>,
) -> Result<(), SpliceError> {
    let (from, to) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut in_pipe = 0usize;
    while remaining > 0 || in_pipe > 0 {
        if remaining > 0 && in_pipe < pipe.size {
            let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(pipe.size - in_pipe);
            match splice_now(from, pipe.write.as_raw_fd(), want) {
                Ok(Some(0)) | Err(_) => return Err(SpliceError::Read),
                Ok(Some(n)) => {
                    in_pipe += n;
                    remaining -= n as u64;
                }
                Ok(None) if in_pipe == 0 => {
                    ready_within(src.readable(false), idle, SpliceError::Read).await?;
                    continue;
                }
                // The pipe is full (its slots are pages, not bytes) or the source has no more yet:
                // drain what the pipe holds.
                Ok(None) => {}
            }
        }
        if in_pipe > 0 {
            match splice_now(pipe.read.as_raw_fd(), to, in_pipe) {
                Ok(Some(n)) if n > 0 => in_pipe -= n,
                Ok(Some(_)) | Err(_) => return Err(SpliceError::Write),
                Ok(None) => ready_within(dst.writable(false), idle, SpliceError::Write).await?,
            }
        }
    }
    Ok(())
}
