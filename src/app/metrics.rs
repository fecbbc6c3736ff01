//! The optional Prometheus endpoint (`[metrics] listen`): `GET /metrics` in
//! the text exposition format (version 0.0.4), on a small TCP handler.
//!
//! One GET needs no HTTP server crate: the request head is read up to
//! [`MAX_REQUEST`] bytes within [`READ_TIMEOUT`], its request line parsed
//! (method, target, `HTTP/1.x`), and the reply is written with
//! `Connection: close`. `GET /metrics` (a query string allowed) gets the
//! metrics; any other target 404, another method 405, a malformed or
//! oversized head 400 or 431. At most [`MAX_CLIENTS`] connections are
//! served at a time; more wait for a slot.
//!
//! The figures come from the owners of the state, read-only: the status
//! (`uplink::StatusSources`: queue, devices, uplink, commands) and the
//! pipeline's commit timings ([`CommitTimes`], written by the pipeline
//! alone).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::uplink::StatusSources;

/// Longest request head read, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at a time.
pub const MAX_CLIENTS: usize = 8;
/// After the reply, how long and how much of the client's further input is
/// read and dropped before the connection is closed.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Upper bounds of the commit latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The pipeline's commit timings: a histogram of how long each group
/// commit took (the engine's write and fsync included), and the records
/// committed. Written by the pipeline only.
#[derive(Debug, Default)]
pub struct CommitTimes {
    /// Commits at or below each bound of [`BUCKETS`] (not cumulative).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    records: AtomicU64,
}

impl CommitTimes {
    /// One commit of `records` records that took `took`.
    pub fn observe(&self, took: Duration, records: u64) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.records.fetch_add(records, Ordering::Relaxed);
    }
}

