//! The Modbus TCP device task and probe against a real tokio-modbus server
//! ([`SimPlc`]) over TCP on 127.0.0.1. No mocks; events are awaited on the
//! reading channel with bounded timeouts.

mod common;

use common::{DEVICE_WAIT, DeviceRun};
use linegate::tasks::AbortOnDrop;
use std::sync::Arc;
use std::time::Duration;

use linegate::config::{
    BackoffConfig, DataType, ModbusTcpConfig, PollConfig, RegisterConfig, Role, Table, WordOrder,
};
use linegate::devices::health::DeviceHealth;
use linegate::devices::modbus::sim::SimPlc;
use linegate::devices::modbus::{self, ProbeRaw};
use linegate::devices::{DeviceEvent, Reading, Sample};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_modbus::ExceptionCode;

fn poll() -> PollConfig {
    PollConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        reconnect: BackoffConfig {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        max_gap: 8,
        heartbeat: None,
    }
}

fn reg(
    name: &str,
    station: &str,
    table: Table,
    address: u16,
    data_type: DataType,
    word_order: WordOrder,
    role: Role,
) -> RegisterConfig {
    RegisterConfig {
        name: name.into(),
        station: station.into(),
        table,
        address,
        data_type,
        word_order,
        scale: 1.0,
        offset: 0.0,
        role,
        max_rate: 1000.0,
    }
}

fn holding(name: &str, address: u16, data_type: DataType, order: WordOrder) -> RegisterConfig {
    reg(
        name,
        "st1",
        Table::Holding,
        address,
        data_type,
        order,
        Role::State,
    )
}

fn device(port: u16, registers: Vec<RegisterConfig>) -> ModbusTcpConfig {
    ModbusTcpConfig {
        host: "127.0.0.1".into(),
        port,
        unit_id: 1,
        poll: poll(),
        registers,
    }
}

type Dev = DeviceRun;

fn spawn(cfg: ModbusTcpConfig) -> Dev {
    DeviceRun::spawn(|tx, health| {
        modbus::run::<Reading>(Arc::from("plc1"), Arc::from("st1"), cfg, tx, health)
    })
}

fn is_online(r: &Reading) -> bool {
    matches!(r.event, DeviceEvent::Online)
}

fn is_offline(r: &Reading) -> bool {
    matches!(r.event, DeviceEvent::Offline(_))
}

fn value_of(samples: &[Sample], name: &str) -> Option<(u64, f64)> {
    samples
        .iter()
        .find(|s| &*s.name == name)
        .map(|s| (s.raw, s.value))
}

#[tokio::test]
async fn counter_and_state_are_sampled_per_station_and_follow_changes() {
    let plc = SimPlc::start().await.expect("sim plc");
    plc.set_holding_u32(0, 123_456, WordOrder::Cdab);
    plc.set_holding(2, &[3]);
    let mut dev = spawn(device(
        plc.port(),
        vec![
            reg(
                "good",
                "st1",
                Table::Holding,
                0,
                DataType::U32,
                WordOrder::Cdab,
                Role::Counter,
            ),
            reg(
                "state",
                "st2",
                Table::Holding,
                2,
                DataType::U16,
                WordOrder::Abcd,
                Role::State,
            ),
        ],
    ));

    let online = dev.next().await;
    assert!(is_online(&online), "{online:?}");
    assert_eq!((&*online.device, &*online.station), ("plc1", "st1"));

    // One poll: one reading per station, in station order of the map.
    let first = dev.next().await;
    let second = dev.next().await;
    assert_eq!(&*first.station, "st1");
    assert_eq!(&*second.station, "st2");
    assert_eq!(first.ts_ms, second.ts_ms, "one capture time per poll");
    assert_eq!(
        first.event,
        DeviceEvent::Sample(vec![Sample {
            name: Arc::from("good"),
            role: Role::Counter,
            raw: 123_456,
            bits: 32,
            value: 123_456.0,
        }])
    );
    assert_eq!(
        second.event,
        DeviceEvent::Sample(vec![Sample {
            name: Arc::from("state"),
            role: Role::State,
            raw: 3,
            bits: 16,
            value: 3.0,
        }])
    );

    // The words cross the 16-bit boundary: a CDAB mistake would show.
    plc.set_holding_u32(0, 0x0001_FFFF + 1, WordOrder::Cdab);
    plc.set_holding(2, &[1]);
    let (r, _) = dev
        .until("changed counter", |r| match &r.event {
            DeviceEvent::Sample(s) => value_of(s, "good") == Some((0x2_0000, 131_072.0)),
            _ => false,
        })
        .await;
    assert_eq!(&*r.station, "st1");
    let st2 = dev.samples("st2").await;
    assert_eq!(value_of(&st2, "state"), Some((1, 1.0)));
    let h = dev.health.snapshot();
    assert!(
        h.online && h.connects == 1 && h.frames >= 2 && h.rejects == 0,
        "{h:?}"
    );
}

