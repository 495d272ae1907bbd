//! The interval sweep of one detector: Envoy's `onIntervalTimer`. Ends due ejections, takes each
//! host's tally of the interval that just closed, and runs the success-rate and
//! failure-percentage detectors on it, once for external-origin results and once for local-origin
//! ones. Called by the control thread on each `interval` tick; shares with the shards only the
//! per-host atomics its parent module owns (it reads tallies with one swap each and ejects through
//! the same compare-and-swap as a shard). Owns no timer: `Detector::until_next_tick` tells the
//! control thread when to call.

use super::{Detector, HostMonitor, Kind, Origin, DEPRECATED_SUCCESS_RATE, NO_RATE, RESULT};
use crate::config::OutlierDetection;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One sweep of `d` configured by `c`; `roll` gives random numbers for `enforcing_*` rolls.
pub fn sweep(d: &Detector, c: &OutlierDetection, roll: &impl Fn() -> u64) {
    let hosts: Vec<Arc<HostMonitor>> =
        d.hosts.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, m)| m.clone()).collect();
    let now = super::now_ms();
    let tallies: Vec<[u64; 2]> = hosts
        .iter()
        .map(|h| {
            d.end_if_due(h, now);
            h.success_rate.iter().for_each(|r| r.set(NO_RATE));
            [h.tally.0[0].swap(0, Relaxed), h.tally.0[1].swap(0, Relaxed)]
        })
        .collect();
    for origin in [Origin::External, Origin::Local] {
        let results: Vec<(u64, u64)> =
            tallies.iter().map(|t| (t[origin as usize] >> 32, t[origin as usize] % RESULT)).collect();
        detect(d, c, &hosts, &results, origin, roll);
    }
}

/// Envoy's `processSuccessRateEjections` for one origin, given each host's (results, successes).
fn detect(
    d: &Detector,
    c: &OutlierDetection,
    hosts: &[Arc<HostMonitor>],
    results: &[(u64, u64)],
    origin: Origin,
    roll: &impl Fn() -> u64,
) {
    let numbers = &d.rates[origin as usize];
    numbers.iter().for_each(|r| r.set(NO_RATE));
    let (sr, fp) = (c.success_rate, c.failure_percentage);
    let n = hosts.len();
    if n < sr.minimum_hosts as usize && n < fp.minimum_hosts as usize {
        return;
    }
    let mut by_rate: Vec<(&HostMonitor, f64)> = Vec::new();
    let mut by_failures: Vec<(&HostMonitor, f64)> = Vec::new();
    for (host, &(total, ok)) in hosts.iter().zip(results) {
        // An ejected host is not judged (its few results would be panic traffic).
        if host.ejected_until.load(Relaxed) != 0 || total == 0 {
            continue;
        }
        let rate = ok as f64 * 100.0 / total as f64;
        if total >= u64::from(sr.request_volume.min(fp.request_volume)) {
            host.success_rate[origin as usize].set(rate);
        }
        if total >= u64::from(sr.request_volume) {
            by_rate.push((host, rate));
        }
        if total >= u64::from(fp.request_volume) {
            by_failures.push((host, rate));
        }
    }
    let (rate_kind, failure_kind) = match origin {
        Origin::External => (Kind::SuccessRate, Kind::FailurePercentage),
        Origin::Local => (Kind::LocalOriginSuccessRate, Kind::LocalOriginFailurePercentage),
    };
    if !by_rate.is_empty() && by_rate.len() >= sr.minimum_hosts as usize {
        let (mean, threshold) = threshold(&by_rate, c.success_rate_stdev_factor);
        numbers[0].set(mean);
        numbers[1].set(threshold);
        for (host, rate) in &by_rate {
            if *rate < threshold {
                d.counters[DEPRECATED_SUCCESS_RATE].fetch_add(1, Relaxed);
                found(d, c, n, host, rate_kind, roll);
            }
        }
    }
    if !by_failures.is_empty() && by_failures.len() >= fp.minimum_hosts as usize {
        let limit = f64::from(c.failure_percentage_threshold);
        for (host, rate) in &by_failures {
            if 100.0 - rate >= limit {
                found(d, c, n, host, failure_kind, roll);
            }
        }
    }
}

fn found(
    d: &Detector,
    c: &OutlierDetection,
    n: usize,
    host: &HostMonitor,
    kind: Kind,
    roll: &impl Fn() -> u64,
) {
    d.counters[kind.counters().0].fetch_add(1, Relaxed);
    d.eject(c, n, host, kind, roll);
}

