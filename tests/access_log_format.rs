//! What an operator sees in the access log: Envoy's default line byte for byte, every command
//! operator, and lines from several shards reaching the file whole.

use skiff::access_log::*;
use skiff::config::AccessLog;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Envoy's documented example (access_log/usage, "Default format string"):
/// `[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28"
/// "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80"`, as an
/// HTTP/1.1 request through current Envoy, which prints `%UPSTREAM_HOST%` as plain `ip:port`.
const ENVOY_EXAMPLE: &str =
    "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations HTTP/1.1\" 204 - 154 0 226 100 \
\"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" \"locations\" \"10.0.2.1:80\"\n";

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_460_751_420, 310_987_654)
}

fn base<'a>(req: &'a Captured, resp: &'a Captured) -> Record<'a> {
    Record {
        start: start(),
        duration: Duration::from_micros(226_999),
        request_duration: None,
        response_duration: None,
        response_tx_duration: None,
        method: "POST",
        path: "/api/v1/locations",
        authority: "locations",
        protocol: "HTTP/1.1",
        status: 204,
        code_details: "",
        flags: ResponseFlags::empty(),
        bytes_received: 154,
        bytes_sent: 0,
        upstream_host: Some("10.0.2.1:80".parse().expect("addr")),
        upstream_cluster: None,
        upstream_local: None,
        upstream_transport_failure: "",
        attempts: 1,
        downstream_remote: "10.0.35.28:41234".parse().expect("addr"),
        downstream_local: "10.0.0.5:10000".parse().expect("addr"),
        route_name: "",
        connection_id: 7,
        request_headers: req,
        response_headers: resp,
    }
}

fn render(f: &Format, r: &Record<'_>) -> String {
    let mut out = Vec::new();
    f.render(r, &mut out);
    String::from_utf8(out).expect("utf-8 line")
}

