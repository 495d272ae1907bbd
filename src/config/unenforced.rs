//! The one list of Envoy fields skiff accepts but does not act on. `convert` warns with the `why`
//! of an entry whenever its field is present, so `--mode validate` names every such field in the
//! operator's file; README.md's "Accepted with a warning" row lists exactly these entries (a test
//! compares them). Owns nothing else: which fields are refused or silently ignored lives in `raw`
//! and `convert`.

/// One accepted-but-not-enforced field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unenforced {
    /// Where the field sits, as `scope.field`: `cluster.health_checks` is a cluster's
    /// `health_checks`, wherever the cluster is. Scopes: bootstrap, admin, listener, hcm (and its
    /// sub-blocks), access_log, zipkin, route_config, virtual_host, route, route.route (the
    /// forward action), retry_policy (route or virtual host), cluster, lb_endpoint, jwt_authn (the
    /// JWT filter's typed_config).
    pub field: &'static str,
    /// What skiff does instead, shown in the warning.
    pub why: &'static str,
}

const NOT_YET: &str = "not yet implemented in skiff";

const fn u(field: &'static str, why: &'static str) -> Unenforced {
    Unenforced { field, why }
}

// One entry a line, however long: the table reads as a list.
#[rustfmt::skip]
pub const UNENFORCED: &[Unenforced] = &[
    u("bootstrap.stats_sinks", NOT_YET),
    u("bootstrap.overload_manager", NOT_YET),
    u("zipkin.split_spans_for_request", NOT_YET),
    u("zipkin.trace_context_option", NOT_YET),
    u("hcm.tracing.custom_tags", "no custom tags are added"),
    u("hcm.tracing.request_headers_for_tags", "no custom tags are added"),
    u("hcm.tracing.verbose", NOT_YET),
    u("admin.profile_path", NOT_YET),
    u("admin.socket_options", NOT_YET),
    u("access_log.filter", "every request is logged"),
    u("jwt_authn.providers.payload_in_metadata", "skiff has no dynamic metadata and nothing that would read it"),
    u("jwt_authn.providers.header_in_metadata", "skiff has no dynamic metadata and nothing that would read it"),
    u("jwt_authn.providers.failed_status_in_metadata", "skiff has no dynamic metadata and nothing that would read it"),
    u("jwt_authn.providers.normalize_payload_in_metadata", "skiff has no dynamic metadata and nothing that would read it"),
    u("jwt_authn.providers.jwt_cache_config", "verified tokens are not cached: each is verified again (jwt_cache_hit stays 0)"),
    u("access_log.typed_config.json_format", "JSON access logs are not yet supported; the default format is used"),
    u("access_log.typed_config.typed_json_format", "JSON access logs are not yet supported; the default format is used"),
    u("access_log.typed_config.log_format.json_format", "JSON access logs are not yet supported; the default format is used"),
    u("access_log.typed_config.log_format.formatters", "JSON access logs are not yet supported; the default format is used"),
    u("listener.socket_options", NOT_YET),
    u("listener.freebind", NOT_YET),
    u("listener.transparent", NOT_YET),
    u("listener.tcp_fast_open_queue_length", NOT_YET),
    u("listener.connection_balance_config", NOT_YET),
    u("hcm.normalize_path", NOT_YET),
    u("hcm.merge_slashes", NOT_YET),
    u("hcm.skip_xff_append", NOT_YET),
    u("hcm.via", NOT_YET),
    u("hcm.always_set_request_id_in_response", NOT_YET),
    u("hcm.proxy_100_continue", NOT_YET),
    u("hcm.stream_error_on_invalid_http_message", NOT_YET),
    u("hcm.local_reply_config", NOT_YET),
    u("hcm.path_with_escaped_slashes_action", NOT_YET),
    u("hcm.original_ip_detection_extensions", NOT_YET),
    u("hcm.xff_num_trusted_hops", "the peer (use_remote_address) or nothing is the trusted client address"),
    u("hcm.internal_address_config", "no client is treated as internal"),
    u("hcm.preserve_external_request_id", "an edge request's x-request-id is always replaced"),
    u("hcm.add_user_agent", NOT_YET),
    u("hcm.drain_timeout", "it paces HTTP/2 GOAWAY frames; skiff's drain sends h2's graceful GOAWAY pair (the second after a PING round trip) at once"),
    u("hcm.http2_protocol_options.max_outbound_frames", "the h2 codec bounds what a connection queues by its own send buffer (400 KiB a stream), not by a frame count"),
    u("hcm.http2_protocol_options.max_outbound_control_frames", "the h2 codec bounds queued PING/SETTINGS answers by its own fixed limits"),
    u("hcm.http2_protocol_options.max_consecutive_inbound_frames_with_empty_payload", "the h2 codec has no such counter"),
    u("hcm.http2_protocol_options.max_inbound_priority_frames_per_stream", "PRIORITY frames are read and ignored (the h2 codec keeps no priority tree)"),
    u("hcm.http2_protocol_options.max_inbound_window_update_frames_per_data_frame_sent", "the h2 codec has no such counter"),
    u("hcm.http2_protocol_options.connection_keepalive", "no keepalive PINGs are sent; idle_timeout still closes an idle connection"),
    u("hcm.http2_protocol_options.custom_settings_parameters", "no custom SETTINGS are sent"),
    u("hcm.common_http_protocol_options.max_response_headers_kb", "it limits upstream responses, which a connection manager does not read"),
    u("cluster.common_http_protocol_options.max_response_headers_kb", "upstream response heads are limited to 64 KiB"),
    u("cluster.upstream_connection_options.set_local_interface_name_on_upstream_connections", NOT_YET),
    u("cluster.upstream_connection_options.happy_eyeballs_config", "skiff connects to one resolved address at a time"),
    u("route_config.internal_only_headers", NOT_YET),
    u("virtual_host.rate_limits", NOT_YET),
    u("virtual_host.typed_per_filter_config", "only the local_ratelimit, fault, cors, csrf, jwt_authn, rbac, ext_authz and compressor filters' entries are read; this filter is not run"),
    u("virtual_host.per_filter_config", NOT_YET),
    u("virtual_host.hedge_policy", NOT_YET),
    u("virtual_host.virtual_clusters", "no virtual cluster stats are kept"),
    u("virtual_host.per_request_buffer_limit_bytes", "a request body that arrived with its head is retried whatever its size; a streamed one never is"),
    u("route.per_request_buffer_limit_bytes", "a request body that arrived with its head is retried whatever its size; a streamed one never is"),
    u("route.typed_per_filter_config", "only the local_ratelimit, fault, cors, csrf, jwt_authn, rbac, ext_authz and compressor filters' entries are read; this filter is not run"),
    u("ext_authz.http_service.authorization_response.dynamic_metadata_from_headers", "skiff has no dynamic metadata"),
    u("ext_authz.clear_route_cache", "the route is chosen before the check and is not recomputed"),
    u("ext_authz.include_peer_certificate", "the gRPC CheckRequest carries no certificate; the HTTP service never sends it"),
    u("route.per_filter_config", NOT_YET),
    u("route.tracing", NOT_YET),
    u("route.route.rate_limits", NOT_YET),
    u("route.route.hedge_policy", NOT_YET),
    u("route.route.metadata_match", NOT_YET),
    u("route.route.internal_redirect_policy", NOT_YET),
    u("request_mirror_policy.trace_sampled", "a mirrored request carries the original's trace decision"),
    u("retry_policy.retriable_request_headers", NOT_YET),
    u("retry_policy.rate_limited_retry_back_off", NOT_YET),
    u("retry_policy.retry_priority", NOT_YET),
    u("cluster.health_checks.event_log_path", "health check events are not logged to a file; failures go to the process log"),
    u("cluster.health_checks.event_logger", "health check events are not logged to a file; failures go to the process log"),
    u("cluster.health_checks.event_service", "health check events are not streamed"),
    u("cluster.health_checks.http_health_check.response_buffer_size", "only the status line of a health check response is read"),
    u("cluster.typed_extension_protocol_options.upstream_http_protocol_options", "auto_sni and auto_san_validation are not implemented: set the TLS context's sni and SAN matchers"),
    u("cluster.http2_protocol_options.max_outbound_frames", "the h2 library bounds what it queues with its own limits"),
    u("cluster.http2_protocol_options.max_outbound_control_frames", "the h2 library bounds what it queues with its own limits"),
    u("cluster.http2_protocol_options.max_consecutive_inbound_frames_with_empty_payload", "the h2 library's own flood limits apply"),
    u("cluster.http2_protocol_options.max_inbound_priority_frames_per_stream", "the h2 library's own flood limits apply"),
    u("cluster.http2_protocol_options.max_inbound_window_update_frames_per_data_frame_sent", "the h2 library's own flood limits apply"),
    u("cluster.http2_protocol_options.connection_keepalive", "no PING keepalive is sent on upstream HTTP/2 connections"),
    u("cluster.http2_protocol_options.max_metadata_size", "METADATA frames are not used"),
    u("cluster.typed_dns_resolver_config", NOT_YET),
    u("cluster.http_protocol_options", "skiff's HTTP/1.1 codec to upstreams has its own fixed settings"),
    u("cluster.upstream_http_protocol_options", "auto_sni and auto_san_validation are not implemented: set the TLS context's sni and SAN matchers"),
    u("cluster.per_connection_buffer_limit_bytes", "skiff's buffers are bounded by its own fixed sizes"),
    u("cluster.least_request_lb_config.slow_start_config", "hosts take their full share at once"),
    u("cluster.round_robin_lb_config", "no slow start"),
    u("cluster.original_dst_lb_config", NOT_YET),
    u("cluster.protocol_selection", "write HttpProtocolOptions use_downstream_protocol_config"),
    u("cluster.track_timeout_budgets", "no timeout budget histograms are kept"),
    u("cluster.track_cluster_stats", "no request/response size or per-method stats are kept"),
    u("cluster.alt_stat_name", "stats are named by the cluster's name"),
    u("cluster.preconnect_policy", "connections are made on demand"),
    u("cluster.use_tcp_for_dns_lookups", NOT_YET),
    u("cluster.lb_subset_config", NOT_YET),
    u("cluster.common_lb_config.zone_aware_lb_config", "zone-aware routing needs the local cluster (cluster_manager.local_cluster_name), which skiff does not read"),
    u("cluster.common_lb_config.locality_weighted_lb_config", "RING_HASH and MAGLEV tables are built from host weights only (locality weights are applied by ROUND_ROBIN, LEAST_REQUEST and RANDOM)"),
    u("cluster.common_lb_config.update_merge_window", "host changes take effect at once"),
    u("cluster.common_lb_config.ignore_new_hosts_until_first_hc", NOT_YET),
    u("cluster.common_lb_config.close_connections_on_host_set_change", NOT_YET),
    u("cluster.common_lb_config.consistent_hashing_lb_config", NOT_YET),
    u("cluster.common_lb_config.override_host_status", NOT_YET),
    u("load_assignment.policy.drop_overloads", "no requests are dropped"),
    u("load_assignment.policy.endpoint_stale_after", "static endpoints never go stale"),
    u("load_assignment.policy.weighted_priority_health", "a priority's health counts its hosts, not their weights"),
    u("cluster.upstream_bind_config", NOT_YET),
    u("cluster.dns_failure_refresh_rate", NOT_YET),
    u("cluster.connection_pool_per_downstream_connection", NOT_YET),
    u("cluster.dns_resolution_config.dns_resolver_options", NOT_YET),
    u("cluster.common_http_protocol_options.max_stream_duration", NOT_YET),
    u("cluster.common_http_protocol_options.headers_with_underscores_action", NOT_YET),
    u("cluster.circuit_breakers.per_host_thresholds.priority", "HIGH priority thresholds are ignored: skiff routes everything at DEFAULT priority"),
    u("cluster.circuit_breakers.thresholds.max_connection_pools", "connection pools (one per endpoint per shard) are not limited in number"),
    u("hcm.server_header_transformation", "skiff always overwrites the server header"),
    u("cluster.respect_dns_ttl", "dns_refresh_rate is used"),
    u("compressor.request_direction_config", "request bodies are not compressed"),
    u("http_filters.decompressor", "the decompressor filter is not run: bodies pass as they are"),
    u("cluster.circuit_breakers.thresholds.priority", "HIGH priority thresholds are ignored: skiff routes everything at DEFAULT priority"),
];

