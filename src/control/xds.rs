//! The `dynamic_resources` files (and the route configuration files connection managers name in
//! `rds`) as the control loop watches them: per file its source, which file its path named when
//! last read, the last good text, and Envoy's update stats. Envoy picks up a file when one is
//! moved into place (an atomic rename; with `watched_directory`, a ConfigMap's `..data` swap) and
//! not when it is written in place; polling the identity of the file the path names (device,
//! inode and birth time, following symlinks) on the config check sees exactly such replacements,
//! and an unchanged path is never read again. Owns no parsing (the config module judges a file's
//! text) and no applying (the control loop builds the snapshot).
//!
//! A source on a management server (`ads: {}`, gRPC `api_config_source`) is a subscription of
//! the same kind: a response's resources become the text of a file under the source's name
//! (`ServerSource::path`; an RDS or EDS resource each its own, as a file per route configuration
//! or assignment), pending until the control loop applies it, and the verdict on every resource
//! of a response makes its ACK or NACK (`Reply`, collected in an outbox the loop sends).

use crate::admin::{InitPhase, InitWait, SubscriptionStats};
use crate::config::dynamic::{DocText, DocTexts};
use crate::config::file_identity::{identity, Identity};
use crate::config::{server_path, Bootstrap, Doc, PathSource, Xds};
use crate::stats::Scope;
use crate::xds::client::{self, Reply, Response, StreamKey, Subscription};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A watched file: listeners, clusters, or the route configurations or endpoints at a path.
#[derive(Debug, Clone, Eq)]
pub enum File {
    Lds,
    Cds,
    Rds(PathBuf),
    Eds(PathBuf),
}

/// Paths as the config wrote them, byte for byte: every path here comes from the same config
/// text each time, and comparing bytes is what keeps a push of thousands of route
/// configurations and assignments from spending its time parsing path components.
fn same(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.as_os_str() == b.as_os_str()
}

impl PartialEq for File {
    fn eq(&self, other: &File) -> bool {
        match (self, other) {
            (File::Lds, File::Lds) | (File::Cds, File::Cds) => true,
            (File::Rds(a), File::Rds(b)) | (File::Eds(a), File::Eds(b)) => same(a, b),
            _ => false,
        }
    }
}

impl File {
    /// Whether `doc` of a load of `docs` is this file.
    pub fn is(&self, doc: Option<Doc>, docs: &DocTexts) -> bool {
        match (self, doc) {
            (File::Lds, Some(Doc::Lds)) | (File::Cds, Some(Doc::Cds)) => true,
            (File::Rds(path), Some(d @ Doc::Rds(_))) | (File::Eds(path), Some(d @ Doc::Eds(_))) => {
                docs.get(d).is_some_and(|t| std::path::Path::new(&t.origin) == path)
            }
            _ => false,
        }
    }

    /// The version of this file that `b` applies (empty when none).
    pub fn version(&self, b: &Bootstrap, at: &Placement) -> String {
        let applied = match self {
            File::Lds => b.xds.applied(Doc::Lds),
            File::Cds => b.xds.applied(Doc::Cds),
            File::Rds(path) => at.rds(path).iter().find_map(|l| l.hcm.rds.as_ref()?.applied.as_ref()),
            File::Eds(path) => at.eds(path).iter().find_map(|c| c.eds.as_ref()?.applied.as_ref()),
        };
        applied.map(|a| a.version_info.clone()).unwrap_or_default()
    }

    /// Whether `after` has other resources from this file than `before` (Envoy counts such
    /// updates in `config_reload`; one that only restates the resources is not one).
    fn changed(
        &self,
        (before, was): (&Bootstrap, &Placement),
        (after, is): (&Bootstrap, &Placement),
    ) -> bool {
        match self {
            File::Cds => {
                let pick = |b: &Bootstrap| -> Vec<crate::config::Cluster> {
                    let dynamic: std::collections::HashSet<&str> =
                        b.xds.dynamic_clusters.iter().map(String::as_str).collect();
                    b.clusters.iter().filter(|c| dynamic.contains(c.name.as_str())).cloned().collect()
                };
                pick(before) != pick(after)
            }
            File::Lds => before.xds.dynamic_listeners != after.xds.dynamic_listeners,
            File::Rds(path) => {
                let routes = |at: &Placement| -> Vec<crate::config::RouteConfig> {
                    at.rds(path).iter().map(|l| l.hcm.route_config.clone()).collect()
                };
                routes(was) != routes(is)
            }
            File::Eds(path) => was.eds(path) != is.eds(path),
        }
    }

