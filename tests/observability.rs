//! What an operator sees of a running skiff: the admin API (`/ready`, `/server_info`, `/clusters`,
//! `/stats` in text, JSON and Prometheus form, the mutating endpoints), access logs (file and stdout,
//! custom and default formats, response flags, request ids) and Zipkin tracing through two chained
//! proxies. Every proxy runs two shards, so counters must be merged across them.

mod support;

use serde_json::Value as Json;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

const ADMIN: &str = "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n";

fn endpoints_yaml(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "        endpoints: []\n".into();
    }
    let eps: String = addrs
        .iter()
        .map(|a| {
            format!(
                "              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!("        endpoints:\n          - lb_endpoints:\n{eps}")
}

/// A v3 bootstrap with an admin on port 0 and one listener `main` (stat prefix `ingress`).
/// `routes` are `(prefix, cluster, timeout)`; `clusters` are `(name, endpoints)`; `hcm_extra` is
/// YAML for the HttpConnectionManager written at column 0.
fn config(hcm_extra: &str, routes: &[(&str, &str, &str)], clusters: &[(&str, Vec<SocketAddr>)]) -> String {
    let routes: String = routes
        .iter()
        .map(|(prefix, cluster, timeout)| {
            format!(
                "                        - match: {{ prefix: \"{prefix}\" }}\n                          route: {{ cluster: {cluster}, timeout: {timeout} }}\n"
            )
        })
        .collect();
    let clusters: String = clusters
        .iter()
        .map(|(name, addrs)| {
            format!(
                "    - name: {name}\n      connect_timeout: 0.5s\n      type: STATIC\n      load_assignment:\n        cluster_name: {name}\n{}",
                endpoints_yaml(addrs)
            )
        })
        .collect();
    format!(
        r#"{ADMIN}static_resources:
  listeners:
    - name: main
      address:
        socket_address: {{ address: 127.0.0.1, port_value: 0 }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
{hcm}                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
{routes}                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        hcm = indent(hcm_extra, 16)
    )
}

fn start(yaml: &str, extra: &[&str]) -> Skiff {
    let mut args = vec!["--concurrency", "2"];
    args.extend_from_slice(extra);
    Skiff::start(yaml, &args)
}

/// `name: value` from `/stats` text.
fn stat(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")).map(str::to_string))
}

fn stats_text(admin: SocketAddr) -> String {
    let (status, body) = admin_request(admin, "GET", "/stats");
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `/stats` until `name` shows `want` (counters land when the request's bookkeeping ends,
/// which may be just after the client read its response).
fn wait_stat(admin: SocketAddr, name: &str, want: &str) {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        last = stats_text(admin);
        stat(&last, name).as_deref() == Some(want)
    });
    assert!(ok, "{name} never became {want}; last /stats:\n{last}");
}

// ---------------------------------------------------------------------------------------------
// Admin

/// Without `--service-node` / `--service-cluster`, the bootstrap's `node` names this proxy, as
/// Envoy's local info does: in `/server_info`'s `node` (the command line options stay empty) and
/// in the startup log.
#[test]
fn the_bootstrap_node_names_the_proxy_when_the_command_line_does_not() {
    let a = TestUpstream::named("a");
    let yaml = format!(
        "node: {{ id: boot-node, cluster: boot-cluster }}\n{}",
        config("", &[("/", "backend", "2s")], &[("backend", vec![a.addr])])
    );
    let skiff = start(&yaml, &[]);
    let (_, body) = admin_request(skiff.admin(), "GET", "/server_info");
    let info: Json = serde_json::from_str(&body).expect("server_info is JSON");
    assert_eq!(
        (&info["node"]["id"], &info["node"]["cluster"]),
        (&Json::from("boot-node"), &Json::from("boot-cluster"))
    );
    assert_eq!(info["command_line_options"]["service_cluster"], "");
    assert!(skiff.log().contains(r#"service cluster "boot-cluster", node "boot-node""#), "{}", skiff.log());
}

#[test]
fn admin_endpoints_report_the_server_and_refuse_get_on_mutations() {
    let a = TestUpstream::named("a");
    let b = TestUpstream::named("b");
    let c = TestUpstream::named("c");
    let yaml = config(
        "",
        &[("/other", "other", "2s"), ("/", "backend", "2s")],
        &[("backend", vec![a.addr, b.addr]), ("other", vec![c.addr])],
    );
    let mut skiff = start(&yaml, &["--service-cluster", "obs-cluster", "--service-node", "obs-node"]);
    let admin = skiff.admin();
    assert_ne!(admin.port(), 0);

    let (status, body) = admin_request(admin, "GET", "/ready");
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));

    let (status, body) = admin_request(admin, "GET", "/server_info");
    assert_eq!(status, 200);
    let info: Json = serde_json::from_str(&body).expect("server_info is JSON");
    assert_eq!(info["version"].as_str().map(|v| !v.is_empty()), Some(true), "{info}");
    assert_eq!(info["state"], "LIVE");
    assert!(info["uptime_current_epoch"].as_str().is_some_and(|u| u.ends_with('s')), "{info}");
    assert_eq!(info["command_line_options"]["service_cluster"], "obs-cluster");
    assert_eq!(info["command_line_options"]["service_node"], "obs-node");
    assert_eq!(info["command_line_options"]["concurrency"], 2);
    assert_eq!(
        (&info["node"]["id"], &info["node"]["cluster"]),
        (&Json::from("obs-node"), &Json::from("obs-cluster"))
    );

    let (status, body) = admin_request(admin, "GET", "/clusters");
    assert_eq!(status, 200);
    for (cluster, addr) in [("backend", a.addr), ("backend", b.addr), ("other", c.addr)] {
        let line = format!("{cluster}::{addr}::health_flags::healthy");
        assert!(body.lines().any(|l| l == line), "no {line} in /clusters:\n{body}");
    }
    let (status, body) = admin_request(admin, "GET", "/clusters?format=json");
    assert_eq!(status, 200);
    let json: Json = serde_json::from_str(&body).expect("clusters JSON");
    let statuses = json["cluster_statuses"].as_array().expect("cluster_statuses");
    let hosts = |name: &str| -> Vec<String> {
        let c = statuses.iter().find(|c| c["name"] == name).expect("cluster listed");
        c["host_statuses"]
            .as_array()
            .expect("host_statuses")
            .iter()
            .map(|h| {
                let sa = &h["address"]["socket_address"];
                format!("{}:{}", sa["address"].as_str().unwrap(), sa["port_value"])
            })
            .collect()
    };
    let mut backend = hosts("backend");
    backend.sort();
    let mut want = vec![a.addr.to_string(), b.addr.to_string()];
    want.sort();
    assert_eq!(backend, want);
    assert_eq!(hosts("other"), vec![c.addr.to_string()]);

    // Mutating endpoints: GET is refused, POST works.
    for path in ["/healthcheck/fail", "/healthcheck/ok", "/quitquitquit"] {
        let (status, _) = admin_request(admin, "GET", path);
        assert_eq!(status, 405, "GET {path}");
    }
    // A failed health check is what a load balancer polling /ready must see (Envoy reports the
    // server as DRAINING while it lasts), and it is undone by /healthcheck/ok.
    assert_eq!(admin_request(admin, "POST", "/healthcheck/fail").0, 200);
    let (_, body) = admin_request(admin, "GET", "/server_info");
    let info: Json = serde_json::from_str(&body).unwrap();
    assert_eq!((&info["health_check_failed"], &info["state"]), (&Json::from(true), &Json::from("DRAINING")));
    assert_eq!(admin_request(admin, "GET", "/ready"), (503, "DRAINING\n".to_string()));
    assert_eq!(stat(&stats_text(admin), "server.live").as_deref(), Some("0"));
    assert_eq!(admin_request(admin, "POST", "/healthcheck/ok").0, 200);
    assert_eq!(admin_request(admin, "GET", "/ready"), (200, "LIVE\n".to_string()));
    assert_eq!(stat(&stats_text(admin), "server.live").as_deref(), Some("1"));

    let (status, body) = admin_request(admin, "GET", "/no/such/thing");
    assert_eq!(status, 404);
    for endpoint in ["/ready", "/stats/prometheus", "/clusters", "/quitquitquit"] {
        assert!(body.contains(endpoint), "404 body lists {endpoint}:\n{body}");
    }

    // The process is still serving; /quitquitquit drains it and it exits 0.
    assert_eq!(get(skiff.listener("main"), "/").status, 200);
    assert_eq!(admin_request(admin, "POST", "/quitquitquit").0, 200);
    let mut exit = None;
    assert!(eventually(Duration::from_secs(15), || {
        exit = skiff.child.try_wait().ok().flatten();
        exit.is_some()
    }));
    assert!(exit.unwrap().success(), "exit status {exit:?}; log:\n{}", skiff.log());
}

// ---------------------------------------------------------------------------------------------
// Stats

const N: usize = 200;
const CONNECTIONS: usize = 20;

/// Skiff with `backend` (two live endpoints), `dead` (nothing listening); `/api` goes to backend,
/// `/dead` to dead, anything else has no route. Sends N requests to /api over 20 connections,
/// 3 no-route requests and 2 to the dead cluster.
fn stats_fixture() -> (Skiff, SocketAddr, TestUpstream, TestUpstream) {
    let a = TestUpstream::named("a");
    let b = TestUpstream::named("b");
    let yaml = config(
        "",
        &[("/api", "backend", "2s"), ("/dead", "dead", "2s")],
        &[("backend", vec![a.addr, b.addr]), ("dead", vec![dead_port()])],
    );
    let skiff = start(&yaml, &[]);
    let admin = skiff.admin();
    let main = skiff.listener("main");
    for c in 0..CONNECTIONS {
        let mut client = Client::connect(main);
        for r in 0..N / CONNECTIONS {
            let resp = client.get(&format!("/api/{c}/{r}"));
            assert_eq!(resp.status, 200);
        }
    }
    for _ in 0..3 {
        assert_eq!(get(main, "/nowhere").status, 404);
    }
    for _ in 0..2 {
        assert_eq!(get(main, "/dead").status, 503);
    }
    (skiff, admin, a, b)
}

#[test]
fn stats_count_every_request_exactly_across_shards() {
    let (skiff, admin, a, b) = stats_fixture();
    assert_eq!(a.count() + b.count(), N);
    wait_stat(admin, "http.ingress.downstream_rq_total", &(N + 5).to_string());
    let text = stats_text(admin);
    let want = [
        ("http.ingress.downstream_rq_2xx", N.to_string()),
        ("http.ingress.downstream_rq_4xx", "3".into()),
        ("http.ingress.downstream_rq_5xx", "2".into()),
        ("http.ingress.no_route", "3".into()),
        ("http.ingress.downstream_cx_total", (CONNECTIONS + 5).to_string()),
        ("cluster.backend.upstream_rq_total", N.to_string()),
        ("cluster.backend.upstream_rq_2xx", N.to_string()),
        ("cluster.backend.membership_total", "2".into()),
        ("cluster.backend.membership_healthy", "2".into()),
        ("cluster.dead.membership_total", "1".into()),
        ("cluster.dead.upstream_cx_connect_fail", "2".into()),
        ("server.live", "1".into()),
        ("server.concurrency", "2".into()),
    ];
    for (name, value) in &want {
        assert_eq!(stat(&text, name).as_deref(), Some(value.as_str()), "{name} in:\n{text}");
    }
    // The 20 fresh connections are spread over both shards by the kernel; nothing a user sees
    // names the shard, so exactness of the merged totals above is the check. Histograms print
    // Envoy's percentiles.
    for h in ["http.ingress.downstream_rq_time", "cluster.backend.upstream_rq_time"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{h}: ")))
            .unwrap_or_else(|| panic!("no {h}:\n{text}"));
        for q in ["P0(", "P50(", "P99(", "P100("] {
            assert!(line.contains(q), "{line}");
        }
    }

    // JSON has the same values.
    let (status, body) = admin_request(admin, "GET", "/stats?format=json");
    assert_eq!(status, 200);
    let json: Json = serde_json::from_str(&body).expect("stats JSON");
    let stats = json["stats"].as_array().expect("stats array");
    let value = |name: &str| stats.iter().find(|s| s["name"] == name).map(|s| s["value"].clone());
    for (name, v) in &want {
        if name.starts_with("server.") {
            continue;
        }
        assert_eq!(value(name), Some(Json::from(v.parse::<i64>().unwrap())), "{name}");
    }
    let hist = stats
        .iter()
        .find_map(|s| s.get("histograms"))
        .and_then(|h| h["computed_quantiles"].as_array())
        .expect("computed_quantiles");
    let upstream = hist.iter().find(|h| h["name"] == "cluster.backend.upstream_rq_time").expect("histogram");
    assert!(upstream["values"].as_array().is_some_and(|v| v.iter().all(|q| q["cumulative"].is_number())));

    // filter + usedonly narrow the output to used stats matching the regex.
    let (status, body) = admin_request(admin, "GET", "/stats?filter=rq_2xx&usedonly");
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l.contains("rq_2xx")), "{body}");
    assert!(lines.contains(&format!("cluster.backend.upstream_rq_2xx: {N}").as_str()), "{body}");
    assert!(!body.contains("cluster.dead.upstream_rq_2xx"), "usedonly hides zero counters:\n{body}");
    drop(skiff);
}

#[test]
fn prometheus_output_parses_and_matches() {
    let (skiff, admin, _a, _b) = stats_fixture();
    wait_stat(admin, "http.ingress.downstream_rq_total", &(N + 5).to_string());
    let (status, body) = admin_request(admin, "GET", "/stats/prometheus");
    assert_eq!(status, 200);

    // Exposition-format rules a scraper enforces: one TYPE per family, samples of a family together.
    let mut typed = std::collections::HashSet::new();
    let mut finished = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split_whitespace().next().unwrap().to_string();
            assert!(typed.insert(family.clone()), "second # TYPE for {family}");
            if let Some(prev) = current.replace(family) {
                finished.insert(prev);
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let family = current.as_deref().expect("a sample before any # TYPE");
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| *b == family))
            .unwrap_or(name);
        assert_eq!(base, family, "sample {line} is outside its family's block");
        assert!(!finished.contains(base), "family {base} is split");
    }

    // Envoy (and so skiff) writes a metric without labels as `name{} value`, which Prometheus
    // reads; the prometheus-parse crate does not, so the empty set is dropped for it.
    let scrape =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.replacen("{}", "", 1)))).expect("parses");
    let find = |name: &str, labels: &[(&str, &str)]| -> Vec<&prometheus_parse::Sample> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    };
    let counter = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found = find(name, labels);
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        match found[0].value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let n = N as f64;
    assert_eq!(
        counter(
            "envoy_cluster_upstream_rq_xx",
            &[("envoy_response_code_class", "2"), ("envoy_cluster_name", "backend")]
        ),
        n
    );
    assert_eq!(
        counter("envoy_http_downstream_rq_total", &[("envoy_http_conn_manager_prefix", "ingress")]),
        n + 5.0
    );
    assert_eq!(
        counter(
            "envoy_http_downstream_rq_xx",
            &[("envoy_response_code_class", "4"), ("envoy_http_conn_manager_prefix", "ingress")]
        ),
        3.0
    );
    assert_eq!(counter("envoy_cluster_membership_total", &[("envoy_cluster_name", "backend")]), 2.0);
    assert_eq!(counter("envoy_server_live", &[]), 1.0);
    let hist = find("envoy_cluster_upstream_rq_time", &[("envoy_cluster_name", "backend")]);
    assert_eq!(hist.len(), 1, "{hist:?}");
    match &hist[0].value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.len() >= 10, "{buckets:?}");
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
            assert_eq!(inf.count, n);
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative buckets: {buckets:?}");
        }
        other => panic!("upstream_rq_time is {other:?}"),
    }
    drop(skiff);
}

