//! The admin endpoint: `GET /healthz`, `GET /readyz`, `GET /metrics` over plain HTTP/1.x.
//!
//! UNTRUSTED side, and meant for the operator's network only (bind it to loopback or a
//! management interface). It reports liveness, readiness and counters; it has no way to
//! change anything and sees no client payload.
//!
//! Written by hand rather than with hyper because it needs one request per connection,
//! three fixed routes and no body: a bounded read of the request head (size AND time), a
//! fixed response, close. Every connection is answered with `Connection: close`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout, Instant};
use tracing::{debug, warn};

use crate::metrics::{ErrorKind, Metrics};
use crate::pool::Pool;

/// Largest request head accepted. The three routes need a request line and a few headers;
/// anything larger is not a monitoring probe.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time allowed to receive the request head, and separately to send the response. Keeps a
/// slow or silent peer from holding an admin slot.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin requests served at once; more are closed at once. Probes are rare and fast.
const MAX_CONCURRENT: usize = 32;

/// Serves admin requests forever (the caller aborts the task on shutdown).
pub(crate) async fn serve(listener: TcpListener, pool: Arc<Pool>, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                metrics.error(ErrorKind::Accept);
                warn!(error = %e, "admin accept failed; backing off");
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue; // dropping `stream` closes it
        };
        let (pool, metrics) = (Arc::clone(&pool), Arc::clone(&metrics));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(why) = handle(stream, &pool, &metrics).await {
                metrics.error(ErrorKind::AdminRequest);
                debug!(why, "admin request failed");
            }
        });
    }
}

/// Reads one request head, answers, closes.
async fn handle(mut stream: TcpStream, pool: &Pool, metrics: &Metrics) -> Result<(), &'static str> {
    let head = match read_head(&mut stream).await {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            respond(&mut stream, 431, "text/plain", "request header too large\n").await?;
            return Err("request head too large");
        }
        Err(HeadError::Timeout) => {
            respond(&mut stream, 408, "text/plain", "request timeout\n").await?;
            return Err("request head timed out");
        }
        Err(HeadError::Closed) => return Err("closed before a full request head"),
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "request line is not UTF-8")?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(parts.next(), Some(v) if v.starts_with("HTTP/1.")) {
        respond(&mut stream, 400, "text/plain", "bad request\n").await?;
        return Err("malformed request line");
    }
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" && method != "HEAD" {
        respond(&mut stream, 405, "text/plain", "method not allowed\n").await?;
        return Ok(());
    }
    let (status, content_type, body) = match path {
        "/healthz" => (200, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            if metrics.draining.load(Relaxed) != 0 {
                (503, "text/plain", "not ready: draining\n".to_owned())
            } else if pool.healthy_count() == 0 {
                (503, "text/plain", "not ready: no healthy enclave\n".to_owned())
            } else {
                (200, "text/plain", "ready\n".to_owned())
            }
        }
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(pool)),
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let body = if method == "HEAD" { "" } else { body.as_str() };
    respond(&mut stream, status, content_type, body).await
}

enum HeadError {
    TooLarge,
    Timeout,
    Closed,
}

/// Reads until the blank line that ends the head, within the size and time bounds.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| HeadError::Timeout)?
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> Result<(), &'static str> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    timeout(IO_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| "response write timed out")?
    .map_err(|_| "response write failed")
}
