//! The streams to management servers (xDS v3): one aggregated stream (ADS) and/or one stream per
//! resource type, each to the static cluster its source names, state of the world or
//! incremental (delta, `delta`), or REST polling. They run on a thread of their own with a tokio
//! current-thread runtime (tonic's), so neither the shards nor the control loop's runtime carry
//! any of it. The thread subscribes as the control loop asks, turns each response's resources
//! into JSON (`json`), hands them to the control loop (which applies them as it applies a
//! replaced file) and sends the ACK or NACK the loop answers. Owns no config state: what a
//! response means is the control loop's business.

use super::delta::{self, Delivery};
use super::{json, rank};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use futures_channel::mpsc::UnboundedSender as EventSender;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub use super::{CDS, EDS, LDS, RDS};

/// One gRPC stream: to `cluster`, aggregated (`type_url` None) or for one type, state of the world
/// or `delta`; or with `rest`, one type polled over HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub cluster: String,
    pub type_url: Option<&'static str>,
    pub delta: bool,
    pub rest: Option<Rest>,
}

/// REST polling: the pause between polls and each poll's time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rest {
    pub refresh_delay: Duration,
    pub request_timeout: Duration,
}

impl StreamKey {
    /// The name its resources travel under (`config::ServerSource::stream_name`).
    pub fn name(&self) -> String {
        match (self.type_url, self.delta, self.rest) {
            (None, _, _) => "ads".to_string(),
            (Some(_), true, _) => format!("delta:{}", self.cluster),
            (Some(_), false, None) => format!("grpc:{}", self.cluster),
            (Some(_), false, Some(_)) => format!("rest:{}", self.cluster),
        }
    }

    /// The REST path of this stream's type.
    fn rest_path(&self) -> &'static str {
        match self.type_url {
            Some(LDS) => "/v3/discovery:listeners",
            Some(CDS) => "/v3/discovery:clusters",
            Some(RDS) => "/v3/discovery:routes",
            _ => "/v3/discovery:endpoints",
        }
    }

    /// The gRPC method of this stream.
    fn method(&self) -> &'static str {
        match (self.type_url, self.delta) {
            (None, false) => {
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
            }
            (Some(LDS), false) => "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
            (Some(CDS), false) => "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
            (Some(RDS), false) => "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
            (Some(_), false) => "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
            (None, true) => "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
            (Some(LDS), true) => "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners",
            (Some(CDS), true) => "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters",
            (Some(RDS), true) => "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes",
            (Some(_), true) => "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints",
        }
    }
}

/// What a stream asks for of one type: every resource (`names` empty: listeners, clusters) or
/// the named ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub stream: StreamKey,
    pub type_url: &'static str,
    pub names: Vec<String>,
}

/// A response, its resources as JSON (name, resource), or why they could not be read.
#[derive(Debug)]
pub struct Response {
    pub stream: StreamKey,
    pub type_url: String,
    pub version_info: String,
    pub nonce: String,
    pub resources: Result<Vec<(String, serde_json::Value)>, String>,
}

/// What the control loop hears from the streams.
#[derive(Debug)]
pub enum Event {
    Response(Response),
    /// A stream connected (true) or lost its connection (false).
    Connected(StreamKey, bool),
}

/// The control loop's verdict on a response: ACK (`error` None) or NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stream: StreamKey,
    pub type_url: String,
    pub version_info: String,
    pub nonce: String,
    pub error: Option<String>,
}

enum Command {
    Subscribe(Vec<Subscription>),
    Reply(Reply),
}

/// Who this node is to the management server: the bootstrap's `node` (id, cluster, locality,
/// metadata, the command line's names winning), and skiff's own name and version.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub cluster: String,
    pub locality: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
}

impl Identity {
    fn node(&self) -> Node {
        let mut n = serde_json::json!({
            "@type": "type.googleapis.com/envoy.config.core.v3.Node",
            "id": self.id,
            "cluster": self.cluster,
            // skiff's own name, honestly: a control plane that keys on "envoy" sees what it runs.
            "user_agent_name": "skiff",
            "user_agent_version": env!("CARGO_PKG_VERSION"),
        });
        for (key, value) in [("locality", &self.locality), ("metadata", &self.metadata)] {
            if let Some(v) = value {
                n[key] = v.clone();
            }
        }
        let node = json::from_json(&n)
            .and_then(|(_, bytes)| Node::decode(bytes.as_slice()).map_err(|e| e.to_string()));
        node.unwrap_or_else(|e| {
            log::warn!("xds: the node's locality or metadata cannot be sent ({e}); sending id and cluster");
            Node { id: self.id.clone(), cluster: self.cluster.clone(), ..Node::default() }
        })
    }
}

