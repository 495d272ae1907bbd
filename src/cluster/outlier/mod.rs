//! Outlier detection (passive health), per request: each host's consecutive 5xx, gateway-failure
//! and local-origin-failure counts, the interval's result tallies the success-rate and
//! failure-percentage detectors read (`sweep`), each host's ejection, and the cluster's
//! `outlier_detection.*` stats. One `Detector` per cluster spec (created with its circuit breakers
//! by the control thread), one `HostMonitor` per host kept across snapshots while the host stays,
//! all of it relaxed atomics shared by every shard: a host ejected by one shard's request (or by
//! the control thread's interval sweep) is skipped by the very next pick on any shard, and counts
//! add up across shards as Envoy's per-process counters do.
//!
//! What a result counts as is Envoy's: a response code (5xx; 502/503/504 are also gateway
//! failures), a connect failure or reset before the head (503, or a local-origin failure with
//! `split_external_local_origin_errors`), a timeout (504, or local origin). An ejection ends at
//! the first `interval` tick past its ejection time — the tick Envoy's timer un-ejects it at —
//! seen by the sweep on that tick or, lazily, by a pick (or the admin) looking at the host first.
//! Owns no request, no timer and no choice of host: `ShardCluster::pick` asks `usable`, the
//! control thread runs `sweep::sweep` and unejects hosts a health check passes.

pub mod sweep;

use crate::config::OutlierDetection;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// What detected an outlier: the three consecutive-error detectors (on a result) and the four
/// interval detectors (on the sweep). Envoy's `OutlierEjectionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Consecutive5xx,
    GatewayFailure,
    LocalOrigin,
    SuccessRate,
    LocalOriginSuccessRate,
    FailurePercentage,
    LocalOriginFailurePercentage,
}

impl Kind {
    /// Its slot in `HostMonitor::consecutive` (the first three kinds only).
    fn index(self) -> usize {
        self as usize
    }

    /// Its `ejections_detected_*` and `ejections_enforced_*` counters.
    fn counters(self) -> (usize, usize) {
        let k = self as usize;
        (DETECTED_BASE + 2 * k, DETECTED_BASE + 2 * k + 1)
    }

    fn enforcing(self, c: &OutlierDetection) -> u32 {
        match self {
            Kind::Consecutive5xx => c.enforcing_consecutive_5xx,
            Kind::GatewayFailure => c.enforcing_consecutive_gateway_failure,
            Kind::LocalOrigin => c.enforcing_consecutive_local_origin_failure,
            Kind::SuccessRate => c.enforcing_success_rate,
            Kind::LocalOriginSuccessRate => c.enforcing_local_origin_success_rate,
            Kind::FailurePercentage => c.enforcing_failure_percentage,
            Kind::LocalOriginFailurePercentage => c.enforcing_failure_percentage_local_origin,
        }
    }

    /// Envoy's deprecated `ejections_total` counts these two only.
    fn in_deprecated_total(self) -> bool {
        matches!(self, Kind::Consecutive5xx | Kind::SuccessRate)
    }
}

/// Where a result came from, as `split_external_local_origin_errors` tells them apart: the
/// upstream's answer, or skiff's own connecting and waiting. Indexes `HostMonitor::tally`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    External = 0,
    Local = 1,
}

/// One interval's results of one origin in one word, so a result costs one atomic add: the count
/// above bit 32, the successes below (an interval would need 4 billion results on one host to
/// carry into the count).
const RESULT: u64 = 1 << 32;

/// A host's interval tallies, on their own cache line: every result writes one, and the pick's
/// read of `ejected_until` should not share its line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Tally([AtomicU64; 2]);

/// "No value" for a success rate or a threshold, as Envoy prints it.
const NO_RATE: f64 = -1.0;

/// An f64 shared as its bits; starts at `NO_RATE`.
#[derive(Debug)]
struct Rate(AtomicU64);

impl Default for Rate {
    fn default() -> Self {
        Rate(AtomicU64::new(NO_RATE.to_bits()))
    }
}

impl Rate {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }
}

/// A host's counts. `ejected_until` is 0 while the host serves, `EJECTING` while one shard ejects
/// it, else the process-clock millisecond its ejection ends.
#[derive(Debug, Default)]
pub struct HostMonitor {
    consecutive: [AtomicU32; 3],
    ejected_until: AtomicU64,
    /// Envoy's ejection-time backoff: base_ejection_time × this, up to max_ejection_time.
    backoff: AtomicU32,
    last_unejected: AtomicU64,
    num_ejections: AtomicU32,
    /// This interval's results per origin (count, successes): the sweep takes them.
    tally: Tally,
    /// Per origin, the success rate the last sweep found (`/clusters`), or `NO_RATE`.
    success_rate: [Rate; 2],
}

