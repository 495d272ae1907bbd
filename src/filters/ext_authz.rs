//! `envoy.filters.http.ext_authz` over HTTP (and, through `ext_authz_grpc`, over gRPC): writes
//! the check request Envoy's raw HTTP client
//! sends to the authorization cluster (the method, the prefixed path, `host`, the allowed
//! headers, `headers_to_add`, optionally the buffered body), and decides on its answer: a 200
//! lets the request through with the allowed headers added upstream, a 5xx or a failed exchange
//! is an error (`status_on_error`, or through with `failure_mode_allow`), anything else is the
//! denial the client gets (a gRPC answer: `ext_authz_grpc::decode`). Owns no I/O: the exchange is the request owner's (`Check`, awaited
//! by `shard::request`, carried by `shard::check`).

use super::ext_authz_grpc::{self, GrpcClient};
use super::verdict::{push_header, Check, CheckAnswer, CheckFailure, CheckOutcome, CheckReply, Verdict};
use crate::access_log::ResponseFlags;
use crate::config::{self, ExtAuthzBody, ExtAuthzPerRoute};
use crate::http::RequestHead;
use crate::peer::Connection;
use crate::route::BuildError;
use crate::stats::ExtAuthzStats;
use crate::string_match::StringMatch;
use std::collections::HashMap;
use std::time::Duration;

/// Sent to the authorization service whatever `allowed_headers` says (Envoy's fixed set; the
/// method and path are the request line's, and `content-length` is the check's own).
const ALWAYS_SENT: &[&str] = &["authorization"];
/// Headers the connection manager writes (adds, or replaces the client's) before Envoy's filters
/// see the request: the check takes them from the upstream head (`Check::add_lines`).
const FROM_CONNECTION_MANAGER: &[&str] =
    &["x-forwarded-for", "x-forwarded-proto", "x-envoy-external-address", "x-request-id"];
/// Allowed to the client by any non-empty `allowed_client_headers` (Envoy adds them).
const ALWAYS_TO_CLIENT: &[&str] = &["www-authenticate", "location"];
/// Headers of the authorization response skiff never passes on: the framing and hop-by-hop
/// ones are its own to write, and `date`/`server` are replaced by the proxy's (as Envoy does).
const NEVER_COPIED: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "date", "server"];

/// One ext_authz filter, compiled.
#[derive(Debug)]
pub struct ExtAuthz {
    cluster: usize,
    timeout: Duration,
    path_prefix: Box<str>,
    allowed_headers: Vec<StringMatch>,
    /// `headers_to_add`, as header lines.
    headers_to_add: Vec<u8>,
    upstream_set: Vec<StringMatch>,
    upstream_append: Vec<StringMatch>,
    /// None: every header of a denial but `NEVER_COPIED`.
    client: Option<Vec<StringMatch>>,
    client_on_success: Vec<StringMatch>,
    failure_mode_allow: bool,
    failure_mode_allow_header_add: bool,
    status_on_error: u16,
    body: Option<ExtAuthzBody>,
    /// The check is a gRPC call.
    grpc: Option<GrpcClient>,
    /// Index of `http.<stat_prefix>.ext_authz.*` in the chain's stats.
    pub(super) stats: usize,
}

fn compile_list(list: &[config::StringMatcher]) -> Result<Vec<StringMatch>, BuildError> {
    list.iter().map(StringMatch::compile).collect()
}

fn any(list: &[StringMatch], name: &[u8]) -> bool {
    list.iter().any(|m| m.matches(name))
}

