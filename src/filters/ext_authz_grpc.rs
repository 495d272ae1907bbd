//! `envoy.filters.http.ext_authz` over gRPC (`grpc_service.envoy_grpc`): the unary
//! `envoy.service.auth.v3.Authorization/Check` call Envoy's gRPC client makes — its
//! `CheckRequest` (the peer addresses, the request's pseudo-headers and lower-cased headers, the
//! buffered body), encoded with prost and framed as gRPC, under the metadata Envoy sends
//! (`content-type: application/grpc`, `te: trailers`, `grpc-timeout`, `x-envoy-internal`,
//! `x-forwarded-for` with the host's address, `initial_metadata`) — and what its
//! `CheckResponse` says: OK with the request and response header edits of `ok_response`, a
//! denial with `denied_response`'s status, headers and body, or an error (any other HTTP status,
//! `grpc-status` or an unreadable message). The call is one HTTP/1.1 request the request owner
//! sends through the shard's HTTP/2 bridge (`shard::check`); this module owns no I/O and no
//! decision of the filter's (`ext_authz` counts and applies `failure_mode_allow`).

use crate::config::{ExtAuthzBody, ExtAuthzGrpc};
use crate::http::{RequestHead, Version};
use crate::peer::Connection;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderValueOption, Metadata, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::Timestamp;
use prost::Message;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

/// The method's path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The gRPC status OK.
const GRPC_OK: i32 = 0;
/// Envoy's status of a denial whose `denied_response` gives none.
const DEFAULT_DENIED: u16 = 403;

/// A filter's gRPC client, compiled: the head every call carries but its framing.
#[derive(Debug)]
pub struct GrpcClient {
    head: Vec<u8>,
}

impl GrpcClient {
    pub fn new(g: &ExtAuthzGrpc, timeout: Duration) -> GrpcClient {
        let ms = timeout.as_millis().to_string();
        let mut head = format!("POST {CHECK_PATH} HTTP/1.1\r\n").into_bytes();
        let mut line = |name: &str, value: &str| {
            head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        };
        line("host", &g.authority);
        line("content-type", "application/grpc");
        line("te", "trailers");
        line("grpc-timeout", &format!("{ms}m"));
        // Envoy's async client sends the call as an internal request from this host.
        line("x-envoy-internal", "true");
        line("x-forwarded-for", &local_address().to_string());
        line("x-envoy-expected-rq-timeout-ms", &ms);
        for (name, value) in &g.initial_metadata {
            line(name, value);
        }
        GrpcClient { head }
    }

    /// The `CheckRequest` for `head` on `conn`, without what only comes later: the connection
    /// manager's headers and the request id (`add_connection_manager`) and the body (`add_body`).
    pub fn request(
        &self,
        head: &RequestHead<'_>,
        conn: &Connection<'_>,
        context_extensions: &[(String, String)],
        skip: &dyn Fn(&str) -> bool,
    ) -> GrpcCheck {
        let mut headers = HashMap::new();
        let scheme = if conn.tls.is_some() { "https" } else { "http" };
        let host = head.host.unwrap_or_default();
        for (name, value) in
            [(":authority", host), (":method", head.method), (":path", head.path), (":scheme", scheme)]
        {
            headers.insert(name.to_string(), value.to_string());
        }
        for h in head.headers {
            let name = h.name.to_ascii_lowercase();
            if name == "host" || skip(&name) {
                continue;
            }
            join(&mut headers, name, &String::from_utf8_lossy(h.value));
        }
        let http = HttpRequest {
            method: head.method.to_string(),
            headers,
            path: head.path.to_string(),
            host: host.to_string(),
            scheme: scheme.to_string(),
            protocol: if head.version == Version::Http10 { "HTTP/1.0" } else { "HTTP/1.1" }.to_string(),
            ..Default::default()
        };
        let attributes = AttributeContext {
            source: Some(peer(conn.remote)),
            destination: Some(peer(conn.local)),
            request: Some(Request { time: Some(now()), http: Some(http) }),
            context_extensions: context_extensions.iter().cloned().collect(),
            metadata_context: Some(Metadata::default()),
            ..Default::default()
        };
        GrpcCheck { head: self.head.clone(), request: CheckRequest { attributes: Some(attributes) } }
    }
}

/// One call being made ready: its head and its `CheckRequest`.
#[derive(Debug)]
pub struct GrpcCheck {
    head: Vec<u8>,
    request: CheckRequest,
}

impl GrpcCheck {
    fn http(&mut self) -> Option<&mut HttpRequest> {
        self.request.attributes.as_mut()?.request.as_mut()?.http.as_mut()
    }

