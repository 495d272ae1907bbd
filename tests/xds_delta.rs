//! Incremental xDS (delta, configs/xds/ads-delta-grpc.yaml): the test management server
//! (tests/support/xds_server.rs) serves the same listeners, routes, clusters and endpoints to the
//! real Envoy and to skiff over delta ADS, and over delta per-type streams (clusters on
//! DeltaClusters, endpoints on DeltaEndpoints, listeners and routes on delta ADS). Both route the
//! same; then pushes (an endpoint removed from an assignment, a cluster added, a cluster removed
//! by `removed_resources` with a route change, a cluster both refuse, an assignment removed, which
//! both ignore) and both follow, NACKing the refusal with the field named, with no failed request in a load run through skiff across the
//! pushes. What each sends (subscriptions, node, ACKs and NACKs) is compared.

mod support;

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/xds_server.rs"]
mod xds_server;
#[path = "support/xds_world.rs"]
mod xds_world;

use envoy::{binary_or_skip, Envoy};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use support::{eventually, free_port, scratch_dir, Skiff, TestUpstream};
use xds_server::{Seen, XdsServer};
use xds_world::{
    answers, assert_first_world, assert_same_update_stats, cluster, endpoints, listener, outcome, routes,
    stats, LoadRun, CDS, EDS, LDS, RDS,
};

const LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Everything on one DeltaAggregatedResources stream.
    Ads,
    /// Clusters on DeltaClusters, endpoints on DeltaEndpoints, the rest on delta ADS.
    PerType,
}

const DELTA_SOURCE: &str = "    api_config_source:\n      api_type: DELTA_GRPC\n      transport_api_version: V3\n      grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]\n";

fn bootstrap(mode: Mode, xds: SocketAddr, node: &str, admin: u16) -> String {
    let yaml = xds_world::bootstrap("ads-delta-grpc.yaml", xds, node, admin);
    match mode {
        Mode::Ads => yaml,
        Mode::PerType => yaml.replace(
            "  cds_config:\n    resource_api_version: V3\n    ads: {}\n",
            &format!("  cds_config:\n    resource_api_version: V3\n{DELTA_SOURCE}"),
        ),
    }
}

