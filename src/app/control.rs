//! The control socket: local operator actions on the running daemon
//! (`linegate lot …`), both ends of its protocol.
//!
//! The daemon listens on `<data_dir>/control.sock`, a Unix stream socket with
//! mode 0660: root and the daemon's group may use it, nobody else. A client
//! sends one JSON request on one line (at most [`MAX_REQUEST`] bytes, within
//! [`READ_TIMEOUT`] of connecting) and gets one JSON reply line; then the
//! daemon closes the connection.
//!
//! | request | reply when it worked |
//! |---|---|
//! | `{"op":"open-lot","station":"st10","lot":"L-1"}` (`lot` optional: the next number from the station's template) | `{"ok":true,"id":"local-…","lot":"L-1"}` |
//! | `{"op":"close-lot","station":"st10"}` | `{"ok":true,"id":"local-…"}` |
//! | `{"op":"set-operator","station":"st10","operator":"OP-7"}` (`null` logs out) | `{"ok":true,"id":"local-…"}` |
//! | `{"op":"set-order","station":"st10","order":"WO1"}` (`null` clears) | `{"ok":true,"id":"local-…"}` |
//! | `{"op":"show"}` | `{"ok":true,"stations":[…]}` (each a `StationView`) |
//! | `{"op":"status"}` | `{"ok":true,"status":{…}}` (the MQTT status message's JSON, `uplink::payload::status`; answered without the pipeline) |
//!
//! Otherwise: `{"ok":false,"error":"…","kind":K}`, where `K` is
//! - `invalid`: the request was malformed or a value broke the command rules
//!   (the same [`command::validate`] as for MES commands). Nothing reached a
//!   station, and nothing is recorded;
//! - `rejected`: the station refused it (unknown station, no lot open, …).
//!   The audit record says so, as for an MES command;
//! - `unavailable`: the pipeline did not answer in time or is stopping.
//!
//! A mutating request becomes a [`Command`](crate::station::Command) with
//! origin `local`, the op as its name, an id `local-<unix ms>-<n>` and the
//! request line as its payload. It takes the pipeline's one ordered queue,
//! like a device reading or an MES command, and is answered once its audit
//! record is committed; its records reach the MES like any other (`audit`
//! with `"origin":"local"`, `lot`/`context` with `"source":"local"`).
//!
//! The server is bounded: [`MAX_CLIENTS`] connections served at a time, a
//! request line of [`MAX_REQUEST`] bytes, and every wait has a timeout.
//! Garbage gets an `invalid` reply or a closed connection, never a panic.
//!
//! **Idle clients cannot starve it.** A connection is accepted at once, even
//! when every slot is taken: it then takes the slot of the oldest client
//! that is waiting on its peer (still sending its request line, or not
//! taking its reply), which is told so (`unavailable`) and closed. Only
//! clients whose request is with the pipeline keep their slot; a new
//! connection waits for one of those to finish only when all are. A
//! request line must arrive within [`READ_TIMEOUT`] of connecting, which
//! `linegate lot` does at once. So a local user holding a hundred idle
//! connections delays a real request by nothing, and each of them is
//! closed after at most [`READ_TIMEOUT`].

use std::io::{self, BufRead as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::app::pipeline::Input;
use crate::record::CommandOrigin;
use crate::station::CommandAction;
use crate::uplink::command;
use crate::uplink::{CommandOutcome, CommandRequest, StatusSources};

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = crate::config::CONTROL_SOCKET;
/// Mode of the socket file: read and write (connect) for owner and group.
pub const SOCKET_MODE: u32 = 0o660;
/// Longest request line, in bytes (the newline not counted).
pub const MAX_REQUEST: usize = command::MAX_COMMAND_BYTES;
/// Connections served at a time.
pub const MAX_CLIENTS: usize = 4;
/// Time a client has, from connecting, to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time an evicted client gets to take the note why (it is small: the
/// socket buffer takes it at once unless the client left it full).
const EVICT_NOTE_TIMEOUT: Duration = Duration::from_millis(100);
/// Time a client has to take the reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the pipeline: queueing behind readings, then the commit
/// of the audit record.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest reply a client reads (a `show` of many stations is the largest).
const MAX_REPLY: u64 = 16 << 20;

/// The control socket of the daemon whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// One request line. Unknown fields are refused, as in MES commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Open the named lot (closing the open one), or the next number from
    /// the station's lot template when `lot` is absent.
    OpenLot {
        station: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lot: Option<String>,
    },
    /// Close the open lot.
    CloseLot { station: String },
    /// Log an operator in, or out (`null`).
    SetOperator {
        station: String,
        operator: Option<String>,
    },
    /// Set the work order, or clear it (`null`).
    SetOrder {
        station: String,
        order: Option<String>,
    },
    /// Every station's context and open lot.
    // A struct variant (no fields), so unknown fields are refused here too.
    Show {},
    /// The gateway's status: the retained MQTT status message's JSON.
    Status {},
    /// Read the configuration file again and apply it (as SIGHUP does);
    /// answered once applied (`config`: the new generation) or refused.
    Reload {},
}