#[tokio::test]
async fn every_word_order_decodes_the_same_value_end_to_end() {
    let plc = SimPlc::start().await.expect("sim plc");
    let orders = [
        ("abcd", WordOrder::Abcd),
        ("cdab", WordOrder::Cdab),
        ("badc", WordOrder::Badc),
        ("dcba", WordOrder::Dcba),
    ];
    let mut regs = Vec::new();
    for (i, (name, order)) in orders.iter().enumerate() {
        let i = i as u16;
        plc.set_holding_f32(i * 2, 123.45, *order);
        plc.set_holding_u32(20 + i * 2, 0x1234_5678, *order);
        plc.set_holding_u64(40 + i * 4, 0x0102_0304_0506_0708, *order);
        regs.push(holding(&format!("f_{name}"), i * 2, DataType::F32, *order));
        regs.push(holding(
            &format!("u_{name}"),
            20 + i * 2,
            DataType::U32,
            *order,
        ));
        regs.push(holding(
            &format!("q_{name}"),
            40 + i * 4,
            DataType::U64,
            *order,
        ));
    }
    // The literal table of domain-standards §4.5 reaches the wire as written.
    assert_eq!(
        plc.holding(0, 8),
        [
            0x42F6, 0xE666, 0xE666, 0x42F6, 0xF642, 0x66E6, 0x66E6, 0xF642
        ]
    );
    let mut dev = spawn(device(plc.port(), regs));
    let samples = dev.samples("st1").await;
    assert_eq!(samples.len(), 12);
    for (name, _) in orders {
        assert_eq!(
            value_of(&samples, &format!("f_{name}")),
            Some((0x42F6_E666, f64::from(123.45f32))),
            "{name}"
        );
        assert_eq!(
            value_of(&samples, &format!("u_{name}")),
            Some((0x1234_5678, f64::from(0x1234_5678u32))),
            "{name}"
        );
        assert_eq!(
            value_of(&samples, &format!("q_{name}")).map(|v| v.0),
            Some(0x0102_0304_0506_0708),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_exception_skips_its_block_only_and_is_counted() {
    let plc = SimPlc::start().await.expect("sim plc");
    plc.set_holding(0, &[7]);
    plc.set_holding(100, &[9]);
    plc.set_coil(3, true);
    // max_gap 8: holding 0 and holding 100 are two requests.
    plc.fail(Table::Holding, 100..101, ExceptionCode::IllegalDataAddress);
    let mut dev = spawn(device(
        plc.port(),
        vec![
            holding("ok", 0, DataType::U16, WordOrder::Abcd),
            holding("unmapped", 100, DataType::U16, WordOrder::Abcd),
            reg(
                "door",
                "st1",
                Table::Coil,
                3,
                DataType::Bool,
                WordOrder::Abcd,
                Role::State,
            ),
        ],
    ));
    let (online, _) = dev.until("online", is_online).await;
    assert_eq!(&*online.station, "st1");
    // Several polls: every one carries the good blocks, none the failed one.
    for _ in 0..3 {
        let s = dev.samples("st1").await;
        let names: Vec<&str> = s.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["ok", "door"]);
        assert_eq!(value_of(&s, "ok"), Some((7, 7.0)));
        assert_eq!(value_of(&s, "door"), Some((1, 1.0)));
    }
    let h = dev.health.snapshot();
    assert!(h.online, "{h:?}");
    assert!(h.rejects >= 3, "{h:?}");
    assert_eq!(
        h.connects, 1,
        "an exception is not a lost connection: {h:?}"
    );
    let err = h.last_error.unwrap_or_default();
    assert!(
        err.contains("Illegal data address") && err.contains("holding 100..101"),
        "{err}"
    );
    let failing: Vec<&str> = h.failing_blocks.keys().map(String::as_str).collect();
    assert_eq!(failing, ["holding 100..101 (unit 1)"]);
    assert!(!dev.drain().iter().any(is_offline));

    // The PLC fixes its map: the value appears, nothing reconnects.
    plc.heal();
    let (r, skipped) = dev
        .until("healed block", |r| match &r.event {
            DeviceEvent::Sample(s) => value_of(s, "unmapped").is_some(),
            _ => false,
        })
        .await;
    assert!(!skipped.iter().any(|r| is_offline(r) || is_online(r)));
    let DeviceEvent::Sample(s) = r.event else {
        unreachable!()
    };
    assert_eq!(value_of(&s, "unmapped"), Some((9, 9.0)));
    let h = dev.health.snapshot();
    assert!(h.connects == 1 && h.failing_blocks.is_empty(), "{h:?}");
}

#[tokio::test]
async fn a_malformed_reply_is_rejected_not_decoded_and_the_device_is_offline_until_it_heals() {
    let plc = SimPlc::start().await.expect("sim plc");
    plc.set_holding_u32(0, 42, WordOrder::Abcd);
    plc.set_input(50, &[5]);
    plc.short_replies(Table::Holding, 0..2);
    plc.short_replies(Table::Coil, 0..1);
    let mut dev = spawn(device(
        plc.port(),
        vec![
            holding("short", 0, DataType::U32, WordOrder::Abcd),
            reg(
                "coil",
                "st1",
                Table::Coil,
                0,
                DataType::Bool,
                WordOrder::Abcd,
                Role::State,
            ),
            reg(
                "fine",
                "st1",
                Table::Input,
                50,
                DataType::U16,
                WordOrder::Abcd,
                Role::State,
            ),
        ],
    ));
    // Blocks answered with the wrong shape: the device is not online (its
    // polls are not whole), one Offline names the first bad block, and the
    // block that reads keeps reporting on the same connection.
    let (offline, skipped) = dev.until("offline", is_offline).await;
    let DeviceEvent::Offline(msg) = &offline.event else {
        unreachable!()
    };
    assert!(
        msg.contains("malformed reply") && msg.contains("coil 0..1"),
        "{msg}"
    );
    assert!(!skipped.iter().any(is_online), "{skipped:#?}");
    for _ in 0..3 {
        let (r, skipped) = dev
            .until("sample", |r| matches!(r.event, DeviceEvent::Sample(_)))
            .await;
        assert!(skipped.is_empty(), "one Offline per outage: {skipped:#?}");
        let DeviceEvent::Sample(s) = r.event else {
            unreachable!()
        };
        let names: Vec<&str> = s.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["fine"]);
    }
    let h = dev.health.snapshot();
    assert!(!h.online && h.rejects >= 6, "{h:?}");
    assert!(h.last_error.unwrap_or_default().contains("malformed reply"));
    let failing: Vec<&str> = h.failing_blocks.keys().map(String::as_str).collect();
    assert_eq!(failing, ["coil 0..1 (unit 1)", "holding 0..2 (unit 1)"]);
    assert_eq!(
        plc.connections(),
        1,
        "a malformed reply keeps the connection"
    );

    // The PLC answers properly again: one Online, nothing fails any more.
    plc.heal();
    let (_, skipped) = dev.until("online", is_online).await;
    assert!(!skipped.iter().any(is_offline), "{skipped:#?}");
    let s = dev.samples("st1").await;
    assert_eq!(value_of(&s, "short"), Some((42, 42.0)));
    let h = dev.health.snapshot();
    assert!(
        h.online && h.connects == 1 && h.failing_blocks.is_empty(),
        "{h:?}"
    );
    assert_eq!(plc.connections(), 1);
}

#[tokio::test]
async fn a_stopped_plc_is_one_outage_and_polling_resumes_after_restart() {
    let mut plc = SimPlc::start().await.expect("sim plc");
    plc.set_holding(0, &[1]);
    let mut dev = spawn(device(
        plc.port(),
        vec![holding("v", 0, DataType::U16, WordOrder::Abcd)],
    ));
    dev.until("online", is_online).await;
    dev.samples("st1").await;

    plc.stop().await;
    let (offline, _) = dev.until("offline", is_offline).await;
    assert_eq!(&*offline.station, "st1");
    let DeviceEvent::Offline(msg) = &offline.event else {
        unreachable!()
    };
    println!("offline after stop: {msg}");
    assert!(!dev.health.snapshot().online);

    // Keep it down for several reconnect attempts (backoff 20..200 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    plc.set_holding(0, &[2]);
    plc.restart().await.expect("restart on the same port");

    let (_, between) = dev.until("online again", is_online).await;
    assert!(
        between.is_empty(),
        "nothing may be reported while down (no flapping): {between:#?}"
    );
    let s = dev.samples("st1").await;
    assert_eq!(value_of(&s, "v"), Some((2, 2.0)));
    let h = dev.health.snapshot();
    assert!(h.online && h.connects == 2, "{h:?}");
    println!("last error while down: {:?}", h.last_error);
}

#[tokio::test]
async fn a_silent_plc_times_out_once_and_is_retried_with_backoff() {
    // Accepts TCP, reads requests, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let _silent = AbortOnDrop(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted_tx.send(());
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    }));
    let mut dev = spawn(device(
        port,
        vec![holding("v", 0, DataType::U16, WordOrder::Abcd)],
    ));

    let first = dev.next().await;
    let DeviceEvent::Offline(msg) = &first.event else {
        panic!("expected Offline, got {first:?}")
    };
    assert!(msg.contains("no reply within 200ms"), "{msg}");
    // The task keeps reconnecting: wait for three more connections.
    for i in 0..3 {
        tokio::time::timeout(DEVICE_WAIT, accepted.recv())
            .await
            .unwrap_or_else(|_| panic!("no reconnect #{i} within {DEVICE_WAIT:?}"))
            .expect("listener alive");
    }
    let later = dev.drain();
    assert!(
        later.is_empty(),
        "one Offline per outage, no Online without a reply: {later:#?}"
    );
    let h = dev.health.snapshot();
    assert!(!h.online && h.connects == 0, "{h:?}");
}