/// Envoy's `successRateEjectionThreshold`: the mean success rate and mean − factor/1000 × the
/// population standard deviation.
fn threshold(rates: &[(&HostMonitor, f64)], stdev_factor: u32) -> (f64, f64) {
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    (mean, mean - f64::from(stdev_factor) / 1000.0 * variance.sqrt())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hosts, stat};
    use super::super::{Outcome, Outlier};
    use super::*;
    use crate::config::IntervalDetection;

    /// The consecutive detectors out of the way, so only the sweep ejects.
    fn interval_only() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 1_000_000,
            consecutive_gateway_failure: 1_000_000,
            consecutive_local_origin_failure: 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn envoy_s_worked_example_threshold() {
        // Envoy's comment: {50, 100, 100, 100, 100} has mean 90, stdev 20, threshold 52 at 1.9.
        let h = HostMonitor::default();
        let rates: Vec<(&HostMonitor, f64)> = [50.0, 100.0, 100.0, 100.0, 100.0].map(|r| (&h, r)).to_vec();
        assert_eq!(threshold(&rates, 1900), (90.0, 52.0));
    }

    #[test]
    fn the_host_below_the_threshold_is_ejected_and_the_numbers_are_kept() {
        let config = OutlierDetection {
            max_ejection_percent: 50,
            success_rate: IntervalDetection { minimum_hosts: 5, request_volume: 10 },
            ..interval_only()
        };
        let o = Outlier::new(config, Arc::default(), &hosts(5));
        for round in 0..20 {
            for h in 0..5 {
                let failing = h == 0 && round % 4 != 0;
                o.report(h, Outcome::Status(if failing { 503 } else { 200 }), || 0);
            }
        }
        sweep(&o.detector, &config, &|| 0);
        assert!(!o.usable(0));
        assert!((1..5).all(|h| o.usable(h)));
        assert_eq!(o.success_rate(0, Origin::External), 25.0);
        assert_eq!(o.success_rate(1, Origin::External), 100.0);
        assert_eq!(o.success_rate(1, Origin::Local), -1.0);
        let (mean, threshold) = o.success_rate_numbers(Origin::External);
        assert_eq!(mean, 85.0);
        assert!((threshold - (85.0 - 1.9 * 30.0)).abs() < 1e-9, "{threshold}");
        assert_eq!(stat(&o, ".ejections_detected_success_rate"), 1);
        assert_eq!(stat(&o, ".ejections_enforced_success_rate"), 1);
        assert_eq!(stat(&o, "ejections_success_rate"), 1);
        assert_eq!(stat(&o, ".ejections_total"), 1);
        // 75 % failures is under the 85 % threshold; not enforced by default anyway.
        assert_eq!(stat(&o, ".ejections_detected_failure_percentage"), 0);
        // The next interval has only four hosts with results: no numbers.
        sweep(&o.detector, &config, &|| 0);
        assert_eq!(o.success_rate_numbers(Origin::External), (-1.0, -1.0));
    }

    #[test]
    fn failure_percentage_detects_and_enforces_when_asked() {
        let config = OutlierDetection {
            max_ejection_percent: 100,
            failure_percentage: IntervalDetection { minimum_hosts: 3, request_volume: 5 },
            enforcing_failure_percentage: 100,
            ..interval_only()
        };
        let o = Outlier::new(config, Arc::default(), &hosts(3));
        for _ in 0..10 {
            o.report(0, Outcome::Status(500), || 0);
            o.report(1, Outcome::Status(200), || 0);
            o.report(2, Outcome::Status(404), || 0);
        }
        sweep(&o.detector, &config, &|| 0);
        assert!(!o.usable(0) && o.usable(1) && o.usable(2));
        assert_eq!(stat(&o, ".ejections_detected_failure_percentage"), 1);
        assert_eq!(stat(&o, ".ejections_enforced_failure_percentage"), 1);
        // Three hosts are under success_rate_minimum_hosts (5): no success-rate numbers.
        assert_eq!(o.success_rate_numbers(Origin::External), (-1.0, -1.0));
        assert_eq!(o.success_rate(0, Origin::External), 0.0);
    }

    #[test]
    fn local_origin_results_are_judged_apart_when_split() {
        let config = OutlierDetection {
            max_ejection_percent: 100,
            split_external_local_origin_errors: true,
            success_rate: IntervalDetection { minimum_hosts: 5, request_volume: 10 },
            ..interval_only()
        };
        let o = Outlier::new(config, Arc::default(), &hosts(5));
        for _ in 0..10 {
            o.report(0, Outcome::ConnectFailed, || 0);
            for h in 1..5 {
                o.report(h, Outcome::Connected, || 0);
                o.report(h, Outcome::Status(200), || 0);
            }
        }
        sweep(&o.detector, &config, &|| 0);
        assert!(!o.usable(0));
        assert_eq!(stat(&o, ".ejections_enforced_local_origin_success_rate"), 1);
        assert_eq!(stat(&o, ".ejections_detected_success_rate"), 0);
        assert_eq!(o.success_rate_numbers(Origin::Local), (80.0, 80.0 - 1.9 * 40.0));
        assert_eq!(o.success_rate(0, Origin::External), -1.0);
    }

    #[test]
    fn a_passing_health_check_returns_an_ejected_host() {
        let config = OutlierDetection { max_ejection_percent: 100, ..Default::default() };
        let addrs = hosts(2);
        let o = Outlier::new(config, Arc::default(), &addrs);
        for _ in 0..5 {
            o.report(0, Outcome::Status(500), || 0);
        }
        assert!(!o.usable(0));
        o.detector.health_check_passed(addrs[0]);
        assert!(o.usable(0));
        assert_eq!(o.stats().1 .1, 0);
    }
}