/// What the control socket hands requests to: the pipeline's queue, and
/// the gateway's reloads (`None` where the daemon does not reload, as in
/// the demo).
#[derive(Clone)]
pub struct Daemon {
    pub input: mpsc::Sender<Input>,
    pub reloads: Option<mpsc::Sender<crate::app::gateway::ReloadRequest>>,
    /// What `status` is answered from.
    pub status: StatusSources,
}

/// `reload`: ask the gateway, wait for the outcome.
async fn reload(
    reloads: Option<&mpsc::Sender<crate::app::gateway::ReloadRequest>>,
    deadline: Instant,
) -> Value {
    let Some(reloads) = reloads else {
        return failure(Failure::Invalid, "this gateway does not reload", None);
    };
    let (tx, rx) = oneshot::channel();
    if tokio::time::timeout_at(deadline, reloads.send(Some(tx)))
        .await
        .map_or(true, |sent| sent.is_err())
    {
        return failure(
            Failure::Unavailable,
            "the gateway is stopping or busy",
            None,
        );
    }
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(generation))) => json!({"ok": true, "config": generation}),
        Ok(Ok(Err(why))) => failure(Failure::Rejected, why, None),
        Ok(Err(_)) | Err(_) => failure(
            Failure::Unavailable,
            "no answer from the gateway: check its log",
            None,
        ),
    }
}

impl Request {
    /// The command name (the `op`) of a mutating request, its station and
    /// action; `None` for `show`.
    fn into_command(self) -> Option<(&'static str, String, CommandAction)> {
        Some(match self {
            Request::OpenLot { station, lot } => ("open-lot", station, CommandAction::OpenLot(lot)),
            Request::CloseLot { station } => ("close-lot", station, CommandAction::CloseLot),
            Request::SetOperator { station, operator } => (
                "set-operator",
                station,
                CommandAction::SetOperator(operator),
            ),
            Request::SetOrder { station, order } => (
                "set-order",
                station,
                CommandAction::SetOrder {
                    order,
                    materials: None,
                },
            ),
            Request::Show {} | Request::Status {} | Request::Reload {} => return None,
        })
    }
}

/// Why a request failed, in a reply's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Invalid,
    Rejected,
    Unavailable,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Invalid => "invalid",
            Failure::Rejected => "rejected",
            Failure::Unavailable => "unavailable",
        }
    }
}

fn failure(kind: Failure, error: impl Into<String>, id: Option<&str>) -> Value {
    let mut reply = json!({"ok": false, "error": error.into(), "kind": kind.as_str()});
    if let Some(id) = id {
        reply["id"] = json!(id);
    }
    reply
}

// ---------------------------------------------------------------- server

/// The bound control socket. Dropping it (the gateway stopping, or its task
/// aborted) removes the socket file, if it is still the one bound here.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, to remove only our own.
    file: (u64, u64),
    /// A socket file left by a daemon that did not stop cleanly was replaced.
    replaced_stale: bool,
}

