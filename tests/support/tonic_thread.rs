//! A gRPC server's plumbing for the tests: a loopback listener on an ephemeral port, accepted by a
//! tokio current-thread runtime on a thread of its own, each connection handed to the caller's
//! `serve` (which runs a tonic service on it); stops when dropped.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::sync::watch;

pub type Conn = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct TonicThread {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TonicThread {
    /// Serves the tonic service `svc` (HTTP/2, or HTTP/1.1 for a client that speaks it).
    pub fn serve<S>(svc: S) -> TonicThread
    where
        S: tonic::codegen::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        Self::spawn(move |stream| {
            let svc = svc.clone();
            Box::pin(async move {
                let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            })
        })
    }

    pub fn spawn(serve: impl Fn(tokio::net::TcpStream) -> Conn + Send + 'static) -> TonicThread {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind grpc server");
        let addr = std_listener.local_addr().expect("grpc server address");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let (stop, mut stopped) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let stream = tokio::select! {
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => return },
                        _ = stopped.changed() => return,
                    };
                    tokio::spawn(serve(stream));
                }
            });
        });
        TonicThread { addr, stop, thread: Some(thread) }
    }
}

impl Drop for TonicThread {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
