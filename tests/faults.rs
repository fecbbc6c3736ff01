//! Connection faults between the gateway and the broker, each ending with the
//! ledger check (accepted against delivered) and its `ledger-summary` line.
//!
//! - a broker frozen with SIGSTOP (a half-open connection);
//! - the link black-holed by the [`Proxy`] for longer than 1.5× keep-alive
//!   while scans keep arriving: the gateway notices by its keep-alive;
//! - the connection reset after the broker got a PUBLISH but before the
//!   gateway got its PUBACK: the record arrives twice under one `seq`;
//! - the broker replaced by a fresh one, without the session (no
//!   persistence; `session_present = 0`, as on every connection: the gateway
//!   asks for a clean session), while a window of 100 PUBLISHes is in flight:
//!   every one of them is sent again from the store;
//! - a seeded random series of cuts, black-holes, resets before PUBACK and
//!   refusals while scans stream in (the seed is printed;
//!   `LINEGATE_SEED=<seed>` replays the schedule, though not the exact
//!   interleaving; `LINEGATE_SOAK=1` runs 1000 faults instead of 30);
//! - the proxy's MQTT framing itself.
//!
//! Broker SIGKILL and gateway SIGKILL mid-burst are in `pipeline.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ledger::{self, Faults, Input, Report, scan_all, settle_and_check, stream_scans};
use common::proxy::{ACK_WAIT, Framer, Malformed};
use common::*;
use linegate::devices::pty::VirtualSerial;

