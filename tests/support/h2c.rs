//! An h2c (prior-knowledge HTTP/2) upstream for tests: the `h2` crate's server on a
//! current-thread tokio runtime in its own thread. What it does depends on the path:
//! `/grpc` answers a gRPC-style response (no content-length, `grpc-status` trailers),
//! `/hang` never answers (a reset of it by the client is recorded as a request `RESET` with
//! the reason as its path), `/reset` resets the stream with INTERNAL_ERROR, `/refuse` with REFUSED_STREAM, `/goaway`
//! answers and then sends GOAWAY, `/slow` answers after 300 ms; anything else answers 200 with
//! a content-length body `ok <path>`. It records the connections it accepted and each request's
//! pseudo-headers, headers, body and trailers.

#![allow(dead_code)]

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct H2Seen {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl H2Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct H2Upstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<H2Seen>>>,
}

impl H2Upstream {
    pub fn start() -> H2Upstream {
        Self::start_with(None)
    }

    /// The same over TLS, presenting `cert` and `key` (PEM files), for clients that ask for `h2` by
    /// ALPN (others are closed after the handshake).
    pub fn start_tls(cert: &str, key: &str) -> H2Upstream {
        use rustls_pki_types::pem::PemObject;
        let chain =
            rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> H2Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind h2c upstream");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let local = tokio::task::LocalSet::new();
                local
                    .run_until(async move {
                        loop {
                            let Ok((sock, _)) = listener.accept().await else { return };
                            c.fetch_add(1, Ordering::SeqCst);
                            match &tls {
                                None => {
                                    tokio::task::spawn_local(serve(sock, s.clone()));
                                }
                                Some(acceptor) => {
                                    let (acceptor, s) = (acceptor.clone(), s.clone());
                                    tokio::task::spawn_local(async move {
                                        // Only a client that asked for h2 by ALPN is served.
                                        if let Ok(tls) = acceptor.accept(sock).await {
                                            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                                serve(tls, s).await;
                                            }
                                        }
                                    });
                                }
                            }
                        }
                    })
                    .await;
            });
        });
        H2Upstream { addr, connections, seen }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<H2Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    sock: T,
    seen: Arc<Mutex<Vec<H2Seen>>>,
) {
    let Ok(mut conn) = h2::server::handshake(sock).await else { return };
    let goaway = Arc::new(tokio::sync::Notify::new());
    loop {
        let next = tokio::select! {
            r = conn.accept() => Some(r),
            _ = goaway.notified() => None,
        };
        match next {
            None => conn.graceful_shutdown(),
            Some(Some(Ok((req, respond)))) => {
                let (g, s) = (goaway.clone(), seen.clone());
                tokio::task::spawn_local(async move { answer(req, respond, s, g).await });
            }
            Some(_) => break,
        }
    }
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<Mutex<Vec<H2Seen>>>,
    goaway: Arc<tokio::sync::Notify>,
) {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.ok().flatten().unwrap_or_default();
    let pairs = |m: &http::HeaderMap| -> Vec<(String, String)> {
        m.iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
    };
    seen.lock().unwrap().push(H2Seen {
        method: parts.method.to_string(),
        scheme: parts.uri.scheme_str().unwrap_or("").to_string(),
        authority: parts.uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: pairs(&parts.headers),
        body: data.clone(),
        trailers: pairs(&trailers),
    });
    match path.as_str() {
        "/hang" => {
            // Never answers; a reset by the client is recorded as a `RESET` request.
            if let Ok(reason) = std::future::poll_fn(|cx| respond.poll_reset(cx)).await {
                let mut s = seen.lock().unwrap();
                let mut last = s.last().cloned().expect("the /hang request");
                last.method = "RESET".into();
                last.path = format!("{reason:?}");
                s.push(last);
            }
        }
        "/reset" => respond.send_reset(h2::Reason::INTERNAL_ERROR),
        "/refuse" => respond.send_reset(h2::Reason::REFUSED_STREAM),
        "/grpc" => {
            let head = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let Ok(mut tx) = respond.send_response(head, false) else { return };
            let _ = tx.send_data(Bytes::from_static(b"\0\0\0\0\x02hi"), false);
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", "0".parse().unwrap());
            t.insert("grpc-message", "fine".parse().unwrap());
            let _ = tx.send_trailers(t);
        }
        _ => {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if path == "/goaway" {
                goaway.notify_one();
            }
            let text =
                if parts.method == http::Method::POST { data } else { format!("ok {path}").into_bytes() };
            let head = http::Response::builder()
                .status(200)
                .header("content-length", text.len().to_string())
                .header("x-upstream", "h2")
                .body(())
                .unwrap();
            let head_method = parts.method == http::Method::HEAD;
            let Ok(mut tx) = respond.send_response(head, head_method) else { return };
            if !head_method {
                let _ = tx.send_data(Bytes::from(text), true);
            }
        }
    }
}

/// One listener on `port` (0: ephemeral) to cluster `backend` at `upstream` (its protocol given by
/// `protocol`, YAML lines for the cluster at column 0), with an access log of the response code,
/// flags and details, trailers enabled on the HTTP/1 side, and an admin on `admin`.
pub fn config(port: u16, admin: u16, upstream: SocketAddr, protocol: &str, log: &std::path::Path) -> String {
    let head = crate::support::hcm_bootstrap_head(
        port,
        admin,
        log,
        "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%",
    );
    format!(
        r#"{head}                # Envoy's HTTP/1 codec drops trailers without this; skiff relays them always.
                http_protocol_options: {{ enable_trailers: true }}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: backend, timeout: 5s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: backend
      connect_timeout: 0.5s
      type: STATIC
{protocol}      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {up_port} }} }} }}
"#,
        protocol = protocol.lines().map(|l| format!("      {l}\n")).collect::<String>(),
        ip = upstream.ip(),
        up_port = upstream.port(),
    )
}

/// A cluster's protocol options for HTTP/2 by `explicit_http_config` (for `config`).
pub const EXPLICIT_H2: &str = r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http2_protocol_options: {}
"#;
