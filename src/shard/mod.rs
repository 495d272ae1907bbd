//! A shard: one OS thread pinned to one core, running its own monoio runtime. It owns its listening
//! sockets (one SO_REUSEPORT socket per listener), its connections, its load-balancer state and its
//! upstream pool. It receives whole snapshots from the control thread and never touches another
//! shard's memory.

mod body;
mod chains;
mod check;
mod compress;
mod conn;
mod downstream;
mod h2;
mod h2_upstream;
mod headers;
mod mirror;
mod observe;
mod reply;
mod socket;
mod splice;
pub use reply::reason;
mod connect;
mod relay;
mod request;
mod signal;
mod state;
mod tcp_proxy;
mod timer;
mod tls;
mod upgrade;
pub use state::PaddedCount;
use state::{Generation, Shard};
mod upstream;

use crate::access_log::{ShardBuffers, Writer};
use crate::cli::IoDriver;
use crate::cluster::pool::Pool;
use crate::cluster::Rng;
use crate::snapshot::{Accepted, ChainKey, Serves, Snapshot};
use crate::stats::{ShardStats, StatsDump};
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use signal::Signal;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What the control thread tells a shard.
pub enum ShardMsg {
    /// Serve from this snapshot from the next request on.
    Install(Arc<Snapshot>),
    /// Stop accepting; finish in-flight requests; close keep-alive connections as they go idle.
    Drain,
    /// Send this shard's stats (the admin server merges every shard's answer).
    CollectStats(std::sync::mpsc::Sender<StatsDump>),
}

/// The control thread's end of a shard.
pub struct ShardHandle {
    pub tx: UnboundedSender<ShardMsg>,
    pub thread: std::thread::JoinHandle<()>,
    /// Open downstream connections, written only by the shard.
    pub active: Arc<PaddedCount>,
}

/// The driver the process settled on, decided once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring with SINGLE_ISSUER | DEFER_TASKRUN (`tuned`) or monoio's default ring.
    Uring {
        tuned: bool,
    },
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Driver::Uring { tuned: true } => write!(f, "io_uring (SINGLE_ISSUER|DEFER_TASKRUN)"),
            Driver::Uring { tuned: false } => write!(f, "io_uring"),
            Driver::Epoll => write!(f, "epoll"),
        }
    }
}

const URING_ENTRIES: u32 = 1024;

fn tuned_ring() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_single_issuer().setup_defer_taskrun();
    b
}

/// Picks the driver: io_uring where the kernel allows it (tuned ring flags where supported), else
/// epoll. `Uring` is a hard requirement: an error if io_uring cannot be set up.
pub fn choose_driver(wanted: IoDriver) -> io::Result<Driver> {
    if wanted == IoDriver::Epoll {
        return Ok(Driver::Epoll);
    }
    if tuned_ring().build(8).is_ok() {
        return Ok(Driver::Uring { tuned: true });
    }
    match io_uring::IoUring::new(8) {
        Ok(_) => Ok(Driver::Uring { tuned: false }),
        Err(e) if wanted == IoDriver::Uring => {
            Err(io::Error::new(e.kind(), format!("io_uring unavailable: {e}")))
        }
        Err(e) => {
            // Docker's and containerd 2's default seccomp profiles, io_uring_disabled, old kernels.
            log::warn!("io_uring unavailable ({e}); using epoll");
            Ok(Driver::Epoll)
        }
    }
}

/// Starts shard `id` on its own thread, pinned to `core` when given.
pub fn spawn(
    id: usize,
    core: Option<core_affinity::CoreId>,
    driver: Driver,
    initial: Arc<Snapshot>,
    log_writer: Writer,
) -> io::Result<ShardHandle> {
    let (tx, rx) = futures_channel::mpsc::unbounded();
    let active = Arc::new(PaddedCount::default());
    let counter = active.clone();
    let thread = std::thread::Builder::new().name(format!("skiff-shard-{id}")).spawn(move || {
        if let Some(core) = core {
            if !core_affinity::set_for_current(core) {
                log::warn!("shard {id}: could not pin to core {}", core.id);
            }
        }
        let main = run(id, initial, rx, counter, log_writer);
        let result = match driver {
            Driver::Uring { tuned } => {
                let mut b =
                    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(URING_ENTRIES);
                if tuned {
                    b = b.uring_builder(tuned_ring());
                }
                b.enable_timer().build().map(|mut rt| rt.block_on(main))
            }
            Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .map(|mut rt| rt.block_on(main)),
        };
        if let Err(e) = result {
            log::error!("shard {id}: cannot start its {driver} runtime: {e}");
            std::process::exit(1);
        }
    })?;
    Ok(ShardHandle { tx, thread, active })
}

/// Idle upstream connections kept per endpoint per shard, and for how long.
const POOL_MAX_IDLE: usize = 256;
const SWEEP_EVERY: Duration = Duration::from_secs(5);

fn install(shard: &Rc<Shard>, snap: Arc<Snapshot>) {
    let next = Generation::new(snap, shard.id, &shard.stats, Some(&shard.generation()));
    *shard.generation.borrow_mut() = Rc::new(next);
    let generation = shard.generation();
    let by_name: HashMap<&str, &crate::cluster::ClusterSnap> =
        generation.snap.clusters.iter().map(|c| (c.name.as_str(), &**c)).collect();
    shard
        .stats
        .retain_hosts(|cluster, addr| by_name.get(cluster).is_some_and(|c| c.endpoints.contains(addr)));
    sync_listeners(shard);
}