fn parse(text: &str) -> Format {
    Format::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// Captures `headers` against what `f` wants, as the proxy does per request.
fn captured(wanted: &Wanted, headers: &[(&str, &str)]) -> Captured {
    let mut c = Captured::new();
    c.clear();
    for (name, value) in headers {
        if let Some(i) = wanted.index(name) {
            c.put(i, value);
        }
    }
    c
}

#[test]
fn default_format_matches_envoys_example() {
    let f = Format::envoy_default();
    let req = captured(
        f.wanted_request(),
        &[
            ("Host", "locations"),
            ("User-Agent", "nsq2http"),
            ("X-Forwarded-For", "10.0.35.28"),
            ("X-Request-Id", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"),
            ("Content-Length", "154"),
        ],
    );
    let resp = captured(f.wanted_response(), &[("x-envoy-upstream-service-time", "100")]);
    assert_eq!(render(&f, &base(&req, &resp)), ENVOY_EXAMPLE);
}

#[test]
fn default_format_with_nothing_known() {
    let f = Format::envoy_default();
    let empty = Captured::new();
    let mut r = base(&empty, &empty);
    r.upstream_host = None;
    r.status = 0;
    r.flags = ResponseFlags::DC;
    r.bytes_received = 0;
    assert_eq!(
        render(&f, &r),
        "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations HTTP/1.1\" 0 DC 0 0 226 - \"-\" \"-\" \"-\" \"locations\" \"-\"\n"
    );
}

#[test]
fn original_path_fallback() {
    let f = parse("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%");
    let empty = Captured::new();
    assert_eq!(render(&f, &base(&empty, &empty)), "/api/v1/locations");
    let req = captured(f.wanted_request(), &[("x-envoy-original-path", "/original")]);
    assert_eq!(render(&f, &base(&req, &empty)), "/original");
    // And the other way round: a header as the fallback of a pseudo-header.
    let f = parse("%REQ(:AUTHORITY?X-ALT)%");
    let req = captured(f.wanted_request(), &[("X-Alt", "alt")]);
    let mut r = base(&req, &empty);
    r.authority = "";
    assert_eq!(render(&f, &r), "alt");
}

#[test]
fn truncation() {
    let f = parse("%REQ(USER-AGENT):5%|%REQ(USER-AGENT):50%|%RESP(SERVER):3%|%REQ(MISSING):2%");
    let req = captured(f.wanted_request(), &[("user-agent", "curl/8.5.0")]);
    let resp = captured(f.wanted_response(), &[("Server", "envoy")]);
    assert_eq!(render(&f, &base(&req, &resp)), "curl/|curl/8.5.0|env|-");
}

#[test]
fn first_of_repeated_headers_wins_and_empty_values_print_empty() {
    let f = parse("[%REQ(X-A)%][%REQ(X-B)%]");
    let req = captured(f.wanted_request(), &[("x-a", "one"), ("X-A", "two"), ("x-b", "")]);
    let empty = Captured::new();
    assert_eq!(render(&f, &base(&req, &empty)), "[one][]");
}

#[test]
fn start_time_formats() {
    let empty = Captured::new();
    let r = base(&empty, &empty);
    let cases = [
        ("%START_TIME%", "2016-04-15T20:17:00.310Z"),
        ("%START_TIME()%", "2016-04-15T20:17:00.310Z"),
        ("%START_TIME(%s)%", "1460751420"),
        ("%START_TIME(%s.%3f)%", "1460751420.310"),
        ("%START_TIME(%6f)%", "310987"),
        ("%START_TIME(%9f)%", "310987654"),
        ("%START_TIME(%Y/%m/%dT%H:%M:%S%z)%", "2016/04/15T20:17:00+0000"),
        ("%START_TIME(%d/%b/%Y:%H:%M:%S %z)%", "15/Apr/2016:20:17:00 +0000"),
        ("%START_TIME(%a %Z %E3S)%", "Fri UTC 00.310"),
    ];
    for (text, want) in cases {
        assert_eq!(render(&parse(text), &r), want, "{text}");
    }
}

#[test]
fn every_operator() {
    let f = parse(
        "%PROTOCOL%|%RESPONSE_CODE%|%RESPONSE_CODE_DETAILS%|%RESPONSE_FLAGS%|%BYTES_RECEIVED%|%BYTES_SENT%|\
%DURATION%|%REQUEST_DURATION%|%RESPONSE_DURATION%|%RESPONSE_TX_DURATION%|%UPSTREAM_HOST%|\
%UPSTREAM_CLUSTER%|%UPSTREAM_LOCAL_ADDRESS%|%UPSTREAM_TRANSPORT_FAILURE_REASON%|\
%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_LOCAL_ADDRESS%|\
%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%|%ROUTE_NAME%|%REQUESTED_SERVER_NAME%|\
%UPSTREAM_REQUEST_ATTEMPT_COUNT%|%CONNECTION_ID%|%TRAILER(GRPC-STATUS)%|%REQ(:METHOD)%|%REQ(:SCHEME)%|%%",
    );
    let empty = Captured::new();
    let mut r = base(&empty, &empty);
    r.code_details = "via_upstream";
    r.flags = ResponseFlags::URX | ResponseFlags::UF;
    r.bytes_sent = 12_345;
    r.request_duration = Some(Duration::from_micros(1_999));
    r.response_duration = Some(Duration::from_millis(100));
    r.response_tx_duration = Some(Duration::from_micros(500));
    r.upstream_cluster = Some("locations");
    r.upstream_local = Some("10.0.0.5:53211".parse().expect("addr"));
    r.upstream_transport_failure = "delayed connect error: 111";
    r.downstream_remote = "[2001:db8::1]:41234".parse().expect("addr");
    r.route_name = "default";
    r.attempts = 3;
    assert_eq!(
        render(&f, &r),
        "HTTP/1.1|204|via_upstream|URX,UF|154|12345|226|1|100|0|10.0.2.1:80|locations|10.0.0.5:53211|\
delayed connect error: 111|[2001:db8::1]:41234|2001:db8::1|10.0.0.5:10000|10.0.0.5|default|-|3|7|-|POST|http|%"
    );

    // The same operators with nothing known.
    let mut r = base(&empty, &empty);
    r.protocol = "";
    r.status = 0;
    r.upstream_host = None;
    r.attempts = 0;
    assert_eq!(
        render(&f, &r),
        "-|0|-|-|154|0|226|-|-|-|-|-|-|-|10.0.35.28:41234|10.0.35.28|10.0.0.5:10000|10.0.0.5|-|-|0|7|-|POST|http|%"
    );
}

#[test]
fn hostname_is_resolved() {
    let empty = Captured::new();
    let line = render(&parse("%HOSTNAME%"), &base(&empty, &empty));
    assert!(!line.is_empty() && !line.contains('%'), "{line}");
}

/// Envoy 1.40 prints flags in the order they were set (a retried connect failure is `URX,UF`).
#[test]
fn flags_render_in_the_order_they_were_set() {
    let f = parse("%RESPONSE_FLAGS%");
    let empty = Captured::new();
    let mut r = base(&empty, &empty);
    r.flags = ResponseFlags::URX | ResponseFlags::UF;
    assert_eq!(render(&f, &r), "URX,UF");
    r.flags = ResponseFlags::DT | ResponseFlags::UPE | ResponseFlags::DPE | ResponseFlags::UH;
    assert_eq!(render(&f, &r), "DT,UPE,DPE,UH");
}

#[test]
fn unknown_operator_is_an_error_naming_it() {
    let e = Format::parse("[%START_TIME%] %NOT_A_THING% %PROTOCOL%").expect_err("unknown operator");
    assert_eq!(
        e.to_string(),
        "invalid access log format: unknown command operator %NOT_A_THING% at byte 15 of \
\"[%START_TIME%] %NOT_A_THING% %PROTOCOL%\""
    );
}

#[test]
fn access_logs_share_one_capture() {
    let w = Writer::start();
    let configs = [
        AccessLog::Stdout { format: Some("%REQ(X-A)% %RESP(X-R)%\n".into()) },
        AccessLog::Stderr { format: Some("%REQ(USER-AGENT)% %REQ(x-a)%\n".into()) },
    ];
    let logs = AccessLogs::new(&configs, &w).expect("valid formats");
    assert!(!logs.is_empty());
    assert_eq!(logs.wanted_request().names().collect::<Vec<_>>(), ["x-a", "user-agent"]);
    assert_eq!(logs.wanted_response().names().collect::<Vec<_>>(), ["x-r"]);
    let req = captured(logs.wanted_request(), &[("User-Agent", "ua"), ("X-A", "a")]);
    let resp = captured(logs.wanted_response(), &[("X-R", "r")]);
    let r = base(&req, &resp);
    let lines: Vec<String> = logs.entries().map(|(f, _)| render(f, &r)).collect();
    assert_eq!(lines, ["a r\n", "ua a\n"]);

    assert!(AccessLogs::new(&[], &w).expect("no logs").is_empty());
    let bad = [AccessLog::Stdout { format: Some("%NOPE%".into()) }];
    assert!(AccessLogs::new(&bad, &w).is_err());
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("skiff-alog-it-{}-{name}", std::process::id()))
}

#[test]
fn two_shards_write_whole_lines_to_one_file() {
    let path = temp_path("two-shards.log");
    let _ = std::fs::remove_file(&path);
    let writer = Writer::start();
    let configs = [AccessLog::File {
        path: path.display().to_string(),
        format: Some("shard=%CONNECTION_ID% n=%BYTES_SENT% ua=%REQ(USER-AGENT)% end\n".into()),
    }];
    let logs = std::sync::Arc::new(AccessLogs::new(&configs, &writer).expect("valid"));
    const PER_SHARD: u64 = 5_000;
    // A long header value makes lines big enough that buffers flush many times mid-run.
    let ua = "x".repeat(300);
    let threads: Vec<_> = (0..2u64)
        .map(|shard| {
            let (writer, logs, ua) = (writer.clone(), logs.clone(), ua.clone());
            std::thread::spawn(move || {
                let mut bufs = ShardBuffers::new(&writer);
                let mut req = Captured::new();
                let resp = Captured::new();
                for n in 0..PER_SHARD {
                    req.clear();
                    if let Some(i) = logs.wanted_request().index("User-Agent") {
                        req.put(i, &ua);
                    }
                    let mut r = base(&req, &resp);
                    r.connection_id = shard;
                    r.bytes_sent = n;
                    logs.log(&r, &mut bufs);
                    if n % 1_000 == 0 {
                        bufs.flush();
                    }
                    // Keep the queue from overflowing: this test is about whole lines, the
                    // dropping test below about overflow.
                    if n % 100 == 0 {
                        writer.sync(Duration::from_secs(10));
                    }
                }
                bufs.flush();
            })
        })
        .collect();
    for t in threads {
        t.join().expect("shard thread");
    }
    assert!(writer.sync(Duration::from_secs(10)));
    let text = std::fs::read_to_string(&path).expect("log file");
    let mut next = [0u64; 2];
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 4, "mixed line: {line}");
        let shard: usize = parts[0].strip_prefix("shard=").and_then(|s| s.parse().ok()).expect(line);
        let n: u64 = parts[1].strip_prefix("n=").and_then(|s| s.parse().ok()).expect(line);
        assert_eq!(parts[2], format!("ua={ua}"));
        assert_eq!(parts[3], "end");
        // Each shard's lines arrive in its own order, none missing.
        assert_eq!(n, next[shard], "shard {shard}");
        next[shard] += 1;
    }
    assert_eq!(next, [PER_SHARD, PER_SHARD]);
    let stats = writer.stats();
    assert_eq!(stats.dropped_lines, 0);
    assert_eq!(stats.written_lines, 2 * PER_SHARD);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    // A queue of one batch and a shard that never waits: whatever the writer cannot take yet is
    // dropped and counted, and every line is accounted for either way.
    let path = temp_path("full.log");
    let _ = std::fs::remove_file(&path);
    let writer = Writer::with_queue(1);
    let sink = writer.open(&AccessLog::File { path: path.display().to_string(), format: None });
    let mut bufs = ShardBuffers::new(&writer);
    const LINES: u64 = 2_000;
    for n in 0..LINES {
        bufs.append(sink, |out| {
            out.extend_from_slice(n.to_string().as_bytes());
            out.push(b'\n');
        });
        bufs.flush();
    }
    assert!(writer.sync(Duration::from_secs(10)));
    let stats = writer.stats();
    let written = std::fs::read_to_string(&path).expect("log file").lines().count() as u64;
    assert_eq!(stats.written_lines, written);
    assert_eq!(stats.written_lines + stats.dropped_lines, LINES, "{stats:?}");
    assert_eq!(writer.dropped_lines(), stats.dropped_lines);
    let _ = std::fs::remove_file(&path);
}
