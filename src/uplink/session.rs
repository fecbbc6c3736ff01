//! One MQTT 5 connection: connect, republish everything unacknowledged, track
//! PUBACKs, receive commands, publish status and results, until it breaks.
//!
//! Nothing that arrives ends the session: the gateway announces a Maximum
//! Packet Size ([`MAX_INCOMING_PACKET`]) so the broker never sends it more,
//! subscribes to commands with Retain As Published and without the retained
//! messages present at subscribe time, and never hands rumqttc more than its
//! request queue takes: what waits for room waits here, bounded (the
//! outbox), and a command there is no room to answer is counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, Packet, PubAck, PubAckReason, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot, watch};

use super::bound::PUBLISH_OVERHEAD;
use super::{CommandOutcome, CommandRequest, Undeliverable, Uplink, command, payload, tls};
use crate::clock::now_ms;
use crate::config::{BackoffConfig, Broker};
use crate::devices::backoff::Backoff;
use crate::tasks::AbortOnDrop;

/// Why a session ended.
pub enum Ended {
    Shutdown,
    /// Left a working connection to another broker than the first, which
    /// is back (`mqtt.return_to_first`).
    ReturnToFirst,
    /// The connect failed (`connected` false) or the connection ended:
    /// `kind` names why in short ([`super::LinkError::kind`]).
    Lost {
        kind: &'static str,
        why: String,
        connected: bool,
    },
}

impl Ended {
    /// A connection that ended for a reason of the gateway's own.
    fn broken(why: impl Into<String>) -> Self {
        Ended::Lost {
            kind: "protocol",
            why: why.into(),
            connected: true,
        }
    }

    /// The connection failed with a rumqttc error.
    fn failed(err: &ConnectionError, connected: bool) -> Self {
        let kind = match err {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
            ) => "not-authorized",
            ConnectionError::ConnectionRefused(_) => "mqtt-refused",
            ConnectionError::Timeout(_) => "timeout",
            // rumqttc keeps no source for this one: a TLS alert read while
            // waiting for the CONNACK (a client certificate the broker
            // refused, under TLS 1.3) arrives here.
            ConnectionError::MqttState(StateError::Deserialization(
                rumqttc::v5::mqttbytes::Error::Io(io),
            )) => tls::error_kind(io),
            err => tls::error_kind(err),
        };
        Ended::Lost {
            kind,
            why: err.to_string(),
            connected,
        }
    }
}

/// A command result waiting to be published.
pub type CommandResult = (String, Option<String>, CommandOutcome);

/// The largest MQTT packet the gateway accepts (announced to the broker as
/// the MQTT 5 Maximum Packet Size, so it never sends a larger one). Every
/// command up to this size is refused with a result and an audit record
/// when it is over [`command::MAX_COMMAND_BYTES`]; a larger one is never
/// delivered. Bounded so a hostile publisher cannot make the gateway buffer
/// MQTT's 256 MB maximum.
pub const MAX_INCOMING_PACKET: u32 = 1 << 20;

/// Status messages and command results waiting in the outbox for room in
/// rumqttc's request queue, at most. (Records are bounded by the window.)
const MAX_WAITING: usize = 1024;

/// Commands handed to the pipeline whose result is not yet published, at
/// most: beyond it a command is refused as busy rather than queued.
const MAX_AWAITING_RESULT: usize = 1024;

/// Why a command is refused when the gateway cannot take more.
const BUSY: &str = "gateway busy: command queue full";

/// Delay before records the broker refused (PUBACK reason code >= 0x80)
/// are sent again in the same connection: from 1 s, doubling, up to 60 s.
const REFUSED_RETRY: BackoffConfig = BackoffConfig {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// What a publish request was, in the order it was handed to rumqttc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// A record and its `seq`.
    Record(u64),
    Status,
    Result,
}

/// A publish waiting for room in rumqttc's request queue.
struct Waiting {
    topic: String,
    body: Vec<u8>,
    retain: bool,
    tag: Tag,
}

