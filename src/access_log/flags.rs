//! Envoy's response flags: why a request ended the way it did, as `%RESPONSE_FLAGS%` prints them.

/// A set of Envoy response flags, printed in the order they were set, as Envoy 1.40 prints them
/// (a retried connect failure is `URX,UF`: the router marks the retry limit before the failure).
/// The bits are Envoy's `ResponseFlag` enum; the second field remembers up to eight insertions as
/// 6-bit slots (flags beyond that print in enum order after them). Equality is on the set.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseFlags(u32, u64);

impl PartialEq for ResponseFlags {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ResponseFlags {}

impl std::hash::Hash for ResponseFlags {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Insertions remembered in `ResponseFlags::1`: 8 slots of 6 bits (index + 1; 0 = empty).
const ORDER_SLOTS: u32 = 8;

/// (bit, short code, long name) in Envoy's order (`ResponseFlagUtils::ALL_RESPONSE_STRING_FLAGS`).
const TABLE: [(u32, &str, &str); 30] = [
    (ResponseFlags::FAILED_LOCAL_HEALTH_CHECK.0, "LH", "FailedLocalHealthCheck"),
    (ResponseFlags::NO_HEALTHY_UPSTREAM.0, "UH", "NoHealthyUpstream"),
    (ResponseFlags::UPSTREAM_REQUEST_TIMEOUT.0, "UT", "UpstreamRequestTimeout"),
    (ResponseFlags::LOCAL_RESET.0, "LR", "LocalReset"),
    (ResponseFlags::UPSTREAM_REMOTE_RESET.0, "UR", "UpstreamRemoteReset"),
    (ResponseFlags::UPSTREAM_CONNECTION_FAILURE.0, "UF", "UpstreamConnectionFailure"),
    (ResponseFlags::UPSTREAM_CONNECTION_TERMINATION.0, "UC", "UpstreamConnectionTermination"),
    (ResponseFlags::UPSTREAM_OVERFLOW.0, "UO", "UpstreamOverflow"),
    (ResponseFlags::NO_ROUTE_FOUND.0, "NR", "NoRouteFound"),
    (ResponseFlags::DELAY_INJECTED.0, "DI", "DelayInjected"),
    (ResponseFlags::FAULT_INJECTED.0, "FI", "FaultInjected"),
    (ResponseFlags::RATE_LIMITED.0, "RL", "RateLimited"),
    (ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE.0, "UAEX", "UnauthorizedExternalService"),
    (ResponseFlags::RATE_LIMIT_SERVICE_ERROR.0, "RLSE", "RateLimitServiceError"),
    (ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION.0, "DC", "DownstreamConnectionTermination"),
    (ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED.0, "URX", "UpstreamRetryLimitExceeded"),
    (ResponseFlags::STREAM_IDLE_TIMEOUT.0, "SI", "StreamIdleTimeout"),
    (ResponseFlags::INVALID_ENVOY_REQUEST_HEADERS.0, "IH", "InvalidEnvoyRequestHeaders"),
    (ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR.0, "DPE", "DownstreamProtocolError"),
    (ResponseFlags::UPSTREAM_MAX_STREAM_DURATION_REACHED.0, "UMSDR", "UpstreamMaxStreamDurationReached"),
    (ResponseFlags::RESPONSE_FROM_CACHE_FILTER.0, "RFCF", "ResponseFromCacheFilter"),
    (ResponseFlags::NO_FILTER_CONFIG_FOUND.0, "NFCF", "NoFilterConfigFound"),
    (ResponseFlags::DURATION_TIMEOUT.0, "DT", "DurationTimeout"),
    (ResponseFlags::UPSTREAM_PROTOCOL_ERROR.0, "UPE", "UpstreamProtocolError"),
    (ResponseFlags::NO_CLUSTER_FOUND.0, "NC", "NoClusterFound"),
    (ResponseFlags::OVERLOAD_MANAGER.0, "OM", "OverloadManagerTerminated"),
    (ResponseFlags::DNS_RESOLUTION_FAILED.0, "DF", "DnsResolutionFailed"),
    (ResponseFlags::DROP_OVERLOAD.0, "DO", "DropOverload"),
    (ResponseFlags::DOWNSTREAM_REMOTE_RESET.0, "DR", "DownstreamRemoteReset"),
    (ResponseFlags::UNCONDITIONAL_DROP_OVERLOAD.0, "UDO", "UnconditionalDropOverload"),
];

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0, 0);
    pub const FAILED_LOCAL_HEALTH_CHECK: ResponseFlags = ResponseFlags(1 << 0, 0);
    pub const NO_HEALTHY_UPSTREAM: ResponseFlags = ResponseFlags(1 << 1, 0);
    pub const UPSTREAM_REQUEST_TIMEOUT: ResponseFlags = ResponseFlags(1 << 2, 0);
    pub const LOCAL_RESET: ResponseFlags = ResponseFlags(1 << 3, 0);
    pub const UPSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 4, 0);
    pub const UPSTREAM_CONNECTION_FAILURE: ResponseFlags = ResponseFlags(1 << 5, 0);
    pub const UPSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 6, 0);
    pub const UPSTREAM_OVERFLOW: ResponseFlags = ResponseFlags(1 << 7, 0);
    pub const NO_ROUTE_FOUND: ResponseFlags = ResponseFlags(1 << 8, 0);
    pub const DELAY_INJECTED: ResponseFlags = ResponseFlags(1 << 9, 0);
    pub const FAULT_INJECTED: ResponseFlags = ResponseFlags(1 << 10, 0);
    pub const RATE_LIMITED: ResponseFlags = ResponseFlags(1 << 11, 0);
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: ResponseFlags = ResponseFlags(1 << 12, 0);
    pub const RATE_LIMIT_SERVICE_ERROR: ResponseFlags = ResponseFlags(1 << 13, 0);
    pub const DOWNSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 14, 0);
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: ResponseFlags = ResponseFlags(1 << 15, 0);
    pub const STREAM_IDLE_TIMEOUT: ResponseFlags = ResponseFlags(1 << 16, 0);
    pub const INVALID_ENVOY_REQUEST_HEADERS: ResponseFlags = ResponseFlags(1 << 17, 0);
    pub const DOWNSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 18, 0);
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: ResponseFlags = ResponseFlags(1 << 19, 0);
    pub const RESPONSE_FROM_CACHE_FILTER: ResponseFlags = ResponseFlags(1 << 20, 0);
    pub const NO_FILTER_CONFIG_FOUND: ResponseFlags = ResponseFlags(1 << 21, 0);
    pub const DURATION_TIMEOUT: ResponseFlags = ResponseFlags(1 << 22, 0);
    pub const UPSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 23, 0);
    pub const NO_CLUSTER_FOUND: ResponseFlags = ResponseFlags(1 << 24, 0);
    pub const OVERLOAD_MANAGER: ResponseFlags = ResponseFlags(1 << 25, 0);
    pub const DNS_RESOLUTION_FAILED: ResponseFlags = ResponseFlags(1 << 26, 0);
    pub const DROP_OVERLOAD: ResponseFlags = ResponseFlags(1 << 27, 0);
    pub const DOWNSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 28, 0);
    pub const UNCONDITIONAL_DROP_OVERLOAD: ResponseFlags = ResponseFlags(1 << 29, 0);

    // Short aliases under Envoy's codes, so call sites read like the log line they produce.
    pub const LH: ResponseFlags = Self::FAILED_LOCAL_HEALTH_CHECK;
    pub const UH: ResponseFlags = Self::NO_HEALTHY_UPSTREAM;
    pub const UT: ResponseFlags = Self::UPSTREAM_REQUEST_TIMEOUT;
    pub const LR: ResponseFlags = Self::LOCAL_RESET;
    pub const UR: ResponseFlags = Self::UPSTREAM_REMOTE_RESET;
    pub const UF: ResponseFlags = Self::UPSTREAM_CONNECTION_FAILURE;
    pub const UC: ResponseFlags = Self::UPSTREAM_CONNECTION_TERMINATION;
    pub const UO: ResponseFlags = Self::UPSTREAM_OVERFLOW;
    pub const NR: ResponseFlags = Self::NO_ROUTE_FOUND;
    pub const RL: ResponseFlags = Self::RATE_LIMITED;
    pub const RLSE: ResponseFlags = Self::RATE_LIMIT_SERVICE_ERROR;
    pub const DC: ResponseFlags = Self::DOWNSTREAM_CONNECTION_TERMINATION;
    pub const URX: ResponseFlags = Self::UPSTREAM_RETRY_LIMIT_EXCEEDED;
    pub const SI: ResponseFlags = Self::STREAM_IDLE_TIMEOUT;
    pub const IH: ResponseFlags = Self::INVALID_ENVOY_REQUEST_HEADERS;
    pub const DPE: ResponseFlags = Self::DOWNSTREAM_PROTOCOL_ERROR;
    pub const DT: ResponseFlags = Self::DURATION_TIMEOUT;
    pub const UPE: ResponseFlags = Self::UPSTREAM_PROTOCOL_ERROR;
    pub const NC: ResponseFlags = Self::NO_CLUSTER_FOUND;
    pub const DF: ResponseFlags = Self::DNS_RESOLUTION_FAILED;
    pub const DR: ResponseFlags = Self::DOWNSTREAM_REMOTE_RESET;

    pub const fn empty() -> ResponseFlags {
        ResponseFlags(0, 0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Adds `other`'s flags after the ones already set (in `other`'s own order).
    pub fn insert(&mut self, other: ResponseFlags) {
        // A constant (or a set built by bits) has no remembered order yet: its own flags come first.
        let mut mine = [0u32; 32];
        let mut n = 0;
        for bit in self.ordered() {
            mine[n] = bit;
            n += 1;
        }
        let (bits, mut order) = (self.0, 0u64);
        let mut used = 0;
        for bit in mine[..n].iter().copied().chain(other.ordered().filter(|b| bits & (1 << b) == 0)) {
            self.0 |= 1 << bit;
            if used < ORDER_SLOTS {
                order |= u64::from(bit + 1) << (used * 6);
                used += 1;
            }
        }
        self.1 = order;
    }

    /// Bit indices in print order: remembered insertions first, then any others in enum order.
    fn ordered(self) -> impl Iterator<Item = u32> {
        let remembered = (0..ORDER_SLOTS)
            .map(move |i| ((self.1 >> (i * 6)) & 63) as u32)
            .take_while(|b| *b != 0)
            .map(|b| b - 1);
        let rest = (0..32u32).filter(move |b| {
            self.0 & (1 << b) != 0 && !(0..ORDER_SLOTS).any(|i| ((self.1 >> (i * 6)) & 63) as u32 == b + 1)
        });
        remembered.chain(rest)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Parses one short code (`"UF"`), for tests and admin filters.
    pub fn from_short(code: &str) -> Option<ResponseFlags> {
        TABLE.iter().find(|(_, short, _)| *short == code).map(|(bit, _, _)| ResponseFlags(*bit, 0))
    }

    /// Appends Envoy's `%RESPONSE_FLAGS%`: short codes joined by `,`, or `-` when none is set.
    pub fn render_short(self, out: &mut Vec<u8>) {
        self.render(out, |(_, short, _)| short, b",");
    }

    /// Appends Envoy's `%RESPONSE_FLAGS_LONG%`: PascalCase names joined by `,`, or `-`.
    pub fn render_long(self, out: &mut Vec<u8>) {
        self.render(out, |(_, _, long)| long, b",");
    }

    fn render(
        self,
        out: &mut Vec<u8>,
        pick: fn(&(u32, &'static str, &'static str)) -> &'static str,
        sep: &[u8],
    ) {
        if self.0 == 0 {
            out.push(b'-');
            return;
        }
        let mut first = true;
        for bit in self.ordered() {
            let Some(entry) = TABLE.iter().find(|(b, _, _)| *b == 1 << bit) else { continue };
            if !first {
                out.extend_from_slice(sep);
            }
            first = false;
            out.extend_from_slice(pick(entry).as_bytes());
        }
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(mut self, rhs: ResponseFlags) -> ResponseFlags {
        self.insert(rhs);
        self
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.insert(rhs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(f: ResponseFlags) -> String {
        let mut out = Vec::new();
        f.render_short(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn empty_is_dash() {
        assert_eq!(short(ResponseFlags::empty()), "-");
    }

    #[test]
    fn insertion_order_as_envoy_prints_it() {
        // Checked against Envoy 1.40: a retried connect failure logs `URX,UF`.
        assert_eq!(short(ResponseFlags::URX | ResponseFlags::UF), "URX,UF");
        assert_eq!(short(ResponseFlags::UF | ResponseFlags::URX), "UF,URX");
        let mut f = ResponseFlags::UO | ResponseFlags::NR | ResponseFlags::LR;
        f.insert(ResponseFlags::NR);
        assert_eq!(short(f), "UO,NR,LR");
        assert_eq!(short(ResponseFlags::UC), "UC");
        assert_eq!(f, ResponseFlags::LR | ResponseFlags::UO | ResponseFlags::NR, "equality is on the set");
    }

    #[test]
    fn more_than_eight_flags_all_print() {
        let mut f = ResponseFlags::empty();
        for (bit, _, _) in TABLE.iter().take(10) {
            f.insert(ResponseFlags(*bit, 0));
        }
        assert_eq!(short(f), "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI");
    }

    #[test]
    fn every_code_round_trips() {
        for (bit, code, _) in TABLE {
            let f = ResponseFlags::from_short(code).expect("known code");
            assert_eq!(f.bits(), bit);
            assert_eq!(short(f), code);
        }
        assert_eq!(ResponseFlags::from_short("XX"), None);
    }

    #[test]
    fn long_names() {
        let mut out = Vec::new();
        (ResponseFlags::UF | ResponseFlags::URX).render_long(&mut out);
        assert_eq!(out, b"UpstreamConnectionFailure,UpstreamRetryLimitExceeded");
    }
}
