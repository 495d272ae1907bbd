//! Smooth weighted round-robin order (nginx's), precomputed once per host list so a shard's pick
//! only steps a cursor. Pure arithmetic over weights; knows nothing of hosts or health.

/// Longest schedule we precompute; beyond it weights are scaled down.
const MAX_SCHEDULE: u64 = 4096;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled once so a shard only steps a cursor.
pub fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from((*w).max(1))));
    let mut w: Vec<u64> = weights.iter().map(|x| u64::from((*x).max(1)) / g.max(1)).collect();
    let mut total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        let scale = total.div_ceil(MAX_SCHEDULE);
        w.iter_mut().for_each(|x| *x = (*x / scale).max(1));
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_schedule_spreads_by_weight_and_interleaves() {
        let s = smooth_wrr_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // Smooth: the heavy endpoint never takes more than 3 turns in a row here.
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(smooth_wrr_schedule(&[3, 3, 3]), vec![0, 1, 2]);
    }

    #[test]
    fn huge_weights_are_scaled_to_a_bounded_schedule() {
        let s = smooth_wrr_schedule(&[1_000_000, 999_999]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 2);
    }
}
