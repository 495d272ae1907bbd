//! What the integration tests run against: the real skiff binary, real upstream HTTP servers on
//! ephemeral loopback ports, and a raw HTTP client. Include with `mod support;`.
#![allow(dead_code)]

pub mod ext_authz;
pub mod filters;
pub mod h2;
pub mod tls;
pub mod websocket;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A unique scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "skiff-test-{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A running skiff process; killed on drop.
pub struct Skiff {
    pub child: Child,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub dir: PathBuf,
    /// Where the child's stdout goes when started with `start_capturing_stdout` (else /dev/null).
    pub stdout_path: Option<PathBuf>,
}

impl Skiff {
    /// Starts skiff on `yaml` (written to a file so tests can change it) with extra arguments, and
    /// waits until it logs that it started.
    pub fn start(yaml: &str, args: &[&str]) -> Skiff {
        Self::try_start(yaml, args).unwrap_or_else(|log| panic!("skiff did not start:\n{log}"))
    }

    pub fn try_start(yaml: &str, args: &[&str]) -> Result<Skiff, String> {
        Self::try_start_with(yaml, args, false)
    }

    /// Like `start`, but the child's stdout goes to a file in the scratch dir (see `stdout()`).
    pub fn start_capturing_stdout(yaml: &str, args: &[&str]) -> Skiff {
        Self::try_start_with(yaml, args, true).unwrap_or_else(|log| panic!("skiff did not start:\n{log}"))
    }

    fn try_start_with(yaml: &str, args: &[&str], capture_stdout: bool) -> Result<Skiff, String> {
        let dir = scratch_dir("skiff");
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let log_path = dir.join("skiff.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let stdout_path = capture_stdout.then(|| dir.join("stdout.log"));
        let stdout = match &stdout_path {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("stdout file")),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("-c")
            .arg(&config_path)
            .args(["-l", "debug", "--config-check-interval-s", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn skiff");
        let mut skiff = Skiff { child, config_path, log_path, dir, stdout_path };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = skiff.log();
            if log.contains("starting:") {
                // Shards start right after this line; give them a moment to take their sockets.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(skiff);
            }
            if let Ok(Some(_)) = skiff.child.try_wait() {
                return Err(log);
            }
            if Instant::now() > deadline {
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address listener `name` is bound on, from the log.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let needle = format!("listener {name:?} listening on ");
        let log = self.log();
        let line = log.lines().rfind(|l| l.contains(&needle)).unwrap_or_else(|| {
            panic!("no listener {name} in log:\n{log}");
        });
        let addr = line.split(&needle).nth(1).expect("address");
        addr.trim().parse().expect("listener address")
    }

    /// The admin server's address, from `admin listening on ADDR` in the log (so `port_value: 0`
    /// works).
    pub fn admin(&self) -> SocketAddr {
        let needle = "admin listening on ";
        let mut log = self.log();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log.contains(needle) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            log = self.log();
        }
        let line =
            log.lines().rfind(|l| l.contains(needle)).unwrap_or_else(|| panic!("no admin in log:\n{log}"));
        line.split(needle).nth(1).expect("address").trim().parse().expect("admin address")
    }

    /// What the child wrote to stdout (empty unless started with `start_capturing_stdout`).
    pub fn stdout(&self) -> String {
        self.stdout_path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// Rewrites the config file in place (the proxy picks it up on its next check).
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.dir.join("envoy.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// Waits until the log contains `needle` (after `skip` bytes), up to `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How a test upstream answers.
pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub enum Reply {
    /// A complete response with content-length.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Raw bytes, then keep the connection (true) or close it.
    Raw(Vec<u8>, bool),
    /// Close without answering.
    Hang(Duration),
    Close,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply::Full { status: 200, headers: vec![], body: body.as_bytes().to_vec() }
    }
}

/// A real HTTP/1.1 server on 127.0.0.1:0: keep-alive, Content-Length and chunked request bodies.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl TestUpstream {
    /// Answers every request with 200 and `name` as the body.
    pub fn named(name: &str) -> TestUpstream {
        let name = name.to_string();
        Self::start(Arc::new(move |_| Reply::ok(&name)))
    }

    /// Echoes the request: body is "METHOD PATH\n" + headers + "\n" + body.
    pub fn echo() -> TestUpstream {
        Self::start(Arc::new(|s: &Seen| {
            let mut body = format!("{} {}\n", s.method, s.path);
            for (n, v) in &s.headers {
                body.push_str(&format!("{n}: {v}\n"));
            }
            body.push('\n');
            let mut bytes = body.into_bytes();
            bytes.extend_from_slice(&s.body);
            Reply::Full { status: 200, headers: vec![], body: bytes }
        }))
    }

    pub fn start(handler: Handler) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Self::serve(listener, handler)
    }

    pub fn serve(listener: TcpListener, handler: Handler) -> TestUpstream {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::Relaxed);
                let (h, s) = (handler.clone(), s.clone());
                std::thread::spawn(move || serve_conn(stream, h, s));
            }
        });
        TestUpstream { addr, seen, connections }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve_conn(stream: TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let Some(headers) = read_header_lines(&mut reader) else { return };
        let get =
            |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
                if n == 0 {
                    let mut end = String::new();
                    let _ = reader.read_line(&mut end);
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let req = Seen { method, path, headers, body };
        seen.lock().unwrap().push(req.clone());
        match handler(&req) {
            Reply::Full { status, headers, body } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (n, v) in headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                if req.method != "HEAD" {
                    bytes.extend_from_slice(&body);
                }
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Raw(bytes, keep) => {
                if writer.write_all(&bytes).is_err() || !keep {
                    return;
                }
            }
            Reply::Hang(d) => {
                std::thread::sleep(d);
                return;
            }
            Reply::Close => return,
        }
    }
}

/// A response as a client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client connection that reads responses by their framing.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to skiff");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).expect("write request");
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response(false).expect("response")
    }

    /// Reads one response; None when the connection closed first.
    pub fn read_response(&mut self, head_request: bool) -> Option<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response { status, headers, body: Vec::new() };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Some(resp);
        }
        if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            resp.body.resize(len, 0);
            self.reader.read_exact(&mut resp.body).ok()?;
        } else if resp.header("transfer-encoding").is_some() {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).ok()?;
                let n = usize::from_str_radix(size.trim(), 16).ok()?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                resp.body.extend_from_slice(&chunk[..n]);
            }
        } else {
            self.reader.read_to_end(&mut resp.body).ok()?;
        }
        Some(resp)
    }

    /// True when the server closed the connection (reads EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).get(path)
}

