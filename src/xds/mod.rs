//! xDS from a management server: the gRPC client thread (`client`) and the conversion of the
//! Envoy API's protobuf resources into the JSON the config module reads (`json`). Used by the
//! control loop only; the shards never see any of it. Owns no config state.

pub mod client;
pub mod json;
