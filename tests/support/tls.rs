//! TLS test material: a CA and leaf certificates made at test time with the `openssl` CLI (never
//! checked in), and `curl` as the real TLS client, reporting what a user would see.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory with `ca.crt` and, per leaf, `<name>.crt` and `<name>.key` (EC P-256).
pub struct Certs {
    pub dir: PathBuf,
}

/// The leaves every test may use, with their subjectAltName.
const LEAVES: &[(&str, &str)] = &[
    ("a", "DNS:a.example,DNS:localhost"),
    ("b", "DNS:b.example"),
    ("up", "DNS:up.example"),
    ("client", "DNS:client.example,URI:spiffe://test/client"),
    ("stranger", "DNS:client.example"),
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certs {
    /// Makes a CA and the leaves signed by it; `stranger` is signed by a second, untrusted CA.
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).expect("cert dir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let (key, crt, subj) = (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN={ca}"));
            args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            openssl(dir, &args);
        }
        let certs = Certs { dir: dir.to_path_buf() };
        for (name, san) in LEAVES {
            certs.leaf(name, san, if *name == "stranger" { "other-ca" } else { "ca" });
        }
        certs
    }

    /// Makes `<name>.crt` and `<name>.key` (EC P-256) with subjectAltName `san`, signed by `ca`
    /// (`ca` or `other-ca`): a renewed certificate, say.
    pub fn leaf(&self, name: &str, san: &str, ca: &str) {
        let dir = &self.dir;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        let subj = format!("/CN={name}");
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n")).unwrap();
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A certificate file's serial as Envoy's `/certs` prints it (lowercase hex, no leading zero
    /// byte).
    pub fn serial(&self, file: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in", &self.path(file)])
            .output()
            .expect("run openssl x509");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
        text.trim_start_matches("serial=").trim_start_matches("00").to_string()
    }
}

/// What curl saw: its exit code (0 = a response came), the status and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Curl {
    pub code: i32,
    pub status: Option<u16>,
    pub head: String,
    pub body: String,
}

/// `curl https://<host>:<port><path>` to `addr` (by `--resolve`), trusting `ca.crt`, with
/// `extra` arguments (`--cert`, `-H`, ...).
pub fn curl(addr: SocketAddr, host: &str, path: &str, certs: &Certs, extra: &[&str]) -> Curl {
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let url = format!("https://{host}:{}{path}", addr.port());
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--cacert", &certs.path("ca.crt"), "--resolve", &resolve])
        .args(extra)
        .arg(&url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    Curl { code: out.status.code().unwrap_or(-1), status, head: head.to_string(), body: body.to_string() }
}

/// A `transport_socket` with a `DownstreamTlsContext` serving `leaf`; `context` adds lines to the
/// context and `common` to its `common_tls_context` (both written at column 0).
pub fn downstream_socket(certs: &Certs, leaf: &str, context: &str, common: &str) -> String {
    format!(
        "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{}    common_tls_context:\n      tls_certificates:\n      - certificate_chain: {{ filename: {} }}\n        private_key: {{ filename: {} }}\n{}",
        super::indent(context, 4),
        certs.path(&format!("{leaf}.crt")),
        certs.path(&format!("{leaf}.key")),
        super::indent(common, 6),
    )
}

/// A `transport_socket` with an `UpstreamTlsContext`; `context` and `common` as above.
pub fn upstream_socket(context: &str, common: &str) -> String {
    format!(
        "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{}    common_tls_context:\n{}",
        super::indent(context, 4),
        super::indent(common, 6),
    )
}

/// `validation_context` trusting the test CA, with exact DNS SAN matchers.
pub fn trusting(certs: &Certs, sans: &[&str]) -> String {
    let sans: Vec<String> =
        sans.iter().map(|s| format!("{{ san_type: DNS, matcher: {{ exact: {s} }} }}")).collect();
    format!(
        "validation_context:\n  trusted_ca: {{ filename: {} }}\n  match_typed_subject_alt_names: [{}]\n",
        certs.path("ca.crt"),
        sans.join(", ")
    )
}

/// `tls_certificates` presenting `leaf` (a client certificate upstream).
pub fn presenting(certs: &Certs, leaf: &str) -> String {
    format!(
        "tls_certificates:\n- certificate_chain: {{ filename: {} }}\n  private_key: {{ filename: {} }}\n",
        certs.path(&format!("{leaf}.crt")),
        certs.path(&format!("{leaf}.key"))
    )
}

/// A listener block (as `support::listener_yaml` writes it) whose filter chain gets `socket`.
pub fn with_socket(listener: &str, socket: &str) -> String {
    listener.replacen(
        "    - filters:\n",
        &format!("    - {}      filters:\n", super::indent(socket, 6).trim_start()),
        1,
    )
}

/// The certificates every test of a process shares, made once.
pub fn shared() -> &'static Certs {
    static CERTS: std::sync::OnceLock<Certs> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| Certs::generate(&super::scratch_dir("tls-certs")))
}

/// `openssl s_client` to `addr` with `args`: whether the handshake succeeded, and what it printed.
pub fn s_client(addr: SocketAddr, certs: &Certs, args: &[&str]) -> (bool, String) {
    let connect = addr.to_string();
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-CAfile", &certs.path("ca.crt"), "-verify_return_error"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
