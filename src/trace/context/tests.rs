use super::*;

fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
    httparse::Header { name, value: value.as_bytes() }
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TID: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
const SID: u64 = 0x00f067aa0ba902b7;

fn one(name: &str, value: &str) -> Option<Incoming<'static>> {
    // Leak is fine in tests: keeps the borrowed Incoming simple to return.
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let value: &'static str = Box::leak(value.to_string().into_boxed_str());
    extract(&[h(name, value)])
}

fn span(i: Option<Incoming<'_>>) -> Option<IncomingSpan> {
    i.and_then(|i| i.span)
}

#[test]
fn no_trace_headers_is_none() {
    assert_eq!(extract(&[]), None);
    assert_eq!(extract(&[h("host", "a"), h("x-request-id", "1"), h("b3x", "1")]), None);
}

#[test]
fn traceparent_valid() {
    let i = extract(&[h("traceparent", TP), h("tracestate", "congo=t61rcWkgMzE")]).expect("valid");
    assert_eq!(i.span, Some(IncomingSpan { trace_id: TID, span_id: SID, parent_id: None }));
    assert_eq!(i.sampled, Some(true));
    assert_eq!(i.format, Some(Format::W3c));
    assert_eq!(i.tracestate, Some(&b"congo=t61rcWkgMzE"[..]));
    assert!(!i.debug && !i.client_trace_id);
    let i = one("TraceParent", &TP.replace("-01", "-00")).expect("unsampled");
    assert_eq!(i.sampled, Some(false));
    // Only bit 0 of the flags is the sampled flag.
    assert_eq!(one("traceparent", &TP.replace("-01", "-03")).and_then(|i| i.sampled), Some(true));
    assert_eq!(one("traceparent", &TP.replace("-01", "-02")).and_then(|i| i.sampled), Some(false));
    // Surrounding whitespace is not part of the value.
    assert!(span(one("traceparent", &format!(" {TP}\t"))).is_some());
}

#[test]
fn traceparent_future_version_reads_the_version_00_fields() {
    let v = TP.replacen("00", "cc", 1);
    assert_eq!(span(one("traceparent", &v)).map(|s| s.trace_id), Some(TID));
    assert!(span(one("traceparent", &format!("{v}-what-the-future-holds"))).is_some());
    assert!(span(one("traceparent", &format!("{v}x"))).is_none());
}

#[test]
fn traceparent_invalid_is_ignored() {
    let bad = [
        TP.replacen("00", "ff", 1),                                      // forbidden version
        format!("{TP}-extra"),                                           // version 00 is exactly 55
        TP[..54].to_string(),                                            // short
        TP.to_uppercase(),                                               // uppercase hex
        TP.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)), // zero trace id
        TP.replace("00f067aa0ba902b7", &"0".repeat(16)),                 // zero parent id
        TP.replace("4bf9", "4bg9"),                                      // not hex
        TP.replacen('-', "_", 1),                                        // bad separator
        TP.replace("-01", "-1"),                                         // short flags
        TP.replacen("00", "0", 1),                                       // short version
        String::new(),
        "00-".to_string(),
    ];
    for v in bad {
        assert_eq!(one("traceparent", &v), None, "{v:?}");
    }
    // Two traceparents: W3C says neither counts.
    assert_eq!(extract(&[h("traceparent", TP), h("traceparent", TP)]), None);
    // tracestate is dropped without a valid traceparent.
    assert_eq!(extract(&[h("traceparent", "junk"), h("tracestate", "a=b")]), None);
    // An empty tracestate is not kept.
    let i = extract(&[h("traceparent", TP), h("tracestate", "  ")]).expect("valid");
    assert_eq!(i.tracestate, None);
}