/// Bind the control socket in `data_dir`.
///
/// A socket file left behind by a daemon that did not stop cleanly is
/// replaced; anything else at that path is left alone (an error). The caller
/// holds the store, which only one daemon can open, so a socket file found
/// here is stale. The socket is bound under a temporary name, given its mode
/// and then renamed into place, so it is never reachable with the umask's
/// permissions.
pub fn bind(data_dir: &Path) -> io::Result<ControlSocket> {
    let path = socket_path(data_dir);
    let replaced_stale = remove_stale_socket(&path)?;
    // No pid in the name: only the daemon holding the store binds here.
    let tmp = data_dir.join(crate::config::CONTROL_SOCKET_BINDING);
    remove_stale_socket(&tmp)?;
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| std::fs::symlink_metadata(&path));
    match placed {
        Ok(meta) => Ok(ControlSocket {
            listener,
            path,
            file: (meta.dev(), meta.ino()),
            replaced_stale,
        }),
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// Remove `path` if it is a socket; `Ok(false)` when there is nothing there,
/// an error when something else is.
fn remove_stale_socket(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map(|()| true),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a stale socket file (left by an unclean stop) was replaced.
    pub fn replaced_stale(&self) -> bool {
        self.replaced_stale
    }

    /// Serve clients until the task is aborted. Each connection runs in its
    /// own task, owned here: aborting this task ends them all.
    pub async fn serve(self, daemon: Daemon) {
        let mut clients = Clients::default();
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // E.g. out of file descriptors: do not spin.
                    tracing::warn!(error = %err, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            clients.make_room().await;
            clients.spawn(stream, daemon.clone());
        }
    }
}

/// The connections being served, at most [`MAX_CLIENTS`] of them live; the
/// one owner of their slots.
#[derive(Default)]
struct Clients {
    tasks: JoinSet<()>,
    /// Live clients, oldest first; an evicted one leaves at once (its task
    /// only writes its short note and ends).
    live: Vec<Client>,
}

struct Client {
    task: tokio::task::Id,
    /// Set while the client is waiting on its peer: for its request line,
    /// or for the peer to take its reply. Such a client may be evicted.
    on_peer: Arc<AtomicBool>,
    evict: oneshot::Sender<()>,
}

impl Clients {
    /// Frees a slot for a new connection: forgets finished clients, evicts
    /// the oldest one waiting on its peer when all slots are taken, and
    /// waits for one to finish only when every client is with the pipeline.
    async fn make_room(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
        while self.live.len() >= MAX_CLIENTS {
            if let Some(i) = self
                .live
                .iter()
                .position(|c| c.on_peer.load(Ordering::Acquire))
            {
                let _ = self.live.remove(i).evict.send(());
                tracing::debug!(
                    "control socket: all slots taken; the oldest idle client is closed"
                );
                return;
            }
            match self.tasks.join_next_with_id().await {
                Some(done) => self.finished(done),
                None => return,
            }
        }
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(err) => err.id(),
        };
        self.live.retain(|c| c.task != id);
    }

    fn spawn(&mut self, stream: UnixStream, daemon: Daemon) {
        let on_peer = Arc::new(AtomicBool::new(true));
        let (evict_tx, evict_rx) = oneshot::channel();
        let flag = Arc::clone(&on_peer);
        let task = self
            .tasks
            .spawn(async move { serve_client(stream, &daemon, &flag, evict_rx).await })
            .id();
        self.live.push(Client {
            task,
            on_peer,
            evict: evict_tx,
        });
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.file);
        if ours && let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(socket = %self.path.display(), error = %err, "cannot remove the control socket");
        }
    }
}

/// What came in on a connection.
enum Line {
    Request(Vec<u8>),
    TooLong,
    /// Closed before sending anything.
    Nothing,
}

async fn read_line(stream: &mut UnixStream) -> io::Result<Line> {
    let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64 + 1));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).await?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_REQUEST {
        return Ok(Line::TooLong);
    } else if buf.is_empty() {
        return Ok(Line::Nothing);
    }
    // A last line without its newline (the client shut down writing) counts.
    Ok(Line::Request(buf))
}

async fn serve_client(
    mut stream: UnixStream,
    daemon: &Daemon,
    on_peer: &AtomicBool,
    mut evicted: oneshot::Receiver<()>,
) {
    let read = tokio::select! {
        read = tokio::time::timeout(READ_TIMEOUT, read_line(&mut stream)) => read,
        _ = &mut evicted => {
            let note = failure(
                Failure::Unavailable,
                format!(
                    "closed: no request line yet, and its slot was needed (at most {MAX_CLIENTS} clients at a time)"
                ),
                None,
            );
            let _ = tokio::time::timeout(EVICT_NOTE_TIMEOUT, send_reply(&mut stream, &note)).await;
            return;
        }
    };
    let reply = match read {
        Err(_) => failure(
            Failure::Invalid,
            format!("no complete request line within {READ_TIMEOUT:?}"),
            None,
        ),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "control socket: read failed");
            return;
        }
        Ok(Ok(Line::Nothing)) => return,
        Ok(Ok(Line::TooLong)) => failure(
            Failure::Invalid,
            format!("request line longer than {MAX_REQUEST} bytes"),
            None,
        ),
        Ok(Ok(Line::Request(line))) => {
            on_peer.store(false, Ordering::Release);
            let reply = handle(&line, daemon).await;
            on_peer.store(true, Ordering::Release);
            reply
        }
    };
    let write = tokio::time::timeout(WRITE_TIMEOUT, send_reply(&mut stream, &reply));
    tokio::select! {
        written = write => match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "control socket: reply not delivered"),
            Err(_) => tracing::debug!("control socket: client did not take its reply"),
        },
        _ = &mut evicted => tracing::debug!("control socket: client did not take its reply before its slot was needed"),
    }
}

