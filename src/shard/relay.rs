//! Two connections joined into one byte stream each way: what a `tcp_proxy` connection is from its
//! start, and what an HTTP connection becomes after a `101 Switching Protocols`. Each direction is
//! copied by its own loop (one read, then the whole write: a slow reader stops the reads on the
//! other side, which is the backpressure). With `half_close` (the TCP proxy), an end of stream on
//! one side is passed on as a half-close of the other and the opposite direction keeps flowing, as
//! Envoy's TCP proxy does; without it (an upgraded HTTP connection, where Envoy's codec takes an end
//! of stream for the end of the connection) the first end of stream ends the relay. It also ends
//! when one side fails, or nothing moved either way for the idle timeout. Knows nothing of HTTP, stats names or access logs: the caller hands in the
//! counters to bump and reads the outcome.

use super::socket::{spare, BODY_CHUNK, READ_CHUNK};
use crate::stats::Counter;
use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// One direction: bytes read from `from` are written to `to` (a socket, a second handle on it,
/// or one half of a split one).
pub(super) struct Pipe<'a, R, W> {
    pub from: &'a mut R,
    /// Bytes already read from `from` (behind a request or response head) that go first.
    pub pending: BytesMut,
    pub to: &'a mut W,
    /// Each counts every byte written to `to`, as it goes (so `/stats` shows a long-lived
    /// connection's traffic while it lasts).
    pub counters: &'a [&'a Counter],
}

/// Which side of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Downstream,
    Upstream,
}

/// Why the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Both directions reached their end of stream (one, without half-close).
    Closed,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout,
    /// Reading from or writing to this side failed (a reset).
    Failed(Side),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Relayed {
    /// Bytes written upstream (downstream → upstream) and downstream.
    pub to_upstream: u64,
    pub to_downstream: u64,
    pub end: End,
    /// The side whose end of stream came last (the one that ended a cleanly closed relay).
    pub last_close: Option<Side>,
}

/// Copies both ways until both have ended (the first, without `half_close`), one side fails, or
/// `idle` passes with no byte moved (`NEVER` for no limit).
pub(super) async fn relay<R1, W1, R2, W2>(
    up: Pipe<'_, R1, W1>,
    down: Pipe<'_, R2, W2>,
    idle: Duration,
    half_close: bool,
) -> Relayed
where
    R1: AsyncReadRent,
    W1: AsyncWriteRent,
    R2: AsyncReadRent,
    W2: AsyncWriteRent,
{
    let last = Cell::new(Instant::now());
    let last_close = Cell::new(None);
    let (to_upstream, to_downstream) = (Cell::new(0u64), Cell::new(0u64));
    let upward = copy(up, Side::Downstream, &to_upstream, &last, &last_close, half_close);
    let downward = copy(down, Side::Upstream, &to_downstream, &last, &last_close, half_close);
    let both = async {
        let (mut upward, mut downward) = (std::pin::pin!(upward), std::pin::pin!(downward));
        // The first to fail ends the relay; a clean end waits for the other direction when the
        // other side was only half-closed.
        monoio::select! {
            r = &mut upward => match r { Ok(()) if half_close => downward.await, r => r },
            r = &mut downward => match r { Ok(()) if half_close => upward.await, r => r },
        }
    };
    let end = monoio::select! {
        r = both => match r {
            Ok(()) => End::Closed,
            Err(side) => End::Failed(side),
        },
        _ = idle_for(idle, &last) => End::IdleTimeout,
    };
    Relayed {
        to_upstream: to_upstream.get(),
        to_downstream: to_downstream.get(),
        end,
        last_close: last_close.get(),
    }
}

/// Resolves once `idle` has passed since `last` activity.
async fn idle_for(idle: Duration, last: &Cell<Instant>) {
    if idle >= crate::config::NEVER {
        return std::future::pending().await;
    }
    loop {
        let deadline = last.get() + idle;
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        monoio::time::sleep(deadline - now).await;
    }
}

/// Copies `p.from` → `p.to` until `from` ends (then, with `half_close`, half-closes `to`).
/// Err(the side that failed).
async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(
    p: Pipe<'_, R, W>,
    from_side: Side,
    total: &Cell<u64>,
    last: &Cell<Instant>,
    last_close: &Cell<Option<Side>>,
    half_close: bool,
) -> Result<(), Side> {
    let to_side = match from_side {
        Side::Downstream => Side::Upstream,
        Side::Upstream => Side::Downstream,
    };
    let Pipe { from, pending, to, counters } = p;
    let mut buf = pending;
    // Reads start small (an idle connection's pending read holds its buffer) and grow to 64 KiB
    // once one fills, so bulk transfers move in large reads.
    let mut want = READ_CHUNK;
    loop {
        if !buf.is_empty() {
            let n = buf.len() as u64;
            let (res, b) = to.write_all(buf).await;
            buf = b;
            res.map_err(|_| to_side)?;
            buf.clear();
            total.set(total.get() + n);
            for c in counters {
                c.add(n);
            }
            last.set(Instant::now());
        }
        buf.reserve(want);
        let (res, b) = from.read(spare(std::mem::take(&mut buf))).await;
        buf = b.into_inner();
        match res {
            Ok(0) => {
                last_close.set(Some(from_side));
                if half_close {
                    // The peer on the other side sees the end of stream; it may still answer.
                    let _ = to.shutdown().await;
                }
                return Ok(());
            }
            Ok(n) => {
                if n >= want {
                    want = BODY_CHUNK;
                }
                last.set(Instant::now());
            }
            Err(_) => return Err(from_side),
        }
    }
}
