//! `envoy.filters.http.local_ratelimit`: one token bucket per config (the connection manager's,
//! and each route's or virtual host's `typed_per_filter_config`), shared by every shard, so the
//! configured rate is the process's as in Envoy. Owns the bucket and the filter's verdict; the
//! request owner sends the reply and counts nothing itself.
//!
//! A bucket outlives its snapshot: a limit whose filter chain, place and config are unchanged
//! keeps its bucket in the next one (a DNS change or a reload of something else rebuilds the
//! snapshot, and must not refill every bucket), as Envoy keeps a filter while its listener is
//! unchanged.
//!
//! The bucket is Envoy 1.40's (`AtomicTokenBucketImpl`): tokens come back continuously at
//! `tokens_per_fill / fill_interval`, up to `max_tokens`, and one atomic word holds the whole state
//! (the instant the bucket would be empty), so taking a token is one compare-and-swap on a cache
//! line the shards share. That is paid only by requests a limit applies to.

use super::verdict::{hit, push_header, FilterReply, Verdict};
use crate::access_log::ResponseFlags;
use crate::config::{self, Fraction, HeaderValueOption, TokenBucket};
use crate::stats::LocalRateLimitStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// One configured limit, compiled.
#[derive(Debug)]
pub struct LocalRateLimit {
    /// Index of this config's `<stat_prefix>.http_local_rate_limit.*` block in the chain's stats.
    pub(super) stats: usize,
    bucket: Option<Arc<Bucket>>,
    enabled: Fraction,
    enforced: Fraction,
    status: u16,
    response_headers: Vec<HeaderValueOption>,
    request_headers_when_not_enforced: Vec<HeaderValueOption>,
    x_ratelimit_headers: bool,
    /// `rate_limited_as_resource_exhausted`.
    resource_exhausted: bool,
}

impl LocalRateLimit {
    /// `place` names where the config stands (filter chain, filter, scope): the key, with the
    /// config itself, under which its bucket is carried to the next snapshot.
    pub(super) fn compile(c: &config::LocalRateLimit, stats: usize, place: &str) -> Self {
        LocalRateLimit {
            stats,
            bucket: c.token_bucket.map(|b| carried(place, c, b)),
            enabled: c.filter_enabled,
            enforced: c.filter_enforced,
            status: c.status,
            response_headers: c.response_headers_to_add.clone(),
            request_headers_when_not_enforced: c.request_headers_to_add_when_not_enforced.clone(),
            x_ratelimit_headers: c.x_ratelimit_headers,
            resource_exhausted: c.resource_exhausted,
        }
    }

    /// Envoy's order: not enabled → nothing, not even a stat; enabled → a token or `rate_limited`;
    /// rate limited but not enforced → the request goes on with the configured headers added.
    pub(super) fn on_request(
        &self,
        stats: &LocalRateLimitStats,
        roll: &mut dyn FnMut() -> u64,
        v: &mut Verdict<'_>,
    ) {
        if !hit(self.enabled, roll()) {
            return;
        }
        stats.enabled.inc();
        let Some(bucket) = &self.bucket else {
            stats.ok.inc();
            return;
        };
        let taken = bucket.take(Instant::now());
        if self.x_ratelimit_headers {
            // Sent on the response either way, the filter's own 429 included.
            let out = &mut v.response_headers;
            let mut n = [0; 20];
            push_header(out, b"x-ratelimit-limit", fmt_u64(&mut n, u64::from(bucket.max_tokens)));
            push_header(out, b"x-ratelimit-remaining", fmt_u64(&mut n, taken.remaining));
            push_header(out, b"x-ratelimit-reset", fmt_u64(&mut n, taken.reset_s));
        }
        if taken.allowed {
            stats.ok.inc();
            return;
        }
        stats.rate_limited.inc();
        if !hit(self.enforced, roll()) {
            for h in &self.request_headers_when_not_enforced {
                push_header(&mut v.request_headers, h.name.as_bytes(), h.value.as_bytes());
            }
            return;
        }
        stats.enforced.inc();
        let mut headers = Vec::new();
        for h in &self.response_headers {
            push_header(&mut headers, h.name.as_bytes(), h.value.as_bytes());
        }
        // Its `x-ratelimit-*` lines are already in `v.response_headers`, which the request's owner
        // adds to this reply as to any response.
        v.reply = Some(FilterReply {
            status: self.status,
            body: std::borrow::Cow::Borrowed(b"local_rate_limited"),
            flag: ResponseFlags::RATE_LIMITED,
            headers,
            details: std::borrow::Cow::Borrowed("local_rate_limited"),
            // RESOURCE_EXHAUSTED.
            grpc_status: self.resource_exhausted.then_some(8),
        });
    }
}