    fn describe(&self) -> String {
        match self {
            File::Lds => Doc::Lds.stat_prefix().to_string(),
            File::Cds => Doc::Cds.stat_prefix().to_string(),
            File::Rds(path) => format!("rds {}", path.display()),
            File::Eds(path) => format!("eds {}", path.display()),
        }
    }
}

impl std::fmt::Display for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Which listeners and clusters of a bootstrap read each route configuration and endpoint path,
/// looked up once for a whole batch of files.
pub struct Placement<'b> {
    rds: HashMap<&'b OsStr, Vec<&'b crate::config::Listener>>,
    eds: HashMap<&'b OsStr, Vec<&'b crate::config::Cluster>>,
}

impl<'b> Placement<'b> {
    pub fn of(b: &'b Bootstrap) -> Placement<'b> {
        let mut at = Placement { rds: HashMap::new(), eds: HashMap::new() };
        for l in &b.listeners {
            if let Some(r) = &l.hcm.rds {
                at.rds.entry(r.source.path.as_os_str()).or_default().push(l);
            }
        }
        for c in &b.clusters {
            if let Some(e) = &c.eds {
                at.eds.entry(e.source.path.as_os_str()).or_default().push(c);
            }
        }
        at
    }

    fn rds(&self, path: &std::path::Path) -> &[&'b crate::config::Listener] {
        self.rds.get(path.as_os_str()).map_or(&[], Vec::as_slice)
    }

    fn eds(&self, path: &std::path::Path) -> &[&'b crate::config::Cluster] {
        self.eds.get(path.as_os_str()).map_or(&[], Vec::as_slice)
    }
}

/// A file as a map key: its kind and path bytes.
type FileKey = (u8, std::ffi::OsString);

fn key(file: &File) -> FileKey {
    match file {
        File::Lds => (0, Default::default()),
        File::Cds => (1, Default::default()),
        File::Rds(p) => (2, p.as_os_str().to_os_string()),
        File::Eds(p) => (3, p.as_os_str().to_os_string()),
    }
}

/// What became of a file's updates (Envoy's subscription stats, without the name).
#[derive(Debug, Clone, Default)]
struct Counts {
    attempt: u64,
    success: u64,
    failure: u64,
    rejected: u64,
    time: i64,
    version: u64,
    version_text: String,
    reloads: u64,
    reload_time: i64,
    init_fetch_timeout: u64,
    /// Restatements of an assignment (Envoy's EDS `update_no_rebuild`).
    no_rebuild: u64,
}

/// One subscription: a resource file and what became of its updates.
#[derive(Debug)]
struct Sub {
    file: File,
    source: PathSource,
    /// The file last read at the path (None: not read yet, or missing then).
    seen: Option<Identity>,
    /// The text last applied.
    good: Option<DocText>,
    counts: Counts,
    /// A management server's: the text received and not yet applied, and the response it came in.
    pending: Option<(DocText, u64)>,
    /// The response of the text being applied.
    applying: Option<u64>,
    /// When the subscription started: its `initial_fetch_timeout` counts from here.
    since: Instant,
    /// A hash of the resources of the pending, the applying and the good text (a management
    /// server's, `resources_hash`): a response that repeats the good ones is a restatement.
    hashes: Hashes,
}

#[derive(Debug, Default)]
struct Hashes {
    pending: Option<u64>,
    applying: Option<u64>,
    good: Option<u64>,
}

impl Sub {
    /// Its update was applied; the response it came in, if a reply is owed.
    fn succeeded(&mut self, text: DocText, version_info: &str, changed: bool) -> Option<u64> {
        let now = millis(text.received);
        self.good = Some(text);
        self.hashes.good = self.hashes.applying.take();
        let c = &mut self.counts;
        c.success += 1;
        c.time = now;
        c.version = xxhash_rust::xxh64::xxh64(version_info.as_bytes(), 0);
        c.version_text = version_info.to_string();
        if changed {
            c.reloads += 1;
            c.reload_time = now;
        }
        self.applying.take()
    }
}

/// A response whose resources are being applied: its reply goes out when the last is judged.
#[derive(Debug)]
struct Outstanding {
    id: u64,
    reply: Reply,
    waiting: usize,
}

/// Every watched file: clusters, then listeners, then route configurations (Envoy's order).
#[derive(Debug, Default)]
pub struct Files {
    subs: Vec<Sub>,
    /// Responses in flight, by id (ids start at 1; 0 marks a text with no reply owed).
    outstanding: Vec<Outstanding>,
    next_response: u64,
    /// The last text received for each server resource name, for a subscription that the running
    /// config does not make yet (a listener's routes, named by a listener still being applied).
    latest: HashMap<PathBuf, DocText>,
    /// Replies to send.
    outbox: Vec<Reply>,
    /// Each management server stream: connected or not.
    connected: HashMap<StreamKey, bool>,
    /// Warming: the pending texts name route configurations or assignments not received yet,
    /// and wait for them until this deadline (`initial_fetch_timeout`), as Envoy warms a
    /// listener or cluster before it serves.
    hold: Option<Instant>,
    /// A text arrived since the last batch was taken (a held batch may be complete now).
    fresh: bool,
    /// When the first management server text arrived: listeners and routes wait for the
    /// server's clusters from then on, for at most the clusters' `initial_fetch_timeout`.
    first_text: Option<Instant>,
    /// When server init first saw every cluster and endpoint subscription delivered.
    clusters_done: Option<Instant>,
    /// Init has finished once (Envoy's server init runs once: a subscription added later does
    /// not make the server initializing again).
    initialized: bool,
}

/// What precedes the resources in the text of a management server's response (`received`).
/// A hash of resources as a response brings them (their compact JSON, never kept: hashing is
/// all a restatement check needs, and skipping the text of the thousands of resources a push
/// repeats is most of its cost).
fn resources_hash(resources: &[serde_json::Value]) -> u64 {
    struct Hasher(xxhash_rust::xxh64::Xxh64);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(xxhash_rust::xxh64::Xxh64::new(0));
    // Writing to a hasher cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut h, resources);
    h.0.digest()
}

/// Listeners and routes: what waits for a management server's clusters.
fn after_clusters(s: &Sub) -> bool {
    matches!(s.file, File::Lds | File::Rds(_))
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Files {
    pub fn new(xds: &Xds) -> Files {
        let mut files = Files::default();
        files.reconfigure(xds);
        files
    }

    /// Follows the running config: a file whose source is unchanged keeps its state; a new or
    /// moved one starts afresh and is read at the next check; one no longer named is dropped.
    pub fn reconfigure(&mut self, xds: &Xds) {
        let mut old: Vec<Option<Sub>> = std::mem::take(&mut self.subs).into_iter().map(Some).collect();
        let mut old_at: HashMap<FileKey, Vec<usize>> = HashMap::new();
        for (i, s) in old.iter().enumerate() {
            if let Some(s) = s {
                old_at.entry(key(&s.file)).or_default().push(i);
            }
        }
        let named = xds
            .cds
            .iter()
            .map(|s| (File::Cds, s))
            .chain(xds.lds.iter().map(|s| (File::Lds, s)))
            .chain(xds.rds.iter().map(|s| (File::Rds(s.path.clone()), s)))
            .chain(xds.eds.iter().map(|s| (File::Eds(s.path.clone()), s)));
        for (file, source) in named {
            let same = old_at.get(&key(&file)).into_iter().flatten().copied();
            let kept = same.filter_map(|i| old[i].take_if(|s| s.source == *source)).next();
            match kept {
                Some(sub) => self.subs.push(sub),
                None => {
                    let sub = self.new_sub(file, source);
                    self.subs.push(sub);
                }
            }
        }
    }

    /// Adds the management server subscriptions `xds` names that are not there yet, dropping
    /// none: the route configurations and assignments a held update waits for.
    pub fn reconfigure_also(&mut self, xds: &Xds) {
        let named = xds
            .rds
            .iter()
            .map(|s| (File::Rds(s.path.clone()), s))
            .chain(xds.eds.iter().map(|s| (File::Eds(s.path.clone()), s)));
        for (file, source) in named.filter(|(_, s)| s.server.is_some()) {
            if !self.subs.iter().any(|s| s.file == file && s.source == *source) {
                let sub = self.new_sub(file, source);
                self.subs.push(sub);
            }
        }
    }

    fn new_sub(&mut self, file: File, source: &PathSource) -> Sub {
        // A server resource received before a config named it is applied now.
        let pending = source.server.as_ref().and(self.latest.get(&source.path)).map(|t| (t.clone(), 0));
        self.fresh |= pending.is_some();
        Sub {
            file,
            source: source.clone(),
            seen: None,
            good: None,
            counts: Counts::default(),
            pending,
            applying: None,
            since: Instant::now(),
            hashes: Hashes::default(),
        }
    }

    /// The last good text of each file: the listener and cluster files where `xds` still names
    /// them at the same path, and every route configuration file (which of them a load uses
    /// depends on the listeners it ends up with: a bootstrap parsed alone does not know the
    /// listener file's).
    pub fn good_for(&self, xds: &Xds) -> DocTexts {
        self.good_with(xds, &[])
    }

    /// `good_for` with `batch`'s texts in place of their files' (added where a file has none).
    pub fn good_with(&self, xds: &Xds, batch: &[(File, DocText)]) -> DocTexts {
        let mut docs = DocTexts::default();
        let named = |s: &Sub| match &s.file {
            File::Lds => xds.lds.as_ref() == Some(&s.source),
            File::Cds => xds.cds.as_ref() == Some(&s.source),
            File::Rds(_) | File::Eds(_) => true,
        };
        let goods = self.subs.iter().filter(|s| named(s)).filter_map(|s| Some((&s.file, s.good.as_ref()?)));
        let mut at: HashMap<(bool, &str), usize> = HashMap::new();
        for (file, text) in goods.chain(batch.iter().map(|(f, t)| (f, t))) {
            let (rds, list) = match file {
                File::Lds => {
                    docs.lds = Some(text.clone());
                    continue;
                }
                File::Cds => {
                    docs.cds = Some(text.clone());
                    continue;
                }
                File::Rds(_) => (true, &mut docs.rds),
                File::Eds(_) => (false, &mut docs.eds),
            };
            match at.get(&(rds, text.origin.as_str())) {
                Some(&i) => list[i] = text.clone(),
                None => {
                    at.insert((rds, text.origin.as_str()), list.len());
                    list.push(text.clone());
                }
            }
        }
        docs
    }

    /// Every file of a batch was applied: `before` was the running config, `after` is.
    pub fn applied(
        &mut self,
        files: Vec<(File, DocText)>,
        before: &Bootstrap,
        after: &Bootstrap,
        generation: u64,
    ) {
        let (was, is) = (Placement::of(before), Placement::of(after));
        let mut subs: HashMap<FileKey, usize> = HashMap::new();
        for (i, s) in self.subs.iter().enumerate() {
            subs.entry(key(&s.file)).or_insert(i);
        }
        for (file, text) in files {
            let version = file.version(after, &is);
            let changed = file.changed((before, &was), (after, &is));
            log::info!("{file}: applied {} (version \"{version}\", generation {generation})", text.origin);
            let Some(&i) = subs.get(&key(&file)) else { continue };
            // Few responses are in flight at a time: `judged` finds its own at once.
            if let Some(response) = self.subs[i].succeeded(text, &version, changed) {
                self.judged(response, None);
            }
        }
    }

    /// The next update: every management server text pending, at once (one load and one
    /// snapshot for a whole push, and a cluster removed with the routes to it goes in one step),
    /// else the first file (in fetch order) whose path names another file than at its last read,
    /// read now. Each is an update attempt; Err carries why a file could not be read.
    pub fn next_update(&mut self) -> Option<Vec<(File, Result<DocText, String>)>> {
        let mut batch = Vec::new();
        let ready = self.ready();
        let clusters_first = self.clusters_first();
        let due = |s: &Sub| ready && !(clusters_first && after_clusters(s));
        for sub in self.subs.iter_mut().filter(|s| due(s)) {
            if let Some((text, response)) = sub.pending.take() {
                sub.applying = Some(response);
                sub.hashes.applying = sub.hashes.pending.take();
                sub.counts.attempt += 1;
                batch.push((sub.file.clone(), Ok(text)));
            }
        }
        if !batch.is_empty() {
            self.fresh = false;
            return Some(batch);
        }
        let sub = self.subs.iter_mut().find(|s| {
            if s.source.server.is_some() {
                return false;
            }
            let now = identity(&s.source.path);
            // A file that disappeared is no update (Envoy keeps its resources too).
            now.is_some() && now != s.seen
        })?;
        sub.seen = identity(&sub.source.path);
        sub.counts.attempt += 1;
        let origin = sub.source.path.display().to_string();
        let read = std::fs::read_to_string(&sub.source.path)
            .map(|text| DocText { origin: origin.clone(), text, received: SystemTime::now() })
            .map_err(|e| format!("{origin}: {e}"));
        Some(vec![(sub.file.clone(), read)])
    }

    /// The last good text of `file`, if any.
    pub fn good(&self, file: &File) -> Option<&DocText> {
        self.subs.iter().find(|s| s.file == *file).and_then(|s| s.good.as_ref())
    }

    /// `file`'s text was not judged (another of its batch failed): it is pending again.
    pub fn retry(&mut self, file: &File, text: DocText) {
        let Some(sub) = self.subs.iter_mut().find(|s| s.file == *file) else { return };
        sub.counts.attempt = sub.counts.attempt.saturating_sub(1);
        sub.pending = Some((text, sub.applying.take().unwrap_or(0)));
        sub.hashes.pending = sub.hashes.applying.take();
    }

    /// `file`'s update was not applied: it did not parse (`update_failure`) or was invalid
    /// (`update_rejected`).
    /// `error` says why (a management server hears it in the NACK).
    pub fn failed(&mut self, file: &File, parse_failure: bool, error: &str) {
        let Some(sub) = self.subs.iter_mut().find(|s| s.file == *file) else { return };
        if parse_failure {
            sub.counts.failure += 1;
        } else {
            sub.counts.rejected += 1;
        }
        let response = sub.applying.take();
        sub.hashes.applying = None;
        // A later subscription to the name gets the last good text, not the rejected one.
        if sub.source.server.is_some() {
            match &sub.good {
                Some(good) => self.latest.insert(sub.source.path.clone(), good.clone()),
                None => self.latest.remove(&sub.source.path),
            };
        }
        if let Some(id) = response {
            self.judged(id, Some(error.to_string()));
        }
    }

    /// One resource of response `id` was judged; its reply goes out with the last.
    fn judged(&mut self, id: u64, error: Option<String>) {
        let Some(i) = self.outstanding.iter().position(|o| o.id == id) else { return };
        let o = &mut self.outstanding[i];
        o.waiting = o.waiting.saturating_sub(1);
        if o.reply.error.is_none() {
            o.reply.error = error;
        }
        if o.waiting == 0 {
            let o = self.outstanding.swap_remove(i);
            self.outbox.push(o.reply);
        }
    }

    /// A management server's response: its resources become pending texts of the subscriptions
    /// that name them (replacing older pending ones). A response that cannot be read, or names
    /// nothing subscribed, is answered at once.
    pub fn received(&mut self, r: Response) {
        let mut reply = Reply {
            stream: r.stream.clone(),
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            nonce: r.nonce.clone(),
            error: None,
        };
        let kind = match r.type_url.as_str() {
            client::LDS => "lds",
            client::CDS => "cds",
            client::RDS => "rds",
            client::EDS => "eds",
            other => {
                reply.error = Some(format!("skiff does not subscribe to \"{other}\""));
                self.outbox.push(reply);
                return;
            }
        };
        let stream = r.stream.name();
        let whole = matches!(kind, "lds" | "cds");
        let resources = match r.resources {
            Ok(list) => list,
            Err(e) => {
                let path = server_path(&stream, kind, "");
                if let Some(sub) = self.subs.iter_mut().find(|s| whole && same(&s.source.path, &path)) {
                    sub.counts.attempt += 1;
                    sub.counts.failure += 1;
                }
                log::warn!("xds: {kind} update from cluster \"{}\" failed: {e}", r.stream.cluster);
                reply.error = Some(e);
                self.outbox.push(reply);
                return;
            }
        };
        let received = SystemTime::now();
        self.first_text.get_or_insert_with(Instant::now);
        let doc = |path: &PathBuf, resources: Vec<serde_json::Value>| {
            let body = serde_json::json!({"version_info": r.version_info, "resources": resources});
            let text = serde_json::to_string_pretty(&body).unwrap_or_default();
            DocText { origin: path.display().to_string(), text, received }
        };
        let docs: Vec<(PathBuf, Vec<serde_json::Value>)> = if whole {
            vec![(server_path(&stream, kind, ""), resources.into_iter().map(|(_, v)| v).collect())]
        } else {
            resources.into_iter().map(|(name, v)| (server_path(&stream, kind, &name), vec![v])).collect()
        };
        self.next_response += 1;
        let id = self.next_response;
        let mut waiting = 0;
        let mut superseded = Vec::new();
        let by_path: HashMap<PathBuf, usize> = self
            .subs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.source.server.is_some())
            .map(|(i, s)| (s.source.path.clone(), i))
            .collect();
        for (path, resources) in docs {
            let Some(sub) = by_path.get(&path).map(|&i| &mut self.subs[i]) else {
                self.latest.insert(path.clone(), doc(&path, resources));
                continue;
            };
            // The resources that serve now, restated under a new version (a state-of-the-world
            // push repeats every resource of its type): counted as an accepted update of the
            // subscription, with nothing to convert, build or install. Like Envoy, which skips
            // a cluster, listener, route configuration or assignment whose hash did not change.
            // (`latest` keeps the text of the same resources it has.)
            let hash = resources_hash(&resources);
            let restated = sub.pending.is_none() && sub.applying.is_none() && sub.hashes.good == Some(hash);
            if restated {
                let c = &mut sub.counts;
                c.attempt += 1;
                c.success += 1;
                c.time = millis(received);
                c.version = xxhash_rust::xxh64::xxh64(r.version_info.as_bytes(), 0);
                c.version_text = r.version_info.clone();
                c.no_rebuild += u64::from(matches!(sub.file, File::Eds(_)));
                continue;
            }
            let text = doc(&path, resources);
            self.latest.insert(path, text.clone());
            sub.hashes.pending = Some(hash);
            if let Some((_, older)) = sub.pending.replace((text, id)) {
                superseded.push(older);
            }
            waiting += 1;
            self.fresh = true;
        }
        // An older response's resource replaced before it was applied counts as judged: the
        // newer text is what will serve.
        for older in superseded {
            self.judged(older, None);
        }
        if waiting == 0 {
            self.outbox.push(reply);
        } else {
            self.outstanding.push(Outstanding { id, reply, waiting });
        }
    }

    /// A stream connected or lost its connection.
    pub fn connected(&mut self, stream: StreamKey, up: bool) {
        self.connected.insert(stream, up);
    }

    /// What server init still waits for: every subscription that has delivered nothing yet,
    /// with its deadline. Empty once init has finished. As Envoy's, listeners and their routes
    /// start waiting when clusters and their endpoints are done (have come, were refused, or
    /// ran out of `initial_fetch_timeout`), so their timeouts count from then.
    pub fn init_waits(&mut self) -> Vec<InitWait> {
        if self.initialized {
            return Vec::new();
        }
        let now = Instant::now();
        let phase = |s: &Sub| match s.file {
            File::Cds | File::Eds(_) => InitPhase::PreInitializing,
            File::Lds | File::Rds(_) => InitPhase::Initializing,
        };
        // As Envoy's: a first update that was judged ends the wait whether it was taken or
        // refused; only one that never came (a server unreachable) keeps it.
        let waiting = |s: &&Sub| s.good.is_none() && s.counts.failure + s.counts.rejected == 0;
        let timeout = |s: &Sub| {
            let t = s.source.server.as_ref().map_or(Duration::ZERO, |v| v.initial_fetch_timeout);
            (!t.is_zero()).then_some(t)
        };
        // When the clusters' phase ends: the last of their deadlines (None: one waits for ever),
        // or, when all came, the first time they were seen done.
        let pre: Vec<&Sub> =
            self.subs.iter().filter(waiting).filter(|s| phase(s) == InitPhase::PreInitializing).collect();
        let pre_end = if pre.is_empty() {
            Some(*self.clusters_done.get_or_insert(now))
        } else {
            pre.iter()
                .map(|s| timeout(s).map(|t| s.since + t))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max())
        };
        let waits: Vec<InitWait> = self
            .subs
            .iter()
            .filter(waiting)
            .map(|s| {
                let until = match phase(s) {
                    InitPhase::PreInitializing => timeout(s).map(|t| s.since + t),
                    InitPhase::Initializing => pre_end.zip(timeout(s)).map(|(end, t)| end.max(s.since) + t),
                };
                InitWait { phase: phase(s), until }
            })
            .filter(|w| w.until.is_none_or(|t| now < t))
            .collect();
        self.initialized = waits.is_empty();
        waits
    }