const EJECTING: u64 = u64::MAX;

/// Milliseconds since the first call, never 0 (0 means "not ejected").
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Counter names, in `Detector::counters` order (Envoy's names under `outlier_detection.`).
const COUNTERS: [&str; 20] = [
    "outlier_detection.ejections_total",
    "outlier_detection.ejections_enforced_total",
    "outlier_detection.ejections_overflow",
    "outlier_detection.ejections_consecutive_5xx",
    "outlier_detection.ejections_success_rate",
    // From DETECTED_BASE, detected then enforced, in `Kind` order.
    "outlier_detection.ejections_detected_consecutive_5xx",
    "outlier_detection.ejections_enforced_consecutive_5xx",
    "outlier_detection.ejections_detected_consecutive_gateway_failure",
    "outlier_detection.ejections_enforced_consecutive_gateway_failure",
    "outlier_detection.ejections_detected_consecutive_local_origin_failure",
    "outlier_detection.ejections_enforced_consecutive_local_origin_failure",
    "outlier_detection.ejections_detected_success_rate",
    "outlier_detection.ejections_enforced_success_rate",
    "outlier_detection.ejections_detected_local_origin_success_rate",
    "outlier_detection.ejections_enforced_local_origin_success_rate",
    "outlier_detection.ejections_detected_failure_percentage",
    "outlier_detection.ejections_enforced_failure_percentage",
    "outlier_detection.ejections_detected_local_origin_failure_percentage",
    "outlier_detection.ejections_enforced_local_origin_failure_percentage",
    // Envoy 1.40's degraded-host detection (`detect_degraded_hosts`, refused at load): always 0.
    "outlier_detection.ejections_detected_degradation",
];
const TOTAL: usize = 0;
const ENFORCED_TOTAL: usize = 1;
const OVERFLOW: usize = 2;
const DEPRECATED_5XX: usize = 3;
const DEPRECATED_SUCCESS_RATE: usize = 4;
const DETECTED_BASE: usize = 5;

/// A cluster's detector: its hosts' monitors (by address, so a host keeps its counts across
/// snapshots) and the per-process stats.
#[derive(Debug)]
pub struct Detector {
    hosts: Mutex<Vec<(SocketAddr, Arc<HostMonitor>)>>,
    ejections_active: AtomicU32,
    counters: [AtomicU64; 20],
    /// When the interval timer Envoy would run started: ejections end and sweeps run on its ticks.
    started: u64,
    /// Per origin, the last sweep's mean success rate and ejection threshold, or `NO_RATE`.
    rates: [[Rate; 2]; 2],
    /// The control thread runs this detector's sweeps (set once).
    pub sweeping: AtomicBool,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            hosts: Mutex::default(),
            ejections_active: AtomicU32::new(0),
            counters: Default::default(),
            started: now_ms(),
            rates: Default::default(),
            sweeping: AtomicBool::new(false),
        }
    }
}

