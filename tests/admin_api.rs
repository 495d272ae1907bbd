//! The admin endpoints an operator uses to change a running skiff: log level, draining, the running
//! config, and the admin access log.

mod support;

use std::time::Duration;
use support::*;

fn with_admin(upstream: std::net::SocketAddr, access_log: &std::path::Path) -> String {
    format!(
        "{}admin:\n  access_log_path: {}\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n",
        simple_config(&[upstream]),
        access_log.display()
    )
}

#[test]
fn logging_level_changes_only_by_post() {
    let up = TestUpstream::named("a");
    let dir = scratch_dir("admin-logging");
    let skiff = Skiff::start(&with_admin(up.addr, &dir.join("admin.log")), &["--concurrency", "2"]);
    let admin = skiff.admin();
    let (status, body) = admin_request(admin, "GET", "/logging");
    assert_eq!(status, 200);
    assert!(body.contains("skiff: debug"), "{body}");
    assert_eq!(admin_request(admin, "GET", "/logging?level=info").0, 405);
    assert_eq!(admin_request(admin, "POST", "/logging?level=loud").0, 400);
    let (status, body) = admin_request(admin, "POST", "/logging?level=warning");
    assert_eq!(status, 200);
    assert!(body.contains("skiff: warning"), "{body}");
    assert!(admin_request(admin, "GET", "/logging").1.contains("skiff: warning"));
}

#[test]
fn drain_listeners_stops_accepting_and_reports_draining() {
    let up = TestUpstream::named("a");
    let dir = scratch_dir("admin-drain");
    let skiff = Skiff::start(&with_admin(up.addr, &dir.join("admin.log")), &["--concurrency", "2"]);
    let (admin, main) = (skiff.admin(), skiff.listener("main"));
    assert_eq!(get(main, "/").status, 200);
    assert_eq!(admin_request(admin, "GET", "/drain_listeners").0, 405);
    assert_eq!(admin_request(admin, "POST", "/drain_listeners").0, 200);
    assert_eq!(admin_request(admin, "GET", "/ready").0, 503);
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(main).is_err()),
        "the listener still accepts after /drain_listeners"
    );
}

#[test]
fn config_dump_shows_the_running_config_and_filters_by_resource() {
    let up = TestUpstream::named("a");
    let dir = scratch_dir("admin-dump");
    let log = dir.join("admin.log");
    let skiff = Skiff::start(&with_admin(up.addr, &log), &["--concurrency", "2"]);
    let admin = skiff.admin();
    let (status, body) = admin_request(admin, "GET", "/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let bootstrap = &dump["configs"][0]["bootstrap"];
    assert_eq!(bootstrap["static_resources"]["clusters"][0]["name"], "backend");
    assert_eq!(bootstrap["static_resources"]["clusters"][0]["connect_timeout"], "0.500s");
    let (status, body) = admin_request(admin, "GET", "/config_dump?resource=static_listeners");
    assert_eq!(status, 200);
    let listeners: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(listeners["configs"][0]["listener"]["name"], "main");
    assert_eq!(admin_request(admin, "GET", "/config_dump?resource=nonsense").0, 404);
    // Every admin request lands in admin.access_log_path, in Envoy's default format.
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"GET /config_dump?resource=nonsense HTTP/1.1\" 404")
    }));
}

#[test]
fn clusters_shows_per_host_request_counts_and_weights() {
    let (a, b) = (TestUpstream::named("a"), TestUpstream::named("b"));
    let dir = scratch_dir("admin-clusters");
    let yaml = format!(
        "{}admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n",
        simple_config(&[a.addr, b.addr])
    );
    let skiff = Skiff::start(&yaml, &["--concurrency", "2"]);
    let (admin, main) = (skiff.admin(), skiff.listener("main"));
    // One keep-alive connection: its shard alternates the two hosts.
    let mut client = Client::connect(main);
    for _ in 0..10 {
        assert_eq!(client.get("/").status, 200);
    }
    let (status, body) = admin_request(admin, "GET", "/clusters");
    assert_eq!(status, 200);
    for up in [&a, &b] {
        let line = |field: &str| format!("backend::{}::{field}", up.addr);
        assert!(body.lines().any(|l| l == line("rq_total::5")), "{body}");
        assert!(body.lines().any(|l| l == line("rq_success::5")), "{body}");
        assert!(body.lines().any(|l| l == line("cx_active::1")), "{body}");
        assert!(body.lines().any(|l| l == line("weight::1")), "{body}");
    }
    let (_, body) = admin_request(admin, "GET", "/clusters?format=json");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let host = &json["cluster_statuses"][0]["host_statuses"][0];
    assert_eq!(host["weight"], 1);
    assert!(host["stats"]
        .as_array()
        .expect("stats")
        .iter()
        .any(|s| s["name"] == "rq_total" && s["value"] == "5"));
    drop(dir);
}
