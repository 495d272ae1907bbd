# Every timeout skiff enforces, set (long enough never to fire): for bench/ab.sh B_SED_FILE, to
# measure what configuring them costs a request.
s|^\( *\)stat_prefix: \(.*\)$|\1stat_prefix: \2\n\1stream_idle_timeout: 300s\n\1request_timeout: 60s\n\1delayed_close_timeout: 1s\n\1common_http_protocol_options: { idle_timeout: 3600s, max_connection_duration: 3600s, max_stream_duration: 120s, max_requests_per_connection: 1000000, max_headers_count: 100 }|
s|route: { cluster: backend }|route: { cluster: backend, timeout: 15s, idle_timeout: 60s, max_stream_duration: { max_stream_duration: 90s }, retry_policy: { retry_on: 5xx, per_try_timeout: 10s } }|
s|^\(      connect_timeout: 1s\)$|\1\n      common_http_protocol_options: { idle_timeout: 600s, max_connection_duration: 3600s }\n      upstream_connection_options: { tcp_keepalive: { keepalive_time: 60 } }|
