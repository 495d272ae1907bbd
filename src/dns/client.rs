//! One DNS question asked of a list of nameservers: UDP first, TCP when the answer is truncated.
//! Everything read from the network is untrusted: malformed or unrelated datagrams are dropped,
//! never unwrapped.

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Bounds the CNAME walk so a looping or absurdly long chain in one answer cannot spin.
const MAX_CNAME_HOPS: usize = 16;

/// What the nameservers, taken together, said about one (name, type) question.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR; empty when the name exists without records of this type (NODATA).
    Addresses(Vec<IpAddr>),
    NxDomain,
    /// Every server failed and at least one of them said so (SERVFAIL, REFUSED, garbage,
    /// connection refused); the detail is the last such failure.
    Failed(String),
    /// No server answered at all.
    Timeout,
}

enum Exchange {
    Response(Message),
    Failed(String),
    Timeout,
}

/// Asks `servers` in turn, `attempts` rounds, `timeout` per server per round, like glibc's
/// res_send: a definite answer (addresses, NODATA or NXDOMAIN) from any server ends the search,
/// and a failing server just passes the question to the next one.
pub fn lookup(
    servers: &[SocketAddr],
    name: &Name,
    record_type: RecordType,
    timeout: Duration,
    attempts: u32,
) -> Outcome {
    let query = Query::query(name.clone(), record_type);
    let mut failure = None;
    for _ in 0..attempts.max(1) {
        for &server in servers {
            match exchange(server, &query, timeout) {
                Exchange::Response(msg) => match msg.metadata.response_code {
                    ResponseCode::NoError => return Outcome::Addresses(addresses(&msg, name, record_type)),
                    ResponseCode::NXDomain => return Outcome::NxDomain,
                    code => failure = Some(format!("nameserver {server} answered {code}")),
                },
                Exchange::Failed(detail) => failure = Some(detail),
                Exchange::Timeout => {}
            }
        }
    }
    match failure {
        Some(detail) => Outcome::Failed(detail),
        None => Outcome::Timeout,
    }
}

fn exchange(server: SocketAddr, query: &Query, timeout: Duration) -> Exchange {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    let id = request.metadata.id;
    let bytes = match request.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => return Exchange::Failed(format!("encoding query: {e}")),
    };
    match exchange_udp(server, &bytes, id, query, timeout) {
        Ok(Some(msg)) => Exchange::Response(msg),
        Ok(None) => match exchange_tcp(server, &bytes, id, query, timeout) {
            Ok(msg) => Exchange::Response(msg),
            Err(e) => io_failure(server, "TCP", e),
        },
        Err(e) => io_failure(server, "UDP", e),
    }
}

fn io_failure(server: SocketAddr, transport: &str, e: io::Error) -> Exchange {
    if is_timeout(&e) {
        Exchange::Timeout
    } else {
        Exchange::Failed(format!("nameserver {server} ({transport}): {e}"))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// The response, or None when it came back truncated and must be re-asked over TCP.
fn exchange_udp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    query: &Query,
    timeout: Duration,
) -> io::Result<Option<Message>> {
    let deadline = Instant::now() + timeout;
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    // Connecting makes the kernel drop datagrams from any other source and turns an ICMP port
    // unreachable into ECONNREFUSED, so a down server is skipped at once instead of timing out.
    socket.connect(server)?;
    socket.send(request)?;
    let mut buf = vec![0u8; 65535];
    let mut malformed = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            // A server that only ever sent garbage is broken, not slow: report it as a failure.
            return Err(if malformed {
                io::Error::new(io::ErrorKind::InvalidData, "malformed response")
            } else {
                timed_out()
            });
        }
        socket.set_read_timeout(Some(deadline - now))?;
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Late answers to an earlier attempt, spoofing attempts and junk all land here; keep
        // listening for ours until the deadline rather than giving up on the server.
        match matching_response(&buf[..len], id, query) {
            Some(msg) if msg.metadata.truncation => return Ok(None),
            Some(msg) => return Ok(Some(msg)),
            None => malformed |= len >= 2 && buf[..2] == id.to_be_bytes(),
        }
    }
}

fn exchange_tcp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    query: &Query,
    timeout: Duration,
) -> io::Result<Message> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&server, timeout)?;
    let _ = stream.set_nodelay(true);
    let len = u16::try_from(request.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    read_full(&mut stream, &mut len, deadline)?;
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_full(&mut stream, &mut response, deadline)?;
    // Over TCP nobody else can inject into the stream, so a mismatch means a broken server.
    matching_response(&response, id, query)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed or mismatched response"))
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    // set_read_timeout rejects zero, and zero time left is a timeout anyway.
    if left.is_zero() {
        Err(timed_out())
    } else {
        Ok(left)
    }
}