fn delta_cluster(mode: Mode, name: &str) -> Value {
    let mut c = cluster(name);
    if mode == Mode::PerType {
        c["eds_cluster_config"]["eds_config"] = json!({
            "resource_api_version": "V3",
            "api_config_source": {"api_type": "DELTA_GRPC", "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
        });
    }
    c
}

/// The requests `node` sent for `type_url`.
fn requests(seen: &[Seen], node: &str, type_url: &str) -> Vec<Seen> {
    seen.iter().filter(|s| s.node_id == node && s.type_url == type_url).cloned().collect()
}

/// Every name `node` subscribed to and unsubscribed from for `type_url`.
fn subscriptions(seen: &[Seen], node: &str, type_url: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let r = requests(seen, node, type_url);
    let sub = r.iter().flat_map(|s| s.subscribe.clone()).collect();
    let unsub = r.iter().flat_map(|s| s.unsubscribe.clone()).collect();
    (sub, unsub)
}

fn follows_pushes_as_envoy_does(mode: Mode, test: &str) {
    let Some(bin) = binary_or_skip(test) else { return };
    let (a1, a2, b, c) = (
        TestUpstream::echo_named("a1"),
        TestUpstream::echo_named("a2"),
        TestUpstream::echo_named("b"),
        TestUpstream::echo_named("c"),
    );
    let server = XdsServer::start();
    let cl = |name: &str| delta_cluster(mode, name);
    // 1: a over a1 and a2, b; 2: a loses a2, c is added; 3: a is removed, /a goes to b, /c to c;
    // 4: a cluster both refuse (LOGICAL_DNS with two endpoints); 5: back to 3 without c's
    // assignment, which both ignore (c keeps its endpoints).
    let world = |port: u16, version: u8| {
        let mut clusters = match version {
            1 => vec![cl("a"), cl("b")],
            2 => vec![cl("a"), cl("b"), cl("c")],
            _ => vec![cl("b"), cl("c")],
        };
        let assignments = match version {
            1 => vec![endpoints("a", &[&a1, &a2]), endpoints("b", &[&b])],
            2 => vec![endpoints("a", &[&a1]), endpoints("b", &[&b]), endpoints("c", &[&c])],
            5 => vec![endpoints("b", &[&b])],
            _ => vec![endpoints("b", &[&b]), endpoints("c", &[&c])],
        };
        let table = match version {
            1 | 2 => routes(&[("/a", "a"), ("/b", "b")]),
            _ => routes(&[("/a", "b"), ("/b", "b"), ("/c", "c")]),
        };
        if version == 4 {
            let mut bad =
                json!({"@type": CDS, "name": "bad", "type": "LOGICAL_DNS", "connect_timeout": "1s"});
            bad["load_assignment"] = endpoints("bad", &[&a1, &a2]);
            bad["load_assignment"].as_object_mut().map(|m| m.remove("@type"));
            clusters.push(bad);
        }
        vec![(CDS, clusters), (EDS, assignments), (LDS, vec![listener(port)]), (RDS, vec![table])]
    };
    let (skiff_port, skiff_admin) = (free_port(), free_port());
    server.push("skiff", "1", world(skiff_port, 1));
    let skiff = Skiff::start(&bootstrap(mode, server.addr, "skiff", skiff_admin), &[]);
    let dir = scratch_dir(&format!("xds-delta-{test}"));
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", world(port, 1));
        bootstrap(mode, server.addr, "envoy", admin)
    });
    let skiff_addr = SocketAddr::from(([127, 0, 0, 1], skiff_port));
    let proxies = [("skiff", skiff_addr, skiff_port), ("envoy", envoy.listener, envoy.listener.port())];
    for (name, addr, _) in proxies {
        assert_first_world(name, addr, || skiff.log());
    }

    // A load run through skiff across every push: /b is served throughout.
    let load = LoadRun::start(skiff_addr, "/b");

    let push = |version: u8| {
        for (name, _, port) in proxies {
            server.push(name, &version.to_string(), world(port, version));
        }
    };
    push(2);
    for (name, addr, _) in proxies {
        assert!(server.wait_ack(name, CDS, "2", LIMIT), "{name}: CDS 2 not acked\n{}", skiff.log());
        assert!(server.wait_ack(name, EDS, "2", LIMIT), "{name}: EDS 2 not acked");
        assert!(
            eventually(LIMIT, || answers(addr, "/a", 4) == ["200 a1"]),
            "{name}: /a {:?}",
            answers(addr, "/a", 4)
        );
    }
    push(3);
    for (name, addr, _) in proxies {
        assert!(server.wait_ack(name, RDS, "3", LIMIT), "{name}: RDS 3 not acked\n{}", skiff.log());
        assert!(server.wait_ack(name, CDS, "3", LIMIT), "{name}: CDS 3 not acked");
        assert!(
            eventually(LIMIT, || outcome(addr, "/a") == "200 b" && outcome(addr, "/c") == "200 c"),
            "{name}: /a {} /c {}",
            outcome(addr, "/a"),
            outcome(addr, "/c")
        );
    }
    push(4);
    for (name, addr, _) in proxies {
        let nack =
            server.wait_nack(name, CDS, LIMIT).unwrap_or_else(|| panic!("{name}: no NACK\n{}", skiff.log()));
        assert_eq!(nack.version_info, "4", "{name}: the NACK answers version 4's nonce");
        let error = nack.error.unwrap_or_default();
        assert!(error.contains("LOGICAL_DNS"), "{name}: {error}");
        // skiff's names the resource's place in the set it applied (b, bad, c).
        assert!(name == "envoy" || error.contains("/cds:") && error.contains("resources[1]"), "{error}");
        assert_eq!(outcome(addr, "/a"), "200 b", "{name}");
        assert_eq!(outcome(addr, "/c"), "200 c", "{name}");
    }
    push(5);
    for (name, addr, _) in proxies {
        assert!(server.wait_ack(name, CDS, "5", LIMIT), "{name}: CDS 5 not acked\n{}", skiff.log());
        assert!(server.wait_ack(name, EDS, "5", LIMIT), "{name}: c's removal not acked");
        assert_eq!(outcome(addr, "/c"), "200 c", "{name}");
    }
    let (sent, failures) = load.finish();
    assert!(sent > 50, "the load run sent {sent}");
    assert_eq!(failures, Vec::<String>::new(), "failed requests through skiff");

    // What each asked for: the same subscriptions, the node on each stream's first request only.
    let seen = server.seen();
    for type_url in [CDS, EDS, LDS, RDS] {
        let (skiff_asked, envoy_asked) =
            (subscriptions(&seen, "skiff", type_url), subscriptions(&seen, "envoy", type_url));
        // Per type, Envoy runs a DeltaEndpoints stream per cluster and ends a removed cluster's;
        // skiff runs one per server for every cluster and unsubscribes the name.
        match (mode, type_url) {
            (Mode::PerType, EDS) => assert_eq!(skiff_asked.0, envoy_asked.0, "{type_url}"),
            _ => assert_eq!(skiff_asked, envoy_asked, "{type_url}"),
        }
    }
    assert_eq!(
        subscriptions(&seen, "skiff", EDS),
        (["a", "b", "c"].map(String::from).into(), ["a"].map(String::from).into())
    );
    // The node on every request (Envoy's default); the wildcards' first request names nothing;
    // ACKs and NACKs name the response's nonce.
    for node in ["skiff", "envoy"] {
        assert!(seen.iter().filter(|s| s.node_id == node).all(|s| s.has_node), "{node}");
        for type_url in [CDS, LDS] {
            let first = requests(&seen, node, type_url).into_iter().next().expect("a request");
            assert_eq!((first.subscribe.len(), first.nonce.as_str()), (0, ""), "{node} {type_url}");
        }
        let nacks: Vec<_> = seen.iter().filter(|s| s.node_id == node && s.error.is_some()).collect();
        assert_eq!(nacks.len(), 1, "{node}: {nacks:?}");
    }
    // Cluster a is gone from both (its gauges; skiff keeps a removed cluster's counters).
    let (s, e) = (stats(SocketAddr::from(([127, 0, 0, 1], skiff_admin))), stats(envoy.admin));
    for (name, st) in [("skiff", &s), ("envoy", &e)] {
        assert_eq!(st.get("cluster.a.membership_total"), None, "{name} still has cluster a");
        assert_eq!(st.get("cluster.c.membership_total"), Some(&1), "{name}: cluster c");
    }
    assert_same_update_stats(&s, &e);
    // /config_dump names the sources as configured.
    let api_types = |admin: SocketAddr| {
        let dump: Value =
            serde_json::from_str(&envoy::admin_get(admin, "/config_dump").expect("dump").1).expect("json");
        let dynamic = &dump["configs"][0]["bootstrap"]["dynamic_resources"];
        (
            dynamic["ads_config"]["api_type"].clone(),
            dynamic["cds_config"]["api_config_source"]["api_type"].clone(),
        )
    };
    let skiff_types = api_types(SocketAddr::from(([127, 0, 0, 1], skiff_admin)));
    assert_eq!(skiff_types, api_types(envoy.admin));
    assert_eq!(skiff_types.0, "DELTA_GRPC");
    assert_eq!(s.get("cluster_manager.cds.update_rejected"), Some(&1));
}

