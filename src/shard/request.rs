//! One request, from its parsed head to its access-log line. `Request::plan` decides, while the
//! head is still borrowed from the connection's buffer, what happens (a local reply, or the
//! upstream head written and a route chosen); `Request::run` carries it out: it holds the guard of
//! the request's active gauge, applies the route timeout in exactly one place, sends the one reply
//! skiff makes itself when there is one, and writes the log line and span. Talks to upstreams only
//! through `upstream::forward`; never reads a request head itself.

use super::body;
use super::check;
use super::downstream::Downstream;
use super::headers::{self, RequestRewrite};
use super::mirror;
use super::observe::{self, Observed};
use super::reply::{self, details, LocalReply, ReplyStat};
use super::signal::Signal;
use super::socket::write_out;
use super::state::{Generation, Shard};
use super::upgrade;
use super::upstream::{self, Exchange, Forwarded, RequestFacts};
use crate::access_log::ResponseFlags;
use crate::cluster::outlier::Outcome;
use crate::config::{LbPolicy, StreamLimits};
use crate::filters::{CheckOutcome, CheckReply, FilterStats, Verdict};
use crate::http::{header_is, RequestHead, Version};
use crate::peer::Connection;
use crate::route::{Action, Forward, HeaderEdits, Route, Targets, VirtualHost, MISSING_CLUSTER, NO_EDITS};
use crate::snapshot::ListenerSnap;
use crate::stats::HttpStats;
use bytes::Buf;
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Whether the connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Continue {
    KeepAlive,
    Close,
}

/// What a request head decided.
pub(super) enum Plan<'g> {
    /// `consumed`: bytes of the connection's buffer now in `req_out` (head and body that came
    /// with it).
    Forward {
        route: &'g Route,
        vhost: &'g VirtualHost,
        /// The cluster chosen (weighted, or named by `cluster_header`).
        cluster: usize,
        /// The picked weighted entry's response header edits (`NO_EDITS` otherwise).
        entry_edits: &'g HeaderEdits,
        facts: RequestFacts,
        limits: Limits,
        consumed: usize,
        filters: Option<Box<Verdict<'g>>>,
    },
    /// `consumed`: the bytes to skip when the whole body is here (None: close after replying,
    /// since an unread body would be taken for the next request).
    Reply {
        reply: LocalReply,
        consumed: Option<usize>,
        head_request: bool,
        filters: Option<Box<Verdict<'g>>>,
    },
}

/// Where a forwarded request goes: its route, virtual host and cluster.
struct Routed<'g> {
    route: &'g Route,
    vhost: &'g VirtualHost,
    cluster: usize,
    entry_edits: &'g HeaderEdits,
}

/// Holds `downstream_rq_active` up for as long as the request lives, whichever way it ends.
struct ActiveGuard<'g>(&'g HttpStats);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.downstream_rq_active.dec();
        super::socket::request_ended();
    }
}

pub(super) struct Request<'g> {
    shard: &'g Shard,
    generation: &'g Generation,
    listener: &'g ListenerSnap,
    stats: &'g HttpStats,
    /// The shard's stats of this listener's filters, by the chain's stat index.
    filter_stats: &'g Vec<FilterStats>,
    started: Instant,
    /// The last request this connection may carry (`max_requests_per_connection`): its response
    /// says `connection: close` and the connection closes after it.
    last_on_connection: bool,
    /// The request is gRPC (`route::is_grpc`): skiff's own replies to it are gRPC's
    /// trailers-only answers, as Envoy's are. Known once its head is planned.
    grpc: Cell<bool>,
    /// An HTTP/2 client's stream (`over_http2`).
    http2: bool,
    _active: ActiveGuard<'g>,
}

impl<'g> Request<'g> {
    /// A request whose head has arrived (or that is refused before it could).
    pub fn new(
        shard: &'g Shard,
        generation: &'g Generation,
        listener: usize,
        started: Instant,
        obs: &mut Observed,
    ) -> Self {
        let stats = &*generation.http_stats[listener];
        let filter_stats = &generation.filter_stats[listener];
        let listener = &generation.snap.listeners[listener];
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        super::socket::request_started();
        obs.begin(listener.observers.any());
        Request {
            shard,
            generation,
            listener,
            stats,
            filter_stats,
            started,
            last_on_connection: false,
            grpc: Cell::new(false),
            http2: false,
            _active: ActiveGuard(stats),
        }
    }

    /// Marks a request an HTTP/2 client sent (through `h2`'s bridge): counted and logged as HTTP/2.
    pub fn over_http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Makes this the connection's last request (`max_requests_per_connection` or
    /// `max_connection_duration` reached, counted by the caller).
    pub fn last_on_connection(mut self) -> Self {
        self.last_on_connection = true;
        self
    }