/// Writes `reply` as one line and closes the sending side.
async fn send_reply(stream: &mut UnixStream, reply: &Value) -> io::Result<()> {
    let mut text = reply.to_string();
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

/// Answer one request line.
async fn handle(line: &[u8], daemon: &Daemon) -> Value {
    let input = &daemon.input;
    let Ok(text) = std::str::from_utf8(line) else {
        return failure(Failure::Invalid, "request is not UTF-8 text", None);
    };
    let request: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(err) => return failure(Failure::Invalid, format!("invalid request: {err}"), None),
    };
    if request == (Request::Status {}) {
        // Not through the pipeline: it answers while the pipeline is busy
        // and the broker unreachable.
        let body = daemon.status.status(crate::clock::now_ms());
        return match serde_json::from_slice::<Value>(&body) {
            Ok(status) => json!({"ok": true, "status": status}),
            Err(e) => failure(Failure::Unavailable, format!("status: {e}"), None),
        };
    }
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    if request == (Request::Reload {}) {
        return reload(daemon.reloads.as_ref(), deadline).await;
    }
    let Some((name, station, action)) = request.into_command() else {
        return match inspect(input, deadline).await {
            Ok(views) => json!({"ok": true, "stations": views}),
            Err(v) => v,
        };
    };
    let id = next_id();
    let cmd = match command::validate(
        name,
        id.clone(),
        station.clone(),
        action,
        text.to_owned(),
        CommandOrigin::Local,
    ) {
        Ok(cmd) => cmd,
        Err(reason) => return failure(Failure::Invalid, reason, None),
    };
    let opens = matches!(cmd.action, CommandAction::OpenLot(_));
    let (reply, answer) = oneshot::channel::<CommandOutcome>();
    let req = CommandRequest {
        command: Ok(cmd),
        reply,
    };
    if let Err(v) = enqueue(input, Input::Command(req), deadline, Some(&id)).await {
        return v;
    }
    let outcome = match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => {
            return failure(
                Failure::Unavailable,
                "not applied: the gateway stopped before committing it",
                Some(&id),
            );
        }
        Err(_) => {
            tracing::warn!(id, "local command: no answer from the pipeline in time");
            return failure(Failure::Unavailable, unconfirmed(), Some(&id));
        }
    };
    match outcome {
        Ok(()) => {
            tracing::info!(id, command = name, station, "local command applied");
            let mut reply = json!({"ok": true, "id": id});
            if opens {
                // The lot now open there (a scan applied in between could
                // already have changed it; the `lot` record is the truth).
                let lot = inspect(input, deadline).await.ok().and_then(|views| {
                    views
                        .into_iter()
                        .find(|v| v.station == station)
                        .and_then(|v| v.context.lot)
                });
                if let Some(lot) = lot {
                    reply["lot"] = json!(lot);
                }
            }
            reply
        }
        Err(reason) => {
            tracing::info!(
                id,
                command = name,
                station,
                reason,
                "local command rejected"
            );
            failure(Failure::Rejected, reason, Some(&id))
        }
    }
}

fn unconfirmed() -> String {
    format!(
        "no answer from the pipeline within {ANSWER_TIMEOUT:?}; the command may still be applied: check with `linegate lot show`"
    )
}

async fn enqueue(
    input: &mpsc::Sender<Input>,
    item: Input,
    deadline: Instant,
    id: Option<&str>,
) -> Result<(), Value> {
    match tokio::time::timeout_at(deadline, input.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(failure(
            Failure::Unavailable,
            "not applied: the gateway is stopping",
            id,
        )),
        Err(_) => Err(failure(
            Failure::Unavailable,
            format!("not applied: the pipeline's queue stayed full for {ANSWER_TIMEOUT:?}"),
            id,
        )),
    }
}

