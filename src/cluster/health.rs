//! Which hosts of a cluster take traffic, as Envoy's load balancer decides it: each host's health
//! (declared `health_status`, active health-check verdict), priority levels with the
//! overprovisioning factor, degraded hosts as a fallback, and panic mode. `Plan` is that decision
//! precomputed (per priority: all, healthy and degraded hosts with their round-robin schedules,
//! and the load each level takes); the LB in `cluster/mod.rs` only draws from it. `Board` carries
//! active health-check verdicts from the control thread to every shard. Knows nothing of sockets,
//! requests or how checks run (`control/health_check.rs`).

use crate::config::{HealthStatus, LbHealth};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One host's health flags, as `/clusters` prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub declared: HealthStatus,
    /// Failing (or not yet passed) its active health check.
    pub failed_active_hc: bool,
    /// Ejected by outlier detection. Shown only: the pick skips ejected hosts itself
    /// (`ShardCluster::pick_for`), so a plan does not change with every ejection.
    pub failed_outlier_check: bool,
    /// Passing, with `x-envoy-degraded` in the check's response.
    pub degraded_active_hc: bool,
    /// Failed, and its last check timed out (Envoy's `ACTIVE_HC_TIMEOUT`; display only).
    pub active_hc_timeout: bool,
}

/// Where a host stands for the load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Healthy,
    Degraded,
    Unhealthy,
    /// Not counted in its level's health (DRAINING); used only in panic.
    Excluded,
}

impl Flags {
    pub fn class(self) -> Class {
        if self.failed_active_hc {
            return match self.declared {
                HealthStatus::Draining => Class::Excluded,
                _ => Class::Unhealthy,
            };
        }
        match self.declared {
            HealthStatus::Unknown | HealthStatus::Healthy if self.degraded_active_hc => Class::Degraded,
            HealthStatus::Unknown | HealthStatus::Healthy => Class::Healthy,
            HealthStatus::Degraded => Class::Degraded,
            HealthStatus::Unhealthy | HealthStatus::Timeout => Class::Unhealthy,
            HealthStatus::Draining => Class::Excluded,
        }
    }

    /// Envoy's `health_flags` text: `healthy`, or each set flag as `/name`, in Envoy's order.
    pub fn render(self) -> String {
        let mut out = String::new();
        if self.failed_active_hc {
            out.push_str("/failed_active_hc");
        }
        if self.failed_outlier_check {
            out.push_str("/failed_outlier_check");
        }
        if matches!(self.declared, HealthStatus::Unhealthy | HealthStatus::Timeout) {
            out.push_str("/failed_eds_health");
        }
        if self.degraded_active_hc {
            out.push_str("/degraded_active_hc");
        }
        if self.declared == HealthStatus::Degraded {
            out.push_str("/degraded_eds_health");
        }
        if self.active_hc_timeout {
            out.push_str("/active_hc_timeout");
        }
        if self.declared == HealthStatus::Draining {
            out.push_str("/eds_status_draining");
        }
        if out.is_empty() {
            out.push_str("healthy");
        }
        out
    }
}

/// Active health-check verdicts of one cluster's hosts (aligned with its snapshot's endpoints),
/// written by the control thread, read by every shard's LB. `version` changes after each write,
/// so a shard rebuilds its `Plan` only when a verdict changed: one relaxed load per pick, and no
/// board at all (no load) for a cluster without health checks.
#[derive(Debug)]
pub struct Board {
    version: AtomicU64,
    failed: Box<[AtomicBool]>,
    degraded: Box<[AtomicBool]>,
    timed_out: Box<[AtomicBool]>,
    /// Set by a shard when it opens a connection to the cluster: the checker then leaves its
    /// `no_traffic_interval` for `interval`, as Envoy does once `upstream_cx_total` is used.
    traffic: AtomicBool,
    /// `cluster.<name>.health_check.*` counters, written by the checker, read by the admin.
    pub counters: CheckCounters,
}

/// Envoy's `health_check.{attempt,success,failure,network_failure}` (a network failure also
/// counts as a failure, as in Envoy).
#[derive(Debug, Default)]
pub struct CheckCounters {
    pub attempt: AtomicU64,
    pub success: AtomicU64,
    pub failure: AtomicU64,
    pub network_failure: AtomicU64,
}

