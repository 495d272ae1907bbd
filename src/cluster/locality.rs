//! Locality-weighted load balancing (`common_lb_config.locality_weighted_lb_config`), as Envoy's
//! `HostSetImpl` does it: within a priority level, a locality is picked first, by its
//! `load_balancing_weight` scaled by its share of usable hosts (times the overprovisioning factor,
//! at most 1), then a host inside it by the cluster's policy. Envoy steps an EDF schedule over the
//! localities; skiff precomputes the same proportions as a smooth weighted round-robin order.
//! Built with each `health::Plan`; knows nothing of health rules (the plan says which hosts are
//! usable) or of how a host is picked inside a locality (`cluster/mod.rs`).

use super::health::{Localities, Source};
use super::schedule::smooth_wrr_schedule;

/// Effective weights are fractions; this many steps per unit keep their ratios in the schedule.
const WEIGHT_SCALE: f64 = 1000.0;

/// What a cluster says about its localities.
pub struct Layout<'a> {
    /// Locality index of each endpoint.
    pub locality_of: &'a [u32],
    /// `load_balancing_weight` per locality index (0: none, takes no traffic).
    pub weights: &'a [u32],
    /// Host weights, per endpoint.
    pub host_weights: &'a [u32],
    /// Whether an endpoint counts for its locality's size (DRAINING hosts do not).
    pub counted: &'a dyn Fn(u32) -> bool,
    /// Percent, as `load_assignment.policy.overprovisioning_factor`.
    pub overprovisioning_factor: u32,
}

impl Layout<'_> {
    /// The localities `usable` (drawn from `level`'s hosts) spread over; None when no locality has
    /// a positive effective weight (the level's hosts are then drawn from as a whole, as Envoy
    /// does without a locality schedule).
    pub fn localities(&self, level: &Source, usable: &Source) -> Option<Box<Localities>> {
        if usable.hosts.is_empty() {
            return None;
        }
        let locality = |h: &u32| self.locality_of.get(*h as usize).copied().unwrap_or(0);
        let mut sources = Vec::new();
        let mut weights = Vec::new();
        for (index, weight) in self.weights.iter().enumerate() {
            let index = index as u32;
            let hosts: Vec<u32> = usable.hosts.iter().copied().filter(|h| locality(h) == index).collect();
            let size = level.hosts.iter().filter(|h| locality(h) == index && (self.counted)(**h)).count();
            if hosts.is_empty() || size == 0 || *weight == 0 {
                continue;
            }
            let availability =
                (f64::from(self.overprovisioning_factor) / 100.0 * hosts.len() as f64 / size as f64).min(1.0);
            let effective = (f64::from(*weight) * availability * WEIGHT_SCALE).round() as u32;
            if effective == 0 {
                continue;
            }
            weights.push(effective);
            sources.push((index, Source::of(hosts, self.host_weights)));
        }
        if sources.is_empty() {
            return None;
        }
        Some(Box::new(Localities { schedule: smooth_wrr_schedule(&weights), sources }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(hosts: &[u32]) -> Source {
        Source::of(hosts.to_vec(), &[1; 8])
    }

    fn shares(l: &Localities) -> Vec<(u32, usize)> {
        l.sources
            .iter()
            .enumerate()
            .map(|(i, (loc, _))| (*loc, l.schedule.iter().filter(|s| **s as usize == i).count()))
            .collect()
    }

    #[test]
    fn localities_share_by_weight_scaled_by_their_healthy_share() {
        // Hosts 0,1 in locality 0 (weight 1), hosts 2,3 in locality 1 (weight 3).
        let layout = Layout {
            locality_of: &[0, 0, 1, 1],
            weights: &[1, 3],
            host_weights: &[1; 4],
            counted: &|_| true,
            overprovisioning_factor: 140,
        };
        let all = source(&[0, 1, 2, 3]);
        let l = layout.localities(&all, &all).expect("localities");
        assert_eq!(shares(&l), vec![(0, 1), (1, 3)]);
        // Locality 1 at half health: 3 * min(1, 1.4 * 0.5) = 2.1 against 1.
        let l = layout.localities(&all, &source(&[0, 1, 2])).expect("localities");
        assert_eq!(shares(&l), vec![(0, 10), (1, 21)]);
        assert_eq!(l.sources[1].1.hosts, vec![2]);
    }

    #[test]
    fn a_locality_without_weight_takes_nothing_and_none_weighted_means_no_schedule() {
        let layout = Layout {
            locality_of: &[0, 1],
            weights: &[0, 2],
            host_weights: &[1; 2],
            counted: &|_| true,
            overprovisioning_factor: 140,
        };
        let all = source(&[0, 1]);
        let l = layout.localities(&all, &all).expect("localities");
        assert_eq!(shares(&l), vec![(1, 1)]);
        assert!(layout.localities(&all, &source(&[0])).is_none());
    }
}