#[tokio::test]
async fn the_first_connect_failing_is_one_offline() {
    // A PLC that is off from the start (its port reserved, refusing).
    let mut plc = SimPlc::start().await.expect("sim plc");
    plc.stop().await;
    let mut dev = spawn(device(
        plc.port(),
        vec![holding("v", 0, DataType::U16, WordOrder::Abcd)],
    ));
    let first = dev.next().await;
    let DeviceEvent::Offline(msg) = &first.event else {
        panic!("expected Offline, got {first:?}")
    };
    println!("offline on refused connect: {msg}");
    assert!(msg.contains("connect to 127.0.0.1:"), "{msg}");
    // It keeps trying: switch the PLC on and it comes online by itself.
    plc.restart().await.expect("restart on the same port");
    plc.set_holding(0, &[5]);
    let (_, between) = dev.until("online", is_online).await;
    assert!(between.is_empty(), "{between:#?}");
    assert_eq!(value_of(&dev.samples("st1").await, "v"), Some((5, 5.0)));
}

#[tokio::test]
async fn the_task_returns_when_the_channel_closes() {
    let plc = SimPlc::start().await.expect("sim plc");
    let (tx, mut rx) = mpsc::channel::<Reading>(4);
    let task = tokio::spawn(modbus::run::<Reading>(
        Arc::from("plc1"),
        Arc::from("st1"),
        device(
            plc.port(),
            vec![holding("v", 0, DataType::U16, WordOrder::Abcd)],
        ),
        tx,
        DeviceHealth::default(),
    ));
    let first = tokio::time::timeout(DEVICE_WAIT, rx.recv())
        .await
        .expect("reading");
    assert!(first.is_some());
    drop(rx);
    tokio::time::timeout(DEVICE_WAIT, task)
        .await
        .expect("task returns after the channel closes")
        .expect("no panic");
}