impl CheckCounters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (stat name, value, is a gauge) in Envoy's order; `healthy` is the
    /// number of hosts passing, `degraded` of those passing degraded.
    pub fn values(&self, healthy: u64, degraded: u64) -> [(&'static str, u64, bool); 8] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("health_check.attempt", get(&self.attempt), false),
            ("health_check.degraded", degraded, true),
            ("health_check.failure", get(&self.failure), false),
            ("health_check.healthy", healthy, true),
            ("health_check.network_failure", get(&self.network_failure), false),
            ("health_check.passive_failure", 0, false),
            ("health_check.success", get(&self.success), false),
            ("health_check.verify_cluster", 0, false),
        ]
    }
}

impl Board {
    pub fn new(failed: impl IntoIterator<Item = bool>) -> Self {
        let failed: Box<[AtomicBool]> = failed.into_iter().map(AtomicBool::new).collect();
        Board {
            version: AtomicU64::new(0),
            degraded: failed.iter().map(|_| AtomicBool::new(false)).collect(),
            timed_out: failed.iter().map(|_| AtomicBool::new(false)).collect(),
            failed,
            traffic: AtomicBool::new(false),
            counters: CheckCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.failed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failed.is_empty()
    }

    /// Hosts passing their check.
    pub fn passing(&self) -> u64 {
        self.failed.iter().filter(|f| !f.load(Ordering::Relaxed)).count() as u64
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn failed(&self, host: usize) -> bool {
        self.failed.get(host).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    pub fn degraded(&self, host: usize) -> bool {
        self.degraded.get(host).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Records whether a passing host's check said `x-envoy-degraded` (the LB reads it).
    pub fn set_degraded(&self, host: usize, degraded: bool) {
        let Some(f) = self.degraded.get(host) else { return };
        if f.swap(degraded, Ordering::Relaxed) != degraded {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Hosts passing with `x-envoy-degraded`.
    pub fn degraded_count(&self) -> u64 {
        self.degraded.iter().filter(|f| f.load(Ordering::Relaxed)).count() as u64
    }

    pub fn timed_out(&self, host: usize) -> bool {
        self.timed_out.get(host).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Whether `/active_hc_timeout` shows (the LB does not read it).
    pub fn set_timed_out(&self, host: usize, timed_out: bool) {
        if let Some(f) = self.timed_out.get(host) {
            f.store(timed_out, Ordering::Relaxed);
        }
    }

    /// Records a verdict; returns whether it changed anything.
    pub fn set_failed(&self, host: usize, failed: bool) -> bool {
        let Some(f) = self.failed.get(host) else { return false };
        if f.swap(failed, Ordering::Relaxed) == failed {
            return false;
        }
        self.version.fetch_add(1, Ordering::Release);
        true
    }

    pub fn note_traffic(&self) {
        if !self.traffic.load(Ordering::Relaxed) {
            self.traffic.store(true, Ordering::Relaxed);
        }
    }

    pub fn had_traffic(&self) -> bool {
        self.traffic.load(Ordering::Relaxed)
    }
}

/// Hosts to draw from: endpoint indices, and their smooth weighted round-robin order.
#[derive(Debug, Default)]
pub struct Source {
    pub hosts: Vec<u32>,
    pub schedule: Vec<u32>,
    /// Every host has the same weight (LEAST_REQUEST then draws `choice_count` hosts).
    pub equal_weights: bool,
    /// With locality weighting: the localities to pick among first (built by `cluster::locality`).
    pub localities: Option<Box<Localities>>,
}

/// The localities of one level's usable hosts that may take traffic.
#[derive(Debug, Default)]
pub struct Localities {
    /// (locality index, its usable hosts) for each locality with a positive effective weight.
    pub sources: Vec<(u32, Source)>,
    /// Indices into `sources`, in smooth weighted round-robin order by effective weight.
    pub schedule: Vec<u32>,
}

impl Source {
    pub(super) fn of(hosts: Vec<u32>, weights: &[u32]) -> Self {
        let w: Vec<u32> = hosts.iter().map(|h| weights.get(*h as usize).copied().unwrap_or(1)).collect();
        let schedule =
            super::schedule::smooth_wrr_schedule(&w).into_iter().map(|i| hosts[i as usize]).collect();
        let equal_weights = w.windows(2).all(|p| p[0] == p[1]);
        Source { hosts, schedule, equal_weights, localities: None }
    }
}

#[derive(Debug, Default)]
struct Level {
    all: Source,
    healthy: Source,
    degraded: Source,
    /// Percent of requests to this level's healthy and degraded hosts (the levels' sum is 100).
    healthy_load: u32,
    degraded_load: u32,
    panic: bool,
}

/// The load balancer's view of one cluster's health, computed as Envoy's `LoadBalancerBase`
/// computes priority load and panic.
#[derive(Debug, Default)]
pub struct Plan {
    levels: Vec<Level>,
}

/// What one pick draws from.
pub struct Choice<'a> {
    pub source: &'a Source,
    /// The chosen level is in panic: its healthy hosts were too few, so all its hosts are used.
    pub panic: bool,
}

impl Plan {
    /// `priority[i]`, `flags[i]` and `weights[i]` describe endpoint `i`.
    pub fn new(priority: &[u32], flags: &[Flags], weights: &[u32], lb: LbHealth) -> Plan {
        let n_levels = priority.iter().max().map_or(0, |p| *p as usize + 1);
        let mut levels: Vec<Level> = Vec::with_capacity(n_levels);
        for p in 0..n_levels as u32 {
            let on_level = || (0..priority.len() as u32).filter(|i| priority[*i as usize] == p);
            let class_is = |c: Class| on_level().filter(move |i| flags[*i as usize].class() == c).collect();
            levels.push(Level {
                all: Source::of(on_level().collect(), weights),
                healthy: Source::of(class_is(Class::Healthy), weights),
                degraded: Source::of(class_is(Class::Degraded), weights),
                ..Level::default()
            });
        }
        // A level's availability: 0-100, its share of healthy (degraded) hosts among those not
        // excluded, times the overprovisioning factor.
        let counted = |l: &Level| {
            l.all.hosts.iter().filter(|h| flags[**h as usize].class() != Class::Excluded).count() as u64
        };
        let availability = |l: &Level, of: &Source| match counted(l) {
            0 => 0,
            n => (u64::from(lb.overprovisioning_factor) * of.hosts.len() as u64 / n).min(100) as u32,
        };
        let health: Vec<u32> = levels.iter().map(|l| availability(l, &l.healthy)).collect();
        let degraded: Vec<u32> = levels.iter().map(|l| availability(l, &l.degraded)).collect();
        let total = (health.iter().sum::<u32>() + degraded.iter().sum::<u32>()).min(100);
        if levels.is_empty() {
            return Plan { levels };
        }
        if total > 0 {
            let (first_healthy, left) = distribute(&mut levels, &health, 100, total, |l| &mut l.healthy_load);
            let (first_degraded, left) =
                distribute(&mut levels, &degraded, left, total, |l| &mut l.degraded_load);
            if left > 0 {
                match (first_healthy, first_degraded) {
                    (Some(i), _) => levels[i].healthy_load += left,
                    (None, Some(i)) => levels[i].degraded_load += left,
                    (None, None) => {}
                }
            }
        }
        if lb.panic_threshold == 0 && total == 0 {
            // No host available and panic off: level 0 takes the load and finds no healthy host.
            levels[0].healthy_load = 100;
            return Plan { levels };
        }
        for l in &mut levels {
            l.panic = total < 100 && lb.panic_threshold > 0 && {
                let n = counted(l);
                let usable = (l.healthy.hosts.len() + l.degraded.hosts.len()) as f64;
                let percent = if n == 0 { 0.0 } else { 100.0 * usable / n as f64 };
                percent < f64::from(lb.panic_threshold)
            };
        }
        if levels.iter().all(|l| l.panic) {
            // Total panic: load by each level's share of all hosts, whatever their health.
            let all: usize = levels.iter().map(|l| l.all.hosts.len()).sum();
            let mut left = 100;
            for l in &mut levels {
                l.healthy_load = (100 * l.all.hosts.len()).checked_div(all).unwrap_or(0) as u32;
                l.degraded_load = 0;
                left -= l.healthy_load;
            }
            let first = levels.iter().position(|l| !l.all.hosts.is_empty()).unwrap_or(0);
            levels[first].healthy_load += left;
        }
        Plan { levels }
    }

    /// Lets `weigh` attach localities to each level's healthy and degraded hosts; it is given the
    /// level's hosts (all, whatever their health) and the ones it draws from.
    pub fn weigh_localities(&mut self, weigh: impl Fn(&Source, &Source) -> Option<Box<Localities>>) {
        for l in &mut self.levels {
            l.healthy.localities = weigh(&l.all, &l.healthy);
            l.degraded.localities = weigh(&l.all, &l.degraded);
        }
    }

    /// Draws a level by its load (`random` is asked for one number, not when one level takes
    /// everything), then the hosts the pick uses there. None: the cluster has no host to pick from.
    pub fn choose(&self, random: impl FnOnce() -> u64) -> Option<Choice<'_>> {
        let (level, degraded) = match self.levels.as_slice() {
            [] => return None,
            [only] if only.healthy_load == 100 => (only, false),
            levels => {
                let draw = (random() % 100) as u32;
                let mut acc = 0;
                let healthy = levels.iter().map(|l| (l, l.healthy_load, false));
                let degraded = levels.iter().map(|l| (l, l.degraded_load, true));
                let mut chosen = None;
                for (l, load, d) in healthy.chain(degraded) {
                    acc += load;
                    if draw < acc {
                        chosen = Some((l, d));
                        break;
                    }
                }
                chosen?
            }
        };
        let source = match (level.panic, degraded) {
            (true, _) => &level.all,
            (false, false) => &level.healthy,
            (false, true) => &level.degraded,
        };
        Some(Choice { source, panic: level.panic })
    }
}

/// Envoy's `distributeLoad`: each level takes its availability's share of `load`, in priority
/// order, until it runs out. Returns the first level with any availability and what is left.
fn distribute(
    levels: &mut [Level],
    availability: &[u32],
    mut load: u32,
    total: u32,
    slot: impl Fn(&mut Level) -> &mut u32,
) -> (Option<usize>, u32) {
    let mut first = None;
    for (i, (l, a)) in levels.iter_mut().zip(availability).enumerate() {
        if first.is_none() && *a > 0 {
            first = Some(i);
        }
        let share = load.min(a * 100 / total);
        *slot(l) = share;
        load -= share;
    }
    (first, load)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[HealthStatus]) -> Vec<Flags> {
        list.iter().map(|d| Flags { declared: *d, ..Flags::default() }).collect()
    }

    fn loads(p: &Plan) -> Vec<(u32, u32, bool)> {
        p.levels.iter().map(|l| (l.healthy_load, l.degraded_load, l.panic)).collect()
    }

    use HealthStatus::{Degraded as D, Draining as X, Healthy as H, Unhealthy as U};

    #[test]
    fn one_of_three_p0_hosts_down_spills_to_p1_as_envoy() {
        // P0 health = 140 * 2/3 = 93 %; P1 takes the remaining 7 %.
        let p = Plan::new(&[0, 0, 0, 1, 1], &flags(&[H, H, U, H, H]), &[1; 5], LbHealth::default());
        assert_eq!(loads(&p), vec![(93, 0, false), (7, 0, false)]);
    }

    #[test]
    fn degraded_hosts_take_what_healthy_ones_cannot() {
        // One healthy of four: health 35; degraded three of four: 105 → 100; total capped at 100.
        let p = Plan::new(&[0, 0, 0, 0], &flags(&[H, D, D, D]), &[1; 4], LbHealth::default());
        assert_eq!(loads(&p), vec![(35, 65, false)]);
    }

    #[test]
    fn below_the_threshold_every_level_panics_by_host_share() {
        let p = Plan::new(&[0, 0, 0, 1], &flags(&[H, U, U, U]), &[1; 4], LbHealth::default());
        // P0 33 % healthy, P1 0 %: both in panic; load by host count 3:1.
        assert_eq!(loads(&p), vec![(75, 0, true), (25, 0, true)]);
        let off = LbHealth { panic_threshold: 0, ..LbHealth::default() };
        let p = Plan::new(&[0, 0], &flags(&[U, U]), &[1; 2], off);
        assert_eq!(loads(&p), vec![(100, 0, false)]);
        assert!(p.choose(|| 7).is_some_and(|c| c.source.hosts.is_empty()));
    }

    #[test]
    fn draining_hosts_are_excluded_from_health_but_used_in_panic() {
        let p = Plan::new(&[0, 0], &flags(&[H, X]), &[1; 2], LbHealth::default());
        assert_eq!(loads(&p), vec![(100, 0, false)]);
        assert_eq!(p.levels[0].healthy.hosts, vec![0]);
        assert_eq!(p.levels[0].all.hosts, vec![0, 1]);
    }

    #[test]
    fn flags_render_as_envoy() {
        assert_eq!(Flags::default().render(), "healthy");
        let failed = Flags { declared: U, failed_active_hc: true, ..Flags::default() };
        assert_eq!(failed.render(), "/failed_active_hc/failed_eds_health");
        let timed_out =
            Flags { declared: X, failed_active_hc: true, active_hc_timeout: true, ..Flags::default() };
        assert_eq!(timed_out.render(), "/failed_active_hc/active_hc_timeout/eds_status_draining");
        let degraded = Flags { degraded_active_hc: true, ..Flags::default() };
        assert_eq!(degraded.render(), "/degraded_active_hc");
        assert_eq!(degraded.class(), Class::Degraded);
        assert_eq!(timed_out.render(), "/failed_active_hc/active_hc_timeout/eds_status_draining");
    }
}