// ---------------------------------------------------------------------------------------------
// Access logs

const FORMAT: &str = "%START_TIME% \\\"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\\\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %UPSTREAM_HOST% \\\"%REQ(X-REQUEST-ID)%\\\" %UPSTREAM_CLUSTER%\\n";

fn file_log(path: &std::path::Path, format: Option<&str>) -> String {
    let fmt = match format {
        Some(f) => {
            format!("      log_format:\n        text_format_source:\n          inline_string: \"{f}\"\n")
        }
        None => String::new(),
    };
    format!(
        "access_log:\n  - name: envoy.access_loggers.file\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n      path: {}\n{fmt}",
        path.display()
    )
}

/// Polls the file until it has `n` lines.
fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = eventually(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
        lines.len() >= n
    });
    assert!(ok, "wanted {n} lines, have {lines:#?}");
    lines
}

#[test]
fn access_log_lines_carry_the_request_and_response_flags() {
    let dir = scratch_dir("obs-log");
    let path = dir.join("access.log");
    let echo = TestUpstream::echo();
    let slow = TestUpstream::start(std::sync::Arc::new(|_: &Seen| Reply::Hang(Duration::from_secs(3))));
    let chunked = TestUpstream::start(std::sync::Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwxyz\r\n2\r\nab\r\n0\r\n\r\n"
                .to_vec(),
            true,
        )
    }));
    let yaml = config(
        &file_log(&path, Some(FORMAT)),
        &[
            ("/api", "backend", "2s"),
            ("/dead", "dead", "2s"),
            ("/slow", "slow", "0.3s"),
            ("/empty", "empty", "2s"),
            ("/chunked", "chunked", "2s"),
        ],
        &[
            ("backend", vec![echo.addr]),
            ("dead", vec![dead_port()]),
            ("slow", vec![slow.addr]),
            ("empty", vec![]),
            ("chunked", vec![chunked.addr]),
        ],
    );
    let skiff = start(&yaml, &[]);
    let main = skiff.listener("main");

    // One request with a body and our own request id, one with a generated id.
    let mut c = Client::connect(main);
    c.send(
        b"POST /api/one HTTP/1.1\r\nHost: test\r\nx-request-id: my-id-1\r\nContent-Length: 5\r\n\r\nhello",
    );
    let first = c.read_response(false).expect("response");
    assert_eq!(first.status, 200);
    let second = c.get("/api/two?x=1");
    assert_eq!(second.status, 200);
    let generated = echo.requests()[1].header("x-request-id").expect("generated x-request-id").to_string();
    assert!(!generated.is_empty());

    let lines = wait_lines(&path, 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let f: Vec<&str> = lines[0].split(' ').collect();
    // START_TIME "METHOD PATH PROTOCOL" CODE FLAGS RX TX DURATION HOST "ID" CLUSTER
    assert!(f[0].starts_with("20") && f[0].ends_with('Z'), "{}", lines[0]);
    assert_eq!(&f[1..4], ["\"POST", "/api/one", "HTTP/1.1\""], "{}", lines[0]);
    assert_eq!(f[4], "200");
    assert_eq!(f[5], "-");
    assert_eq!(f[6], "5");
    assert_eq!(f[7], first.body.len().to_string());
    assert!(f[8].parse::<u64>().is_ok(), "{}", lines[0]);
    assert_eq!(f[9], echo.addr.to_string());
    assert_eq!(f[10], "\"my-id-1\"");
    assert_eq!(f[11], "backend");
    let f: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(&f[1..4], ["\"GET", "/api/two?x=1", "HTTP/1.1\""], "{}", lines[1]);
    assert_eq!(f[6], "0");
    assert_eq!(f[10], format!("\"{generated}\""), "the logged id is the one the upstream got");

    // Response flags, one request each.
    let cases: [(&str, u16, &str); 4] =
        [("/dead", 503, "UF"), ("/slow", 504, "UT"), ("/nowhere", 404, "NR"), ("/empty", 503, "UH")];
    for (i, (p, status, flag)) in cases.iter().enumerate() {
        assert_eq!(get(main, p).status, *status, "{p}");
        let lines = wait_lines(&path, 3 + i);
        let f: Vec<&str> = lines[2 + i].split(' ').collect();
        assert_eq!((f[2], f[4], f[5]), (*p, status.to_string().as_str(), *flag), "{}", lines[2 + i]);
    }
    let garbage = raw_until_close(main, b"NOT A REQUEST\r\n\r\n", Duration::from_secs(5));
    assert!(garbage.text.starts_with("HTTP/1.1 400"), "{}", garbage.text);
    let lines = wait_lines(&path, 7);
    let f: Vec<&str> = lines[6].split(' ').collect();
    assert_eq!((f[4], f[5]), ("400", "DPE"), "{}", lines[6]);

    // Byte counts are body bytes, as Envoy counts them: a local reply's body is sent bytes, and
    // chunked framing is not counted either way.
    let dead = wait_lines(&path, 3)[2].clone();
    let dead_body = get(main, "/dead").body.len();
    assert!(dead_body > 0);
    assert_eq!(dead.split(' ').nth(7), Some(dead_body.to_string().as_str()), "{dead}");
    let mut c = Client::connect(main);
    c.send(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n");
    let resp = c.read_response(false).expect("response");
    assert_eq!((resp.status, resp.text().as_str()), (200, "wxyzab"));
    // Shards flush their lines independently: find this one by its path.
    let lines = wait_lines(&path, 9);
    let line = lines.iter().find(|l| l.contains(" /chunked ")).expect("the /chunked line");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!((f[6], f[7]), ("8", "6"), "{line}");
    drop(skiff);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn default_format_and_stdout_logger() {
    let dir = scratch_dir("obs-default");
    let path = dir.join("access.log");
    let up = TestUpstream::named("hello");
    let stdout_log = "  - name: envoy.access_loggers.stdout\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\n";
    let yaml = config(
        &format!("{}{stdout_log}", file_log(&path, None)),
        &[("/", "backend", "2s")],
        &[("backend", vec![up.addr])],
    );
    let skiff = Skiff::start_capturing_stdout(&yaml, &["--concurrency", "2"]);
    let resp =
        get_host(skiff.listener("main"), "example.com", "/default?q=1", &[("user-agent", "obs-test/1")]);
    assert_eq!(resp.status, 200);
    let line = wait_lines(&path, 1).remove(0);
    // [START] "GET /default?q=1 HTTP/1.1" 200 - 0 5 DUR UPSTREAM_TIME "-" "obs-test/1" "ID" "example.com" "HOST"
    assert!(line.starts_with("[20"), "{line}");
    let after = line.split_once("] ").expect("] after the time").1;
    assert!(after.starts_with("\"GET /default?q=1 HTTP/1.1\" 200 - 0 5 "), "{line}");
    // DURATION and the x-envoy-upstream-service-time skiff adds: both numbers, not "-".
    let fields: Vec<&str> = after.split(' ').collect();
    assert!(fields[6].parse::<u64>().is_ok() && fields[7].parse::<u64>().is_ok(), "{line}");
    assert!(after.contains("\"-\" \"obs-test/1\" \""), "{line}");
    assert!(after.ends_with(&format!("\"example.com\" \"{}\"", up.addr)), "{line}");
    let mut out = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            out = skiff.stdout();
            out.lines().count() == 1
        }),
        "stdout: {out:?}"
    );
    assert_eq!(out.trim_end(), line, "stdout carries the same line");
    drop(skiff);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Tracing

