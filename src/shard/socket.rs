//! Socket primitives the request path shares: reads that append to a `BytesMut`, writes that give
//! the buffer back, and the non-blocking peeks that tell whether a socket has bytes or an EOF
//! waiting. Knows nothing of HTTP; never decides what to do with what it reads.

use bytes::{Buf, BytesMut};
use monoio::buf::{IoBuf, IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Read size for heads; a head may grow its buffer up to `max_request_headers_kb`.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// Bodies move in larger reads than heads: a 64 KiB response then costs one read and one write
/// instead of four of each.
pub(super) const BODY_CHUNK: usize = 64 * 1024;

/// Writes all of `out` and clears it (keeping its capacity).
pub(super) async fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    write_kept(stream, out).await?;
    out.clear();
    Ok(())
}

/// Writes all of `out` and leaves it as it was (a request kept for a retry).
pub(super) async fn write_kept(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let sent = send_now(stream, out)?;
    if sent < out.len() {
        let (res, slice) = stream.write_all(std::mem::take(out).slice(sent..)).await;
        *out = slice.into_inner();
        res?;
    }
    Ok(())
}

/// Writes the first `n` bytes of `buf` and drops them from it, without copying.
pub(super) async fn write_prefix(dst: &mut TcpStream, buf: &mut BytesMut, n: usize) -> std::io::Result<()> {
    let sent = send_now(dst, &buf[..n])?;
    if sent < n {
        let (res, slice) = dst.write_all(std::mem::take(buf).slice(sent..n)).await;
        *buf = slice.into_inner();
        res?;
    }
    buf.advance(n);
    Ok(())
}

thread_local! {
    /// Requests in progress on this thread's shard (a shard is one thread): how `send_now`
    /// chooses between a direct write and the ring.
    static REQUESTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// Request-head buffers given back by connections that went idle, for the next request on
    /// this shard: an idle connection holds no buffer, and a request takes one without malloc.
    static HEAD_BUFFERS: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare head buffers per shard: enough for the requests in flight at once;
/// a burst beyond it allocates and frees as before.
const SPARE_HEAD_BUFFERS: usize = 1024;

thread_local! {
    /// Keep-alive connections of this shard waiting for their next request with a head buffer
    /// lent to their read (`WaitLoan`).
    static WAITING_WITH_BUFFER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A keep-alive connection's waiting read may hold a head buffer (a ring read that owns one is the
/// cheapest wait when the next request comes soon) while fewer than `SPARE_HEAD_BUFFERS` of the
/// shard's connections do. Past that, a connection waits for readability holding none. So however
/// many connections go idle at once, the head buffers a shard has are bounded and all come back to
/// its spares: none is freed into holes between live connections' memory, where glibc could not
/// return it to the system (10 000 connections going idle within a second used to leave ~2.9 KB of
/// RSS each behind).
pub(super) struct WaitLoan(());

impl WaitLoan {
    pub(super) fn take() -> Option<WaitLoan> {
        WAITING_WITH_BUFFER.with(|w| {
            (w.get() < SPARE_HEAD_BUFFERS).then(|| {
                w.set(w.get() + 1);
                WaitLoan(())
            })
        })
    }
}

impl Drop for WaitLoan {
    fn drop(&mut self) {
        WAITING_WITH_BUFFER.with(|w| w.set(w.get().saturating_sub(1)));
    }
}

/// A buffer for the next request head: a spare one, or a new empty one.
pub(super) fn head_buffer() -> BytesMut {
    HEAD_BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default()
}

/// Keeps an empty buffer for `head_buffer`, unless it grew for a big head or body (those are
/// freed, as an idle connection's used to be shrunk) or enough are spare already.
pub(super) fn recycle_head_buffer(mut buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > 4 * 1024 {
        return;
    }
    buf.clear();
    keep_spare(&HEAD_BUFFERS, buf, SPARE_HEAD_BUFFERS);
}

/// Keeps an emptied buffer in this shard's `pool` while it holds fewer than `max`.
fn keep_spare<T>(pool: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>, buf: T, max: usize) {
    pool.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < max {
            b.push(buf);
        }
    });
}

