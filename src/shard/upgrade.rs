//! HTTP/1.1 upgrades (`Connection: upgrade` with `Upgrade: <type>`, WebSocket and any named type):
//! whether the configuration allows one — the connection manager's `upgrade_configs`, overridden
//! per type by the route's, as Envoy decides — and, once the upstream answered `101 Switching
//! Protocols`, the connection as a byte relay both ways (`relay.rs`) until either side closes or
//! nothing moves for the stream idle timeout. Counts the upgrade stats and sets what the access
//! log says about the relayed bytes. Writes no reply and no head: `request` refuses a disallowed
//! upgrade, `upstream` relays the 101.

use super::downstream::Downstream;
use super::relay::{self, End, Pipe, Side};
use super::reply::details;
use super::socket::second_handle;
use crate::access_log::ResponseFlags;
use crate::cluster::pool::Upstream;
use crate::config::UpgradeConfig;
use crate::http::{header_is, RequestHead};
use crate::stats::HttpStats;
use bytes::BytesMut;
use std::time::Duration;

/// The upgrade a request asks for: its `Upgrade` value when its `Connection` lists `upgrade`
/// (Envoy's test); without that token an `Upgrade` header is only a hop-by-hop field.
pub(super) fn requested<'h>(head: &RequestHead<'h>) -> Option<&'h str> {
    // A CONNECT is an upgrade of its own kind (Envoy's `upgrade_type: CONNECT`), whatever it says.
    if head.method == "CONNECT" {
        return Some(CONNECT);
    }
    let upgrade = head.headers.iter().find(|h| header_is(h.name, "upgrade"))?;
    if !head.connection_lists("upgrade") {
        return None;
    }
    std::str::from_utf8(upgrade.value).ok().map(str::trim)
}

/// The upgrade type of a CONNECT request (lower-cased, as the configured types are).
pub(super) const CONNECT: &str = "connect";

/// Whether `kind` may upgrade (`UpgradeConfig::allowed`).
pub(super) fn allowed(kind: &str, hcm: &[UpgradeConfig], route: Option<&[UpgradeConfig]>) -> bool {
    UpgradeConfig::allowed(kind, hcm, route)
}

/// Relays an upgraded connection (its 101 already sent) until either side ends it or it idles
/// past `idle` (the stream idle timeout: what bounds an upgraded stream in Envoy, whose
/// connection `idle_timeout` only runs while no stream is active; None = never). Bytes the client
/// sent after its head (`d.buf`) and the upstream after its 101 (`up.read.buf`) go first.
/// `connect`: a CONNECT tunnel, which `downstream_cx_upgrades_total` counted as it was accepted
/// (as Envoy counts it, tunnel or not) and whose client bytes are all tunnel bytes.
pub(super) async fn relay_upgraded(
    stats: &HttpStats,
    d: &mut Downstream,
    mut up: Box<Upstream>,
    (idle, connect): (Option<Duration>, bool),
) {
    if !connect {
        stats.downstream_cx_upgrades_total.inc();
    }
    stats.downstream_cx_upgrades_active.inc();
    let relayed = match (second_handle(&d.stream), up.read.parts()) {
        (Ok(mut client_reader), Some((upstream_reader, upstream_buf))) => {
            let (tx, rx) = (&up.stats.upstream_cx_tx_bytes_total, &up.stats.upstream_cx_rx_bytes_total);
            let upward = Pipe {
                from: &mut client_reader,
                pending: std::mem::take(&mut d.buf),
                to: &mut up.stream,
                counters: &[tx],
            };
            let downward = Pipe {
                from: upstream_reader,
                pending: std::mem::replace(upstream_buf, BytesMut::new()),
                to: &mut d.stream,
                counters: &[rx],
            };
            Some(relay::relay(upward, downward, idle.unwrap_or(crate::config::NEVER), false).await)
        }
        _ => None,
    };
    stats.downstream_cx_upgrades_active.dec();
    let Some(relayed) = relayed else {
        d.obs.flag(ResponseFlags::DC);
        return;
    };
    if connect {
        // Those that came with the head were counted already (`request`): the relay sent them.
        d.obs.bytes_received = relayed.to_upstream;
    } else {
        d.obs.bytes_received += relayed.to_upstream;
    }
    d.obs.bytes_sent = relayed.to_downstream;
    // The side that ended the relay, closing or failing: Envoy flags the client going as `DC` and
    // the upstream going as `UC` (observed with Envoy 1.40), a quiet stream as `SI`.
    let ended_by = match relayed.end {
        End::Failed(side) => Some(side),
        End::Closed => relayed.last_close,
        End::IdleTimeout => None,
    };
    d.obs.flag(match ended_by {
        None => ResponseFlags::SI,
        Some(Side::Downstream) => ResponseFlags::DC,
        Some(Side::Upstream) => ResponseFlags::UC,
    });
    match ended_by {
        None => d.obs.details = std::borrow::Cow::Borrowed(details::STREAM_IDLE_TIMEOUT),
        Some(Side::Upstream) => d.obs.details = std::borrow::Cow::Borrowed(details::RESET_AFTER_RESPONSE),
        // `DC` says it in the log line (`observe`).
        Some(Side::Downstream) => {}
    }
    up.peer_closed = ended_by == Some(Side::Upstream);
    up.in_request = ended_by != Some(Side::Upstream);
}