/// read_exact with one overall deadline; a per-read timeout alone would let a server that
/// trickles one byte at a time hold the control thread for ever.
fn read_full(stream: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The decoded message if it is a response to our question (id, name, type and class), else None.
fn matching_response(bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    if bytes.len() < 12 || bytes[..2] != id.to_be_bytes() {
        return None;
    }
    let msg = Message::from_vec(bytes).ok()?;
    let answers_our_question = msg.metadata.message_type == MessageType::Response
        && msg.queries.len() == 1
        && msg.queries[0].name() == query.name()
        && msg.queries[0].query_type() == query.query_type()
        && msg.queries[0].query_class() == query.query_class();
    answers_our_question.then_some(msg)
}

/// Addresses of `record_type` for `name`, following the CNAME chain within the answer section:
/// only records owned by the chain's final target count, so unrelated records a server stuffs
/// into the answer are ignored. A chain that leaves the answer section yields nothing (NODATA);
/// recursive servers chase chains themselves, so that only happens with a broken server.
pub fn addresses(msg: &Message, name: &Name, record_type: RecordType) -> Vec<IpAddr> {
    let mut target = name;
    for _ in 0..MAX_CNAME_HOPS {
        let next = msg.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(cname) if r.name == *target && r.dns_class == DNSClass::IN => Some(&cname.0),
            _ => None,
        });
        match next {
            Some(next) => target = next,
            None => break,
        }
    }
    msg.answers
        .iter()
        .filter(|r| r.name == *target && r.dns_class == DNSClass::IN)
        .filter_map(|r| match (&r.data, record_type) {
            (RData::A(a), RecordType::A) => Some(IpAddr::V4(a.0)),
            (RData::AAAA(aaaa), RecordType::AAAA) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::Record;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn response(q: &Query) -> Message {
        let mut msg = Message::response(7, OpCode::Query);
        msg.add_query(q.clone());
        msg
    }

    #[test]
    fn follows_cname_chain_to_final_target() {
        let q = Query::query(name("www.example."), RecordType::A);
        let mut msg = response(&q);
        msg.add_answer(Record::from_rdata(
            name("WWW.example."),
            60,
            RData::CNAME(CNAME(name("edge.example."))),
        ));
        msg.add_answer(Record::from_rdata(
            name("edge.example."),
            60,
            RData::CNAME(CNAME(name("host.example."))),
        ));
        msg.add_answer(Record::from_rdata(name("host.example."), 60, RData::A(A::new(10, 0, 0, 1))));
        msg.add_answer(Record::from_rdata(
            name("host.example."),
            60,
            RData::AAAA(AAAA::new(0, 0, 0, 0, 0, 0, 0, 1)),
        ));
        msg.add_answer(Record::from_rdata(name("other.example."), 60, RData::A(A::new(10, 0, 0, 9))));
        assert_eq!(addresses(&msg, q.name(), RecordType::A), vec![IpAddr::from([10, 0, 0, 1])]);
        assert_eq!(addresses(&msg, q.name(), RecordType::AAAA), vec!["::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn cname_loop_terminates() {
        let q = Query::query(name("a.example."), RecordType::A);
        let mut msg = response(&q);
        msg.add_answer(Record::from_rdata(name("a.example."), 60, RData::CNAME(CNAME(name("b.example.")))));
        msg.add_answer(Record::from_rdata(name("b.example."), 60, RData::CNAME(CNAME(name("a.example.")))));
        assert!(addresses(&msg, q.name(), RecordType::A).is_empty());
    }

    #[test]
    fn rejects_mismatched_and_garbage_responses() {
        let q = Query::query(name("a.example."), RecordType::A);
        let bytes = response(&q).to_vec().unwrap();
        assert!(matching_response(&bytes, 7, &q).is_some());
        assert!(matching_response(&bytes, 8, &q).is_none());
        let other = Query::query(name("a.example."), RecordType::AAAA);
        assert!(matching_response(&bytes, 7, &other).is_none());
        // Every prefix of a valid message, and random-ish junk, must be rejected without panic.
        for len in 0..bytes.len() {
            assert!(matching_response(&bytes[..len], 7, &q).is_none());
        }
        let mut junk = bytes.clone();
        for (i, b) in junk.iter_mut().enumerate().skip(2) {
            *b = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        let _ = matching_response(&junk, 7, &q);
        // A query echoed back (QR bit clear) is not an answer.
        let mut echoed = Message::new(7, MessageType::Query, OpCode::Query);
        echoed.add_query(q.clone());
        assert!(matching_response(&echoed.to_vec().unwrap(), 7, &q).is_none());
    }
}
