//! Envoy API resources as the config module reads them: a resource's protobuf (an `Any`: a
//! Listener, Cluster, RouteConfiguration or ClusterLoadAssignment, whose extension configs are
//! `Any`s too) as proto3 JSON with the proto field names and `"@type"`, the form of a resource in
//! a `dynamic_resources` file, so that a resource from a management server is judged by exactly
//! the code that judges one from a file. The descriptors come from `envoy_api.pb.gz`
//! (scripts/xds_descriptors.py cuts them from the envoy-types crate's set). Owns no I/O.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;
use std::io::Read;
use std::sync::OnceLock;

/// The Envoy API's descriptors, decoded once (a few milliseconds) on first use.
fn pool() -> Result<&'static DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(&include_bytes!("envoy_api.pb.gz")[..])
            .read_to_end(&mut bytes)
            .map_err(|e| format!("the built-in Envoy API descriptors: {e}"))?;
        DescriptorPool::decode(bytes.as_slice())
            .map_err(|e| format!("the built-in Envoy API descriptors: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn descriptor(type_url: &str) -> Result<prost_reflect::MessageDescriptor, String> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    pool()?.get_message_by_name(name).ok_or_else(|| format!("unknown resource type \"{type_url}\""))
}

/// The message `value` of `type_url` (or a bare message name) as JSON, without `"@type"`.
pub fn message_json(type_url: &str, value: &[u8]) -> Result<Value, String> {
    let message = DynamicMessage::decode(descriptor(type_url)?, value)
        .map_err(|e| format!("a {type_url} that does not decode: {e}"))?;
    // 64-bit integers as numbers: the config module reads them as numbers, as YAML writes them.
    let options = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("a {type_url} that has no JSON form: {e}"))
}

/// The message of `type_url` (or a bare message name) written as JSON `fields` (proto field
/// names or JSON names), as protobuf bytes.
pub fn message_bytes(type_url: &str, fields: Value) -> Result<Vec<u8>, String> {
    let message =
        DynamicMessage::deserialize(descriptor(type_url)?, fields).map_err(|e| format!("{type_url}: {e}"))?;
    Ok(message.encode_to_vec())
}

/// The resource `value` of `type_url` as JSON, `"@type"` first.
pub fn to_json(type_url: &str, value: &[u8]) -> Result<Value, String> {
    let fields = message_json(type_url, value)?;
    let mut out = serde_json::Map::new();
    out.insert("@type".to_string(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = fields {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

/// A resource of a response of `response_type` (an `Any` of `type_url`): its name (a cluster load
/// assignment's `cluster_name`, else `name`) and its JSON.
pub fn named(response_type: &str, type_url: &str, value: &[u8]) -> Result<(String, Value), String> {
    if type_url != response_type {
        return Err(format!("a resource of type \"{type_url}\" in a response of type \"{response_type}\""));
    }
    let value = to_json(type_url, value)?;
    let key = if response_type == super::EDS { "cluster_name" } else { "name" };
    let name = value.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok((name, value))
}

/// The inverse: a resource written as JSON (with its `"@type"`, as in a resource file) as its
/// type URL and protobuf bytes. For the tests' management server, and for the node identity.
pub fn from_json(resource: &Value) -> Result<(String, Vec<u8>), String> {
    let mut fields = resource.as_object().cloned().ok_or("a resource is a mapping")?;
    let Some(Value::String(type_url)) = fields.remove("@type") else {
        return Err("a resource needs \"@type\"".to_string());
    };
    let bytes = message_bytes(&type_url, Value::Object(fields))?;
    Ok((type_url, bytes))
}
