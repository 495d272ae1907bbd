//! A connection on a listener whose filter chain must be picked (several chains, or one that does
//! not take every connection): what Envoy's TLS inspector learns from the ClientHello (peeked,
//! so its bytes stay in the socket for whichever chain takes them: a TLS chain goes on from the
//! parsed hello, a plaintext one or a TLS passthrough reads them again), the pick
//! (`config::chain_match`), and the hand-off to the chain's connection manager or tcp_proxy.
//! Counts `listener.<address>.no_filter_chain_match` and closes when no chain takes it. Listeners
//! with one plain chain never come here.

use super::state::Shard;
use super::tls::Hello;
use super::{conn, tcp_proxy};
use crate::config::chain_match::Seen;
use crate::snapshot::{Accepted, ChainKey, Serves};
use crate::stats::listener_stat_name;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

/// The largest ClientHello read, as Envoy's inspector's default `max_client_hello_size`; a
/// bigger one closes the connection.
const MAX_HELLO: usize = 64 * 1024;

/// A TLS record's header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
const HANDSHAKE_RECORD: u8 = 0x16;

pub(super) async fn serve(shard: Rc<Shard>, listener_id: u64, stream: TcpStream, peer: SocketAddr) {
    let (inspector, bound) = {
        let generation = shard.generation();
        let Some(Accepted::Select(s)) = generation.snap.route_connection(listener_id) else { return };
        (s.inspector, s.socket.bound)
    };
    let mut seen = Seen { local: stream.local_addr().ok(), peer: Some(peer), ..Seen::default() };
    let mut hello = None;
    if let Some(inspector) = inspector {
        let stats = shard.stats.tls_inspector();
        let inspect = Box::pin(inspect_hello(&stream));
        let inspected = match inspector.timeout {
            Some(limit) => monoio::time::timeout(limit, inspect).await,
            None => Ok(inspect.await),
        };
        match inspected {
            Ok(Ok(Some(h))) => {
                let ch = h.accepted.client_hello();
                seen.tls = true;
                seen.sni = ch.server_name().map(str::to_ascii_lowercase);
                seen.alpn = ch.alpn().map(|a| a.map(<[u8]>::to_vec).collect()).unwrap_or_default();
                stats.tls_found.inc();
                match seen.sni.is_some() {
                    true => stats.sni_found.inc(),
                    false => stats.sni_not_found.inc(),
                }
                match seen.alpn.is_empty() {
                    false => stats.alpn_found.inc(),
                    true => stats.alpn_not_found.inc(),
                }
                hello = Some(h);
            }
            Ok(Ok(None)) => stats.tls_not_found.inc(),
            Ok(Err(Closed::TooLarge)) => {
                stats.client_hello_too_large.inc();
                return;
            }
            Ok(Err(Closed::Gone)) => return,
            Err(_) => {
                shard.stats.listener(&listener_stat_name(bound)).downstream_pre_cx_timeout.inc();
                // With `continue_on_listener_filters_timeout`, what is known: not TLS.
                if !inspector.continue_on_timeout {
                    return;
                }
            }
        }
    }
    let picked = {
        let generation = shard.generation();
        let Some(Accepted::Select(s)) = generation.snap.route_connection(listener_id) else { return };
        s.pick(&seen)
    };
    match picked {
        None => {
            log::debug!("closing connection from {peer}: no matching filter chain found");
            shard.stats.listener(&listener_stat_name(bound)).no_filter_chain_match.inc();
        }
        Some((chain, Serves::Http)) => {
            conn::serve(shard, ChainKey { socket: listener_id, chain }, stream, peer, hello).await
        }
        Some((chain, Serves::Tcp)) => {
            tcp_proxy::serve(shard, ChainKey { socket: listener_id, chain }, stream, peer, hello).await
        }
    }
}

/// Why the inspector closes the connection.
enum Closed {
    /// The client went away (or the socket failed) before it said enough.
    Gone,
    /// Its ClientHello is larger than `MAX_HELLO`.
    TooLarge,
}

/// Peeks the client's first bytes: a ClientHello (parsed, its bytes still unread), None for
/// anything else (Envoy's `raw_buffer`). Waits for a record's missing bytes with `SO_RCVLOWAT`,
/// so a peek that saw part of one is not repeated until the rest is there.
async fn inspect_hello(tcp: &TcpStream) -> Result<Option<Box<Hello>>, Closed> {
    let fd = tcp.as_raw_fd();
    // Most ClientHellos fit; a bigger one grows it, up to `MAX_HELLO`.
    let mut buf = vec![0u8; 4096];
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        let n = match peek(fd, &mut buf) {
            Ok(0) => return Err(Closed::Gone),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tcp.readable(false).await.map_err(|_| Closed::Gone)?;
                continue;
            }
            Err(_) => return Err(Closed::Gone),
        };
        if buf[0] != HANDSHAKE_RECORD {
            return Ok(None);
        }
        let (complete, needed) = records(&buf[..n]);
        while fed < complete {
            match acceptor.read_tls(&mut &buf[fed..complete]) {
                Ok(0) | Err(_) => return Ok(None),
                Ok(k) => fed += k,
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(Some(Box::new(Hello { accepted, len: fed }))),
            Ok(None) => {}
            // Not a ClientHello after all: Envoy's inspector says `tls_not_found` and goes on.
            Err(_) => return Ok(None),
        }
        if needed > MAX_HELLO {
            return Err(Closed::TooLarge);
        }
        if needed > buf.len() {
            buf.resize(needed, 0);
        }
        set_rcvlowat(fd, needed);
        let ready = tcp.readable(false).await;
        set_rcvlowat(fd, 1);
        ready.map_err(|_| Closed::Gone)?;
    }
}

/// Where the whole records in `buf` end, and how many bytes the next record needs in all.
fn records(buf: &[u8]) -> (usize, usize) {
    let mut at = 0;
    while let Some(header) = buf.get(at..at + RECORD_HEADER) {
        let end = at + RECORD_HEADER + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if end > buf.len() {
            return (at, end);
        }
        at = end;
    }
    (at, at + RECORD_HEADER)
}

fn peek(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`, a live mutable slice.
    let n =
        unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Readiness only once `bytes` are waiting (best effort: without it the wait ends sooner and the
/// peek just runs again).
fn set_rcvlowat(fd: RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from a live local.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::records;

    #[test]
    fn records_say_what_is_whole_and_what_is_missing() {
        assert_eq!(records(&[0x16, 3, 1]), (0, 5));
        assert_eq!(records(&[0x16, 3, 1, 0, 4, 1, 2]), (0, 9));
        assert_eq!(records(&[0x16, 3, 1, 0, 2, 1, 2]), (7, 12));
        assert_eq!(records(&[0x16, 3, 1, 0, 2, 1, 2, 0x16, 3, 1, 1, 0]), (7, 7 + 5 + 256));
    }
}
