//! `dynamic_resources` from files (Envoy's dynamic-config-fs example, configs/xds-fs/): listeners
//! and clusters come from `DiscoveryResponse` files, a file moved into place is applied within a
//! few seconds, an invalid one is counted (`update_failure` / `update_rejected`) and logged with
//! its location while the last good resources keep serving, and `/config_dump` shows the dynamic
//! resources as Envoy does. The parity test runs the real Envoy on the same files and renames.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use envoy::{admin_get, binary_or_skip, parse_stats, Envoy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{eventually, get, indent, scratch_dir, Skiff, TestUpstream};

fn example(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/xds-fs").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example's bootstrap reading its files from `dir`, admin on `admin_port`.
fn bootstrap(dir: &Path, admin_port: u16) -> String {
    example("envoy.yaml")
        .replace("path: configs/xds-fs/", &format!("path: {}/", dir.display()))
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
        .replace("port_value: 19000", &format!("port_value: {admin_port}"))
}

/// The example's listener, on loopback port `port`.
fn lds(port: u16) -> String {
    example("lds.yaml")
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
        .replace("port_value: 10000", &format!("port_value: {port}"))
}

/// The example's cluster pointing at `upstream` (service1 in the example), as `version`.
fn cds(upstream: SocketAddr, version: &str) -> String {
    let body = example("cds.yaml")
        .replace("address: service1", &format!("address: {}", upstream.ip()))
        .replace("port_value: 8080", &format!("port_value: {}", upstream.port()));
    format!("version_info: \"{version}\"\n{body}")
}

/// A cluster file that parses but that Envoy and skiff reject: LOGICAL_DNS with two endpoints.
fn cds_invalid(version: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: example_proxy_cluster
  type: LOGICAL_DNS
  load_assignment:
    cluster_name: example_proxy_cluster
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}}}
      - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 2}}}}}}
"#
    )
}

/// A cluster file that does not parse as a DiscoveryResponse (a port that is no number).
fn cds_unparsable(version: &str) -> String {
    cds("127.0.0.1:9".parse().expect("addr"), version).replace("port_value: 9", "port_value: nope")
}

/// Writes `text` beside `path` and renames it over `path`: the update Envoy documents.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn stats(admin: SocketAddr) -> std::collections::BTreeMap<String, u64> {
    admin_get(admin, "/stats").map(|(_, b)| parse_stats(&b)).unwrap_or_default()
}

fn stat(admin: SocketAddr, name: &str) -> u64 {
    stats(admin).get(name).copied().unwrap_or(0)
}

/// The subscription stats both proxies keep (time gauges left out: they differ by nature).
fn update_stats(admin: SocketAddr) -> Vec<(String, u64)> {
    stats(admin)
        .into_iter()
        .filter(|(k, _)| {
            (k.starts_with("listener_manager.lds.") || k.starts_with("cluster_manager.cds."))
                && !k.ends_with("update_time")
                && !k.ends_with("_time_ms")
        })
        .collect()
}

fn config_dump(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = admin_get(admin, "/config_dump").expect("config_dump");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("config_dump json")
}

fn dump_part<'a>(dump: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    dump["configs"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(&format!(".{kind}"))))
        })
        .unwrap_or_else(|| panic!("no {kind} in {dump}"))
}

/// Which upstream answers `GET /` through `listener` (its name), or the status when none does.
fn served_by(listener: SocketAddr) -> String {
    let r = get(listener, "/");
    if r.status == 200 {
        r.first_line()
    } else {
        format!("status {}", r.status)
    }
}

/// Starts skiff on the example in a fresh directory: (skiff, its listener, the files' dir).
fn start_skiff(upstream: SocketAddr) -> (Skiff, SocketAddr, PathBuf) {
    let dir = scratch_dir("xds-fs");
    let port = support::free_port();
    std::fs::write(dir.join("lds.yaml"), lds(port)).expect("lds");
    std::fs::write(dir.join("cds.yaml"), cds(upstream, "v1")).expect("cds");
    let skiff = Skiff::start(&bootstrap(&dir, 0), &[]);
    let listener = skiff.listener("listener_0");
    (skiff, listener, dir)
}

