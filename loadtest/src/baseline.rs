//! The ceiling: a bare hyper 1.x server that answers every request with a tiny JSON body,
//! run as its own process so that it competes for the CPU exactly as a node would.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"status":"pending","channel":"sms","expires_in":300,"resend_after":30}"#;

/// Serves forever; prints the bound address on stdout first (the parent reads it).
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                // Read the body like a real handler would, then answer.
                let _ = req.into_body().collect().await;
                let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                *resp.status_mut() = StatusCode::ACCEPTED;
                resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(resp)
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