    /// Envoy's `control_plane.connected_state`: 1 while every stream is connected (None: no
    /// management server is configured).
    pub fn connected_state(&self, xds: &Xds) -> Option<bool> {
        let sources = xds.lds.iter().chain(&xds.cds).chain(&xds.rds).chain(&xds.eds);
        let any = xds.ads.is_some() || sources.clone().any(|s| s.server.is_some());
        any.then(|| !self.connected.is_empty() && self.connected.values().all(|up| *up))
    }

    /// Whether a management server's text waits to be applied now.
    pub fn has_pending(&self) -> bool {
        let clusters_first = self.clusters_first();
        self.ready()
            && self.subs.iter().any(|s| s.pending.is_some() && !(clusters_first && after_clusters(s)))
    }

    /// When pending texts are due: now, when a held batch stops waiting, or when listeners
    /// stop waiting for the server's clusters.
    pub fn next_due(&self) -> Option<Instant> {
        let clusters_first = self.clusters_first();
        let pending = |s: &&Sub| s.pending.is_some();
        if !self.subs.iter().filter(pending).any(|s| !(clusters_first && after_clusters(s))) {
            if !self.subs.iter().any(|s| s.pending.is_some()) {
                return None;
            }
            // Only listeners or routes wait, for the clusters: look again when those may time out.
            let first = self.first_text?;
            let timeouts = self.subs.iter().filter(|s| matches!(s.file, File::Cds));
            return timeouts
                .filter_map(|s| s.source.server.as_ref())
                .map(|s| first + s.initial_fetch_timeout)
                .max();
        }
        match self.hold {
            Some(deadline) if !self.fresh => Some(deadline),
            _ => Some(Instant::now()),
        }
    }

