//! [`Proxy`]: a TCP relay between gateway and broker that injects connection
//! faults, switchable while connections are open:
//!
//! - **refuse**: new connections are closed at once ([`Proxy::set_accepting`]);
//! - **port closed**: nothing listens on the proxy's port, so the kernel
//!   refuses connections, as for a broker that is down
//!   ([`Proxy::set_listening`]; open connections stay);
//! - **cut**: every open connection is closed ([`Proxy::cut_all`]);
//! - **black-hole**: connections stay open, but nothing is read or forwarded
//!   in either direction until resumed ([`Proxy::black_hole`]); new
//!   connections are held the same way. Like a partition that heals: what the
//!   peers wrote meanwhile waits in the kernel's buffers and flows on resume,
//!   unless a peer gave up on the connection first;
//! - **reset before PUBACK**: after forwarding the next QoS 1 PUBLISH on a
//!   matching topic, the connection forwards nothing more; once the broker's
//!   PUBACK for it arrives (withheld, at most [`ACK_WAIT`]), both sides are
//!   reset (`SO_LINGER` 0, so an RST, not a FIN) ([`Proxy::arm_reset`]). The
//!   broker has the message and the gateway never learns it: it must send it
//!   again.
//!
//! The relay cuts the byte stream into MQTT packets ([`Framer`]: fixed
//! header, remaining-length varint, body; packets may be split across reads
//! or share one) and forwards whole packets, so a fault lands between
//! packets. The counters ([`Proxy::resets`], [`Proxy::connections`], …) tell
//! a test which faults actually happened, and [`Proxy::in_flight`] how many
//! PUBLISHes await their PUBACK. [`Proxy::tap`] records when each QoS 1
//! PUBLISH and PUBACK passed (for the benches' capture → PUBACK times).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// How long an armed reset waits for the broker's PUBACK before resetting
/// anyway.
pub const ACK_WAIT: Duration = Duration::from_secs(2);

/// A TCP relay: gateway → proxy → broker (on 127.0.0.1), with faults.
pub struct Proxy {
    pub port: u16,
    ctl: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// The switches and counters shared by the listener and every connection.
struct Control {
    accepting: AtomicBool,
    /// Switched off to close the listening socket.
    listening: watch::Sender<bool>,
    /// Whether the listening socket is open now.
    bound: AtomicBool,
    /// Recorded packets while `Some` ([`Proxy::tap`]).
    tap: Mutex<Option<Vec<Tapped>>>,
    /// `true` while black-holed.
    held: watch::Sender<bool>,
    /// Fires to close every open connection.
    cut: Notify,
    /// Armed reset: the topic prefix of the PUBLISH to reset after.
    reset_on: Mutex<Option<String>>,
    connections: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
    /// QoS 1 PUBLISHes forwarded to the broker whose PUBACK has not been
    /// forwarded back, over the open connections.
    in_flight: AtomicU64,
    /// Fires whenever a counter changes.
    changed: Notify,
}

impl Control {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Proxy {
    /// Listen on a free loopback port and relay to 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Arc::new(Control {
            accepting: AtomicBool::new(true),
            listening: watch::channel(true).0,
            bound: AtomicBool::new(true),
            tap: Mutex::new(None),
            held: watch::channel(false).0,
            cut: Notify::new(),
            reset_on: Mutex::new(None),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let c = ctl.clone();
        let task = tokio::spawn(async move {
            let mut listening = c.listening.subscribe();
            let mut listener = Some(listener);
            loop {
                let Some(open) = &listener else {
                    if listening.wait_for(|on| *on).await.is_err() {
                        return;
                    }
                    // The same port again (SO_REUSEADDR is set by tokio).
                    listener = Some(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
                    c.bound.store(true, Ordering::SeqCst);
                    c.changed.notify_waiters();
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = open.accept() => accepted,
                    _ = listening.wait_for(|on| !*on) => {
                        listener = None;
                        c.bound.store(false, Ordering::SeqCst);
                        c.changed.notify_waiters();
                        continue;
                    }
                };
                let Ok((inbound, _)) = accepted else {
                    return;
                };
                if !c.accepting.load(Ordering::SeqCst) {
                    drop(inbound);
                    c.count(&c.refused);
                    continue;
                }
                tokio::spawn(relay(inbound, upstream, c.clone()));
            }
        });
        Proxy { port, ctl, task }
    }

