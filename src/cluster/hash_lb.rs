//! RING_HASH and MAGLEV: the lookup table a cluster's hosts make, built once per snapshot by the
//! control thread and read by every shard, and the host a request's hash lands on. The tables
//! are Envoy's: a ketama ring of xxHash64("<ip:port>_<i>") points, as many per host as its share
//! of the ring (`minimum_ring_size`, capped by `maximum_ring_size`), and Maglev's permutation
//! table (offset xxHash64(addr) and skip xxHash64(addr, seed 1), hosts sorted by address, filled
//! by weight), so a key lands on the host Envoy would pick for the same host set. The request's
//! hash is `route::hash`'s; which hosts are usable (outlier ejections) is the caller's.

use crate::config::{HashTable as Sizes, LbPolicy};
use std::net::SocketAddr;
use xxhash_rust::xxh64::xxh64;

#[derive(Debug)]
pub enum HashTable {
    /// (point, endpoint index), sorted by point.
    Ring(Vec<(u64, u32)>),
    /// Endpoint index per slot; the length is the (prime) table size.
    Maglev(Vec<u32>),
}

impl HashTable {
    /// The table for a hashing `policy`; None for other policies or no hosts.
    pub fn build(
        policy: LbPolicy,
        endpoints: &[SocketAddr],
        weights: &[u32],
        sizes: &Sizes,
    ) -> Option<HashTable> {
        if endpoints.is_empty() {
            return None;
        }
        let sum: f64 = weights.iter().map(|w| f64::from((*w).max(1))).sum();
        let normalized: Vec<f64> = weights.iter().map(|w| f64::from((*w).max(1)) / sum).collect();
        match policy {
            LbPolicy::RingHash => Some(HashTable::Ring(ring(endpoints, &normalized, sizes))),
            LbPolicy::Maglev => {
                Some(HashTable::Maglev(maglev(endpoints, &normalized, sizes.maglev_table_size)))
            }
            _ => None,
        }
    }

    /// The endpoint `hash` lands on, skipping endpoints `usable` refuses (the next point of the
    /// ring, as a ring rebuilt without them would; the next slot of the Maglev table). When none
    /// is usable, the endpoint the hash lands on.
    pub fn pick(&self, hash: u64, usable: impl Fn(usize) -> bool) -> usize {
        match self {
            HashTable::Ring(points) => {
                let n = points.len();
                // Ketama: the first point at or after the hash, wrapping to the first.
                let start = points.partition_point(|(p, _)| *p < hash) % n.max(1);
                let at = |k: usize| points.get((start + k) % n).map_or(0, |(_, e)| *e as usize);
                (0..n).map(at).find(|e| usable(*e)).unwrap_or_else(|| at(0))
            }
            HashTable::Maglev(slots) => {
                let n = slots.len() as u64;
                let at =
                    |k: u64| slots.get(((hash % n) + k) as usize % slots.len()).map_or(0, |e| *e as usize);
                // A bounded walk: an ejected host holds about 1/hosts of the slots.
                (0..n.min(4096)).map(at).find(|e| usable(*e)).unwrap_or_else(|| at(0))
            }
        }
    }
}

fn ring(endpoints: &[SocketAddr], normalized: &[f64], sizes: &Sizes) -> Vec<(u64, u32)> {
    let min_weight = normalized.iter().copied().fold(f64::INFINITY, f64::min);
    // The least-weighted host gets a whole number of points; the ring is capped at the maximum.
    let scale = ((min_weight * sizes.minimum_ring_size as f64).ceil() / min_weight)
        .min(sizes.maximum_ring_size as f64);
    let mut points = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    let mut key = String::new();
    for (i, (addr, w)) in endpoints.iter().zip(normalized).enumerate() {
        target += scale * w;
        let mut n = 0u64;
        while current < target {
            key.clear();
            use std::fmt::Write;
            let _ = write!(key, "{addr}_{n}");
            points.push((xxh64(key.as_bytes(), 0), i as u32));
            n += 1;
            current += 1.0;
        }
    }
    points.sort_by_key(|(p, _)| *p);
    points
}

fn maglev(endpoints: &[SocketAddr], normalized: &[f64], size: u64) -> Vec<u32> {
    struct Entry {
        index: u32,
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let max_weight = normalized.iter().copied().fold(0.0, f64::max);
    let mut keyed: Vec<(String, u32, f64)> = endpoints
        .iter()
        .zip(normalized)
        .enumerate()
        .map(|(i, (a, w))| (a.to_string(), i as u32, *w))
        .collect();
    // Filled in address order, so the table does not depend on the order hosts were listed in.
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries: Vec<Entry> = keyed
        .iter()
        .map(|(key, index, weight)| Entry {
            index: *index,
            offset: xxh64(key.as_bytes(), 0) % size,
            skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
            weight: *weight,
            target: 0.0,
            next: 0,
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < size {
        for e in entries.iter_mut() {
            if filled >= size {
                break;
            }
            // A host of the largest weight takes a slot every round, one of a third of it every
            // third round.
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += max_weight;
            let mut c = (e.offset + e.skip * e.next) % size;
            while table[c as usize] != EMPTY {
                e.next += 1;
                c = (e.offset + e.skip * e.next) % size;
            }
            table[c as usize] = e.index;
            e.next += 1;
            filled += 1;
        }
        iteration += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 8000 + i))).collect()
    }

    fn share(table: &HashTable, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for k in 0..10_000u64 {
            counts[table.pick(xxh64(&k.to_le_bytes(), 0), |_| true)] += 1;
        }
        counts
    }

    #[test]
    fn a_ring_gives_each_host_its_share_of_points_and_keys() {
        let eps = hosts(3);
        let t = HashTable::build(LbPolicy::RingHash, &eps, &[1, 1, 1], &Sizes::default()).unwrap();
        let HashTable::Ring(points) = &t else { panic!() };
        assert_eq!(points.len(), 1026); // ceil(1024/3)*3: each host a whole number of points
        assert!(share(&t, 3).iter().all(|c| (2500..4200).contains(c)), "{:?}", share(&t, 3));
    }

    #[test]
    fn maglev_fills_the_table_by_weight() {
        let eps = hosts(3);
        let t = HashTable::build(LbPolicy::Maglev, &eps, &[2, 1, 1], &Sizes::default()).unwrap();
        let HashTable::Maglev(slots) = &t else { panic!() };
        assert_eq!(slots.len(), 65537);
        let heavy = slots.iter().filter(|e| **e == 0).count();
        assert!((32000..33600).contains(&heavy), "{heavy}");
    }

    #[test]
    fn removing_a_host_moves_only_its_keys_and_ejection_skips_it() {
        let eps = hosts(4);
        let full = HashTable::build(LbPolicy::RingHash, &eps, &[1; 4], &Sizes::default()).unwrap();
        for k in 0..2000u64 {
            let h = xxh64(&k.to_le_bytes(), 0);
            let before = full.pick(h, |_| true);
            let after = full.pick(h, |e| e != 3);
            assert!(after != 3);
            if before != 3 {
                assert_eq!(before, after);
            }
        }
    }
}