#[test]
fn the_example_loads_routes_and_follows_a_renamed_cluster_file() {
    let (one, two) = (TestUpstream::echo_named("service1"), TestUpstream::echo_named("service2"));
    let (skiff, listener, dir) = start_skiff(one.addr);
    assert_eq!(served_by(listener), "service1");
    let admin = skiff.admin();
    assert_eq!(stat(admin, "cluster_manager.cds.update_success"), 1);
    assert_eq!(stat(admin, "listener_manager.lds.update_success"), 1);

    // The sandbox's step 4: the cluster now points at service2.
    replace(&dir.join("cds.yaml"), &cds(two.addr, "v2"));
    assert!(
        eventually(Duration::from_secs(5), || served_by(listener) == "service2"),
        "the renamed cds.yaml was not applied:\n{}",
        skiff.log()
    );
    assert_eq!(stat(admin, "cluster_manager.cds.update_attempt"), 2);
    assert_eq!(stat(admin, "cluster_manager.cds.update_success"), 2);
    // Envoy's gauge: xxHash64 of version_info.
    assert_eq!(stat(admin, "cluster_manager.cds.version"), xxhash64(b"v2"));

    let dump = config_dump(admin);
    let clusters = dump_part(&dump, "ClustersConfigDump");
    assert_eq!(clusters["version_info"], "v2");
    let active = &clusters["dynamic_active_clusters"][0];
    assert_eq!(active["version_info"], "v2");
    assert_eq!(active["cluster"]["name"], "example_proxy_cluster");
    let socket = &active["cluster"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    assert_eq!(socket["port_value"], two.addr.port());
    assert!(active["last_updated"].as_str().is_some_and(|t| t.ends_with('Z')), "{active}");
    assert_eq!(clusters["static_clusters"], serde_json::json!([]));
    let listeners = dump_part(&dump, "ListenersConfigDump");
    let l = &listeners["dynamic_listeners"][0];
    assert_eq!(l["name"], "listener_0");
    assert_eq!(
        l["active_state"]["listener"]["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert!(l["active_state"]["last_updated"].is_string(), "{l}");
    // Empty version_info is left out, as Envoy prints it.
    assert!(l["active_state"].get("version_info").is_none(), "{l}");
    let bootstrap = &dump_part(&dump, "BootstrapConfigDump")["bootstrap"];
    assert!(bootstrap["dynamic_resources"]["cds_config"]["path_config_source"]["path"].is_string());
    assert_eq!(bootstrap["static_resources"]["listeners"], serde_json::json!([]));
}

#[test]
fn an_invalid_update_is_counted_logged_where_it_is_and_the_last_good_one_serves() {
    let one = TestUpstream::echo_named("service1");
    let (skiff, listener, dir) = start_skiff(one.addr);
    let admin = skiff.admin();
    let cds_path = dir.join("cds.yaml");

    replace(&cds_path, &cds_invalid("v2"));
    assert!(
        eventually(Duration::from_secs(5), || stat(admin, "cluster_manager.cds.update_rejected") == 1),
        "{}",
        skiff.log()
    );
    let located =
        format!("{}:3:3: resources[0]: a LOGICAL_DNS cluster needs exactly one endpoint", cds_path.display());
    assert!(skiff.log().contains(&located), "no `{located}` in:\n{}", skiff.log());
    assert_eq!(served_by(listener), "service1");

    replace(&cds_path, &cds_unparsable("v3"));
    assert!(
        eventually(Duration::from_secs(5), || stat(admin, "cluster_manager.cds.update_failure") == 1),
        "{}",
        skiff.log()
    );
    assert!(skiff.log().contains("socket_address.port_value: expected a port number"), "{}", skiff.log());
    assert_eq!(served_by(listener), "service1");
    assert_eq!(stat(admin, "cluster_manager.cds.update_success"), 1);
    assert_eq!(stat(admin, "cluster_manager.cds.version"), xxhash64(b"v1"));

    // A listener whose route names no cluster is rejected; the old listener keeps serving.
    let lds_path = dir.join("lds.yaml");
    let text = std::fs::read_to_string(&lds_path).expect("lds");
    replace(&lds_path, &text.replace("cluster: example_proxy_cluster", "cluster: nosuch"));
    assert!(
        eventually(Duration::from_secs(5), || stat(admin, "listener_manager.lds.update_rejected") == 1),
        "{}",
        skiff.log()
    );
    assert!(skiff.log().contains("route.cluster: unknown cluster \"nosuch\""), "{}", skiff.log());
    assert_eq!(served_by(listener), "service1");
}

/// A Kubernetes ConfigMap volume: the files are symlinks through `..data`, which the kubelet swaps
/// by renaming a new symlink over it (`watched_directory` in Envoy).
#[test]
fn a_configmap_style_swap_of_the_watched_directory_is_an_update() {
    let (one, two) = (TestUpstream::echo_named("service1"), TestUpstream::echo_named("service2"));
    let dir = scratch_dir("xds-fs-configmap");
    let port = support::free_port();
    let write_version = |name: &str, upstream: SocketAddr| {
        let v = dir.join(name);
        std::fs::create_dir_all(&v).expect("version dir");
        std::fs::write(v.join("lds.yaml"), lds(port)).expect("lds");
        std::fs::write(v.join("cds.yaml"), cds(upstream, name)).expect("cds");
    };
    write_version("..v1", one.addr);
    std::os::unix::fs::symlink("..v1", dir.join("..data")).expect("..data");
    for f in ["lds.yaml", "cds.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("file link");
    }
    let yaml = bootstrap(&dir, 0).replace(
        &format!("path: {}/cds.yaml", dir.display()),
        &format!(
            "path: {}/cds.yaml\n      watched_directory:\n        path: {}",
            dir.display(),
            dir.display()
        ),
    );
    assert!(yaml.contains("watched_directory"), "{yaml}");
    let skiff = Skiff::start(&yaml, &[]);
    let listener = skiff.listener("listener_0");
    assert_eq!(served_by(listener), "service1");

    write_version("..v2", two.addr);
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    assert!(
        eventually(Duration::from_secs(5), || served_by(listener) == "service2"),
        "the swapped ConfigMap was not applied:\n{}",
        skiff.log()
    );
    let dump = config_dump(skiff.admin());
    assert_eq!(dump_part(&dump, "ClustersConfigDump")["version_info"], "..v2");
}

/// Envoy and skiff on the same files and the same renames: the same upstream serves after each
/// step, and the subscription counters and version gauges are equal.
#[test]
fn parity_with_envoy_over_the_same_renames() {
    let Some(bin) = binary_or_skip("parity_with_envoy_over_the_same_renames") else { return };
    let (one, two) = (TestUpstream::echo_named("service1"), TestUpstream::echo_named("service2"));
    let envoy_dir = scratch_dir("xds-fs-envoy");
    let envoy = Envoy::start(&bin, &envoy_dir, |port, admin_port| {
        std::fs::write(envoy_dir.join("lds.yaml"), lds(port)).expect("lds");
        std::fs::write(envoy_dir.join("cds.yaml"), cds(one.addr, "v1")).expect("cds");
        bootstrap(&envoy_dir, admin_port)
    });
    let (skiff, skiff_listener, skiff_dir) = start_skiff(one.addr);
    let proxies = [
        ("envoy", envoy.listener, envoy.admin, envoy_dir.clone()),
        ("skiff", skiff_listener, skiff.admin(), skiff_dir),
    ];

    // Each step: a file replaced by rename in both proxies' dirs, then who serves and the stats.
    let (one_addr, two_addr) = (one.addr, two.addr);
    let steps: Vec<(&str, &str, FileText, &str)> = vec![
        ("to service2", "cds.yaml", Box::new(move |_| cds(two_addr, "v2")), "service2"),
        ("a rejected cluster", "cds.yaml", Box::new(|_| cds_invalid("v3")), "service2"),
        ("an unparsable cluster", "cds.yaml", Box::new(|_| cds_unparsable("v4")), "service2"),
        ("back to service1", "cds.yaml", Box::new(move |_| cds(one_addr, "v5")), "service1"),
        (
            "a route to no cluster",
            "lds.yaml",
            Box::new(|d: &Path| {
                std::fs::read_to_string(d.join("lds.yaml"))
                    .expect("lds")
                    .replace("cluster: example_proxy_cluster", "cluster: nosuch")
            }),
            "service1",
        ),
    ];
    for (i, (what, file, text, expect)) in steps.iter().enumerate() {
        let attempts_before: Vec<u64> = proxies.iter().map(|p| total_attempts(p.2)).collect();
        for (_, _, _, dir) in &proxies {
            replace(&dir.join(file), &text(dir));
        }
        for ((name, listener, admin, _), before) in proxies.iter().zip(&attempts_before) {
            assert!(
                eventually(Duration::from_secs(5), || total_attempts(*admin) > *before),
                "step {i} ({what}): {name} did not pick up the rename\n{}",
                if *name == "envoy" { envoy.log() } else { skiff.log() }
            );
            assert_eq!(served_by(*listener), *expect, "step {i} ({what}): {name}");
        }
        let (envoy_stats, skiff_stats) = (update_stats(proxies[0].2), update_stats(proxies[1].2));
        assert_eq!(skiff_stats, envoy_stats, "step {i} ({what}): update stats differ");
    }
    // A write in place is no update for either (Envoy's documented rule: only a move is).
    let attempts_before: Vec<u64> = proxies.iter().map(|p| total_attempts(p.2)).collect();
    for (_, _, _, dir) in &proxies {
        std::fs::write(dir.join("cds.yaml"), cds(two_addr, "v9")).expect("write in place");
    }
    // Two of skiff's config checks.
    std::thread::sleep(Duration::from_millis(2500));
    for ((name, listener, admin, _), before) in proxies.iter().zip(&attempts_before) {
        assert_eq!(total_attempts(*admin), *before, "{name}: a write in place was taken as an update");
        assert_eq!(served_by(*listener), "service1", "{name}");
    }
    // The text readouts: the applied version_info, quoted, ahead of the counters.
    let texts = |admin: SocketAddr| {
        let (_, body) = admin_get(admin, "/stats?filter=version_text").expect("stats");
        body
    };
    assert_eq!(texts(proxies[1].2), texts(proxies[0].2));
    assert!(
        texts(proxies[1].2).contains("cluster_manager.cds.version_text: \"v5\""),
        "{}",
        texts(proxies[1].2)
    );
    // The same dynamic sections in both dumps (structure and versions).
    let (e, s) = (config_dump(proxies[0].2), config_dump(proxies[1].2));
    for (kind, field) in
        [("ClustersConfigDump", "dynamic_active_clusters"), ("ListenersConfigDump", "dynamic_listeners")]
    {
        let (ep, sp) = (dump_part(&e, kind), dump_part(&s, kind));
        assert_eq!(sp["version_info"], ep["version_info"], "{kind}");
        // Envoy also lists a rejected update's `error_state` (skiff logs it instead): compare the
        // active resources.
        let active = |v: &serde_json::Value| {
            v[field].as_array().map(|a| {
                a.iter().filter(|x| x.get("error_state").is_none() || x.get("active_state").is_some()).count()
            })
        };
        assert_eq!(active(sp), active(ep), "{kind}");
    }
    let (ec, sc) = (
        &dump_part(&e, "ClustersConfigDump")["dynamic_active_clusters"][0],
        &dump_part(&s, "ClustersConfigDump")["dynamic_active_clusters"][0],
    );
    assert_eq!(sc["version_info"], ec["version_info"]);
    assert_eq!(sc["cluster"]["name"], ec["cluster"]["name"]);
    let (el, sl) = (
        &dump_part(&e, "ListenersConfigDump")["dynamic_listeners"][0],
        &dump_part(&s, "ListenersConfigDump")["dynamic_listeners"][0],
    );
    assert_eq!(sl["name"], el["name"]);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        k.sort();
        k
    };
    assert_eq!(keys(&sl["active_state"]), keys(&el["active_state"]));
    assert_eq!(keys(sc), keys(ec));
}

/// A replaced file's new text, from the directory it is in.
type FileText = Box<dyn Fn(&Path) -> String>;

fn total_attempts(admin: SocketAddr) -> u64 {
    let s = stats(admin);
    s.get("cluster_manager.cds.update_attempt").copied().unwrap_or(0)
        + s.get("listener_manager.lds.update_attempt").copied().unwrap_or(0)
}

/// xxHash64 with seed 0 (Envoy's `version` gauge), written out so the test does not trust the
/// implementation it checks.
fn xxhash64(input: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    // Inputs here are short (< 32 bytes): the one-lane path.
    assert!(input.len() < 32);
    let mut h = P5.wrapping_add(input.len() as u64);
    let mut rest = input;
    while rest.len() >= 8 {
        let k = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let k = k.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
        h = (h ^ k).rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let k = u64::from(u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")));
        h = (h ^ k.wrapping_mul(P1)).rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h = (h ^ u64::from(b).wrapping_mul(P5)).rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[test]
fn the_test_hash_is_envoys() {
    // Envoy's listener_manager.lds.version for an empty version_info, and for "v2", read from its
    // /stats.
    assert_eq!(xxhash64(b""), 17_241_709_254_077_376_921);
    assert_eq!(xxhash64(b"v2"), 17_234_765_554_138_278_603);
}

/// A bootstrap with a static cluster and both files, the cluster file in JSON and named with the
/// v2 `path:` form: the listener from the file routes to the static cluster and to a dynamic one;
/// the file's cluster of the static one's name is ignored (the static one serves) and the update
/// still succeeds, as in Envoy; so is the listener file's `edge`, a static listener's name (on
/// `edge_port`, answering 200 directly).
fn combined(dir: &Path, ports: (u16, u16, u16), static_up: SocketAddr, dynamic_up: SocketAddr) -> String {
    let (port, edge_port, admin_port) = ports;
    let edge = |type_url: Option<&str>, port: u16, status: u16| {
        let routes = format!(
            r#"route_config: {{virtual_hosts: [{{name: a, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: {status}}}}}]}}]}}"#
        );
        listener_item(type_url, "edge", port, "edge", &routes)
    };
    let endpoint = |name: &str, a: SocketAddr| {
        format!(
            r#"{{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "{name}", "load_assignment": {{"cluster_name": "{name}", "endpoints": [{{"lb_endpoints": [{{"endpoint": {{"address": {{"socket_address": {{"address": "{}", "port_value": {}}}}}}}}}]}}]}}}}"#,
            a.ip(),
            a.port()
        )
    };
    let cds = format!(
        "{{\"version_info\": \"j1\", \"resources\": [{}, {}]}}\n",
        endpoint("static_one", dynamic_up),
        endpoint("dyn_one", dynamic_up)
    );
    std::fs::write(dir.join("cds.json"), cds).expect("cds");
    let lds = lds(port).replace(
        "            routes:\n            - match:\n                prefix: \"/\"\n              route:\n                cluster: example_proxy_cluster",
        "            routes:\n            - match:\n                prefix: \"/s\"\n              route:\n                cluster: static_one\n            - match:\n                prefix: \"/d\"\n              route:\n                cluster: dyn_one",
    );
    assert!(lds.contains("dyn_one"), "{lds}");
    let dynamic_edge = edge(Some("type.googleapis.com/envoy.config.listener.v3.Listener"), 0, 418);
    std::fs::write(dir.join("lds.yaml"), lds + &dynamic_edge).expect("lds");
    let static_edge = indent(&edge(None, edge_port, 200), 2);
    format!(
        r#"node: {{id: id_1, cluster: test}}
dynamic_resources:
  cds_config: {{path: {dir}/cds.json}}
  lds_config: {{path_config_source: {{path: {dir}/lds.yaml}}}}
static_resources:
  listeners:
{static_edge}  clusters:
  - name: static_one
    load_assignment:
      cluster_name: static_one
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}
"#,
        static_up.ip(),
        static_up.port(),
        dir = dir.display()
    )
}

#[test]
fn static_and_dynamic_resources_combine_as_in_envoy() {
    let (one, two) = (TestUpstream::echo_named("service1"), TestUpstream::echo_named("service2"));
    let dir = scratch_dir("xds-fs-combined");
    let ports = (support::free_port(), support::free_port(), 0);
    let skiff = Skiff::start(&combined(&dir, ports, one.addr, two.addr), &[]);
    let listener = skiff.listener("listener_0");
    let mut proxies = vec![("skiff", listener, skiff.admin(), ports.1)];
    let envoy_edge = support::free_port();
    let envoy = binary_or_skip("static_and_dynamic_resources_combine_as_in_envoy").map(|bin| {
        let envoy_dir = scratch_dir("xds-fs-combined-envoy");
        Envoy::start(&bin, &envoy_dir, |port, admin_port| {
            combined(&envoy_dir, (port, envoy_edge, admin_port), one.addr, two.addr)
        })
    });
    if let Some(e) = &envoy {
        proxies.push(("envoy", e.listener, e.admin, envoy_edge));
    }
    for (name, listener, admin, edge_port) in &proxies {
        let edge = SocketAddr::from(([127, 0, 0, 1], *edge_port));
        assert_eq!(get(edge, "/").status, 200, "{name}: the static listener serves");
        assert_eq!(stat(*admin, "listener_manager.lds.update_success"), 1, "{name}");
        assert_eq!(stat(*admin, "listener_manager.lds.update_rejected"), 0, "{name}");
        assert_eq!(get(*listener, "/s").first_line(), "service1", "{name}: the static cluster serves");
        assert_eq!(get(*listener, "/d").first_line(), "service2", "{name}");
        assert_eq!(stat(*admin, "cluster_manager.cds.update_success"), 1, "{name}");
        assert_eq!(stat(*admin, "cluster_manager.cds.update_rejected"), 0, "{name}");
        let dump = config_dump(*admin);
        let clusters = dump_part(&dump, "ClustersConfigDump");
        let names = |field: &str, key: &str| -> Vec<String> {
            clusters[field]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c[key]["name"].as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        assert_eq!(names("static_clusters", "cluster"), ["static_one"], "{name}");
        assert_eq!(names("dynamic_active_clusters", "cluster"), ["dyn_one"], "{name}");
        assert_eq!(clusters["version_info"], "j1", "{name}");
        let listeners = dump_part(&dump, "ListenersConfigDump");
        let dynamic: Vec<&str> = listeners["dynamic_listeners"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|l| l.get("active_state").is_some())
                    .filter_map(|l| l["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(dynamic, ["listener_0"], "{name}");
    }
}

/// A route configuration file named by a static listener's `rds`, answering `status` directly,
/// under `name`, as `version`.
fn rds_file(name: &str, status: u16, version: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: {name}
  virtual_hosts: [{{name: a, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: {status}}}}}]}}]
"#
    )
}

fn rds_bootstrap(dir: &Path, port: u16, admin_port: u16) -> String {
    let routes = format!(
        "rds:\n  route_config_name: local_route\n  config_source: {{path_config_source: {{path: {}/rds.yaml}}, resource_api_version: V3}}",
        dir.display()
    );
    format!(
        "node: {{id: id_1, cluster: test}}\nstatic_resources:\n  listeners:\n{}admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}\n",
        indent(&listener_item(None, "main", port, "st", &routes), 2)
    )
}

/// A listener as a list item at column 0 (first key its `"@type"` when given, as in a resource
/// file) whose connection manager (`stat_prefix`, the router) ends with `routes`: its
/// `route_config` or `rds`, written at column 0.
fn listener_item(type_url: Option<&str>, name: &str, port: u16, stat_prefix: &str, routes: &str) -> String {
    let head = type_url.map_or(String::from("- "), |t| format!("- \"@type\": {t}\n  "));
    format!(
        r#"{head}name: {name}
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {stat_prefix}
        http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
{}"#,
        indent(routes, 8)
    )
}

/// RDS from a file beside Envoy: the route configuration serves, a file without the named one is
/// rejected (the old routes serve), a renamed good one applies; `http.<prefix>.rds.<name>.*` and
/// `dynamic_route_configs` as Envoy's.
#[test]
fn routes_from_a_file_follow_renames_as_in_envoy() {
    let dir = scratch_dir("xds-fs-rds");
    std::fs::write(dir.join("rds.yaml"), rds_file("local_route", 201, "r1")).expect("rds");
    let port = support::free_port();
    let skiff = Skiff::start(&rds_bootstrap(&dir, port, 0), &[]);
    let mut proxies = vec![("skiff", skiff.listener("main"), skiff.admin(), dir.clone())];
    let envoy = binary_or_skip("routes_from_a_file_follow_renames_as_in_envoy").map(|bin| {
        let envoy_dir = scratch_dir("xds-fs-rds-envoy");
        let e = Envoy::start(&bin, &envoy_dir, |port, admin_port| {
            std::fs::write(envoy_dir.join("rds.yaml"), rds_file("local_route", 201, "r1")).expect("rds");
            rds_bootstrap(&envoy_dir, port, admin_port)
        });
        (e, envoy_dir)
    });
    if let Some((e, d)) = &envoy {
        proxies.push(("envoy", e.listener, e.admin, d.clone()));
    }
    let prefix = "http.st.rds.local_route";
    let steps = [
        (rds_file("other", 202, "r2"), 201, (2, 1, 1)),
        (rds_file("local_route", 203, "r3"), 203, (3, 2, 1)),
    ];
    for (name, listener, admin, _) in &proxies {
        assert_eq!(get(*listener, "/").status, 201, "{name}");
        assert_eq!(stat(*admin, &format!("{prefix}.update_success")), 1, "{name}");
    }
    for (i, (text, status, (attempts, successes, rejections))) in steps.iter().enumerate() {
        for (_, _, _, d) in &proxies {
            replace(&d.join("rds.yaml"), text);
        }
        for (name, listener, admin, _) in &proxies {
            assert!(
                eventually(Duration::from_secs(5), || stat(*admin, &format!("{prefix}.update_attempt"))
                    == *attempts),
                "step {i}: {name}\n{}",
                skiff.log()
            );
            assert_eq!(get(*listener, "/").status, *status, "step {i}: {name}");
            assert_eq!(stat(*admin, &format!("{prefix}.update_success")), *successes, "step {i}: {name}");
            assert_eq!(stat(*admin, &format!("{prefix}.update_rejected")), *rejections, "step {i}: {name}");
        }
    }
    assert!(skiff.log().contains("no route configuration named \"local_route\""), "{}", skiff.log());
    for (name, _, admin, _) in &proxies {
        assert_eq!(stat(*admin, &format!("{prefix}.version")), xxhash64(b"r3"), "{name}");
        // Envoy's tags for RDS stats in Prometheus.
        let (_, prometheus) = admin_get(*admin, "/stats/prometheus").expect("prometheus");
        let line = r#"envoy_http_rds_update_success{envoy_rds_route_config="local_route",envoy_http_conn_manager_prefix="st"} 2"#;
        assert!(prometheus.lines().any(|l| l == line), "{name}: no `{line}`");
        let dump = config_dump(*admin);
        let routes = dump_part(&dump, "RoutesConfigDump");
        let dynamic = &routes["dynamic_route_configs"][0];
        assert_eq!(dynamic["version_info"], "r3", "{name}: {routes}");
        assert_eq!(dynamic["route_config"]["name"], "local_route", "{name}");
        assert!(dynamic["last_updated"].is_string(), "{name}");
        let listener = &dump_part(&dump, "ListenersConfigDump")["static_listeners"][0]["listener"];
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["rds"]["route_config_name"], "local_route", "{name}");
    }
}

