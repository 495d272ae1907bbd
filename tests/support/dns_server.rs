//! A small, real authoritative DNS server for integration tests.
//!
//! Include it from a test crate with
//!
//! ```ignore
//! #[path = "support/dns_server.rs"]
//! mod dns_server;
//! use dns_server::TestDnsServer;
//! ```
//!
//! It serves A/AAAA (and CNAME) records from an in-memory table that tests change while it runs,
//! over UDP and TCP on the same 127.0.0.1 port. Names it does not know get NXDOMAIN; known names
//! without records of the asked type get an empty NOERROR (NODATA). Threads stop on Drop. It
//! depends only on std and hickory-proto, which is a normal dependency of skiff.

#![allow(dead_code)] // Each test crate uses a different subset of the knobs.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    /// Keys are lower-case without the trailing dot.
    addresses: Mutex<HashMap<String, Vec<IpAddr>>>,
    cnames: Mutex<HashMap<String, String>>,
    queries: AtomicUsize,
    truncate_udp: AtomicBool,
    servfail: AtomicBool,
    junk_first: AtomicBool,
    stop: AtomicBool,
}

pub struct TestDnsServer {
    addr: SocketAddr,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

impl TestDnsServer {
    /// Binds UDP and TCP on the same 127.0.0.1 port and starts serving.
    pub fn start() -> TestDnsServer {
        let state = Arc::new(State::default());
        // The OS picks the UDP port; the same TCP port is usually free but not always, so retry.
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("bind test DNS server");
        let addr = udp.local_addr().expect("local addr");
        udp.set_read_timeout(Some(POLL)).expect("set_read_timeout");
        tcp.set_nonblocking(true).expect("set_nonblocking");
        let threads = vec![
            {
                let state = state.clone();
                std::thread::spawn(move || serve_udp(udp, &state))
            },
            {
                let state = state.clone();
                std::thread::spawn(move || serve_tcp(tcp, &state))
            },
        ];
        TestDnsServer { addr, state, threads }
    }

    /// UDP and TCP address (same port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces every address record of `name` (A and AAAA, chosen by each IP's family). An empty
    /// list makes the name exist without addresses (NODATA rather than NXDOMAIN).
    pub fn set(&self, name: &str, ips: Vec<IpAddr>) {
        lock(&self.state.addresses).insert(key(name), ips);
    }

    /// Makes `name` a CNAME for `target`; answers carry the CNAME plus the target's records.
    pub fn set_cname(&self, name: &str, target: &str) {
        lock(&self.state.cnames).insert(key(name), key(target));
    }

    /// Forgets `name` (addresses and CNAME), so it answers NXDOMAIN.
    pub fn remove(&self, name: &str) {
        lock(&self.state.addresses).remove(&key(name));
        lock(&self.state.cnames).remove(&key(name));
    }

    /// Queries received so far, over UDP and TCP, including unparsable ones.
    pub fn queries(&self) -> usize {
        self.state.queries.load(Ordering::SeqCst)
    }

    /// When on, UDP answers are empty with the TC bit set, so clients must retry over TCP.
    pub fn set_truncate_udp(&self, on: bool) {
        self.state.truncate_udp.store(on, Ordering::SeqCst);
    }

    /// When on, every query gets SERVFAIL.
    pub fn set_servfail(&self, on: bool) {
        self.state.servfail.store(on, Ordering::SeqCst);
    }

    /// When on, each UDP answer is preceded by a garbage datagram and by a well-formed answer
    /// with the wrong id, which a client must ignore.
    pub fn set_junk_first(&self, on: bool) {
        self.state.junk_first.store(on, Ordering::SeqCst);
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not wedge every later query.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn serve_udp(socket: UdpSocket, state: &State) {
    let mut buf = vec![0u8; 65535];
    while !state.stop.load(Ordering::SeqCst) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        state.queries.fetch_add(1, Ordering::SeqCst);
        let Some(mut response) = answer(&buf[..len], state) else {
            continue;
        };
        if state.junk_first.load(Ordering::SeqCst) {
            let _ = socket.send_to(b"\xff\xff not dns at all", peer);
            let mut wrong = response.clone();
            wrong.metadata.id = wrong.metadata.id.wrapping_add(1);
            wrong.answers.clear();
            wrong.add_answer(Record::from_rdata(
                response.queries[0].name().clone(),
                1,
                RData::A(A::new(203, 0, 113, 66)),
            ));
            if let Ok(bytes) = wrong.to_vec() {
                let _ = socket.send_to(&bytes, peer);
            }
            // Our own id with a cut-off body: must be dropped, not trusted or panicked on.
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes[..bytes.len().min(14)], peer);
            }
        }
        if state.truncate_udp.load(Ordering::SeqCst) {
            response = response.truncate();
        }
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, peer);
        }
    }
}

fn serve_tcp(listener: TcpListener, state: &State) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => serve_tcp_conn(stream, state),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn serve_tcp_conn(mut stream: TcpStream, state: &State) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // Several queries may share one connection; serve until the client closes or stalls.
    while !state.stop.load(Ordering::SeqCst) {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        state.queries.fetch_add(1, Ordering::SeqCst);
        let Some(bytes) = answer(&query, state).and_then(|m| m.to_vec().ok()) else {
            return;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

/// The full (untruncated) response to a wire query, None for something that is not a query.
fn answer(bytes: &[u8], state: &State) -> Option<Message> {
    let request = Message::from_vec(bytes).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.add_queries(request.queries.iter().cloned());
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Some(response);
    };
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Some(response);
    }
    if state.servfail.load(Ordering::SeqCst) {
        response.metadata.response_code = ResponseCode::ServFail;
        return Some(response);
    }
    response.metadata.authoritative = true;

    let addresses = lock(&state.addresses);
    let cnames = lock(&state.cnames);
    let mut owner = query.name().clone();
    let mut current = key(&owner.to_ascii());
    // Bounded so a CNAME loop set up by a test cannot hang the server.
    for _ in 0..8 {
        let Some(target) = cnames.get(&current) else {
            break;
        };
        let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
            break;
        };
        response.add_answer(Record::from_rdata(owner.clone(), 1, RData::CNAME(CNAME(target_name.clone()))));
        owner = target_name;
        current = target.clone();
    }
    match addresses.get(&current) {
        Some(ips) => {
            for ip in ips {
                let data = match (ip, query.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                response.add_answer(Record::from_rdata(owner.clone(), 1, data));
            }
        }
        // After a CNAME too: RFC 6604 says the rcode describes the end of the chain.
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    Some(response)
}
