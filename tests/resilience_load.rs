//! Issue 8's acceptance run: three real upstreams behind skiff, configured as an operator would
//! (configs/resilience/retry-budget-per-host.yaml: retries on 5xx, resets and connect failures
//! with previous_hosts under a retry budget, outlier detection, an active health check), keep-alive
//! load from four clients while one upstream is killed (its listener closed, its connections
//! reset, a request it is serving dropped unanswered) and restarted on the same port. No client
//! may see an error, and the restarted upstream must serve again.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{stat, Skiff};

/// An HTTP/1.1 upstream that can be killed the way a crashing process dies: no new connection is
/// accepted, every open one is reset (SO_LINGER 0), a request in progress gets no answer.
struct Killable {
    addr: SocketAddr,
    dead: Arc<AtomicBool>,
    /// Requests answered, health checks excluded.
    served: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Killable {
    fn start(name: &'static str, listener: TcpListener) -> Killable {
        let addr = listener.local_addr().expect("upstream address");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let dead = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (d, s, w) = (dead.clone(), served.clone(), workers.clone());
        let acceptor = std::thread::spawn(move || {
            // Polled, so a kill closes the listener within a few milliseconds.
            while !d.load(Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (d, s) = (d.clone(), s.clone());
                        let h = std::thread::spawn(move || serve(name, conn, &d, &s));
                        w.lock().unwrap().push(h);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Killable { addr, dead, served, acceptor: Some(acceptor), workers }
    }

    /// Kills it and waits until its listener and every connection are gone.
    fn kill(mut self) -> SocketAddr {
        self.dead.store(true, Relaxed);
        if let Some(a) = self.acceptor.take() {
            a.join().expect("acceptor");
        }
        for w in std::mem::take(&mut *self.workers.lock().unwrap()) {
            w.join().expect("worker");
        }
        self.addr
    }
}

/// Serves one connection until the upstream dies, then resets it.
fn serve(name: &str, conn: TcpStream, dead: &AtomicBool, served: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(5)));
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut writer = conn;
    let mut head = String::new();
    loop {
        if dead.load(Relaxed) {
            // A crash: RST on the wire, whatever was in progress.
            let _ = socket2::SockRef::from(&writer).set_linger(Some(Duration::ZERO));
            return;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => head.push_str(&line),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                // The read timed out to look at `dead`; what it read of a line is kept.
                head.push_str(&line);
                continue;
            }
            Err(_) => return,
        }
        if !head.ends_with("\r\n\r\n") {
            continue;
        }
        let health = head.starts_with("GET /healthz ");
        head.clear();
        // A little work, so that the kill lands in the middle of some requests.
        std::thread::sleep(Duration::from_millis(3));
        if dead.load(Relaxed) {
            continue;
        }
        let body = if health { "ok" } else { name };
        let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if !health {
            served.fetch_add(1, Relaxed);
        }
    }
}

/// One keep-alive client: GETs until `stop`, reconnecting only when skiff closes the connection
/// after a complete response. Returns (responses, failures described).
fn client(addr: SocketAddr, stop: &AtomicBool) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut failures = Vec::new();
    let mut conn: Option<(BufReader<TcpStream>, TcpStream)> = None;
    while !stop.load(Relaxed) {
        let (reader, writer) = match &mut conn {
            Some(c) => c,
            None => {
                let s = TcpStream::connect(addr).expect("connect to skiff");
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                conn.insert((BufReader::new(s.try_clone().expect("clone")), s))
            }
        };
        if let Err(e) = writer.write_all(b"GET /work HTTP/1.1\r\nhost: app\r\n\r\n") {
            failures.push(format!("write: {e}"));
            conn = None;
            continue;
        }
        match read_response(reader) {
            Ok((200, _, close)) => {
                ok += 1;
                if close {
                    conn = None;
                }
            }
            Ok((status, body, _)) => {
                failures.push(format!("{status} {body}"));
                conn = None;
            }
            Err(e) => {
                failures.push(format!("read: {e}"));
                conn = None;
            }
        }
    }
    (ok, failures)
}

/// (status, body, connection closing) of one response.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed before a response"));
    }
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut len, mut close) = (0, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::Error::other("connection closed in a response head"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().unwrap_or(0),
            "connection" => close = value.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

/// The shipped config with its ports replaced: the listener and admin on ephemeral ports, the
/// three replicas on the upstreams'.
fn config(upstreams: &[SocketAddr; 3]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/resilience/retry-budget-per-host.yaml");
    let mut yaml = std::fs::read_to_string(path).expect("configs/resilience/retry-budget-per-host.yaml");
    yaml = yaml.replace("port_value: 9901", "port_value: 0").replace("port_value: 10000", "port_value: 0");
    for (i, up) in upstreams.iter().enumerate() {
        yaml = yaml.replace(&format!("port_value: {}", 8081 + i), &format!("port_value: {}", up.port()));
    }
    yaml
}

#[test]
fn killing_and_restarting_an_upstream_under_load_costs_no_client_an_error() {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let a = Killable::start("a", bind());
    let b = Killable::start("b", bind());
    let c = Killable::start("c", bind());
    let skiff = Skiff::start(&config(&[a.addr, b.addr, c.addr]), &["--concurrency", "2"]);
    let (addr, admin) = (skiff.listener("ingress"), skiff.admin());

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || client(addr, &stop))
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    let served_before_kill = b.served.load(Relaxed);
    let b_addr = b.kill();
    let killed_at = started.elapsed();
    std::thread::sleep(Duration::from_millis(1200));
    // Restarted on the same port (std sets SO_REUSEADDR, so the port is free at once).
    let b = Killable::start("b", TcpListener::bind(b_addr).expect("rebind the killed upstream's port"));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Relaxed);
    let mut ok = 0;
    let mut failures = Vec::new();
    for h in clients {
        let (n, f) = h.join().expect("client");
        ok += n;
        failures.extend(f);
    }

    let text = support::admin_request(admin, "GET", "/stats").1;
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("cluster.app.upstream_rq_retry")
                || l.starts_with("cluster.app.upstream_cx_connect_fail")
                || l.starts_with("cluster.app.upstream_cx_destroy_remote_with_active_rq")
                || l.starts_with("cluster.app.outlier_detection.ejections_enforced_total")
                || l.starts_with("cluster.app.health_check.")
        })
        .collect();
    eprintln!(
        "{ok} responses, b served {served_before_kill} before the kill and {} after; {shown:?}",
        b.served.load(Relaxed)
    );
    assert!(served_before_kill > 0, "b served nothing before it was killed");
    assert!(ok > 200, "only {ok} responses in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed (b killed at {killed_at:?}): {:?}; retries {:?}, overflow {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)],
        stat(admin, "cluster.app.upstream_rq_retry"),
        stat(admin, "cluster.app.upstream_rq_retry_overflow"),
    );
    assert!(b.served.load(Relaxed) > 0, "the restarted upstream got no traffic back");
    // The kill reached requests, and retries answered them.
    assert!(stat(admin, "cluster.app.upstream_rq_retry").unwrap_or(0) > 0);
    for up in [a, b, c] {
        up.kill();
    }
}