#[test]
fn b3_multi() {
    let i = extract(&[
        h("X-B3-TraceId", "463ac35c9f6413ad"),
        h("x-b3-spanid", "a2fb4a1d1a96d312"),
        h("x-b3-parentspanid", "0020000000000001"),
        h("x-b3-sampled", "1"),
    ])
    .expect("valid");
    assert_eq!(
        i.span,
        Some(IncomingSpan {
            trace_id: 0x463ac35c9f6413ad,
            span_id: 0xa2fb4a1d1a96d312,
            parent_id: Some(0x20000000000001)
        })
    );
    assert_eq!((i.sampled, i.debug, i.format), (Some(true), false, Some(Format::B3Multi)));

    // 128-bit trace id, uppercase tolerated, no parent, words for sampled.
    let i = extract(&[
        h("x-b3-traceid", "463AC35C9F6413AD48485A3953BB6124"),
        h("x-b3-spanid", "a2fb4a1d1a96d312"),
        h("x-b3-sampled", "false"),
    ])
    .expect("valid");
    assert_eq!(i.span.map(|s| (s.trace_id, s.parent_id)), Some((0x463ac35c9f6413ad48485a3953bb6124, None)));
    assert_eq!(i.sampled, Some(false));
    for (v, want) in [("0", Some(false)), ("TRUE", Some(true)), ("d", Some(true)), ("yes", None), ("", None)]
    {
        let i = extract(&[
            h("x-b3-traceid", "463ac35c9f6413ad"),
            h("x-b3-spanid", "a2fb4a1d1a96d312"),
            h("x-b3-sampled", v),
        ]);
        assert_eq!(i.and_then(|i| i.sampled), want, "{v:?}");
    }
    // Flags 1 = debug, which implies sampled even against x-b3-sampled: 0.
    let i = extract(&[
        h("x-b3-traceid", "463ac35c9f6413ad"),
        h("x-b3-spanid", "a2fb4a1d1a96d312"),
        h("x-b3-sampled", "0"),
        h("x-b3-flags", "1"),
    ])
    .expect("valid");
    assert_eq!((i.sampled, i.debug), (Some(true), true));
}

#[test]
fn b3_multi_invalid_ids_are_ignored_but_a_sampling_decision_stays() {
    let bad_sets: [&[(&str, &str)]; 7] = [
        &[("x-b3-traceid", "463ac35c9f6413ad")], // no span id
        &[("x-b3-spanid", "a2fb4a1d1a96d312")],  // no trace id
        &[("x-b3-traceid", "463ac35c9f6413a"), ("x-b3-spanid", "a2fb4a1d1a96d312")], // 15 digits
        &[("x-b3-traceid", "463ac35c9f6413ad0"), ("x-b3-spanid", "a2fb4a1d1a96d312")],
        &[("x-b3-traceid", "0000000000000000"), ("x-b3-spanid", "a2fb4a1d1a96d312")],
        &[("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-spanid", "a2fb4a1d1a96d31z")],
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "12"),
        ],
    ];
    for set in bad_sets {
        let headers: Vec<_> = set.iter().map(|(n, v)| h(n, v)).collect();
        assert_eq!(extract(&headers), None, "{set:?}");
        let mut with_sampled = headers.clone();
        with_sampled.push(h("x-b3-sampled", "0"));
        let i = extract(&with_sampled).expect("sampling-only");
        assert_eq!((i.span, i.sampled), (None, Some(false)), "{set:?}");
    }
}

#[test]
fn b3_single() {
    let i = one("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90").expect("valid");
    assert_eq!(
        i.span,
        Some(IncomingSpan {
            trace_id: 0x80f198ee56343ba864fe8b2a57d3eff7,
            span_id: 0xe457b5a2e4d86bd1,
            parent_id: Some(0x05e3ac9a4f6e3b90)
        })
    );
    assert_eq!((i.sampled, i.debug, i.format), (Some(true), false, Some(Format::B3Single)));
    let i = one("B3", "e457b5a2e4d86bd1-e457b5a2e4d86bd1").expect("ids only");
    assert_eq!((i.sampled, i.span.map(|s| s.trace_id)), (None, Some(0xe457b5a2e4d86bd1)));
    let i = one("b3", "e457b5a2e4d86bd1-e457b5a2e4d86bd1-d").expect("debug");
    assert_eq!((i.sampled, i.debug), (Some(true), true));
    let i = one("b3", "0").expect("deny");
    assert_eq!((i.span, i.sampled, i.format), (None, Some(false), Some(Format::B3Single)));
    assert_eq!(one("b3", "1").and_then(|i| i.sampled), Some(true));
    assert_eq!(one("b3", " d ").map(|i| i.debug), Some(true));
}

