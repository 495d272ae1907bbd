//! The deployment files in `configs/deploy/` keep the promises the README makes for them: every skiff
//! config in them (the front proxy's, and each one a ConfigMap embeds) loads; every Deployment runs a
//! `skiff` container that is probed on `/ready`, is given more time to stop than it drains for, and
//! runs as many shards as it has CPUs; and the names the sidecars resolve are headless Services.

mod support;

#[path = "support/xds_server.rs"]
mod xds_server;

use serde::Deserialize;
use serde_norway::Value;
use skiff::config::{load_str, Bootstrap, DiscoveryType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

/// Every document of every YAML file under configs/deploy, named `file#index`.
fn documents() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    files.sort();
    assert!(files.len() >= 6, "expected the front proxy config and the manifests, found {files:?}");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read yaml");
        let rel = file.strip_prefix(deploy_dir()).expect("under configs/deploy").display().to_string();
        for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let doc = Value::deserialize(de).unwrap_or_else(|e| panic!("{rel} document {i}: {e}"));
            if !doc.is_null() {
                docs.push((format!("{rel}#{i}"), doc));
            }
        }
    }
    docs
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn load(text: &str, origin: &str) -> Bootstrap {
    match load_str(text, origin) {
        Ok(loaded) => {
            assert!(
                loaded.warnings.is_empty(),
                "{origin}: deploy configs should load without warnings: {:?}",
                loaded.warnings
            );
            loaded.bootstrap
        }
        Err(e) => panic!("{origin} should load: {e}"),
    }
}

/// The sidecars' certificate volume (`/etc/skiff/tls`) as the kubelet projects it: the SDS files
/// of the `*-sds` ConfigMaps beside a Secret's `tls.crt`, `tls.key` and `ca.crt` (test ones), in
/// a scratch directory. Returns it.
fn certificate_volume() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let certs = support::tls::shared();
        let dir = support::scratch_dir("deploy-tls");
        for (from, to) in [("a.crt", "tls.crt"), ("a.key", "tls.key"), ("ca.crt", "ca.crt")] {
            std::fs::copy(certs.path(from), dir.join(to)).expect("copy a test certificate");
        }
        for (_, doc) in
            documents().into_iter().filter(|(_, d)| kind(d) == "ConfigMap" && name(d).ends_with("-sds"))
        {
            for (key, value) in doc["data"].as_mapping().expect("ConfigMap data") {
                let (Some(key), Some(text)) = (key.as_str(), value.as_str()) else { continue };
                let text = text.replace("/etc/skiff/tls", &dir.display().to_string());
                std::fs::write(dir.join(key), text).expect("write an SDS file");
            }
        }
        dir
    })
    .clone()
}

/// Every skiff config: top-level bootstrap files and the `*.yaml` keys of ConfigMaps (a config
/// naming the certificate volume loads with it in place).
fn skiff_configs() -> BTreeMap<String, Bootstrap> {
    let mut configs = BTreeMap::new();
    let load = |text: &str, origin: &str| {
        if text.contains("/etc/skiff/tls/") {
            load(&text.replace("/etc/skiff/tls", &certificate_volume().display().to_string()), origin)
        } else {
            load(text, origin)
        }
    };
    for (origin, doc) in documents() {
        if doc.get("static_resources").is_some() {
            let text = serde_norway::to_string(&doc).expect("re-serialize");
            configs.insert(origin.clone(), load(&text, &origin));
        } else if kind(&doc) == "ConfigMap" {
            for (key, value) in doc["data"].as_mapping().expect("ConfigMap data") {
                let (Some(key), Some(text)) = (key.as_str(), value.as_str()) else { continue };
                if key.ends_with(".yaml") {
                    let origin = format!("{origin} ConfigMap {} key {key}", name(&doc));
                    configs.insert(origin.clone(), load(text, &origin));
                }
            }
        }
    }
    configs
}

fn skiff_container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_sequence().expect("containers");
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some("skiff"))
        .unwrap_or_else(|| panic!("Deployment {} has no container named skiff", name(deployment)))
}

/// The value after `flag` in an argument list (`--flag V` or `--flag=V`).
fn flag<'a>(args: &'a [&'a str], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('='))
        }
    })
}

