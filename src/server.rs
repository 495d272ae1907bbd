//! The process: starts logging, loads the config, starts the control thread and the shards, and
//! handles signals as Envoy does: SIGTERM/SIGINT drain gracefully, SIGUSR1 reopens the access-log
//! files (the admin's too), SIGHUP is logged and ignored. Owns process lifetime only; no request logic.

use crate::admin::{self, AdminState, ServerInfo};
use crate::cli::{Mode, Options, ShardAffinity};
use crate::control::{Control, Shards, Source};
use crate::dns::Resolver;
use crate::telemetry::{NodeInfo, Telemetry};
use crate::{logging, shard};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub fn run(opts: Options) -> ExitCode {
    let Some(level) = logging::parse_level(&opts.log_level) else {
        eprintln!(
            "skiff: unknown log level {:?} (trace, debug, info, warning, error, critical, off)",
            opts.log_level
        );
        return ExitCode::from(1);
    };
    logging::init(level, opts.log_format.as_deref());

    let source = match (&opts.config_path, &opts.config_yaml) {
        (Some(path), None) => Source::File(path.clone()),
        (None, Some(yaml)) => Source::Inline(yaml.clone()),
        (Some(_), Some(_)) => {
            log::error!("give either --config-path or --config-yaml, not both");
            return ExitCode::from(1);
        }
        (None, None) => {
            log::error!("no config: use -c/--config-path FILE or --config-yaml YAML (see --help)");
            return ExitCode::from(1);
        }
    };
    let loaded = match source.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &loaded.1.warnings {
        log::warn!("{w}");
    }
    // As Envoy: a subscription, even to a file, names the node (the command line's names win).
    let xds = &loaded.1.bootstrap.xds;
    let node_id = opts.service_node.as_deref().unwrap_or(&xds.node_id);
    let node_cluster = opts.service_cluster.as_deref().unwrap_or(&xds.node_cluster);
    if (xds.lds.is_some() || xds.cds.is_some()) && (node_id.is_empty() || node_cluster.is_empty()) {
        log::error!(
            "{}: dynamic_resources: node 'id' and 'cluster' are required. Set it either in 'node' config or \
             via --service-node and --service-cluster options.",
            source_name(&source)
        );
        return ExitCode::from(1);
    }
    // So does an SDS secret from a file (Envoy's words, naming the secret's kind).
    let unnamed = node_id.is_empty() || node_cluster.is_empty();
    if let Some(secret) = loaded.1.bootstrap.sds_secrets().first().filter(|_| unnamed) {
        let api = match secret.kind {
            crate::config::secrets::Kind::Certificate => "TlsCertificateSdsApi",
            crate::config::secrets::Kind::Validation => "CertificateValidationContextSdsApi",
        };
        log::error!(
            "{}: {api}: node 'id' and 'cluster' are required. Set it either in 'node' config or via \
             --service-node and --service-cluster options.",
            source_name(&source)
        );
        return ExitCode::from(1);
    }
    if opts.mode == Mode::Validate {
        log::info!("configuration {} OK", source_name(&source));
        return ExitCode::SUCCESS;
    }

    let driver = match shard::choose_driver(opts.io_driver) {
        Ok(d) => d,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let concurrency = opts.concurrency.unwrap_or(cores.len()).max(1);
    // Signals are taken by sigwait in this thread only; every thread spawned after inherits the mask.
    let signals = block_signals();

    let mut resolver = Resolver::system();
    resolver.hosts_file = opts.hosts_file.clone();
    let check_every = Duration::from_secs(opts.config_check_interval_s.max(1));
    // Spans name this node as Envoy's local info does: the command line's names, else the
    // bootstrap's `node`.
    let node = NodeInfo { service_cluster: node_cluster.to_string(), service_node: node_id.to_string() };
    let telemetry = Telemetry::new(node.clone());
    let log_writer = telemetry.writer().clone();
    let (control, initial) =
        match Control::start(source, loaded, concurrency, resolver, check_every, telemetry) {
            Ok(started) => started,
            Err(e) => {
                log::error!("{e}");
                return ExitCode::from(1);
            }
        };
    // Pin only when the shards use exactly the cores this process may run on. With fewer shards
    // than allowed cores (a Kubernetes pod without the static CPU manager sees every core of the
    // node) pinning would stack every such process on the first cores; let the kernel place them
    // instead.
    let pinned = opts.shard_affinity == ShardAffinity::Auto && concurrency == cores.len();
    log::info!(
        "skiff {} starting: {concurrency} shard(s){}, {driver} driver, service cluster {:?}, node {:?}",
        env!("CARGO_PKG_VERSION"),
        if pinned { " pinned to their cores" } else { "" },
        node.service_cluster,
        node.service_node,
    );
    let mut handles = Vec::with_capacity(concurrency);
    for id in 0..concurrency {
        let core = cores.get(id).copied().filter(|_| pinned);
        match shard::spawn(id, core, driver, initial.clone(), log_writer.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                log::error!("cannot start shard {id}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let info = ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        service_cluster: opts.service_cluster.clone().unwrap_or_default(),
        service_node: opts.service_node.clone().unwrap_or_default(),
        node_id: node.service_node.clone(),
        node_cluster: node.service_cluster.clone(),
        service_zone: opts.service_zone.clone().unwrap_or_default(),
        concurrency,
        io_driver: driver.to_string(),
        command_line: std::env::args().collect(),
    };
    let admin_config = initial.bootstrap.admin.clone();
    let admin = AdminState::new(info, initial.clone());
    if let Some(config) = admin_config {
        let addr = config.address;
        match admin::spawn(addr, admin.clone(), config.access_log_path.as_deref()) {
            Ok(bound) => log::info!("admin listening on {bound}"),
            Err(e) => {
                log::error!("admin: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let shards = Shards::new(&handles);
    admin.set_shards(shards.clone());
    drop(initial);
    let (stop_tx, stop_rx) = futures_channel::oneshot::channel();
    let control = match control.spawn(shards.clone(), Some(admin.clone()), stop_rx) {
        Ok(c) => c,
        Err(e) => {
            log::error!("cannot start the control thread: {e}");
            return ExitCode::from(1);
        }
    };

    let signal = wait_for_stop(&signals, &log_writer, &admin);
    log::info!(
        "{signal} received: draining (up to {} s)",
        opts.drain_time_s.min(opts.parent_shutdown_time_s)
    );
    admin.set_draining();
    let _ = stop_tx.send(());
    let telemetry = control.join().ok();
    shards.drain();
    // None: the time is too far away to represent (`--drain-time-s` near 2^63), i.e. no deadline.
    let deadline =
        Instant::now().checked_add(Duration::from_secs(opts.drain_time_s.min(opts.parent_shutdown_time_s)));
    loop {
        let open = shards.active_connections();
        if open == 0 {
            log::info!("drained; exiting");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!("drain time over with {open} connection(s) open; exiting");
            break;
        }
        // A second SIGTERM/SIGINT (an impatient operator, a second Ctrl-C) ends the drain now
        // rather than after up to --drain-time-s (600 s by default).
        match signal_within(&signals, Duration::from_millis(20)) {
            Some(Signal::Stop(again)) => {
                log::warn!("{again} received again: exiting with {open} connection(s) open");
                break;
            }
            Some(Signal::Reopen) => reopen_logs(&log_writer, &admin),
            Some(Signal::Hangup) => eat_sighup(),
            None => {}
        }
    }
    // Shards hand their access-log lines over every 100 ms; let the last batch reach the disk.
    std::thread::sleep(Duration::from_millis(150));
    log_writer.sync(Duration::from_secs(1));
    // Spans wait up to a flush interval (1 s) in their reporter's queue: send them now.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    ExitCode::SUCCESS
}

/// What a signal asks of the process.
enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGUSR1: reopen the access-log files (logrotate moved them away).
    Reopen,
    /// SIGHUP: ignored, as Envoy does (its default action would kill a proxy whose terminal
    /// went away), but said in the log.
    Hangup,
}

fn signal(sig: libc::c_int) -> Option<Signal> {
    match sig {
        libc::SIGINT => Some(Signal::Stop("SIGINT")),
        libc::SIGTERM => Some(Signal::Stop("SIGTERM")),
        libc::SIGUSR1 => Some(Signal::Reopen),
        libc::SIGHUP => Some(Signal::Hangup),
        _ => None,
    }
}

/// Envoy's words, so log alerts written for it match.
fn reopen_logs(writer: &crate::access_log::Writer, admin: &AdminState) {
    log::info!("caught SIGUSR1: reopening access logs");
    writer.reopen();
    admin.reopen_access_log();
}

fn eat_sighup() {
    log::warn!("caught and eating SIGHUP");
}

/// Blocks the signals this thread takes with sigwait: every thread spawned later inherits the
/// mask, so no other thread sees them, and SIGHUP's default action (exit) never runs.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a zeroed, locally owned sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `limit` (under a second) for one of the blocked signals.
fn signal_within(set: &libc::sigset_t, limit: Duration) -> Option<Signal> {
    let timeout = libc::timespec { tv_sec: 0, tv_nsec: limit.subsec_nanos().into() };
    // SAFETY: `set` was initialised by block_signals; sigtimedwait writes nothing through the null
    // info pointer and only reads `timeout`.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    signal(sig)
}

/// Waits for SIGTERM or SIGINT, reopening the access logs on every SIGUSR1 meanwhile.
fn wait_for_stop(
    set: &libc::sigset_t,
    writer: &crate::access_log::Writer,
    admin: &AdminState,
) -> &'static str {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` was initialised by block_signals; sigwait writes only `sig`.
        let rc = unsafe { libc::sigwait(set, &mut sig) };
        match (rc, signal(sig)) {
            (0, Some(Signal::Stop(name))) => return name,
            (0, Some(Signal::Reopen)) => reopen_logs(writer, admin),
            (0, Some(Signal::Hangup)) => eat_sighup(),
            // sigwait fails only on an invalid set; treat it as a stop rather than spin.
            (0, None) => {}
            _ => return "SIGTERM",
        }
    }
}

/// The config's name in messages: its path, or `--config-yaml`.
fn source_name(source: &Source) -> String {
    match source {
        Source::File(p) => p.display().to_string(),
        Source::Inline(_) => "--config-yaml".into(),
    }
}