impl Detector {
    /// The monitors of `endpoints`, in order: a host already known keeps its own; a host gone
    /// from the cluster takes its ejection with it (as Envoy's removed host does).
    pub fn monitors(&self, endpoints: &[SocketAddr]) -> Box<[Arc<HostMonitor>]> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = Vec::with_capacity(endpoints.len());
        for a in endpoints {
            let m = match hosts.iter().find(|(h, _)| h == a) {
                Some((_, m)) => m.clone(),
                None => Arc::default(),
            };
            kept.push((*a, m));
        }
        for (a, m) in hosts.iter() {
            if !endpoints.contains(a) && m.ejected_until.swap(0, Relaxed) != 0 {
                self.ejections_active.fetch_sub(1, Relaxed);
            }
        }
        let out = kept.iter().map(|(_, m)| m.clone()).collect();
        *hosts = kept;
        out
    }

    /// Ends `host`'s ejection if it is due at `now`; whether the host may take traffic.
    fn end_if_due(&self, host: &HostMonitor, now: u64) -> bool {
        match host.ejected_until.load(Relaxed) {
            0 => true,
            EJECTING => false,
            until if now < until => false,
            until => {
                self.uneject(host, until, now);
                true
            }
        }
    }

    /// Envoy's `unejectHost`, once for `until` however many threads see it end.
    fn uneject(&self, host: &HostMonitor, until: u64, now: u64) {
        if host.ejected_until.compare_exchange(until, 0, Relaxed, Relaxed).is_ok() {
            self.ejections_active.fetch_sub(1, Relaxed);
            host.consecutive.iter().for_each(|c| c.store(0, Relaxed));
            host.last_unejected.store(now, Relaxed);
        }
    }

    /// An active health check passed on `addr` (and it is healthy by its checks): an ejected
    /// host returns now, as Envoy's `successful_active_health_check_uneject_host` does.
    pub fn health_check_passed(&self, addr: SocketAddr) {
        let host = {
            let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts.iter().find(|(a, _)| *a == addr).map(|(_, m)| m.clone())
        };
        let Some(host) = host else { return };
        match host.ejected_until.load(Relaxed) {
            0 | EJECTING => {}
            until => self.uneject(&host, until, now_ms()),
        }
    }

    /// How long until the next interval tick (at least 1 ms).
    pub fn until_next_tick(&self, interval: std::time::Duration) -> std::time::Duration {
        let interval = (interval.as_millis() as u64).max(1);
        let now = now_ms();
        let next = self.started + ((now.saturating_sub(self.started)) / interval + 1) * interval;
        std::time::Duration::from_millis(next.saturating_sub(now).max(1))
    }

    /// Envoy's `DetectorImpl::ejectHost` (the caller counted the detection): checks
    /// `max_ejection_percent` of `total` hosts, rolls `enforcing_*`, and ejects for Envoy's
    /// backed-off time.
    fn eject(
        &self,
        c: &OutlierDetection,
        total: usize,
        host: &HostMonitor,
        kind: Kind,
        roll: &impl Fn() -> u64,
    ) {
        let total = total.max(1) as u64;
        let max = u64::from(c.max_ejection_percent.min(100));
        let enforcing = kind.enforcing(c);
        let enforce = enforcing >= 100 || (enforcing > 0 && roll() % 100 < u64::from(enforcing));
        loop {
            let active = self.ejections_active.load(Relaxed);
            let fits =
                100 * (u64::from(active) + 1) <= max * total || (c.always_eject_one_host && active == 0);
            if !fits {
                self.counters[OVERFLOW].fetch_add(1, Relaxed);
                return;
            }
            if !enforce {
                if kind.in_deprecated_total() {
                    self.counters[TOTAL].fetch_add(1, Relaxed);
                }
                return;
            }
            // The percentage is checked and the slot taken in one step, so two shards ejecting at
            // once cannot both pass the limit.
            if self.ejections_active.compare_exchange(active, active + 1, Relaxed, Relaxed).is_ok() {
                break;
            }
        }
        if host.ejected_until.compare_exchange(0, EJECTING, Relaxed, Relaxed).is_err() {
            // Another shard (or detector) ejected it meanwhile.
            self.ejections_active.fetch_sub(1, Relaxed);
            return;
        }
        if kind.in_deprecated_total() {
            self.counters[TOTAL].fetch_add(1, Relaxed);
        }
        self.counters[ENFORCED_TOTAL].fetch_add(1, Relaxed);
        self.counters[kind.counters().1].fetch_add(1, Relaxed);
        let now = now_ms();
        let interval = (c.interval.as_millis() as u64).max(1);
        let base = c.base_ejection_time.as_millis() as u64;
        let max_time = c.max_ejection_time.as_millis() as u64;
        // Envoy lowers the backoff by one on each tick the host spent healthy since it returned.
        let mut backoff = u64::from(host.backoff.load(Relaxed));
        let back = host.last_unejected.load(Relaxed);
        if back != 0 {
            backoff = backoff.saturating_sub(now.saturating_sub(back) / interval);
        }
        if backoff * base < max_time + base {
            backoff += 1;
        }
        host.backoff.store(backoff as u32, Relaxed);
        host.num_ejections.fetch_add(1, Relaxed);
        let jitter_max = c.max_ejection_time_jitter.as_millis() as u64;
        let jitter = if jitter_max > 0 { roll() % (jitter_max + 1) } else { 0 };
        let ends = now + (base * backoff).min(max_time) + jitter;
        // Envoy un-ejects on its interval timer: the first tick at or after the end.
        let ticks = (ends.saturating_sub(self.started)).div_ceil(interval);
        host.ejected_until.store((self.started + ticks * interval).max(1), Relaxed);
    }
}

/// A cluster's outlier detection as one snapshot carries it.
#[derive(Debug)]
pub struct Outlier {
    pub config: OutlierDetection,
    pub detector: Arc<Detector>,
    /// Aligned with the snapshot's endpoints.
    pub hosts: Box<[Arc<HostMonitor>]>,
    /// Whether results are tallied for the interval detectors: not when the cluster has fewer
    /// hosts than both detectors' `minimum_hosts`, as Envoy's sweep then looks at none.
    tally: bool,
}