/// A listener from the listener file whose routes come from a route file keeps them across a
/// reload of the bootstrap (which, parsed alone, does not know the listener file's rds).
#[test]
fn a_bootstrap_reload_keeps_a_file_listeners_routes() {
    let dir = scratch_dir("xds-fs-rds-reload");
    std::fs::write(dir.join("rds.yaml"), rds_file("r", 207, "r1")).expect("rds");
    let routes = format!(
        "rds: {{route_config_name: r, config_source: {{path_config_source: {{path: {}/rds.yaml}}}}}}",
        dir.display()
    );
    let item = listener_item(
        Some("type.googleapis.com/envoy.config.listener.v3.Listener"),
        "dyn",
        0,
        "dyn",
        &routes,
    );
    std::fs::write(dir.join("lds.yaml"), format!("resources:\n{item}")).expect("lds");
    let yaml = format!(
        "node: {{id: id_1, cluster: test}}\ndynamic_resources:\n  lds_config: {{path_config_source: {{path: {}/lds.yaml}}}}\nadmin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n",
        dir.display()
    );
    let skiff = Skiff::start(&yaml, &[]);
    let listener = skiff.listener("dyn");
    assert_eq!(get(listener, "/").status, 207);
    skiff.rewrite_config(&format!("{yaml}# changed\n"));
    assert!(skiff.wait_for_log("config reloaded", Duration::from_secs(5)), "{}", skiff.log());
    assert_eq!(get(listener, "/").status, 207, "{}", skiff.log());
    assert_eq!(stat(skiff.admin(), "http.dyn.rds.r.update_success"), 1);
}