/// Bind the endpoint on `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until the task is aborted.
pub async fn serve(listener: TcpListener, status: StatusSources, commits: Arc<CommitTimes>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = tokio::task::JoinSet::new();
    loop {
        while clients.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (status, commits) = (status.clone(), Arc::clone(&commits));
        clients.spawn(async move {
            let _slot = slot;
            if let Err(err) = serve_client(stream, &status, &commits).await {
                tracing::debug!(error = %err, "metrics endpoint: client failed");
            }
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    NotFound,
    Method,
    Bad,
}

/// Parse the request line of `head` (`GET /metrics HTTP/1.1`).
fn parse_request(head: &[u8]) -> Asked {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return Asked::Bad;
    };
    let Ok(line) = std::str::from_utf8(&head[..end]) else {
        return Asked::Bad;
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::Bad;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Asked::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Asked::Method;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Asked::Metrics
    } else {
        Asked::NotFound
    }
}

/// Read the request head: until the blank line, at most [`MAX_REQUEST`]
/// bytes. `None` when it is larger.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            // The client stopped sending: take what came.
            return Ok(Some(head));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

async fn serve_client(
    mut stream: TcpStream,
    status: &StatusSources,
    commits: &CommitTimes,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (code, body) = match head.as_deref().map(parse_request) {
        None => (
            "431 Request Header Fields Too Large",
            "request head too large\n".to_owned(),
        ),
        Some(Asked::Bad) => ("400 Bad Request", "malformed request\n".to_owned()),
        Some(Asked::Method) => ("405 Method Not Allowed", "only GET\n".to_owned()),
        Some(Asked::NotFound) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        Some(Asked::Metrics) => {
            let body = status.status(crate::clock::now_ms());
            let status: Value = serde_json::from_slice(&body).unwrap_or_default();
            ("200 OK", render(&status, commits))
        }
    };
    let head_only = head.as_deref().is_some_and(|h| h.starts_with(b"HEAD "));
    let content_type = if code.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut reply = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        reply.push_str(&body);
    }
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        // A lingering close: what the client still sends (the rest of an
        // oversized head) is read and dropped, a little, so the close does
        // not reset the connection before the client has read the reply.
        let mut rest = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match tokio::time::timeout(LINGER, stream.read(&mut rest)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// The exposition text of `status` (the status message's JSON) and the
/// commit timings.
fn render(status: &Value, commits: &CommitTimes) -> String {
    let mut out = String::new();
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let flag = |v: &Value| if v == &Value::Bool(true) { 1.0 } else { 0.0 };
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: f64| [(String::new(), v)];
    let q = &status["queue"];
    let b = &status["broker"];
    let c = &status["commands"];
    let simple: [(&str, &str, &str, f64); 17] = [
        (
            "linegate_queue_depth",
            "gauge",
            "Records accepted and not yet acknowledged by the broker.",
            num(&q["depth"]),
        ),
        (
            "linegate_queue_bytes",
            "gauge",
            "Encoded size of the queued records, in bytes.",
            num(&q["bytes"]),
        ),
        (
            "linegate_queue_oldest_age_seconds",
            "gauge",
            "Age of the oldest queued record (0 when empty).",
            num(&q["oldest_age_s"]),
        ),
        (
            "linegate_queue_max_bytes",
            "gauge",
            "The store's max_bytes.",
            num(&q["max_bytes"]),
        ),
        (
            "linegate_queue_full",
            "gauge",
            "1 while the store is full.",
            flag(&q["full"]),
        ),
        (
            "linegate_disk_full",
            "gauge",
            "1 while the disk is below min_disk_free or refused a write.",
            flag(&q["disk_full"]),
        ),
        (
            "linegate_last_seq",
            "gauge",
            "Highest seq committed in this epoch.",
            num(&q["last_seq"]),
        ),
        (
            "linegate_readings_refused_total",
            "counter",
            "Readings and commands refused because the store or disk was full.",
            num(&q["refused"]),
        ),
        (
            "linegate_records_dropped_total",
            "counter",
            "Records dropped unsent by drop-oldest, ever.",
            num(&q["dropped"]),
        ),
        (
            "linegate_uplink_connected",
            "gauge",
            "1 while the MQTT session is up.",
            flag(&b["connected"]),
        ),
        (
            "linegate_uplink_connects_total",
            "counter",
            "MQTT sessions established since start (reconnects + 1).",
            num(&b["connects"]),
        ),
        (
            "linegate_records_published_total",
            "counter",
            "Records the broker acknowledged since start.",
            num(&b["published"]),
        ),
        (
            "linegate_records_refused_total",
            "counter",
            "Records the broker refused (PUBACK reason >= 0x80) since start.",
            num(&b["refused"]),
        ),
        (
            "linegate_commands_received_total",
            "counter",
            "Commands received on the command topics since start.",
            num(&c["received"]),
        ),
        (
            "linegate_commands_accepted_total",
            "counter",
            "Commands applied since start.",
            num(&c["accepted"]),
        ),
        (
            "linegate_commands_refused_total",
            "counter",
            "Commands refused since start (any reason).",
            num(&c["refused"]),
        ),
        (
            "linegate_commands_busy_total",
            "counter",
            "Commands refused as busy since start.",
            num(&c["busy"]),
        ),
    ];
    for (name, kind, help, value) in simple {
        metric(name, kind, help, &one(value));
    }
    let devices: Vec<(String, &Value)> = status["devices"]
        .as_object()
        .map(|d| d.iter().map(|(id, v)| (label(id), v)).collect())
        .unwrap_or_default();
    for (name, kind, help, field) in [
        (
            "linegate_device_online",
            "gauge",
            "1 while the device is online.",
            "online",
        ),
        (
            "linegate_device_frames_total",
            "counter",
            "Readings from the device since start: scanner frames accepted, Modbus polls that delivered samples.",
            "frames",
        ),
        (
            "linegate_device_errors_total",
            "counter",
            "Errors since start: scanner frames rejected, Modbus reads failed.",
            "rejects",
        ),
        (
            "linegate_device_connects_total",
            "counter",
            "Times the device was opened or came online since start.",
            "connects",
        ),
    ] {
        let samples: Vec<(String, f64)> = devices
            .iter()
            .map(|(id, d)| {
                let v = if field == "online" {
                    flag(&d[field])
                } else {
                    num(&d[field])
                };
                (format!("{{device=\"{id}\"}}"), v)
            })
            .collect();
        metric(name, kind, help, &samples);
    }
    let mut samples = Vec::new();
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(&commits.buckets) {
        cumulative += count.load(Ordering::Relaxed);
        samples.push((format!("_bucket{{le=\"{bound}\"}}"), cumulative as f64));
    }
    let count = commits.count.load(Ordering::Relaxed);
    samples.push(("_bucket{le=\"+Inf\"}".to_owned(), count as f64));
    samples.push((
        "_sum".to_owned(),
        commits.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
    ));
    samples.push(("_count".to_owned(), count as f64));
    metric(
        "linegate_commit_seconds",
        "histogram",
        "Time of each group commit to the store (write and fsync).",
        &samples,
    );
    metric(
        "linegate_records_committed_total",
        "counter",
        "Records committed to the store since start.",
        &one(commits.records.load(Ordering::Relaxed) as f64),
    );
    out
}

/// A label value escaped as the exposition format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        for (head, asked) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Asked::Metrics,
            ),
            (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", Asked::Metrics),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", Asked::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Asked::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Asked::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Asked::Method),
            (b"GET /metrics\r\n\r\n", Asked::Bad),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Asked::Bad),
            (b"GET metrics HTTP/1.1\r\n\r\n", Asked::Bad),
            (b"GET /metrics HTTP/2\r\n\r\n", Asked::Bad),
            (b"\xff\xfe\r\n\r\n", Asked::Bad),
            (b"", Asked::Bad),
        ] {
            assert_eq!(
                parse_request(head),
                asked,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn the_histogram_is_cumulative_and_labels_are_escaped() {
        let t = CommitTimes::default();
        t.observe(Duration::from_micros(300), 2);
        t.observe(Duration::from_millis(3), 1);
        t.observe(Duration::from_secs(5), 1);
        let status = serde_json::json!({"devices": {"a\"b": {"online": true, "frames": 3}}});
        let text = render(&status, &t);
        assert!(
            text.contains("linegate_commit_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("linegate_commit_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("linegate_commit_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("linegate_commit_seconds_count 3\n"), "{text}");
        assert!(
            text.contains("linegate_records_committed_total 4\n"),
            "{text}"
        );
        assert!(
            text.contains("linegate_device_online{device=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("linegate_device_frames_total{device=\"a\\\"b\"} 3\n"),
            "{text}"
        );
    }
}