#[test]
fn b3_single_invalid_is_ignored() {
    for v in [
        "",
        "-",
        "2",
        "true",
        "e457b5a2e4d86bd1",
        "e457b5a2e4d86bd1-",
        "e457b5a2e4d86bd1-e457b5a2e4d86bd1-true",
        "e457b5a2e4d86bd1-e457b5a2e4d86bd1-1-",
        "e457b5a2e4d86bd1-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "e457b5a2e4d86bd1-e457b5a2e4d86bd-1",
        "e457b5a2e4d86bd1-0000000000000000-1",
        "e457b5a2e4d86bd1--1",
        "---",
    ] {
        assert_eq!(one("b3", v), None, "{v:?}");
    }
    // An invalid single header falls back to valid multi headers.
    let i = extract(&[
        h("b3", "bogus"),
        h("x-b3-traceid", "463ac35c9f6413ad"),
        h("x-b3-spanid", "a2fb4a1d1a96d312"),
    ])
    .expect("multi");
    assert_eq!(i.format, Some(Format::B3Multi));
}

#[test]
fn b3_beats_w3c_and_tracestate_follows_the_same_trace_only() {
    let b3 = h("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-0");
    let i = extract(&[h("traceparent", TP), h("tracestate", "a=b"), b3]).expect("valid");
    assert_eq!((i.format, i.sampled, i.tracestate), (Some(Format::B3Single), Some(false), None));
    // Same trace in both: tracestate is kept.
    let same = "4bf92f3577b34da6a3ce929d0e0e4736-a2fb4a1d1a96d312-1";
    let i = extract(&[h("tracestate", "a=b"), h("b3", same), h("traceparent", TP)]).expect("valid");
    assert_eq!((i.format, i.tracestate), (Some(Format::B3Single), Some(&b"a=b"[..])));
    // Single b3 beats multi.
    let i = extract(&[
        h("x-b3-traceid", "1111111111111111"),
        h("x-b3-spanid", "2222222222222222"),
        h("b3", same),
    ])
    .expect("valid");
    assert_eq!(i.format, Some(Format::B3Single));
    // A sampling-only b3 does not beat a full traceparent.
    let i = extract(&[h("b3", "0"), h("traceparent", TP)]).expect("valid");
    assert_eq!((i.format, i.sampled), (Some(Format::W3c), Some(true)));
    // Invalid b3 falls back to W3C.
    let i = extract(&[h("b3", "zz-zz"), h("traceparent", TP)]).expect("valid");
    assert_eq!(i.format, Some(Format::W3c));
}

#[test]
fn client_trace_id_alone_is_an_incoming_without_a_span() {
    let i = one("x-client-trace-id", "abc").expect("client");
    assert_eq!((i.span, i.sampled, i.format, i.client_trace_id), (None, None, None, true));
}

fn seq(values: &[u64]) -> impl FnMut() -> u64 + '_ {
    let mut i = 0;
    move || {
        let v = values.get(i).copied().unwrap_or(0x5555);
        i += 1;
        v
    }
}

#[test]
fn start_a_root() {
    let ctx = start(None, &mut seq(&[7, 9]), &Sampling::default());
    assert_eq!(
        ctx,
        TraceContext {
            trace_id: 7,
            span_id: 7,
            parent_id: None,
            sampled: Some(true),
            debug: false,
            shared: false,
            w3c_only: false
        }
    );
    let s = Sampling { trace_id_128bit: true, ..Sampling::default() };
    let ctx = start(None, &mut seq(&[7, 9]), &s);
    assert_eq!((ctx.trace_id, ctx.span_id), ((9u128 << 64) | 7, 7));
    // A random source stuck at zero still yields non-zero ids.
    let ctx = start(None, &mut || 0, &Sampling::default());
    assert_eq!((ctx.trace_id, ctx.span_id), (1, 1));
}

