//! xDS from a management server over gRPC (ADS, state of the world; configs/xds/ads-grpc.yaml):
//! a small server written here (tests/support/xds_server.rs) serves the same listeners, routes,
//! clusters and endpoints to the real Envoy and to skiff, each on its own listener port. Both
//! route the same requests to the same upstreams; then the server pushes an endpoint removal and
//! a new cluster, a route change, and a cluster both must refuse, and both follow (the refusal
//! NACKed with the reason while the last good config serves), with no failed request in a load
//! run through skiff across the pushes.

mod support;

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/xds_server.rs"]
mod xds_server;

#[path = "support/xds_world.rs"]
mod xds_world;

use envoy::{admin_get, binary_or_skip, Envoy};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{eventually, free_port, scratch_dir, Skiff, TestUpstream};
use xds_server::XdsServer;
use xds_world::{
    answers, assert_first_world, assert_same_update_stats, cluster, endpoints, listener, outcome, routes,
    stats, LoadRun, CDS, EDS, LDS, RDS,
};

const LIMIT: Duration = Duration::from_secs(15);

/// configs/xds/ads-grpc.yaml with the server at `xds`, node `node`, admin on `admin_port`.
fn bootstrap(xds: SocketAddr, node: &str, admin_port: u16) -> String {
    xds_world::bootstrap("ads-grpc.yaml", xds, node, admin_port)
}

