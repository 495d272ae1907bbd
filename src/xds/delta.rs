//! Incremental (delta) xDS, one stream's side of it: per resource type what the control loop asks
//! for, what the server has been told on this stream, and the resources the loop accepted (name
//! → version and resource). Each `DeltaDiscoveryResponse` (resources added or changed, names
//! removed) becomes the same `Delivery` a state-of-the-world response makes, so that the control
//! loop judges, warms, counts and dumps it on one path: for listeners and clusters the whole
//! current set, for route configurations and assignments the resources that came. Owns no I/O
//! (`client` runs the stream) and no config state.
//!
//! A NACK does not poison the map: a response's changes enter the accepted map only when the
//! loop's verdict on it is an ACK. Listeners and clusters (whole sets) are handed on one response
//! at a time, the next waiting for the verdict on the one before, so that each set is the accepted
//! one plus one response's changes (Envoy too applies responses one after another). Route
//! configurations and assignments travel one resource per text and never wait on one another:
//! their responses go on at once and their changes enter the map in the order they came, as the
//! verdicts arrive. Envoy ignores a delta removal of a route configuration (it logs it) or of an
//! assignment (the cluster keeps its endpoints); so does skiff, forgetting only the name.

use super::{json, rank, wildcard};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A response as the control loop takes it: resources as JSON (name, resource), or why they could
/// not be read.
#[derive(Debug)]
pub struct Delivery {
    pub type_url: String,
    /// The response's `system_version_info` (what Envoy shows as the version).
    pub version_info: String,
    pub nonce: String,
    pub resources: Result<Vec<(String, Value)>, String>,
}

/// An accepted resource: its version (the server's, opaque) and the resource as JSON under its
/// own name.
#[derive(Debug, Clone)]
struct Held {
    version: String,
    name: String,
    value: Value,
}

/// A response handed to the loop and not yet answered: its changes (None: removed) and, once
/// given, whether the loop accepted it.
#[derive(Debug)]
struct Unjudged {
    nonce: String,
    changes: Vec<(String, Option<Held>)>,
    accepted: Option<bool>,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Asked for at all (route configurations and assignments: some name is wanted).
    active: bool,
    names: BTreeSet<String>,
    /// What this stream has told the server (None: nothing yet).
    told: Option<BTreeSet<String>>,
    accepted: BTreeMap<String, Held>,
    unjudged: VecDeque<Unjudged>,
    /// Listeners' or clusters' responses that wait for the verdict on the one before.
    waiting: VecDeque<DeltaDiscoveryResponse>,
}

/// Every type of one delta stream.
#[derive(Debug)]
pub struct Types {
    /// Sent on every request, as Envoy's default (`set_node_on_first_message_only: false`).
    node: Node,
    types: BTreeMap<String, TypeState>,
}

impl Types {
    pub fn new(node: Node) -> Types {
        Types { node, types: BTreeMap::new() }
    }

