//! The OpenTelemetry tracer (`envoy.tracers.opentelemetry`, OTLP over gRPC): the real Envoy and
//! skiff run the same config and traffic against a real OTLP collector (tests/support/
//! otlp_collector.rs), and the spans the collector receives (names, kinds, parent links,
//! attributes, status, resource `service.name`) and the `traceparent` the upstream sees must match.
//! Envoy's three opentelemetry example configs load.

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/otlp_collector.rs"]
mod otlp_collector;
mod support;

use envoy::Envoy;
use otlp_collector::{Collector, SeenSpan};
use std::net::SocketAddr;
use std::time::Duration;
use support::{free_port, get_host, Skiff, TestUpstream};

const INCOMING_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const INCOMING_SPAN: &str = "b7ad6b7169203331";

/// An ingress (SERVER) and an egress (CLIENT, `traffic_direction: OUTBOUND`) listener tracing to
/// `collector`, routing to `upstream` (`/dead` to a port nothing listens on).
fn config(ports: (u16, u16, u16), upstream: SocketAddr, collector: SocketAddr, dead: SocketAddr) -> String {
    let (ingress, egress, admin) = ports;
    let listener = |name: &str, port: u16, direction: &str| {
        format!(
            r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    {direction}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {{ cluster_name: otel }}
                  timeout: 0.250s
                service_name: {name}-svc
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: /dead }}
                route: {{ cluster: dead }}
              - match: {{ prefix: / }}
                route: {{ cluster: app }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    };
    let cluster = |name: &str, addr: SocketAddr, h2: bool| {
        let h2 = if h2 {
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n"
        } else {
            ""
        };
        format!(
            "  - name: {name}\n    connect_timeout: 0.5s\n{h2}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
            addr.ip(),
            addr.port()
        )
    };
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}{}  clusters:\n{}{}{}",
        listener("ingress", ingress, ""),
        listener("egress", egress, "traffic_direction: OUTBOUND"),
        cluster("app", upstream, false),
        cluster("dead", dead, false),
        cluster("otel", collector, true),
    )
}