/// Sends raw bytes and returns everything the server sends until it closes (or 5 s pass).
pub fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A loopback port that was free a moment ago (bound, then released) for a listener the test
/// starts. Taken below the kernel's ephemeral range, so that no port-0 bind (skiff's test
/// listeners, upstreams) and no outgoing connection's source port can be given it meanwhile: a
/// port-0 listener that got an Envoy's admin port before Envoy bound it answered that Envoy's
/// readiness probe (seen in CI). Never the same port twice in one test process: Envoy and skiff
/// bind with SO_REUSEPORT, so two parallel tests handed one port would both bind it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOW);
    // Test processes that run at once (another binary's leftovers, a second checkout) start at
    // different places.
    let start = std::process::id().wrapping_mul(7919) % span.max(1);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(span > 1000 && n < span, "no free port below the ephemeral range ({ephemeral})");
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback port nobody listens on, and nobody can take for the rest of the test process:
/// the socket stays bound without listening (a connect gets RST, i.e. ECONNREFUSED), so a
/// parallel test's upstream cannot be handed the same ephemeral port.
pub fn dead_port() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    // Deliberately leaked: the reservation must outlive every proxy the test starts.
    std::mem::forget(s);
    addr
}

/// A minimal v3 config: one listener on 127.0.0.1:0 routing everything to a STATIC cluster.
pub fn simple_config(upstreams: &[SocketAddr]) -> String {
    let endpoints: String = upstreams
        .iter()
        .map(|a| {
            format!(
                "              - endpoint:\n                  address:\n                    socket_address: {{ address: {}, port_value: {} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        r#"static_resources:
  listeners:
    - name: main
      address:
        socket_address: {{ address: 127.0.0.1, port_value: 0 }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: backend, timeout: 2s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: backend
      connect_timeout: 0.5s
      type: STATIC
      lb_policy: ROUND_ROBIN
      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
{endpoints}"#
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers for routing, reload, DNS and CLI tests (additive: nothing above changes).

impl TestUpstream {
    /// Echoes like `echo()`, but the first body line is `name`, so a test can tell upstreams apart
    /// and still see what the upstream received.
    pub fn echo_named(name: &str) -> TestUpstream {
        Self::start(echo_named_handler(name))
    }

    /// Binds `addr` (e.g. `127.0.0.2:0`, or a fixed port) and answers with `name`, echoing the
    /// request after it. Err when the address cannot be bound (busy port).
    pub fn echo_named_at(addr: SocketAddr, name: &str) -> std::io::Result<TestUpstream> {
        let listener = TcpListener::bind(addr)?;
        Ok(Self::serve(listener, echo_named_handler(name)))
    }
}

fn echo_named_handler(name: &str) -> Handler {
    let name = name.to_string();
    Arc::new(move |s: &Seen| {
        let mut body = format!("{name}\n{} {}\n", s.method, s.path);
        for (n, v) in &s.headers {
            body.push_str(&format!("{n}: {v}\n"));
        }
        Reply::Full {
            status: 200,
            headers: vec![("x-upstream".into(), name.clone())],
            body: body.into_bytes(),
        }
    })
}

impl Response {
    /// The first body line: the upstream's name for `echo_named` upstreams.
    pub fn first_line(&self) -> String {
        self.text().lines().next().unwrap_or("").to_string()
    }
}

impl Client {
    /// Tries to connect; Err when nothing listens (or the connect fails otherwise).
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// A GET with the given Host and extra header lines; None when the connection closed.
    pub fn request(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.writer.write_all(req.as_bytes()).ok()?;
        self.read_response(false)
    }
}

/// One GET with a Host header on a fresh connection.
pub fn get_host(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    Client::connect(addr).request(host, path, headers).expect("response")
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Re-indents a block written at column 0 by `n` spaces (for splicing YAML).
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| if l.trim().is_empty() { "\n".to_string() } else { format!("{pad}{l}\n") }).collect()
}

/// The start of the v3 bootstrap the parity-style tests share: an admin on `admin` and listener
/// `main` on `port` (0 = ephemeral) whose connection manager (`stat_prefix: ingress`) writes
/// `log_format` to the file `log`. The caller goes on at the connection manager's other fields
/// (column 16: `route_config:`, `http_filters:`), then `clusters`.
pub fn hcm_bootstrap_head(port: u16, admin: u16, log: &std::path::Path, log_format: &str) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
    - name: main
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                # Envoy lingers this long (default 1 s) before closing after a local reply with
                # `connection: close`; the tests read until close, one request after another.
                delayed_close_timeout: 0.1s
                access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                      path: {log}
                      log_format: {{ text_format_source: {{ inline_string: "{log_format}\n" }} }}
"#,
        log = log.display(),
    )
}

/// A file `access_log:` block (YAML at column 0) writing `format` and a newline to `path`.
pub fn file_access_log_yaml(path: &std::path::Path, format: &str) -> String {
    format!(
        "access_log:\n  - name: envoy.access_loggers.file\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n      path: {}\n      log_format:\n        text_format_source:\n          inline_string: \"{format}\\n\"\n",
        path.display()
    )
}

/// A connection manager as one entry of a chain's `filters` (YAML at column 0): `stat_prefix`,
/// the lines `extra` (its other fields, at column 0), and one route for every path whose action is
/// `action` (a flow mapping entry such as `route: { cluster: backend }`).
pub fn hcm_filter_yaml(stat_prefix: &str, extra: &str, action: &str) -> String {
    format!(
        r#"- name: envoy.filters.network.http_connection_manager
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
    stat_prefix: {stat_prefix}
{extra}    route_config:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: "/" }}
              {action}
    http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        extra = indent(extra, 4)
    )
}