    /// Asks for exactly `wanted` (type, names; listeners and clusters with no names: every
    /// resource); a type not named asks for nothing. `changes` makes the requests.
    pub fn want(&mut self, wanted: Vec<(&'static str, Vec<String>)>) {
        for state in self.types.values_mut() {
            state.active = false;
            state.names.clear();
        }
        for (type_url, names) in wanted {
            let state = self.types.entry(type_url.to_string()).or_default();
            state.active = true;
            state.names = names.into_iter().collect();
        }
    }

    /// A fresh stream: what the old one was told and what was in flight on it are gone; the
    /// first requests, in Envoy's order, carry the accepted versions.
    pub fn restart(&mut self) -> Vec<DeltaDiscoveryRequest> {
        for state in self.types.values_mut() {
            state.told = None;
            state.unjudged.clear();
            state.waiting.clear();
        }
        self.changes()
    }

    /// The requests that bring the server's view of each type to what is wanted: the first
    /// request of a type names everything wanted (a wildcard's: nothing, Envoy's legacy wildcard)
    /// and the versions accepted before; later ones the names subscribed and unsubscribed.
    pub fn changes(&mut self) -> Vec<DeltaDiscoveryRequest> {
        let mut order: Vec<String> = self.types.keys().cloned().collect();
        order.sort_by_key(|t| rank(t));
        let mut out = Vec::new();
        for type_url in order {
            let Some(state) = self.types.get_mut(&type_url) else { continue };
            let mut request = DeltaDiscoveryRequest { type_url: type_url.clone(), ..Default::default() };
            match (&state.told, state.active) {
                (None, false) => continue,
                (None, true) => {
                    if !wildcard(&type_url) {
                        request.resource_names_subscribe = state.names.iter().cloned().collect();
                    }
                    request.initial_resource_versions =
                        state.accepted.iter().map(|(n, h)| (n.clone(), h.version.clone())).collect();
                    state.told = Some(state.names.clone());
                }
                (Some(told), active) => {
                    let wanted = if active { state.names.clone() } else { BTreeSet::new() };
                    let gone: Vec<String> = told.difference(&wanted).cloned().collect();
                    request.resource_names_subscribe = wanted.difference(told).cloned().collect();
                    if !active && wildcard(&type_url) {
                        request.resource_names_unsubscribe = vec!["*".to_string()];
                    } else {
                        request.resource_names_unsubscribe = gone.clone();
                    }
                    let unchanged = request.resource_names_subscribe.is_empty()
                        && request.resource_names_unsubscribe.is_empty();
                    if unchanged {
                        continue;
                    }
                    // Envoy forgets what it no longer asks for: a later subscription starts afresh.
                    for name in &gone {
                        state.accepted.remove(name);
                    }
                    state.told = active.then_some(wanted);
                }
            }
            request.node = Some(self.node.clone());
            out.push(request);
        }
        out
    }

    /// A response: what the control loop is to apply now (None: a listener or cluster response
    /// that waits for the verdict on the one before).
    pub fn received(&mut self, r: DeltaDiscoveryResponse) -> Option<Delivery> {
        let state = self.types.entry(r.type_url.clone()).or_default();
        if wildcard(&r.type_url) && !state.unjudged.is_empty() {
            state.waiting.push_back(r);
            return None;
        }
        Some(deliver(state, r))
    }

    /// The loop's verdict on response `nonce` of `type_url` (`error` None: ACK): the request
    /// that answers it (None when the response came on an earlier stream), and the next
    /// response of the type when one was waiting for this verdict.
    pub fn verdict(
        &mut self,
        type_url: &str,
        nonce: &str,
        error: Option<String>,
    ) -> (Option<DeltaDiscoveryRequest>, Option<Delivery>) {
        let Some(state) = self.types.get_mut(type_url) else { return (None, None) };
        let Some(u) = state.unjudged.iter_mut().find(|u| u.nonce == nonce) else { return (None, None) };
        u.accepted = Some(error.is_none());
        // Changes enter the map in the order their responses came.
        while state.unjudged.front().is_some_and(|u| u.accepted.is_some()) {
            let Some(u) = state.unjudged.pop_front() else { break };
            if u.accepted != Some(true) {
                continue;
            }
            for (name, held) in u.changes {
                match held {
                    Some(h) => state.accepted.insert(name, h),
                    None => state.accepted.remove(&name),
                };
            }
        }
        let next = match state.unjudged.is_empty() {
            true => state.waiting.pop_front().map(|r| deliver(state, r)),
            false => None,
        };
        let request = DeltaDiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            // As Envoy: INVALID_ARGUMENT (3) with the reason.
            error_detail: error.map(|message| Status { code: 3, message, ..Status::default() }),
            ..Default::default()
        };
        (Some(request), next)
    }
}