/// The same five requests to either proxy: three in, two out; one carries W3C and B3 context, one
/// W3C only, one fails upstream.
fn traffic(ingress: SocketAddr, egress: SocketAddr) {
    let tp = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01");
    get_host(ingress, "in.example", "/plain", &[]);
    get_host(
        ingress,
        "in.example",
        "/w3c-and-b3",
        &[
            ("traceparent", &tp),
            ("tracestate", "k=v"),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    );
    get_host(ingress, "in.example", "/dead", &[]);
    get_host(egress, "out.example", "/w3c", &[("traceparent", &tp)]);
    get_host(egress, "out.example", "/plain-out", &[]);
}

/// Attribute values that differ between runs or proxies.
/// `response_size`: the echo's body shows each proxy's own headers.
const VARYING: &[&str] = &["guid:x-request-id", "node_id", "peer.address", "http.url", "response_size"];

/// A span as comparable text: ids replaced by what they are.
fn render(s: &SeenSpan) -> String {
    let parent = match s.parent_span_id.as_str() {
        "" => "root".to_string(),
        INCOMING_SPAN => "child of the caller".to_string(),
        other => format!("parent {other}"),
    };
    let trace = if s.trace_id == INCOMING_TRACE { "caller's trace" } else { "new trace" };
    let mut attrs: Vec<String> = s
        .attributes
        .iter()
        .map(|(k, v)| if VARYING.contains(&k.as_str()) { format!("{k}=*") } else { format!("{k}={v}") })
        .collect();
    attrs.sort();
    // The SDK attributes name the proxy (a deliberate difference): their keys are compared.
    let mut resource: Vec<&str> = s.resource.iter().map(|(k, _)| k.as_str()).collect();
    resource.sort();
    format!(
        "{} kind={} {parent} {trace} status={:?} service={} scope={} resource={resource:?}\n  {}",
        s.name,
        s.kind,
        s.status,
        s.service_name,
        s.scope,
        attrs.join("\n  ")
    )
}

fn rendered(spans: &[SeenSpan]) -> Vec<String> {
    let mut out: Vec<String> = spans.iter().map(render).collect();
    out.sort();
    out
}

/// The `traceparent` the upstream got, per path: (trace id, span id, flags) checked against the
/// exported span of the same request.
fn upstream_context(upstream: &TestUpstream, spans: &[SeenSpan]) -> Vec<String> {
    let mut out: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| {
            let tp = r.header("traceparent").unwrap_or("none");
            let parts: Vec<&str> = tp.split('-').collect();
            let span = spans.iter().find(|s| s.attribute("http.url").is_some_and(|u| u.ends_with(&r.path)));
            let matches = span.is_some_and(|s| parts.get(1) == Some(&s.trace_id.as_str()) && parts.get(2) == Some(&s.span_id.as_str()));
            format!(
                "{} traceparent version={} flags={} is-the-span={matches} tracestate={:?} x-b3-traceid={:?} x-b3-spanid={:?}",
                r.path,
                parts.first().unwrap_or(&""),
                parts.get(3).unwrap_or(&""),
                r.header("tracestate"),
                r.header("x-b3-traceid"),
                r.header("x-b3-spanid"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn envoy_and_skiff_export_the_same_spans() {
    let dead = support::dead_port();
    let skiff_collector = Collector::start();
    let skiff_upstream = TestUpstream::echo();
    let yaml = config((0, 0, 0), skiff_upstream.addr, skiff_collector.addr, dead);
    let skiff = Skiff::start(&yaml, &[]);
    traffic(skiff.listener("ingress"), skiff.listener("egress"));

    // Envoy's traffic goes out while skiff's batch is on its way.
    let envoy_side = envoy::binary_or_skip("opentelemetry").map(|bin| {
        let collector = Collector::start();
        let upstream = TestUpstream::echo();
        let dir = support::scratch_dir("otel-envoy");
        let egress_port = std::sync::Mutex::new(0u16);
        let proxy = Envoy::start(&bin, &dir, |port, admin| {
            let egress = free_port();
            *egress_port.lock().unwrap() = egress;
            config((port, egress, admin), upstream.addr, collector.addr, dead)
        });
        let egress = SocketAddr::from(([127, 0, 0, 1], *egress_port.lock().unwrap()));
        traffic(proxy.listener, egress);
        (collector, upstream, proxy)
    });

    // Five spans make a batch, as in Envoy (min_flush_spans).
    let skiff_spans = skiff_collector.wait_for(5, Duration::from_secs(10));
    assert_eq!(skiff_spans.len(), 5, "{skiff_spans:#?}\n{}", skiff.log());
    let skiff_seen = (rendered(&skiff_spans), upstream_context(&skiff_upstream, &skiff_spans));
    // Without Envoy, what Envoy 1.40 was seen to send.
    assert!(
        skiff_seen.0.iter().any(|s| s.starts_with(
            "ingress kind=2 child of the caller caller's trace status=None service=ingress-svc scope=envoy"
        )),
        "{skiff_seen:#?}"
    );
    assert!(skiff_seen.0.iter().any(|s| s.starts_with("egress out.example kind=3 root new trace status=None service=egress-svc")), "{skiff_seen:#?}");
    assert!(
        skiff_seen.0.iter().any(|s| s.starts_with("ingress kind=2 root new trace status=Some(2)")
            && s.contains("response_flags=UF")),
        "{skiff_seen:#?}"
    );
    assert!(skiff_seen.1.iter().all(|s| s.contains("is-the-span=true")), "{skiff_seen:#?}");

    let Some((envoy_collector, envoy_upstream, _envoy)) = envoy_side else { return };
    let envoy_spans = envoy_collector.wait_for(5, Duration::from_secs(10));
    let envoy_seen = (rendered(&envoy_spans), upstream_context(&envoy_upstream, &envoy_spans));
    assert_eq!(skiff_seen.0, envoy_seen.0, "spans: skiff (left) and Envoy (right)");
    assert_eq!(skiff_seen.1, envoy_seen.1, "upstream trace context: skiff (left) and Envoy (right)");
}

/// Envoy's opentelemetry example configs load unchanged, in skiff and in Envoy.
#[test]
fn envoys_opentelemetry_examples_load() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let files = ["envoy-1.yaml", "envoy-2.yaml", "envoy-front-proxy.yaml"]
        .map(|f| format!("{dir}/configs/envoy-examples/envoyproxy-examples/opentelemetry/{f}"));
    let files: Vec<String> = files.into_iter().chain([format!("{dir}/configs/opentelemetry.yaml")]).collect();
    for file in &files {
        let yaml = std::fs::read_to_string(file).expect("config");
        let (ok, out) = support::filters::validate(&yaml);
        assert!(ok, "{file}: {out}");
        assert!(!out.contains("warning"), "{file}: {out}");
    }
    let Some(bin) = envoy::binary_or_skip("opentelemetry_configs") else { return };
    for file in &files {
        let base_id = (std::process::id() % 100_000) * 100 + 97;
        let out = std::process::Command::new(&bin)
            .args(["--mode", "validate", "-c", file, "-l", "error"])
            .args(["--base-id", &base_id.to_string()])
            .output()
            .expect("envoy runs");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// What is not built is refused where it is written.
#[test]
fn unsupported_opentelemetry_fields_are_refused() {
    let yaml = config((0, 0, 0), support::dead_port(), support::dead_port(), support::dead_port());
    for (from, to, expect) in [
        (
            "service_name: ingress-svc",
            "service_name: x\n                http_service: { http_uri: { uri: \"http://c/v1/traces\", cluster: otel, timeout: 1s } }",
            "http_service: OTLP over HTTP is not supported: use grpc_service",
        ),
        (
            "service_name: ingress-svc",
            "service_name: x\n                sampler: { name: s, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig } }",
            "sampler: samplers are not supported",
        ),
        ("envoy_grpc: { cluster_name: otel }", "envoy_grpc: { cluster_name: app }", "cluster \"app\" must speak HTTP/2"),
    ] {
        let (ok, out) = support::filters::validate(&yaml.replacen(from, to, 1));
        assert!(!ok && out.contains(expect), "{expect}: {out}");
    }
}

fn reporter_span(n: u64) -> skiff::trace::Span {
    skiff::trace::Span {
        ctx: skiff::trace::TraceContext {
            trace_id: u128::from(n) << 64 | 1,
            span_id: n,
            parent_id: None,
            sampled: Some(true),
            debug: false,
            shared: false,
            w3c_only: true,
        },
        name: "ingress".into(),
        kind: skiff::trace::SpanKind::Server,
        start: std::time::SystemTime::now(),
        duration: Duration::from_millis(1),
        local_service: String::new(),
        local_ip: "127.0.0.1".parse().expect("ip"),
        remote_endpoint: None,
        tags: Vec::new(),
    }
}

/// The reporter on its own: a collector that is there gets every span once; one that does not
/// answer costs the batch (counted), never a blocked caller; a full queue drops and counts.
#[test]
fn the_otlp_reporter_counts_what_it_sends_fails_and_drops() {
    use skiff::config::OpenTelemetryConfig;
    use skiff::trace::{Reporter, ReporterOptions};
    use std::sync::atomic::Ordering;
    let options = ReporterOptions {
        flush_interval: Duration::from_millis(50),
        batch_size: 2,
        queue_capacity: 4,
        io_timeout: Duration::from_millis(300),
    };
    let config = OpenTelemetryConfig {
        collector_cluster: "otel".into(),
        timeout: Some(Duration::from_millis(300)),
        service_name: "svc".into(),
        sdk_attributes: false,
        max_cache_size: 4,
    };
    let collector = Collector::start();
    let addr = collector.addr;
    let up = Reporter::start_otlp(options, &config, move || vec![addr]).expect("reporter");
    for n in 1..=3 {
        up.sender().report(reporter_span(n));
    }
    let stats = up.stats().clone();
    up.shutdown();
    let spans = collector.spans();
    assert_eq!(
        spans.iter().map(|s| s.span_id.clone()).collect::<Vec<_>>(),
        ["0000000000000001", "0000000000000002", "0000000000000003"]
    );
    assert_eq!(spans[0].resource, [("service.name".to_string(), "svc".to_string())]);
    assert_eq!(stats.spans_sent.load(Ordering::Relaxed), 3);

    // Accepts connections (the kernel's backlog) and never answers: each call waits out its timeout,
    // so the queue fills behind it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = silent.local_addr().expect("address");
    let down = Reporter::start_otlp(options, &config, move || vec![dead]).expect("reporter");
    let started = std::time::Instant::now();
    for n in 1..=20 {
        down.sender().report(reporter_span(n));
    }
    assert!(started.elapsed() < Duration::from_millis(100), "report blocked");
    let stats = down.stats().clone();
    down.shutdown();
    let (failed, dropped) =
        (stats.spans_failed.load(Ordering::Relaxed), stats.spans_dropped.load(Ordering::Relaxed));
    assert!(failed >= 2 && dropped >= 1 && failed + dropped == 20, "failed {failed}, dropped {dropped}");
    assert!(stats.reports_failed.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.spans_sent.load(Ordering::Relaxed), 0);
}

/// What the config says reaches the model: defaults as Envoy's, each field read.
#[test]
fn opentelemetry_config_fields() {
    use skiff::config::{load_str, OpenTelemetryConfig, TracingProvider};
    let yaml = config((0, 0, 0), support::dead_port(), support::dead_port(), support::dead_port());
    let provider = |text: &str| {
        let l = load_str(text, "x.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        l.bootstrap.listeners[0].hcm.tracing.clone().map(|t| t.provider)
    };
    let otel = |timeout, service_name: &str, sdk_attributes, max_cache_size| {
        Some(TracingProvider::OpenTelemetry(OpenTelemetryConfig {
            collector_cluster: "otel".into(),
            timeout,
            service_name: service_name.into(),
            sdk_attributes,
            max_cache_size,
        }))
    };
    assert_eq!(provider(&yaml), otel(Some(Duration::from_millis(250)), "ingress-svc", true, 1024));
    let changed = yaml.replacen(
        "                  timeout: 0.250s\n                service_name: ingress-svc\n",
        "                max_cache_size: 10\n                set_telemetry_sdk_resource_attributes: false\n",
        1,
    );
    assert_eq!(provider(&changed), otel(None, "unknown_service:envoy", false, 10));
}