    /// Routes the request and, when it is to be forwarded, writes its upstream head (and the body
    /// that came with it) into `req_out`. Runs while `head` borrows the connection's buffer.
    pub fn plan(
        &self,
        head: &RequestHead<'_>,
        buf: &[u8],
        req_out: &mut Vec<u8>,
        (peer_ip, xff_ip, (remote, local), conn): (&str, &str, (SocketAddr, SocketAddr), &Connection<'_>),
        obs: &mut Observed,
    ) -> Plan<'g> {
        req_out.clear();
        let hcm = &self.listener.hcm;
        let head_request = head.method == "HEAD";
        let http10 = head.version == Version::Http10;
        // An accepted HTTP/1.0 request is answered in HTTP/1.0, local replies included.
        let answer_http10 = http10 && hcm.accept_http_10;
        let connect = head.method == "CONNECT";
        let reply = |mut reply: LocalReply, consumed| {
            reply.http10 |= answer_http10;
            // The client said it closes (or spoke HTTP/1.0 without keep-alive): Envoy's reply says
            // so too.
            // Envoy closes a CONNECT's connection after any local reply (its bytes after the head
            // would be the tunnel's).
            reply.close |= !head.keep_alive || connect;
            Plan::Reply { reply, consumed, head_request, filters: None }
        };
        if http10 && !hcm.accept_http_10 {
            // Envoy's codec refuses it before the request exists: its log line has no method or
            // path, and says HTTP/1.1 (the protocol of the reply).
            obs.protocol = "HTTP/1.1";
            let refusal = LocalReply::new(426, b"Upgrade Required")
                .closing()
                .flagged(ResponseFlags::DPE)
                .detailed(details::LOW_VERSION);
            return reply(refusal, None);
        }
        // Known from here on: Envoy's codec refusals above are not gRPC's, its connection
        // manager's and filters' replies are.
        self.grpc.set(crate::route::is_grpc(head.headers));
        let traced = observe::on_request_head(self.listener, head, obs, self.shard);
        if self.http2 {
            self.stats.downstream_rq_http2_total.inc();
            obs.protocol = "HTTP/2";
        } else {
            self.stats.downstream_rq_http1_total.inc();
        }
        let scan = match body::scan(head.body, &buf[head.head_len..]) {
            Ok(scan) => scan,
            Err(e) => {
                log::debug!("refusing request from {peer_ip}: chunked body: {e:?}");
                let refusal = LocalReply::new(400, b"Bad Request")
                    .closing()
                    .flagged(ResponseFlags::DPE)
                    .counted(ReplyStat::ProtocolError)
                    .detailed(details::CODEC_ERROR);
                return reply(refusal, None);
            }
        };
        let whole = scan.complete.then_some(head.head_len + scan.len);
        let default_host = if http10 { hcm.default_host_for_http_10.as_deref() } else { None };
        let table = &self.listener.routes;
        let Some(host) = head.host.or(default_host).map(|h| table.host_for_matching(h)) else {
            // No Host (HTTP/1.0 without a default): nothing to route by (Envoy: 400, refused by
            // the connection manager, not the codec: no `DPE`).
            let refusal = LocalReply::new(400, b"").closing().detailed(details::MISSING_HOST_HEADER);
            return reply(refusal, None);
        };
        let found =
            table.virtual_host(host).and_then(|vhost| Some((vhost, vhost.route(head.path, head.headers)?)));
        // Envoy refuses an upgrade its configuration does not allow before the route acts (even
        // one that has no route): 403, closing.
        // A CONNECT no route matches is the router's 404 (Envoy 1.40), not a refused upgrade.
        let upgrade = upgrade::requested(head).filter(|_| !connect || found.is_some());
        if let Some(kind) = upgrade {
            let forward = found.and_then(|(_, r)| match &r.action {
                Action::Forward(f) => Some(f),
                _ => None,
            });
            // A CONNECT tunnels only where the route terminates it (`connect_config`); forwarding
            // it is refused at load, this covers a route table that bypassed that check.
            let tunnels = !connect || forward.is_some_and(|f| f.terminate_connect);
            if !tunnels || !upgrade::allowed(kind, &hcm.upgrades, forward.map(|f| f.upgrades.as_slice())) {
                self.stats.downstream_rq_ws_on_non_ws_route.inc();
                // Envoy's line names the route's cluster: the route was resolved to decide.
                if let Some(Targets::Single(c)) = forward.map(|f| &f.clusters) {
                    obs.upstream_cluster = Some(*c).filter(|c| *c != MISSING_CLUSTER);
                }
                return reply(LocalReply::new(403, b"").closing().detailed(details::UPGRADE_FAILED), None);
            }
            if connect {
                // Envoy counts an accepted CONNECT as it decodes it, whether the tunnel opens or not.
                self.stats.downstream_cx_upgrades_total.inc();
            }
        }
        // The configured filters, after routing and before the router acts on the route (or answers
        // that there is none: Envoy's filters run first, so a JWT filter's 401 beats the 404).
        let mut filters = if self.listener.filters.is_empty() {
            None
        } else {
            let mut roll = || self.shard.rng.next();
            self.listener.filters.on_request_headers(head, conn, found, self.filter_stats, &mut roll).kept()
        };
        let filtered = |mut local: LocalReply, filters: Option<Box<Verdict<'g>>>| {
            if let Some(f) = &filters {
                local.encode_headers.extend_from_slice(&f.response_headers);
            }
            match reply(local, whole) {
                Plan::Reply { reply, consumed, head_request, .. } => {
                    Plan::Reply { reply, consumed, head_request, filters }
                }
                forward => forward,
            }
        };
        // A check that takes the request's body gets what came with the head; one over the
        // limit is refused (closing: the rest of it may still be on its way).
        if let Some(check) = filters.as_mut().and_then(|f| f.check.as_mut()) {
            let arrived = &buf[head.head_len..head.head_len + scan.len];
            let body =
                if check.wants_body() { check::payload(head.body, arrived) } else { Default::default() };
            if let Err(too_large) = check.add_body(&body, scan.complete) {
                if let Some(f) = filters.as_mut() {
                    f.check = None;
                }
                if let Some(c) = routed_cluster(found) {
                    obs.upstream_cluster = Some(c);
                }
                return filtered(check_reply(too_large).closing(), filters);
            }
        }
        if let Some(r) = filters.as_mut().and_then(|f| f.reply.take()) {
            let mut local = LocalReply::new(r.status, b"").flagged(r.flag).detailed(r.details);
            local.body = r.body;
            local.headers = r.headers;
            local.grpc_status = r.grpc_status;
            local.encoded = filters.as_ref().is_some_and(|f| f.encoded_reply);
            if let Some(c) = routed_cluster(found) {
                obs.upstream_cluster = Some(c);
            }
            // The filters' response headers follow the reply's own (`filtered`).
            return filtered(local, filters);
        }
        let Some((vhost, route)) = found else {
            let no_route = LocalReply::new(404, b"")
                .flagged(ResponseFlags::NR)
                .counted(ReplyStat::NoRoute)
                .detailed(details::ROUTE_NOT_FOUND);
            return filtered(no_route, filters);
        };
        let fwd = match &route.action {
            Action::Direct { status, body } => {
                let mut direct = LocalReply::new(*status, b"")
                    .counted(ReplyStat::Direct)
                    .detailed(details::DIRECT_RESPONSE);
                if let Some(body) = body {
                    direct.body = body.clone().into_bytes().into();
                }
                return filtered(direct, filters);
            }
            Action::Redirect(r) => {
                // Envoy's word for a redirect is a direct response's too.
                let mut redirect = LocalReply::new(r.status, b"")
                    .counted(ReplyStat::Redirect)
                    .detailed(details::DIRECT_RESPONSE);
                redirect.location = Some(route.redirect_location(r, host, head.path));
                return filtered(redirect, filters);
            }
            Action::Forward(fwd) => fwd,
        };
        // The cluster: drawn for weighted clusters, or named by the request (`cluster_header`;
        // none, or one that does not exist: Envoy's 503 `NC`, or `cluster_not_found_response_code`;
        // so too a route's cluster missing from an RDS route configuration).
        // A weighted entry's own header edits, applied before the route's.
        let (mut request_entry, mut response_entry) = (&NO_EDITS, &NO_EDITS);
        let cluster = match &fwd.clusters {
            Targets::Weighted(..) => match fwd.clusters.pick_weighted(self.shard.rng.next()) {
                Some(t) => {
                    request_entry = &t.request_edits;
                    response_entry = &t.response_edits;
                    t.cluster
                }
                None => 0,
            },
            Targets::Header(name) => {
                let named = head.headers.iter().find(|h| header_is(h.name, name)).map(|h| h.value);
                let found = named
                    .and_then(|v| self.generation.snap.clusters.iter().position(|c| c.name.as_bytes() == v));
                found.unwrap_or(MISSING_CLUSTER)
            }
            targets => targets.pick(self.shard.rng.next()).unwrap_or(0),
        };
        if cluster == MISSING_CLUSTER {
            let missing = LocalReply::new(fwd.cluster_not_found, b"")
                .flagged(ResponseFlags::NC)
                .counted(ReplyStat::NoCluster)
                .detailed(details::CLUSTER_NOT_FOUND);
            return filtered(missing, filters);
        }
        let mut rewritten = String::new();
        // A filter may have changed the path (a JWT query parameter removed) before the route's rewrite.
        let filtered_path = filters.as_ref().and_then(|f| f.path.as_deref()).unwrap_or(head.path);
        if filtered_path != head.path {
            // Envoy's filters edit `:path` itself: the log shows the edited one.
            obs.path.clear();
            obs.path.push_str(filtered_path);
        }
        let path = if route.rewrite_path(filtered_path, &mut rewritten) {
            rewritten.as_str()
        } else {
            filtered_path
        };
        let limits = Limits::of(&hcm.stream_limits, fwd, head, self.grpc.get());
        let rewrite = RequestRewrite {
            path,
            host: fwd.host_rewrite.as_deref().or(Some(host)),
            edits: [request_entry, &route.request_edits, &vhost.request_edits, &table.request_edits],
            peer_ip,
            xff_ip,
            use_remote_address: hcm.use_remote_address,
            generate_request_id: hcm.generate_request_id,
            traced,
            // Envoy announces the per-try timeout when there is one and it is the shorter.
            expected_timeout_ms: match (limits.route, fwd.retry.as_deref().and_then(|r| r.per_try_timeout)) {
                (Some(t), Some(p)) => Some(t.min(p)),
                (t, p) => t.or(p),
            }
            .map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64),
            listener: self.listener,
            upgrade: upgrade.is_some(),
            dropped: filters.as_ref().map_or(&[][..], |f| &f.remove_request_headers[..]),
            filtered_path,
            tls: conn.tls,
        };
        headers::write_request_head(req_out, head, &rewrite, &self.shard.rng, obs);
        if let Some(check) = filters.as_mut().and_then(|f| f.check.as_mut()) {
            self.listener.filters.complete_check(check, req_out);
        }
        if filters.as_ref().and_then(|f| f.compress.as_ref()).is_some_and(|c| c.remove_accept_encoding) {
            super::compress::drop_header_lines(req_out, b"accept-encoding");
        }
        if let Some(added) = filters.as_ref().map(|f| &f.request_headers).filter(|h| !h.is_empty()) {
            // Inside the head: before its closing empty line, and before the `content-length: 0`
            // Envoy's codec writes last.
            let end = req_out.len() - 2;
            const FRAMING: &[u8] = b"content-length: 0\r\n";
            let at = if req_out[..end].ends_with(FRAMING) { end - FRAMING.len() } else { end };
            req_out.splice(at..at, added.iter().copied());
        }
        let body_end = head.head_len + scan.len;
        // Envoy counts what came after a CONNECT's head as received, tunnel or not.
        obs.bytes_received = if connect { (buf.len() - head.head_len) as u64 } else { scan.payload };
        req_out.extend_from_slice(&buf[head.head_len..body_end]);
        let mut facts = RequestFacts {
            keep_alive: head.keep_alive && !self.last_on_connection && !connect,
            head_method: head_request,
            http10,
            expect_continue: head.expect_continue,
            body_buffered: scan.complete,
            idempotent: matches!(head.method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
            body_rest: scan.rest,
            upgrade: upgrade.is_some(),
            connect,
            hash: None,
            set_cookie: Vec::new(),
            client_http2: self.http2,
        };
        if !fwd.hash_policy.is_empty() {
            let policy = self.generation.snap.clusters.get(cluster).map(|c| c.lb_policy);
            let conn = crate::route::hash::Conn {
                peer_ip,
                remote,
                local,
                generate_cookies: matches!(policy, Some(LbPolicy::RingHash | LbPolicy::Maglev)),
            };
            facts.hash = crate::route::hash::request_hash(
                &fwd.hash_policy,
                head.headers,
                head.path,
                &conn,
                &mut facts.set_cookie,
            );
        }
        Plan::Forward {
            route,
            vhost,
            cluster,
            entry_edits: response_entry,
            facts,
            limits,
            consumed: body_end,
            filters,
        }
    }

    /// Carries out the plan, then counts and logs the request.
    pub async fn run(self, mut plan: Plan<'g>, d: &mut Downstream) -> Continue {
        d.status = 0;
        d.response_started = false;
        d.body_unread = false;
        if let Plan::Reply { filters: Some(filters), .. } | Plan::Forward { filters: Some(filters), .. } =
            &mut plan
        {
            d.obs.flag(filters.flags);
            if let Some(delay) = filters.delay {
                if !self.delay(d, delay).await {
                    d.obs.flag(ResponseFlags::DC);
                    self.finish(d);
                    return Continue::Close;
                }
            }
            if let Some(check) = filters.check.take() {
                let asked = check::check(
                    self.shard,
                    self.generation,
                    check.cluster,
                    check.request().into_owned(),
                    check.timeout,
                );
                // A client that leaves meanwhile ends the request as Envoy resets it: `0 DC`, the
                // check abandoned and nothing counted by the filter.
                let answer = monoio::select! {
                    answer = asked => Some(answer),
                    _ = client_left(d.stream.as_raw_fd()) => None,
                };
                let Some(answer) = answer else {
                    if let Plan::Forward { cluster, .. } = &plan {
                        d.obs.upstream_cluster = Some(*cluster);
                    }
                    d.obs.flag(ResponseFlags::DC);
                    self.finish(d);
                    return Continue::Close;
                };
                let routed = match &plan {
                    Plan::Forward { cluster, .. } => self.generation.snap.clusters.get(*cluster),
                    Plan::Reply { .. } => None,
                };
                let routed = routed.map(|c| self.shard.stats.cluster_ext_authz(&c.name));
                let outcome =
                    self.listener.filters.decide(&check, answer, self.filter_stats, routed.as_deref());
                plan = self.checked(plan, outcome, d);
            }
        }
        let next = match plan {
            Plan::Reply { mut reply, consumed, head_request, filters: _held } => {
                // Once the connection manager has the request, Envoy has given it a request id,
                // which its log line shows whatever answers it.
                let hcm = &self.listener.hcm;
                // An edge request's own id is replaced, as on the way upstream (`headers`).
                let fresh = d.obs.request_id.is_empty() || hcm.use_remote_address;
                if d.obs.on && fresh && hcm.generate_request_id && details::after_request_id(&reply.details) {
                    observe::on_local_request_id(&mut d.obs, &self.shard.rng);
                }
                match consumed {
                    Some(n) => d.buf.advance(n.min(d.buf.len())),
                    None => {
                        reply.close = true;
                        d.body_unread = true;
                    }
                }
                self.reply(d, reply, head_request).await
            }
            Plan::Forward { route, vhost, cluster, entry_edits, facts, limits, consumed, filters } => {
                d.buf.advance(consumed);
                let filter_headers = filters.as_ref().map_or(&[][..], |f| &f.response_headers[..]);
                // A generated hash cookie goes out on the upstream's response, after the filters'
                // lines (Envoy's router adds it to the response headers).
                let with_cookie;
                let filter_headers = if facts.set_cookie.is_empty() {
                    filter_headers
                } else {
                    with_cookie = [filter_headers, &facts.set_cookie].concat();
                    &with_cookie
                };
                let replace = filters.as_ref().is_some_and(|f| f.response_headers_replace);
                let routed = Routed { route, vhost, cluster, entry_edits };
                let compress = filters.as_ref().and_then(|f| f.compress.as_ref());
                self.forward(d, routed, facts, limits, (filter_headers, replace), compress).await
            }
        };
        self.finish(d);
        next
    }

    /// Carries a check's outcome into the plan: its reply replaces the plan's outcome (after the
    /// request's body, when the whole of it is here, as a reply from `plan` would), or its header
    /// lines go on the upstream request and on the response.
    fn checked(&self, plan: Plan<'g>, outcome: CheckOutcome, d: &mut Downstream) -> Plan<'g> {
        if let Some(r) = outcome.reply {
            let (consumed, head_request, http10, close, filters) = match plan {
                Plan::Forward { facts, consumed, filters, cluster, .. } => {
                    // Envoy has resolved the route's cluster by then, and logs it.
                    d.obs.upstream_cluster = Some(cluster);
                    let consumed = facts.body_buffered.then_some(consumed);
                    (consumed, facts.head_method, facts.http10, !facts.keep_alive, filters)
                }
                Plan::Reply { consumed, head_request, filters, reply } => {
                    (consumed, head_request, reply.http10, reply.close, filters)
                }
            };
            let mut reply = check_reply(r);
            reply.http10 = http10;
            // A client that said it closes is told so, as on any reply (`plan`'s).
            reply.close |= close;
            if let Some(f) = &filters {
                reply.encode_headers.extend_from_slice(&f.response_headers);
            }
            return Plan::Reply { reply, consumed, head_request, filters };
        }
        match plan {
            Plan::Forward { route, vhost, cluster, entry_edits, facts, limits, consumed, mut filters } => {
                check::edit_head(&mut d.req_out, &outcome);
                if let Some(f) = filters.as_mut() {
                    f.response_headers.extend_from_slice(&outcome.response_headers);
                }
                Plan::Forward { route, vhost, cluster, entry_edits, facts, limits, consumed, filters }
            }
            Plan::Reply { mut reply, consumed, head_request, filters } => {
                reply.headers.extend_from_slice(&outcome.response_headers);
                Plan::Reply { reply, consumed, head_request, filters }
            }
        }
    }

    /// Refuses a request whose head could not be read (400, 408, 431, 501): always closes.
    /// `why`: the reply's `%RESPONSE_CODE_DETAILS%` (`details`).
    pub async fn refuse(self, d: &mut Downstream, status: u16, why: &'static str) {
        let (body, stat, flag): (&'static [u8], _, _) = match status {
            408 => (b"request header timeout", ReplyStat::HeaderTimeout, ResponseFlags::NONE),
            // Refused by Envoy's connection manager, not its codec: no `DPE`.
            _ if why == details::MISSING_HOST_HEADER => (b"", ReplyStat::None, ResponseFlags::NONE),
            431 => (b"Request Header Fields Too Large", ReplyStat::ProtocolError, ResponseFlags::DPE),
            501 => (b"Not Implemented", ReplyStat::ProtocolError, ResponseFlags::DPE),
            _ => (b"Bad Request", ReplyStat::ProtocolError, ResponseFlags::DPE),
        };
        // Envoy's codec refuses these before a request exists: the log line has no method or path
        // and gives the protocol of the reply.
        d.obs.protocol = "HTTP/1.1";
        let reply = LocalReply::new(status, body).closing().flagged(flag).counted(stat).detailed(why);
        self.reply(d, reply, false).await;
        self.finish(d);
    }

    /// A filter's delay (the fault filter's), on the shard's timers; false when the client left
    /// meanwhile. The route timeout has not started yet: it runs once the router has the request,
    /// as in Envoy.
    async fn delay(&self, d: &Downstream, delay: std::time::Duration) -> bool {
        monoio::select! {
            _ = self.shard.timers.after(delay) => true,
            _ = client_left(d.stream.as_raw_fd()) => false,
        }
    }

    async fn forward(
        &self,
        d: &mut Downstream,
        Routed { route, vhost, cluster, entry_edits }: Routed<'g>,
        facts: RequestFacts,
        limits: Limits,
        (filter_headers, filter_headers_replace): (&[u8], bool),
        compress: Option<&crate::filters::CompressAsk>,
    ) -> Continue {
        let Action::Forward(fwd) = &route.action else { return Continue::Close };
        let keep_alive = facts.keep_alive;
        let connect = facts.connect;
        // The generated hash cookie ends `filter_headers`; it goes on upstream responses only.
        let cookie_len = facts.set_cookie.len();
        let head_request = facts.head_method;
        let http10 = facts.http10;
        if !fwd.mirrors.is_empty() && facts.body_buffered {
            self.mirror(fwd, &d.req_out);
        }
        let request_complete = Signal::default();
        let head_relayed = Cell::new(false);
        let answer_retriable = Cell::new(false);
        if facts.body_buffered {
            // Fired before anyone waits: no waiter is registered on the common path.
            request_complete.fire();
        }
        let ex = Exchange {
            shard: self.shard,
            generation: self.generation,
            cluster,
            fwd,
            listener: self.listener,
            facts,
            response_edits: [
                entry_edits,
                &route.response_edits,
                &vhost.response_edits,
                &self.listener.routes.response_edits,
            ],
            attempt_count: vhost.attempt_count,
            server_name: &self.listener.hcm.server_name,
            request_complete: &request_complete,
            filter_headers,
            filter_headers_replace,
            head_relayed: &head_relayed,
            answer_retriable: &answer_retriable,
            stream_idle: limits.idle,
            compress: compress.map(|ask| super::compress::Ask {
                ask,
                chain: &self.listener.filters,
                stats: self.filter_stats,
            }),
        };
        let client = d.stream.as_raw_fd();
        let watch = self.watch(&limits, &request_complete, &head_relayed, client);
        let forwarded = monoio::select! {
            forwarded = upstream::forward(&ex, d) => forwarded,
            why = watch => self.interrupted(why, d, cluster, vhost.attempt_count.client),
        };
        d.body_unread = !request_complete.fired();
        match forwarded {
            // Outside the route timeout: an upgraded connection lasts as long as its peers want.
            Forwarded::Upgraded(up) => {
                upgrade::relay_upgraded(self.stats, d, up, (limits.idle, connect)).await;
                Continue::Close
            }
            Forwarded::Relayed { keep_alive: true } if keep_alive => Continue::KeepAlive,
            Forwarded::Relayed { .. } | Forwarded::Abort => Continue::Close,
            Forwarded::Reply(mut reply) => {
                reply.http10 = http10;
                // Envoy's encoder filters see the router's own replies too (after its attempt
                // count), as any response.
                let filters_own = filter_headers.len().saturating_sub(cookie_len);
                reply.encode_headers.extend_from_slice(&filter_headers[..filters_own]);
                // A client that said it closes is told so (Envoy's `connection: close`).
                reply.close |= !keep_alive;
                let close = reply.close;
                match self.reply(d, reply, head_request).await {
                    Continue::KeepAlive if !close => Continue::KeepAlive,
                    _ => Continue::Close,
                }
            }
        }
    }

    /// Starts a shadow exchange for each of the route's mirrors that samples this request, with a
    /// copy of what goes upstream (only a request whose body came whole with its head: a streamed
    /// body is not mirrored). Skipped when a reload has replaced the generation meanwhile (the
    /// mirror's cluster index belongs to this one).
    fn mirror(&self, fwd: &Forward, upstream_request: &[u8]) {
        let (Some(shard), current) = (self.shard.this.upgrade(), self.shard.generation()) else { return };
        if !std::ptr::eq(&*current, self.generation) {
            return;
        }
        for m in fwd.mirrors.iter().filter(|m| mirror::sampled(m, self.shard.rng.next())) {
            let Some(cluster) = mirror::target(m, &current, upstream_request) else { continue };
            if let Some(copy) = mirror::shadow_copy(upstream_request, m.shadow_suffix) {
                monoio::spawn(mirror::shadow(shard.clone(), current.clone(), cluster, copy));
            }
        }
    }

    /// Everything that can cut an exchange short, watched in one place so that the common case
    /// costs one timer: while the request body arrives, `request_timeout` and
    /// `max_stream_duration` (armed only when configured); once it is complete, the route
    /// timeout, the stream idle timeout until a response head is relayed (the relays bound each
    /// read and write after that), `max_stream_duration`, and the client leaving (Envoy's `DC`),
    /// which is only watched for once the exchange has taken `WATCH_CLIENT_AFTER`. Each timer runs
    /// for a fixed duration from a fixed event, so the shard's timer lists stay one per duration.
    async fn watch(
        &self,
        limits: &Limits,
        request_complete: &Signal,
        head_relayed: &Cell<bool>,
        client: std::os::fd::RawFd,
    ) -> Interrupted {
        let timers = &self.shard.timers;
        let mut max_duration = std::pin::pin!(maybe_after(timers, limits.max_duration));
        if !request_complete.fired() {
            let request = maybe_after(timers, limits.request);
            monoio::select! {
                _ = request_complete.wait() => {}
                _ = request => return Interrupted::RequestTimeout,
                _ = &mut max_duration => return Interrupted::MaxDuration { request_complete: false },
            }
        }
        let first = [limits.route, limits.idle].into_iter().flatten().fold(WATCH_CLIENT_AFTER, Duration::min);
        monoio::select! {
            _ = timers.after(first) => {}
            _ = &mut max_duration => return Interrupted::MaxDuration { request_complete: true },
        }
        let rest = |limit: Option<Duration>| limit.map(|l| l.saturating_sub(first));
        let mut route = std::pin::pin!(maybe_after(timers, rest(limits.route)));
        let mut idle = std::pin::pin!(maybe_after(timers, rest(limits.idle)));
        let mut left = std::pin::pin!(client_left(client));
        loop {
            monoio::select! {
                _ = &mut route => return Interrupted::RouteTimeout,
                _ = &mut max_duration => return Interrupted::MaxDuration { request_complete: true },
                _ = &mut left => return Interrupted::ClientLeft,
                _ = &mut idle => {
                    if !head_relayed.get() {
                        return Interrupted::StreamIdle;
                    }
                    idle.set(maybe_after(timers, None));
                }
            }
        }
    }

    /// What a cut-short exchange answers (Envoy's status, body, flag and stat for each), or
    /// `Abort` once the response has begun.
    /// `tell_attempts`: the virtual host's `include_attempt_count_in_response` (Envoy's router
    /// says the count on its own timeout reply too; the connection manager's replies do not).
    fn interrupted(
        &self,
        why: Interrupted,
        d: &mut Downstream,
        cluster: usize,
        tell_attempts: bool,
    ) -> Forwarded {
        let reply = match why {
            Interrupted::RouteTimeout => {
                self.generation.cluster_stats[cluster].upstream_rq_timeout.inc();
                let snap = &self.generation.snap.clusters[cluster];
                if let Some(endpoint) =
                    d.obs.upstream_host.and_then(|a| snap.endpoints.iter().position(|e| *e == a))
                {
                    if let Some(o) = &snap.outlier {
                        o.report(endpoint, Outcome::Timeout, || self.shard.rng.next());
                    }
                }
                d.obs.flag(ResponseFlags::UT);
                // The request was complete: the connection goes on, as Envoy's does.
                let mut timeout =
                    LocalReply::new(504, upstream::UPSTREAM_TIMEOUT).detailed(details::RESPONSE_TIMEOUT);
                if tell_attempts {
                    upstream::attempt_count_line(&mut timeout.headers, d.obs.attempts);
                }
                timeout
            }
            Interrupted::StreamIdle => LocalReply::new(504, upstream::STREAM_TIMEOUT)
                .flagged(ResponseFlags::SI)
                .detailed(details::STREAM_IDLE_TIMEOUT),
            Interrupted::RequestTimeout => {
                self.stats.downstream_rq_timeout.inc();
                LocalReply::new(408, b"request timeout").closing().detailed(details::REQUEST_OVERALL_TIMEOUT)
            }
            Interrupted::MaxDuration { request_complete } => {
                self.stats.downstream_rq_max_duration_reached.inc();
                // Envoy: 408 (and close) while the request is still arriving, else 504.
                let mut reply = LocalReply::new(504, b"downstream duration timeout")
                    .detailed(details::MAX_DURATION_TIMEOUT);
                // Envoy tells a gRPC client its deadline passed (DEADLINE_EXCEEDED), not UNAVAILABLE.
                reply.grpc_status = Some(4);
                if request_complete {
                    reply
                } else {
                    LocalReply { status: 408, ..reply }.closing()
                }
            }
            Interrupted::ClientLeft => {
                d.obs.flag(ResponseFlags::DC);
                return Forwarded::Abort;
            }
        };
        if d.response_started {
            // Envoy's log says why the relayed response was cut short.
            d.obs.flag(reply.flag);
            d.obs.details = reply.details.clone();
            return Forwarded::Abort;
        }
        Forwarded::Reply(reply)
    }

    /// Sends a reply skiff makes itself, counting its stat and flag.
    async fn reply(&self, d: &mut Downstream, mut reply: LocalReply, head_request: bool) -> Continue {
        // A response a filter encoded itself (the CORS preflight answer) is not a local reply:
        // Envoy sends it as it is.
        if self.grpc.get() && !reply.encoded {
            reply = reply.into_grpc(head_request);
        }
        match reply.stat {
            ReplyStat::None => {}
            ReplyStat::ProtocolError => self.stats.downstream_cx_protocol_error.inc(),
            ReplyStat::NoRoute => self.stats.no_route.inc(),
            ReplyStat::Direct => self.stats.rq_direct_response.inc(),
            ReplyStat::Redirect => self.stats.rq_redirect.inc(),
            ReplyStat::HeaderTimeout => self.stats.downstream_rq_header_timeout.inc(),
            ReplyStat::NoCluster => self.stats.no_cluster.inc(),
        }
        d.obs.flag(reply.flag);
        d.obs.details = reply.details.clone();
        d.status = reply.status;
        // Envoy's `%BYTES_SENT%` counts a local reply's body too.
        d.obs.bytes_sent = reply.body.len() as u64;
        reply.close |= self.shard.draining() || self.last_on_connection;
        let close = reply.close;
        d.resp_out.clear();
        reply::local(&mut d.resp_out, &reply, &self.shard.date, &self.listener.hcm.server_name, head_request);
        match write_out(&mut d.stream, &mut d.resp_out).await {
            Ok(()) if !close => Continue::KeepAlive,
            _ => Continue::Close,
        }
    }

    /// The request's stats, log line and span.
    fn finish(&self, d: &mut Downstream) {
        if d.status != 0 {
            self.stats.response(d.status).inc();
            self.stats.downstream_rq_completed.inc();
        }
        if d.obs.flags.contains(ResponseFlags::DC) {
            self.stats.downstream_cx_destroy_remote_active_rq.inc();
        }
        // However the stream idled out (before the response, within either body): one count.
        if d.obs.flags.contains(ResponseFlags::SI) {
            self.stats.downstream_rq_idle_timeout.inc();
        }
        self.stats.downstream_rq_time.record_us(self.started.elapsed().as_micros() as u64);
        let (peer, local, id) = (d.peer, d.local, d.connection_id);
        observe::finish(
            self.shard,
            self.generation,
            self.listener,
            &d.obs,
            d.status,
            self.started,
            peer,
            local,
            id,
        );
    }
}