#[test]
fn delta_ads_follows_pushes_as_envoy_does() {
    follows_pushes_as_envoy_does(Mode::Ads, "delta_ads_follows_pushes_as_envoy_does");
}

#[test]
fn delta_per_type_streams_follow_pushes_as_envoy_does() {
    follows_pushes_as_envoy_does(Mode::PerType, "delta_per_type_streams_follow_pushes_as_envoy_does");
}

#[test]
fn a_reconnected_delta_stream_names_the_versions_it_holds_as_envoy_does() {
    let Some(bin) = binary_or_skip("a_reconnected_delta_stream_names_the_versions_it_holds") else { return };
    let (b, c) = (TestUpstream::echo_named("b"), TestUpstream::echo_named("c"));
    let xds_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let world = |port: u16, route: &str| {
        vec![
            (CDS, vec![cluster("b"), cluster("c")]),
            (EDS, vec![endpoints("b", &[&b]), endpoints("c", &[&c])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/", route)])]),
        ]
    };
    let server = XdsServer::start_at(xds_addr);
    let skiff_port = free_port();
    server.push("skiff", "1", world(skiff_port, "b"));
    let skiff = Skiff::start(&bootstrap(Mode::Ads, xds_addr, "skiff", free_port()), &[]);
    let dir = scratch_dir("xds-delta-reconnect");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", world(port, "b"));
        bootstrap(Mode::Ads, xds_addr, "envoy", admin)
    });
    let proxies = [("skiff", SocketAddr::from(([127, 0, 0, 1], skiff_port))), ("envoy", envoy.listener)];
    for (name, addr) in proxies {
        assert!(eventually(LIMIT, || outcome(addr, "/") == "200 b"), "{name}\n{}", skiff.log());
        assert!(server.wait_ack(name, RDS, "1", LIMIT), "{name}");
    }
    // The server restarts: each resubscribes naming what it holds, the server sends nothing
    // anew, and both keep serving; then a route change reaches both.
    server.stop();
    let server = XdsServer::start_at(xds_addr);
    server.push("skiff", "1", world(skiff_port, "b"));
    server.push("envoy", "1", world(envoy.listener.port(), "b"));
    let all = |t: &str| -> Vec<String> {
        match t {
            CDS | EDS => vec!["b".into(), "c".into()],
            LDS => vec!["listener_0".into()],
            _ => vec!["local_route".into()],
        }
    };
    for (name, addr) in proxies {
        for type_url in [CDS, EDS, LDS, RDS] {
            let resubscribed = || requests(&server.seen(), name, type_url).into_iter().next();
            assert!(eventually(Duration::from_secs(40), || resubscribed().is_some()), "{name}: {type_url}");
            let first = resubscribed().expect("a request");
            assert_eq!(first.initial, all(type_url), "{name} {type_url}: initial_resource_versions");
        }
        assert_eq!(outcome(addr, "/"), "200 b", "{name}");
    }
    server.push("skiff", "2", world(skiff_port, "c"));
    server.push("envoy", "2", world(envoy.listener.port(), "c"));
    for (name, addr) in proxies {
        assert!(eventually(LIMIT, || outcome(addr, "/") == "200 c"), "{name}");
        // Only the changed route configuration came, so only it was answered.
        let answered: BTreeSet<String> = server
            .seen()
            .iter()
            .filter(|s| s.node_id == name && !s.nonce.is_empty())
            .map(|s| s.type_url.clone())
            .collect();
        assert_eq!(answered, [RDS.to_string()].into(), "{name}");
    }
}