    /// Refuse (close at once) new connections while `false`.
    pub fn set_accepting(&self, on: bool) {
        self.ctl.accepting.store(on, Ordering::SeqCst);
    }

    /// Close the listening socket while `false`: connection attempts are
    /// refused by the kernel, as when nothing listens on a broker's port.
    /// Open connections are not touched. Returns once the switch took effect.
    pub async fn set_listening(&self, on: bool) {
        self.ctl.listening.send_replace(on);
        let bound = || self.ctl.bound.load(Ordering::SeqCst) == on;
        assert!(
            super::wait_until_within(&self.ctl.changed, Duration::from_secs(5), bound).await,
            "the proxy's port did not {} within 5 s",
            if on { "open" } else { "close" }
        );
    }

    /// Record every QoS 1 PUBLISH going up and PUBACK going down from now
    /// on (`take_tapped` returns them).
    pub fn tap(&self) {
        self.ctl.tap.lock().unwrap().get_or_insert_with(Vec::new);
    }

    /// The packets recorded since the last call, in the order they passed.
    pub fn take_tapped(&self) -> Vec<Tapped> {
        self.ctl
            .tap
            .lock()
            .unwrap()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Cut every open connection; returns how many were open.
    pub fn cut_all(&self) -> u64 {
        let open = self.open();
        self.ctl.cut.notify_waiters();
        open
    }

    /// Black-hole every connection, open and new, while `true`.
    pub fn black_hole(&self, on: bool) {
        self.ctl.held.send_replace(on);
    }

    /// Reset the connection that next forwards a QoS 1 PUBLISH whose topic
    /// starts with `topic_prefix` (`""`: any), once the broker acked it.
    /// Fires once; [`Proxy::resets`] counts it when it has.
    pub fn arm_reset(&self, topic_prefix: &str) {
        *self.ctl.reset_on.lock().unwrap() = Some(topic_prefix.to_owned());
    }

    /// Disarm a reset that has not fired; returns whether it was still armed.
    pub fn disarm_reset(&self) -> bool {
        self.ctl.reset_on.lock().unwrap().take().is_some()
    }

    /// Connections relayed so far (refused ones not included).
    pub fn connections(&self) -> u64 {
        self.ctl.connections.load(Ordering::SeqCst)
    }

    /// Connections relayed now.
    pub fn open(&self) -> u64 {
        self.ctl.open.load(Ordering::SeqCst)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.ctl.refused.load(Ordering::SeqCst)
    }

    /// Connections reset after forwarding a PUBLISH, so far.
    pub fn resets(&self) -> u64 {
        self.ctl.resets.load(Ordering::SeqCst)
    }

    /// QoS 1 PUBLISHes the broker got through the open connections and
    /// has not acknowledged to the gateway through them (yet).
    pub fn in_flight(&self) -> u64 {
        self.ctl.in_flight.load(Ordering::SeqCst)
    }

    /// Wait until `cond` holds over the proxy (re-checked whenever a counter
    /// changes), at most `limit`; returns whether it did.
    pub async fn wait_until(&self, limit: Duration, mut cond: impl FnMut(&Proxy) -> bool) -> bool {
        super::wait_until_within(&self.ctl.changed, limit, || cond(self)).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Connection tasks end with their cut.
        self.ctl.cut.notify_waiters();
    }
}

/// A packet [`Proxy::tap`] recorded, when the proxy had read it whole (just
/// before forwarding it).
#[derive(Debug, Clone)]
pub enum Tapped {
    /// A QoS 1 PUBLISH, gateway to broker: its packet id and payload.
    Publish {
        at: std::time::Instant,
        pkid: u16,
        payload: Vec<u8>,
    },
    /// A PUBACK, broker to gateway.
    PubAck { at: std::time::Instant, pkid: u16 },
}

/// How one relayed connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A peer closed, failed or sent something that is not MQTT.
    Closed,
    Cut,
    /// Reset after forwarding a PUBLISH (armed).
    Reset,
}

/// No PUBLISH has triggered a reset on this connection (packet ids are 16 bit).
const NO_TRIGGER: u32 = u32::MAX;

/// What the two directions of one connection share.
struct Conn {
    /// The packet id of the PUBLISH that armed the reset, once forwarded:
    /// `Up` sets it before forwarding the PUBLISH, then forwards nothing
    /// more; `Down` withholds everything from then on, and ends the
    /// connection at that PUBLISH's PUBACK.
    trigger: AtomicU32,
    /// This connection's part of [`Control::in_flight`].
    in_flight: AtomicU64,
    /// The client's CONNECT asked for MQTT 5 (PUBLISH then has properties).
    v5: AtomicBool,
}

/// Which way a [`pump`] forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Gateway to broker.
    Up,
    /// Broker to gateway.
    Down,
}

/// Relay one gateway connection to a new broker connection until it ends.
async fn relay(mut client: TcpStream, upstream: u16, ctl: Arc<Control>) {
    // Created before anything else: a cut from now on ends this connection.
    let cut = ctl.cut.notified();
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    ctl.count(&ctl.connections);
    ctl.open.fetch_add(1, Ordering::SeqCst);
    let conn = Conn {
        trigger: AtomicU32::new(NO_TRIGGER),
        in_flight: AtomicU64::new(0),
        v5: AtomicBool::new(false),
    };
    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        tokio::select! {
            end = pump(Dir::Up, &mut cr, &mut sw, &ctl, &conn) => end,
            end = pump(Dir::Down, &mut sr, &mut cw, &ctl, &conn) => end,
            () = cut => End::Cut,
        }
    };
    ctl.open.fetch_sub(1, Ordering::SeqCst);
    let unacked = conn.in_flight.load(Ordering::SeqCst);
    ctl.in_flight.fetch_sub(unacked, Ordering::SeqCst);
    ctl.changed.notify_waiters();
    if end == End::Reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
        drop((client, server));
        ctl.count(&ctl.resets);
    }
}