/// `hcm_filter_yaml` answering every request 200 `served` itself.
pub fn served_hcm_yaml(stat_prefix: &str, extra: &str) -> String {
    hcm_filter_yaml(stat_prefix, extra, "direct_response: { status: 200, body: { inline_string: served } }")
}

/// One v3 listener: `name` on `address` (port 0 = ephemeral) with the given route_config block
/// (YAML written at column 0, the contents of `route_config:`).
pub fn listener_yaml(name: &str, address: &str, route_config: &str) -> String {
    format!(
        r#"- name: {name}
  address:
    socket_address: {{ address: {address}, port_value: 0 }}
  filter_chains:
    - filters:
        - name: envoy.filters.network.http_connection_manager
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
            stat_prefix: {name}
            route_config:
{rc}            http_filters:
              - name: envoy.filters.http.router
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        rc = indent(route_config, 14)
    )
}

/// A STATIC v3 cluster with weighted endpoints.
pub fn static_cluster_yaml(name: &str, lb: &str, endpoints: &[(SocketAddr, u32)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(a, w)| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n          load_balancing_weight: {w}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "- name: {name}\n  connect_timeout: 0.5s\n  type: STATIC\n  lb_policy: {lb}\n  load_assignment:\n    cluster_name: {name}\n    endpoints:\n      - lb_endpoints:\n{eps}"
    )
}