fn tracing_yaml(random: u32, shared: bool) -> String {
    format!(
        "tracing:\n  random_sampling: {{ value: {random} }}\n  provider:\n    name: envoy.tracers.zipkin\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n      collector_cluster: zipkin\n      collector_endpoint: /api/v2/spans\n      collector_endpoint_version: HTTP_JSON\n      shared_span_context: {shared}\n"
    )
}

/// client → A → B → echo upstream, both proxies tracing to `collector`.
struct Chain {
    _b: Skiff,
    a: Skiff,
    upstream: TestUpstream,
}

fn chain(collector: &Collector, random: u32, shared: bool) -> Chain {
    let upstream = TestUpstream::echo();
    let clusters = |next: SocketAddr| vec![("backend", vec![next]), ("zipkin", vec![collector.addr])];
    let b = start(
        &config(&tracing_yaml(random, shared), &[("/", "backend", "5s")], &clusters(upstream.addr)),
        &["--service-cluster", "svc-b"],
    );
    let b_addr = b.listener("main");
    let a = start(
        &config(&tracing_yaml(random, shared), &[("/", "backend", "5s")], &clusters(b_addr)),
        &["--service-cluster", "svc-a"],
    );
    Chain { _b: b, a, upstream }
}

fn hex_id(v: &Json) -> String {
    v.as_str().unwrap_or_else(|| panic!("an id string, got {v}")).to_string()
}

