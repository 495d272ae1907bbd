//! Secrets from SDS files (`sds_config` with `path_config_source`): one `Secret` per (file, name,
//! kind) for the whole process, shared by every TLS context that names it, holding the material
//! last applied (a certified key, or trusted CAs with SAN matchers), the identities of the files
//! it was read from, and Envoy's `sds.<name>.*` counts. The TLS contexts built at load sign and
//! verify through the resolvers and verifiers here, which read the secret at each handshake: a
//! rotation swaps the secret's material and every context that uses it serves the new one from
//! its next handshake, with no snapshot rebuilt and no connection touched. Owns no parsing (the
//! config's `convert_tls` reads a secret file) and no schedule (the control loop polls).
//!
//! Shared across cores by design: a handshake takes the secret's read lock for an `Arc` clone;
//! only the control thread writes it, once per applied rotation.

use super::file_identity::{identity, Identity};
use super::tls_verify::{PeerChecks, ServerVerifier, VerifiedClients};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a secret holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tls_certificate`: what a context serves (or presents upstream).
    Certificate,
    /// `validation_context`: what a context checks its peer against.
    Validation,
}

/// A `tls_certificate` as a context signs with it.
pub struct CertMaterial {
    pub key: Arc<CertifiedKey>,
}

/// A `validation_context` as a context verifies with it.
pub struct ValidationMaterial {
    pub roots: Arc<rustls::RootCertStore>,
    pub checks: PeerChecks,
    /// The first CA certificate, for `/certs`.
    pub ca: Option<CertificateDer<'static>>,
}

pub enum Material {
    Certificate(CertMaterial),
    Validation(ValidationMaterial),
}

/// One read of a secret file, ready to apply.
pub struct Loaded {
    pub material: Material,
    /// The file's `version_info`.
    pub version_info: String,
    /// The files the material was read from (each watched for a rename) with their identity
    /// when read.
    pub files: Vec<(PathBuf, Option<Identity>)>,
    /// A hash of the secret as written and of the bytes of its files: an update that changes
    /// neither leaves the contexts as they are (as Envoy's `SdsApi`).
    pub hash: u64,
    /// The secret as `/config_dump` shows it: its files inlined, keys `[redacted]`.
    pub dump: serde_json::Value,
}

/// Envoy's `sds.<name>.*` for one secret, and its contexts' `ssl_context_update_by_sds`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub update_attempt: u64,
    pub update_success: u64,
    pub update_failure: u64,
    pub update_rejected: u64,
    pub key_rotation_failed: u64,
    /// Milliseconds since the epoch of the last success.
    pub update_time: i64,
    pub version_text: String,
    /// Times the material changed (the first load included): each context using the secret
    /// was updated that often.
    pub context_updates: u64,
}

/// What a secret watches and last applied, written by the control thread only.
struct State {
    /// The secret file itself.
    source: Option<Identity>,
    /// The files the applied material was read from.
    files: Vec<(PathBuf, Option<Identity>)>,
    hash: u64,
    dump: serde_json::Value,
    counts: Counts,
}

/// One SDS subscription: a secret by name in a file.
pub struct Secret {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    current: RwLock<Arc<Material>>,
    /// Bumped on every swap of `current`: session caches of the contexts using the secret
    /// start afresh then.
    generation: AtomicU64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} in {})", self.name, self.path.display())
    }
}

/// What changed on disk since the secret was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The secret file was replaced: an SDS update (`update_attempt`).
    Source,
    /// Only a file the secret names (a certificate, a key, a CA) was replaced: the material is
    /// read again (`key_rotation_failed` when that fails).
    Files,
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Secret {
    /// The material serving now.
    pub fn current(&self) -> Arc<Material> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn counts(&self) -> Counts {
        lock(&self.state).counts.clone()
    }

    /// The secret applied last as `/config_dump` shows it (keys redacted).
    pub fn dump(&self) -> serde_json::Value {
        lock(&self.state).dump.clone()
    }

    /// Whether the secret file or one of its files names another file than when last read.
    pub fn changed(&self) -> Option<Change> {
        let state = lock(&self.state);
        let now = identity(&self.path);
        // A file that disappeared is no update (the last good material keeps serving).
        if now.is_some() && now != state.source {
            return Some(Change::Source);
        }
        let moved = state.files.iter().any(|(p, seen)| {
            let now = identity(p);
            now.is_some() && now != *seen
        });
        moved.then_some(Change::Files)
    }

    /// Records an attempt to apply `change`, read as `read` (Err: why it cannot apply, and
    /// whether the file did not parse). The material is swapped when it changed.
    pub fn apply(&self, change: Change, read: Result<Loaded, (String, bool)>) -> Result<bool, String> {
        let mut state = lock(&self.state);
        if change == Change::Source {
            state.source = identity(&self.path);
            state.counts.update_attempt += 1;
        }
        let loaded = match read {
            Ok(l) => l,
            Err((why, parse_failure)) => {
                let c = &mut state.counts;
                match change {
                    Change::Files => c.key_rotation_failed += 1,
                    Change::Source if parse_failure => c.update_failure += 1,
                    Change::Source => c.update_rejected += 1,
                }
                if change == Change::Files {
                    // Not again until one of them moves again.
                    let files = std::mem::take(&mut state.files);
                    state.files = files.into_iter().map(|(p, _)| (p.clone(), identity(&p))).collect();
                }
                return Err(why);
            }
        };
        if change == Change::Source {
            state.counts.update_success += 1;
            state.counts.update_time = now_millis();
            state.counts.version_text = loaded.version_info;
        }
        state.files = loaded.files;
        state.dump = loaded.dump;
        let changed = loaded.hash != state.hash;
        if changed {
            state.hash = loaded.hash;
            state.counts.context_updates += 1;
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded.material);
            self.generation.fetch_add(1, Ordering::Release);
        }
        Ok(changed)
    }
}

/// Every live secret, so a reload that names the same one keeps its material and counts.
static SECRETS: Mutex<Vec<Weak<Secret>>> = Mutex::new(Vec::new());

/// The secret `name` of kind `kind` in `path`: the running one when a context already uses it,
/// else read now by `read` (its first update; Err fails the load).
pub fn subscribe(
    path: &Path,
    name: &str,
    kind: Kind,
    read: impl FnOnce() -> Result<Loaded, String>,
) -> Result<Arc<Secret>, String> {
    let mut all = lock(&SECRETS);
    all.retain(|w| w.strong_count() > 0);
    let running =
        all.iter().filter_map(Weak::upgrade).find(|s| s.path == path && s.name == name && s.kind == kind);
    if let Some(s) = running {
        return Ok(s);
    }
    let source = identity(path);
    let loaded = read()?;
    let counts = Counts {
        update_attempt: 1,
        update_success: 1,
        update_time: now_millis(),
        version_text: loaded.version_info,
        context_updates: 1,
        ..Counts::default()
    };
    let secret = Arc::new(Secret {
        name: name.to_string(),
        path: path.to_path_buf(),
        kind,
        current: RwLock::new(Arc::new(loaded.material)),
        generation: AtomicU64::new(0),
        state: Mutex::new(State {
            source,
            files: loaded.files,
            hash: loaded.hash,
            dump: loaded.dump,
            counts,
        }),
    });
    all.push(Arc::downgrade(&secret));
    Ok(secret)
}

// ---------------------------------------------------------------------------------------------
// Signing and verifying through a secret

/// A context's certificate from a secret: the material current at each handshake.
#[derive(Debug)]
pub struct SecretCert(pub Arc<Secret>);

impl SecretCert {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        match &*self.0.current() {
            Material::Certificate(c) => Some(c.key.clone()),
            Material::Validation(_) => None,
        }
    }
}

impl rustls::server::ResolvesServerCert for SecretCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl rustls::client::ResolvesClientCert for SecretCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Builds a verifier from a validation secret's material (None: it cannot be).
type BuildVerifier<V> = Box<dyn Fn(&ValidationMaterial) -> Option<V> + Send + Sync>;

/// A verifier built from a validation secret's material, rebuilt when the material changes.
struct Rotating<V> {
    secret: Arc<Secret>,
    build: BuildVerifier<V>,
    /// The material it was built from (compared by pointer) and the verifier.
    built: RwLock<(Arc<Material>, Arc<V>)>,
}

impl<V> Rotating<V> {
    fn new(secret: Arc<Secret>, build: BuildVerifier<V>) -> Option<Self> {
        let material = secret.current();
        let Material::Validation(v) = &*material else { return None };
        let first = Arc::new(build(v)?);
        Some(Rotating { secret, build, built: RwLock::new((material, first)) })
    }

    /// The verifier for the current material. One that cannot be built from it (never so for
    /// material that loaded) keeps the last one.
    fn get(&self) -> Arc<V> {
        let material = self.secret.current();
        {
            let built = self.built.read().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(&built.0, &material) {
                return built.1.clone();
            }
        }
        let mut built = self.built.write().unwrap_or_else(PoisonError::into_inner);
        if let Material::Validation(v) = &*material {
            if let Some(fresh) = (self.build)(v) {
                *built = (material, Arc::new(fresh));
            }
        }
        built.1.clone()
    }
}

/// The signature checks of a `Rotating` verifier's wrapper: the current verifier's (the same
/// three methods in rustls's client and server verifier traits).
macro_rules! signatures_by_current {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.get().verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.get().verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.get().supported_verify_schemes()
        }
    };
}

/// A listener's client verifier from a validation secret. It hints no CA names to clients (a
/// rotation could change them, and the hint is a borrowed list); clients send their certificate
/// regardless.
pub struct SecretClients(Rotating<VerifiedClients>);

impl SecretClients {
    pub fn new(
        secret: Arc<Secret>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        required: bool,
        extra: PeerChecks,
    ) -> Option<Self> {
        let build = move |v: &ValidationMaterial| {
            VerifiedClients::new(
                Some((*v.roots).clone()),
                provider.clone(),
                required,
                v.checks.merged(&extra),
            )
            .ok()
        };
        Rotating::new(secret, Box::new(build)).map(SecretClients)
    }
}

impl std::fmt::Debug for SecretClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretClients({:?})", self.0.secret)
    }
}

impl ClientCertVerifier for SecretClients {
    fn offer_client_auth(&self) -> bool {
        self.0.get().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.get().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.0.get().verify_client_cert(end_entity, intermediates, now)
    }

    signatures_by_current!();
}

/// A cluster's upstream verifier from a validation secret.
pub struct SecretServers(Rotating<ServerVerifier>);

impl SecretServers {
    pub fn new(
        secret: Arc<Secret>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        extra: PeerChecks,
    ) -> Option<Self> {
        let build = move |v: &ValidationMaterial| {
            ServerVerifier::new(Some((*v.roots).clone()), provider.clone(), v.checks.merged(&extra)).ok()
        };
        Rotating::new(secret, Box::new(build)).map(SecretServers)
    }
}

impl std::fmt::Debug for SecretServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretServers({:?})", self.0.secret)
    }
}

impl ServerCertVerifier for SecretServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0.get().verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    signatures_by_current!();
}

// ---------------------------------------------------------------------------------------------
// Session resumption that ends with a rotation

/// A context's rustls config as its handshakes take it: a copy of the built one with fresh
/// session caches whenever a secret it uses changes. Envoy builds a new context (new session
/// cache, new ticket keys) on every SDS update, so a client resuming after a rotation gets a full
/// handshake with the new certificate, and an upstream connection after a client certificate
/// rotation presents the new one. A connection keeps the copy it started with: the tickets it
/// issues or receives after a rotation stay in the old caches, so no resumption chain carries an
/// old certificate past a rotation.
pub struct PerGeneration<T> {
    secrets: Vec<Arc<Secret>>,
    fresh: Box<dyn Fn() -> Arc<T> + Send + Sync>,
    current: RwLock<(u64, Arc<T>)>,
}

impl<T> PerGeneration<T> {
    /// `fresh` makes the config with new session caches.
    pub fn new(secrets: Vec<Arc<Secret>>, fresh: Box<dyn Fn() -> Arc<T> + Send + Sync>) -> Self {
        let generation = secrets.iter().map(|s| s.generation.load(Ordering::Acquire)).sum();
        let first = fresh();
        PerGeneration { secrets, fresh, current: RwLock::new((generation, first)) }
    }

    pub fn get(&self) -> Arc<T> {
        let generation: u64 = self.secrets.iter().map(|s| s.generation.load(Ordering::Acquire)).sum();
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.0 == generation {
                return current.1.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            *current = (generation, (self.fresh)());
        }
        current.1.clone()
    }
}