/// The single cluster a request's route names: Envoy has resolved it before its filters answer,
/// and logs it on their replies.
fn routed_cluster(found: Option<(&VirtualHost, &Route)>) -> Option<usize> {
    match found {
        Some((_, Route { action: Action::Forward(Forward { clusters: Targets::Single(c), .. }), .. })) => {
            Some(*c).filter(|c| *c != MISSING_CLUSTER)
        }
        _ => None,
    }
}

/// A check's reply (the service's refusal, or the body over the check's limit) as the client gets it.
fn check_reply(r: CheckReply) -> LocalReply {
    let mut reply = LocalReply::new(r.status, b"").flagged(r.flag).detailed(r.details);
    reply.body = r.body.into();
    reply.headers = r.headers;
    reply
}

/// How long an exchange may take before skiff starts watching the client for leaving. Most answers
/// come sooner, and then no poll on the client's socket is ever submitted (one per request would
/// cost every request ring work); a client that leaves is noticed this much later at most.
const WATCH_CLIENT_AFTER: Duration = Duration::from_millis(10);

/// What cut an exchange short.
enum Interrupted {
    RouteTimeout,
    /// No bytes either way for the stream idle timeout, before a response head.
    StreamIdle,
    /// `request_timeout`: the request had not fully arrived.
    RequestTimeout,
    /// `max_stream_duration`, before or after the request arrived whole.
    MaxDuration {
        request_complete: bool,
    },
    ClientLeft,
}

