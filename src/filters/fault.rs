//! `envoy.filters.http.fault`: decides whether a request is delayed and whether it is aborted,
//! from the config (or the connection manager's per-route override) and, when the config asks for
//! it, from the `x-envoy-fault-*` request headers. Owns the decision and the count of active
//! faults `max_active_faults` is checked against; the request owner waits out the delay on its
//! shard's timers and sends the abort reply.

use super::verdict::{header, hit, Active, ActiveFault, Verdict};
use crate::access_log::ResponseFlags;
use crate::config::{self, FaultAbortSource, FaultDelaySource, Fraction};
use crate::http::RequestHead;
use crate::route::{HeaderMatcher, Targets};
use crate::stats::FaultStats;
use std::rc::Rc;
use std::time::Duration;

const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
const DELAY_PERCENT_HEADER: &str = "x-envoy-fault-delay-request-percentage";
const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
const ABORT_PERCENT_HEADER: &str = "x-envoy-fault-abort-request-percentage";
const NODE_HEADER: &str = "x-envoy-downstream-service-node";

/// One fault config, compiled.
#[derive(Debug)]
pub struct Fault {
    delay: Option<(FaultDelaySource, Fraction)>,
    abort: Option<(FaultAbortSource, Fraction)>,
    headers: Vec<HeaderMatcher>,
    /// Index of `upstream_cluster` in the snapshot; Some(None) when it names no cluster.
    upstream_cluster: Option<Option<usize>>,
    downstream_nodes: Vec<String>,
    max_active: Option<u64>,
}

impl Fault {
    pub(super) fn compile(
        c: &config::Fault,
        clusters: &std::collections::HashMap<&str, usize>,
    ) -> Result<Self, crate::route::BuildError> {
        Ok(Fault {
            delay: c.delay.map(|d| (d.source, d.percentage)),
            abort: c.abort.map(|a| (a.source, a.percentage)),
            headers: c.headers.iter().map(HeaderMatcher::compile).collect::<Result<_, _>>()?,
            upstream_cluster: c.upstream_cluster.as_deref().map(|name| clusters.get(name).copied()),
            downstream_nodes: c.downstream_nodes.clone(),
            max_active: c.max_active_faults.map(u64::from),
        })
    }

    /// Envoy's order: the request must match (cluster, node, headers); over `max_active_faults`
    /// nothing is injected and `faults_overflow` counts it; then the delay, then the abort.
    pub(super) fn on_request<'a>(
        &self,
        head: &RequestHead<'_>,
        targets: Option<&Targets>,
        active: &'a Active,
        stats: &Rc<FaultStats>,
        roll: &mut dyn FnMut() -> u64,
        v: &mut Verdict<'a>,
    ) {
        if let Some(want) = self.upstream_cluster {
            // A weighted route's cluster is picked later, by the router: it matches no name here.
            let routed = match targets {
                Some(Targets::Single(i)) => Some(*i),
                _ => None,
            };
            if want.is_none() || routed != want {
                return;
            }
        }
        if !self.downstream_nodes.is_empty() {
            let node = header(head, NODE_HEADER).and_then(|v| std::str::from_utf8(v).ok());
            if !node.is_some_and(|n| self.downstream_nodes.iter().any(|d| d == n)) {
                return;
            }
        }
        if !self.headers.iter().all(|m| m.matches(head.headers)) {
            return;
        }
        if self.delay.is_none() && self.abort.is_none() {
            return;
        }
        if let Some(max) = self.max_active {
            if active.get() >= max {
                stats.faults_overflow.inc();
                return;
            }
        }
        let delay = self.delay.and_then(|(source, pct)| {
            let duration = match source {
                FaultDelaySource::Fixed(d) => d,
                FaultDelaySource::Header => Duration::from_millis(number(header(head, DELAY_HEADER))?),
            };
            let pct = header_percentage(head, source == FaultDelaySource::Header, DELAY_PERCENT_HEADER, pct);
            (hit(pct, roll()) && !duration.is_zero()).then_some(duration)
        });
        // The HTTP status, and the gRPC status a gRPC request gets instead of its mapping.
        let abort = self.abort.and_then(|(source, pct)| {
            let status = match source {
                FaultAbortSource::Status(s) => (s, None),
                FaultAbortSource::Grpc(g) => (200, Some(g)),
                // Envoy reads the gRPC header only without a valid HTTP one.
                FaultAbortSource::Header => {
                    let http = number(header(head, ABORT_HEADER))
                        .and_then(|s| u16::try_from(s).ok())
                        .filter(|s| (200..600).contains(s));
                    match http {
                        Some(s) => (s, None),
                        None => (200, Some(u32::try_from(number(header(head, ABORT_GRPC_HEADER))?).ok()?)),
                    }
                }
            };
            let pct = header_percentage(head, source == FaultAbortSource::Header, ABORT_PERCENT_HEADER, pct);
            hit(pct, roll()).then_some(status)
        });
        if delay.is_none() && abort.is_none() {
            return;
        }
        v.fault = Some(ActiveFault::begin(active, stats.clone()));
        if let Some(d) = delay {
            stats.delays_injected.inc();
            v.delay = Some(d);
            v.flags |= ResponseFlags::DELAY_INJECTED;
        }
        if let Some((status, grpc_status)) = abort {
            stats.aborts_injected.inc();
            v.reply = Some(super::verdict::FilterReply {
                status,
                body: std::borrow::Cow::Borrowed(b"fault filter abort"),
                flag: ResponseFlags::FAULT_INJECTED,
                headers: Vec::new(),
                details: std::borrow::Cow::Borrowed("fault_filter_abort"),
                grpc_status,
            });
        }
    }
}

/// A header-controlled fault's percentage: the header's numerator, never above the configured
/// one, over the configured denominator (Envoy's `HeaderPercentageProvider`).
fn header_percentage(
    head: &RequestHead<'_>,
    from_header: bool,
    name: &str,
    configured: Fraction,
) -> Fraction {
    if !from_header {
        return configured;
    }
    match number(header(head, name)) {
        Some(n) => {
            let asked = n.saturating_mul(u64::from(configured.unit)).min(1_000_000) as u32;
            Fraction { per_million: configured.per_million.min(asked), unit: configured.unit }
        }
        None => configured,
    }
}

fn number(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}
