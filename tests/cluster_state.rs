//! What a shard keeps per cluster, seen from outside: load-balancer positions that survive a
//! config reload which leaves a cluster's hosts alone, and upstream connections that belong to one
//! cluster (two clusters on one address never share a connection or each other's stats).
mod support;

use std::time::Duration;
use support::*;

#[test]
fn round_robin_goes_on_where_it_was_after_a_reload_that_keeps_the_hosts() {
    let a = TestUpstream::echo_named("a");
    let b = TestUpstream::echo_named("b");
    let routes = |path: &str| {
        format!(
            "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - {{ match: {{ prefix: \"{path}\" }}, route: {{ cluster: c }} }}\n"
        )
    };
    let cluster = static_cluster_yaml("c", "ROUND_ROBIN", &[(a.addr, 1), (b.addr, 1)]);
    let yaml = |path: &str| {
        bootstrap_yaml(&[listener_yaml("main", "127.0.0.1", &routes(path))], std::slice::from_ref(&cluster))
    };
    let skiff = Skiff::start(&yaml("/"), &["--concurrency", "1"]);
    let addr = skiff.listener("main");
    let first = get(addr, "/x").first_line();
    // A reload that changes a route but not the cluster's hosts.
    skiff.rewrite_config(&yaml("/x"));
    assert!(skiff.wait_for_log("generation 2", Duration::from_secs(10)), "{}", skiff.log());
    let second = get(addr, "/x").first_line();
    assert_ne!(first, second, "round robin restarted from the first host after the reload");
    let third = get(addr, "/x").first_line();
    assert_eq!(first, third);
}

#[test]
fn two_clusters_on_one_address_keep_their_own_connections_and_stats() {
    let up = TestUpstream::echo_named("shared");
    let routes = "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - { match: { prefix: \"/x\" }, route: { cluster: x } }\n      - { match: { prefix: \"/y\" }, route: { cluster: y } }\n";
    let yaml = with_admin(&bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", routes)],
        &[
            static_cluster_yaml("x", "ROUND_ROBIN", &[(up.addr, 1)]),
            static_cluster_yaml("y", "ROUND_ROBIN", &[(up.addr, 1)]),
        ],
    ));
    let skiff = Skiff::start(&yaml, &["--concurrency", "1"]);
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    for path in ["/x", "/y", "/x", "/y"] {
        assert_eq!(c.get(path).status, 200);
    }
    let admin = skiff.admin();
    for cluster in ["x", "y"] {
        assert_eq!(
            stat(admin, &format!("cluster.{cluster}.upstream_cx_total")),
            Some(1),
            "cluster {cluster}"
        );
        assert_eq!(
            stat(admin, &format!("cluster.{cluster}.upstream_rq_total")),
            Some(2),
            "cluster {cluster}"
        );
    }
}
