//! Envoy's response flags: why a request ended the way it did, as `%RESPONSE_FLAGS%` prints them.

/// A set of Envoy response flags. The bit order is Envoy's `ResponseFlag` enum order, which is also
/// the order Envoy prints them in, so rendering is one pass over the bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

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
    pub const NONE: ResponseFlags = ResponseFlags(0);
    pub const FAILED_LOCAL_HEALTH_CHECK: ResponseFlags = ResponseFlags(1 << 0);
    pub const NO_HEALTHY_UPSTREAM: ResponseFlags = ResponseFlags(1 << 1);
    pub const UPSTREAM_REQUEST_TIMEOUT: ResponseFlags = ResponseFlags(1 << 2);
    pub const LOCAL_RESET: ResponseFlags = ResponseFlags(1 << 3);
    pub const UPSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 4);
    pub const UPSTREAM_CONNECTION_FAILURE: ResponseFlags = ResponseFlags(1 << 5);
    pub const UPSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 6);
    pub const UPSTREAM_OVERFLOW: ResponseFlags = ResponseFlags(1 << 7);
    pub const NO_ROUTE_FOUND: ResponseFlags = ResponseFlags(1 << 8);
    pub const DELAY_INJECTED: ResponseFlags = ResponseFlags(1 << 9);
    pub const FAULT_INJECTED: ResponseFlags = ResponseFlags(1 << 10);
    pub const RATE_LIMITED: ResponseFlags = ResponseFlags(1 << 11);
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: ResponseFlags = ResponseFlags(1 << 12);
    pub const RATE_LIMIT_SERVICE_ERROR: ResponseFlags = ResponseFlags(1 << 13);
    pub const DOWNSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 14);
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: ResponseFlags = ResponseFlags(1 << 15);
    pub const STREAM_IDLE_TIMEOUT: ResponseFlags = ResponseFlags(1 << 16);
    pub const INVALID_ENVOY_REQUEST_HEADERS: ResponseFlags = ResponseFlags(1 << 17);
    pub const DOWNSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 18);
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: ResponseFlags = ResponseFlags(1 << 19);
    pub const RESPONSE_FROM_CACHE_FILTER: ResponseFlags = ResponseFlags(1 << 20);
    pub const NO_FILTER_CONFIG_FOUND: ResponseFlags = ResponseFlags(1 << 21);
    pub const DURATION_TIMEOUT: ResponseFlags = ResponseFlags(1 << 22);
    pub const UPSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 23);
    pub const NO_CLUSTER_FOUND: ResponseFlags = ResponseFlags(1 << 24);
    pub const OVERLOAD_MANAGER: ResponseFlags = ResponseFlags(1 << 25);
    pub const DNS_RESOLUTION_FAILED: ResponseFlags = ResponseFlags(1 << 26);
    pub const DROP_OVERLOAD: ResponseFlags = ResponseFlags(1 << 27);
    pub const DOWNSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 28);
    pub const UNCONDITIONAL_DROP_OVERLOAD: ResponseFlags = ResponseFlags(1 << 29);

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
        ResponseFlags(0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Parses one short code (`"UF"`), for tests and admin filters.
    pub fn from_short(code: &str) -> Option<ResponseFlags> {
        TABLE.iter().find(|(_, short, _)| *short == code).map(|(bit, _, _)| ResponseFlags(*bit))
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
        for entry in TABLE.iter().filter(|(bit, _, _)| self.0 & bit != 0) {
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
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.0 |= rhs.0;
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
    fn envoy_order_not_insertion_order() {
        // Inserted in "wrong" order; Envoy prints in enum order: UH, UT, UF, URX, DC, DPE, DT, UPE.
        let f = ResponseFlags::UPE
            | ResponseFlags::DT
            | ResponseFlags::DPE
            | ResponseFlags::DC
            | ResponseFlags::URX
            | ResponseFlags::UF
            | ResponseFlags::UT
            | ResponseFlags::UH;
        assert_eq!(short(f), "UH,UT,UF,DC,URX,DPE,DT,UPE");
        assert_eq!(short(ResponseFlags::UO | ResponseFlags::NR | ResponseFlags::LR), "LR,UO,NR");
        assert_eq!(
            short(ResponseFlags::RLSE | ResponseFlags::RL | ResponseFlags::SI | ResponseFlags::IH),
            "RL,RLSE,SI,IH"
        );
        assert_eq!(short(ResponseFlags::UC), "UC");
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