    /// A header the connection manager wrote (`x-request-id` is the request's id too).
    pub fn add_connection_manager(&mut self, name: &str, value: &str) {
        let Some(http) = self.http() else { return };
        if name == "x-request-id" {
            http.id = value.to_string();
        }
        join(&mut http.headers, name.to_string(), value);
    }

    /// The body sent (`sent`, None: not buffered), whether it is partial, and how many bytes of
    /// it had arrived (Envoy's `size` is the bytes received by then).
    pub fn add_body(&mut self, sent: Option<(&[u8], bool)>, received: usize, limit: Option<ExtAuthzBody>) {
        let Some(http) = self.http() else { return };
        http.size = received as i64;
        let Some((body, partial)) = sent else { return };
        let partial = if partial { "true" } else { "false" };
        http.headers.insert("x-envoy-auth-partial-body".into(), partial.into());
        if limit.is_some_and(|l| l.pack_as_bytes) {
            http.raw_body = body.to_vec();
        } else {
            // A protobuf string is UTF-8: bytes that are not become U+FFFD (use pack_as_bytes).
            http.body = String::from_utf8_lossy(body).into_owned();
        }
    }

    /// The HTTP/1.1 request of the call: the head and the gRPC message as one chunk (so that
    /// the HTTP/2 bridge sends no `content-length`, as Envoy's client sends none).
    pub fn encode(&self) -> Vec<u8> {
        let message = self.request.encode_to_vec();
        let mut out = Vec::with_capacity(self.head.len() + 64 + message.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(
            format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n", message.len() + 5).as_bytes(),
        );
        out.push(0);
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
        out
    }
}

/// A header into the `CheckRequest`'s map: a repeated one joined by `,`, as Envoy's.
fn join(headers: &mut HashMap<String, String>, name: String, value: &str) {
    match headers.get_mut(&name) {
        Some(v) => {
            v.push(',');
            v.push_str(value);
        }
        None => {
            headers.insert(name, value.to_string());
        }
    }
}

fn now() -> Timestamp {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
}

fn peer(addr: SocketAddr) -> Peer {
    let socket = SocketAddress {
        address: addr.ip().to_string(),
        port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
        ..Default::default()
    };
    Peer {
        address: Some(Address { address: Some(AddressKind::SocketAddress(socket)) }),
        ..Default::default()
    }
}

/// What a `CheckResponse` says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ok(OkEdits),
    Denied { status: u16, headers: Vec<(Vec<u8>, Vec<u8>)>, body: Vec<u8> },
}

/// `ok_response`'s edits, as Envoy applies them: a header whose `append` is true is appended
/// to an existing one (joined by `,`; nothing when there is none), any other is set
/// (`append_action` is not read by Envoy's gRPC client).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OkEdits {
    pub set: Vec<(Vec<u8>, Vec<u8>)>,
    pub append: Vec<(Vec<u8>, Vec<u8>)>,
    pub remove: Vec<Vec<u8>>,
    /// `response_headers_to_add`, for the client.
    pub response: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a call's answer is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    HttpStatus(u16),
    GrpcStatus(String),
    NoGrpcStatus,
    Message(&'static str),
}

/// The answer to a call: its HTTP status, its headers and trailers (names lower-cased) and its
/// body (the gRPC message).
pub fn decode(status: u16, headers: &[(Vec<u8>, Vec<u8>)], body: &[u8]) -> Result<Answer, CallError> {
    if status != 200 {
        return Err(CallError::HttpStatus(status));
    }
    // grpc-status comes in the trailers, or in the headers of a trailers-only answer.
    let grpc_status = headers.iter().rev().find(|(n, _)| n == b"grpc-status").map(|(_, v)| v.trim_ascii());
    match grpc_status {
        None => return Err(CallError::NoGrpcStatus),
        Some(b"0") => {}
        Some(other) => return Err(CallError::GrpcStatus(String::from_utf8_lossy(other).into_owned())),
    }
    let message = match body {
        [0, l0, l1, l2, l3, rest @ ..] if u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize == rest.len() => {
            rest
        }
        [1, ..] => return Err(CallError::Message("compressed message")),
        _ => return Err(CallError::Message("not one gRPC message")),
    };
    let response = CheckResponse::decode(message).map_err(|_| CallError::Message("not a CheckResponse"))?;
    let pairs = |list: &[HeaderValueOption]| -> Vec<(Vec<u8>, Vec<u8>, bool)> {
        list.iter()
            .filter_map(|o| {
                #[allow(deprecated)]
                let append = o.append.is_some_and(|a| a.value);
                let h = o.header.as_ref()?;
                let value =
                    if h.raw_value.is_empty() { h.value.as_bytes().to_vec() } else { h.raw_value.clone() };
                Some((h.key.to_ascii_lowercase().into_bytes(), value, append))
            })
            .filter(|(n, v, _)| header_ok(n) && !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)))
            .collect()
    };
    if response.status.as_ref().map_or(GRPC_OK, |s| s.code) == GRPC_OK {
        let mut edits = OkEdits::default();
        if let Some(HttpResponse::OkResponse(ok)) = &response.http_response {
            for (name, value, append) in pairs(&ok.headers) {
                if append {
                    edits.append.push((name, value));
                } else {
                    edits.set.push((name, value));
                }
            }
            edits.remove = ok
                .headers_to_remove
                .iter()
                .map(|n| n.to_ascii_lowercase().into_bytes())
                // Envoy never removes a pseudo-header or `host`.
                .filter(|n| header_ok(n) && n != b"host")
                .collect();
            edits.response = pairs(&ok.response_headers_to_add).into_iter().map(|(n, v, _)| (n, v)).collect();
        }
        return Ok(Answer::Ok(edits));
    }
    let (status, headers, body) = match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let status = d.status.as_ref().map_or(0, |s| s.code);
            let status =
                u16::try_from(status).ok().filter(|s| (200..600).contains(s)).unwrap_or(DEFAULT_DENIED);
            let headers = pairs(&d.headers).into_iter().map(|(n, v, _)| (n, v)).collect();
            (status, headers, d.body.as_bytes().to_vec())
        }
        _ => (DEFAULT_DENIED, Vec::new(), Vec::new()),
    };
    Ok(Answer::Denied { status, headers, body })
}

