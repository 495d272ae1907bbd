//! `l4-relay`: the floor any proxy pays in kernel work. Accepts TCP on `--listen`, connects to
//! `--backend`, and copies bytes both ways with no parsing, on monoio's io_uring driver with the
//! same ring flags skiff uses (`SINGLE_ISSUER | DEFER_TASKRUN`). One thread per `--threads`, each
//! with its own SO_REUSEPORT listener, so the kernel spreads connections as it does for skiff.
//!
//!   cargo run --release --example l4-relay -- --listen 127.0.0.1:19102 --backend 127.0.0.1:19100

use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use std::net::SocketAddr;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    backend: SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Copies until `from` reaches EOF, then half-closes `to` so the peer sees the end too.
async fn pipe(mut from: impl AsyncReadRent, mut to: impl AsyncWriteRent) -> std::io::Result<()> {
    // 64 KiB: a 64 KiB response body crosses in one read where the socket buffer allows.
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let (res, b) = from.read(buf).await;
        if res? == 0 {
            return to.shutdown().await;
        }
        let (res, mut b) = to.write_all(b).await;
        res?;
        b.clear();
        buf = b;
    }
}

async fn relay(client: TcpStream, backend: SocketAddr) -> std::io::Result<()> {
    let upstream = TcpStream::connect(backend).await?;
    // Both sides carry request/response exchanges: Nagle would add delay, as in any HTTP proxy.
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let back = monoio::spawn(pipe(ur, cw));
    let forth = pipe(cr, uw).await;
    back.await.and(forth)
}

async fn serve(args: &Args) -> std::io::Result<()> {
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    let listener = TcpListener::bind_with_config(args.listen, &opts)?;
    let backend = args.backend;
    loop {
        let (client, _) = listener.accept().await?;
        monoio::spawn(async move {
            // A peer resetting mid-copy is normal under connection-per-request load; not an error.
            let _ = relay(client, backend).await;
        });
    }
}

fn main() {
    let args = Args::parse();
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                let mut ring = io_uring::IoUring::builder();
                ring.setup_single_issuer().setup_defer_taskrun();
                let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .uring_builder(ring)
                    .enable_timer()
                    .build()
                    .expect("io_uring runtime with SINGLE_ISSUER|DEFER_TASKRUN");
                if let Err(e) = rt.block_on(serve(&args)) {
                    eprintln!("l4-relay: {e}");
                    std::process::exit(1);
                }
            });
        }
    });
}
