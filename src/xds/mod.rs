//! xDS from a management server: the gRPC client thread (`client`), the incremental (delta)
//! protocol's per-stream resource state (`delta`) and the conversion of the Envoy API's protobuf
//! resources into the JSON the config module reads (`json`). Used by the control loop only; the
//! shards never see any of it. Owns no config state.

pub mod client;
pub mod delta;
pub mod json;

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Envoy's order of subscription on a fresh stream: clusters, their endpoints, listeners, their
/// routes.
fn rank(type_url: &str) -> u8 {
    match type_url {
        CDS => 0,
        EDS => 1,
        LDS => 2,
        _ => 3,
    }
}

/// Listeners and clusters: every resource of the type is asked for (a wildcard subscription) and
/// each response stands for the whole set; route configurations and assignments go by name.
fn wildcard(type_url: &str) -> bool {
    type_url == LDS || type_url == CDS
}