#[tokio::test]
async fn probe_shows_raw_words_beside_decoded_values() {
    let plc = SimPlc::start().await.expect("sim plc");
    plc.set_holding_u32(0, 0x1234_5678, WordOrder::Cdab);
    plc.set_holding(2, &[0xFFFE]);
    plc.set_input(10, &[0x42F6, 0xE666]);
    plc.set_coil(5, true);
    plc.fail(Table::Holding, 200..201, ExceptionCode::IllegalDataAddress);
    let mut temp = reg(
        "temp",
        "oven",
        Table::Input,
        10,
        DataType::F32,
        WordOrder::Abcd,
        Role::Value,
    );
    temp.scale = 2.0;
    let cfg = device(
        plc.port(),
        vec![
            reg(
                "good",
                "st1",
                Table::Holding,
                0,
                DataType::U32,
                WordOrder::Cdab,
                Role::Counter,
            ),
            holding("delta", 2, DataType::I16, WordOrder::Abcd),
            temp,
            reg(
                "door",
                "st1",
                Table::Coil,
                5,
                DataType::Bool,
                WordOrder::Abcd,
                Role::State,
            ),
            holding("missing", 200, DataType::U16, WordOrder::Abcd),
        ],
    );
    let rows = tokio::time::timeout(DEVICE_WAIT, modbus::probe(&cfg))
        .await
        .expect("probe finishes")
        .expect("probe connects");
    let brief: Vec<(&str, &str, &ProbeRaw, Result<f64, String>)> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.modicon.as_str(), &r.raw, r.value.clone()))
        .collect();
    assert_eq!(
        brief,
        vec![
            (
                "good",
                "40001",
                &ProbeRaw::Words(vec![0x5678, 0x1234]),
                Ok(305_419_896.0)
            ),
            ("delta", "40003", &ProbeRaw::Words(vec![0xFFFE]), Ok(-2.0)),
            (
                "temp",
                "30011",
                &ProbeRaw::Words(vec![0x42F6, 0xE666]),
                Ok(f64::from(123.45f32) * 2.0)
            ),
            ("door", "00006", &ProbeRaw::Bit(true), Ok(1.0)),
            (
                "missing",
                "40201",
                &ProbeRaw::Missing,
                Err("exception: Illegal data address (0x02)".to_owned())
            ),
        ]
    );
    let table = modbus::render_probe(&rows);
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"));
    assert!(
        lines[1].contains("0x5678 0x1234") && lines[1].ends_with("305419896"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("0xFFFE") && lines[2].ends_with("-2"),
        "{}",
        lines[2]
    );
    assert!(
        lines[5].contains("40201") && lines[5].contains("error: exception: Illegal data address")
    );

    // A PLC that is not there is an error, within the timeout.
    let mut plc = plc;
    plc.stop().await;
    let err = tokio::time::timeout(DEVICE_WAIT, modbus::probe(&cfg))
        .await
        .expect("probe gives up")
        .expect_err("nobody listens");
    println!("probe error: {err}");
}

