//! A real gRPC service and client for the gRPC tests (`tests/grpc.rs`): `grpc_echo.py` beside this
//! file, run with grpcio from PyPI (generic handlers: no .proto, no generated code). The server is
//! a child process on an ephemeral loopback port, killed on drop; the client runs every call of the
//! script through a target and returns what it saw, one JSON object per call. Also the shipped
//! `configs/protocols/grpc.yaml` with its ports and log path replaced.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/grpc_echo.py")
}

/// Whether `python3` can import grpcio. Under CI (`CI` set) its absence is a failure (.ci/run
/// installs it); elsewhere the caller skips, saying so on stderr.
pub fn grpcio_or_skip(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: python3 cannot import grpc; CI must install it: python3 -m pip install grpcio");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: python3 cannot import grpc (python3 -m pip install grpcio)"
        );
    }
    ok
}

/// The echo service (`test.Echo`) on 127.0.0.1, speaking HTTP/2 without TLS; killed on drop.
pub struct EchoServer {
    child: Child,
    pub addr: SocketAddr,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let mut child = Command::new("python3")
            .arg(script())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3 grpc_echo.py serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("server stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
            let _ = child.kill();
            panic!("grpc_echo.py serve did not say its port: {line:?}");
        };
        EchoServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the client saw of one call: its name, the messages it got, the status code's name
/// (`OK`, `UNAVAILABLE`, …), the status details and the trailing (and, on success, initial)
/// metadata the service sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub call: String,
    pub messages: Vec<String>,
    pub code: String,
    pub details: String,
    pub trailing: Vec<(String, String)>,
    pub initial: Vec<(String, String)>,
}

/// Runs every call of the script (unary, server-streaming, bidi-streaming, a failing one, an
/// unknown method) through `target` over HTTP/2, and returns what the client saw of each.
pub fn call_all(target: SocketAddr) -> Vec<Call> {
    let out = Command::new("python3")
        .arg(script())
        .arg("call")
        .arg(target.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run python3 grpc_echo.py call");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc_echo.py call {target} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(parse_call).collect()
}

fn parse_call(line: &str) -> Call {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let pairs = |k: &str| {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (p[0].as_str().unwrap_or("").to_string(), p[1].as_str().unwrap_or("").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Call {
        call: s("call"),
        messages: v["messages"]
            .as_array()
            .map(|a| a.iter().map(|m| m.as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default(),
        code: s("code"),
        details: s("details"),
        trailing: pairs("trailing"),
        initial: pairs("initial"),
    }
}

/// `configs/protocols/grpc.yaml` listening on `port` (0 = ephemeral), admin on `admin`, its cluster
/// at `server`, its access log written to `log`.
pub fn config(port: u16, admin: u16, server: SocketAddr, log: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/protocols/grpc.yaml");
    let text = std::fs::read_to_string(&path).expect("read configs/protocols/grpc.yaml");
    let replaced = text
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("address: 0.0.0.0, port_value: 10000", &format!("address: 127.0.0.1, port_value: {port}"))
        .replace(
            "address: 127.0.0.1, port_value: 50051",
            &format!("address: {}, port_value: {}", server.ip(), server.port()),
        )
        .replace("path: /dev/stdout", &format!("path: {}", log.display()));
    assert_ne!(
        text, replaced,
        "configs/protocols/grpc.yaml no longer has the placeholders the test replaces"
    );
    replaced
}
