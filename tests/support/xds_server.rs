//! A small xDS management server for the tests (v3: state of the world and delta, over ADS or the
//! per-type cluster and endpoint services, and REST), on tonic with the Envoy API types skiff
//! itself uses: resources are written as JSON (as in a resource file, `"@type"` and all) per node
//! id, so one server serves the same routing to skiff and to the real Envoy with each on its own
//! listener port. `push` replaces a node's resources under a new version and sends them on every
//! open stream of that node (a delta stream gets the resources that changed and the names that
//! went, as go-control-plane's delta server does); every request (with its ACK or NACK) is
//! recorded for the test to read. It knows nothing about skiff or scenarios.
#![allow(dead_code)]

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use hyper::service::service_fn as tower_fn;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tonic::codegen::Service as _;
use tonic::{Request, Response, Status, Streaming};

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// One request a client sent, as the test checks it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The gRPC service it came on: "ads", "cds" (ClusterDiscoveryService), "eds", "rest"; with
    /// "-delta" for a delta stream.
    pub service: &'static str,
    /// Whether the request carried the node (a delta client sends it on its first request only).
    pub has_node: bool,
    pub node_id: String,
    pub node_cluster: String,
    pub user_agent_name: String,
    pub type_url: String,
    pub version_info: String,
    pub nonce: String,
    pub names: Vec<String>,
    /// A NACK's `error_detail.message`.
    pub error: Option<String>,
    /// The node's `locality.zone` and `metadata` (as JSON).
    pub zone: String,
    pub metadata: Option<Value>,
    /// Delta: `resource_names_subscribe` / `_unsubscribe` and `initial_resource_versions`
    /// (names only). A delta ACK or NACK has no `version_info`: there it is the
    /// `system_version_info` of the response whose nonce it answers.
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    pub initial: Vec<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A node's resources: version and, per type URL, the resources as JSON.
#[derive(Debug, Clone, Default)]
struct Config {
    version: String,
    resources: BTreeMap<String, Vec<Value>>,
}