fn int(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[test]
fn every_skiff_config_loads() {
    let configs = skiff_configs();
    // front-proxy.yaml, and the four ConfigMaps (front proxy, A, B, C).
    assert!(configs.len() >= 5, "found {:?}", configs.keys().collect::<Vec<_>>());
}

#[test]
fn every_deployment_runs_a_probed_skiff_that_drains_within_its_grace_period() {
    let docs = documents();
    let deployments: Vec<_> = docs.iter().filter(|(_, d)| kind(d) == "Deployment").collect();
    assert!(deployments.len() >= 4, "front proxy and services A, B, C");
    for (origin, d) in deployments {
        let what = format!("{origin} Deployment {}", name(d));
        let pod = &d["spec"]["template"]["spec"];
        let skiff = skiff_container(d);
        assert_eq!(
            skiff["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/ready"),
            "{what}: readinessProbe"
        );
        assert!(skiff.get("livenessProbe").is_some(), "{what}: livenessProbe");

        let args: Vec<&str> = skiff["args"]
            .as_sequence()
            .expect("skiff args")
            .iter()
            .map(|a| a.as_str().expect("string arg"))
            .collect();
        assert_eq!(flag(&args, "-c"), Some("/etc/skiff/envoy.yaml"), "{what}: -c");
        let drain: u64 = flag(&args, "--drain-time-s")
            .unwrap_or_else(|| {
                panic!("{what}: no --drain-time-s (the default, 600 s, outlasts any grace period)")
            })
            .parse()
            .expect("--drain-time-s is a number");
        let pre_stop = int(&skiff["lifecycle"]["preStop"]["sleep"]["seconds"]).unwrap_or(0);
        let grace = int(&pod["terminationGracePeriodSeconds"])
            .unwrap_or_else(|| panic!("{what}: no terminationGracePeriodSeconds (the default 30 s)"));
        assert!(
            grace > pre_stop + drain,
            "{what}: grace {grace} s <= preStop {pre_stop} s + drain {drain} s"
        );

        // One shard per CPU of the limit: more would be throttled by the CFS quota.
        let concurrency: u64 = flag(&args, "--concurrency")
            .unwrap_or_else(|| panic!("{what}: no --concurrency"))
            .parse()
            .expect("number");
        let cpu = int(&skiff["resources"]["limits"]["cpu"])
            .unwrap_or_else(|| panic!("{what}: the skiff CPU limit should be whole CPUs"));
        assert_eq!(concurrency, cpu, "{what}: --concurrency vs CPU limit");

        let sc = &skiff["securityContext"];
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{what}: runAsNonRoot");
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}: readOnlyRootFilesystem");
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{what}: allowPrivilegeEscalation");
        assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"), "{what}: capabilities");

        // The config volume names a ConfigMap defined here, with the key skiff is pointed at.
        let volumes = pod["volumes"].as_sequence().expect("volumes");
        let cm = volumes.iter().find_map(|v| v["configMap"]["name"].as_str()).expect("a ConfigMap volume");
        let defined = docs.iter().find(|(_, c)| kind(c) == "ConfigMap" && name(c) == cm);
        let (_, defined) = defined.unwrap_or_else(|| panic!("{what}: ConfigMap {cm} is not defined"));
        assert!(defined["data"].get("envoy.yaml").is_some(), "{what}: ConfigMap {cm} has no envoy.yaml");
    }
}

#[test]
fn the_mesh_resolves_headless_services_and_the_sidecars_reach_their_app_on_loopback() {
    let docs = documents();
    let services: BTreeMap<&str, &Value> =
        docs.iter().filter(|(_, d)| kind(d) == "Service").map(|(_, d)| (name(d), d)).collect();
    let mut resolved = 0;
    for (origin, config) in skiff_configs() {
        for cluster in &config.clusters {
            for ep in &cluster.endpoints {
                match cluster.discovery {
                    DiscoveryType::Static => {
                        assert_eq!(
                            ep.host, "127.0.0.1",
                            "{origin}: cluster {}: a STATIC app is in the Pod",
                            cluster.name
                        )
                    }
                    DiscoveryType::StrictDns => {
                        let svc = services.get(ep.host.as_str()).unwrap_or_else(|| {
                            panic!(
                                "{origin}: cluster {} resolves {}, which is no Service here",
                                cluster.name, ep.host
                            )
                        });
                        assert_eq!(
                            svc["spec"]["clusterIP"].as_str(),
                            Some("None"),
                            "{origin}: {} must be headless",
                            ep.host
                        );
                        let ports = svc["spec"]["ports"].as_sequence().expect("Service ports");
                        assert!(
                            ports.iter().any(|p| int(&p["port"]) == Some(u64::from(ep.port))),
                            "{origin}: Service {} does not list port {}",
                            ep.host,
                            ep.port
                        );
                        resolved += 1;
                    }
                    DiscoveryType::LogicalDns => {
                        panic!("{origin}: cluster {}: use STRICT_DNS in the mesh", cluster.name)
                    }
                    DiscoveryType::Eds => {
                        panic!("{origin}: cluster {}: the mesh has no endpoint files", cluster.name)
                    }
                }
            }
        }
    }
    // front-proxy.yaml and its ConfigMap → service-a; A's sidecar → service-b, service-c.
    assert!(resolved >= 4, "found {resolved} STRICT_DNS endpoints");
    for mesh in ["service-a", "service-b", "service-c"] {
        assert!(services.contains_key(mesh), "Service {mesh}");
    }
}

