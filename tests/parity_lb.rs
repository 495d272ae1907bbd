//! Envoy parity for load balancing: the same v3 config and the same requests go through the real
//! Envoy and through skiff (one worker / one shard each), in front of the same upstreams (run one
//! after the other). Locality weighting, priority spill-over and weighted LEAST_REQUEST are
//! compared by how requests spread (exactly where both proxies are deterministic, within a
//! statistical margin where they draw at random); the generated hash cookie by its exact
//! `set-cookie` (its value derived from each proxy's connection) and by the host a cookie lands on.
//! Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under CI and skip elsewhere.

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
use std::path::Path;
use support::{scratch_dir, Client, Skiff, TestUpstream};

/// Runs `observe` against Envoy, then against skiff, each started on `make(port, admin)` (skiff's
/// listener is `listener`); returns (skiff's, Envoy's) observations, or None when Envoy is missing.
fn both<T>(
    name: &str,
    listener: &str,
    make: impl Fn(u16, u16) -> String,
    observe: impl Fn(SocketAddr, SocketAddr) -> T,
) -> Option<(T, T)> {
    let bin = envoy::binary_or_skip(name)?;
    let from_envoy = {
        let e = envoy::Envoy::start(&bin, &scratch_dir("parity-lb-envoy"), &make);
        observe(e.listener, e.admin)
    };
    let from_skiff = {
        let sk = Skiff::start(&make(0, 0), &["--concurrency", "1"]);
        observe(sk.listener(listener), sk.admin())
    };
    Some((from_skiff, from_envoy))
}

fn upstreams(names: &[&str]) -> Vec<TestUpstream> {
    names.iter().map(|n| TestUpstream::named(n)).collect()
}

/// `n` sequential requests on one connection, counted by body.
fn counts(addr: SocketAddr, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut c = Client::connect(addr);
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = c.request("test", "/", headers).expect("response");
        *out.entry(r.text()).or_insert(0) += 1;
    }
    out
}

fn close(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>, margin: usize) -> bool {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.iter().all(|k| {
        let (x, y) = (a.get(*k).copied().unwrap_or(0), b.get(*k).copied().unwrap_or(0));
        x.abs_diff(y) <= margin
    })
}

/// Locality b (weight 3) at half health: 3 × min(1, 1.4 × 1/2) = 2.1 against a's 1, so b1 takes
/// 21 of 31 requests and a's two hosts share the rest by round robin.
#[test]
fn locality_weights_scaled_by_health_split_traffic_as_envoy() {
    let name = "locality_weights_scaled_by_health_split_traffic_as_envoy";
    let ups = upstreams(&["a1", "a2", "b1", "b2"]);
    let c = cluster(
        "ROUND_ROBIN",
        "common_lb_config: { locality_weighted_lb_config: {} }\n",
        &[
            (1, vec![(ups[0].addr, 1, ""), (ups[1].addr, 1, "")]),
            (3, vec![(ups[2].addr, 1, ""), (ups[3].addr, 1, "UNHEALTHY")]),
        ],
    );
    let Some((skiff, envoy)) =
        both(name, "main", |p, a| lb::config(p, a, &c, ""), |l, _| counts(l, 310, &[]))
    else {
        return;
    };
    let want: BTreeMap<String, usize> =
        [("a1", 50), ("a2", 50), ("b1", 210)].map(|(n, c)| (n.into(), c)).into();
    // Envoy's EDF and skiff's smooth round robin order the same proportions; where a run of 310
    // stops in the cycle can differ by a request or two.
    assert!(close(&envoy, &want, 3), "envoy: {envoy:?}");
    assert!(close(&skiff, &envoy, 3), "skiff {skiff:?} differs from Envoy {envoy:?}");
}

/// Entries that name no `locality` are one locality, and Envoy reads no weight from them: the
/// weights here change nothing, hosts take turns.
#[test]
fn unnamed_localities_are_one_and_unweighted_as_in_envoy() {
    let name = "unnamed_localities_are_one_and_unweighted_as_in_envoy";
    let ups = upstreams(&["a", "b", "c"]);
    let c = cluster(
        "ROUND_ROBIN",
        "common_lb_config: { locality_weighted_lb_config: {} }\n",
        &[(1, vec![(ups[0].addr, 1, "")]), (5, vec![(ups[1].addr, 1, ""), (ups[2].addr, 1, "")])],
    )
    .replace("locality: { zone: z0 }\n        ", "")
    .replace("locality: { zone: z1 }\n        ", "");
    let Some((skiff, envoy)) = both(name, "main", |p, a| lb::config(p, a, &c, ""), |l, _| counts(l, 30, &[]))
    else {
        return;
    };
    let want: BTreeMap<String, usize> = [("a", 10), ("b", 10), ("c", 10)].map(|(n, c)| (n.into(), c)).into();
    assert_eq!(envoy, want);
    assert_eq!(skiff, envoy);
}