/// A whole bootstrap from listener and cluster blocks (each written at column 0).
pub fn bootstrap_yaml(listeners: &[String], clusters: &[String]) -> String {
    let l: String = listeners.iter().map(|b| indent(b, 4)).collect();
    let c: String = clusters.iter().map(|b| indent(b, 4)).collect();
    format!("static_resources:\n  listeners:\n{l}  clusters:\n{c}")
}
/// Starts skiff on `yaml` with two shards and the given io driver ("epoll", "uring" or "auto").
pub fn start_with_driver(yaml: &str, driver: &str) -> Skiff {
    Skiff::start(yaml, &["--concurrency", "2", "--io-driver", driver])
}

/// `simple_config` with extra pieces spliced in: `hcm_extra` are YAML lines for the
/// HttpConnectionManager (indented 16 spaces), `route_extra` goes inside the route's flow map (e.g.
/// `", retry_policy: { retry_on: 5xx }"`), `cluster_extra` are YAML lines for the cluster (indented 6).
pub fn custom_config(
    upstreams: &[SocketAddr],
    hcm_extra: &str,
    route_extra: &str,
    cluster_extra: &str,
) -> String {
    simple_config(upstreams)
        .replace("stat_prefix: ingress\n", &format!("stat_prefix: ingress\n{hcm_extra}"))
        .replace("timeout: 2s }", &format!("timeout: 2s{route_extra} }}"))
        .replace("      connect_timeout: 0.5s\n", &format!("      connect_timeout: 0.5s\n{cluster_extra}"))
}

/// What a raw exchange produced: everything read, and whether the server closed the connection
/// (false: it was still open when `limit` ran out).
pub struct RawResult {
    pub text: String,
    pub closed: bool,
}

/// Writes `raw` on a fresh connection and reads until the server closes or `limit` passes.
pub fn raw_until_close(addr: SocketAddr, raw: &[u8], limit: Duration) -> RawResult {
    let mut s = TcpStream::connect(addr).expect("connect");
    // The server may answer and close before all of `raw` is written; that is not an error here.
    let _ = s.write_all(raw);
    read_until_close(&mut s, limit)
}

/// Reads from `s` until EOF (closed: true), a reset (closed: true) or `limit` (closed: false).
pub fn read_until_close(s: &mut TcpStream, limit: Duration) -> RawResult {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    RawResult { text: String::from_utf8_lossy(&out).into_owned(), closed }
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `len` bytes of a deterministic, non-repeating-looking pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i.wrapping_mul(31) ^ (i >> 8)) as u8).wrapping_add(seed)).collect()
}

impl Client {
    /// Connects with a custom read timeout.
    pub fn connect_with_timeout(addr: SocketAddr, read_timeout: Duration) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to skiff");
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    /// The underlying stream (for half-closes, raw writes).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

/// A scripted upstream on 127.0.0.1:0: each accepted connection runs `script(stream, n)` on its own
/// thread (`n` counts connections from 0). For misbehaviour TestUpstream cannot express.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    pub fn start(script: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = c.fetch_add(1, Ordering::Relaxed);
                let script = script.clone();
                std::thread::spawn(move || script(stream, n));
            }
        });
        RawUpstream { addr, connections }
    }
}