/// The streams' thread; dropping it ends them.
#[derive(Debug)]
pub struct Client {
    commands: UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe(s) => write!(f, "Subscribe({s:?})"),
            Command::Reply(r) => write!(f, "Reply({r:?})"),
        }
    }
}

impl Client {
    /// Starts the thread. `targets` gives each server cluster's address (host, port); `events`
    /// is where responses and connection changes go.
    pub fn start(
        identity: Identity,
        targets: HashMap<String, (String, u16)>,
        events: EventSender<Event>,
    ) -> std::io::Result<Client> {
        let (commands, rx) = unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name("skiff-xds".into())
            .spawn(move || runtime.block_on(dispatch(identity.node(), targets, rx, events)))?;
        Ok(Client { commands })
    }

    /// Asks for exactly `subs` (a stream no longer named keeps its connection, subscribed to
    /// nothing).
    pub fn subscribe(&self, subs: Vec<Subscription>) {
        let _ = self.commands.send(Command::Subscribe(subs));
    }

    pub fn reply(&self, reply: Reply) {
        let _ = self.commands.send(Command::Reply(reply));
    }
}

/// Routes the control loop's commands to the streams, starting each stream when first named.
async fn dispatch(
    node: Node,
    targets: HashMap<String, (String, u16)>,
    mut commands: UnboundedReceiver<Command>,
    events: EventSender<Event>,
) {
    let mut streams: HashMap<StreamKey, UnboundedSender<Command>> = HashMap::new();
    while let Some(command) = commands.recv().await {
        match command {
            Command::Subscribe(subs) => {
                let mut by_stream: BTreeMap<StreamKey, Vec<Subscription>> = BTreeMap::new();
                for key in streams.keys() {
                    by_stream.entry(key.clone()).or_default();
                }
                for s in subs {
                    by_stream.entry(s.stream.clone()).or_default().push(s);
                }
                for (key, subs) in by_stream {
                    let tx = streams.entry(key.clone()).or_insert_with(|| {
                        let (tx, rx) = unbounded_channel();
                        let target = targets.get(&key.cluster).cloned();
                        let stream = Stream { key: key.clone(), node: node.clone(), events: events.clone() };
                        match key.rest {
                            Some(rest) => tokio::spawn(stream.poll(rest, target, rx)),
                            None => tokio::spawn(stream.run(target, rx)),
                        };
                        tx
                    });
                    let _ = tx.send(Command::Subscribe(subs));
                }
            }
            Command::Reply(r) => {
                if let Some(tx) = streams.get(&r.stream) {
                    let _ = tx.send(Command::Reply(r));
                }
            }
        }
    }
}

/// Per type on a stream: what is asked for, the last accepted version and the last nonce.
#[derive(Debug, Default, Clone)]
struct TypeState {
    /// Subscribed at all (an RDS or EDS subscription with no names asks for nothing).
    active: bool,
    names: Vec<String>,
    accepted: String,
    nonce: String,
}

struct Stream {
    key: StreamKey,
    node: Node,
    events: EventSender<Event>,
}