/// A timer for `limit`, or one that never fires.
async fn maybe_after(timers: &super::timer::Timers, limit: Option<Duration>) {
    match limit {
        Some(limit) => timers.after(limit).await,
        None => std::future::pending::<()>().await,
    }
}

/// One request's timeouts, from its connection manager, its route and its headers (None = off).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The route `timeout`, from the complete request to the complete response.
    route: Option<Duration>,
    /// The route's `idle_timeout`, else the connection manager's `stream_idle_timeout`.
    idle: Option<Duration>,
    /// `request_timeout`, from the head until the request is complete.
    request: Option<Duration>,
    /// The route's `max_stream_duration` (or its `grpc-timeout` reading), else the connection
    /// manager's, from the head.
    max_duration: Option<Duration>,
}

impl Limits {
    /// `grpc`: the request is gRPC (a route's `max_grpc_timeout` then sets its route timeout).
    fn of(hcm: &StreamLimits, fwd: &Forward, head: &RequestHead<'_>, grpc: bool) -> Limits {
        let msd = fwd.max_stream_duration;
        let mut max_duration = msd.max.unwrap_or(hcm.max_duration);
        let header = || {
            let line = head.headers.iter().find(|h| header_is(h.name, "grpc-timeout"));
            line.and_then(|h| grpc_timeout(h.value))
        };
        if let Some(cap) = msd.grpc_header_max {
            if let Some(timeout) = header() {
                let capped = cap.map_or(timeout, |cap| timeout.min(cap));
                max_duration = Some(capped.saturating_sub(msd.grpc_header_offset));
            }
        }
        // Envoy's router: a route with `max_stream_duration` has no route timeout at all.
        let route = match fwd.grpc_timeout.as_deref() {
            _ if msd.set => None,
            Some(g) if grpc => g.route_timeout(header()),
            _ => fwd.timeout,
        };
        Limits { route, idle: fwd.idle_timeout.unwrap_or(hcm.idle), request: hcm.request, max_duration }
    }
}