/// Starts accept loops for the snapshot's new listeners and stops those it no longer has.
fn sync_listeners(shard: &Rc<Shard>) {
    let generation = shard.generation();
    let snap = &generation.snap;
    let all: Vec<_> = snap
        .listeners
        .iter()
        .map(|l| &l.socket)
        .chain(snap.tcp_listeners.iter().map(|l| &l.socket))
        .collect();
    let wanted: Vec<u64> = all.iter().map(|socket| socket.id).collect();
    let mut accepting = shard.accepting.borrow_mut();
    accepting.retain(|id, stop| {
        let keep = wanted.contains(id) && !shard.draining.get();
        if !keep {
            stop.fire();
        }
        keep
    });
    if shard.draining.get() {
        return;
    }
    for socket in all {
        if accepting.contains_key(&socket.id) {
            continue;
        }
        let Some(std_listener) = socket.take(shard.id) else { continue };
        match monoio::net::TcpListener::from_std(std_listener) {
            Ok(listener) => {
                let stop = Rc::new(Signal::default());
                accepting.insert(socket.id, stop.clone());
                monoio::spawn(accept_loop(shard.clone(), listener, socket.id, stop));
            }
            Err(e) => log::error!("shard {}: listener {}: {e}", shard.id, socket.name),
        }
    }
}

fn begin_drain(shard: &Rc<Shard>) {
    shard.draining.set(true);
    sync_listeners(shard);
    // Idle connections close once a request already on its way has had the grace to land; one
    // timer here rather than one in every waiting connection.
    let shard = shard.clone();
    monoio::spawn(async move {
        monoio::time::sleep(conn::DRAIN_GRACE).await;
        shard.drain.fire();
    });
}

async fn run(
    id: usize,
    initial: Arc<Snapshot>,
    mut rx: UnboundedReceiver<ShardMsg>,
    active: Arc<PaddedCount>,
    log_writer: Writer,
) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
        ^ ((id as u64 + 1) << 48);
    let stats = ShardStats::default();
    let generation = Generation::new(initial, id, &stats, None);
    let shard = Rc::new_cyclic(|this| Shard {
        this: this.clone(),
        id,
        generation: RefCell::new(Rc::new(generation)),
        stats,
        log_bufs: RefCell::new(ShardBuffers::new(&log_writer)),
        next_conn_id: Cell::new((id as u64) << 48),
        pool: Pool::new(POOL_MAX_IDLE),
        rng: Rng::seeded(seed),
        date: reply::DateCache::default(),
        draining: Cell::new(false),
        drain: Signal::default(),
        accepting: RefCell::new(HashMap::new()),
        active: Cell::new(0),
        active_shared: active,
        timers: Rc::new(timer::Timers::default()),
    });
    sync_listeners(&shard);
    monoio::spawn(timer::drive(shard.timers.clone()));
    monoio::spawn(sweep_pool(shard.clone()));
    monoio::spawn(flush_access_logs(shard.clone()));
    monoio::spawn(tick_date(shard.clone()));
    while let Some(msg) = rx.next().await {
        match msg {
            ShardMsg::Install(snap) => install(&shard, snap),
            ShardMsg::Drain => begin_drain(&shard),
            ShardMsg::CollectStats(reply) => {
                // The admin server may have given up waiting; nothing to do then.
                let _ = reply.send(shard.stats.dump());
            }
        }
    }
}

/// Keeps the `date` header current: refreshed at each second's start, so no response reads a clock.
async fn tick_date(shard: Rc<Shard>) {
    loop {
        let wait = shard.date.refresh();
        monoio::time::sleep(wait + Duration::from_millis(1)).await;
    }
}

/// Hands buffered access-log lines to the writer thread: the request path only appends to memory.
async fn flush_access_logs(shard: Rc<Shard>) {
    loop {
        monoio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut bufs) = shard.log_bufs.try_borrow_mut() {
            if bufs.pending_bytes() > 0 {
                bufs.flush();
            }
        }
    }
}

/// Closes pooled connections that idled out or whose endpoint left every cluster.
async fn sweep_pool(shard: Rc<Shard>) {
    loop {
        monoio::time::sleep(SWEEP_EVERY).await;
        let generation = shard.generation();
        let keep = |key: &crate::cluster::pool::PoolKey| {
            generation
                .snap
                .clusters
                .iter()
                .any(|c| c.pool_id == key.cluster && c.endpoints.contains(&key.addr))
        };
        shard.pool.sweep(shard.date.second(), keep);
        h2_upstream::sweep(keep);
        if shard.draining() {
            return;
        }
    }
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: monoio::net::TcpListener,
    listener_id: u64,
    stop: Rc<Signal>,
) {
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait() => return,
        };
        match accepted {
            // Looked up per connection: a reload may give the socket other chains.
            Ok((stream, peer)) => match shard.generation().snap.route_connection(listener_id) {
                Some(Accepted::Chain(chain, Serves::Http)) => {
                    let key = ChainKey { socket: listener_id, chain };
                    let task = conn::serve(shard.clone(), key, stream, peer, None);
                    conn::log_task_size(&task);
                    monoio::spawn(task);
                }
                Some(Accepted::Chain(chain, Serves::Tcp)) => {
                    let key = ChainKey { socket: listener_id, chain };
                    monoio::spawn(tcp_proxy::serve(shard.clone(), key, stream, peer, None));
                }
                Some(Accepted::Select(_)) => {
                    monoio::spawn(chains::serve(shard.clone(), listener_id, stream, peer));
                }
                None => {}
            },
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning on the error.
                log::warn!("shard {}: accept: {e}", shard.id);
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