#[derive(Default)]
struct State {
    configs: HashMap<String, Config>,
    seen: Vec<Seen>,
    /// Responses of these types go out this much later (a slow server).
    delays: HashMap<String, Duration>,
    /// When each response went out: node, type URL, version.
    sent: Vec<(String, String, String, Instant)>,
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    /// Bumped on every push: streams look at their node's config again.
    pushes: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

pub struct XdsServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    pushes: watch::Sender<u64>,
    /// Set to stop: the streams end, the listener closes.
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl XdsServer {
    /// Listens on a free loopback port, on a thread of its own.
    pub fn start() -> XdsServer {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Listens on `addr` (a port a client already points at).
    pub fn start_at(addr: SocketAddr) -> XdsServer {
        let std_listener = std::net::TcpListener::bind(addr).expect("bind xds server");
        let addr = std_listener.local_addr().expect("xds address");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State::default()));
        let (pushes, _) = watch::channel(0u64);
        let (stop, _) = watch::channel(false);
        let service = Service { state: state.clone(), pushes: pushes.clone(), stop: stop.clone() };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let mut stopped = service.stop.subscribe();
                let rest = service.clone();
                let ads = AggregatedDiscoveryServiceServer::new(service.clone());
                let cds = ClusterDiscoveryServiceServer::new(service.clone());
                let eds = EndpointDiscoveryServiceServer::new(service);
                // Three gRPC services on one connection, told apart by the method's path.
                let grpc = tower_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (mut ads, mut cds, mut eds, rest) =
                        (ads.clone(), cds.clone(), eds.clone(), rest.clone());
                    async move {
                        if req.uri().path().starts_with("/v3/discovery:") {
                            Ok(rest.rest(req).await)
                        } else if req.uri().path().starts_with("/envoy.service.cluster.v3.") {
                            cds.call(req).await
                        } else if req.uri().path().starts_with("/envoy.service.endpoint.v3.") {
                            eds.call(req).await
                        } else {
                            ads.call(req).await
                        }
                    }
                });
                loop {
                    let stream = tokio::select! {
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => return },
                        _ = stopped.changed() => return,
                    };
                    let svc = grpc.clone();
                    tokio::spawn(async move {
                        let http = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        // gRPC is HTTP/2; a REST poll may come over HTTP/1.1 (skiff) or HTTP/2.
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                    });
                }
            });
        });
        XdsServer { addr, state, pushes, stop, thread: Some(thread) }
    }

    /// Ends every stream and closes the listener (the runtime and its connections go with it).
    pub fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Sets `node`'s resources (JSON per type URL) as `version` and sends them to its streams.
    pub fn push(&self, node: &str, version: &str, resources: Vec<(&str, Vec<Value>)>) {
        {
            let mut state = self.state.lock().unwrap();
            let config = state.configs.entry(node.to_string()).or_default();
            config.version = version.to_string();
            for (type_url, list) in resources {
                config.resources.insert(type_url.to_string(), list);
            }
        }
        self.pushes.send_modify(|n| *n += 1);
    }

    /// Answers for `type_url` are sent `delay` after they are due.
    pub fn delay(&self, type_url: &str, delay: Duration) {
        self.state.lock().unwrap().delays.insert(type_url.to_string(), delay);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// When `version` of `type_url` was last sent to `node` (a response without delay).
    pub fn sent_at(&self, node: &str, type_url: &str, version: &str) -> Option<Instant> {
        let state = self.state.lock().unwrap();
        let mut sent = state.sent.iter().rev();
        sent.find(|(n, t, v, _)| n == node && t == type_url && v == version).map(|s| s.3)
    }

    /// When `node` first ACKed `version` of `type_url`.
    pub fn acked_at(&self, node: &str, type_url: &str, version: &str) -> Option<Instant> {
        let state = self.state.lock().unwrap();
        let mut acks = state.seen.iter().filter(|s| s.error.is_none());
        acks.find(|s| s.node_id == node && s.type_url == type_url && s.version_info == version).map(|s| s.at)
    }

    /// Waits until `node` has ACKed `version` of `type_url` (or `limit` passes).
    pub fn wait_ack(&self, node: &str, type_url: &str, version: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let acked = self.seen().iter().any(|s| {
                s.node_id == node && s.type_url == type_url && s.version_info == version && s.error.is_none()
            });
            if acked {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The first NACK from `node` for `type_url` (waiting up to `limit`).
    pub fn wait_nack(&self, node: &str, type_url: &str, limit: Duration) -> Option<Seen> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let nack = self
                .seen()
                .into_iter()
                .find(|s| s.node_id == node && s.type_url == type_url && s.error.is_some());
            if nack.is_some() {
                return nack;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Per type on a stream: what the client asks for and what was last sent.
#[derive(Default)]
struct Sub {
    names: Vec<String>,
    sent_version: Option<String>,
    sent_names: Vec<String>,
}

fn any(resource: &Value) -> Any {
    let (type_url, value) =
        skiff::xds::json::from_json(resource).unwrap_or_else(|e| panic!("resource {resource}: {e}"));
    Any { type_url, value }
}

/// What the test reads of request `r` on `service` from `node`.
fn seen(service: &'static str, node: &str, r: &DiscoveryRequest) -> Seen {
    Seen {
        service,
        node_id: node.to_string(),
        node_cluster: r.node.as_ref().map(|n| n.cluster.clone()).unwrap_or_default(),
        user_agent_name: r.node.as_ref().map(|n| n.user_agent_name.clone()).unwrap_or_default(),
        type_url: r.type_url.clone(),
        version_info: r.version_info.clone(),
        nonce: r.response_nonce.clone(),
        names: r.resource_names.clone(),
        error: r.error_detail.as_ref().map(|e| e.message.clone()),
        zone: r.node.as_ref().and_then(|n| n.locality.as_ref()).map(|l| l.zone.clone()).unwrap_or_default(),
        metadata: r
            .node
            .as_ref()
            .and_then(|n| n.metadata.as_ref())
            .map(|m| Value::Object(m.fields.iter().map(|(k, v)| (k.clone(), struct_value(v))).collect())),
        has_node: r.node.is_some(),
        subscribe: Vec::new(),
        unsubscribe: Vec::new(),
        initial: Vec::new(),
        at: Instant::now(),
    }
}

/// The same of delta request `r`; `version` is that of the response it answers.
fn seen_delta(service: &'static str, node: &str, r: &DeltaDiscoveryRequest, version: String) -> Seen {
    let mut initial: Vec<String> = r.initial_resource_versions.keys().cloned().collect();
    initial.sort();
    Seen {
        service,
        has_node: r.node.is_some(),
        node_id: node.to_string(),
        node_cluster: r.node.as_ref().map(|n| n.cluster.clone()).unwrap_or_default(),
        user_agent_name: r.node.as_ref().map(|n| n.user_agent_name.clone()).unwrap_or_default(),
        type_url: r.type_url.clone(),
        version_info: version,
        nonce: r.response_nonce.clone(),
        names: Vec::new(),
        error: r.error_detail.as_ref().map(|e| e.message.clone()),
        zone: String::new(),
        metadata: None,
        subscribe: r.resource_names_subscribe.clone(),
        unsubscribe: r.resource_names_unsubscribe.clone(),
        initial,
        at: Instant::now(),
    }
}

/// A resource's version on a delta stream: its content's hash, so that only what changed is sent.
fn content_version(resource: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    resource.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A protobuf `Value` as JSON (strings, numbers, bools, nesting), for checking node metadata.
fn struct_value(v: &envoy_types::pb::google::protobuf::Value) -> Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => json_number(*n),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => {
            Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), struct_value(v))).collect())
        }
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(struct_value).collect()),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