async fn inspect(
    input: &mpsc::Sender<Input>,
    deadline: Instant,
) -> Result<Vec<crate::station::StationView>, Value> {
    let (tx, rx) = oneshot::channel();
    enqueue(input, Input::Inspect(tx), deadline, None).await?;
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(views)) => Ok(views),
        Ok(Err(_)) => Err(failure(
            Failure::Unavailable,
            "the gateway is stopping",
            None,
        )),
        Err(_) => Err(failure(
            Failure::Unavailable,
            format!("no answer from the pipeline within {ANSWER_TIMEOUT:?}"),
            None,
        )),
    }
}

/// A fresh command id: `local-<unix ms>-<n>`, `n` counting up from 1 in this
/// process, so ids are unique across restarts as long as the clock does not
/// go back to the same millisecond.
fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("local-{}-{n}", crate::clock::now_ms())
}

// ---------------------------------------------------------------- client

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket file, or nobody listening on it.
    #[error("linegate is not running: no daemon listens on {} ({source})", path.display())]
    NotRunning { path: PathBuf, source: io::Error },
    #[error(
        "permission denied on {}: run as root or as a member of the socket's group",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    /// Connected, but no complete reply came back.
    #[error("no answer from the daemon on {} ({source}); a command may or may not have been applied: check with `linegate lot show`", path.display())]
    NoAnswer { path: PathBuf, source: io::Error },
    #[error("unreadable answer from the daemon on {}: {why}", path.display())]
    BadReply { path: PathBuf, why: String },
}

/// Send one request to the daemon listening on `path` and return its reply
/// (`ok` true or false). Blocking; bounded by the daemon's own timeouts.
pub fn call(path: &Path, request: &Request) -> Result<Value, ClientError> {
    use std::os::unix::net::UnixStream as StdStream;
    let mut stream = StdStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => ClientError::NotRunning {
            path: path.to_owned(),
            source,
        },
    })?;
    let no_answer = |source| ClientError::NoAnswer {
        path: path.to_owned(),
        source,
    };
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(no_answer)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(10)))
        .map_err(no_answer)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::BadReply {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(no_answer)?;
    let mut reply = String::new();
    io::BufReader::new(io::Read::take(&mut stream, MAX_REPLY))
        .read_line(&mut reply)
        .map_err(no_answer)?;
    if !reply.ends_with('\n') {
        return Err(no_answer(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without a complete reply",
        )));
    }
    let value: Value = serde_json::from_str(&reply).map_err(|e| ClientError::BadReply {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    if value.get("ok").and_then(Value::as_bool).is_none() {
        return Err(ClientError::BadReply {
            path: path.to_owned(),
            why: "no `ok` field".into(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let ok: &[(&str, Request)] = &[
            (
                r#"{"op":"open-lot","station":"st10","lot":"L-1"}"#,
                Request::OpenLot {
                    station: "st10".into(),
                    lot: Some("L-1".into()),
                },
            ),
            (
                r#"{"op":"open-lot","station":"st10"}"#,
                Request::OpenLot {
                    station: "st10".into(),
                    lot: None,
                },
            ),
            (
                r#"{"station":"st10","op":"close-lot"}"#,
                Request::CloseLot {
                    station: "st10".into(),
                },
            ),
            (
                r#"{"op":"set-operator","station":"st10","operator":null}"#,
                Request::SetOperator {
                    station: "st10".into(),
                    operator: None,
                },
            ),
            (
                r#"{"op":"set-order","station":"st10","order":"WO1"}"#,
                Request::SetOrder {
                    station: "st10".into(),
                    order: Some("WO1".into()),
                },
            ),
            (r#"{"op":"show"}"#, Request::Show {}),
        ];
        for (text, expected) in ok {
            let got: Request = serde_json::from_str(text).unwrap();
            assert_eq!(&got, expected, "{text}");
            // What the client sends is what the server reads.
            let again: Request =
                serde_json::from_str(&serde_json::to_string(&got).unwrap()).unwrap();
            assert_eq!(&again, expected);
        }
        for bad in [
            r#"{"op":"close-lot","station":"st10","lot":"L-1"}"#,
            r#"{"op":"reboot"}"#,
            r#"{"station":"st10"}"#,
            r#"{"op":"open-lot"}"#,
            r#"{"op":"show","x":1}"#,
            "[]",
            "",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_unique_and_valid_command_ids() {
        let a = next_id();
        let b = next_id();
        assert_ne!(a, b);
        assert!(a.starts_with("local-") && a.len() <= 64, "{a}");
    }
}
