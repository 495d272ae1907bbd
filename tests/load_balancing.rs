//! Load balancing as a client sees it: LEAST_REQUEST's `choice_count` and `active_request_bias`,
//! locality-weighted balancing (and Envoy's `locality-load-balancing` example, loaded unchanged and
//! run on loopback upstreams as its README runs it), and the cookie hash policy that generates its
//! cookie. One shard, so the active-request counts skiff balances by are the ones the test made.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/breakers.rs"]
mod breakers;

#[path = "support/lb.rs"]
mod lb;

use lb::{
    cluster, cookie_value, example_services, locality_example_on, percent, spread, wait_checked, Service,
    STEP4,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{Client, Reply, Seen, Skiff, TestUpstream};

/// An upstream answering `name`; on `/slow` only after `hold` (a request kept active).
fn upstream(name: &str, hold: Duration) -> TestUpstream {
    let name = name.to_string();
    TestUpstream::start(Arc::new(move |s: &Seen| {
        if s.path.starts_with("/slow") {
            std::thread::sleep(hold);
        }
        Reply::ok(&name)
    }))
}

fn skiff_with(cluster: &str, route_extra: &str) -> Skiff {
    Skiff::start(&lb::config(0, 0, cluster, route_extra), &["--concurrency", "1"])
}

/// `n` sequential requests for `path` on one connection, counted by answer.
fn counts(addr: SocketAddr, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut c = Client::connect(addr);
    let mut out = BTreeMap::new();
    for _ in 0..n {
        *out.entry(c.get(path).text()).or_insert(0) += 1;
    }
    out
}

/// Starts `/slow` requests one after another (each on its own connection, left in flight) until
/// `busy` has `want` of them: requests that went to the other host come back at once.
fn hold_on(addr: SocketAddr, busy: &TestUpstream, want: usize) -> Vec<std::thread::JoinHandle<()>> {
    let mut held = Vec::new();
    for _ in 0..100 {
        if busy.count() >= want {
            break;
        }
        let before = busy.count();
        let request = std::thread::spawn(move || {
            let _ = Client::connect(addr).get("/slow");
        });
        // Until it reached the busy host or was answered elsewhere.
        support::eventually(Duration::from_secs(2), || busy.count() > before || request.is_finished());
        held.push(request);
    }
    assert!(busy.count() >= want, "could not hold {want} requests on the busy host");
    held
}

#[test]
fn least_request_choice_count_draws_enough_hosts_to_avoid_a_busy_one() {
    let busy = upstream("busy", Duration::from_secs(3));
    let idle = upstream("idle", Duration::ZERO);
    let lr = "least_request_lb_config: { choice_count: 20 }\n";
    let sk =
        skiff_with(&cluster("LEAST_REQUEST", lr, &[(0, vec![(busy.addr, 1, ""), (idle.addr, 1, "")])]), "");
    let addr = sk.listener("main");
    let _held = hold_on(addr, &busy, 1);
    // Equal weights: the fewest-active of 20 random draws; missing the idle host 20 times in a row
    // happens once in a million.
    let seen = counts(addr, "/", 30);
    assert_eq!(seen, BTreeMap::from([("idle".to_string(), 30)]));
}

#[test]
fn weighted_least_request_scales_a_busy_hosts_weight_by_active_request_bias() {
    // Weights 3:1. Requests held on the heavy host lower its weight by (active + 1)^bias: with
    // bias 0 the split stays 3:1 (Envoy's EDF round robin), with bias 1 and 4 held it drops to
    // 3/5 against 1, so the light host takes most.
    for (bias, want) in [("0.0", 28..=32usize), ("1.0", 5..=20)] {
        let busy = upstream("heavy", Duration::from_secs(4));
        let light = upstream("light", Duration::ZERO);
        let lr = format!("least_request_lb_config: {{ active_request_bias: {{ default_value: {bias}, runtime_key: x }} }}\n");
        let sk = skiff_with(
            &cluster("LEAST_REQUEST", &lr, &[(0, vec![(busy.addr, 3, ""), (light.addr, 1, "")])]),
            "",
        );
        let addr = sk.listener("main");
        let _held = hold_on(addr, &busy, 4);
        let seen = counts(addr, "/", 40);
        let heavy = seen.get("heavy").copied().unwrap_or(0);
        assert!(want.contains(&heavy), "bias {bias}: heavy took {heavy} of 40 ({seen:?})");
    }
}

#[test]
fn weighted_least_request_without_load_is_weighted_round_robin() {
    let a = upstream("a", Duration::ZERO);
    let b = upstream("b", Duration::ZERO);
    let sk = skiff_with(&cluster("LEAST_REQUEST", "", &[(0, vec![(a.addr, 3, ""), (b.addr, 1, "")])]), "");
    let seen = counts(sk.listener("main"), "/", 40);
    assert_eq!(seen, BTreeMap::from([("a".to_string(), 30), ("b".to_string(), 10)]));
}

#[test]
fn localities_take_traffic_by_weight_scaled_by_their_healthy_share() {
    let ups: Vec<TestUpstream> =
        ["a1", "a2", "b1", "b2"].iter().map(|n| upstream(n, Duration::ZERO)).collect();
    let weighted = "common_lb_config: { locality_weighted_lb_config: {} }\n";
    let make = |b2_health: &str| {
        cluster(
            "ROUND_ROBIN",
            weighted,
            &[
                (1, vec![(ups[0].addr, 1, ""), (ups[1].addr, 1, "")]),
                (3, vec![(ups[2].addr, 1, ""), (ups[3].addr, 1, b2_health)]),
            ],
        )
    };
    // Locality b (weight 3) takes 3 of 4 requests; round robin inside each locality.
    let sk = skiff_with(&make(""), "");
    let seen = counts(sk.listener("main"), "/", 80);
    let want: BTreeMap<String, usize> =
        [("a1", 10), ("a2", 10), ("b1", 30), ("b2", 30)].map(|(n, c)| (n.to_string(), c)).into();
    assert_eq!(seen, want);
    drop(sk);
    // b at half health: 3 × min(1, 1.4 × 1/2) = 2.1 against 1; b2 gets nothing.
    let sk = skiff_with(&make("UNHEALTHY"), "");
    let seen = counts(sk.listener("main"), "/", 310);
    let want: BTreeMap<String, usize> =
        [("a1", 50), ("a2", 50), ("b1", 210)].map(|(n, c)| (n.to_string(), c)).into();
    assert_eq!(seen, want);
}

#[test]
fn a_locality_without_weight_takes_no_traffic_and_unweighted_clusters_ignore_locality_weights() {
    let ups: Vec<TestUpstream> = ["a", "b"].iter().map(|n| upstream(n, Duration::ZERO)).collect();
    let locs = [(0, vec![(ups[0].addr, 1, "")]), (2, vec![(ups[1].addr, 1, "")])];
    let sk =
        skiff_with(&cluster("RANDOM", "common_lb_config: { locality_weighted_lb_config: {} }\n", &locs), "");
    assert_eq!(counts(sk.listener("main"), "/", 20), BTreeMap::from([("b".to_string(), 20)]));
    drop(sk);
    // Without locality_weighted_lb_config the locality weights are not read: round robin over hosts.
    let sk = skiff_with(&cluster("ROUND_ROBIN", "", &locs), "");
    assert_eq!(
        counts(sk.listener("main"), "/", 20),
        BTreeMap::from([("a".to_string(), 10), ("b".to_string(), 10)])
    );
}

/// Envoy's `locality-load-balancing` example, its steps as its README gives them: the config file
/// unchanged but for the docker names (and the scaled-up replicas) replaced by loopback upstreams.
#[test]
fn envoys_locality_example_behaves_as_its_readme_says() {
    let config = lb::locality_example();
    let loaded = skiff::config::load_str(&config, "envoy.yaml").expect("the example loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    // Step 2: every locality healthy: all requests to local-1 (priority 0).
    let svc = example_services(1, &[true; 4]);
    let all: Vec<&Service> = svc.iter().collect();
    let sk = Skiff::start(&locality_example_on(0, 0, &all), &["--concurrency", "1"]);
    let (addr, admin) = (sk.listener("backend"), sk.admin());
    assert!(wait_checked(admin, &all), "backends never became healthy");
    let seen = spread(addr, "/", 100);
    assert_eq!(seen, BTreeMap::from([("Hello from backend-local-1!".to_string(), 100)]));

    // local-1 down: local-2 and remote-1 (both priority 1) split the traffic 50:50.
    svc[0].set_healthy(false);
    assert!(wait_checked(admin, &all[..1]), "local-1 never failed its check");
    let seen = spread(addr, "/", 100);
    assert_eq!(
        (percent(&seen, "backend-local-2"), percent(&seen, "backend-remote-1")),
        (50.0, 50.0),
        "{seen:?}"
    );

    // local-2 down too: priority 1 is 50 % healthy, so 70 % of the load (all on remote-1) and
    // priority 2 (remote-2) the rest.
    svc[1].set_healthy(false);
    assert!(wait_checked(admin, &all[..2]), "local-2 never failed its check");
    let seen = spread(addr, "/", 200);
    // Priority is drawn at random: Binomial(200, 0.7), sd 3.2 % of the requests; ±4 sd.
    let remote1 = percent(&seen, "backend-remote-1");
    assert!((57.0..=83.0).contains(&remote1), "~70 % to remote-1 expected: {seen:?}");
    assert_eq!(percent(&seen, "backend-remote-1") + percent(&seen, "backend-remote-2"), 100.0, "{seen:?}");
    drop(sk);

    // Step 4: local-1 scaled to 5 replicas, 4 of them down: priority 0 is 20 % healthy, so
    // 140 × 1/5 = 28 % of the load; priority 1's two localities share the rest.
    let svc = example_services(5, &STEP4);
    let all: Vec<&Service> = svc.iter().collect();
    let sk = Skiff::start(&locality_example_on(0, 0, &all), &["--concurrency", "1"]);
    let (addr, admin) = (sk.listener("backend"), sk.admin());
    assert!(wait_checked(admin, &all), "the replicas' checks never settled");
    let seen = spread(addr, "/", 200);
    let local1 = percent(&seen, "backend-local-1");
    assert!((15.0..=41.0).contains(&local1), "~28 % to local-1 expected: {seen:?}");
    let (l2, r1) = (percent(&seen, "backend-local-2"), percent(&seen, "backend-remote-1"));
    assert!((l2 - r1).abs() <= 1.0, "local-2 and remote-1 alternate: {seen:?}");

    // Every priority-1 host down: priority 0 keeps its 28 %, priority 2 (remote-2) takes the rest.
    svc[5].set_healthy(false);
    svc[6].set_healthy(false);
    assert!(wait_checked(admin, &all[5..7]), "priority 1 never failed its checks");
    let seen = spread(addr, "/", 200);
    let local1 = percent(&seen, "backend-local-1");
    assert!((15.0..=41.0).contains(&local1), "~28 % to local-1 expected: {seen:?}");
    assert_eq!(local1 + percent(&seen, "backend-remote-2"), 100.0, "{seen:?}");
}

#[test]
fn a_cookie_policy_with_ttl_generates_the_cookie_and_its_requests_stick_to_one_host() {
    let ups: Vec<TestUpstream> = ["a", "b", "c"].iter().map(|n| upstream(n, Duration::ZERO)).collect();
    let policy = "hash_policy:\n  - cookie:\n      name: session\n      ttl: 3600s\n      path: /app\n      attributes: [{ name: SameSite, value: Lax }, { name: Secure }]\n";
    let hosts: Vec<(SocketAddr, u32, &str)> = ups.iter().map(|u| (u.addr, 1, "")).collect();
    let sk = skiff_with(&cluster("RING_HASH", "", &[(0, hosts.clone())]), policy);
    let addr = sk.listener("main");

    let mut c = Client::connect(addr);
    let local = c.stream().local_addr().expect("local addr");
    let first = c.get("/");
    let value = cookie_value(local, addr);
    assert_eq!(
        first.header("set-cookie"),
        Some(
            format!("session=\"{value}\"; Max-Age=3600; Path=/app; SameSite=Lax; Secure; HttpOnly").as_str()
        )
    );
    // Requests carrying it, from any connection, land where the first did, and get no new cookie.
    for _ in 0..10 {
        let r = support::get_host(addr, "test", "/", &[("cookie", &format!("other=1; session=\"{value}\""))]);
        assert_eq!(r.text(), first.text());
        assert_eq!(r.header("set-cookie"), None);
    }
    // The same connection generates the same value again.
    assert_eq!(c.get("/").header("set-cookie"), first.header("set-cookie"));
    drop(sk);

    // A ROUND_ROBIN cluster asks for no hash: no cookie is generated (as in Envoy).
    let sk = skiff_with(&cluster("ROUND_ROBIN", "", &[(0, hosts)]), policy);
    assert_eq!(support::get(sk.listener("main"), "/").header("set-cookie"), None);
}

#[test]
fn a_session_cookie_has_no_max_age_and_a_local_reply_sets_no_cookie() {
    let policy = "hash_policy:\n  - cookie: { name: s, ttl: 0s }\n";
    let live = upstream("a", Duration::ZERO);
    let sk = skiff_with(&cluster("MAGLEV", "", &[(0, vec![(live.addr, 1, "")])]), policy);
    let addr = sk.listener("main");
    let mut c = Client::connect(addr);
    let local = c.stream().local_addr().expect("local addr");
    let r = c.get("/");
    assert_eq!(
        r.header("set-cookie"),
        Some(format!("s=\"{}\"; HttpOnly", cookie_value(local, addr)).as_str())
    );
    drop(sk);
    // No upstream answered (503 from the router): Envoy adds the cookie to upstream responses only.
    let sk = skiff_with(&cluster("MAGLEV", "", &[(0, vec![(support::dead_port(), 1, "")])]), policy);
    let r = support::get(sk.listener("main"), "/");
    assert_eq!((r.status, r.header("set-cookie")), (503, None));
}

#[test]
fn load_balancing_config_mistakes_are_refused_or_warned_with_their_place() {
    let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let load = |cluster_yaml: String, route: &str| {
        let routes = format!(
            "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: {{ prefix: / }}\n        route:\n          cluster: backend\n{}",
            support::indent(route, 10)
        );
        let yaml =
            support::bootstrap_yaml(&[support::listener_yaml("main", "127.0.0.1", &routes)], &[cluster_yaml]);
        skiff::config::load_str(&yaml, "t.yaml")
    };
    let one = |lb: &str, extra: &str| cluster(lb, extra, &[(1, vec![(a, 1, "")])]);
    let refused = |r: Result<skiff::config::Loaded, skiff::config::ConfigError>| match r {
        Ok(_) => String::from("(loaded)"),
        Err(e) => e.to_string(),
    };
    let e = refused(load(one("LEAST_REQUEST", "least_request_lb_config: { choice_count: 1 }\n"), ""));
    assert!(
        e.contains("clusters[0].least_request_lb_config.choice_count") && e.contains("at least 2"),
        "{e}"
    );
    let zero = one("ROUND_ROBIN", "")
        .replace("\n        load_balancing_weight: 1\n", "\n        load_balancing_weight: 0\n");
    let e = refused(load(zero, ""));
    assert!(e.contains("endpoints[0].load_balancing_weight") && e.contains("at least 1"), "{e}");
    let bad_path = "hash_policy: [{ cookie: { name: s, ttl: 1s, path: \"a\\nb\" } }]\n";
    let e = refused(load(one("RING_HASH", ""), bad_path));
    assert!(e.contains("cookie.path") && e.contains("CR, LF or NUL"), "{e}");

    let warnings = |lb: &str, extra: &str| load(one(lb, extra), "").expect("loads").warnings.join("\n");
    let w = warnings(
        "LEAST_REQUEST",
        "least_request_lb_config: { active_request_bias: { default_value: -1, runtime_key: x }, slow_start_config: {} }\n",
    );
    assert!(
        w.contains("least_request_lb_config.active_request_bias: active_request_bias must be a number at least 0; using 1.0"),
        "{w}"
    );
    assert!(w.contains("least_request_lb_config.slow_start_config"), "{w}");
    let w = warnings("MAGLEV", "common_lb_config: { locality_weighted_lb_config: {} }\n");
    assert!(
        w.contains("common_lb_config.locality_weighted_lb_config") && w.contains("RING_HASH and MAGLEV"),
        "{w}"
    );
    assert_eq!(warnings("ROUND_ROBIN", "common_lb_config: { locality_weighted_lb_config: {} }\n"), "");
    assert_eq!(warnings("LEAST_REQUEST", "least_request_lb_config: { choice_count: 5 }\n"), "");
}