#[test]
fn the_front_proxy_configmap_is_front_proxy_yaml_with_the_admin_on_all_addresses() {
    let configs = skiff_configs();
    let file = configs.get("front-proxy.yaml#0").expect("configs/deploy/front-proxy.yaml");
    let (_, in_cluster) = configs
        .iter()
        .find(|(origin, _)| origin.contains("ConfigMap front-proxy-config"))
        .expect("the front proxy's ConfigMap");
    assert_eq!(file.listeners, in_cluster.listeners);
    assert_eq!(file.clusters, in_cluster.clusters);
    let admin = |b: &Bootstrap| b.admin.as_ref().expect("admin").address;
    assert!(admin(file).ip().is_loopback(), "on a host the admin API stays on loopback");
    assert!(
        admin(in_cluster).ip().is_unspecified(),
        "in a Pod the kubelet probes the admin API on the Pod IP"
    );
}

/// `configs/deploy/kubernetes-xds`: the kustomize overlay whose sidecars take everything from a
/// control plane. Each patch replaces a sidecar ConfigMap of the base (same name, so the base's
/// Deployment mounts it unchanged) with a bootstrap that has listeners and clusters over ADS from
/// the `xds-control-plane` headless Service, and the Pod's flags name the node the control plane
/// keys on: the real binary validates the config with them, and refuses it without, as Envoy does.
#[test]
fn the_control_plane_variant_drives_every_sidecar_over_ads_as_its_pod_names_it() {
    let docs = documents();
    let overlay = deploy_dir().join("kubernetes-xds");
    let text = std::fs::read_to_string(overlay.join("kustomization.yaml")).expect("kustomization.yaml");
    let kustomization: Value = serde_norway::from_str(&text).expect("kustomization.yaml parses");
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(resources.contains(&"../kubernetes"), "the overlay builds on the base: {resources:?}");
    let patches: Vec<&str> = kustomization["patches"]
        .as_sequence()
        .expect("patches")
        .iter()
        .map(|p| p["path"].as_str().expect("a patch file"))
        .collect();
    let base = |kind_: &str, pred: &dyn Fn(&Value) -> bool| {
        docs.iter()
            .filter(|(origin, d)| origin.starts_with("kubernetes/") && kind(d) == kind_ && pred(d))
            .map(|(_, d)| d.clone())
            .collect::<Vec<_>>()
    };
    let headless: Vec<String> = docs
        .iter()
        .filter(|(origin, d)| {
            origin.starts_with("kubernetes-xds/")
                && kind(d) == "Service"
                && d["spec"]["clusterIP"].as_str() == Some("None")
        })
        .map(|(_, d)| name(d).to_string())
        .collect();
    let mut sidecars = 0;
    for patch in patches {
        let origin = format!("kubernetes-xds/{patch}#0");
        let (_, doc) = docs.iter().find(|(o, _)| *o == origin).unwrap_or_else(|| panic!("{origin}"));
        let cm = name(doc).to_string();
        assert_eq!(kind(doc), "ConfigMap", "{origin}");
        assert_eq!(
            base("ConfigMap", &|d| name(d) == cm).len(),
            1,
            "{origin}: patches no ConfigMap of the base"
        );
        let text = doc["data"]["envoy.yaml"].as_str().expect("envoy.yaml");
        let b = load(text, &origin);
        assert!(
            b.listeners.is_empty() && b.tcp_listeners.is_empty(),
            "{origin}: listeners come from the control plane"
        );
        for (what, source) in [("lds", &b.xds.lds), ("cds", &b.xds.cds)] {
            let server = source.as_ref().and_then(|s| s.server.as_ref());
            let server = server.unwrap_or_else(|| panic!("{origin}: {what} is not from a management server"));
            assert!(server.ads, "{origin}: {what} over the aggregated stream");
            let cluster =
                b.clusters.iter().find(|c| c.name == server.cluster).expect("the xDS cluster is static");
            let hosts: Vec<String> = cluster.endpoints.iter().map(|e| e.host.clone()).collect();
            assert!(
                hosts.iter().all(|h| headless.contains(h)),
                "{origin}: the xDS cluster resolves {hosts:?}, not the overlay's headless Service {headless:?}"
            );
        }

        // The Deployment of the base that mounts this ConfigMap, and the node its flags name.
        let deployment = base("Deployment", &|d| {
            d["spec"]["template"]["spec"]["volumes"]
                .as_sequence()
                .is_some_and(|v| v.iter().any(|v| v["configMap"]["name"].as_str() == Some(cm.as_str())))
        });
        let [deployment] = deployment.as_slice() else { panic!("{origin}: one Deployment mounts {cm}") };
        let args: Vec<&str> = skiff_container(deployment)["args"]
            .as_sequence()
            .expect("skiff args")
            .iter()
            .map(|a| a.as_str().expect("string arg"))
            .collect();
        let service_cluster = flag(&args, "--service-cluster").expect("--service-cluster");
        let service_node = flag(&args, "--service-node").expect("--service-node");
        assert_eq!(service_node, "$(POD_NAME)", "{origin}: each Pod is its own node");

        let file = support::scratch_dir("deploy-xds").join(format!("{cm}.yaml"));
        std::fs::write(&file, text).expect("write the bootstrap");
        let validate = |node: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
                .args(["--mode", "validate", "-c"])
                .arg(&file)
                .args(node)
                .output()
                .expect("run skiff")
        };
        let pod = validate(&["--service-cluster", service_cluster, "--service-node", "service-a-7d9f-x2"]);
        assert!(pod.status.success(), "{origin}: {}", String::from_utf8_lossy(&pod.stderr));
        let bare = validate(&[]);
        assert!(!bare.status.success(), "{origin}: validates without a node");
        let stderr = String::from_utf8_lossy(&bare.stderr);
        assert!(stderr.contains("node 'id' and 'cluster' are required"), "{origin}: {stderr}");
        sidecars += 1;
    }
    assert_eq!(sidecars, 3, "services A, B and C");
}