impl ExtAuthz {
    pub(super) fn compile(
        c: &config::ExtAuthz,
        clusters: &HashMap<&str, usize>,
        stats: usize,
    ) -> Result<Self, BuildError> {
        let cluster =
            *clusters.get(c.cluster.as_str()).ok_or_else(|| BuildError::UnknownCluster(c.cluster.clone()))?;
        let mut headers_to_add = Vec::new();
        for (name, value) in &c.headers_to_add {
            push_header(&mut headers_to_add, name.as_bytes(), value.as_bytes());
        }
        let client = if c.allowed_client_headers.is_empty() {
            None
        } else {
            Some(compile_list(&c.allowed_client_headers)?)
        };
        Ok(ExtAuthz {
            cluster,
            timeout: c.timeout,
            path_prefix: c.path_prefix.as_str().into(),
            allowed_headers: compile_list(&c.allowed_headers)?,
            headers_to_add,
            upstream_set: compile_list(&c.allowed_upstream_headers)?,
            upstream_append: compile_list(&c.allowed_upstream_headers_to_append)?,
            client,
            client_on_success: compile_list(&c.allowed_client_headers_on_success)?,
            failure_mode_allow: c.failure_mode_allow,
            failure_mode_allow_header_add: c.failure_mode_allow_header_add,
            status_on_error: c.status_on_error,
            body: c.with_request_body,
            grpc: c.grpc.as_ref().map(|g| GrpcClient::new(g, c.timeout)),
            stats,
        })
    }

