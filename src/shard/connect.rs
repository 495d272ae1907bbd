//! CONNECT termination (a route whose CONNECT `upgrade_configs` entry has `connect_config`): once
//! the cluster's host accepted a fresh connection, the client is told `200 OK` in Envoy's exact
//! bytes, and `upgrade.rs` relays the tunnel. Owns that answer only: `request` decides whether a
//! CONNECT may tunnel, `upstream` connects (and answers a failure as for any request).

use super::downstream::Downstream;
use super::headers::write_adds;
use super::reply::{header, DateCache};
use super::socket::write_out;
use crate::access_log::ResponseFlags;
use crate::route::HeaderEdits;

/// What the answer carries besides its status line.
pub(super) struct Answer<'a> {
    /// `response_headers_to_add` of the weighted entry, route, virtual host and route table.
    pub edits: &'a [&'a HeaderEdits; 4],
    /// Lines the request's HTTP filters add to its response.
    pub filter_headers: &'a [u8],
    pub date: &'a DateCache,
    pub server: &'a str,
}

/// Tells the client its tunnel is open: `HTTP/1.1 200 OK`, the configured response headers, then
/// `date` and `server`, no framing header (the bytes that follow are the tunnel's), as Envoy 1.40
/// answers. Err: the client left (flagged `DC`).
pub(super) async fn established(d: &mut Downstream, a: Answer<'_>) -> Result<(), ()> {
    d.status = 200;
    d.response_started = true;
    d.resp_out.clear();
    d.resp_out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    write_adds(&mut d.resp_out, a.edits);
    d.resp_out.extend_from_slice(a.filter_headers);
    a.date.write(&mut d.resp_out);
    header(&mut d.resp_out, b"server", a.server.as_bytes());
    d.resp_out.extend_from_slice(b"\r\n");
    write_out(&mut d.stream, &mut d.resp_out).await.map_err(|_| d.obs.flag(ResponseFlags::DC))
}