/// Waits for spans of `trace_id` from both proxies.
fn spans_of(collector: &Collector, trace_id: &str, want: usize) -> Vec<Json> {
    let mut found = Vec::new();
    let ok = eventually(Duration::from_secs(10), || {
        found = collector.spans().into_iter().filter(|s| s["traceId"] == trace_id).collect();
        found.len() >= want
    });
    assert!(ok, "wanted {want} spans of {trace_id}, got {found:#?}\nall: {:#?}", collector.spans());
    found
}

fn check_span(s: &Json, service: &str) {
    assert_eq!(s["localEndpoint"]["serviceName"], service, "{s}");
    assert_eq!(s["kind"], "SERVER", "{s}");
    assert_eq!(s["tags"]["http.method"], "GET", "{s}");
    assert_eq!(s["tags"]["http.status_code"], "200", "{s}");
    assert!(s["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000_000), "{s}");
    assert!(s["duration"].as_u64().is_some(), "{s}");
    assert_eq!(hex_id(&s["id"]).len(), 16, "{s}");
}

#[test]
fn traces_propagate_through_two_proxies_and_reach_zipkin() {
    let collector = Collector::start();
    let c = chain(&collector, 100, false);
    let a = c.a.listener("main");

    // W3C in: the upstream sees the same trace, a new span; A's span is the child of the caller's,
    // B's the child of A's.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = get_host(a, "svc", "/w3c", &[("traceparent", &format!("00-{trace}-{caller_span}-01"))]);
    assert_eq!(resp.status, 200);
    let seen = c.upstream.requests().pop().expect("upstream got it");
    let tp = seen.header("traceparent").expect("traceparent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"), "{tp}");
    assert_ne!(parts[2], caller_span);
    // Zipkin keeps a 128-bit trace id as 32 hex digits; B3 carries it the same way.
    assert_eq!(seen.header("x-b3-traceid"), Some(trace));
    assert_eq!(seen.header("x-b3-spanid"), Some(parts[2]));
    let spans = spans_of(&collector, trace, 2);
    let sa = spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "svc-a").expect("A's span");
    let sb = spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "svc-b").expect("B's span");
    check_span(sa, "svc-a");
    check_span(sb, "svc-b");
    assert_eq!(sa["parentId"], caller_span);
    assert_eq!(sb["parentId"], sa["id"], "B's span is A's child");
    assert_eq!(hex_id(&sb["id"]), parts[2], "the upstream got B's span id");

    // B3 multi in.
    let trace = "463ac35c9f6413ad";
    let resp = get_host(
        a,
        "svc",
        "/b3",
        &[("x-b3-traceid", trace), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("x-b3-sampled", "1")],
    );
    assert_eq!(resp.status, 200);
    let seen = c.upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-b3-traceid"), Some(trace));
    let span = seen.header("x-b3-spanid").expect("x-b3-spanid").to_string();
    assert_ne!(span, "a2fb4a1d1a96d312");
    assert_eq!(seen.header("x-b3-sampled"), Some("1"));
    assert!(seen.header("traceparent").is_some_and(|t| t.contains(&span)), "{seen:?}");
    let spans = spans_of(&collector, trace, 2);
    let sa = spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "svc-a").unwrap();
    let sb = spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "svc-b").unwrap();
    assert_eq!(sa["parentId"], "a2fb4a1d1a96d312");
    assert_eq!(sb["parentId"], sa["id"]);
    assert_eq!(hex_id(&sb["id"]), span);

    // Nothing in: A starts a root trace that B joins.
    assert_eq!(get(a, "/none").status, 200);
    let seen = c.upstream.requests().pop().unwrap();
    let trace = seen.header("x-b3-traceid").expect("a new trace").to_string();
    let spans = spans_of(&collector, &trace, 2);
    let sa = spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "svc-a").unwrap();
    let sb = spans.iter().find(|s| s["localEndpoint"]["serviceName"] == "svc-b").unwrap();
    assert!(sa.get("parentId").is_none_or(Json::is_null), "A's span is a root: {sa}");
    assert_eq!(sb["parentId"], sa["id"]);
    for (_, body) in collector.posts.lock().unwrap().iter() {
        assert!(serde_json::from_slice::<Json>(body).is_ok());
    }
    let heads: Vec<String> = collector.posts.lock().unwrap().iter().map(|(h, _)| h.clone()).collect();
    assert!(heads.iter().all(|h| h.starts_with("POST /api/v2/spans HTTP/1.1")), "{heads:?}");
    drop(c);
}

