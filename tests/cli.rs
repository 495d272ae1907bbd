//! The command line as a user sees it: Envoy's flags and manifests start skiff unchanged, config
//! checks report file:line:col, signals drain, and start-up failures say what went wrong. Ends
//! with one seed config served exactly as written.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn skiff_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples")
}

/// Runs skiff to completion (for modes that exit on their own), with a time limit.
fn run(args: &[&str]) -> Output {
    let mut child = skiff_bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("skiff {args:?} did not exit");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_accepts_every_example_config() {
    for file in [
        "seed/front-envoy.yaml",
        "seed/service-a.yaml",
        "seed/service-b.yaml",
        "seed/service-c.yaml",
        "v3/service-a.yaml",
        "envoyproxy-examples/route-mirror/envoy.yaml",
    ] {
        let path = examples().join(file);
        let out = run(&["--mode", "validate", "-c", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{file}:\n{}", stderr(&out));
    }
}

#[test]
fn validate_rejects_a_broken_file_with_its_location() {
    let dir = scratch_dir("cli-bad");
    let path = dir.join("broken.yaml");
    let yaml = simple_config(&[dead_port()]).replace("connect_timeout: 0.5s", "connect_timeout: 5 parsecs");
    std::fs::write(&path, &yaml).unwrap();
    let line = yaml.lines().position(|l| l.contains("parsecs")).unwrap() + 1;
    let out = run(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let want = format!("broken.yaml:{line}:");
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert!(err.contains(": static_resources.clusters[0].connect_timeout: "), "{err}");
    // A missing file is an error that names it, not a panic.
    let out = run(&["--mode", "validate", "-c", "/nonexistent/skiff/envoy.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/skiff/envoy.yaml"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_the_main_flags() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["-c, --config-path", "--concurrency", "--io-driver", "--config-yaml", "--mode"] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn unknown_flag_fails_clearly() {
    let out = run(&["--no-such-flag", "-c", "x.yaml"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(err.to_lowercase().contains("unexpected argument") || err.contains("unknown"), "{err}");
}

#[test]
fn envoy_and_istio_command_lines_are_accepted_and_log_format_applies() {
    let up = TestUpstream::named("up");
    let dir = scratch_dir("cli-flags");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, simple_config(&[up.addr])).unwrap();
    // The seed's docker-compose command line, then the flags Istio's pilot-agent adds.
    let p = Proc::spawn(
        &[
            "-c",
            path.to_str().unwrap(),
            "--v2-config-only",
            "-l",
            "info",
            "--service-cluster",
            "service-a",
            "--service-node",
            "service-a",
            "--log-format",
            "[METADATA][%Y-%m-%d %T.%e][%t][%l][%n] %v",
            "--base-id",
            "1",
            "--restart-epoch",
            "0",
            "--disable-hot-restart",
            "--drain-strategy",
            "immediate",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--allow-unknown-fields",
            "--component-log-level",
            "upstream:debug",
            "--skip-deprecated-logs",
            "--max-obj-name-len",
            "120",
        ],
        "cli-flags-run",
    );
    assert!(eventually(Duration::from_secs(10), || p.log().contains("starting:")), "{}", p.log());
    let addr = listener_from_log(&p.log(), "main").expect("listener in log");
    assert_eq!(get(addr, "/").text(), "up");
    let log = p.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l.starts_with("[METADATA][20"), "line not in --log-format: {l:?}\n{log}");
    }
    assert!(log.contains("\"service-a\""), "service cluster not logged:\n{log}");
    assert!(!log.contains("][debug]["), "-l info logs no debug lines:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A skiff started by hand (not via the harness's -c): stderr to a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], tag: &str) -> Proc {
        let dir = scratch_dir(tag);
        let log = dir.join("skiff.log");
        let child = skiff_bin()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn skiff");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listener_from_log(log: &str, name: &str) -> Option<SocketAddr> {
    let needle = format!("listener {name:?} listening on ");
    log.lines().find_map(|l| l.split(&needle).nth(1)).and_then(|a| a.trim().parse().ok())
}

#[test]
fn config_yaml_runs_without_a_file() {
    let up = TestUpstream::named("inline");
    let yaml = simple_config(&[up.addr]);
    let mut p = Proc::spawn(&["--config-yaml", &yaml, "--concurrency", "1"], "cli-inline");
    assert!(eventually(Duration::from_secs(10), || p.log().contains("starting:")), "{}", p.log());
    let addr = listener_from_log(&p.log(), "main").expect("listener in log");
    assert_eq!(get(addr, "/").text(), "inline");
    assert!(p.wait_exit(Duration::from_millis(100)).is_none());
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        if s.path == "/slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Reply::ok("done")
    }));
    let mut skiff = Skiff::start(&simple_config(&[up.addr]).replace("timeout: 2s", "timeout: 5s"), &[]);
    let addr = skiff.listener("main");
    let mut slow = Client::connect(addr);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        eventually(Duration::from_secs(5), || up.count() == 1),
        "slow request never reached the upstream"
    );
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(skiff.child.id() as i32, libc::SIGTERM);
    }
    // New connections are refused while the slow request is still running.
    assert!(
        eventually(Duration::from_secs(1), || Client::try_connect(addr).is_err()),
        "still accepting after SIGTERM:\n{}",
        skiff.log()
    );
    let r = slow.read_response(false).expect("in-flight request answered during the drain");
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    let status = skiff.terminate().expect("exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", skiff.log());
    assert!(skiff.log().contains("drain"), "{}", skiff.log());
}

#[test]
fn epoll_driver_can_be_forced() {
    let up = TestUpstream::named("epoll");
    let skiff = Skiff::start(&simple_config(&[up.addr]), &["--io-driver", "epoll", "--concurrency", "1"]);
    assert!(skiff.log().contains("epoll driver"), "{}", skiff.log());
    assert_eq!(get(skiff.listener("main"), "/").text(), "epoll");
}

/// The cores each of a process's threads may run on, as /proc lists them ("0-1", "1").
fn thread_affinities(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    let mut lists: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|s| {
            s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
        })
        .collect();
    lists.sort();
    lists
}

#[test]
fn shards_are_pinned_to_their_cores_unless_shard_affinity_is_none() {
    let up = TestUpstream::named("affinity");
    let allowed = thread_affinities(std::process::id())[0].clone();
    // One shard per allowed core (the default): each shard's thread runs on one core only.
    let pinned = Skiff::start(&simple_config(&[up.addr]), &[]);
    assert!(pinned.log().contains("pinned to their cores"), "{}", pinned.log());
    let lists = thread_affinities(pinned.pid());
    assert!(lists.iter().any(|l| !l.contains(['-', ','])), "no thread pinned to one core: {lists:?}");
    assert_eq!(get(pinned.listener("main"), "/").text(), "affinity");
    // `none`: every thread keeps the cores the process was given, and the log says nothing of pinning.
    let free = Skiff::start(&simple_config(&[up.addr]), &["--shard-affinity", "none"]);
    assert!(!free.log().contains("pinned"), "{}", free.log());
    let lists = thread_affinities(free.pid());
    assert!(lists.iter().all(|l| *l == allowed), "{lists:?}, allowed {allowed}");
    assert_eq!(get(free.listener("main"), "/").text(), "affinity");
}

#[test]
fn port_in_use_exits_1_naming_the_listener() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = simple_config(&[dead_port()]).replace("port_value: 0 }", &format!("port_value: {port} }}"));
    assert!(yaml.contains(&format!("port_value: {port} }}")));
    let dir = scratch_dir("cli-busy");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = run(&["-c", path.to_str().unwrap(), "--concurrency", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("listener \"main\""), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The seed's service-c sidecar, unchanged: its listener on 0.0.0.0:8790 forwards to `service_c`
/// port 8083, which a hosts file maps to 127.0.0.1.
#[test]
fn seed_service_c_serves_unchanged() {
    let upstream = match TestUpstream::echo_named_at("127.0.0.1:8083".parse().unwrap(), "service-c") {
        Ok(u) => u,
        Err(e) => {
            println!("SKIPPED: 127.0.0.1:8083 is busy ({e})");
            return;
        }
    };
    for busy in ["0.0.0.0:8790", "127.0.0.1:9901"] {
        if let Err(e) = TcpListener::bind(busy) {
            println!("SKIPPED: {busy} is busy ({e})");
            return;
        }
    }
    let dir = scratch_dir("seed-c");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 service_c\n").unwrap();
    let config = examples().join("seed/service-c.yaml");
    let mut p = Proc::spawn(
        &[
            "-c",
            config.to_str().unwrap(),
            "--v2-config-only",
            "-l",
            "info",
            "--service-cluster",
            "service-c",
            "--service-node",
            "service-c",
            "--log-format",
            "[METADATA][%Y-%m-%d %T.%e][%t][%l][%n] %v",
            "--hosts-file",
            hosts.to_str().unwrap(),
            "--concurrency",
            "2",
        ],
        "seed-c-run",
    );
    assert!(eventually(Duration::from_secs(10), || p.log().contains("starting:")), "{}", p.log());
    let addr: SocketAddr = "127.0.0.1:8790".parse().unwrap();
    let mut ok = None;
    eventually(Duration::from_secs(3), || {
        ok = Client::try_connect(addr).ok().and_then(|mut c| c.request("service-c", "/trace/1", &[]));
        ok.is_some()
    });
    let r = ok.unwrap_or_else(|| panic!("no answer on 8790:\n{}", p.log()));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log());
    assert_eq!(r.first_line(), "service-c");
    assert!(r.text().contains("GET /trace/1"), "{}", r.text());
    assert_eq!(upstream.count(), 1);
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(p.child.id() as i32, libc::SIGTERM);
    }
    let status = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", p.log());
    let mut log = String::new();
    let _ = std::fs::File::open(&p.log).and_then(|mut f| f.read_to_string(&mut log));
    assert!(log.lines().all(|l| l.is_empty() || l.starts_with("[METADATA][20")), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drain_time_bounds_the_shutdown() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        std::thread::sleep(Duration::from_secs(4));
        Reply::ok("late")
    }));
    let mut skiff = Skiff::start(
        &simple_config(&[up.addr]).replace("timeout: 2s", "timeout: 10s"),
        &["--drain-time-s", "1"],
    );
    let mut slow = Client::connect(skiff.listener("main"));
    slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    let sent = Instant::now();
    let status = skiff.terminate().expect("exits");
    assert!(sent.elapsed() < Duration::from_millis(3500), "took {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(0));
    assert!(skiff.log().contains("drain time over"), "{}", skiff.log());
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        std::thread::sleep(Duration::from_secs(5));
        Reply::ok("late")
    }));
    // Default --drain-time-s (600 s): only the second signal can make this quick.
    let mut skiff = Skiff::start(&simple_config(&[up.addr]).replace("timeout: 2s", "timeout: 10s"), &[]);
    let mut slow = Client::connect(skiff.listener("main"));
    slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(skiff.child.id() as i32, libc::SIGTERM);
    }
    assert!(skiff.wait_for_log("draining", Duration::from_secs(3)), "{}", skiff.log());
    let sent = Instant::now();
    let status = skiff.terminate().expect("exits on the second SIGTERM");
    assert!(sent.elapsed() < Duration::from_secs(2), "took {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(0));
    assert!(skiff.log().contains("received again"), "{}", skiff.log());
}