fn json_number(n: f64) -> Value {
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

fn resource_name(type_url: &str, r: &Value) -> String {
    let key = if type_url == EDS { "cluster_name" } else { "name" };
    r.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

type ResponseStream = Pin<Box<dyn futures_util::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
/// Per type on a delta stream: what the client asks for and what it holds (name → version).
#[derive(Default)]
struct DeltaSub {
    wildcard: bool,
    names: BTreeSet<String>,
    has: BTreeMap<String, String>,
}

type DeltaStream = Pin<Box<dyn futures_util::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

impl Service {
    /// Sends every subscribed type whose version or names differ from what was last sent, in
    /// Envoy's order (clusters, endpoints, listeners, routes).
    fn sync(
        &self,
        node: &str,
        subs: &mut BTreeMap<String, Sub>,
        nonce: &mut u64,
        out: &mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>,
    ) {
        let (config, delays) = {
            let state = self.state.lock().unwrap();
            (state.configs.get(node).cloned().unwrap_or_default(), state.delays.clone())
        };
        for type_url in [CDS, EDS, LDS, RDS] {
            let Some(sub) = subs.get_mut(type_url) else { continue };
            if sub.sent_version.as_deref() == Some(config.version.as_str()) && sub.sent_names == sub.names {
                continue;
            }
            let all = config.resources.get(type_url).cloned().unwrap_or_default();
            let wildcard = type_url == LDS || type_url == CDS;
            let names: std::collections::HashSet<&str> = sub.names.iter().map(String::as_str).collect();
            let resources: Vec<Any> = all
                .iter()
                .filter(|r| wildcard || names.contains(resource_name(type_url, r).as_str()))
                .map(any)
                .collect();
            if !wildcard && resources.is_empty() {
                continue;
            }
            *nonce += 1;
            sub.sent_version = Some(config.version.clone());
            sub.sent_names = sub.names.clone();
            let response = DiscoveryResponse {
                version_info: config.version.clone(),
                resources,
                type_url: type_url.to_string(),
                nonce: nonce.to_string(),
                ..DiscoveryResponse::default()
            };
            match delays.get(type_url).copied() {
                Some(delay) => {
                    let out = out.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = out.send(Ok(response));
                    });
                }
                None => {
                    let _ = out.send(Ok(response));
                    let sent =
                        (node.to_string(), type_url.to_string(), config.version.clone(), Instant::now());
                    self.state.lock().unwrap().sent.push(sent);
                }
            }
        }
    }
}