/// Response `r` as the loop takes it, recorded as unjudged.
fn deliver(state: &mut TypeState, r: DeltaDiscoveryResponse) -> Delivery {
    let read: Result<Vec<(String, Option<Held>)>, String> = r
        .resources
        .iter()
        // A resource with no body is a TTL heartbeat: the held one stays.
        .filter_map(|res| res.resource.as_ref().map(|any| (res, any)))
        .map(|(res, any)| {
            let (name, value) = json::named(&r.type_url, &any.type_url, &any.value)?;
            Ok((res.name.clone(), Some(Held { version: res.version.clone(), name, value })))
        })
        .chain(r.removed_resources.iter().map(|name| Ok((name.clone(), None))))
        .collect();
    let (changes, resources) = match read {
        Err(e) => (Vec::new(), Err(e)),
        Ok(changes) if wildcard(&r.type_url) => {
            let mut set = state.accepted.clone();
            for (name, held) in &changes {
                match held {
                    Some(h) => set.insert(name.clone(), h.clone()),
                    None => set.remove(name),
                };
            }
            let all = set.into_values().map(|h| (h.name, h.value)).collect();
            (changes, Ok(all))
        }
        Ok(changes) => {
            let came =
                changes.iter().filter_map(|(_, h)| h.as_ref()).map(|h| (h.name.clone(), h.value.clone()));
            let came = came.collect();
            (changes, Ok(came))
        }
    };
    state.unjudged.push_back(Unjudged { nonce: r.nonce.clone(), changes, accepted: None });
    Delivery { type_url: r.type_url, version_info: r.system_version_info, nonce: r.nonce, resources }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{EDS, LDS};
    use envoy_types::pb::envoy::service::discovery::v3::Resource;
    use envoy_types::pb::google::protobuf::Any;

    /// A resource named `name` (under `key`) at version "<name>-v".
    fn resource(type_url: &str, key: &str, name: &str) -> Resource {
        let (type_url, value) =
            json::from_json(&serde_json::json!({"@type": type_url, key: name})).expect("a resource");
        Resource {
            name: name.into(),
            version: format!("{name}-v"),
            resource: Some(Any { type_url, value }),
            ..Default::default()
        }
    }

    fn listener(name: &str) -> Resource {
        resource(LDS, "name", name)
    }

    fn assignment(name: &str) -> Resource {
        resource(EDS, "cluster_name", name)
    }

    fn response(
        type_url: &str,
        nonce: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: nonce.into(),
            resources,
            type_url: type_url.into(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(d: &Delivery) -> Vec<String> {
        d.resources.as_ref().expect("resources").iter().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn a_nacked_listener_response_never_reaches_the_next_one() {
        let mut t = Types::new(Node::default());
        t.want(vec![(LDS, vec![])]);
        let first = t.restart();
        assert_eq!(first.len(), 1);
        assert!(first[0].resource_names_subscribe.is_empty() && first[0].node.is_some());
        let d1 = t.received(response(LDS, "1", vec![listener("l1")], &[])).expect("delivered");
        assert_eq!(names(&d1), ["l1"]);
        // The next waits for the verdict on the first, then carries both.
        assert!(t.received(response(LDS, "2", vec![listener("l2")], &[])).is_none());
        let (ack, next) = t.verdict(LDS, "1", None);
        let ack = ack.expect("an ACK");
        assert_eq!((ack.response_nonce.as_str(), ack.error_detail.is_none()), ("1", true));
        assert_eq!(names(&next.expect("the waiting one")), ["l1", "l2"]);
        let (nack, _) = t.verdict(LDS, "2", Some("bad l2".into()));
        assert_eq!(
            nack.and_then(|r| r.error_detail).map(|e| (e.code, e.message)),
            Some((3, "bad l2".into()))
        );
        // l2 was refused: the next set is l1 and what the next response brings.
        let d3 = t.received(response(LDS, "3", vec![listener("l3")], &["l1"])).expect("delivered");
        assert_eq!(names(&d3), ["l3"]);
        // A verdict on a response of a stream since restarted answers nothing.
        t.restart();
        assert!(matches!(t.verdict(LDS, "3", None), (None, None)));
    }

    #[test]
    fn named_subscriptions_change_by_delta_and_a_restart_names_what_was_accepted() {
        let mut t = Types::new(Node::default());
        t.want(vec![(EDS, vec!["a".into(), "b".into()])]);
        let first = t.restart();
        assert_eq!(first[0].resource_names_subscribe, ["a", "b"]);
        let d =
            t.received(response(EDS, "1", vec![assignment("a"), assignment("b")], &[])).expect("delivered");
        assert_eq!(names(&d), ["a", "b"]);
        // An assignment's removal is ignored (as Envoy) but forgotten.
        let d = t.received(response(EDS, "2", vec![], &["b"])).expect("delivered");
        assert!(names(&d).is_empty());
        t.verdict(EDS, "1", None);
        t.verdict(EDS, "2", None);
        t.want(vec![(EDS, vec!["a".into(), "c".into()])]);
        let change = t.changes();
        let asked = |r: &DeltaDiscoveryRequest| {
            (r.resource_names_subscribe.clone(), r.resource_names_unsubscribe.clone())
        };
        assert_eq!(asked(&change[0]), (vec!["c".to_string()], vec!["b".to_string()]));
        t.received(response(EDS, "3", vec![assignment("c")], &[]));
        t.verdict(EDS, "3", None);
        t.want(vec![(EDS, vec!["c".into()])]);
        let change = t.changes();
        assert_eq!(asked(&change[0]), (vec![], vec!["a".to_string()]));
        assert!(t.changes().is_empty());
        // A fresh stream asks for what is wanted and names what is held.
        let again = t.restart();
        assert_eq!(again[0].resource_names_subscribe, ["c"]);
        let held: Vec<_> = again[0].initial_resource_versions.iter().collect();
        assert_eq!(held, [(&"c".to_string(), &"c-v".to_string())]);
    }
}