    /// Asks for the check (unless the route disabled the filter): its request is complete but for
    /// the body, which the request owner adds (`Check::add_body`). `index`: the filter's place in
    /// its chain, where the answer comes back to.
    pub(super) fn on_request(
        &self,
        head: &RequestHead<'_>,
        conn: &Connection<'_>,
        per_route: &ExtAuthzPerRoute,
        index: usize,
        v: &mut Verdict<'_>,
    ) {
        if per_route.disabled {
            return;
        }
        let body = if per_route.disable_request_body_buffering {
            None
        } else {
            per_route.with_request_body.or(self.body)
        };
        if let Some(client) = &self.grpc {
            let ours = |name: &str| FROM_CONNECTION_MANAGER.contains(&name);
            let call = client.request(head, conn, &per_route.context_extensions, &ours);
            v.check = Some(Check {
                cluster: self.cluster,
                timeout: self.timeout,
                request: Vec::new(),
                framing_at: 0,
                body,
                filter: index,
                grpc: Some(Box::new(call)),
            });
            return;
        }
        let mut request = Vec::with_capacity(256);
        request.extend_from_slice(head.method.as_bytes());
        request.push(b' ');
        request.extend_from_slice(self.path_prefix.as_bytes());
        request.extend_from_slice(head.path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(&mut request, b"host", head.host.unwrap_or_default().as_bytes());
        let framing_at = request.len();
        for h in head.headers {
            let ours = |n: &&str| h.name.eq_ignore_ascii_case(n);
            if ["host", "content-length"].iter().any(ours) || FROM_CONNECTION_MANAGER.iter().any(ours) {
                continue;
            }
            let always = ALWAYS_SENT.iter().any(|a| h.name.eq_ignore_ascii_case(a));
            // Envoy's header map keys are lower case, and so are the names its matchers see.
            let lower = h.name.to_ascii_lowercase();
            if always || any(&self.allowed_headers, lower.as_bytes()) {
                push_header(&mut request, lower.as_bytes(), h.value);
            }
        }
        request.extend_from_slice(&self.headers_to_add);
        push_header(&mut request, b"x-envoy-internal", b"true");
        push_header(
            &mut request,
            b"x-envoy-expected-rq-timeout-ms",
            self.timeout.as_millis().to_string().as_bytes(),
        );
        request.extend_from_slice(b"\r\n");
        v.check = Some(Check {
            cluster: self.cluster,
            timeout: self.timeout,
            request,
            framing_at,
            body,
            filter: index,
            grpc: None,
        });
    }

    /// Completes `check` with the connection manager's own headers (`FROM_CONNECTION_MANAGER`)
    /// in the upstream head `upstream`, as Envoy's check sees them: the allowed ones for the
    /// HTTP service, all of them for a gRPC one.
    pub(super) fn complete(&self, check: &mut Check, upstream: &[u8]) {
        let mut out = Vec::new();
        for line in upstream.split(|b| *b == b'\n').skip(1) {
            let Some((name, value)) = line.split_once_byte(b':') else { continue };
            let name = name.to_ascii_lowercase();
            if !FROM_CONNECTION_MANAGER.iter().any(|n| n.as_bytes() == name.as_slice()) {
                continue;
            }
            match check.grpc.as_mut() {
                Some(call) => call.add_connection_manager(
                    &String::from_utf8_lossy(&name),
                    &String::from_utf8_lossy(value.trim_ascii()),
                ),
                None if any(&self.allowed_headers, &name) => push_header(&mut out, &name, value.trim_ascii()),
                None => {}
            }
        }
        if check.grpc.is_none() {
            check.add_lines(&out);
        }
    }

    /// What the check's answer (or its failure) means for the request; counted in `stats` and in
    /// `routed`, the routed cluster's copy (`cluster.<name>.ext_authz.*`, as Envoy counts).
    pub(super) fn decide(
        &self,
        stats: &ExtAuthzStats,
        routed: Option<&ExtAuthzStats>,
        answer: Result<CheckAnswer, CheckFailure>,
    ) -> CheckOutcome {
        let count = |which: fn(&ExtAuthzStats) -> &crate::stats::Counter| {
            which(stats).inc();
            if let Some(r) = routed {
                which(r).inc();
            }
        };
        if self.grpc.is_some() {
            let decoded = answer.and_then(|a| {
                let mut headers = a.headers;
                headers.extend(a.trailers);
                ext_authz_grpc::decode(a.status, &headers, &a.body).map_err(CheckFailure::Grpc)
            });
            return match decoded {
                Ok(ext_authz_grpc::Answer::Ok(edits)) => {
                    count(|s| &s.ok);
                    let mut out = CheckOutcome {
                        request_headers_set: edits.set,
                        request_headers_join: edits.append,
                        request_headers_remove: edits.remove,
                        ..Default::default()
                    };
                    for (name, value) in &edits.response {
                        push_header(&mut out.response_headers, name, value);
                    }
                    out
                }
                Ok(ext_authz_grpc::Answer::Denied { status, headers, body }) => {
                    count(|s| &s.denied);
                    self.denied(CheckAnswer { status, headers, body, trailers: Vec::new() })
                }
                Err(why) => self.failed(why, &count),
            };
        }
        let answer = match answer {
            Ok(a) if a.status >= 500 => Err(CheckFailure::Status(a.status)),
            other => other,
        };
        let mut out = CheckOutcome::default();
        match answer {
            Ok(a) if a.status == 200 => {
                count(|s| &s.ok);
                for (name, value) in &a.headers {
                    if any(&self.upstream_set, name) {
                        out.request_headers_set.push((name.clone(), value.clone()));
                    }
                    if any(&self.upstream_append, name) {
                        push_header(&mut out.request_headers_append, name, value);
                    }
                    if any(&self.client_on_success, name) {
                        push_header(&mut out.response_headers, name, value);
                    }
                }
            }
            Ok(a) => {
                count(|s| &s.denied);
                return self.denied(a);
            }
            Err(why) => return self.failed(why, &count),
        }
        out
    }

    /// A denial: the answer's status, body and the headers the client may see.
    fn denied(&self, a: CheckAnswer) -> CheckOutcome {
        let mut headers = Vec::new();
        for (name, value) in &a.headers {
            if NEVER_COPIED.iter().any(|n| n.as_bytes() == &name[..]) {
                continue;
            }
            let allowed = match &self.client {
                None => true,
                Some(list) => ALWAYS_TO_CLIENT.iter().any(|n| n.as_bytes() == &name[..]) || any(list, name),
            };
            if allowed {
                push_header(&mut headers, name, value);
            }
        }
        let reply = CheckReply {
            status: a.status,
            body: a.body,
            headers,
            flag: ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE,
            details: "ext_authz_denied",
        };
        CheckOutcome { reply: Some(reply), ..Default::default() }
    }

    /// A check without an answer: `status_on_error`, or through with `failure_mode_allow`.
    fn failed(
        &self,
        why: CheckFailure,
        count: &dyn Fn(fn(&ExtAuthzStats) -> &crate::stats::Counter),
    ) -> CheckOutcome {
        log::debug!("ext_authz check failed: {why:?}");
        count(|s| &s.error);
        let mut out = CheckOutcome::default();
        if self.failure_mode_allow {
            count(|s| &s.failure_mode_allowed);
            if self.failure_mode_allow_header_add {
                push_header(&mut out.request_headers_append, b"x-envoy-auth-failure-mode-allowed", b"true");
            }
        } else {
            out.reply = Some(CheckReply {
                status: self.status_on_error,
                body: Vec::new(),
                headers: Vec::new(),
                flag: ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE,
                details: "ext_authz_error",
            });
        }
        out
    }
}

/// `split_once` for a byte slice.
trait SplitOnceByte {
    fn split_once_byte(&self, at: u8) -> Option<(&[u8], &[u8])>;
}

impl SplitOnceByte for [u8] {
    fn split_once_byte(&self, at: u8) -> Option<(&[u8], &[u8])> {
        let i = self.iter().position(|b| *b == at)?;
        Some((&self[..i], &self[i + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StringMatcher, StringRule};

    fn filter(client: &[&str], failure_mode_allow: bool) -> ExtAuthz {
        let exact = |s: &&str| StringMatcher { rule: StringRule::Exact(s.to_string()), ignore_case: false };
        let c = config::ExtAuthz {
            uri: "u".into(),
            cluster: "authz".into(),
            timeout: Duration::from_millis(200),
            path_prefix: String::new(),
            allowed_headers: Vec::new(),
            headers_to_add: Vec::new(),
            allowed_upstream_headers: vec![exact(&"x-user")],
            allowed_upstream_headers_to_append: Vec::new(),
            allowed_client_headers: client.iter().map(exact).collect(),
            allowed_client_headers_on_success: Vec::new(),
            failure_mode_allow,
            failure_mode_allow_header_add: true,
            status_on_error: 403,
            with_request_body: None,
            grpc: None,
            warned: Default::default(),
        };
        let clusters = HashMap::from([("authz", 0)]);
        ExtAuthz::compile(&c, &clusters, 0).expect("compiles")
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> Result<CheckAnswer, CheckFailure> {
        let headers = headers.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        Ok(CheckAnswer { status, headers, body: b"no".to_vec(), trailers: Vec::new() })
    }

    #[test]
    fn a_200_sets_the_allowed_upstream_headers_only() {
        let stats = ExtAuthzStats::default();
        let out = filter(&[], false).decide(&stats, None, answer(200, &[("x-user", "u1"), ("x-other", "o")]));
        assert!(out.reply.is_none());
        assert_eq!(out.request_headers_set, [(b"x-user".to_vec(), b"u1".to_vec())]);
        assert_eq!(stats.ok.get(), 1);
    }

    #[test]
    fn a_denial_passes_its_headers_on_and_a_5xx_or_failure_is_an_error() {
        let stats = ExtAuthzStats::default();
        let headers = [("x-deny", "d"), ("server", "s"), ("www-authenticate", "B"), ("set-cookie", "c")];
        let all = filter(&[], false).decide(&stats, None, answer(401, &headers)).reply.expect("denied");
        assert_eq!((all.status, all.body.as_slice()), (401, &b"no"[..]));
        assert_eq!(all.headers, b"x-deny: d\r\nwww-authenticate: B\r\nset-cookie: c\r\n");
        let listed =
            filter(&["x-deny"], false).decide(&stats, None, answer(401, &headers)).reply.expect("denied");
        assert_eq!(listed.headers, b"x-deny: d\r\nwww-authenticate: B\r\n");
        let error = filter(&[], false).decide(&stats, None, answer(503, &[])).reply.expect("error");
        assert_eq!(
            (error.status, error.body.len(), error.flag),
            (403, 0, ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE)
        );
        let allowed = filter(&[], true).decide(&stats, None, Err(CheckFailure::Timeout));
        assert!(allowed.reply.is_none());
        assert_eq!(allowed.request_headers_append, b"x-envoy-auth-failure-mode-allowed: true\r\n");
        assert_eq!((stats.denied.get(), stats.error.get(), stats.failure_mode_allowed.get()), (2, 2, 1));
    }
}
