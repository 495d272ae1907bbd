//! The one handle through which the control thread and the admin server reach the shards: each
//! shard's message channel and its open-connection counter. Owns nothing of a shard's state; it
//! only sends `ShardMsg`s and reads the counters the shards write.

use crate::shard::{PaddedCount, ShardHandle, ShardMsg};
use crate::snapshot::Snapshot;
use crate::stats::StatsDump;
use futures_channel::mpsc::UnboundedSender;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often `collect_stats` looks for answers: shards answer between requests, so within
/// a millisecond or so; polling keeps the caller's runtime free rather than blocked on a recv.
const STATS_POLL: Duration = Duration::from_millis(2);

#[derive(Clone, Default)]
pub struct Shards {
    shards: Vec<(UnboundedSender<ShardMsg>, Arc<PaddedCount>)>,
}

impl Shards {
    pub fn new(handles: &[ShardHandle]) -> Shards {
        Shards { shards: handles.iter().map(|h| (h.tx.clone(), h.active.clone())).collect() }
    }

    /// Every shard serves from `snapshot` from its next request on.
    pub fn install(&self, snapshot: &Arc<Snapshot>) {
        self.send(|| ShardMsg::Install(snapshot.clone()));
    }

    /// Every shard stops accepting and closes its connections as they finish.
    pub fn drain(&self) {
        self.send(|| ShardMsg::Drain);
    }

    fn send(&self, msg: impl Fn() -> ShardMsg) {
        for (tx, _) in &self.shards {
            // A shard that is gone has exited with the process; nothing to do.
            let _ = tx.unbounded_send(msg());
        }
    }

    /// Open downstream connections over all shards.
    pub fn active_connections(&self) -> usize {
        self.shards.iter().map(|(_, active)| active.0.load(Ordering::Relaxed)).sum()
    }

    /// Every shard's stats dump, merged; a shard that has not answered by `deadline` is left out
    /// (and logged). Needs a monoio runtime with timers.
    pub async fn collect_stats(&self, deadline: Instant) -> StatsDump {
        let (tx, rx) = std::sync::mpsc::channel();
        let asked = self
            .shards
            .iter()
            .filter(|(s, _)| s.unbounded_send(ShardMsg::CollectStats(tx.clone())).is_ok())
            .count();
        drop(tx);
        let mut dumps = Vec::with_capacity(asked);
        while dumps.len() < asked {
            match rx.try_recv() {
                Ok(d) => dumps.push(d),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) if Instant::now() >= deadline => break,
                Err(TryRecvError::Empty) => monoio::time::sleep(STATS_POLL).await,
            }
        }
        if dumps.len() < asked {
            log::warn!("admin: {} of {asked} shards did not report stats in time", asked - dumps.len());
        }
        StatsDump::merge(dumps)
    }
}