/// Forward whole packets `from` → `to`, holding while black-holed, and
/// reset when armed (see [`Conn`]).
async fn pump(
    dir: Dir,
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    ctl: &Control,
    conn: &Conn,
) -> End {
    let mut held = ctl.held.subscribe();
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if held.wait_for(|held| !held).await.is_err() {
            return End::Closed;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            },
            _ = held.changed() => continue,
        };
        framer.push(&buf[..n]);
        loop {
            let packet = match framer.next() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(Malformed) => return End::Closed,
            };
            let armed = conn.trigger.load(Ordering::SeqCst);
            match dir {
                Dir::Down if armed != NO_TRIGGER => {
                    if packet.puback() == Some(armed as u16) {
                        return End::Reset;
                    }
                    continue; // withheld
                }
                Dir::Up => {
                    if let Some(pkid) = claims_reset(ctl, &packet) {
                        conn.trigger.store(u32::from(pkid), Ordering::SeqCst);
                        if to.write_all(&packet.bytes).await.is_err() {
                            return End::Closed;
                        }
                        count_in_flight(dir, &packet, ctl, conn);
                        // Forward nothing more; reset at the PUBACK (the
                        // other direction) or after waiting for it in vain.
                        tokio::time::sleep(ACK_WAIT).await;
                        return End::Reset;
                    }
                }
                Dir::Down => {}
            }
            if dir == Dir::Up && packet.kind() == 1 {
                conn.v5
                    .store(packet.protocol_level() == Some(5), Ordering::SeqCst);
            }
            tap(dir, &packet, ctl, conn.v5.load(Ordering::SeqCst));
            if to.write_all(&packet.bytes).await.is_err() {
                return End::Closed;
            }
            count_in_flight(dir, &packet, ctl, conn);
        }
    }
}

/// Record `packet` if the tap is on and it is a PUBLISH up or a PUBACK down.
fn tap(dir: Dir, packet: &Packet, ctl: &Control, v5: bool) {
    let mut tap = ctl.tap.lock().unwrap();
    let Some(tapped) = tap.as_mut() else { return };
    let at = std::time::Instant::now();
    match dir {
        Dir::Up => {
            if let Some((pkid, payload)) = packet.publish_qos1_payload(v5) {
                tapped.push(Tapped::Publish {
                    at,
                    pkid,
                    payload: payload.to_vec(),
                });
            }
        }
        Dir::Down => {
            if let Some(pkid) = packet.puback() {
                tapped.push(Tapped::PubAck { at, pkid });
            }
        }
    }
}