#[test]
fn start_a_child_or_join_the_callers_span() {
    let incoming =
        extract(&[h("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1-05e3ac9a4f6e3b90")]).expect("valid");
    let ctx = start(Some(&incoming), &mut seq(&[42]), &Sampling::default());
    assert_eq!(
        ctx,
        TraceContext {
            trace_id: 0x463ac35c9f6413ad,
            span_id: 42,
            parent_id: Some(0xa2fb4a1d1a96d312),
            sampled: Some(true),
            debug: false,
            shared: false,
            w3c_only: false
        }
    );
    let join = Sampling { join_incoming_span: true, ..Sampling::default() };
    let ctx = start(Some(&incoming), &mut seq(&[42]), &join);
    assert_eq!(
        (ctx.trace_id, ctx.span_id, ctx.parent_id, ctx.shared),
        (0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312, Some(0x05e3ac9a4f6e3b90), true)
    );
    // trace_id_128bit does not widen a caller's 64-bit trace.
    let wide = Sampling { trace_id_128bit: true, ..Sampling::default() };
    assert_eq!(start(Some(&incoming), &mut seq(&[42]), &wide).trace_id, 0x463ac35c9f6413ad);
    // A sampling-only incoming starts a root that keeps the decision.
    let deny = extract(&[h("b3", "0")]).expect("valid");
    let ctx = start(Some(&deny), &mut seq(&[5]), &Sampling::default());
    assert_eq!((ctx.trace_id, ctx.parent_id, ctx.sampled), (5, None, Some(false)));
}

#[test]
fn sampling() {
    const HALF: u64 = 1 << 63; // fraction 0.5
    let never = Sampling { random: 0.0, ..Sampling::default() };
    let half = Sampling { random: 50.0, ..Sampling::default() };
    assert_eq!(start(None, &mut seq(&[1]), &never).sampled, Some(false));
    assert_eq!(start(None, &mut seq(&[1, HALF - (1 << 11)]), &half).sampled, Some(true));
    assert_eq!(start(None, &mut seq(&[1, HALF]), &half).sampled, Some(false));
    // The incoming decision wins over the rolls, both ways.
    let yes = extract(&[h("b3", "1")]).expect("valid");
    let no = extract(&[h("b3", "0")]).expect("valid");
    assert_eq!(start(Some(&yes), &mut seq(&[1]), &never).sampled, Some(true));
    assert_eq!(start(Some(&no), &mut seq(&[1]), &Sampling::default()).sampled, Some(false));
    // Debug is sampled whatever the config.
    let debug = extract(&[h("b3", "d")]).expect("valid");
    let ctx = start(Some(&debug), &mut seq(&[1]), &never);
    assert_eq!((ctx.sampled, ctx.debug), (Some(true), true));
    // x-client-trace-id: client_sampling forces, random is the fallback, overall caps both.
    let client = extract(&[h("x-client-trace-id", "x")]).expect("valid");
    let forced = Sampling { random: 0.0, client: 100.0, ..Sampling::default() };
    assert_eq!(start(Some(&client), &mut seq(&[1]), &forced).sampled, Some(true));
    let not_forced = Sampling { random: 0.0, client: 0.0, ..Sampling::default() };
    assert_eq!(start(Some(&client), &mut seq(&[1]), &not_forced).sampled, Some(false));
    let capped = Sampling { overall: 0.0, ..Sampling::default() };
    assert_eq!(start(None, &mut seq(&[1]), &capped).sampled, Some(false));
    let capped_half = Sampling { overall: 50.0, ..Sampling::default() };
    assert_eq!(start(None, &mut seq(&[1, 0]), &capped_half).sampled, Some(true));
    assert_eq!(start(None, &mut seq(&[1, u64::MAX]), &capped_half).sampled, Some(false));
}

