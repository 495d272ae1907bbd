//! `envoy.filters.network.local_ratelimit`: a new connection takes a token from the filter's
//! bucket, or is closed at once (`local_rate_limit.<stat_prefix>.rate_limited`, flagged `URX` as
//! Envoy flags it). The bucket is the HTTP local rate limit's (`filters::local_ratelimit::Bucket`,
//! Envoy 1.40's atomic bucket), one per filter shared by every shard, so the rate is the process's.

use super::decision::{Carried, Decision};
use crate::access_log::ResponseFlags;
use crate::config::NetLocalRateLimit;
use crate::filters::local_ratelimit::Bucket;
use crate::stats::NetLocalRateLimitStats;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Buckets of live snapshots, for the next snapshot to keep (`super::carry`).
pub(super) static CARRIED: Carried<Bucket> = Mutex::new(Vec::new());

#[derive(Debug)]
pub(super) struct LocalRateLimit {
    bucket: Arc<Bucket>,
    /// Index of this filter's stats in the chain's.
    pub(super) stats: usize,
}

impl LocalRateLimit {
    pub(super) fn bucket(c: &NetLocalRateLimit) -> Bucket {
        Bucket::new(c.token_bucket)
    }

    pub(super) fn new(bucket: Arc<Bucket>, stats: usize) -> Self {
        LocalRateLimit { bucket, stats }
    }

    pub(super) fn on_new_connection(&self, stats: &NetLocalRateLimitStats) -> Decision {
        if self.bucket.take(Instant::now()).allowed {
            return Decision::Continue;
        }
        stats.rate_limited.inc();
        Decision::Close { delay: None, flags: ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED }
    }
}