#[test]
fn shared_span_context_joins_the_callers_span() {
    // Envoy's default for an ingress proxy: its SERVER span is the caller's own span (same ids,
    // `shared: true`), and that context is what goes upstream.
    let collector = Collector::start();
    let c = chain(&collector, 100, true);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let resp =
        get_host(c.a.listener("main"), "svc", "/", &[("traceparent", &format!("00-{trace}-{caller}-01"))]);
    assert_eq!(resp.status, 200);
    let seen = c.upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-b3-traceid"), Some(trace));
    assert_eq!(seen.header("x-b3-spanid"), Some(caller));
    let spans = spans_of(&collector, trace, 2);
    for s in &spans {
        assert_eq!(s["id"], caller, "{s}");
        assert_eq!(s["shared"], true, "{s}");
    }
}

#[test]
fn zero_sampling_sends_no_spans_but_still_propagates() {
    let collector = Collector::start();
    let c = chain(&collector, 0, false);
    assert_eq!(get(c.a.listener("main"), "/").status, 200);
    let seen = c.upstream.requests().pop().unwrap();
    assert!(seen.header("x-b3-traceid").is_some(), "{seen:?}");
    assert_eq!(seen.header("x-b3-sampled"), Some("0"));
    assert!(seen.header("traceparent").is_some_and(|t| t.ends_with("-00")), "{seen:?}");
    // The reporter flushes every second: wait past two flushes.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(collector.posts.lock().unwrap().is_empty(), "{:?}", collector.spans());
}