const FILTER: &str = "plant1/line3/#";
const SCAN_TOPIC: &str = "plant1/line3/st10/scan";
/// Record topics of station `st10` (not status or command results).
const RECORD_PREFIX: &str = "plant1/line3/st10/";
/// The tests' `mqtt.keepalive` (the shortest the config allows).
const KEEPALIVE: Duration = Duration::from_secs(5);
/// What the uplink logs when a connection ends, and when one is up.
const LOST: &str = "MQTT connection lost";
const CONNECTED: &str = "MQTT connected";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_frozen_with_sigstop_then_resumed_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    // The MES keeps its connection through the freeze (long keep-alive).
    let rec = Recorder::start_with_keep_alive(broker.port, FILTER, Duration::from_secs(120)).await;
    let pty = VirtualSerial::open().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &config_toml(&dir.path().join("data"), broker.port, pty.slave_path()),
    );
    rec.wait_for("scanner online", |m| {
        m.iter()
            .any(|m| m.json()["data"]["event"] == "device-online")
    })
    .await;
    let mut inputs = Vec::new();
    let before: Vec<String> = (0..200).map(|i| format!("F-{i:04}")).collect();
    scan_all(&pty, &before, &mut inputs).await;

    // Frozen: the TCP connection stays open, nothing answers (half-open).
    let pid = broker.pid().expect("broker runs") as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let during: Vec<String> = (0..300).map(|i| format!("G-{i:04}")).collect();
    scan_all(&pty, &during, &mut inputs).await;
    // The gateway notices the dead link by its keep-alive (5 s here).
    let noticed = gw.wait_log(LOST, WAIT).await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(noticed, "the gateway never noticed the frozen broker");

    let after: Vec<String> = (0..100).map(|i| format!("H-{i:04}")).collect();
    scan_all(&pty, &after, &mut inputs).await;
    rec.wait_for("the last scan", |m| {
        m.iter().any(|m| m.json()["data"]["code"] == "H-0099")
    })
    .await;
    let report = settle_and_check(&gw, &rec, &inputs).await;
    eprintln!("ledger after a frozen broker: {report}");
    report.summary(
        "broker-frozen-sigstop",
        Faults {
            connection_faults: 1,
            ..Default::default()
        },
    );
    report.assert_nothing_lost();
    report.assert_every_input_delivered();
    assert_eq!(
        report.accepted as usize,
        inputs.len() + 1,
        "every scan plus the online alarm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_link_is_noticed_by_keep_alive_and_loses_nothing() {
    let rig = Rig::start().await;
    let scans = Scans::start(&rig.pty);
    rig.wait_scans(20).await;

    let (lost, connected) = (rig.gw.log_count(LOST), rig.gw.log_count(CONNECTED));
    let start = Instant::now();
    rig.proxy.black_hole(true);
    // rumqttc pings every keep-alive and gives up at the next one without a
    // PINGRESP: within 2× keep-alive (the documented "within a minute" for
    // the longest, 30 s). Slack for a loaded machine.
    let noticed = rig
        .gw
        .wait_log_count(LOST, lost + 1, KEEPALIVE * 2 + Duration::from_secs(3))
        .await;
    let noticed_after = start.elapsed();
    // Hold it past 1.5× keep-alive in any case.
    tokio::time::sleep((KEEPALIVE * 3 / 2).saturating_sub(start.elapsed())).await;
    rig.proxy.black_hole(false);
    assert!(
        noticed,
        "the gateway did not notice a black-holed link within {noticed_after:?}"
    );
    eprintln!(
        "black-holed link noticed after {:.1} s (keep-alive {} s), held {:.1} s",
        noticed_after.as_secs_f64(),
        KEEPALIVE.as_secs(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        rig.gw.wait_log_count(CONNECTED, connected + 1, WAIT).await,
        "no reconnect after the black-hole"
    );

    let inputs = scans.stop().await;
    rig.finish(inputs, "link-black-holed", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_between_publish_and_puback_duplicates_and_loses_nothing() {
    const RESETS: u64 = 3;
    let rig = Rig::start().await;
    let scans = Scans::start(&rig.pty);
    rig.wait_scans(20).await;

    // Each reset fires on the next record published, which after the first
    // is often the replay of the record reset before.
    for i in 1..=RESETS {
        rig.proxy.arm_reset(RECORD_PREFIX);
        assert!(
            rig.proxy.wait_until(WAIT, |p| p.resets() >= i).await,
            "reset {i} never fired"
        );
    }
    assert!(
        rig.gw.wait_log_count(LOST, RESETS as usize, WAIT).await,
        "the gateway did not log every reset as a lost connection"
    );

    let inputs = scans.stop().await;
    let report = rig.finish(inputs, "reset-before-puback", RESETS).await;
    // The broker had each reset's record; the gateway sent it again.
    assert!(report.duplicates > 0, "no replay seen: {report}");
    assert_eq!(report.conflicts, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_broker_without_the_session_gets_every_in_flight_record_again() {
    const WINDOW: u16 = 100;
    let mut rig = Rig::start_with(GatewayConfig {
        max_inflight: Some(WINDOW),
        ..Default::default()
    })
    .await;
    let scans = Scans::start(&rig.pty);
    rig.wait_scans(20).await;

    // Frozen, the broker takes PUBLISHes into its socket buffer and acks
    // none: the gateway's whole window goes out unacknowledged.
    let pid = rig.broker.pid().expect("broker runs") as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let full = rig
        .proxy
        .wait_until(WAIT, |p| p.in_flight() >= u64::from(WINDOW))
        .await;
    let in_flight = rig.proxy.in_flight();
    // Replaced by a fresh broker (no persistence): no session, none of those
    // messages. The MES subscribes again before the gateway gets through.
    rig.proxy.set_accepting(false);
    rig.broker.kill();
    rig.rec.wait_disconnected().await;
    let connected = rig.gw.log_count(CONNECTED);
    rig.broker.restart();
    rig.rec.wait_subscribed().await;
    rig.proxy.set_accepting(true);
    assert!(full, "only {in_flight} PUBLISHes in flight");
    eprintln!("{in_flight} PUBLISHes in flight when the broker was replaced");
    assert!(
        rig.gw.wait_log_count(CONNECTED, connected + 1, WAIT).await,
        "no reconnect to the fresh broker"
    );

    let inputs = scans.stop().await;
    rig.finish(inputs, "broker-replaced-session-lost", 1).await;
}

/// One fault of the random series.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Close every open connection.
    Cut,
    /// Forward nothing, either way, for this long.
    BlackHole(Duration),
    /// Reset the connection after the next PUBLISH reached the broker,
    /// before its PUBACK reaches the gateway.
    ResetBeforePuback,
    /// Refuse new connections for this long, cutting the open ones.
    Refuse(Duration),
}

impl Fault {
    fn draw(rng: &mut fastrand::Rng) -> Fault {
        let kind = rng.u8(0..4);
        let mut between = |lo: Duration, hi: Duration| {
            Duration::from_millis(rng.u64(lo.as_millis() as u64..=hi.as_millis() as u64))
        };
        match kind {
            0 => Fault::Cut,
            1 => Fault::BlackHole(between(KEEPALIVE / 2, KEEPALIVE * 2)),
            2 => Fault::ResetBeforePuback,
            _ => Fault::Refuse(between(Duration::from_millis(200), Duration::from_secs(2))),
        }
    }

    /// Inject it; returns whether it hit anything (a cut with no connection
    /// open, or a reset that never saw a PUBLISH, is no fault).
    async fn inject(self, proxy: &Proxy) -> bool {
        match self {
            Fault::Cut => proxy.cut_all() > 0,
            Fault::BlackHole(d) => {
                let (open, connections) = (proxy.open(), proxy.connections());
                proxy.black_hole(true);
                tokio::time::sleep(d).await;
                proxy.black_hole(false);
                open > 0 || proxy.connections() > connections
            }
            Fault::ResetBeforePuback => {
                let before = proxy.resets();
                proxy.arm_reset("");
                let fired = proxy
                    .wait_until(Duration::from_secs(5), |p| p.resets() > before)
                    .await;
                if !fired && !proxy.disarm_reset() {
                    // Claimed just now: its reset follows within ACK_WAIT.
                    proxy
                        .wait_until(ACK_WAIT * 2, |p| p.resets() > before)
                        .await;
                }
                proxy.resets() > before
            }
            Fault::Refuse(d) => {
                let refused = proxy.refused();
                proxy.set_accepting(false);
                let cut = proxy.cut_all();
                tokio::time::sleep(d).await;
                proxy.set_accepting(true);
                cut > 0 || proxy.refused() > refused
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_connection_faults_while_scanning_lose_nothing() {
    let seed = std::env::var("LINEGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fault loop seed {seed} (replay: LINEGATE_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let faults = ledger::cycles(30, 1000);
    // Bounded in time too: past this, stop injecting. A fault takes about
    // 2 s on average (a black-hole 2.5 to 10 s): 30 fit in about 65 s, and
    // 1000 took 34 min.
    let budget = Duration::from_secs(ledger::cycles(65, 3000));

    let rig = Rig::start().await;
    let scans = Scans::start(&rig.pty);
    rig.wait_scans(20).await;

    let start = Instant::now();
    let mut injected = [0u64; 4];
    let mut drawn = 0;
    while drawn < faults && start.elapsed() < budget {
        drawn += 1;
        // A deliberate schedule: the gap before the next fault.
        tokio::time::sleep(Duration::from_millis(rng.u64(50..=500))).await;
        let fault = Fault::draw(&mut rng);
        let hit = fault.inject(&rig.proxy).await;
        eprintln!(
            "fault {drawn}: {fault:?}{}",
            if hit { "" } else { " (no effect)" }
        );
        if hit {
            injected[match fault {
                Fault::Cut => 0,
                Fault::BlackHole(_) => 1,
                Fault::ResetBeforePuback => 2,
                Fault::Refuse(_) => 3,
            }] += 1;
        }
    }
    let [cuts, black_holes, resets, refusals] = injected;
    eprintln!(
        "{drawn} faults drawn in {:.1} s: {cuts} cuts, {black_holes} black-holes, \
         {resets} resets before PUBACK, {refusals} refusals took effect",
        start.elapsed().as_secs_f64()
    );

    let inputs = scans.stop().await;
    rig.finish(inputs, "random-connection-faults", injected.iter().sum())
        .await;
}

#[test]
fn the_proxy_cuts_mqtt_packets_out_of_any_split_of_the_stream() {
    // A QoS 1 PUBLISH (topic "a/b", packet id 7) with `payload` bytes.
    let publish = |payload: usize| {
        let mut body = vec![0, 3, b'a', b'/', b'b', 0, 7];
        body.resize(body.len() + payload, b'x');
        let mut packet = vec![0x32];
        let mut len = body.len();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            packet.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        packet.extend(body);
        packet
    };
    let puback = vec![0x40, 2, 0, 7];
    let pingreq = vec![0xc0, 0];
    // Remaining lengths of 1, 2 and 3 bytes.
    let packets = [
        publish(10),
        puback.clone(),
        publish(200),
        pingreq,
        publish(20_000),
    ];
    let stream = packets.concat();

    for chunk in [1, 2, 3, 5, 7, 64, 1000, stream.len()] {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            framer.push(piece);
            while let Some(packet) = framer.next().unwrap() {
                out.push(packet);
            }
        }
        let bytes: Vec<&[u8]> = out.iter().map(|p| p.bytes.as_slice()).collect();
        let want: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        assert_eq!(bytes, want, "read in pieces of {chunk}");
        assert_eq!(out[0].publish_qos1(), Some(("a/b", 7)));
        assert_eq!(out[4].publish_qos1(), Some(("a/b", 7)));
        assert_eq!(out[1].puback(), Some(7));
        assert_eq!((out[1].publish_qos1(), out[0].puback()), (None, None));
        assert_eq!(out[3].kind(), 12);
    }

    // A QoS 0 PUBLISH is no QoS 1 PUBLISH.
    let mut framer = Framer::default();
    framer.push(&[0x30, 5, 0, 3, b'a', b'/', b'b']);
    assert_eq!(framer.next().unwrap().unwrap().publish_qos1(), None);
    // A remaining length of more than 4 bytes is not MQTT.
    framer.push(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(framer.next(), Err(Malformed));
}

// ---------------------------------------------------------------- harness

/// Broker, proxy, MES recorder (straight to the broker), scanner pty and a
/// gateway that reaches the broker through the proxy, its scanner online.
struct Rig {
    gw: Gateway,
    rec: Recorder,
    pty: Arc<VirtualSerial>,
    proxy: Proxy,
    broker: Mosquitto,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        Self::start_with(GatewayConfig::default()).await
    }

    async fn start_with(config: GatewayConfig) -> Rig {
        assert_eq!(config.keepalive, "5s", "KEEPALIVE");
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start();
        let proxy = Proxy::start(broker.port).await;
        let rec = Recorder::start(broker.port, FILTER).await;
        let pty = Arc::new(VirtualSerial::open().unwrap());
        let gw = Gateway::start(
            dir.path(),
            &config.toml(&dir.path().join("data"), proxy.port, pty.slave_path()),
        );
        rec.wait_for("scanner online", |m| {
            m.iter()
                .any(|m| m.json()["data"]["event"] == "device-online")
        })
        .await;
        Rig {
            gw,
            rec,
            pty,
            proxy,
            broker,
            _dir: dir,
        }
    }

    /// Wait until `n` scans have arrived.
    async fn wait_scans(&self, n: usize) {
        self.rec
            .wait_for(&format!("{n} scans"), |m| {
                m.iter().filter(|m| m.topic == SCAN_TOPIC).count() >= n
            })
            .await;
    }

    /// The end of every test here: all faults lifted, one last scan through,
    /// then the ledger: nothing lost, every scan delivered, its summary line.
    async fn finish(&self, mut inputs: Vec<Input>, test: &str, faults: u64) -> Report {
        self.proxy.black_hole(false);
        self.proxy.set_accepting(true);
        self.proxy.disarm_reset();
        scan_all(&self.pty, &["END".to_owned()], &mut inputs).await;
        let mut seen = 0;
        self.rec
            .wait_for("the last scan", |m| {
                let hit = m[seen..]
                    .iter()
                    .any(|m| m.topic == SCAN_TOPIC && m.json()["data"]["code"] == "END");
                seen = m.len();
                hit
            })
            .await;
        let report = settle_and_check(&self.gw, &self.rec, &inputs).await;
        eprintln!("ledger after {test}: {report}");
        report.summary(
            test,
            Faults {
                connection_faults: faults,
                ..Default::default()
            },
        );
        report.assert_nothing_lost();
        report.assert_every_input_delivered();
        assert_eq!(
            report.accepted as usize,
            inputs.len() + 1,
            "every scan plus the online alarm"
        );
        report
    }
}

/// The shared scan stream, 100 scans a second, written by a task until
/// stopped: the line keeps producing through every fault.
struct Scans {
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<Vec<Input>>,
}

impl Scans {
    fn start(pty: &Arc<VirtualSerial>) -> Scans {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(stream_scans(pty.clone(), stop.clone(), 5));
        Scans { stop, writer }
    }

    /// Stop and return every scan written.
    async fn stop(self) -> Vec<Input> {
        self.stop.store(true, Ordering::SeqCst);
        self.writer.await.expect("scan stream")
    }
}