fn fmt_u64(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// What taking a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Taken {
    pub allowed: bool,
    /// Whole tokens left after this request (`x-ratelimit-remaining`).
    pub remaining: u64,
    /// Seconds until a token is next available, rounded up; 0 while one is (`x-ratelimit-reset`).
    pub reset_s: u64,
}

/// The buckets of the snapshots in use, by place and config; dead entries are dropped as new
/// ones are looked up. Only the control thread, building a snapshot, takes the lock.
type Carried = Mutex<Vec<(String, config::LocalRateLimit, Weak<Bucket>)>>;
static CARRIED: Carried = Mutex::new(Vec::new());

/// The bucket a limit at `place` with config `c` had in the snapshot before, or a full new one.
fn carried(place: &str, c: &config::LocalRateLimit, b: TokenBucket) -> Arc<Bucket> {
    let mut entries = CARRIED.lock().unwrap_or_else(PoisonError::into_inner);
    entries.retain(|(.., w)| w.strong_count() > 0);
    let found = entries.iter().find(|(p, k, _)| p == place && k == c).and_then(|(.., w)| w.upgrade());
    if let Some(bucket) = found {
        return bucket;
    }
    let bucket = Arc::new(Bucket::new(b));
    entries.push((place.to_string(), c.clone(), Arc::downgrade(&bucket)));
    bucket
}

/// A token bucket in one atomic word: the instant, in nanoseconds from `epoch`, at which it
/// would be empty. Tokens held at `now` = (now - empty_at) / per_token, at most `max_tokens`.
#[derive(Debug)]
pub(super) struct Bucket {
    empty_at: AtomicU64,
    epoch: Instant,
    per_token_ns: u64,
    capacity_ns: u64,
    max_tokens: u32,
}

impl Bucket {
    pub(super) fn new(b: TokenBucket) -> Self {
        let per_token_ns = (b.fill_interval.as_nanos() / u128::from(b.tokens_per_fill)).max(1);
        let per_token_ns = u64::try_from(per_token_ns).unwrap_or(u64::MAX);
        // Starts full: `now` is measured from `epoch` plus a whole bucket, and empty_at is 0.
        Bucket {
            empty_at: AtomicU64::new(0),
            epoch: Instant::now(),
            per_token_ns,
            capacity_ns: per_token_ns.saturating_mul(u64::from(b.max_tokens)),
            max_tokens: b.max_tokens,
        }
    }

    fn now_ns(&self, now: Instant) -> u64 {
        let since = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        since.saturating_add(self.capacity_ns)
    }