/// An endpoint file for service `svc`: its one ClusterLoadAssignment, as `version`.
fn eds_file(service: &str, upstream: SocketAddr, version: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: {service}
  endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]
"#,
        upstream.ip(),
        upstream.port()
    )
}

/// A static listener routing to `backend`, an EDS cluster whose endpoints are `svc`'s in eds.yaml.
fn eds_bootstrap(dir: &Path, port: u16, admin_port: u16) -> String {
    let routes = "route_config: {virtual_hosts: [{name: a, domains: [\"*\"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]}";
    format!(
        "node: {{id: id_1, cluster: test}}\nstatic_resources:\n  listeners:\n{}  clusters:\n  - name: backend\n    type: EDS\n    eds_cluster_config: {{service_name: svc, eds_config: {{path_config_source: {{path: {}/eds.yaml}}, resource_api_version: V3}}}}\nadmin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}\n",
        indent(&listener_item(None, "main", port, "st", routes), 2),
        dir.display()
    )
}

/// EDS from a file beside Envoy: the cluster's endpoints follow renames; a file with another
/// service's assignment is rejected and one that does not parse fails, the old endpoints serving;
/// `cluster.<name>.update_*` and the version as Envoy's.
#[test]
fn endpoints_from_a_file_follow_renames_as_in_envoy() {
    let (one, two) = (TestUpstream::echo_named("service1"), TestUpstream::echo_named("service2"));
    let dir = scratch_dir("xds-fs-eds");
    std::fs::write(dir.join("eds.yaml"), eds_file("svc", one.addr, "e1")).expect("eds");
    let skiff = Skiff::start(&eds_bootstrap(&dir, support::free_port(), 0), &[]);
    let mut proxies = vec![("skiff", skiff.listener("main"), skiff.admin(), dir.clone())];
    let envoy = binary_or_skip("endpoints_from_a_file_follow_renames_as_in_envoy").map(|bin| {
        let envoy_dir = scratch_dir("xds-fs-eds-envoy");
        let e = Envoy::start(&bin, &envoy_dir, |port, admin_port| {
            std::fs::write(envoy_dir.join("eds.yaml"), eds_file("svc", one.addr, "e1")).expect("eds");
            eds_bootstrap(&envoy_dir, port, admin_port)
        });
        (e, envoy_dir)
    });
    if let Some((e, d)) = &envoy {
        proxies.push(("envoy", e.listener, e.admin, d.clone()));
    }
    for (name, listener, _, _) in &proxies {
        assert_eq!(served_by(*listener), "service1", "{name}");
    }
    let steps = [
        (eds_file("svc", two.addr, "e2"), "service2"),
        (eds_file("other", one.addr, "e3"), "service2"),
        (
            eds_file("svc", one.addr, "e4")
                .replace(&format!("port_value: {}", one.addr.port()), "port_value: nope"),
            "service2",
        ),
    ];
    let names =
        ["update_attempt", "update_success", "update_rejected", "update_failure", "update_empty", "version"];
    for (i, (text, expect)) in steps.iter().enumerate() {
        let before: Vec<u64> = proxies.iter().map(|p| stat(p.2, "cluster.backend.update_attempt")).collect();
        for (_, _, _, d) in &proxies {
            replace(&d.join("eds.yaml"), text);
        }
        for ((name, listener, admin, _), before) in proxies.iter().zip(&before) {
            assert!(
                eventually(Duration::from_secs(5), || stat(*admin, "cluster.backend.update_attempt")
                    > *before),
                "step {i}: {name}\n{}",
                skiff.log()
            );
            assert_eq!(served_by(*listener), *expect, "step {i}: {name}");
        }
        let values = |admin: SocketAddr| -> Vec<u64> {
            let s = stats(admin);
            names
                .iter()
                .map(|n| s.get(&format!("cluster.backend.{n}")).copied().unwrap_or(u64::MAX))
                .collect()
        };
        let skiff_values = values(proxies[0].2);
        if let Some(e) = proxies.get(1) {
            assert_eq!(skiff_values, values(e.2), "step {i}: {names:?}");
        }
        if i == 2 {
            assert_eq!(skiff_values[..4], [4, 2, 1, 1], "step {i}: {names:?}");
            assert_eq!(skiff_values[5], xxhash64(b"e2"));
        }
    }
    assert!(skiff.log().contains("got \"other\""), "{}", skiff.log());
}
