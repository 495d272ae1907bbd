//! The HTTP filter chain of one connection manager: the `http_filters` of its config, in order,
//! compiled into the snapshot (`ListenerSnap::filters`) and run by the shard's request owner at
//! fixed phases. The router is always last and is not in the chain: it is the request owner itself
//! (`shard::request` and `shard::upstream`). The connection manager's own header steps
//! (`x-forwarded-*`, the `x-envoy-*` trust boundary, request ids, trace headers) are not filters
//! in Envoy either (its `ConnectionManagerUtility`), and stay fused in `shard::headers`' single pass.
//!
//! Dispatch is static: each phase is a `match` over `HttpFilter`, no boxed trait object per
//! request, and an empty chain is a loop over an empty slice. Owns no I/O and no per-request
//! state: a filter that needs state across phases gets a field in the request owner's context.
//!
//! Phases today: request headers (a filter may answer the request itself), response headers (a
//! filter may add headers) and log. Request- and response-body phases are added with the first
//! filter that reads bodies. The filters of the open issues (local rate limit, fault, RBAC, JWT,
//! CORS) are variants of `HttpFilter`; until one lands, every configured filter but the router is
//! refused at load (or skipped with a warning when `is_optional`), so the enum has no variant.

use crate::access_log::ResponseFlags;
use crate::config;
use crate::http::{RequestHead, ResponseHead};

/// A configured HTTP filter (other than the router), compiled.
#[derive(Debug)]
pub enum HttpFilter {}

impl HttpFilter {
    fn on_request_headers(&self, _head: &RequestHead<'_>) -> Verdict {
        match *self {}
    }

    fn on_response_headers(&self, _head: &ResponseHead<'_>, _out: &mut Vec<u8>) {
        match *self {}
    }

    fn on_log(&self, _status: u16, _flags: ResponseFlags) {
        match *self {}
    }
}

/// A filter's answer to a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next filter, and to the router.
    Continue,
    /// Answer the request with this local reply; the router never sees it.
    Reply { status: u16, body: &'static [u8], flag: ResponseFlags },
}

/// The filters of one connection manager, in config order.
#[derive(Debug, Default)]
pub struct FilterChain {
    filters: Box<[HttpFilter]>,
}

impl FilterChain {
    /// Compiles the config's `http_filters` (validated at load: the router is last, every other
    /// filter is one skiff implements).
    pub fn compile(filters: &[config::HttpFilter]) -> Self {
        let compiled: Vec<HttpFilter> = filters
            .iter()
            .filter_map(|f| match f {
                // Terminal: the request owner is the router.
                config::HttpFilter::Router => None,
            })
            .collect();
        FilterChain { filters: compiled.into_boxed_slice() }
    }

    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The request-headers phase, after routing and before the router acts: the first filter
    /// that answers stops the chain.
    pub fn on_request_headers(&self, head: &RequestHead<'_>) -> Verdict {
        for filter in self.filters.iter() {
            let verdict = filter.on_request_headers(head);
            if verdict != Verdict::Continue {
                return verdict;
            }
        }
        Verdict::Continue
    }

    /// The response-headers phase, for upstream responses (a local reply, the filters' own
    /// included, does not pass through it): a filter may append header lines to the client's head.
    pub fn on_response_headers(&self, head: &ResponseHead<'_>, out: &mut Vec<u8>) {
        for filter in self.filters.iter() {
            filter.on_response_headers(head, out);
        }
    }

    /// The log phase, once the request is over (the access log and span are written by the
    /// request owner; this is for filters that keep their own accounting).
    pub fn on_log(&self, status: u16, flags: ResponseFlags) {
        for filter in self.filters.iter() {
            filter.on_log(status, flags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_is_not_in_the_chain_and_an_empty_chain_lets_everything_through() {
        let chain = FilterChain::compile(&[config::HttpFilter::Router]);
        assert!(chain.is_empty());
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = crate::http::parse_request(buf, &mut headers, 1024).unwrap().unwrap();
        assert_eq!(chain.on_request_headers(&head), Verdict::Continue);
    }
}