#[test]
fn sampling_from_config() {
    use crate::config::{OpenTelemetryConfig, ZipkinConfig};
    let mut t = Tracing {
        provider: TracingProvider::Zipkin(ZipkinConfig {
            collector_cluster: "zipkin".into(),
            collector_endpoint: "/api/v2/spans".into(),
            trace_id_128bit: true,
            shared_span_context: true,
            collector_hostname: None,
        }),
        operation: TracingOperation::Ingress,
        random_sampling: 10.0,
        client_sampling: 20.0,
        overall_sampling: 30.0,
        max_path_tag_length: 256,
    };
    assert_eq!(
        Sampling::from_config(&t),
        Sampling {
            random: 10.0,
            client: 20.0,
            overall: 30.0,
            trace_id_128bit: true,
            join_incoming_span: true,
            w3c_only: false
        }
    );
    t.operation = TracingOperation::Egress;
    assert!(!Sampling::from_config(&t).join_incoming_span);
    // OpenTelemetry: 128-bit roots, W3C only, never the caller's span.
    t.operation = TracingOperation::Ingress;
    t.provider = TracingProvider::OpenTelemetry(OpenTelemetryConfig {
        collector_cluster: "otel".into(),
        timeout: None,
        service_name: "s".into(),
        sdk_attributes: true,
        max_cache_size: 1024,
    });
    let s = Sampling::from_config(&t);
    assert!(s.trace_id_128bit && s.w3c_only && !s.join_incoming_span && s.random == 10.0);
}

fn written(ctx: &TraceContext, state: Option<&[u8]>) -> String {
    let mut out = b"GET / HTTP/1.1\r\n".to_vec();
    write_headers(ctx, state, &mut out);
    String::from_utf8(out).expect("ascii")
}

#[test]
fn write_headers_exact_bytes() {
    let ctx = TraceContext {
        trace_id: 0x463ac35c9f6413ad,
        span_id: 0x2a,
        parent_id: Some(0xa2fb4a1d1a96d312),
        sampled: Some(true),
        debug: false,
        shared: false,
        w3c_only: false,
    };
    assert_eq!(
        written(&ctx, Some(b"congo=t61rcWkgMzE")),
        "GET / HTTP/1.1\r\n\
         traceparent: 00-0000000000000000463ac35c9f6413ad-000000000000002a-01\r\n\
         tracestate: congo=t61rcWkgMzE\r\n\
         x-b3-traceid: 463ac35c9f6413ad\r\n\
         x-b3-spanid: 000000000000002a\r\n\
         x-b3-parentspanid: a2fb4a1d1a96d312\r\n\
         x-b3-sampled: 1\r\n"
    );
    let root = TraceContext { trace_id: TID, span_id: SID, parent_id: None, sampled: Some(false), ..ctx };
    assert_eq!(
        written(&root, None),
        "GET / HTTP/1.1\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r\n\
         x-b3-traceid: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\
         x-b3-spanid: 00f067aa0ba902b7\r\n\
         x-b3-sampled: 0\r\n"
    );
    let debug = TraceContext { debug: true, sampled: Some(true), ..root };
    assert_eq!(
        written(&debug, Some(b"a=1\r\nevil: 1")),
        "GET / HTTP/1.1\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         x-b3-traceid: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\
         x-b3-spanid: 00f067aa0ba902b7\r\n\
         x-b3-flags: 1\r\n"
    );
    let undecided = TraceContext { sampled: None, ..root };
    assert!(!written(&undecided, None).contains("x-b3-sampled"));
}

#[test]
fn written_headers_read_back_as_the_same_span() {
    let ctx =
        start(None, &mut seq(&[0xdead, 0xbeef]), &Sampling { trace_id_128bit: true, ..Sampling::default() });
    let mut out = Vec::new();
    write_headers(&ctx, Some(b"k=v"), &mut out);
    let text = String::from_utf8(out).expect("ascii");
    let lines: Vec<(&str, &str)> =
        text.split("\r\n").filter(|l| !l.is_empty()).filter_map(|l| l.split_once(": ")).collect();
    let headers: Vec<_> = lines.iter().map(|(n, v)| h(n, v)).collect();
    assert!(lines.iter().all(|(n, _)| is_propagation_header(&ctx, n)));
    let back = extract(&headers).expect("reads back");
    assert_eq!(
        back.span,
        Some(IncomingSpan { trace_id: ctx.trace_id, span_id: ctx.span_id, parent_id: None })
    );
    assert_eq!((back.sampled, back.tracestate), (Some(true), Some(&b"k=v"[..])));
    // The W3C header alone names the same span.
    let w3c = extract(&headers[..2]).expect("w3c");
    assert_eq!((w3c.format, w3c.span.map(|s| s.span_id)), (Some(Format::W3c), Some(ctx.span_id)));
}