/// A QoS 1 PUBLISH forwarded up is in flight until a PUBACK is forwarded
/// down (the broker acks in order; the count is what matters).
fn count_in_flight(dir: Dir, packet: &Packet, ctl: &Control, conn: &Conn) {
    let (mine, all) = (&conn.in_flight, &ctl.in_flight);
    if dir == Dir::Up && packet.publish_qos1().is_some() {
        mine.fetch_add(1, Ordering::SeqCst);
        all.fetch_add(1, Ordering::SeqCst);
    } else if dir == Dir::Down && packet.puback().is_some() && mine.load(Ordering::SeqCst) > 0 {
        // Only this direction decrements: no race below zero.
        mine.fetch_sub(1, Ordering::SeqCst);
        all.fetch_sub(1, Ordering::SeqCst);
    } else {
        return;
    }
    ctl.changed.notify_waiters();
}

/// If `packet` is the PUBLISH an armed reset waits for: disarm, and return
/// its packet id.
fn claims_reset(ctl: &Control, packet: &Packet) -> Option<u16> {
    let (topic, pkid) = packet.publish_qos1()?;
    let mut armed = ctl.reset_on.lock().unwrap();
    armed
        .as_deref()
        .is_some_and(|prefix| topic.starts_with(prefix))
        .then(|| {
            *armed = None;
            pkid
        })
}

/// Bytes that are not MQTT: a remaining length longer than 4 bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// MQTT packets cut out of a byte stream: a fixed header (packet type and
/// flags in one byte, then the remaining length as a varint of 1 to 4
/// bytes, 7 bits each, least significant first) and that many bytes more.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Append bytes as read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, if it has arrived entirely.
    pub fn next(&mut self) -> Result<Option<Packet>, Malformed> {
        let mut remaining = 0usize;
        for i in 1..=4 {
            let Some(&byte) = self.buf.get(i) else {
                return Ok(None);
            };
            remaining |= usize::from(byte & 0x7f) << (7 * (i - 1));
            if byte & 0x80 == 0 {
                let len = 1 + i + remaining;
                if self.buf.len() < len {
                    return Ok(None);
                }
                return Ok(Some(Packet {
                    bytes: self.buf.drain(..len).collect(),
                    body: 1 + i,
                }));
            }
        }
        Err(Malformed)
    }
}

/// One whole MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub bytes: Vec<u8>,
    /// Where the variable header starts (after the fixed header).
    body: usize,
}

impl Packet {
    /// Packet type (3 PUBLISH, 4 PUBACK, 12 PINGREQ, …).
    pub fn kind(&self) -> u8 {
        self.bytes[0] >> 4
    }

    /// Topic and packet id of a QoS 1 PUBLISH.
    pub fn publish_qos1(&self) -> Option<(&str, u16)> {
        let qos = (self.bytes[0] >> 1) & 0b11;
        if self.kind() != 3 || qos != 1 {
            return None;
        }
        let body = &self.bytes[self.body..];
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = std::str::from_utf8(body.get(2..2 + topic_len)?).ok()?;
        let pkid = body.get(2 + topic_len..4 + topic_len)?;
        Some((topic, u16::from_be_bytes([pkid[0], pkid[1]])))
    }

    /// Packet id and payload of a QoS 1 PUBLISH; `v5`: MQTT 5, whose
    /// PUBLISH has properties (a varint length, then that many bytes)
    /// before the payload.
    pub fn publish_qos1_payload(&self, v5: bool) -> Option<(u16, &[u8])> {
        let (topic, pkid) = self.publish_qos1()?;
        let mut start = self.body + 2 + topic.len() + 2;
        if v5 {
            let mut len = 0usize;
            for i in 0..4 {
                let byte = *self.bytes.get(start)?;
                start += 1;
                len |= usize::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            start += len;
        }
        Some((pkid, self.bytes.get(start..)?))
    }

    /// The protocol level of a CONNECT (4 for MQTT 3.1.1, 5 for MQTT 5).
    pub fn protocol_level(&self) -> Option<u8> {
        if self.kind() != 1 {
            return None;
        }
        let body = &self.bytes[self.body..];
        let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        body.get(2 + name_len).copied()
    }

    /// Packet id of a PUBACK.
    pub fn puback(&self) -> Option<u16> {
        if self.kind() != 4 {
            return None;
        }
        let body = &self.bytes[self.body..];
        Some(u16::from_be_bytes([*body.first()?, *body.get(1)?]))
    }
}