/// What one attempt on a host came to, as the detector counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head with this status.
    Status(u16),
    /// The connection was made (or a pooled one taken): clears local-origin failures when split.
    Connected,
    /// Connect failure, or a reset before the response head.
    ConnectFailed,
    /// The upstream did not answer in time (route or per-try timeout).
    Timeout,
}

impl Outlier {
    pub fn new(config: OutlierDetection, detector: Arc<Detector>, endpoints: &[SocketAddr]) -> Self {
        let hosts = detector.monitors(endpoints);
        let least = config.success_rate.minimum_hosts.min(config.failure_percentage.minimum_hosts);
        let tally = endpoints.len() >= least as usize;
        Outlier { config, detector, hosts, tally }
    }

    /// Counts one result for `endpoint`; `roll` gives a random number when an `enforcing_*`
    /// percentage below 100 or a jitter needs one.
    pub fn report(&self, endpoint: usize, outcome: Outcome, roll: impl Fn() -> u64) {
        let Some(host) = self.hosts.get(endpoint) else { return };
        let split = self.config.split_external_local_origin_errors;
        let local = &host.tally.0[Origin::Local as usize];
        match outcome {
            Outcome::Status(code) => self.status(host, code, &roll),
            Outcome::Connected if split => {
                if self.tally {
                    local.fetch_add(RESULT + 1, Relaxed);
                }
                reset(&host.consecutive[Kind::LocalOrigin.index()]);
            }
            Outcome::Connected => {}
            Outcome::ConnectFailed | Outcome::Timeout if split => {
                if self.tally {
                    local.fetch_add(RESULT, Relaxed);
                }
                let n = host.consecutive[Kind::LocalOrigin.index()].fetch_add(1, Relaxed) + 1;
                if n == self.config.consecutive_local_origin_failure {
                    self.detected(host, Kind::LocalOrigin, &roll);
                }
            }
            Outcome::ConnectFailed => self.status(host, 503, &roll),
            Outcome::Timeout => self.status(host, 504, &roll),
        }
    }

    fn status(&self, host: &HostMonitor, code: u16, roll: &impl Fn() -> u64) {
        let failed = (500..600).contains(&code);
        // The one shared write a result costs (with enough hosts): the interval detectors' tally.
        if self.tally {
            host.tally.0[Origin::External as usize].fetch_add(RESULT + u64::from(!failed), Relaxed);
        }
        if !failed {
            reset(&host.consecutive[Kind::Consecutive5xx.index()]);
            reset(&host.consecutive[Kind::GatewayFailure.index()]);
            return;
        }
        let gateway = &host.consecutive[Kind::GatewayFailure.index()];
        if matches!(code, 502..=504) {
            if gateway.fetch_add(1, Relaxed) + 1 == self.config.consecutive_gateway_failure {
                self.detected(host, Kind::GatewayFailure, roll);
            }
        } else {
            reset(gateway);
        }
        let n = host.consecutive[Kind::Consecutive5xx.index()].fetch_add(1, Relaxed) + 1;
        if n == self.config.consecutive_5xx {
            self.detected(host, Kind::Consecutive5xx, roll);
        }
    }

    /// A detector's threshold was reached: Envoy's `onConsecutiveErrorWorker` and `ejectHost`.
    fn detected(&self, host: &HostMonitor, kind: Kind, roll: &impl Fn() -> u64) {
        let d = &*self.detector;
        if host.ejected_until.load(Relaxed) != 0 {
            return;
        }
        d.counters[kind.counters().0].fetch_add(1, Relaxed);
        d.eject(&self.config, self.hosts.len(), host, kind, roll);
        if kind == Kind::Consecutive5xx {
            d.counters[DEPRECATED_5XX].fetch_add(1, Relaxed);
        }
        host.consecutive[kind.index()].store(0, Relaxed);
    }

    /// Whether `endpoint` may take traffic: not ejected, or its ejection just ended (which this
    /// call records).
    pub fn usable(&self, endpoint: usize) -> bool {
        let Some(host) = self.hosts.get(endpoint) else { return true };
        // The usual case, a host in service, reads one word and no clock.
        host.ejected_until.load(Relaxed) == 0 || self.detector.end_if_due(host, now_ms())
    }

    /// Whether `endpoint` is ejected now (for `/clusters`: ends due ejections first).
    pub fn ejected(&self, endpoint: usize) -> bool {
        !self.usable(endpoint)
    }