/// A header name skiff can write: not empty, a token, not a pseudo-header.
fn header_ok(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic() && !b":()<>@,;\\\"/[]?={}".contains(b))
}

/// The address Envoy's gRPC client puts in `x-forwarded-for`: the host's first non-loopback
/// IPv4 interface address, else the loopback one.
fn local_address() -> IpAddr {
    let mut found = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list freed below by freeifaddrs; every node
    // and its `ifa_addr` (when not null) stay valid until then, and an AF_INET address is a
    // sockaddr_in.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut node = list;
        while !node.is_null() {
            let addr = (*node).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let v4 = &*(addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found = IpAddr::V4(ip);
                    break;
                }
            }
            node = (*node).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::envoy::service::auth::v3::{DeniedHttpResponse, OkHttpResponse};
    use envoy_types::pb::google::protobuf::BoolValue;
    use envoy_types::pb::google::rpc::Status;

    fn framed(r: &CheckResponse) -> Vec<u8> {
        let m = r.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        out
    }

    fn option(name: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
        #[allow(deprecated)]
        HeaderValueOption {
            header: Some(HeaderValue { key: name.into(), value: value.into(), ..Default::default() }),
            append: append.map(|value| BoolValue { value }),
            ..Default::default()
        }
    }

    fn trailers(status: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(b"grpc-status".to_vec(), status.as_bytes().to_vec())]
    }

    #[test]
    fn an_ok_sets_unless_append_is_true_and_a_denial_defaults_to_403() {
        let ok = CheckResponse {
            status: Some(Status { code: 0, ..Default::default() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    option("X-User", "u", None),
                    option("x-a", "1", Some(true)),
                    option(":path", "/x", None),
                ],
                headers_to_remove: vec!["x-gone".into(), "host".into()],
                ..Default::default()
            })),
            ..Default::default()
        };
        let Ok(Answer::Ok(edits)) = decode(200, &trailers("0"), &framed(&ok)) else { panic!("ok") };
        assert_eq!(edits.set, [(b"x-user".to_vec(), b"u".to_vec())]);
        assert_eq!(edits.append, [(b"x-a".to_vec(), b"1".to_vec())]);
        assert_eq!(edits.remove, [b"x-gone".to_vec()]);
        let denied = CheckResponse {
            status: Some(Status { code: 7, ..Default::default() }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 0 }),
                headers: vec![option("x-deny", "d", None)],
                body: "no".into(),
            })),
            ..Default::default()
        };
        let answer = decode(200, &trailers("0"), &framed(&denied));
        let want = Answer::Denied {
            status: 403,
            headers: vec![(b"x-deny".to_vec(), b"d".to_vec())],
            body: b"no".to_vec(),
        };
        assert_eq!(answer, Ok(want));
    }

    #[test]
    fn a_failed_call_is_an_error() {
        let ok = framed(&CheckResponse::default());
        assert_eq!(decode(503, &trailers("0"), &ok), Err(CallError::HttpStatus(503)));
        assert_eq!(decode(200, &trailers("13"), &[]), Err(CallError::GrpcStatus("13".into())));
        assert_eq!(decode(200, &[], &ok), Err(CallError::NoGrpcStatus));
        assert!(matches!(decode(200, &trailers("0"), &ok[..3]), Err(CallError::Message(_))));
    }
}
