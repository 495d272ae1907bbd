//! A real gRPC authorization server for the tests (`envoy.service.auth.v3.Authorization/Check`
//! on tonic, with the Envoy API types skiff itself uses), on a thread of its own: it answers by
//! the request's `authorization` header and records each call — the gRPC metadata it came with
//! and its `CheckRequest`, rendered as text with the values that differ between runs (ports, ids,
//! times) masked, so that what Envoy and skiff sent can be compared line for line.
#![allow(dead_code)]
// The deprecated `append` is what most authorization servers still send.
#![allow(deprecated)]

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};
use tonic_thread::TonicThread;

#[path = "tonic_thread.rs"]
mod tonic_thread;

/// Values that differ between runs and proxies, shown as `*`.
const VARYING: &[&str] = &["x-request-id", "grpc-timeout", "x-envoy-expected-rq-timeout-ms"];

/// The server; stops when dropped.
pub struct AuthzServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    _server: TonicThread,
}

#[derive(Clone)]
struct Service {
    seen: Arc<Mutex<Vec<String>>>,
}

fn header(name: &str, value: &str) -> HeaderValue {
    HeaderValue { key: name.into(), value: value.into(), ..Default::default() }
}

/// A header with the deprecated `append` set.
fn appended(name: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(header(name, value)),
        append: Some(BoolValue { value: append }),
        ..Default::default()
    }
}

/// A header with `append_action`.
fn action(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(header(name, value)),
        append_action: action as i32,
        ..Default::default()
    }
}

fn rpc(code: i32) -> Option<RpcStatus> {
    Some(RpcStatus { code, message: String::new(), details: Vec::new() })
}

/// `Bearer token1`: OK, setting, appending, adding-if-absent and removing request headers and
/// adding response headers; `slow`: OK after a second; `err`: a gRPC INTERNAL error; `plain`:
/// PERMISSION_DENIED without a denied response; anything else: PERMISSION_DENIED with a 401,
/// headers and a body.
fn answer(authorization: &str) -> Result<CheckResponse, Status> {
    match authorization {
        "Bearer token1" => Ok(CheckResponse {
            status: rpc(0),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    appended("x-current-user", "user1", false),
                    appended("x-appended", "a1", true),
                    action("x-append", "a1", HeaderAppendAction::AppendIfExistsOrAdd),
                    action("x-absent", "new", HeaderAppendAction::AddIfAbsent),
                    action("x-overwrite", "o1", HeaderAppendAction::OverwriteIfExistsOrAdd),
                    action("x-if-exists", "e1", HeaderAppendAction::OverwriteIfExists),
                ],
                headers_to_remove: vec!["x-remove-me".into()],
                response_headers_to_add: vec![
                    appended("x-client-ok", "c", false),
                    appended("x-client-true", "t", true),
                    action("x-client-append", "c2", HeaderAppendAction::AppendIfExistsOrAdd),
                    action("x-client-over", "o", HeaderAppendAction::OverwriteIfExistsOrAdd),
                    action("x-client-absent", "a", HeaderAppendAction::AddIfAbsent),
                ],
                ..Default::default()
            })),
            ..Default::default()
        }),
        "err" => Err(Status::internal("authz broke")),
        "plain" => Ok(CheckResponse { status: rpc(7), ..Default::default() }),
        _ => Ok(CheckResponse {
            status: rpc(7),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![appended("x-deny", "d", false), appended("www-authenticate", "Bearer", false)],
                body: "nope".into(),
            })),
            ..Default::default()
        }),
    }
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let mut metadata: Vec<String> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(n, v)| masked(n.as_str(), &String::from_utf8_lossy(v.as_bytes())))
            .collect();
        metadata.sort();
        let check = request.into_inner();
        let authorization = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .and_then(|h| h.headers.get("authorization").cloned())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(format!("metadata [{}]\n{}", metadata.join(", "), render(&check)));
        if authorization == "slow" {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            return Ok(Response::new(CheckResponse { status: rpc(0), ..Default::default() }));
        }
        answer(&authorization).map(Response::new)
    }
}

fn masked(name: &str, value: &str) -> String {
    if VARYING.contains(&name) {
        format!("{name}: *")
    } else {
        format!("{name}: {value}")
    }
}

/// An address as `ip:*` (the port is ephemeral) or, with `port`, `ip:port`.
fn address(peer: Option<&Peer>, port: bool) -> String {
    let Some(Address { address: Some(AddressKind::SocketAddress(s)) }) =
        peer.and_then(|p| p.address.as_ref())
    else {
        return format!("{:?}", peer.map(|p| &p.address));
    };
    match (&s.port_specifier, port) {
        (Some(PortSpecifier::PortValue(p)), true) => format!("{}:{p}", s.address),
        _ => format!("{}:*", s.address),
    }
}

/// A `CheckRequest` as text: one line per field, the headers sorted, varying values masked.
pub fn render(c: &CheckRequest) -> String {
    let Some(a) = &c.attributes else { return "no attributes".into() };
    let mut out = vec![
        format!(
            "source {} principal {:?}",
            address(a.source.as_ref(), false),
            a.source.as_ref().map(|s| &s.principal)
        ),
        // The listener's port differs between the proxies.
        format!("destination {}", address(a.destination.as_ref(), false)),
    ];
    let mut ext: Vec<_> = a.context_extensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ext.sort();
    out.push(format!("context_extensions [{}]", ext.join(", ")));
    out.push(format!("metadata_context {:?}", a.metadata_context.as_ref().map(|m| m.filter_metadata.len())));
    out.push(format!("tls_session {:?}", a.tls_session));
    let Some(r) = &a.request else {
        out.push("no request".into());
        return out.join("\n");
    };
    out.push(format!("time set {}", r.time.is_some()));
    if let Some(h) = &r.http {
        let mut headers: Vec<String> = h.headers.iter().map(|(n, v)| masked(n, v)).collect();
        headers.sort();
        out.push(format!("id set {}", !h.id.is_empty()));
        out.push(format!("method {:?} path {:?} host {:?} scheme {:?}", h.method, h.path, h.host, h.scheme));
        out.push(format!(
            "query {:?} fragment {:?} size {} protocol {:?}",
            h.query, h.fragment, h.size, h.protocol
        ));
        out.push(format!("headers [{}]", headers.join(", ")));
        out.push(format!("header_map {:?}", h.header_map));
        out.push(format!("body {:?} raw_body {:?}", h.body, String::from_utf8_lossy(&h.raw_body)));
    }
    out.join("\n")
}

impl AuthzServer {
    /// Listens on a free loopback port.
    pub fn start() -> AuthzServer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = Service { seen: seen.clone() };
        let server = TonicThread::serve(AuthorizationServer::new(service));
        AuthzServer { addr: server.addr, seen, _server: server }
    }

    /// Every call so far, rendered.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}
