//! The TLS counters Envoy keeps per listener and per cluster (`listener.<address>.ssl.*`,
//! `cluster.<name>.ssl.*`) and per connection manager (`http.<prefix>.downstream_cx_ssl_*`), with
//! Envoy's names. Counting only; the shard's `tls` module decides what each handshake counts as.

use super::{Counter, Dump, Entry, Gauge, Scope, StatsDump, Value};

/// `<listener or cluster>.ssl.*`.
#[derive(Default, Debug)]
pub struct SslStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub no_certificate: Counter,
    pub fail_verify_no_cert: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_san: Counter,
    pub session_reused: Counter,
    pub tls12: Counter,
    pub tls13: Counter,
}

impl SslStats {
    pub(super) fn dump(&self, scope: &Scope, out: &mut StatsDump) {
        let always = [
            ("ssl.handshake", &self.handshake),
            ("ssl.connection_error", &self.connection_error),
            ("ssl.no_certificate", &self.no_certificate),
            ("ssl.fail_verify_no_cert", &self.fail_verify_no_cert),
            ("ssl.fail_verify_error", &self.fail_verify_error),
            ("ssl.fail_verify_san", &self.fail_verify_san),
            ("ssl.session_reused", &self.session_reused),
        ];
        for (name, c) in always {
            c.dump(scope, name, out);
        }
        // Envoy makes a version's counter when a handshake first uses it.
        for (name, c) in [("ssl.versions.TLSv1.2", &self.tls12), ("ssl.versions.TLSv1.3", &self.tls13)] {
            if c.get() != 0 {
                out.entries.push(Entry { scope: scope.clone(), name, value: Value::Counter(c.get()) });
            }
        }
    }
}

/// `http.<stat_prefix>.downstream_cx_ssl_*`: a connection manager's TLS connections.
#[derive(Default, Debug)]
pub struct HttpSslStats {
    pub downstream_cx_ssl_total: Counter,
    pub downstream_cx_ssl_active: Gauge,
}

impl HttpSslStats {
    pub(super) fn dump(&self, scope: &Scope, out: &mut StatsDump) {
        self.downstream_cx_ssl_total.dump(scope, "downstream_cx_ssl_total", out);
        self.downstream_cx_ssl_active.dump(scope, "downstream_cx_ssl_active", out);
    }
}