#[test]
fn validate_takes_inline_yaml_and_binds_nothing() {
    // The port is held by us: validate must not try to bind it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = simple_config(&[dead_port()]).replace("port_value: 0 }", &format!("port_value: {port} }}"));
    let out = run(&["--mode", "validate", "--config-yaml", &yaml]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bad = yaml.replace("type: STATIC", "type: SOMETIMES");
    let out = run(&["--mode", "validate", "--config-yaml", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--config-yaml:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("SOMETIMES"), "{}", stderr(&out));
}

#[test]
fn bad_log_level_and_missing_config_fail_clearly() {
    let out = run(&["-l", "chatty", "--config-yaml", "static_resources: {}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chatty"), "{}", stderr(&out));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--config-path"), "{}", stderr(&out));
}

/// Shutdown times near 2^63 seconds used to overflow an `Instant` (an abort on SIGTERM); they are
/// capped at about 100 years when parsed.
#[test]
fn huge_drain_and_shutdown_times_still_exit_cleanly_on_sigterm() {
    let up = TestUpstream::named("huge");
    let huge = "9223372036854775807";
    let cases: [&[&str]; 3] = [
        &["--drain-time-s", huge],
        &["--parent-shutdown-time-s", huge],
        &["--drain-time-s", huge, "--parent-shutdown-time-s", huge],
    ];
    for args in cases {
        let mut skiff = Skiff::start(&simple_config(&[up.addr]), args);
        assert_eq!(get(skiff.listener("main"), "/").text(), "huge");
        let status = skiff.terminate().expect("exits after SIGTERM");
        assert_eq!(status.code(), Some(0), "{args:?}: {}", skiff.log());
    }
}

/// `--mode validate` names the fields it accepts without acting on, so "valid" does not read as
/// "enforced".
#[test]
fn validate_warns_about_preconnect_policy_but_not_enforced_endpoint_health_status() {
    let yaml = simple_config(&[dead_port()])
        .replace(
            "      connect_timeout: 0.5s\n",
            "      connect_timeout: 0.5s\n      preconnect_policy: { per_upstream_preconnect_ratio: 1.5 }\n",
        )
        .replace(
            "              - endpoint:\n",
            "              - health_status: UNHEALTHY\n                endpoint:\n",
        );
    let out = run(&["--mode", "validate", "--config-yaml", &yaml]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("static_resources.clusters[0].preconnect_policy: preconnect_policy is accepted but ignored (connections are made on demand)"),
        "{err}"
    );
    // Declared health is enforced (the load balancer skips the endpoint): no warning.
    assert!(!err.contains("health_status"), "{err}");
}
