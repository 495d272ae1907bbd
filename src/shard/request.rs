//! One request, from its parsed head to its access-log line. `Request::plan` decides, while the
//! head is still borrowed from the connection's buffer, what happens (a local reply, or the
//! upstream head written and a route chosen); `Request::run` carries it out: it holds the guard of
//! the request's active gauge, applies the route timeout in exactly one place, sends the one reply
//! skiff makes itself when there is one, and writes the log line and span. Talks to upstreams only
//! through `upstream::forward`; never reads a request head itself.

use super::body;
use super::downstream::Downstream;
use super::headers::{self, RequestRewrite};
use super::observe::{self, Observed};
use super::reply::{self, LocalReply, ReplyStat};
use super::signal::Signal;
use super::socket::write_out;
use super::state::{Generation, Shard};
use super::upgrade;
use super::upstream::{self, Exchange, Forwarded, RequestFacts};
use crate::access_log::ResponseFlags;
use crate::filters::Verdict;
use crate::http::{RequestHead, Version};
use crate::route::{Action, Route, Targets, VirtualHost};
use crate::snapshot::ListenerSnap;
use crate::stats::HttpStats;
use bytes::Buf;
use std::os::fd::AsRawFd;
use std::time::Instant;

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
    Forward { route: &'g Route, vhost: &'g VirtualHost, facts: RequestFacts, consumed: usize },
    /// `consumed`: the bytes to skip when the whole body is here (None: close after replying,
    /// since an unread body would be taken for the next request).
    Reply { reply: LocalReply, consumed: Option<usize>, head_request: bool },
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
    started: Instant,
    /// The last request this connection may carry (`max_requests_per_connection`): its response
    /// says `connection: close` and the connection closes after it.
    last_on_connection: bool,
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
            started,
            last_on_connection: false,
            _active: ActiveGuard(stats),
        }
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
        (peer_ip, xff_ip): (&str, &str),
        obs: &mut Observed,
    ) -> Plan<'g> {
        req_out.clear();
        let hcm = &self.listener.hcm;
        let head_request = head.method == "HEAD";
        let http10 = head.version == Version::Http10;
        // An accepted HTTP/1.0 request is answered in HTTP/1.0, local replies included.
        let answer_http10 = http10 && hcm.accept_http_10;
        let reply = |mut reply: LocalReply, consumed| {
            reply.http10 |= answer_http10;
            Plan::Reply { reply, consumed, head_request }
        };
        if http10 && !hcm.accept_http_10 {
            // Envoy's codec refuses it before the request exists: its log line has no method or
            // path, and says HTTP/1.1 (the protocol of the reply).
            obs.protocol = "HTTP/1.1";
            let refusal = LocalReply::new(426, b"Upgrade Required").closing().flagged(ResponseFlags::DPE);
            return reply(refusal, None);
        }
        self.stats.downstream_rq_http1_total.inc();
        let traced = observe::on_request_head(self.listener, head, obs, self.shard);
        let scan = match body::scan(head.body, &buf[head.head_len..]) {
            Ok(scan) => scan,
            Err(e) => {
                log::debug!("refusing request from {peer_ip}: chunked body: {e:?}");
                let refusal = LocalReply::new(400, b"Bad Request")
                    .closing()
                    .flagged(ResponseFlags::DPE)
                    .counted(ReplyStat::ProtocolError);
                return reply(refusal, None);
            }
        };
        let whole = scan.complete.then_some(head.head_len + scan.len);
        let default_host = if http10 { hcm.default_host_for_http_10.as_deref() } else { None };
        let table = &self.listener.routes;
        let Some(host) = head.host.or(default_host).map(|h| table.host_for_matching(h)) else {
            // HTTP/1.0 without Host and no default: nothing to route by (Envoy: 400).
            let refusal = LocalReply::new(400, b"").closing().flagged(ResponseFlags::DPE);
            return reply(refusal, None);
        };
        let found =
            table.virtual_host(host).and_then(|vhost| Some((vhost, vhost.route(head.path, head.headers)?)));
        // Envoy refuses an upgrade its configuration does not allow before the route acts (even
        // one that has no route): 403, closing.
        let upgrade = upgrade::requested(head);
        if let Some(kind) = upgrade {
            let forward = found.and_then(|(_, r)| match &r.action {
                Action::Forward(f) => Some(f),
                _ => None,
            });
            if !upgrade::allowed(kind, &hcm.upgrades, forward.map(|f| f.upgrades.as_slice())) {
                self.stats.downstream_rq_ws_on_non_ws_route.inc();
                // Envoy's line names the route's cluster: the route was resolved to decide.
                if let Some(Targets::Single(c)) = forward.map(|f| &f.clusters) {
                    obs.upstream_cluster = Some(*c);
                }
                return reply(LocalReply::new(403, b"").closing(), None);
            }
        }
        let Some((vhost, route)) = found else {
            let no_route = LocalReply::new(404, b"").flagged(ResponseFlags::NR).counted(ReplyStat::NoRoute);
            return reply(no_route, whole);
        };
        // The configured filters, after routing and before the router acts on the route.
        if let Verdict::Reply { status, body, flag } = self.listener.filters.on_request_headers(head) {
            return reply(LocalReply::new(status, body).flagged(flag), whole);
        }
        let fwd = match &route.action {
            Action::Direct { status, body } => {
                let mut direct = LocalReply::new(*status, b"").counted(ReplyStat::Direct);
                if let Some(body) = body {
                    direct.body = body.clone().into_bytes().into();
                }
                return reply(direct, whole);
            }
            Action::Redirect(r) => {
                let mut redirect = LocalReply::new(r.status, b"").counted(ReplyStat::Redirect);
                redirect.location = Some(route.redirect_location(r, host, head.path));
                return reply(redirect, whole);
            }
            Action::Forward(fwd) => fwd,
        };
        let mut rewritten = String::new();
        let path = if route.rewrite_path(head.path, &mut rewritten) { rewritten.as_str() } else { head.path };
        let rewrite = RequestRewrite {
            path,
            host: fwd.host_rewrite.as_deref().or(Some(host)),
            edits: [&route.request_edits, &vhost.request_edits, &table.request_edits],
            peer_ip,
            xff_ip,
            use_remote_address: hcm.use_remote_address,
            generate_request_id: hcm.generate_request_id,
            traced,
            expected_timeout_ms: fwd.timeout.map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64),
            listener: self.listener,
            upgrade: upgrade.is_some(),
        };
        headers::write_request_head(req_out, head, &rewrite, &self.shard.rng, obs);
        let body_end = head.head_len + scan.len;
        obs.bytes_received = scan.payload;
        req_out.extend_from_slice(&buf[head.head_len..body_end]);
        let facts = RequestFacts {
            keep_alive: head.keep_alive && !self.last_on_connection,
            head_method: head_request,
            http10,
            expect_continue: head.expect_continue,
            body_buffered: scan.complete,
            body_rest: scan.rest,
            upgrade: upgrade.is_some(),
        };
        Plan::Forward { route, vhost, facts, consumed: body_end }
    }

    /// Carries out the plan, then counts and logs the request.
    pub async fn run(self, plan: Plan<'g>, d: &mut Downstream) -> Continue {
        d.status = 0;
        d.response_started = false;
        let next = match plan {
            Plan::Reply { mut reply, consumed, head_request } => {
                match consumed {
                    Some(n) => d.buf.advance(n.min(d.buf.len())),
                    None => reply.close = true,
                }
                self.reply(d, reply, head_request).await
            }
            Plan::Forward { route, vhost, facts, consumed } => {
                d.buf.advance(consumed);
                self.forward(d, route, vhost, facts).await
            }
        };
        self.finish(d);
        next
    }

    /// Refuses a request whose head could not be read (400, 408, 431, 501): always closes.
    pub async fn refuse(self, d: &mut Downstream, status: u16) {
        let (body, stat, flag): (&'static [u8], _, _) = match status {
            408 => (b"request timeout", ReplyStat::HeaderTimeout, ResponseFlags::NONE),
            431 => (b"Request Header Fields Too Large", ReplyStat::ProtocolError, ResponseFlags::DPE),
            501 => (b"Not Implemented", ReplyStat::ProtocolError, ResponseFlags::DPE),
            _ => (b"Bad Request", ReplyStat::ProtocolError, ResponseFlags::DPE),
        };
        // Envoy's codec refuses these before a request exists: the log line has no method or path
        // and gives the protocol of the reply.
        d.obs.protocol = "HTTP/1.1";
        let reply = LocalReply::new(status, body).closing().flagged(flag).counted(stat);
        self.reply(d, reply, false).await;
        self.finish(d);
    }

    async fn forward(
        &self,
        d: &mut Downstream,
        route: &'g Route,
        vhost: &'g VirtualHost,
        facts: RequestFacts,
    ) -> Continue {
        let Action::Forward(fwd) = &route.action else { return Continue::Close };
        let cluster = fwd.clusters.pick(self.shard.rng.next());
        let keep_alive = facts.keep_alive;
        let head_request = facts.head_method;
        let http10 = facts.http10;
        let request_complete = Signal::default();
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
                &route.response_edits,
                &vhost.response_edits,
                &self.listener.routes.response_edits,
            ],
            server_name: &self.listener.hcm.server_name,
            request_complete: &request_complete,
        };
        // Once the request is complete, one timer stands for both limits on the exchange: the route
        // timeout (Envoy's: from the end of the request to the end of the response, across
        // retries) and the client leaving (Envoy's `DC`), which is only watched for once the
        // exchange has taken `WATCH_CLIENT_AFTER`.
        let client = d.stream.as_raw_fd();
        let watch = async {
            request_complete.wait().await;
            let first = fwd.timeout.map_or(WATCH_CLIENT_AFTER, |t| t.min(WATCH_CLIENT_AFTER));
            self.shard.timers.after(first).await;
            let rest = async {
                match fwd.timeout {
                    Some(limit) if limit > first => self.shard.timers.after(limit - first).await,
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            };
            monoio::select! {
                _ = rest => Interrupted::RouteTimeout,
                _ = client_left(client) => Interrupted::ClientLeft,
            }
        };
        let forwarded = monoio::select! {
            forwarded = upstream::forward(&ex, d) => forwarded,
            why = watch => match why {
                Interrupted::RouteTimeout => {
                    self.generation.cluster_stats[cluster].upstream_rq_timeout.inc();
                    d.obs.flag(ResponseFlags::UT);
                    if d.response_started {
                        Forwarded::Abort
                    } else {
                        Forwarded::Reply(LocalReply::new(504, b"upstream request timeout").closing())
                    }
                }
                Interrupted::ClientLeft => {
                    d.obs.flag(ResponseFlags::DC);
                    Forwarded::Abort
                }
            },
        };
        match forwarded {
            // Outside the route timeout: an upgraded connection lasts as long as its peers want.
            Forwarded::Upgraded(up) => {
                upgrade::relay_upgraded(self.stats, d, up).await;
                Continue::Close
            }
            Forwarded::Relayed { keep_alive: true } if keep_alive => Continue::KeepAlive,
            Forwarded::Relayed { .. } | Forwarded::Abort => Continue::Close,
            Forwarded::Reply(mut reply) => {
                reply.http10 = http10;
                let close = reply.close || !keep_alive;
                match self.reply(d, reply, head_request).await {
                    Continue::KeepAlive if !close => Continue::KeepAlive,
                    _ => Continue::Close,
                }
            }
        }
    }

    /// Sends a reply skiff makes itself, counting its stat and flag.
    async fn reply(&self, d: &mut Downstream, mut reply: LocalReply, head_request: bool) -> Continue {
        match reply.stat {
            ReplyStat::None => {}
            ReplyStat::ProtocolError => self.stats.downstream_cx_protocol_error.inc(),
            ReplyStat::NoRoute => self.stats.no_route.inc(),
            ReplyStat::Direct => self.stats.rq_direct_response.inc(),
            ReplyStat::Redirect => self.stats.rq_redirect.inc(),
            ReplyStat::HeaderTimeout => self.stats.downstream_rq_header_timeout.inc(),
        }
        d.obs.flag(reply.flag);
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
        self.stats.downstream_rq_time.record_us(self.started.elapsed().as_micros() as u64);
        self.listener.filters.on_log(d.status, d.obs.flags);
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

/// How long an exchange may take before skiff starts watching the client for leaving. Most answers
/// come sooner, and then no poll on the client's socket is ever submitted (one per request would
/// cost every request ring work); a client that leaves is noticed this much later at most.
const WATCH_CLIENT_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// What cut an exchange short.
enum Interrupted {
    RouteTimeout,
    ClientLeft,
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
