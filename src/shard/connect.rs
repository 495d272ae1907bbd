//! CONNECT termination (a route whose CONNECT `upgrade_configs` entry has `connect_config`): once
//! the cluster's host accepted a fresh connection, the client is told `200 OK` in Envoy's exact
//! bytes, and `upgrade.rs` relays the tunnel. Owns that answer only: `request` decides whether a
//! CONNECT may tunnel, `upstream` connects (and answers a failure as for any request).

use super::downstream::Downstream;
use super::reply::{header, DateCache};
use super::socket::write_out;
use crate::access_log::ResponseFlags;

/// Tells the client its tunnel is open: `HTTP/1.1 200 OK`, `date` and `server`, no framing
/// header (the bytes that follow are the tunnel's), as Envoy 1.40 answers. Err: the client left
/// (flagged `DC`).
pub(super) async fn established(d: &mut Downstream, date: &DateCache, server: &str) -> Result<(), ()> {
    d.status = 200;
    d.response_started = true;
    d.resp_out.clear();
    d.resp_out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    date.write(&mut d.resp_out);
    header(&mut d.resp_out, b"server", server.as_bytes());
    d.resp_out.extend_from_slice(b"\r\n");
    write_out(&mut d.stream, &mut d.resp_out).await.map_err(|_| d.obs.flag(ResponseFlags::DC))
}