    /// `endpoint`'s success rate (percent) of `origin` in the last swept interval, or -1.
    pub fn success_rate(&self, endpoint: usize, origin: Origin) -> f64 {
        self.hosts.get(endpoint).map_or(NO_RATE, |h| h.success_rate[origin as usize].get())
    }

    /// The last sweep's mean success rate and ejection threshold of `origin`, or -1 each.
    pub fn success_rate_numbers(&self, origin: Origin) -> (f64, f64) {
        let [mean, threshold] = &self.detector.rates[origin as usize];
        (mean.get(), threshold.get())
    }

    /// Envoy's panic mode at its default threshold (50 %, overprovisioning 1.4): with too few
    /// hosts left, every host takes traffic, ejected or not.
    pub fn panic(&self) -> bool {
        let total = self.hosts.len() as u64;
        let healthy = total.saturating_sub(u64::from(self.detector.ejections_active.load(Relaxed)));
        healthy * 140 < total * 50
    }

    /// `outlier_detection.*` stats as Envoy names them (counters, then the gauge). Ends due
    /// ejections first, as Envoy's timer would have.
    pub fn stats(&self) -> (Vec<(&'static str, u64)>, (&'static str, i64)) {
        (0..self.hosts.len()).for_each(|i| {
            self.usable(i);
        });
        let d = &*self.detector;
        let counters: Vec<(&'static str, u64)> =
            COUNTERS.iter().zip(&d.counters).map(|(n, c)| (*n, c.load(Relaxed))).collect();
        (counters, ("outlier_detection.ejections_active", i64::from(d.ejections_active.load(Relaxed))))
    }
}

/// Clears a counter without writing a shared cache line when it is already 0 (the usual case).
fn reset(c: &AtomicU32) {
    if c.load(Relaxed) != 0 {
        c.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) fn hosts(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i))).collect()
    }

    pub(super) fn stat(o: &Outlier, name: &str) -> u64 {
        o.stats().0.into_iter().find(|(n, _)| n.ends_with(name)).map_or(0, |(_, v)| v)
    }

    #[test]
    fn five_5xx_in_a_row_eject_and_a_success_between_resets() {
        let config = OutlierDetection { max_ejection_percent: 100, ..Default::default() };
        let o = Outlier::new(config, Arc::default(), &hosts(3));
        for _ in 0..4 {
            o.report(0, Outcome::Status(500), || 0);
        }
        o.report(0, Outcome::Status(200), || 0);
        for _ in 0..4 {
            o.report(0, Outcome::Status(503), || 0);
        }
        assert!(o.usable(0));
        o.report(0, Outcome::ConnectFailed, || 0);
        assert!(!o.usable(0));
        assert_eq!(stat(&o, ".ejections_enforced_consecutive_5xx"), 1);
        assert_eq!(stat(&o, ".ejections_detected_consecutive_5xx"), 1);
        assert_eq!(o.stats().1 .1, 1);
        // The five 503s were also five gateway failures: detected, not enforced by default.
        assert_eq!(stat(&o, ".ejections_detected_consecutive_gateway_failure"), 1);
        assert_eq!(stat(&o, ".ejections_enforced_consecutive_gateway_failure"), 0);
    }

    #[test]
    fn max_ejection_percent_overflows_and_panic_uses_everyone() {
        let o = Outlier::new(OutlierDetection::default(), Arc::default(), &hosts(3));
        for _ in 0..5 {
            o.report(1, Outcome::Status(500), || 0);
        }
        // 1 of 3 is 33 % > 10 %: detected, not ejected.
        assert!(o.usable(1));
        assert_eq!(stat(&o, ".ejections_overflow"), 1);
        assert!(!o.panic());
    }

    #[test]
    fn an_ejection_ends_on_the_interval_tick_after_its_time_and_hosts_keep_counts() {
        let config = OutlierDetection {
            max_ejection_percent: 100,
            interval: Duration::from_millis(20),
            base_ejection_time: Duration::from_millis(30),
            ..Default::default()
        };
        let detector = Arc::new(Detector::default());
        let o = Outlier::new(config, detector.clone(), &hosts(2));
        for _ in 0..5 {
            o.report(0, Outcome::Status(500), || 0);
        }
        assert!(!o.usable(0));
        // A new snapshot with the same host sees the same ejection.
        let again = Outlier::new(config, detector, &hosts(2));
        assert!(!again.usable(0));
        std::thread::sleep(Duration::from_millis(80));
        assert!(again.usable(0));
        assert_eq!(again.stats().1 .1, 0);
    }
}