/// Weights 3:1 and no request in flight at a pick: EDF over the weights themselves, 3 of 4.
#[test]
fn weighted_least_request_splits_by_weight_as_envoy() {
    let name = "weighted_least_request_splits_by_weight_as_envoy";
    let ups = upstreams(&["a", "b"]);
    let c = cluster(
        "LEAST_REQUEST",
        "least_request_lb_config: { choice_count: 3, active_request_bias: { default_value: 1.0, runtime_key: x } }\n",
        &[(0, vec![(ups[0].addr, 3, ""), (ups[1].addr, 1, "")])],
    );
    let Some((skiff, envoy)) = both(name, "main", |p, a| lb::config(p, a, &c, ""), |l, _| counts(l, 40, &[]))
    else {
        return;
    };
    let want: BTreeMap<String, usize> = [("a", 30), ("b", 10)].map(|(n, c)| (n.into(), c)).into();
    assert_eq!(envoy, want);
    assert_eq!(skiff, envoy);
}

/// Envoy's `locality-load-balancing` example (its file, docker names replaced by loopback
/// upstreams) at its README's step 4: local-1 scaled to 5 replicas, 4 failing their checks.
/// Priority 0 takes 140 × 1/5 = 28 %, priority 1's two localities alternate over the rest.
#[test]
fn locality_example_with_a_partly_healthy_priority_matches_envoy() {
    let name = "locality_example_with_a_partly_healthy_priority_matches_envoy";
    let svc = example_services(5, &STEP4);
    let all: Vec<&Service> = svc.iter().collect();
    let observe = |listener: SocketAddr, admin: SocketAddr| {
        assert!(wait_checked(admin, &all), "the replicas' checks never settled");
        // Envoy's load balancer sees health changes after `update_merge_window` (1 s); skiff's
        // at once.
        std::thread::sleep(std::time::Duration::from_millis(1200));
        spread(listener, "/", 200)
    };
    let Some((skiff, envoy)) = both(name, "backend", |p, a| locality_example_on(p, a, &all), observe) else {
        return;
    };
    for (who, seen) in [("skiff", &skiff), ("envoy", &envoy)] {
        // Binomial(200, 0.28): sd 3.2 % of the requests; ±4 sd.
        let local1 = percent(seen, "backend-local-1");
        assert!((15.0..=41.0).contains(&local1), "{who}: ~28 % to local-1 expected: {seen:?}");
        let (l2, r1) = (percent(seen, "backend-local-2"), percent(seen, "backend-remote-1"));
        assert!((l2 - r1).abs() <= 1.0, "{who}: local-2 and remote-1 alternate: {seen:?}");
        assert_eq!(percent(seen, "backend-remote-2"), 0.0, "{who}: {seen:?}");
    }
}

/// What a client sees of a cookie policy with `ttl`: the `set-cookie` on its first response
/// (with the connection's value replaced by `<value>` once checked), whether it comes again on a
/// request that carries the cookie, and the host each of a few fixed cookie values lands on.
#[derive(Debug, PartialEq)]
struct CookieSeen {
    set_cookie: Option<String>,
    again_with_cookie: Option<String>,
    sticky: Vec<String>,
}

#[test]
fn generated_hash_cookie_and_where_cookies_land_match_envoy() {
    let name = "generated_hash_cookie_and_where_cookies_land_match_envoy";
    let ups = upstreams(&["a", "b", "c", "d"]);
    let hosts: Vec<(SocketAddr, u32, &str)> = ups.iter().map(|u| (u.addr, 1, "")).collect();
    let c = cluster("RING_HASH", "", &[(0, hosts)]);
    let policy = "hash_policy:\n  - cookie:\n      name: session\n      ttl: 1800.9s\n      path: /shop\n      attributes: [{ name: SameSite, value: Strict }, { name: Partitioned }]\n";
    let observe = |listener: SocketAddr, _admin: SocketAddr| {
        let mut c = Client::connect(listener);
        let local = c.stream().local_addr().expect("local addr");
        let first = c.request("test", "/", &[]).expect("response");
        let value = cookie_value(local, listener);
        let set_cookie = first.header("set-cookie").map(|v| v.replace(&value, "<value>"));
        let carried = format!("session={value}");
        let again = c.request("test", "/", &[("cookie", &carried)]).expect("response");
        let sticky = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
            .iter()
            .map(|v| {
                let cookie = format!("session=\"{v}\"");
                let answers: Vec<String> = (0..3)
                    .map(|_| c.request("test", "/", &[("cookie", &cookie)]).expect("response").text())
                    .collect();
                answers.join(",")
            })
            .collect();
        CookieSeen { set_cookie, again_with_cookie: again.header("set-cookie").map(str::to_string), sticky }
    };
    let Some((skiff, envoy)) = both(name, "main", |p, a| lb::config(p, a, &c, policy), observe) else {
        return;
    };
    assert_eq!(
        envoy.set_cookie.as_deref(),
        Some("session=\"<value>\"; Max-Age=1800; Path=/shop; SameSite=Strict; Partitioned; HttpOnly")
    );
    assert_eq!(skiff, envoy, "skiff (left) differs from Envoy (right)");
}

/// The shipped config loads in Envoy 1.40 too (skiff's load is checked with every shipped config).
#[test]
fn shipped_load_balancing_config_is_valid_in_envoy() {
    let Some(bin) = envoy::binary_or_skip("shipped_load_balancing_config_is_valid_in_envoy") else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/resilience/load-balancing.yaml");
    let out = std::process::Command::new(bin)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let loaded = skiff::config::load_file(&path).expect("skiff loads it");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}