thread_local! {
    /// Output buffers (a request's upstream head, a response's head) given back when a request
    /// ends, for the next request on this shard: an idle connection holds none.
    static OUT_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare output buffers per shard: two for each request in flight at once.
const SPARE_OUT_BUFFERS: usize = 2 * SPARE_HEAD_BUFFERS;

/// Output buffers above this are freed when a request ends rather than kept for the next one.
const KEEP_OUT: usize = 16 * 1024;

/// An output buffer for a request: a spare one, or a new empty one.
pub(super) fn out_buffer() -> Vec<u8> {
    OUT_BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default()
}

/// Keeps `buf` (emptied) for `out_buffer`, unless it is big or enough are spare already.
pub(super) fn recycle_out_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_OUT {
        return;
    }
    buf.clear();
    keep_spare(&OUT_BUFFERS, buf, SPARE_OUT_BUFFERS);
}

/// A request began on this shard (paired with `request_ended`, by the request's guard).
pub(super) fn request_started() {
    REQUESTS.with(|r| r.set(r.get() + 1));
}

pub(super) fn request_ended() {
    REQUESTS.with(|r| r.set(r.get().saturating_sub(1)));
}

/// With one request in progress on the shard, a write is sent at once with one non-blocking
/// `send`: it almost always fits the socket buffer, and then that syscall is the whole write —
/// no ring submission, no completion, no extra turn of the shard's loop (and `io_uring_enter`)
/// before the next read can wait. With several in progress, writes go through the ring, where
/// the shard's next `io_uring_enter` submits them together: one syscall for many (a direct send
/// each cost 9 % more CPU per request at 64 connections; the ring path cost 5 % more at one).
/// Returns what was sent (0 when the ring is to do it all or the buffer is full); the caller
/// sends the rest through the ring.
fn send_now(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    if bytes.is_empty() || REQUESTS.with(|r| r.get()) > 1 {
        return Ok(0);
    }
    // SAFETY: `bytes` is valid for reads of its length for this call; the fd is owned by
    // `stream`, alive for this call. MSG_DONTWAIT keeps the shard from blocking; MSG_NOSIGNAL
    // turns a closed peer into EPIPE instead of a SIGPIPE.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

/// Reads once with room for at least `want` bytes, appending to `buf`; Ok(0) is end of stream.
pub(super) async fn read_up_to(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    want: usize,
) -> std::io::Result<usize> {
    buf.reserve(want);
    let (res, b) = stream.read(spare(std::mem::take(buf))).await;
    *buf = b.into_inner();
    res
}

/// One non-blocking `recv` appending to `buf`'s spare capacity (the caller reserved some):
/// Some(n) read (0 = end of stream), None when nothing was there after all.
pub(super) fn recv_now(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most `spare.len()` bytes into `buf`'s spare capacity, which is
    // valid for writes; the fd is owned by `stream`, alive for this call; MSG_DONTWAIT keeps the
    // shard from blocking.
    let n =
        unsafe { libc::recv(stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
    if n >= 0 {
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n as usize) };
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// The unfilled capacity of `buf` as a read target. monoio reads into a `BytesMut` at its *start*
/// (its `write_ptr` is `as_mut_ptr()`), so reading into a buffer that already holds part of a head
/// or a chunk-size line would overwrite those bytes; a `SliceMut` from `len` appends instead. The
/// caller must have reserved capacity: an empty slice would read 0 bytes and look like EOF.
pub(super) fn spare(buf: BytesMut) -> SliceMut<BytesMut> {
    let len = buf.len();
    buf.slice_mut(len..)
}

/// After a large body, gives an empty buffer's memory back down to `keep`, so an idle connection
/// (or one waiting in the pool) holds a small buffer however big its last body was.
pub(super) fn shrink_idle(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = BytesMut::with_capacity(keep);
    }
}

/// What a socket has waiting, seen without consuming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// Nothing to read, connection open.
    Nothing,
    /// Bytes are waiting.
    Data,
    /// The peer closed (FIN) or the socket failed.
    Closed,
}

/// One non-blocking `recv(MSG_PEEK)`: never blocks the shard, never consumes data.
pub(super) fn peek(stream: &TcpStream) -> Pending {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv into one valid byte of our stack; MSG_PEEK leaves the socket's data untouched,
    // MSG_DONTWAIT keeps it from blocking. The fd is owned by `stream`, alive for this call.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    match n {
        1.. => Pending::Data,
        0 => Pending::Closed,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => Pending::Nothing,
        _ => Pending::Closed,
    }
}