impl Service {
    /// A delta stream: sends each subscribed type's resources that the client does not hold at
    /// their current version, and the names it holds that are gone.
    fn sync_delta(
        &self,
        node: &str,
        subs: &mut BTreeMap<String, DeltaSub>,
        nonce: &mut u64,
        versions: &mut HashMap<String, String>,
        out: &mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>,
    ) {
        let (config, delays) = {
            let state = self.state.lock().unwrap();
            (state.configs.get(node).cloned().unwrap_or_default(), state.delays.clone())
        };
        for type_url in [CDS, EDS, LDS, RDS] {
            let Some(sub) = subs.get_mut(type_url) else { continue };
            let all = config.resources.get(type_url).cloned().unwrap_or_default();
            let current: BTreeMap<String, Value> = all
                .into_iter()
                .map(|r| (resource_name(type_url, &r), r))
                .filter(|(n, _)| sub.wildcard || sub.names.contains(n))
                .collect();
            let resources: Vec<Resource> = current
                .iter()
                .filter(|(n, r)| sub.has.get(*n) != Some(&content_version(r)))
                .map(|(n, r)| Resource {
                    name: n.clone(),
                    version: content_version(r),
                    resource: Some(any(r)),
                    ..Resource::default()
                })
                .collect();
            let removed: Vec<String> =
                sub.has.keys().filter(|n| !current.contains_key(*n)).cloned().collect();
            if resources.is_empty() && removed.is_empty() {
                continue;
            }
            for r in &resources {
                sub.has.insert(r.name.clone(), r.version.clone());
            }
            for n in &removed {
                sub.has.remove(n);
            }
            *nonce += 1;
            versions.insert(nonce.to_string(), config.version.clone());
            let response = DeltaDiscoveryResponse {
                system_version_info: config.version.clone(),
                resources,
                type_url: type_url.to_string(),
                removed_resources: removed,
                nonce: nonce.to_string(),
                ..DeltaDiscoveryResponse::default()
            };
            match delays.get(type_url).copied() {
                Some(delay) => {
                    let out = out.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = out.send(Ok(response));
                    });
                }
                None => {
                    let _ = out.send(Ok(response));
                }
            }
        }
    }

    /// One delta stream: records each request, follows its subscriptions, sends what changed.
    fn serve_delta(
        &self,
        service: &'static str,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
    ) -> DeltaStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = self.clone();
        let mut pushes = self.pushes.subscribe();
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            let mut node = String::new();
            let mut subs: BTreeMap<String, DeltaSub> = BTreeMap::new();
            let mut nonce = 0u64;
            let mut versions: HashMap<String, String> = HashMap::new();
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(r)) = m else { return };
                        if let Some(n) = &r.node {
                            node = n.id.clone();
                        }
                        let version = versions.get(&r.response_nonce).cloned().unwrap_or_default();
                        let seen = seen_delta(service, &node, &r, version);
                        this.state.lock().unwrap().seen.push(seen);
                        let first = !subs.contains_key(&r.type_url);
                        let sub = subs.entry(r.type_url.clone()).or_default();
                        // An empty first subscription is the legacy wildcard; "*" the explicit one.
                        let wildcard = r.type_url == LDS || r.type_url == CDS;
                        if wildcard && first && r.resource_names_subscribe.is_empty() {
                            sub.wildcard = true;
                        }
                        for n in &r.resource_names_subscribe {
                            match n.as_str() {
                                "*" => sub.wildcard = true,
                                _ => { sub.names.insert(n.clone()); }
                            }
                        }
                        for n in &r.resource_names_unsubscribe {
                            match n.as_str() {
                                "*" => sub.wildcard = false,
                                _ => {
                                    sub.names.remove(n);
                                    sub.has.remove(n);
                                }
                            }
                        }
                        sub.has.extend(r.initial_resource_versions.clone());
                    }
                    c = pushes.changed() => if c.is_err() { return },
                    _ = stopped.changed() => return,
                }
                this.sync_delta(&node, &mut subs, &mut nonce, &mut versions, &tx);
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }))
    }

    /// REST: one poll (a JSON `DiscoveryRequest`), answered with the node's resources of that
    /// type as JSON, or 304 when the client has the current version.
    async fn rest(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<tonic::body::Body> {
        use http_body_util::BodyExt;
        use prost::Message;
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let fields: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let bytes = skiff::xds::json::message_bytes("envoy.service.discovery.v3.DiscoveryRequest", fields)
            .expect("a DiscoveryRequest");
        let r = DiscoveryRequest::decode(bytes.as_slice()).expect("a DiscoveryRequest");
        let node = r.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
        let config = {
            let mut state = self.state.lock().unwrap();
            state.seen.push(seen("rest", &node, &r));
            state.configs.get(&node).cloned().unwrap_or_default()
        };
        let respond = |status: u16, body: String| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body))))
                .expect("response")
        };
        if r.version_info == config.version {
            return respond(304, String::new());
        }
        let wildcard = r.type_url == LDS || r.type_url == CDS;
        let all = config.resources.get(&r.type_url).cloned().unwrap_or_default();
        let resources: Vec<Value> = all
            .into_iter()
            .filter(|v| wildcard || r.resource_names.contains(&resource_name(&r.type_url, v)))
            .collect();
        let nonce = format!("rest-{}", config.version);
        let body = serde_json::json!({"version_info": config.version, "resources": resources, "type_url": r.type_url, "nonce": nonce});
        respond(200, body.to_string())
    }

    /// One stream (ADS, or one type's service): records each request, answers what changed.
    fn serve(&self, service: &'static str, mut inbound: Streaming<DiscoveryRequest>) -> ResponseStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = self.clone();
        let mut pushes = self.pushes.subscribe();
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            let mut node = String::new();
            let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(r)) = m else { return };
                        if let Some(n) = &r.node {
                            node = n.id.clone();
                        }
                        let seen = seen(service, &node, &r);
                        this.state.lock().unwrap().seen.push(seen);
                        let mut names = r.resource_names.clone();
                        names.sort();
                        subs.entry(r.type_url.clone()).or_default().names = names;
                    }
                    c = pushes.changed() => if c.is_err() { return },
                    _ = stopped.changed() => return,
                }
                this.sync(&node, &mut subs, &mut nonce, &tx);
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }))
    }
}

#[tonic::async_trait]
impl ClusterDiscoveryService for Service {
    type StreamClustersStream = ResponseStream;
    type DeltaClustersStream = DeltaStream;

    async fn stream_clusters(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        Ok(Response::new(self.serve("cds", request.into_inner())))
    }

    async fn delta_clusters(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaClustersStream>, Status> {
        Ok(Response::new(self.serve_delta("cds-delta", request.into_inner())))
    }

    async fn fetch_clusters(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("streams only"))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.serve("ads", request.into_inner())))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.serve_delta("ads-delta", request.into_inner())))
    }
}

#[tonic::async_trait]
impl EndpointDiscoveryService for Service {
    type StreamEndpointsStream = ResponseStream;
    type DeltaEndpointsStream = DeltaStream;

    async fn stream_endpoints(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamEndpointsStream>, Status> {
        Ok(Response::new(self.serve("eds", request.into_inner())))
    }

    async fn delta_endpoints(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaEndpointsStream>, Status> {
        Ok(Response::new(self.serve_delta("eds-delta", request.into_inner())))
    }

    async fn fetch_endpoints(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("streams only"))
    }
}