    /// As Envoy's order: the listeners and their routes from a management server wait until
    /// the server's clusters have arrived once (or their `initial_fetch_timeout` passed), so
    /// that their routes find the clusters they name.
    fn clusters_first(&self) -> bool {
        let Some(first) = self.first_text else { return false };
        let waiting = |s: &&Sub| matches!(s.file, File::Cds) && s.good.is_none();
        self.subs.iter().filter(waiting).filter_map(|s| s.source.server.as_ref()).any(|server| {
            server.initial_fetch_timeout.is_zero() || Instant::now() < first + server.initial_fetch_timeout
        })
    }

    fn ready(&self) -> bool {
        self.hold.is_none_or(|deadline| self.fresh || Instant::now() >= deadline)
    }

    /// Holds the texts being applied back (put back with `retry`) until what they wait for
    /// arrives, for at most `timeout` from the first hold; false once that has passed.
    pub fn hold(&mut self, timeout: Duration) -> bool {
        let deadline = *self.hold.get_or_insert_with(|| Instant::now() + timeout);
        Instant::now() < deadline
    }

    /// A held update stopped waiting: each server route configuration or assignment never
    /// received counts `init_fetch_timeout`, as Envoy's subscription does.
    pub fn fetch_timed_out(&mut self) {
        for s in self.subs.iter_mut().filter(|s| s.source.server.is_some() && s.good.is_none()) {
            if matches!(s.file, File::Rds(_) | File::Eds(_)) && s.pending.is_none() {
                s.counts.init_fetch_timeout += 1;
            }
        }
    }