/// The entry for `field`; None means a warning site names a field missing from the table (a
/// unit test keeps that from happening).
pub fn lookup(field: &str) -> Option<&'static Unenforced> {
    UNENFORCED.iter().find(|u| u.field == field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field `convert` warns about through the table is in it, and nothing is listed twice.
    #[test]
    fn every_warning_site_is_in_the_table() {
        let source = include_str!("convert.rs");
        let mut used = Vec::new();
        for (i, _) in source.match_indices("warn_present!(") {
            let call = &source[i..];
            let call = &call[..call.find(")").unwrap_or(call.len())];
            let scope = call.split('"').nth(1).expect("scope literal");
            let fields = call.split('[').nth(1).and_then(|f| f.split(']').next()).unwrap_or("");
            for f in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                used.push(format!("{scope}.{f}"));
            }
        }
        for (i, _) in source.match_indices("cx.unenforced(") {
            // The key is the call's last string literal (the path before it may hold others).
            let call = &source[i..];
            let call = &call[..call.find(");").unwrap_or(call.len())];
            let parts: Vec<&str> = call.split('"').collect();
            if parts.len() >= 3 {
                used.push(parts[parts.len() - 2].to_string());
            }
        }
        assert!(used.len() > 50, "{used:?}");
        for key in &used {
            if key.starts_with(['{', '.']) {
                continue; // inside the macro's own definition
            }
            assert!(lookup(key).is_some(), "{key} is warned about but missing from UNENFORCED");
        }
        for e in UNENFORCED {
            assert_eq!(UNENFORCED.iter().filter(|o| o.field == e.field).count(), 1, "{}", e.field);
            assert!(used.iter().any(|k| k == e.field), "{} is in UNENFORCED but never warned about", e.field);
        }
    }
}