/// The control plane variant end to end: service B's sidecar runs on the overlay's bootstrap (the
/// xDS cluster pointed at a test management server instead of the `xds-control-plane` Service),
/// with its Pod's flags, and the server serves it, for its node, exactly the listeners and
/// clusters the base's static ConfigMap holds (loopback ports instead of the Pod's). The sidecar
/// then proxies to its app as the static one does.
#[test]
fn a_sidecar_of_the_control_plane_variant_serves_what_its_control_plane_pushes() {
    let docs = documents();
    let config_map = |origin: &str| {
        let (_, doc) = docs.iter().find(|(o, _)| o == origin).unwrap_or_else(|| panic!("{origin}"));
        doc["data"]["envoy.yaml"].as_str().expect("envoy.yaml").to_string()
    };
    let app = support::TestUpstream::echo_named("service-b-app");
    let port = support::free_port();
    // The base's static resources as a control plane would serve them (proto JSON, "@type" on
    // each), on loopback ports.
    let static_text = config_map("kubernetes/service-b.yaml#0")
        .replace("address: 0.0.0.0, port_value: 8789", &format!("address: 127.0.0.1, port_value: {port}"))
        .replace("port_value: 8082", &format!("port_value: {}", app.addr.port()));
    let base: serde_json::Value = serde_norway::from_str(&static_text).expect("the base config");
    let typed = |list: &serde_json::Value, type_url: &str| -> Vec<serde_json::Value> {
        let list = list.as_array().expect("a list");
        list.iter()
            .map(|r| {
                let mut r = r.clone();
                r["@type"] = type_url.into();
                r
            })
            .collect()
    };
    let server = xds_server::XdsServer::start();
    server.push(
        "service-b-7d9f-x2",
        "1",
        vec![
            (xds_server::CDS, typed(&base["static_resources"]["clusters"], xds_server::CDS)),
            (xds_server::LDS, typed(&base["static_resources"]["listeners"], xds_server::LDS)),
        ],
    );
    let admin = support::free_port();
    let bootstrap = config_map("kubernetes-xds/service-b.yaml#0")
        .replace("type: STRICT_DNS", "type: STATIC")
        .replace(
            "address: xds-control-plane, port_value: 18000",
            &format!("address: 127.0.0.1, port_value: {}", server.addr.port()),
        )
        .replace("address: 0.0.0.0, port_value: 9901", &format!("address: 127.0.0.1, port_value: {admin}"));
    let skiff = support::Skiff::start(
        &bootstrap,
        &["--service-cluster", "service-b", "--service-node", "service-b-7d9f-x2"],
    );
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let answered = support::eventually(std::time::Duration::from_secs(15), || {
        support::Client::try_connect(proxy)
            .ok()
            .and_then(|mut c| c.request("service-b", "/", &[]))
            .is_some_and(|r| r.status == 200 && r.header("x-upstream") == Some("service-b-app"))
    });
    assert!(answered, "the sidecar never proxied to its app\n{}", skiff.log());
    // The control thread says LIVE just after the shards have the listener (never before).
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let live = support::eventually(std::time::Duration::from_secs(2), || {
        let (status, ready) = support::admin_request(admin, "GET", "/ready");
        (status, ready.trim()) == (200, "LIVE")
    });
    assert!(live, "/ready: {:?}", support::admin_request(admin, "GET", "/ready"));
    assert!(server.wait_ack("service-b-7d9f-x2", xds_server::LDS, "1", std::time::Duration::from_secs(5)));
}