#[test]
fn spans_still_queued_at_shutdown_reach_the_collector() {
    // The reporter flushes every second; a graceful exit must not lose the last second's spans.
    let collector = Collector::start();
    let upstream = TestUpstream::named("x");
    let yaml = config(
        &tracing_yaml(100, false),
        &[("/", "backend", "2s")],
        &[("backend", vec![upstream.addr]), ("zipkin", vec![collector.addr])],
    );
    for _ in 0..2 {
        let mut skiff = start(&yaml, &["--service-cluster", "last"]);
        let admin = skiff.admin();
        // Wait for the reporter's first (empty) tick, then exit well inside the next interval.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(get(skiff.listener("main"), "/last").status, 200);
        assert_eq!(admin_request(admin, "POST", "/quitquitquit").0, 200);
        assert!(eventually(Duration::from_secs(15), || skiff.child.try_wait().ok().flatten().is_some()));
    }
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s["localEndpoint"]["serviceName"] == "last"));
}

#[test]
fn v2_format_field_is_used() {
    // A v2-style access log (`config:` with `format`) inside the same HCM.
    let dir = scratch_dir("obs-v2");
    let path = dir.join("v2.log");
    let up = TestUpstream::named("v2");
    let log = format!(
        "access_log:\n  - name: envoy.file_access_log\n    config:\n      path: {}\n      format: \"%REQ(:METHOD)% %RESPONSE_CODE% %UPSTREAM_CLUSTER% %PROTOCOL%\\n\"\n",
        path.display()
    );
    let skiff = start(&config(&log, &[("/", "backend", "2s")], &[("backend", vec![up.addr])]), &[]);
    assert_eq!(get(skiff.listener("main"), "/v2").status, 200);
    assert_eq!(wait_lines(&path, 1), ["GET 200 backend HTTP/1.1"]);
    drop(skiff);
    let _ = std::fs::remove_dir_all(dir);
}