/// This node's first non-loopback IPv4 address (else IPv6), looked up once: Envoy puts it in
/// `x-forwarded-for` instead of a loopback peer's address (a sidecar's local caller is "this
/// host" to the services behind it).
pub(super) fn node_address() -> Option<std::net::IpAddr> {
    static ADDRESS: std::sync::OnceLock<Option<std::net::IpAddr>> = std::sync::OnceLock::new();
    *ADDRESS.get_or_init(|| {
        let mut found: Vec<std::net::IpAddr> = Vec::new();
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `list` with a linked list we only read and free once below.
        if unsafe { libc::getifaddrs(&mut list) } != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() {
            // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
            let entry = unsafe { &*cur };
            if !entry.ifa_addr.is_null() {
                // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
                let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
                if family == libc::AF_INET {
                    // SAFETY: AF_INET addresses are sockaddr_in.
                    let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                    found.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into());
                } else if family == libc::AF_INET6 {
                    // SAFETY: AF_INET6 addresses are sockaddr_in6.
                    let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                    found.push(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into());
                }
            }
            cur = entry.ifa_next;
        }
        // SAFETY: `list` came from getifaddrs and is freed exactly once.
        unsafe { libc::freeifaddrs(list) };
        let usable = |ip: &std::net::IpAddr| !ip.is_loopback() && !ip.is_unspecified();
        let link_local = |ip: &std::net::IpAddr| matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        found
            .iter()
            .find(|ip| ip.is_ipv4() && usable(ip))
            .or_else(|| found.iter().find(|ip| usable(ip) && !link_local(ip)))
            .copied()
    })
}

/// A second monoio handle on the socket behind `fd` (a `dup` of its descriptor).
pub(super) fn duplicate(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<TcpStream> {
    let owned = fd.try_clone_to_owned()?;
    TcpStream::from_std(std::net::TcpStream::from(owned))
}

/// `upstream_connection_options.tcp_keepalive`: probes on, with whichever of the kernel's
/// settings the config replaces.
pub(super) fn set_keepalive(stream: &TcpStream, k: &crate::config::TcpKeepalive) -> std::io::Result<()> {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        ka = ka.with_time(t);
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    if let Some(n) = k.probes {
        ka = ka.with_retries(n);
    }
    // SAFETY: `stream` owns the descriptor and outlives the borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(stream)) };
    socket2::SockRef::from(&fd).set_tcp_keepalive(&ka)
}

/// A second handle on `stream`'s socket: one reads while the other writes.
pub(super) fn second_handle(stream: &TcpStream) -> std::io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    // SAFETY: `stream` owns the descriptor and outlives this borrow; the duplicate is its own fd.
    duplicate(unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) })
}

/// A connected local socket pair, both ends registered with this shard's driver: what a bridge
/// (`tls`, `h2`, `h2_upstream`) hands the HTTP/1 path as "the connection" while it serves the other end.
pub(super) fn pair() -> std::io::Result<(TcpStream, TcpStream)> {
    use std::os::fd::{FromRawFd, RawFd};
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair fills `fds` with two new descriptors we own from here on.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // monoio's TcpStream is a descriptor plus its driver registration; nothing in it needs the
    // socket to be TCP (setting TCP_NODELAY on it fails, and callers ignore that).
    // SAFETY: each descriptor is owned by exactly one std stream.
    let (a, b) =
        unsafe { (std::net::TcpStream::from_raw_fd(fds[0]), std::net::TcpStream::from_raw_fd(fds[1])) };
    Ok((TcpStream::from_std(a)?, TcpStream::from_std(b)?))
}

pub(super) fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted)
}

/// A socket read and written in place: one non-blocking `recv`/`send` per call (rustls's I/O,
/// and the h2 bridge's pair ends, which two futures of one task read and write at once).
#[derive(Clone, Copy)]
pub(super) struct Fd(pub(super) std::os::fd::RawFd);

impl std::io::Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`; the descriptor is owned by a
        // stream that outlives this call; MSG_DONTWAIT keeps the shard from blocking.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl std::io::Write for Fd {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: send reads `buf.len()` bytes from `buf`; the descriptor is owned by a stream
        // that outlives this call; MSG_NOSIGNAL turns a closed peer into EPIPE, not SIGPIPE.
        let n = unsafe {
            libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