#[test]
fn ads_grpc_follows_pushes_as_envoy_does() {
    let Some(bin) = binary_or_skip("ads_grpc_follows_pushes_as_envoy_does") else { return };
    let (a1, a2, b, c) = (
        TestUpstream::echo_named("a1"),
        TestUpstream::echo_named("a2"),
        TestUpstream::echo_named("b"),
        TestUpstream::echo_named("c"),
    );
    let server = XdsServer::start();
    let v1 = |port: u16| {
        vec![
            (CDS, vec![cluster("a"), cluster("b")]),
            (EDS, vec![endpoints("a", &[&a1, &a2]), endpoints("b", &[&b])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/a", "a"), ("/b", "b")])]),
        ]
    };
    let skiff_port = free_port();
    server.push("skiff", "1", v1(skiff_port));
    let skiff_admin = free_port();
    let skiff = Skiff::start(&bootstrap(server.addr, "skiff", skiff_admin), &[]);
    let dir = scratch_dir("xds-grpc-envoy");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", v1(port));
        bootstrap(server.addr, "envoy", admin)
    });
    let skiff_addr = SocketAddr::from(([127, 0, 0, 1], skiff_port));
    let proxies = [("skiff", skiff_addr), ("envoy", envoy.listener)];

    // The first fetch: both route /a over a's two endpoints and /b to b.
    for (name, addr) in proxies {
        assert_first_world(name, addr, || skiff.log());
    }
    // skiff names itself and the bootstrap's node; Envoy names itself.
    let seen = server.seen();
    let first = |node: &str| seen.iter().find(|s| s.node_id == node).cloned().expect("a request");
    assert_eq!(
        (first("skiff").node_cluster.as_str(), first("skiff").user_agent_name.as_str()),
        ("test-cluster", "skiff")
    );
    assert_eq!(first("envoy").user_agent_name, "envoy");
    // The route and endpoint subscriptions name what the listeners and clusters need.
    for node in ["skiff", "envoy"] {
        // Sorted: Envoy lists the names in its hash set's order.
        let names = |t: &str| {
            let mut names =
                seen.iter().rfind(|s| s.node_id == node && s.type_url == t).map(|s| s.names.clone());
            names.iter_mut().for_each(|n| n.sort());
            names
        };
        assert_eq!(names(RDS), Some(vec!["local_route".to_string()]), "{node}");
        assert_eq!(names(EDS), Some(vec!["a".to_string(), "b".to_string()]), "{node}");
        assert_eq!(names(CDS), Some(vec![]), "{node}");
    }

    // A load run through skiff across every push: /b is served throughout.
    let load = LoadRun::start(skiff_addr, "/b");

    // v2: a loses an endpoint, cluster c is added.
    let v2 = |port: u16| {
        vec![
            (CDS, vec![cluster("a"), cluster("b"), cluster("c")]),
            (EDS, vec![endpoints("a", &[&a1]), endpoints("b", &[&b]), endpoints("c", &[&c])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/a", "a"), ("/b", "b")])]),
        ]
    };
    server.push("skiff", "2", v2(skiff_port));
    server.push("envoy", "2", v2(envoy.listener.port()));
    for (name, addr) in proxies {
        assert!(server.wait_ack(name, CDS, "2", LIMIT), "{name}: CDS 2 not acked\n{}", skiff.log());
        assert!(server.wait_ack(name, EDS, "2", LIMIT), "{name}: EDS 2 not acked");
        assert!(
            eventually(LIMIT, || answers(addr, "/a", 4) == ["200 a1"]),
            "{name}: /a {:?}",
            answers(addr, "/a", 4)
        );
    }

    // v3: /a goes to b, /c to the new cluster.
    let v3 = |port: u16| {
        let mut v = v2(port);
        v[3] = (RDS, vec![routes(&[("/a", "b"), ("/b", "b"), ("/c", "c")])]);
        v
    };
    server.push("skiff", "3", v3(skiff_port));
    server.push("envoy", "3", v3(envoy.listener.port()));
    for (name, addr) in proxies {
        assert!(server.wait_ack(name, RDS, "3", LIMIT), "{name}: RDS 3 not acked");
        assert!(
            eventually(LIMIT, || outcome(addr, "/a") == "200 b" && outcome(addr, "/c") == "200 c"),
            "{name}: /a {} /c {}",
            outcome(addr, "/a"),
            outcome(addr, "/c")
        );
    }

    // v4: a cluster both refuse (LOGICAL_DNS with two endpoints): NACKed with the reason, and
    // v3 keeps serving.
    let v4 = |port: u16| {
        let mut v = v3(port);
        let mut bad = cluster("bad");
        bad["type"] = json!("LOGICAL_DNS");
        bad.as_object_mut().map(|m| m.remove("eds_cluster_config"));
        bad["load_assignment"] = endpoints("bad", &[&a1, &a2]);
        bad["load_assignment"].as_object_mut().map(|m| m.remove("@type"));
        v[0].1.push(bad);
        v
    };
    server.push("skiff", "4", v4(skiff_port));
    server.push("envoy", "4", v4(envoy.listener.port()));
    for (name, addr) in proxies {
        let nack =
            server.wait_nack(name, CDS, LIMIT).unwrap_or_else(|| panic!("{name}: no NACK\n{}", skiff.log()));
        assert_eq!(nack.version_info, "3", "{name}: a NACK names the last accepted version");
        let error = nack.error.unwrap_or_default();
        assert!(error.contains("LOGICAL_DNS"), "{name}: {error}");
        assert_eq!(outcome(addr, "/a"), "200 b", "{name}");
        assert_eq!(outcome(addr, "/c"), "200 c", "{name}");
    }
    let nack = server.wait_nack("skiff", CDS, LIMIT).and_then(|s| s.error).unwrap_or_default();
    assert!(nack.starts_with("xds:ads/cds:") && nack.contains("resources[3]"), "located: {nack}");

    let (sent, failures) = load.finish();
    assert!(sent > 50, "the load run sent {sent}");
    assert_eq!(failures, Vec::<String>::new(), "failed requests through skiff");

    // The same subscription stats on both.
    let (s, e) = (stats(SocketAddr::from(([127, 0, 0, 1], skiff_admin))), stats(envoy.admin));
    assert_same_update_stats(&s, &e);
    assert_eq!(s.get("control_plane.connected_state"), Some(&1));
    assert_eq!(s.get("cluster_manager.cds.update_rejected"), Some(&1));
}

#[test]
fn management_server_sources_validate_and_refuse_what_is_not_built() {
    // Envoy's dynamic-config-cp example bootstrap validates as it is.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/xds/ads-grpc.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c"])
        .arg(&example)
        .output()
        .expect("run skiff");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = scratch_dir("xds-grpc-refused");
    let refused = |dynamic: &str, needle: &str| {
        let text = std::fs::read_to_string(&example).unwrap();
        let start = text.find("dynamic_resources:").unwrap();
        let end = text.find("static_resources:").unwrap();
        let text = format!("{}{dynamic}\n{}", &text[..start], &text[end..]);
        let path = dir.join("b.yaml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .output()
            .expect("run skiff");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(needle), "{dynamic}: {err}");
    };
    refused(
        "dynamic_resources:\n  cds_config: {ads: {}}\n",
        "dynamic_resources.cds_config.ads: ads: {} needs dynamic_resources.ads_config",
    );
    refused(
        "dynamic_resources:\n  ads_config: {api_type: AGGREGATED_DELTA_GRPC, grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]}\n  cds_config: {ads: {}}\n",
        "dynamic_resources.ads_config.api_type: ads_config's api_type must be of non-aggregated gRPC",
    );
    refused(
        "dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: nowhere}}]}\n  cds_config: {ads: {}}\n",
        "the management server's cluster \"nowhere\" must be a static cluster",
    );
    refused(
        "dynamic_resources:\n  lds_config: {api_config_source: {api_type: REST, cluster_names: [xds_cluster]}}\n",
        "dynamic_resources.lds_config.api_config_source",
    );
}

#[test]
fn reconnects_with_backoff_and_resubscribes_from_the_last_accepted_version() {
    let up = TestUpstream::echo_named("b");
    let xds_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The node's locality and metadata go to the server as given; the command line names the node.
    let yaml = bootstrap(xds_addr, "from-bootstrap", admin_port).replace(
        "  cluster: test-cluster\n",
        "  cluster: test-cluster\n  locality: {region: r1, zone: z1}\n  metadata: {team: edge, shard: 3}\n",
    );
    let resources = || {
        vec![
            (CDS, vec![cluster("b")]),
            (EDS, vec![endpoints("b", &[&up])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/", "b")])]),
        ]
    };
    // No server yet: skiff starts (admin up), serves nothing, and says it is not connected.
    let skiff = Skiff::start(&yaml, &["--service-node", "sidecar-1"]);
    let connected = || stats(admin).get("control_plane.connected_state").copied();
    assert_eq!(connected(), Some(0));
    assert_eq!(outcome(addr, "/"), "refused");

    // The server comes up: skiff's back-off retry reaches it and the resources serve.
    let server = XdsServer::start_at(xds_addr);
    server.push("sidecar-1", "1", resources());
    assert!(eventually(LIMIT, || outcome(addr, "/") == "200 b"), "{}", skiff.log());
    assert_eq!(connected(), Some(1));
    let seen = server.seen();
    let first = seen.first().expect("a request");
    assert_eq!(
        (first.node_id.as_str(), first.node_cluster.as_str(), first.zone.as_str()),
        ("sidecar-1", "test-cluster", "z1")
    );
    assert_eq!(first.metadata, Some(json!({"team": "edge", "shard": 3.0})));
    assert!(server.wait_ack("sidecar-1", RDS, "1", LIMIT));

    // The server goes away: the last good config keeps serving, the gauge drops.
    server.stop();
    assert!(eventually(LIMIT, || connected() == Some(0)));
    assert_eq!(outcome(addr, "/"), "200 b");

    // A new server (same address): skiff resubscribes with the versions it accepted, no nonce.
    let server = XdsServer::start_at(xds_addr);
    server.push("sidecar-1", "2", resources());
    assert!(server.wait_ack("sidecar-1", CDS, "2", LIMIT), "{}", skiff.log());
    let seen = server.seen();
    let resubscribed = seen.iter().find(|s| s.type_url == CDS).expect("a CDS request");
    assert_eq!((resubscribed.version_info.as_str(), resubscribed.nonce.as_str()), ("1", ""));
    assert_eq!(connected(), Some(1));
    assert_eq!(outcome(addr, "/"), "200 b");
}

#[test]
fn a_type_with_its_own_api_config_source_has_its_own_stream() {
    let up = TestUpstream::echo_named("b");
    let server = XdsServer::start();
    let (port, admin_port) = (free_port(), free_port());
    // Clusters over ClusterDiscoveryService, the rest over the aggregated stream.
    let yaml = bootstrap(server.addr, "split", admin_port).replace(
        "  cds_config:\n    resource_api_version: V3\n    ads: {}\n",
        "  cds_config:\n    resource_api_version: V3\n    api_config_source:\n      api_type: GRPC\n      transport_api_version: V3\n      grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]\n",
    );
    server.push(
        "split",
        "1",
        vec![
            (CDS, vec![cluster("b")]),
            (EDS, vec![endpoints("b", &[&up])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/", "b")])]),
        ],
    );
    let skiff = Skiff::start(&yaml, &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(eventually(LIMIT, || outcome(addr, "/") == "200 b"), "{}", skiff.log());
    let seen = server.seen();
    let services = |t: &str| {
        let mut s: Vec<&str> = seen.iter().filter(|s| s.type_url == t).map(|s| s.service).collect();
        s.dedup();
        s
    };
    assert_eq!(services(CDS), ["cds"]);
    assert_eq!(services(LDS), ["ads"]);
    assert_eq!(services(EDS), ["ads"]);
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert_eq!(stats(admin).get("control_plane.connected_state"), Some(&1));
    // /config_dump names the sources as configured.
    let dump: Value =
        serde_json::from_str(&admin_get(admin, "/config_dump").expect("config_dump").1).unwrap();
    let dynamic = &dump["configs"][0]["bootstrap"]["dynamic_resources"];
    assert_eq!(
        dynamic["cds_config"]["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
        "xds_cluster"
    );
    assert_eq!(dynamic["lds_config"]["ads"], json!({}));
    assert_eq!(dynamic["ads_config"]["api_type"], "GRPC");
}

/// The first answer on `addr` once it accepts connections.
fn first_answer(addr: SocketAddr, path: &str) -> String {
    let mut out = String::new();
    eventually(LIMIT, || {
        out = outcome(addr, path);
        out != "refused"
    });
    out
}

#[test]
fn a_new_listener_and_cluster_warm_before_serving_as_in_envoy() {
    let Some(bin) = binary_or_skip("a_new_listener_and_cluster_warm_before_serving_as_in_envoy") else {
        return;
    };
    let (b, c) = (TestUpstream::echo_named("b"), TestUpstream::echo_named("c"));
    let server = XdsServer::start();
    let v1 = |port: u16| {
        vec![
            (CDS, vec![cluster("b")]),
            (EDS, vec![endpoints("b", &[&b])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/", "b")])]),
        ]
    };
    // v2: a second listener whose routes (a route configuration of its own) lead to a new cluster.
    let v2 = |port: u16, second: u16| {
        let mut l2 = listener(second);
        l2["name"] = json!("listener_1");
        let hcm = &mut l2["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["rds"]["route_config_name"] = json!("second_route");
        let mut r2 = routes(&[("/", "c")]);
        r2["name"] = json!("second_route");
        vec![
            (CDS, vec![cluster("b"), cluster("c")]),
            (EDS, vec![endpoints("b", &[&b]), endpoints("c", &[&c])]),
            (LDS, vec![listener(port), l2]),
            (RDS, vec![routes(&[("/", "b")]), r2]),
        ]
    };
    let skiff_port = free_port();
    server.push("skiff", "1", v1(skiff_port));
    let skiff = Skiff::start(&bootstrap(server.addr, "skiff", free_port()), &[]);
    let dir = scratch_dir("xds-grpc-warm");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", v1(port));
        bootstrap(server.addr, "envoy", admin)
    });
    let skiff_addr = SocketAddr::from(([127, 0, 0, 1], skiff_port));
    // Even skiff's first listener waited for its routes: its first answer is routed.
    assert_eq!(first_answer(skiff_addr, "/"), "200 b", "{}", skiff.log());
    // A slow route and endpoint server: without warming, the new listener would answer 404 and
    // the new cluster 503 for that long.
    server.delay(RDS, Duration::from_millis(400));
    server.delay(EDS, Duration::from_millis(400));
    let (skiff_second, envoy_second) = (free_port(), free_port());
    server.push("skiff", "2", v2(skiff_port, skiff_second));
    server.push("envoy", "2", v2(envoy.listener.port(), envoy_second));
    for (name, port) in [("skiff", skiff_second), ("envoy", envoy_second)] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(first_answer(addr, "/"), "200 c", "{name}: the new listener's first answer");
    }
}

#[test]
fn a_listener_whose_routes_never_come_serves_after_initial_fetch_timeout_as_in_envoy() {
    let Some(bin) = binary_or_skip("a_listener_whose_routes_never_come_serves_after_initial_fetch_timeout")
    else {
        return;
    };
    let b = TestUpstream::echo_named("b");
    let server = XdsServer::start();
    // The listener's routes ("missing") are never served; its source waits 0.5 s for them.
    let resources = |port: u16| {
        let mut l = listener(port);
        let rds = &mut l["filter_chains"][0]["filters"][0]["typed_config"]["rds"];
        rds["route_config_name"] = json!("missing");
        rds["config_source"]["initial_fetch_timeout"] = json!("0.5s");
        vec![(CDS, vec![cluster("b")]), (EDS, vec![endpoints("b", &[&b])]), (LDS, vec![l]), (RDS, vec![])]
    };
    let (skiff_port, skiff_admin) = (free_port(), free_port());
    server.push("skiff", "1", resources(skiff_port));
    let started = std::time::Instant::now();
    let _skiff = Skiff::start(&bootstrap(server.addr, "skiff", skiff_admin), &[]);
    let skiff_addr = SocketAddr::from(([127, 0, 0, 1], skiff_port));
    assert_eq!(first_answer(skiff_addr, "/"), "404 -");
    assert!(started.elapsed() >= Duration::from_millis(500), "served after {:?}", started.elapsed());
    let dir = scratch_dir("xds-grpc-timeout");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", resources(port));
        bootstrap(server.addr, "envoy", admin)
    });
    assert_eq!(outcome(envoy.listener, "/"), "404 -");
    // Both count the route configuration's initial fetch timeout.
    let name = "http.ingress_http.rds.missing.init_fetch_timeout";
    let skiff_stats = stats(SocketAddr::from(([127, 0, 0, 1], skiff_admin)));
    assert_eq!(skiff_stats.get(name), Some(&1));
    assert_eq!(skiff_stats.get(name), stats(envoy.admin).get(name));
}

/// `cluster::address::rq_total` from `/clusters` (None while the host is not listed).
fn host_rq_total(admin: SocketAddr, cluster: &str, host: SocketAddr) -> Option<u64> {
    let (_, text) = admin_get(admin, "/clusters")?;
    let key = format!("{cluster}::{host}::rq_total::");
    text.lines().find_map(|l| l.strip_prefix(key.as_str())?.trim().parse().ok())
}

/// One assignment changed among many, in a push that repeats every cluster and assignment (as a
/// state-of-the-world server does): only that cluster changes. Another cluster's outlier ejection
/// and host stats go on as they were, and a request in flight on the changed cluster finishes on
/// the endpoint it started on while the next one goes to the new endpoint.
#[test]
fn one_assignment_changed_among_many_changes_only_that_cluster() {
    let good = TestUpstream::echo_named("good");
    let bad = TestUpstream::start(Arc::new(|_: &support::Seen| support::Reply::Full {
        status: 500,
        headers: vec![("x-upstream".into(), "bad".into())],
        body: Vec::new(),
    }));
    let slow = TestUpstream::start(Arc::new(|_: &support::Seen| {
        std::thread::sleep(Duration::from_millis(1500));
        support::Reply::Full {
            status: 200,
            headers: vec![("x-upstream".into(), "old".into())],
            body: Vec::new(),
        }
    }));
    let new = TestUpstream::echo_named("new");
    let server = XdsServer::start();
    let n = 40;
    let world = |port: u16, moved: bool| {
        let mut clusters: Vec<Value> = (0..n).map(|i| cluster(&format!("c{i}"))).collect();
        clusters[0]["outlier_detection"] = json!({
            "consecutive_5xx": 1, "interval": "60s", "base_ejection_time": "60s", "max_ejection_percent": 50,
        });
        let mut cla: Vec<Value> = (0..n).map(|i| endpoints(&format!("c{i}"), &[&good])).collect();
        cla[0] = endpoints("c0", &[&good, &bad]);
        cla[1] = endpoints("c1", &[if moved { &new } else { &slow }]);
        let table = routes(&[("/od", "c0"), ("/slow", "c1"), ("/", "c2")]);
        vec![(CDS, clusters), (EDS, cla), (LDS, vec![listener(port)]), (RDS, vec![table])]
    };
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let _skiff = Skiff::start(&bootstrap(server.addr, "skiff", admin_port), &["--concurrency", "1"]);
    server.push("skiff", "1", world(port, false));
    assert!(eventually(LIMIT, || outcome(listener, "/") == "200 good"), "version 1 never served");
    // A 5xx from bad ejects it (consecutive_5xx: 1); c0 then sends everything to good.
    assert!(eventually(LIMIT, || outcome(listener, "/od") == "500 bad"), "bad never answered");
    let ejected = |what: &str| {
        assert_eq!(stats(admin).get("cluster.c0.outlier_detection.ejections_active"), Some(&1), "{what}");
        assert_eq!(answers(listener, "/od", 4), ["200 good"], "{what}");
    };
    ejected("before the change");
    outcome(listener, "/");
    let counted = host_rq_total(admin, "c2", good.addr).expect("c2's host in /clusters");
    let in_flight = std::thread::spawn(move || outcome(listener, "/slow"));
    assert!(eventually(LIMIT, || slow.count() == 1), "the slow request never reached its upstream");
    server.push("skiff", "2", world(port, true));
    assert!(server.wait_ack("skiff", EDS, "2", LIMIT), "version 2 not ACKed");
    assert!(eventually(LIMIT, || outcome(listener, "/slow") == "200 new"), "c1 never moved");
    assert_eq!(in_flight.join().unwrap(), "200 old", "the request in flight finishes where it started");
    ejected("after the change: c0's detector is the one it had");
    outcome(listener, "/");
    assert_eq!(host_rq_total(admin, "c2", good.addr), Some(counted + 1), "c2's host stats go on counting");
    // Version 2 was applied as one assignment: the other clusters' subscriptions accepted it too,
    // with nothing rebuilt (Envoy counts such a restatement in `update_no_rebuild` as well).
    let s = stats(admin);
    assert_eq!(s.get("cluster.c5.update_success"), s.get("cluster.c1.update_success"));
    assert_eq!(s.get("cluster.c5.update_no_rebuild"), Some(&1));
    assert_eq!(s.get("cluster.c1.update_no_rebuild"), Some(&0));
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Milliseconds since `t`.
fn ms_since(t: std::time::Instant) -> u128 {
    t.elapsed().as_millis()
}

/// The scale figure (not part of the suite; `bench/xds_scale.sh` runs it on a release build):
/// `XDS_SCALE_N` (default 1000) EDS clusters of 20 endpoints each pushed at once over ADS, then
/// one endpoint of one cluster moved to another upstream; for each proxy on the same pushes: the
/// longest any response of the push took from the wire to its ACK, the time from the push's last
/// response on the wire until a request routed to the changed cluster sees the change (asked once
/// the ACKs are in), and its RSS. One `SCALE` line per proxy and step.
#[test]
#[ignore]
fn scale_clusters_pushed_at_once() {
    let Some(bin) = binary_or_skip("scale_clusters_pushed_at_once") else { return };
    let n: usize = std::env::var("XDS_SCALE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let hosts: Vec<&TestUpstream> = (0..20).map(|_| &a).collect();
    let mut moved = hosts.clone();
    moved[0] = &b;
    let server = XdsServer::start();
    // Every cluster's 20 endpoints are upstream a; in version 2 one endpoint of c7 is upstream b.
    let changed = 7.min(n - 1);
    let target = format!("c{changed}");
    let world = |port: u16, version: usize| {
        let clusters: Vec<Value> = (0..n).map(|i| cluster(&format!("c{i}"))).collect();
        let mut cla: Vec<Value> = (0..n).map(|i| endpoints(&format!("c{i}"), &hosts)).collect();
        if version == 2 {
            cla[changed] = endpoints(&target, &moved);
        }
        vec![(CDS, clusters), (EDS, cla), (LDS, vec![listener(port)]), (RDS, vec![routes(&[("/", &target)])])]
    };
    let skiff_port = free_port();
    let skiff = Skiff::start(&bootstrap(server.addr, "skiff", free_port()), &[]);
    let dir = scratch_dir("xds-grpc-scale");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "0", vec![(LDS, vec![listener(port)]), (RDS, vec![routes(&[("/", "none")])])]);
        bootstrap(server.addr, "envoy", admin)
    });
    let proxies = [
        ("skiff", skiff.child.id(), SocketAddr::from(([127, 0, 0, 1], skiff_port))),
        ("envoy", envoy.child.id(), envoy.listener),
    ];
    for (version, step, sees) in [(1, "push", "200 a"), (2, "one_endpoint", "200 b")] {
        let v = version.to_string();
        for (node, pid, listener) in proxies {
            let before = rss_kib(pid);
            let resources = world(listener.port(), version);
            server.push(node, &v, resources);
            for type_url in [EDS, CDS, LDS, RDS] {
                assert!(server.wait_ack(node, type_url, &v, Duration::from_secs(300)), "{node}: no ACK");
            }
            // Per type, from its response on the wire to its ACK (the server's own work of turning
            // JSON into protobuf between two responses is not the proxy's); the slowest type.
            let at = |t: &&str| Some((server.sent_at(node, t, &v)?, server.acked_at(node, t, &v)?));
            let times: Vec<_> = [CDS, EDS, LDS, RDS].iter().filter_map(at).collect();
            let acked = times.iter().map(|(s, a)| a.saturating_duration_since(*s)).max().expect("acked");
            let sent = times.iter().map(|(s, _)| *s).max().expect("sent");
            // Round robin over 20 endpoints per shard: b answers within a few dozen requests.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while outcome(listener, "/") != sees {
                assert!(std::time::Instant::now() < deadline, "{node}: never served \"{sees}\"");
            }
            let served = ms_since(sent);
            let acked = acked.as_millis();
            eprintln!(
                "SCALE n={n} step={step} proxy={node} ack_ms={acked} serve_ms={served} rss_before_mib={} rss_after_mib={}",
                before / 1024,
                rss_kib(pid) / 1024
            );
        }
    }
}

#[test]
fn rest_polling_follows_a_cluster_change_and_nacks_as_envoy_does() {
    let Some(bin) = binary_or_skip("rest_polling_follows_a_cluster_change_and_nacks_as_envoy_does") else {
        return;
    };
    let (b, c) = (TestUpstream::echo_named("b"), TestUpstream::echo_named("c"));
    let server = XdsServer::start();
    // Clusters by REST polling (every 0.2 s), the rest over the aggregated stream.
    let rest = |node: &str, admin: u16| {
        bootstrap(server.addr, node, admin).replace(
            "  cds_config:\n    resource_api_version: V3\n    ads: {}\n",
            "  cds_config:\n    resource_api_version: V3\n    api_config_source:\n      api_type: REST\n      transport_api_version: V3\n      cluster_names: [xds_cluster]\n      refresh_delay: 0.2s\n",
        )
    };
    let world = |port: u16, version: u8| {
        let mut clusters = vec![cluster("b"), cluster("c")];
        if version == 3 {
            let mut bad =
                json!({"@type": CDS, "name": "bad", "type": "LOGICAL_DNS", "connect_timeout": "1s"});
            bad["load_assignment"] = endpoints("bad", &[&b, &c]);
            bad["load_assignment"].as_object_mut().map(|m| m.remove("@type"));
            clusters.push(bad);
        }
        let route = if version == 1 { "b" } else { "c" };
        vec![
            (CDS, clusters),
            (EDS, vec![endpoints("b", &[&b]), endpoints("c", &[&c])]),
            (LDS, vec![listener(port)]),
            (RDS, vec![routes(&[("/", route)])]),
        ]
    };
    let skiff_port = free_port();
    server.push("skiff", "1", world(skiff_port, 1));
    let _skiff = Skiff::start(&rest("skiff", free_port()), &[]);
    let dir = scratch_dir("xds-rest-envoy");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", world(port, 1));
        rest("envoy", admin)
    });
    let skiff_addr = SocketAddr::from(([127, 0, 0, 1], skiff_port));
    let proxies = [("skiff", skiff_addr), ("envoy", envoy.listener)];
    for (name, addr) in proxies {
        assert!(eventually(LIMIT, || outcome(addr, "/") == "200 b"), "{name}: {}", outcome(addr, "/"));
    }
    server.push("skiff", "2", world(skiff_port, 2));
    server.push("envoy", "2", world(envoy.listener.port(), 2));
    for (name, addr) in proxies {
        assert!(eventually(LIMIT, || outcome(addr, "/") == "200 c"), "{name}: {}", outcome(addr, "/"));
        assert!(server.wait_ack(name, CDS, "2", LIMIT), "{name}: CDS 2 not acked");
    }
    server.push("skiff", "3", world(skiff_port, 3));
    server.push("envoy", "3", world(envoy.listener.port(), 3));
    // skiff NACKs with the reason in error_detail; Envoy's REST client only keeps asking with
    // the version it accepted. Both keep serving version 2.
    let nack = server.wait_nack("skiff", CDS, LIMIT).expect("skiff: a NACK");
    assert_eq!((nack.service, nack.version_info.as_str()), ("rest", "2"));
    assert!(nack.error.unwrap_or_default().contains("LOGICAL_DNS"));
    std::thread::sleep(Duration::from_millis(600));
    for (name, addr) in proxies {
        let last =
            server.seen().into_iter().rfind(|s| s.node_id == name && s.service == "rest").expect("a poll");
        assert_eq!(last.version_info, "2", "{name}: still on version 2");
        assert_eq!(outcome(addr, "/"), "200 c", "{name}");
    }
    let polls = server.seen().iter().filter(|s| s.node_id == "skiff" && s.service == "rest").count();
    assert!(polls >= 3, "skiff polled {polls} times");
}

/// The `/ready` answers over `span`, every 50 ms, with consecutive repeats folded and the time of
/// each change since `start`.
fn ready_states(admin: SocketAddr, start: std::time::Instant, span: Duration) -> Vec<(String, Duration)> {
    let mut seen: Vec<(String, Duration)> = Vec::new();
    while start.elapsed() < span {
        if let Some((status, body)) = admin_get(admin, "/ready") {
            let state = format!("{status} {}", body.trim());
            if seen.last().is_none_or(|(last, _)| *last != state) {
                seen.push((state, start.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// Server init, as Envoy's: with a management server that never answers, `/ready` is 503
/// PRE_INITIALIZING while the clusters are awaited, 503 INITIALIZING while the listeners are
/// (their `initial_fetch_timeout` counting from the end of the clusters' wait), then 200 LIVE.
/// The kubelet's readiness probe on `/ready` keeps such a sidecar out of its Service until then.
#[test]
fn ready_waits_for_the_first_fetch_as_envoy_does() {
    let Some(bin) = binary_or_skip("ready_waits_for_the_first_fetch_as_envoy_does") else { return };
    let silent = free_port(); // nothing listens: every stream attempt fails
    let config = |admin: u16| {
        bootstrap(SocketAddr::from(([127, 0, 0, 1], silent)), "init", admin)
            .replace("    ads: {}\n", "    ads: {}\n    initial_fetch_timeout: 1s\n")
    };
    let dir = scratch_dir("xds-grpc-init");
    let (skiff_admin, envoy_admin) = (free_port(), free_port());
    std::fs::write(dir.join("envoy.yaml"), config(envoy_admin)).expect("write the config");
    let base_id = (std::process::id() % 100_000) * 100 + 99;
    let start = std::time::Instant::now();
    let mut envoy = std::process::Command::new(&bin)
        .arg("-c")
        .arg(dir.join("envoy.yaml"))
        .args(["--base-id", &base_id.to_string(), "--concurrency", "1", "-l", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn envoy");
    let skiff = Skiff::start(&config(skiff_admin), &[]);
    let span = Duration::from_millis(3500);
    let admins = [
        ("skiff", SocketAddr::from(([127, 0, 0, 1], skiff_admin))),
        ("envoy", SocketAddr::from(([127, 0, 0, 1], envoy_admin))),
    ];
    let seen: Vec<Vec<(String, Duration)>> = std::thread::scope(|s| {
        let polls: Vec<_> =
            admins.iter().map(|(_, admin)| s.spawn(move || ready_states(*admin, start, span))).collect();
        polls.into_iter().map(|p| p.join().expect("poll")).collect()
    });
    let _ = envoy.kill();
    let _ = envoy.wait();
    for ((name, _), seen) in admins.iter().zip(&seen) {
        let states: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["503 PRE_INITIALIZING", "503 INITIALIZING", "200 LIVE"],
            "{name}: {seen:?}\n{}",
            skiff.log()
        );
        // Each wait is the one-second initial_fetch_timeout (started with the process; loose
        // bounds: the two processes start a few hundred ms apart on a busy machine).
        let (init, live) = (seen[1].1, seen[2].1);
        assert!(
            live - init > Duration::from_millis(600),
            "{name}: listeners waited their own timeout: {seen:?}"
        );
    }
    let stats = stats(admins[0].1);
    assert_eq!(
        (stats.get("server.live"), stats.get("server.state")),
        (Some(&1), Some(&0)),
        "skiff once LIVE"
    );
}

#[test]
fn an_rds_route_to_a_cluster_not_there_yet_is_accepted_and_answers_503_nc_as_in_envoy() {
    let Some(bin) = binary_or_skip("an_rds_route_to_a_cluster_not_there_yet") else { return };
    let (b, later) = (TestUpstream::echo_named("b"), TestUpstream::echo_named("later"));
    let server = XdsServer::start();
    // 1: /later routes to a cluster the server has not sent; 2: it arrives; 3: a route
    // configuration that asks for its clusters to be checked names one that does not exist.
    let world = |port: u16, version: u8| {
        let mut clusters = vec![cluster("b")];
        let mut assignments = vec![endpoints("b", &[&b])];
        if version >= 2 {
            clusters.push(cluster("later"));
            assignments.push(endpoints("later", &[&later]));
        }
        let mut table = routes(&[("/later", "later"), ("/", "b")]);
        if version == 3 {
            table = routes(&[("/later", "later"), ("/gone", "nowhere"), ("/", "b")]);
            table["validate_clusters"] = json!(true);
        }
        vec![(CDS, clusters), (EDS, assignments), (LDS, vec![listener(port)]), (RDS, vec![table])]
    };
    let (skiff_port, skiff_admin) = (free_port(), free_port());
    server.push("skiff", "1", world(skiff_port, 1));
    let skiff = Skiff::start(&bootstrap(server.addr, "skiff", skiff_admin), &[]);
    let dir = scratch_dir("xds-grpc-later");
    let envoy = Envoy::start(&bin, &dir, |port, admin| {
        server.push("envoy", "1", world(port, 1));
        bootstrap(server.addr, "envoy", admin)
    });
    let skiff_addr = SocketAddr::from(([127, 0, 0, 1], skiff_port));
    let proxies = [
        ("skiff", skiff_addr, skiff_port, SocketAddr::from(([127, 0, 0, 1], skiff_admin))),
        ("envoy", envoy.listener, envoy.listener.port(), envoy.admin),
    ];
    for (name, addr, _, admin) in proxies {
        assert!(server.wait_ack(name, RDS, "1", LIMIT), "{name}: RDS 1 not acked\n{}", skiff.log());
        assert!(eventually(LIMIT, || outcome(addr, "/") == "200 b"), "{name}");
        assert_eq!(outcome(addr, "/later"), "503 -", "{name}");
        assert_eq!(stats(admin).get("http.ingress_http.no_cluster"), Some(&1), "{name}: NC");
    }
    for (name, _, port, _) in proxies {
        server.push(name, "2", world(port, 2));
    }
    for (name, addr, _, _) in proxies {
        assert!(eventually(LIMIT, || outcome(addr, "/later") == "200 later"), "{name}");
    }
    for (name, _, port, _) in proxies {
        server.push(name, "3", world(port, 3));
    }
    for (name, addr, _, _) in proxies {
        let nack = server.wait_nack(name, RDS, LIMIT).unwrap_or_else(|| panic!("{name}: no NACK"));
        let error = nack.error.unwrap_or_default();
        assert!(error.contains("nowhere"), "{name}: {error}");
        assert_eq!(outcome(addr, "/later"), "200 later", "{name}");
    }
}