/// A `grpc-timeout` header's value: at most 8 digits and a unit (H, M, S, m, u, n), as gRPC
/// defines it; anything else (and 0, gRPC's "no deadline") is no timeout.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let d = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// Resolves when the client has closed its connection; bytes it sends meanwhile (a pipelined
/// request) do not count as leaving and end the watch. Works on a second handle on the socket, as
/// the exchange holds the connection itself.
async fn client_left(fd: std::os::fd::RawFd) {
    // SAFETY: the connection (and so `fd`) outlives this future, which is dropped with the exchange.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Ok(stream) = super::socket::duplicate(borrowed) {
        if stream.readable(false).await.is_ok()
            && super::socket::peek(&stream) == super::socket::Pending::Closed
        {
            return;
        }
    }
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_reads_grpc_units_and_ignores_anything_else() {
        assert_eq!(grpc_timeout(b"300m"), Some(Duration::from_millis(300)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        // gRPC's 0 is "no deadline"; more than 8 digits, no unit or a bad unit is not a timeout.
        for bad in [&b"0S"[..], b"123456789S", b"10", b"10s", b"S", b"", b"-1S"] {
            assert_eq!(grpc_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_configured_header_count_limit_is_the_parsers() {
        assert_eq!(crate::config::MAX_HEADERS_COUNT, crate::http::MAX_HEADERS);
    }
}
