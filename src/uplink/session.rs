//! One MQTT connection: connect, republish everything unacknowledged, track
//! PUBACKs, receive commands, publish status and results, until it breaks.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::bound::PUBLISH_OVERHEAD;
use super::{CommandOutcome, CommandRequest, Undeliverable, Uplink, command, payload};
use crate::clock::now_ms;
use crate::devices::backoff::Backoff;
use crate::tasks::AbortOnDrop;

/// Why a session ended.
pub enum Ended {
    Shutdown,
    Lost(String),
}

/// A command result waiting to be published.
pub type CommandResult = (String, Option<String>, CommandOutcome);

/// What a publish request was, in the order it was handed to rumqttc.
/// `Some(seq)` for a record, `None` for status and command results.
type Tag = Option<u64>;

pub struct Session<'u, T> {
    up: &'u Uplink<T>,
    client: AsyncClient,
    /// Publish requests handed to rumqttc, not yet given a packet id.
    queued: VecDeque<Tag>,
    /// Packet id → request, written and awaiting PUBACK.
    inflight: HashMap<u16, Tag>,
    /// Records in `queued` or `inflight`.
    records_out: usize,
    /// Highest `seq` handed to rumqttc in this session.
    cursor: u64,
}

impl<'u, T: From<CommandRequest> + From<Undeliverable> + Send + 'static> Session<'u, T> {
    pub async fn run(
        up: &'u Uplink<T>,
        committed: &mut watch::Receiver<u64>,
        results_tx: &mpsc::Sender<CommandResult>,
        results_rx: &mut mpsc::Receiver<CommandResult>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Ended {
        let window = usize::from(up.mqtt.max_inflight);
        let mut opts = MqttOptions::new(&up.gateway.id, &up.mqtt.host, up.mqtt.port);
        opts.set_keep_alive(up.mqtt.keepalive)
            .set_clean_session(true)
            // Room for status and command results beside the record window.
            .set_inflight(up.mqtt.max_inflight.saturating_add(16))
            .set_max_packet_size(up.mqtt.max_packet_bytes, up.mqtt.max_packet_bytes)
            .set_last_will(LastWill::new(
                up.mqtt.topics.status(),
                payload::offline(&up.gateway),
                QoS::AtLeastOnce,
                true,
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
        eventloop.network_options.set_connection_timeout(5);

        let connack = tokio::select! {
            r = eventloop.poll() => r,
            _ = shutdown.changed() => return Ended::Shutdown,
        };
        match connack {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {}
            Ok(other) => return Ended::Lost(format!("unexpected first event {other:?}")),
            Err(err) => return Ended::Lost(err.to_string()),
        }
        backoff.reset();
        tracing::info!(broker = %format!("{}:{}", up.mqtt.host, up.mqtt.port), "MQTT connected");

        let (events_tx, mut events) = mpsc::channel(256);
        // The pump dies with the session, however it ends.
        let _pump = AbortOnDrop(tokio::spawn(pump(eventloop, events_tx)));

        let mut s = Session {
            up,
            client,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            records_out: 0,
            cursor: 0,
        };
        // Subscribe before the first publish, then announce ourselves.
        if let Err(e) = s
            .client
            .try_subscribe(up.mqtt.topics.command_filter(), QoS::AtLeastOnce)
        {
            return Ended::Lost(e.to_string());
        }
        if let Err(why) = s.publish_status() {
            return Ended::Lost(why);
        }
        let mut status_tick = tokio::time::interval(up.mqtt.status_interval);
        status_tick.tick().await;
        let mut committed_open = true;
        // The status goes out at once when the store becomes full or has
        // room again, not only at the next interval.
        let mut capacity = up.capacity.clone();
        let mut capacity_open = true;
        let flags = |c: &crate::store::CapacityStatus| (c.full, c.disk_full);
        let mut shown = flags(&capacity.borrow_and_update());

        loop {
            let limit = *committed.borrow_and_update();
            if let Err(why) = s.fill(limit) {
                return Ended::Lost(why);
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(ev)) => {
                        if let Err(why) = s.on_event(ev, results_tx) {
                            return Ended::Lost(why);
                        }
                    }
                    Some(Err(err)) => return Ended::Lost(err.to_string()),
                    None => return Ended::Lost("event loop stopped".into()),
                },
                changed = committed.changed(), if committed_open => {
                    committed_open = changed.is_ok();
                }
                changed = capacity.changed(), if capacity_open => {
                    capacity_open = changed.is_ok();
                    let now = flags(&capacity.borrow_and_update());
                    if now != shown {
                        shown = now;
                        if let Err(why) = s.publish_status() {
                            return Ended::Lost(why);
                        }
                    }
                }
                Some((name, id, outcome)) = results_rx.recv() => {
                    if !command::answerable(&name) {
                        // Audited, but its result topic would be unusable.
                        continue;
                    }
                    let topic = up.mqtt.topics.command_result(&name);
                    let body = payload::command_result(&up.gateway, &name, id.as_deref(), &outcome, now_ms());
                    if let Err(why) = s.publish(topic, body, false, None) {
                        return Ended::Lost(why);
                    }
                }
                _ = status_tick.tick() => {
                    if let Err(why) = s.publish_status() {
                        return Ended::Lost(why);
                    }
                }
                _ = shutdown.changed() => {
                    s.goodbye(&mut events).await;
                    return Ended::Shutdown;
                }
            }
        }
    }

    fn publish(
        &mut self,
        topic: String,
        body: Vec<u8>,
        retain: bool,
        tag: Tag,
    ) -> Result<(), String> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, body)
            .map_err(|e| format!("publish request refused: {e}"))?;
        self.queued.push_back(tag);
        if tag.is_some() {
            self.records_out += 1;
        }
        Ok(())
    }

    fn publish_status(&mut self) -> Result<(), String> {
        let stats = self.up.store.stats();
        let capacity = self.up.capacity.borrow().clone();
        let body = payload::status(
            &self.up.gateway,
            now_ms(),
            &stats,
            &capacity,
            &self.up.health.snapshot(),
        );
        self.publish(self.up.mqtt.topics.status(), body, true, None)
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
                    if out.dropping.contains(&record.seq) {
                        // Being dropped by the commit in progress.
                        continue;
                    }
                    out.in_flight.insert(record.seq);
                }
                self.publish(topic, body, false, Some(record.seq))?;
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
            Event::Incoming(Packet::PubAck(ack)) => match self.inflight.remove(&ack.pkid) {
                Some(Some(seq)) => {
                    self.records_out -= 1;
                    if let Err(e) = self.up.store.ack(seq) {
                        // The record stays and is sent again later: a duplicate, not a loss.
                        tracing::error!(seq, error = %e, "could not delete acknowledged record");
                    }
                    // Out until acknowledged in the store: a drop planned in
                    // between must not count it.
                    self.up.outbound.lock().in_flight.remove(&seq);
                }
                Some(None) => {}
                None => tracing::debug!(pkid = ack.pkid, "PUBACK for an unknown packet id"),
            },
            Event::Incoming(Packet::Publish(p)) => {
                if let Some(name) = self.up.mqtt.topics.command_name(&p.topic) {
                    self.on_command(name.to_owned(), &p.payload, p.retain, results_tx);
                }
            }
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                tracing::error!(
                    filter = %self.up.mqtt.topics.command_filter(),
                    "broker refused the command subscription"
                );
            }
            Event::Incoming(Packet::Disconnect) => return Err("broker sent DISCONNECT".into()),
            _ => {}
        }
        Ok(())
    }

    fn on_command(
        &self,
        name: String,
        payload: &[u8],
        retained: bool,
        results_tx: &mpsc::Sender<CommandResult>,
    ) {
        let parsed = command::parse(&name, payload, retained);
        let id = match &parsed {
            Ok(cmd) => Some(cmd.id.clone()),
            Err(refused) => refused.id.clone(),
        };
        if let Err(refused) = &parsed {
            tracing::warn!(command = %name, reason = %refused.reason, "command refused");
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = CommandRequest {
            command: parsed,
            reply: reply_tx,
        };
        if !command::answerable(&name) {
            tracing::warn!(command = %command::shown_name(&name), "command name unusable in a result topic; audited, not answered");
        }
        // Hand over synchronously so commands reach the stations in the order
        // they arrived; only the wait for the reply runs on its own.
        match self.up.commands.try_send(request.into()) {
            Ok(()) => {
                let results = results_tx.clone();
                tokio::spawn(async move {
                    // The pipeline replies once the audit record is committed.
                    if let Ok(outcome) = reply_rx.await {
                        let _ = results.send((name, id, outcome)).await;
                    }
                });
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(command = %name, "command queue full; command refused unaudited");
                let _ =
                    results_tx.try_send((name, id, Err("gateway busy: command queue full".into())));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Clean shutdown: say offline (retained), then disconnect.
    async fn goodbye(&mut self, events: &mut mpsc::Receiver<Result<Event, ConnectionError>>) {
        let _ = self.publish(
            self.up.mqtt.topics.status(),
            payload::offline(&self.up.gateway),
            true,
            None,
        );
        let _ = self.client.try_disconnect();
        let wait = async {
            while let Some(Ok(ev)) = events.recv().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
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
