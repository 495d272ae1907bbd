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
    let (res, mut buf) = stream.write_all(std::mem::take(out)).await;
    buf.clear();
    *out = buf;
    res.map(|_| ())
}

/// Writes the first `n` bytes of `buf` and drops them from it, without copying.
pub(super) async fn write_prefix(dst: &mut TcpStream, buf: &mut BytesMut, n: usize) -> std::io::Result<()> {
    let (res, slice) = dst.write_all(std::mem::take(buf).slice(0..n)).await;
    *buf = slice.into_inner();
    buf.advance(n);
    res.map(|_| ())
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
