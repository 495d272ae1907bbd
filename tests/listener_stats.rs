//! `listener.<address>.*` and `listener.<address>.worker_<n>.*`: connections per listener and each
//! shard's share of them, named as Envoy names them (checked against Envoy 1.40's /stats and
//! /stats/prometheus by hand: same names, same tags).

mod support;

use support::*;

fn stats(skiff: &Skiff, path: &str) -> String {
    get(skiff.admin(), path).text()
}

#[test]
fn connections_are_counted_per_listener_and_per_shard() {
    let up = TestUpstream::echo();
    let skiff = Skiff::start(&with_admin(&simple_config(&[up.addr])), &["--concurrency", "2"]);
    let addr = skiff.listener("main");
    for _ in 0..6 {
        assert_eq!(get(addr, "/").status, 200);
    }
    let open = Client::connect(addr);
    let name = format!("listener.127.0.0.1_{}", addr.port());
    let ok = eventually(std::time::Duration::from_secs(3), || {
        let text = stats(&skiff, "/stats");
        stat_in(&text, &format!("{name}.downstream_cx_total")) == Some(7)
            && stat_in(&text, &format!("{name}.downstream_cx_destroy")) == Some(6)
            && stat_in(&text, &format!("{name}.downstream_cx_active")) == Some(1)
    });
    let text = stats(&skiff, "/stats");
    assert!(ok, "listener totals:\n{text}");
    let per_shard: Vec<u64> = (0..2)
        .map(|n| stat_in(&text, &format!("{name}.worker_{n}.downstream_cx_total")).unwrap_or(0))
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), 7, "the shards' shares add up:\n{text}");
    let prometheus = stats(&skiff, "/stats/prometheus");
    let address = format!("envoy_listener_address=\"127.0.0.1_{}\"", addr.port());
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("envoy_listener_downstream_cx_total{") && l.contains(&address)),
        "{prometheus}"
    );
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"")
                && l.contains(&address)),
        "{prometheus}"
    );
    drop(open);
}
