//! `[metrics] listen`: the node's figures over HTTP for Prometheus, as
//! [`wow_core::metrics::encode`] writes them. One request per connection,
//! `GET /metrics` only; anything else gets 404 or 405.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The content type of OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The listener, if configured and bound.
pub async fn bind(listen: Option<std::net::SocketAddr>) -> Option<TcpListener> {
    let addr = listen?;
    match TcpListener::bind(addr).await {
        Ok(l) => {
            tracing::info!(%addr, "metrics served at http://{addr}/metrics");
            Some(l)
        }
        Err(e) => {
            tracing::error!(%addr, error = %e, "metrics not served: cannot bind");
            None
        }
    }
}

/// The next connection. Never returns without a listener.
pub async fn accept(listener: Option<&TcpListener>) -> TcpStream {
    match listener {
        Some(l) => loop {
            if let Ok((stream, _)) = l.accept().await {
                return stream;
            }
        },
        None => std::future::pending().await,
    }
}

/// Answers one request on `stream` with `body` (the metrics, encoded
/// when the connection came).
pub async fn answer(mut stream: TcpStream, body: String) {
    let mut request = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut request))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let line = String::from_utf8_lossy(&request[..n]);
    let mut words = line.split_whitespace();
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", CONTENT_TYPE, body),
        (Some("GET"), _) => (
            "404 Not Found",
            "text/plain",
            "not found: GET /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n".into(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