    /// Nothing is held any longer.
    pub fn release(&mut self) {
        self.hold = None;
    }

    /// The replies to send now.
    pub fn replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.outbox)
    }

    /// What to ask the management servers for: every listener and cluster of a server source,
    /// and the route configurations and assignments the running config names.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut out: Vec<Subscription> = Vec::new();
        for s in &self.subs {
            let Some(server) = &s.source.server else { continue };
            let type_url = match s.file {
                File::Lds => client::LDS,
                File::Cds => client::CDS,
                File::Rds(_) => client::RDS,
                File::Eds(_) => client::EDS,
            };
            let rest = server
                .rest
                .map(|r| client::Rest { refresh_delay: r.refresh_delay, request_timeout: r.request_timeout });
            let stream = StreamKey {
                cluster: server.cluster.clone(),
                type_url: (!server.ads).then_some(type_url),
                delta: server.delta,
                rest,
            };
            let i = match out.iter().position(|o| o.stream == stream && o.type_url == type_url) {
                Some(i) => i,
                None => {
                    out.push(Subscription { stream, type_url, names: Vec::new() });
                    out.len() - 1
                }
            };
            if !server.resource.is_empty() {
                out[i].names.push(server.resource.clone());
            }
        }
        for o in &mut out {
            o.names.sort();
            o.names.dedup();
        }
        out
    }

    /// Envoy's stats: `listener_manager.lds.*`, `cluster_manager.cds.*` (with `config_reload`),
    /// and for a route configuration file `http.<stat_prefix>.rds.<route_config_name>.*` for each
    /// connection manager of `b` that names it (with `config_reload` and `update_empty`), and for
    /// an endpoint file `cluster.<name>.*` for each EDS cluster of `b` that names it.
    pub fn stats(&self, b: &Bootstrap) -> Vec<SubscriptionStats> {
        let mut out = Vec::new();
        // Who reads each route configuration and endpoint path, looked up once per path.
        let mut hcms: HashMap<&std::ffi::OsStr, Vec<_>> = HashMap::new();
        for h in b.listeners.iter().map(|l| &l.hcm) {
            if let Some(r) = &h.rds {
                hcms.entry(r.source.path.as_os_str()).or_default().push((h, r));
            }
        }
        let mut clusters: HashMap<&std::ffi::OsStr, Vec<&crate::config::Cluster>> = HashMap::new();
        for cl in &b.clusters {
            if let Some(e) = &cl.eds {
                clusters.entry(e.source.path.as_os_str()).or_default().push(cl);
            }
        }
        for s in &self.subs {
            let c = &s.counts;
            let stats = |scope: Scope, reloads: bool, empty: bool| SubscriptionStats {
                scope,
                update_attempt: c.attempt,
                update_success: c.success,
                update_failure: c.failure,
                update_rejected: c.rejected,
                update_time: c.time,
                version: c.version,
                version_text: c.version_text.clone(),
                config_reload: reloads.then_some((c.reloads, c.reload_time)),
                update_empty: empty.then_some(0),
                eds: false,
                no_rebuild: c.no_rebuild,
                init_fetch_timeout: c.init_fetch_timeout,
            };
            match &s.file {
                File::Lds => out.push(stats(Scope::Subscription(Doc::Lds.stat_prefix()), false, false)),
                File::Cds => out.push(stats(Scope::Subscription(Doc::Cds.stat_prefix()), true, false)),
                File::Rds(path) => {
                    for (h, r) in hcms.get(path.as_os_str()).into_iter().flatten() {
                        let scope = Scope::Rds {
                            stat_prefix: h.stat_prefix.clone(),
                            route_config: r.route_config_name.clone(),
                        };
                        out.push(stats(scope, true, true));
                    }
                }
                File::Eds(path) => {
                    for cl in clusters.get(path.as_os_str()).into_iter().flatten() {
                        let scope = Scope::Cluster(cl.name.clone());
                        out.push(SubscriptionStats { eds: true, ..stats(scope, false, true) });
                    }
                }
            }
        }
        out
    }
}