/// A PLC behind a TCP↔serial converter that cuts long replies: a read of
/// holding registers below `cut_from` is answered in full (every register
/// holds 7); a read from `cut_from` on gets a reply whose byte count
/// promises every register asked for but which carries only two (the MBAP
/// length matches what is sent), so no Modbus client can decode it.
/// Each accepted connection is reported with its time. Clearing the
/// returned flag makes it answer every read in full (the converter fixed).
fn truncating_plc(
    cut_from: u16,
) -> (
    u16,
    mpsc::UnboundedReceiver<tokio::time::Instant>,
    Arc<std::sync::atomic::AtomicBool>,
    AbortOnDrop<()>,
) {
    use tokio::io::AsyncWriteExt;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let port = std_listener.local_addr().expect("addr").port();
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let cutting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cut = Arc::clone(&cutting);
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted_tx.send(tokio::time::Instant::now());
            let cut = Arc::clone(&cut);
            tokio::spawn(async move {
                // MBAP (7) + function + start + count: every read request.
                let mut req = [0u8; 12];
                while stream.read_exact(&mut req).await.is_ok() {
                    let start = u16::from_be_bytes([req[8], req[9]]);
                    let count = u16::from_be_bytes([req[10], req[11]]);
                    let cuts = cut.load(std::sync::atomic::Ordering::Relaxed);
                    let sent = if cuts && start >= cut_from { 2 } else { count };
                    let mut pdu = vec![req[7], (count * 2) as u8];
                    for _ in 0..sent {
                        pdu.extend_from_slice(&7u16.to_be_bytes());
                    }
                    let mut reply = vec![req[0], req[1], 0, 0];
                    reply.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
                    reply.push(req[6]);
                    reply.extend_from_slice(&pdu);
                    if stream.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, accepted, cutting, AbortOnDrop(server))
}

#[tokio::test]
async fn a_block_with_undecodable_replies_is_one_outage_with_growing_backoff() {
    let (port, mut accepted, cutting, _plc) = truncating_plc(100);
    let mut cfg = device(
        port,
        vec![
            reg(
                "good",
                "st1",
                Table::Holding,
                0,
                DataType::U16,
                WordOrder::Abcd,
                Role::Counter,
            ),
            holding("long", 100, DataType::U64, WordOrder::Abcd),
        ],
    );
    cfg.poll.interval = Duration::from_millis(20);
    cfg.poll.reconnect = BackoffConfig {
        min: Duration::from_millis(20),
        max: Duration::from_secs(1),
    };
    let mut dev = spawn(cfg);

    // A bounded run: every reconnect without backoff would take at most
    // 2 × 20 ms plus one poll; with it, the waits grow towards 1 s.
    let window = Duration::from_secs(4);
    let readings = dev.collect_for(window).await;
    let mut times = Vec::new();
    while let Ok(t) = accepted.try_recv() {
        times.push(t);
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("{} connections in {window:?}, gaps {gaps:?}", times.len());

    let alarms: Vec<&DeviceEvent> = readings
        .iter()
        .map(|r| &r.event)
        .filter(|e| !matches!(e, DeviceEvent::Sample(_)))
        .collect();
    assert!(
        matches!(alarms.as_slice(), [DeviceEvent::Offline(_)]),
        "one Offline for the whole outage, no Online: {alarms:#?}"
    );
    let DeviceEvent::Offline(msg) = alarms[0] else {
        unreachable!()
    };
    assert!(msg.contains("holding 100..104"), "names the block: {msg}");

    assert!(times.len() >= 3, "it keeps reconnecting: {gaps:?}");
    assert!(
        times.len() <= 25,
        "the reconnect backoff must grow: {} connections in {window:?}",
        times.len()
    );
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        longest >= Duration::from_millis(200),
        "the reconnect backoff must grow: {gaps:?}"
    );

    // The block that reads keeps reporting: the good counter is not lost.
    let good = readings
        .iter()
        .filter(|r| match &r.event {
            DeviceEvent::Sample(s) => value_of(s, "good") == Some((7, 7.0)),
            _ => false,
        })
        .count();
    assert!(good >= 1, "{readings:#?}");

    let h = dev.health.snapshot();
    assert!(!h.online && h.connects == 0, "{h:?}");
    let why = h
        .failing_blocks
        .get("holding 100..104 (unit 1)")
        .unwrap_or_else(|| panic!("the status names the failing block: {h:?}"));
    assert!(why.contains("request failed"), "{why}");
    assert!(
        !h.failing_blocks.contains_key("holding 0..1 (unit 1)"),
        "{h:?}"
    );

    // The converter is fixed: one Online at the next connection's first
    // whole poll, the long block's values arrive, nothing fails any more.
    cutting.store(false, std::sync::atomic::Ordering::Relaxed);
    let (_, skipped) = dev.until("online", is_online).await;
    assert!(!skipped.iter().any(is_offline), "{skipped:#?}");
    let s = dev.samples("st1").await;
    assert_eq!(
        value_of(&s, "long"),
        Some((0x0007_0007_0007_0007, 1_970_354_902_204_423.0))
    );
    let h = dev.health.snapshot();
    assert!(
        h.online && h.connects == 1 && h.failing_blocks.is_empty(),
        "{h:?}"
    );
}
