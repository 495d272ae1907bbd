//! Listening sockets. The control thread binds one SO_REUSEPORT socket per shard for each listener
//! (so bind errors surface before a config is accepted, and port 0 resolves to one port for all
//! shards); each shard takes its own socket exactly once. Owns nothing of what runs on them.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

/// A listener's sockets, one per shard, waiting to be taken.
#[derive(Debug)]
pub struct BoundListener {
    /// Unique for the life of the process: a listener re-bound at a new address gets a new id.
    pub id: u64,
    pub name: String,
    /// As written in the config (port may be 0).
    pub configured: SocketAddr,
    /// Where it actually listens.
    pub bound: SocketAddr,
    sockets: Mutex<Vec<Option<std::net::TcpListener>>>,
}

impl BoundListener {
    pub fn bind(id: u64, name: &str, addr: SocketAddr, shards: usize) -> io::Result<Self> {
        // SO_REUSEPORT would let us silently share a port with another process of the same user
        // and steal half its connections; a plain bind first makes "address in use" an error.
        if addr.port() != 0 {
            drop(std::net::TcpListener::bind(addr)?);
        }
        let mut sockets = Vec::with_capacity(shards);
        let mut bound = addr;
        for _ in 0..shards.max(1) {
            let socket = reuseport_socket(bound)?;
            bound = socket.local_addr()?;
            sockets.push(Some(socket));
        }
        Ok(BoundListener {
            id,
            name: name.to_string(),
            configured: addr,
            bound,
            sockets: Mutex::new(sockets),
        })
    }

    /// The socket for `shard`, once.
    pub fn take(&self, shard: usize) -> Option<std::net::TcpListener> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sockets.get_mut(shard).and_then(Option::take)
    }
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