#[test]
fn propagation_headers() {
    let ctx = start(None, &mut seq(&[7]), &Sampling::default());
    for n in ["traceparent", "TraceState", "b3", "B3", "x-b3-traceid", "X-B3-Sampled", "x-b3-anything"] {
        assert!(is_propagation_header(&ctx, n), "{n}");
    }
    for n in ["x-b3", "x-b3-", "b3x", "x-client-trace-id", "x-request-id", "trace", ""] {
        assert!(!is_propagation_header(&ctx, n), "{n}");
    }
}

/// OpenTelemetry: B3 is neither read nor written nor removed; W3C alone carries the context.
#[test]
fn w3c_only_propagation() {
    let otel = Sampling { trace_id_128bit: true, w3c_only: true, ..Sampling::default() };
    let headers = [
        h("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1"),
        h("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ];
    let incoming = extract_as(&headers, true).expect("w3c");
    assert_eq!(incoming.format, Some(Format::W3c));
    let ctx = start(Some(&incoming), &mut seq(&[42]), &otel);
    assert_eq!((ctx.trace_id, ctx.parent_id), (0x0af7651916cd43dd8448eb211c80319c, Some(0xb7ad6b7169203331)));
    assert!(
        ctx.w3c_only && !is_propagation_header(&ctx, "b3") && !is_propagation_header(&ctx, "x-b3-spanid")
    );
    assert!(is_propagation_header(&ctx, "traceparent") && is_propagation_header(&ctx, "tracestate"));
    let mut out = Vec::new();
    write_headers(&ctx, Some(b"k=v"), &mut out);
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-000000000000002a-01\r\ntracestate: k=v\r\n"
    );
    // Only B3: a new 128-bit root, and an empty tracestate as Envoy sends.
    let ctx = start(extract_as(&headers[..1], true).as_ref(), &mut seq(&[5, 6]), &otel);
    assert_eq!((ctx.trace_id, ctx.parent_id), ((6u128 << 64) | 5, None));
    let mut out = Vec::new();
    write_headers(&ctx, None, &mut out);
    assert!(out.ends_with(b"-01\r\ntracestate: \r\n"), "{}", String::from_utf8_lossy(&out));
}

/// xorshift64: random header soup must never panic, and whatever parses must hold valid ids.
#[test]
fn fuzz_extract_never_panics() {
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const NAMES: [&str; 10] = [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-client-trace-id",
        "host",
    ];
    const ALPHABET: &[u8] = b"0123456789abcdefABCDEF-- \tdxz\xff\x00";
    let seeds = [TP, "463ac35c9f6413ad-a2fb4a1d1a96d312-1-05e3ac9a4f6e3b90", "a2fb4a1d1a96d312", "1"];
    for _ in 0..20_000 {
        let count = (next() % 6) as usize;
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut names = Vec::new();
        for _ in 0..count {
            names.push(NAMES[(next() % NAMES.len() as u64) as usize]);
            let mut v = if next() % 2 == 0 {
                seeds[(next() % seeds.len() as u64) as usize].as_bytes().to_vec()
            } else {
                Vec::new()
            };
            // Mutate: overwrite, insert, or truncate a few bytes.
            for _ in 0..(next() % 4) {
                let c = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
                match next() % 3 {
                    0 if !v.is_empty() => {
                        let at = (next() % v.len() as u64) as usize;
                        v[at] = c;
                    }
                    1 => {
                        let at = (next() % (v.len() as u64 + 1)) as usize;
                        v.insert(at, c);
                    }
                    _ => v.truncate((next() % (v.len() as u64 + 1)) as usize),
                }
            }
            values.push(v);
        }
        let headers: Vec<_> =
            names.iter().zip(&values).map(|(n, v)| httparse::Header { name: n, value: v }).collect();
        if let Some(i) = extract(&headers) {
            if let Some(s) = i.span {
                assert!(s.trace_id != 0 && s.span_id != 0 && s.parent_id != Some(0));
            }
            let ctx = start(Some(&i), &mut next, &Sampling::default());
            let mut out = Vec::new();
            write_headers(&ctx, i.tracestate, &mut out);
            assert!(out.ends_with(b"\r\n"));
        }
    }
}