const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Stream {
    fn request(&self, type_url: &str, state: &TypeState, error: Option<String>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: state.accepted.clone(),
            node: Some(self.node.clone()),
            resource_names: state.names.clone(),
            type_url: type_url.to_string(),
            response_nonce: state.nonce.clone(),
            // As Envoy: INVALID_ARGUMENT (3) with the reason.
            error_detail: error.map(|message| Status { code: 3, message, ..Status::default() }),
            ..DiscoveryRequest::default()
        }
    }

    /// Connects, subscribes, relays; on a lost connection waits (jittered exponential back-off,
    /// 0.5 s to 30 s, as Envoy's) and starts again with the last accepted versions.
    async fn run(self, target: Option<(String, u16)>, mut commands: UnboundedReceiver<Command>) {
        let mut types: BTreeMap<&'static str, TypeState> = BTreeMap::new();
        let mut delta = delta::Types::new(self.node.clone());
        let mut backoff = BACKOFF_BASE;
        let Some((host, port)) = target else {
            log::error!("xds: cluster \"{}\" has no endpoint to connect to", self.key.cluster);
            return;
        };
        loop {
            let ended = match self.key.delta {
                true => self.delta_session(&host, port, &mut delta, &mut commands).await,
                false => self.session(&host, port, &mut types, &mut commands).await,
            };
            match ended {
                Ended::Stopped => return,
                Ended::Lost { was_up } => {
                    if was_up {
                        backoff = BACKOFF_BASE;
                        let _ = self.events.unbounded_send(Event::Connected(self.key.clone(), false));
                    }
                }
            }
            let jitter = Duration::from_millis(u64::from(std::process::id() ^ now_nanos()) % 250);
            let wait = tokio::time::sleep(backoff + jitter);
            tokio::pin!(wait);
            // Subscriptions change meanwhile; replies to a lost stream's responses go nowhere, but
            // what the loop accepted from it is held (and named to the next stream).
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    c = commands.recv() => match c {
                        None => return,
                        Some(Command::Subscribe(subs)) => {
                            delta.want(wanted(&subs));
                            set_names(&mut types, subs);
                        }
                        Some(Command::Reply(r)) => {
                            let _ = delta.verdict(&r.type_url, &r.nonce, r.error);
                        }
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// An HTTP/2 channel to the server, ready for a stream (Err: how the attempt ended).
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<tonic::client::Grpc<tonic::transport::Channel>, Ended> {
        let uri = format!(
            "http://{}:{port}",
            if host.contains(':') { format!("[{host}]") } else { host.to_string() }
        );
        let endpoint = match tonic::transport::Endpoint::from_shared(uri) {
            Ok(e) => e.connect_timeout(Duration::from_secs(5)),
            Err(e) => {
                log::error!("xds: cluster \"{}\": bad address {host}:{port}: {e}", self.key.cluster);
                return Err(Ended::Stopped);
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("xds: cannot reach cluster \"{}\" at {host}:{port}: {e}", self.key.cluster);
                return Err(Ended::Lost { was_up: false });
            }
        };
        // No limit on a received message, as Envoy's envoy_grpc client without
        // `max_receive_message_length`: tonic's 4 MiB default refused a state-of-the-world push
        // of 10 000 assignments of 20 endpoints.
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
        if let Err(e) = grpc.ready().await {
            log::warn!("xds: cluster \"{}\": {e}", self.key.cluster);
            return Err(Ended::Lost { was_up: false });
        }
        Ok(grpc)
    }

    /// Opens this stream's method on `grpc` with `requests` as its outbound side.
    async fn open<Req, Resp>(
        &self,
        mut grpc: tonic::client::Grpc<tonic::transport::Channel>,
        requests: UnboundedReceiver<Req>,
        (host, port): (&str, u16),
    ) -> Option<tonic::Streaming<Resp>>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let outbound =
            futures_util::stream::unfold(requests, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(self.key.method());
        match grpc.streaming(tonic::Request::new(outbound), path, codec).await {
            Ok(r) => {
                let _ = self.events.unbounded_send(Event::Connected(self.key.clone(), true));
                log::info!("xds: connected to cluster \"{}\" ({host}:{port})", self.key.cluster);
                Some(r.into_inner())
            }
            Err(e) => {
                log::warn!("xds: cluster \"{}\": the stream was refused: {e}", self.key.cluster);
                None
            }
        }
    }

    /// How a stream ended when its next message did not come.
    fn lost<T>(&self, m: Result<Option<T>, tonic::Status>) -> Result<T, Ended> {
        match m {
            Ok(Some(r)) => Ok(r),
            Ok(None) => {
                log::warn!("xds: cluster \"{}\" closed the stream", self.key.cluster);
                Err(Ended::Lost { was_up: true })
            }
            Err(e) => {
                log::warn!("xds: cluster \"{}\": stream lost: {e}", self.key.cluster);
                Err(Ended::Lost { was_up: true })
            }
        }
    }

    async fn session(
        &self,
        host: &str,
        port: u16,
        types: &mut BTreeMap<&'static str, TypeState>,
        commands: &mut UnboundedReceiver<Command>,
    ) -> Ended {
        let grpc = match self.connect(host, port).await {
            Ok(g) => g,
            Err(ended) => return ended,
        };
        let (requests, rx) = unbounded_channel::<DiscoveryRequest>();
        // A fresh stream starts from the last accepted versions, with no nonce, in Envoy's order.
        let mut order: Vec<_> = types.iter_mut().filter(|(_, s)| s.active).collect();
        order.sort_by_key(|(t, _)| rank(t));
        for (type_url, state) in order {
            state.nonce.clear();
            let _ = requests.send(self.request(type_url, state, None));
        }
        let Some(mut inbound) = self.open::<_, DiscoveryResponse>(grpc, rx, (host, port)).await else {
            return Ended::Lost { was_up: false };
        };
        loop {
            tokio::select! {
                m = inbound.message() => {
                    let r = match self.lost(m) {
                        Ok(r) => r,
                        Err(ended) => return ended,
                    };
                    if let Some(state) = types.iter_mut().find(|(t, _)| **t == r.type_url).map(|(_, s)| s) {
                        state.nonce = r.nonce.clone();
                    }
                    let _ = self.events.unbounded_send(Event::Response(self.response(r)));
                },
                c = commands.recv() => match c {
                    None => return Ended::Stopped,
                    Some(Command::Subscribe(subs)) => {
                        let before = types.clone();
                        set_names(types, subs);
                        for (type_url, state) in types.iter() {
                            let was = before.get(type_url).map(|s| (s.active, &s.names));
                            if was.unwrap_or((false, &Vec::new())) != (state.active, &state.names) {
                                let _ = requests.send(self.request(type_url, state, None));
                            }
                        }
                    }
                    Some(Command::Reply(reply)) => {
                        let Some((type_url, state)) = types.iter_mut().find(|(t, _)| **t == reply.type_url) else {
                            continue;
                        };
                        if reply.error.is_none() {
                            state.accepted = reply.version_info.clone();
                        }
                        // A reply to an older response still acknowledges its nonce: the server
                        // matches it to what it sent.
                        let mut answered = state.clone();
                        answered.nonce = reply.nonce;
                        let _ = requests.send(self.request(type_url, &answered, reply.error));
                    }
                },
            }
        }
    }

    /// A delta stream: the first requests carry what was accepted before; each response goes to
    /// the loop as `delta` makes it, each verdict back as an ACK or NACK, and a subscription
    /// change as the names subscribed and unsubscribed.
    async fn delta_session(
        &self,
        host: &str,
        port: u16,
        types: &mut delta::Types,
        commands: &mut UnboundedReceiver<Command>,
    ) -> Ended {
        let grpc = match self.connect(host, port).await {
            Ok(g) => g,
            Err(ended) => return ended,
        };
        let (requests, rx) = unbounded_channel::<DeltaDiscoveryRequest>();
        for request in types.restart() {
            let _ = requests.send(request);
        }
        let Some(mut inbound) = self.open::<_, DeltaDiscoveryResponse>(grpc, rx, (host, port)).await else {
            return Ended::Lost { was_up: false };
        };
        loop {
            tokio::select! {
                m = inbound.message() => {
                    let r = match self.lost(m) {
                        Ok(r) => r,
                        Err(ended) => return ended,
                    };
                    if let Some(d) = types.received(r) {
                        self.deliver(d);
                    }
                },
                c = commands.recv() => match c {
                    None => return Ended::Stopped,
                    Some(Command::Subscribe(subs)) => {
                        types.want(wanted(&subs));
                        for request in types.changes() {
                            let _ = requests.send(request);
                        }
                    }
                    Some(Command::Reply(reply)) => {
                        let (answer, next) = types.verdict(&reply.type_url, &reply.nonce, reply.error);
                        if let Some(request) = answer {
                            let _ = requests.send(request);
                        }
                        if let Some(d) = next {
                            self.deliver(d);
                        }
                    }
                },
            }
        }
    }

    fn deliver(&self, d: Delivery) {
        let response = Response {
            stream: self.key.clone(),
            type_url: d.type_url,
            version_info: d.version_info,
            nonce: d.nonce,
            resources: d.resources,
        };
        let _ = self.events.unbounded_send(Event::Response(response));
    }

    /// REST: one `POST` of the request as JSON every `refresh_delay` (an ACK or NACK goes with
    /// the next one, as Envoy's); 304 means nothing new. No poll while a response is being
    /// applied, so that it is not fetched twice.
    async fn poll(self, rest: Rest, target: Option<(String, u16)>, mut commands: UnboundedReceiver<Command>) {
        let Some((host, port)) = target else {
            log::error!("xds: cluster \"{}\" has no endpoint to poll", self.key.cluster);
            return;
        };
        let mut types: BTreeMap<&'static str, TypeState> = BTreeMap::new();
        let mut error: Option<String> = None;
        let mut applying = false;
        let mut up: Option<bool> = None;
        loop {
            if !applying {
                for (type_url, state) in types.iter_mut().filter(|(_, s)| s.active) {
                    let request = self.request(type_url, state, error.take());
                    let fetched =
                        tokio::time::timeout(rest.request_timeout, self.fetch(&host, port, request)).await;
                    let fetched =
                        fetched.unwrap_or_else(|_| Err("no answer within request_timeout".to_string()));
                    if up != Some(fetched.is_ok()) {
                        up = Some(fetched.is_ok());
                        let _ =
                            self.events.unbounded_send(Event::Connected(self.key.clone(), fetched.is_ok()));
                    }
                    match fetched {
                        Ok(Some(r)) => {
                            state.nonce = r.nonce.clone();
                            applying = true;
                            let _ = self.events.unbounded_send(Event::Response(self.response(r)));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::warn!("xds: polling cluster \"{}\" at {host}:{port}: {e}", self.key.cluster)
                        }
                    }
                }
            }
            let wait = tokio::time::sleep(rest.refresh_delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait, if !applying => break,
                    c = commands.recv() => match c {
                        None => return,
                        Some(Command::Subscribe(subs)) => set_names(&mut types, subs),
                        Some(Command::Reply(reply)) => {
                            if let Some(state) = types.get_mut(reply.type_url.as_str()) {
                                if reply.error.is_none() {
                                    state.accepted = reply.version_info;
                                }
                                state.nonce = reply.nonce;
                            }
                            error = reply.error;
                            applying = false;
                        }
                    },
                }
            }
        }
    }

    /// One REST poll: the response, or None for 304 Not Modified.
    async fn fetch(
        &self,
        host: &str,
        port: u16,
        request: DiscoveryRequest,
    ) -> Result<Option<DiscoveryResponse>, String> {
        use http_body_util::BodyExt;
        const REQUEST: &str = "envoy.service.discovery.v3.DiscoveryRequest";
        const RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";
        let body = json::message_json(REQUEST, &request.encode_to_vec())?.to_string();
        let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let post = tonic::codegen::http::Request::post(self.key.rest_path())
            .header("host", host)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = sender.send_request(post).await.map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        match status {
            304 => Ok(None),
            200 => {
                let fields: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| format!("the answer: {e}"))?;
                let message = json::message_bytes(RESPONSE, fields)?;
                DiscoveryResponse::decode(message.as_slice()).map(Some).map_err(|e| e.to_string())
            }
            other => Err(format!("status {other}")),
        }
    }

    fn response(&self, r: DiscoveryResponse) -> Response {
        let resources =
            r.resources.iter().map(|any| json::named(&r.type_url, &any.type_url, &any.value)).collect();
        Response {
            stream: self.key.clone(),
            type_url: r.type_url,
            version_info: r.version_info,
            nonce: r.nonce,
            resources,
        }
    }
}

enum Ended {
    /// The control loop is gone.
    Stopped,
    /// The connection failed or ended; `was_up` if it had been established.
    Lost { was_up: bool },
}

/// What `subs` ask for, by type, as `delta::Types::want` takes it.
fn wanted(subs: &[Subscription]) -> Vec<(&'static str, Vec<String>)> {
    subs.iter().map(|s| (s.type_url, s.names.clone())).collect()
}

/// `types` asking for exactly `subs` (a type no longer named asks for nothing).
fn set_names(types: &mut BTreeMap<&'static str, TypeState>, subs: Vec<Subscription>) {
    for state in types.values_mut() {
        state.active = false;
        state.names.clear();
    }
    for s in subs {
        let state = types.entry(s.type_url).or_default();
        state.active = true;
        state.names = s.names;
    }
}

fn now_nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}