pub struct Session<'u, T> {
    up: &'u Uplink<T>,
    client: AsyncClient,
    /// Publishes not yet taken by rumqttc's request queue, in order.
    outbox: VecDeque<Waiting>,
    /// Status messages and results in `outbox`.
    waiting: usize,
    /// Publish requests handed to rumqttc, not yet given a packet id.
    queued: VecDeque<Tag>,
    /// Packet id → request, written and awaiting PUBACK.
    inflight: HashMap<u16, Tag>,
    /// Records in `outbox`, `queued` or `inflight`.
    records_out: usize,
    /// Highest `seq` handed to rumqttc in this session.
    cursor: u64,
    /// The lowest record the broker refused (PUBACK reason >= 0x80) since
    /// the last retry: kept in the store, sent again at `retry_at`.
    refused_from: Option<u64>,
    retry_at: Option<tokio::time::Instant>,
    retry: Backoff,
    /// Commands handed to the pipeline whose result is not yet published.
    awaiting: Arc<AtomicUsize>,
}

impl<'u, T: From<CommandRequest> + From<Undeliverable> + Send + 'static> Session<'u, T> {
    pub async fn run(
        up: &'u Uplink<T>,
        broker: &Broker,
        committed: &mut watch::Receiver<u64>,
        results_tx: &mpsc::Sender<CommandResult>,
        results_rx: &mut mpsc::Receiver<CommandResult>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let window = usize::from(up.mqtt.max_inflight);
        let mut opts = MqttOptions::new(&up.gateway.id, &broker.host, broker.port);
        if let Some(tls) = &up.mqtt.tls {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.client.clone(),
            )));
        }
        opts.set_keep_alive(up.mqtt.keepalive)
            .set_clean_start(true)
            // Room for status and command results beside the record window.
            .set_outgoing_inflight_upper_limit(up.mqtt.max_inflight.saturating_add(64))
            .set_max_packet_size(Some(MAX_INCOMING_PACKET))
            .set_connection_timeout(5)
            .set_last_will(LastWill::new(
                up.mqtt.topics.status(),
                payload::offline(&up.gateway),
                QoS::AtLeastOnce,
                true,
                None,
            ));
        if let Some(user) = &up.mqtt.username {
            let password = up
                .mqtt
                .password
                .as_ref()
                .map(|p| p.0.clone())
                .unwrap_or_default();
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, window * 2 + 64);

        let connack = tokio::select! {
            r = eventloop.poll() => r,
            _ = shutdown.changed() => return Ended::Shutdown,
        };
        match connack {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let broker_max = ack.properties.and_then(|p| p.max_packet_size);
                if let Some(max) = broker_max.filter(|&m| (m as usize) < up.mqtt.max_packet_bytes) {
                    // rumqttc refuses to send a larger packet by failing the
                    // connection, so such a record would stall the uplink.
                    tracing::warn!(
                        broker_max = max,
                        max_packet_size = up.mqtt.max_packet_bytes,
                        "the broker accepts smaller packets than mqtt.max_packet_size; a record larger than the broker's limit cannot be sent: raise the broker's limit or lower mqtt.max_packet_size"
                    );
                }
            }
            Ok(other) => {
                return Ended::Lost {
                    kind: "protocol",
                    why: format!("unexpected first event {other:?}"),
                    connected: false,
                };
            }
            Err(err) => return Ended::failed(&err, false),
        }
        up.stats.send_modify(|s| {
            s.connected = true;
            s.broker = Some(broker.to_string());
            s.tls = up.mqtt.tls.is_some();
            s.connects += 1;
        });
        tracing::info!(broker = %broker, tls = up.mqtt.tls.is_some(), "MQTT connected");

        let (events_tx, mut events) = mpsc::channel(256);
        // The pump dies with the session, however it ends.
        let _pump = AbortOnDrop(tokio::spawn(pump(eventloop, events_tx)));

        let mut s = Session {
            up,
            client,
            outbox: VecDeque::new(),
            waiting: 0,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            records_out: 0,
            cursor: 0,
            refused_from: None,
            retry_at: None,
            retry: Backoff::new(REFUSED_RETRY),
            awaiting: Arc::new(AtomicUsize::new(0)),
        };
        // Subscribe before the first publish, then announce ourselves.
        // Retain As Published: a retained command published while we are
        // connected arrives marked retained, and is refused. Retain
        // Handling "never": retained commands already on the broker are not
        // sent at subscribe, so none is refused again at every reconnect.
        let mut filter = Filter::new(up.mqtt.topics.command_filter(), QoS::AtLeastOnce);
        filter.preserve_retain = true;
        filter.retain_forward_rule = RetainForwardRule::Never;
        if let Err(e) = s.client.try_subscribe_many([filter]) {
            return Ended::broken(e.to_string());
        }
        s.publish_status();
        let mut status_tick = tokio::time::interval(up.mqtt.status_interval);
        status_tick.tick().await;
        let mut committed_open = true;
        // The status goes out at once when the store becomes full or has
        // room again, not only at the next interval.
        let mut capacity = up.capacity.clone();
        let mut capacity_open = true;
        let flags = |c: &crate::store::CapacityStatus| (c.full, c.disk_full);
        let mut shown = flags(&capacity.borrow_and_update());
        // On another broker than the first: watch for the first to be back
        // and stay back (never, when return_to_first is zero).
        let first = up.mqtt.brokers.first().unwrap_or(broker);
        let stay = up.mqtt.return_to_first;
        let first_back = async {
            if first == broker || stay.is_zero() {
                std::future::pending::<()>().await;
            }
            super::first_is_back(first, stay).await;
        };
        tokio::pin!(first_back);

        loop {
            let limit = *committed.borrow_and_update();
            if let Err(why) = s.fill(limit) {
                return Ended::broken(why);
            }
            s.flush();
            let retry_at = s.retry_at;
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(ev)) => {
                        if let Err(why) = s.on_event(ev, results_tx) {
                            return Ended::broken(why);
                        }
                    }
                    Some(Err(err)) => return Ended::failed(&err, true),
                    None => return Ended::broken("event loop stopped"),
                },
                changed = committed.changed(), if committed_open => {
                    committed_open = changed.is_ok();
                }
                changed = capacity.changed(), if capacity_open => {
                    capacity_open = changed.is_ok();
                    let now = flags(&capacity.borrow_and_update());
                    if now != shown {
                        shown = now;
                        s.publish_status();
                    }
                }
                // Taken only when there is room to wait for rumqttc: the
                // rest waits in the channel, and the commands behind it in
                // their tasks.
                Some((name, id, outcome)) = results_rx.recv(), if s.waiting < MAX_WAITING => {
                    s.answer(&name, id.as_deref(), &outcome);
                }
                _ = status_tick.tick() => s.publish_status(),
                () = sleep_until(retry_at), if retry_at.is_some() => s.retry_refused(),
                _ = shutdown.changed() => {
                    s.goodbye(&mut events).await;
                    return Ended::Shutdown;
                }
                () = &mut first_back => {
                    // A clean goodbye: this broker's retained status says
                    // offline; what is out is sent again to the first.
                    s.goodbye(&mut events).await;
                    return Ended::ReturnToFirst;
                }
            }
        }
    }

    /// Publish the result of command `name`, if its topic is usable (else it
    /// was audited only). `false` when there is no room for it: the caller
    /// counts it.
    fn answer(&mut self, name: &str, id: Option<&str>, outcome: &CommandOutcome) -> bool {
        self.up.stats.send_modify(|s| match outcome {
            Ok(()) => s.commands_accepted += 1,
            Err(_) => s.commands_refused += 1,
        });
        if !command::answerable(name) {
            // Audited, but its result topic would be unusable.
            return true;
        }
        if self.waiting >= MAX_WAITING {
            return false;
        }
        let topic = self.up.mqtt.topics.command_result(name);
        let body = payload::command_result(&self.up.gateway, name, id, outcome, now_ms());
        self.publish(topic, body, false, Tag::Result);
        true
    }

    /// Send the records the broker refused again, from the lowest: `fill`
    /// reads the store from there, skipping what is still out.
    fn retry_refused(&mut self) {
        self.retry_at = None;
        if let Some(from) = self.refused_from.take() {
            self.cursor = self.cursor.min(from.saturating_sub(1));
        }
    }

    /// Queue a publish: handed to rumqttc at once when its request queue has
    /// room, else waiting in the outbox, in order. A status waiting there is
    /// replaced by the newer one.
    fn publish(&mut self, topic: String, body: Vec<u8>, retain: bool, tag: Tag) {
        if tag == Tag::Status
            && let Some(w) = self.outbox.iter_mut().find(|w| w.tag == Tag::Status)
        {
            w.body = body;
            return;
        }
        match tag {
            Tag::Record(_) => self.records_out += 1,
            Tag::Status | Tag::Result => self.waiting += 1,
        }
        self.outbox.push_back(Waiting {
            topic,
            body,
            retain,
            tag,
        });
        self.flush();
    }

    /// Hand rumqttc what waits in the outbox, oldest first, until its
    /// request queue is full. A full queue is not an error: its event loop
    /// takes requests as it writes them, and every write is an event, after
    /// which the session flushes again. (A queue that is closed for good
    /// means the event loop stopped, which ends the session by itself.)
    fn flush(&mut self) {
        while let Some(w) = self.outbox.front() {
            let sent = self.client.try_publish(
                w.topic.clone(),
                QoS::AtLeastOnce,
                w.retain,
                w.body.clone(),
            );
            if sent.is_err() {
                return;
            }
            let tag = w.tag;
            self.outbox.pop_front();
            if matches!(tag, Tag::Status | Tag::Result) {
                self.waiting -= 1;
            }
            self.queued.push_back(tag);
        }
    }

    fn publish_status(&mut self) {
        let body = self.up.status_sources().status(now_ms());
        self.publish(self.up.mqtt.topics.status(), body, true, Tag::Status);
    }

    /// Hand rumqttc the next unacknowledged records, up to the window and
    /// never past `committed`: a record the store has applied but not yet
    /// made durable must not leave the gateway (its `seq` could be reused
    /// after a crash).
    fn fill(&mut self, committed: u64) -> Result<(), String> {
        if let Some(from) = self.up.outbound.lock().rewind.take() {
            self.cursor = self.cursor.min(from.saturating_sub(1));
        }
        let window = usize::from(self.up.mqtt.max_inflight);
        while self.records_out < window && self.cursor < committed {
            let want = window - self.records_out;
            let records = match self.up.store.read_range(self.cursor, committed, want) {
                Ok(records) => records,
                // Being reopened after a disk-full failure: read again when
                // the pipeline says it is back (it republishes `committed`).
                Err(crate::store::StoreError::Unavailable) => return Ok(()),
                Err(e) => return Err(format!("store read failed: {e}")),
            };
            if records.is_empty() {
                // Everything up to `committed` is acknowledged or in flight.
                self.cursor = committed;
                break;
            }
            for record in records {
                self.cursor = record.seq;
                let topic = self
                    .up
                    .mqtt
                    .topics
                    .record_topic(record.station.as_deref(), record.body.kind());
                let body = payload::record(&self.up.gateway, self.up.store.epoch(), &record);
                let bytes = topic.len() + body.len() + PUBLISH_OVERHEAD;
                if bytes > self.up.mqtt.max_packet_bytes {
                    // It could never be sent and would block every record
                    // behind it: skipped, and handed to the pipeline, which
                    // commits an alarm naming it, then sets it aside.
                    self.undeliverable(Undeliverable {
                        seq: record.seq,
                        kind: record.body.kind(),
                        bytes,
                        max: self.up.mqtt.max_packet_bytes,
                    });
                    continue;
                }
                {
                    let mut out = self.up.outbound.lock();
                    // Being dropped by the commit in progress, or still out
                    // (read again after a rewind).
                    if out.dropping.contains(&record.seq) || !out.in_flight.insert(record.seq) {
                        continue;
                    }
                }
                self.publish(topic, body, false, Tag::Record(record.seq));
            }
        }
        Ok(())
    }

    /// Report a record that cannot be published. Records made by this
    /// gateway's config always fit (`linegate check` proves it); one stored
    /// under an earlier config with larger limits may not.
    fn undeliverable(&self, u: Undeliverable) {
        tracing::error!(
            seq = u.seq,
            kind = u.kind,
            bytes = u.bytes,
            max = u.max,
            "record larger than mqtt.max_packet_size: cannot be delivered; reported by an alarm"
        );
        let commands = self.up.commands.clone();
        // Off the session's loop: the pipeline's queue may be full for a
        // moment, and the report must not be lost nor stall publishing.
        tokio::spawn(async move {
            let _ = commands.send(u.into()).await;
        });
    }

    fn on_event(
        &mut self,
        ev: Event,
        results_tx: &mpsc::Sender<CommandResult>,
    ) -> Result<(), String> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let tag = self
                    .queued
                    .pop_front()
                    .ok_or_else(|| format!("untracked publish pkid {pkid}"))?;
                if self.inflight.insert(pkid, tag).is_some() {
                    return Err(format!("packet id {pkid} reused while unacknowledged"));
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                // Out-of-order acks made rumqttc stash a publish; start over
                // from the store rather than trust the stash.
                return Err(format!("packet id collision on {pkid}"));
            }
            Event::Incoming(Packet::PubAck(ack)) => self.on_puback(&ack),
            Event::Incoming(Packet::Publish(p)) => {
                let topic = String::from_utf8_lossy(&p.topic);
                if let Some(name) = self.up.mqtt.topics.command_name(&topic) {
                    self.on_command(name.to_owned(), &p.payload, p.retain, results_tx);
                }
            }
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| !matches!(c, SubscribeReasonCode::Success(_))) =>
            {
                tracing::error!(
                    filter = %self.up.mqtt.topics.command_filter(),
                    reasons = ?ack.return_codes,
                    "broker refused the command subscription"
                );
            }
            Event::Incoming(Packet::Disconnect(d)) => {
                return Err(format!("broker sent DISCONNECT ({:?})", d.reason_code));
            }
            _ => {}
        }
        Ok(())
    }

    /// A PUBACK. Only a reason code below 0x80 acknowledges delivery: a
    /// record the broker refused (not authorised, quota exceeded, …) stays
    /// in the store, is counted, and is sent again after a delay.
    fn on_puback(&mut self, ack: &PubAck) {
        let Some(tag) = self.inflight.remove(&ack.pkid) else {
            tracing::debug!(pkid = ack.pkid, "PUBACK for an unknown packet id");
            return;
        };
        let delivered = matches!(
            ack.reason,
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        );
        let why = || {
            let text = ack
                .properties
                .as_ref()
                .and_then(|p| p.reason_string.clone());
            format!(
                "{:?}{}",
                ack.reason,
                text.map(|t| format!(": {t}")).unwrap_or_default()
            )
        };
        let Tag::Record(seq) = tag else {
            if !delivered {
                tracing::warn!(kind = ?tag, reason = %why(), "broker refused a status or command result");
            }
            return;
        };
        self.records_out -= 1;
        if delivered {
            self.up.stats.send_modify(|s| s.records_published += 1);
            if let Err(e) = self.up.store.ack(seq) {
                // The record stays and is sent again later: a duplicate, not a loss.
                tracing::error!(seq, error = %e, "could not delete acknowledged record");
            }
        } else {
            self.up.stats.send_modify(|s| {
                s.records_refused += 1;
                s.last_refusal = Some(why());
            });
            tracing::error!(seq, reason = %why(), "broker refused a record; kept, sent again later");
            self.refused_from = Some(self.refused_from.map_or(seq, |s| s.min(seq)));
            if self.retry_at.is_none() {
                self.retry_at = Some(tokio::time::Instant::now() + self.retry.next_delay());
            }
        }
        // Out until acknowledged in the store: a drop planned in between
        // must not count it. A refused record is no longer out either.
        self.up.outbound.lock().in_flight.remove(&seq);
    }

    fn on_command(
        &mut self,
        name: String,
        payload: &[u8],
        retained: bool,
        results_tx: &mpsc::Sender<CommandResult>,
    ) {
        self.up.stats.send_modify(|s| s.commands_received += 1);
        let parsed = command::receive(
            &name,
            payload,
            retained,
            &self.up.signing,
            &self.up.gateway.id,
            now_ms(),
        );
        let id = match &parsed {
            Ok(cmd) => Some(cmd.id.clone()),
            Err(refused) => refused.id.clone(),
        };
        if let Err(refused) = &parsed {
            tracing::warn!(command = %command::shown_name(&name), reason = %refused.reason, "command refused");
        }
        if !command::answerable(&name) {
            tracing::warn!(command = %command::shown_name(&name), "command name unusable in a result topic; audited, not answered");
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = CommandRequest {
            command: parsed,
            reply: reply_tx,
        };
        // Hand over synchronously so commands reach the stations in the order
        // they arrived; only the wait for the reply runs on its own.
        let taken = if self.awaiting.load(Ordering::Relaxed) >= MAX_AWAITING_RESULT {
            false
        } else {
            match self.up.commands.try_send(request.into()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => false,
                // The pipeline is gone: the gateway is stopping.
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        };
        if taken {
            let results = results_tx.clone();
            let awaiting = self.awaiting.clone();
            awaiting.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // The pipeline replies once the audit record is committed.
                if let Ok(outcome) = reply_rx.await {
                    let _ = results.send((name, id, outcome)).await;
                }
                awaiting.fetch_sub(1, Ordering::Relaxed);
            });
            return;
        }
        // Refused unaudited: the pipeline cannot take it. Answered if its
        // name allows a result and there is room for it, else counted.
        self.up.stats.send_modify(|s| s.commands_busy += 1);
        if !command::answerable(&name) || !self.answer(&name, id.as_deref(), &Err(BUSY.into())) {
            let mut unanswered = 0;
            self.up.stats.send_modify(|s| {
                s.commands_unanswered += 1;
                unanswered = s.commands_unanswered;
            });
            if unanswered.is_power_of_two() {
                tracing::warn!(
                    unanswered,
                    "commands arrive faster than they can be answered; refused unanswered, counted"
                );
            }
        }
    }

    /// Clean shutdown: say offline (retained), then disconnect. Records
    /// still waiting are left for the next start.
    async fn goodbye(&mut self, events: &mut mpsc::Receiver<Result<Event, ConnectionError>>) {
        self.outbox.retain(|w| !matches!(w.tag, Tag::Record(_)));
        self.outbox.retain(|w| w.tag != Tag::Status);
        self.waiting = self.outbox.len();
        self.publish(
            self.up.mqtt.topics.status(),
            payload::offline(&self.up.gateway),
            true,
            Tag::Status,
        );
        let wait = async {
            let mut disconnecting = false;
            loop {
                self.flush();
                if !disconnecting && self.outbox.is_empty() {
                    disconnecting = self.client.try_disconnect().is_ok();
                }
                match events.recv().await {
                    Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
    }
}

impl<T> Drop for Session<'_, T> {
    /// What this connection had out is no longer on its way: it is sent
    /// again on the next connection, and drop-oldest may take it meanwhile.
    fn drop(&mut self) {
        self.up.outbound.lock().in_flight.clear();
    }
}

/// Sleep until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Drive the rumqttc event loop in its own task so the session can `select!`
/// on a channel (cancel-safe) rather than on `poll()` itself.
async fn pump(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, ConnectionError>>) {
    loop {
        let ev = eventloop.poll().await;
        let stop = ev.is_err();
        if tx.send(ev).await.is_err() || stop {
            return;
        }
    }
}