/// Reads one request head (no body) from `s`; None on EOF or error first.
pub fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A config with two clusters: `/good...` goes to `good`, everything else to `backend` (made of
/// `upstreams`, possibly none). `route_extra` and `cluster_extra` apply to `backend` as in
/// `custom_config`.
pub fn two_cluster_config(
    upstreams: &[SocketAddr],
    good: SocketAddr,
    route_extra: &str,
    cluster_extra: &str,
) -> String {
    let base = custom_config(upstreams, "", route_extra, cluster_extra);
    let good_route = "                        - match: { prefix: \"/good\" }\n                          route: { cluster: good, timeout: 2s }\n";
    let base = base.replacen(
        "                        - match: { prefix: \"/\" }\n",
        &format!("{good_route}                        - match: {{ prefix: \"/\" }}\n"),
        1,
    );
    format!(
        "{base}    - name: good\n      connect_timeout: 0.5s\n      type: STATIC\n      load_assignment:\n        cluster_name: good\n        endpoints:\n          - lb_endpoints:\n              - endpoint:\n                  address:\n                    socket_address: {{ address: {}, port_value: {} }}\n",
        good.ip(),
        good.port()
    )
}

/// One admin request on a fresh connection: (status, body).
/// `yaml` with an admin listener on an ephemeral loopback port (`Skiff::admin` finds it).
pub fn with_admin(yaml: &str) -> String {
    format!("{yaml}admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n")
}

/// A counter or gauge from the admin's `/stats`, by full name.
pub fn stat(admin: SocketAddr, name: &str) -> Option<u64> {
    stat_in(&admin_request(admin, "GET", "/stats").1, name)
}

/// A counter or gauge by full name in `/stats` text.
pub fn stat_in(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok())
}

pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let raw = raw_exchange(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// What a collector received: (request line + headers, body) of each POST.
pub type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A Zipkin collector on 127.0.0.1:0: records the body of every POST and answers 202.
pub struct Collector {
    pub addr: SocketAddr,
    /// (request line + headers, body) of each POST, in arrival order.
    pub posts: Posts,
}

impl Collector {
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let p = posts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let p = p.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // Every complete request in `buf`, then read more (keep-alive is fine).
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            let length: usize = head
                                .lines()
                                .find_map(|l| {
                                    let (n, v) = l.split_once(':')?;
                                    n.trim()
                                        .eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() < end + 4 + length {
                                break;
                            }
                            let body = buf[end + 4..end + 4 + length].to_vec();
                            buf.drain(..end + 4 + length);
                            p.lock().unwrap().push((head, body));
                            if conn.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").is_err()
                            {
                                return;
                            }
                        }
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Collector { addr, posts }
    }

    /// Every span received so far (each POST body is a JSON array of Zipkin v2 spans).
    pub fn spans(&self) -> Vec<serde_json::Value> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).expect("collector got JSON");
                v.as_array().expect("a JSON array of spans").clone()
            })
            .collect()
    }
}

/// Reads header lines up to the blank line that ends a head, as (name, value) pairs with
/// whitespace trimmed; None when the peer closed before the blank line.
pub fn read_header_lines(reader: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Some(headers);
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// Two upstreams on one port, on 127.0.0.2 ("two") and 127.0.0.3 ("three"), so that only the
/// address DNS gives decides which one a request reaches.
pub fn twin_upstreams() -> (TestUpstream, TestUpstream) {
    for _ in 0..20 {
        let two = TestUpstream::echo_named_at("127.0.0.2:0".parse().expect("address"), "two")
            .expect("bind 127.0.0.2");
        let port = two.addr.port();
        let three_at = SocketAddr::new("127.0.0.3".parse().expect("address"), port);
        if let Ok(three) = TestUpstream::echo_named_at(three_at, "three") {
            return (two, three);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// A config with an admin on `admin` and one listener `main` on `port` (0 = any) whose filter chain
/// is `filters` (list items indented for it), then one static ROUND_ROBIN cluster per
/// `(name, address)`.
pub fn one_listener_config(
    (port, admin): (u16, u16),
    filters: &str,
    clusters: &[(&str, SocketAddr)],
) -> String {
    let listener = format!(
        "- name: main\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  filter_chains:\n    - filters:\n"
    );
    let clusters: String = clusters
        .iter()
        .map(|(name, a)| indent(&static_cluster_yaml(name, "ROUND_ROBIN", &[(*a, 1)]), 4))
        .collect();
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}{filters}  clusters:\n{clusters}",
        indent(&listener, 4),
    )
}
