//! Signals as Envoy treats them: SIGHUP is logged and ignored (a proxy started from a terminal that
//! goes away keeps serving), SIGUSR1 reopens the access-log files, the admin's included, so
//! logrotate's `mv; kill -USR1` works.

mod support;

use std::time::Duration;
use support::*;

fn send(skiff: &Skiff, sig: libc::c_int) {
    // SAFETY: kill on the child we started.
    unsafe {
        libc::kill(skiff.child.id() as i32, sig);
    }
}

fn config_with_logs(
    upstream: std::net::SocketAddr,
    log: &std::path::Path,
    admin_log: &std::path::Path,
) -> String {
    let access_log = format!(
        "access_log:\n  - name: envoy.access_loggers.file\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n      path: {}\n      log_format:\n        text_format_source:\n          inline_string: \"%REQ(:PATH)%\\n\"\n",
        log.display()
    );
    format!(
        "{}admin:\n  access_log_path: {}\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n",
        custom_config(&[upstream], &indent(&access_log, 16), "", ""),
        admin_log.display()
    )
}

#[test]
fn sighup_is_ignored() {
    let upstream = TestUpstream::echo();
    let mut skiff = Skiff::start(&simple_config(&[upstream.addr]), &[]);
    send(&skiff, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(skiff.child.try_wait(), Ok(None)), "SIGHUP ended the process:\n{}", skiff.log());
    assert!(skiff.wait_for_log("caught and eating SIGHUP", Duration::from_secs(2)), "{}", skiff.log());
    let reply = get(skiff.listener("main"), "/after-hup");
    assert_eq!(reply.status, 200);
    // SIGTERM still drains and exits cleanly.
    assert!(skiff.terminate().is_some_and(|s| s.success()), "{}", skiff.log());
}

#[test]
fn sigusr1_reopens_access_logs_after_rotation() {
    let upstream = TestUpstream::echo();
    let dir = scratch_dir("signals");
    let log = dir.join("access.log");
    let admin_log = dir.join("admin.log");
    let skiff = Skiff::start(&config_with_logs(upstream.addr, &log, &admin_log), &[]);
    let (listener, admin) = (skiff.listener("main"), skiff.admin());
    assert_eq!(get(listener, "/before").status, 200);
    assert_eq!(admin_request(admin, "GET", "/ready?before").0, 200);
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .is_ok_and(|t| t.contains("/before"))));

    // logrotate's `create`-less rotation: move the file away, then signal.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    let admin_rotated = dir.join("admin.log.1");
    std::fs::rename(&admin_log, &admin_rotated).expect("rotate");
    send(&skiff, libc::SIGUSR1);
    assert!(
        skiff.wait_for_log("caught SIGUSR1: reopening access logs", Duration::from_secs(5)),
        "{}",
        skiff.log()
    );
    assert_eq!(get(listener, "/after").status, 200);
    assert_eq!(admin_request(admin, "GET", "/ready?after").0, 200);
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("/after"))),
        "no new file at {} with the new line; log:\n{}",
        log.display(),
        skiff.log()
    );
    let new = std::fs::read_to_string(&log).expect("new log");
    assert!(!new.contains("/before"), "{new}");
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");

    let admin_new = std::fs::read_to_string(&admin_log).expect("new admin log");
    assert!(admin_new.contains("/ready?after") && !admin_new.contains("/ready?before"), "{admin_new}");
    let admin_old = std::fs::read_to_string(&admin_rotated).expect("rotated admin log");
    assert!(admin_old.contains("/ready?before") && !admin_old.contains("/ready?after"), "{admin_old}");
}