    pub(super) fn take(&self, now: Instant) -> Taken {
        let now = self.now_ns(now);
        let mut current = self.empty_at.load(Ordering::Relaxed);
        loop {
            // A bucket holds at most max_tokens: time spent full earns nothing.
            let base = current.max(now - self.capacity_ns);
            if now - base < self.per_token_ns {
                return Taken {
                    allowed: false,
                    remaining: 0,
                    reset_s: self.reset_s(base + self.per_token_ns - now),
                };
            }
            let next = base + self.per_token_ns;
            match self.empty_at.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let remaining = (now - next) / self.per_token_ns;
                    let wait = if remaining >= 1 { 0 } else { next + self.per_token_ns - now };
                    return Taken { allowed: true, remaining, reset_s: self.reset_s(wait) };
                }
                Err(seen) => current = seen,
            }
        }
    }

    fn reset_s(&self, wait_ns: u64) -> u64 {
        Duration::from_nanos(wait_ns).as_secs() + u64::from(!wait_ns.is_multiple_of(1_000_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(max_tokens: u32, tokens_per_fill: u32, fill_ms: u64) -> Bucket {
        Bucket::new(TokenBucket {
            max_tokens,
            tokens_per_fill,
            fill_interval: Duration::from_millis(fill_ms),
        })
    }

    #[test]
    fn a_limit_unchanged_in_place_and_config_keeps_its_bucket_across_snapshots() {
        let config = |max_tokens| config::LocalRateLimit {
            stat_prefix: "carry".into(),
            token_bucket: Some(TokenBucket {
                max_tokens,
                tokens_per_fill: 1,
                fill_interval: Duration::from_secs(60),
            }),
            filter_enabled: Fraction { per_million: 0, unit: 10_000 },
            filter_enforced: Fraction { per_million: 0, unit: 10_000 },
            status: 429,
            response_headers_to_add: Vec::new(),
            request_headers_to_add_when_not_enforced: Vec::new(),
            x_ratelimit_headers: false,
            resource_exhausted: false,
        };
        let bucket = |c: &config::LocalRateLimit, place| LocalRateLimit::compile(c, 0, place).bucket;
        let first = bucket(&config(1), "test-carry#0/0/0").expect("a bucket");
        assert!(first.take(Instant::now()).allowed);
        // The next snapshot's limit is the same one: its token is still spent.
        let next = bucket(&config(1), "test-carry#0/0/0").expect("a bucket");
        assert!(Arc::ptr_eq(&first, &next) && !next.take(Instant::now()).allowed);
        // Another place, or another config, starts full.
        let elsewhere = bucket(&config(1), "test-carry#0/0/1").expect("a bucket");
        let changed = bucket(&config(2), "test-carry#0/0/0").expect("a bucket");
        assert!(elsewhere.take(Instant::now()).allowed && changed.take(Instant::now()).allowed);
        // Once no snapshot holds it, it is gone: a later identical limit starts full.
        drop((first, next));
        assert!(bucket(&config(1), "test-carry#0/0/0").expect("a bucket").take(Instant::now()).allowed);
    }

    #[test]
    fn a_full_bucket_gives_max_tokens_then_refuses_until_a_token_comes_back() {
        let b = bucket(2, 1, 3000);
        let t0 = b.epoch;
        assert_eq!(b.take(t0), Taken { allowed: true, remaining: 1, reset_s: 0 });
        assert_eq!(b.take(t0), Taken { allowed: true, remaining: 0, reset_s: 3 });
        assert_eq!(b.take(t0), Taken { allowed: false, remaining: 0, reset_s: 3 });
        assert!(!b.take(t0 + Duration::from_millis(2999)).allowed);
        assert!(b.take(t0 + Duration::from_millis(3000)).allowed);
        // A long idle spell refills to max_tokens, never more.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take(later).allowed && b.take(later).allowed && !b.take(later).allowed);
    }

    #[test]
    fn tokens_per_fill_sets_the_rate() {
        let b = bucket(10, 5, 1000);
        let t0 = b.epoch;
        for _ in 0..10 {
            assert!(b.take(t0).allowed);
        }
        assert!(!b.take(t0).allowed);
        // 5 per second: one every 200 ms.
        assert!(b.take(t0 + Duration::from_millis(200)).allowed);
        assert!(!b.take(t0 + Duration::from_millis(200)).allowed);
    }

    #[test]
    fn threads_sharing_a_bucket_take_exactly_its_tokens() {
        let b = std::sync::Arc::new(bucket(1000, 1, 3_600_000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.take(Instant::now()).allowed).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(total, 1000);
    }
}
