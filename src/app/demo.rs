//! `linegate demo`: the real pipeline with no hardware and no services.
//!
//! Starts an embedded MQTT broker (rumqttd) on free loopback ports (MQTT 5
//! for the gateway, 3.1.1 for the MES side), a
//! simulated serial scanner (a pseudo-terminal), a simulated press PLC (a
//! tokio-modbus server counting good parts and scrap, with a run state), the
//! gateway itself on a generated config, and an MES-side subscriber that
//! prints every message it receives as `topic payload`.
//!
//! The scanner walks through a shift at station st10 ([`shift`]): the MES
//! opens a lot, the operator badges in, scans a work order and two material
//! lots (GS1 DataMatrix), then part labels while the press counts each part.
//! A serial scanned twice and a test label are rejected; the press reaching
//! the lot's count target closes the lot with its totals and opens the next.
//! At a changeover the MES sends the next order with its material list, a lot
//! label is scanned (lot change by label), a material not on the list is
//! rejected; a few more parts, and the operator badges out. The walk-through
//! repeats (the next operator, new serials) until `--scans` or Ctrl-C.
//!
//! Every step waits (bounded) until its record reached the MES side, so the
//! output reads in order and the lot the parts land in never depends on
//! timing.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{self, WordOrder};
use crate::devices::modbus::sim::SimPlc;
use crate::devices::pty::VirtualSerial;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many simulated scans, once all are delivered
    /// (default: run until Ctrl-C; one shift walk-through is 20 scans).
    #[arg(long)]
    pub scans: Option<u64>,
    /// Time between simulated scans.
    #[arg(long, default_value = "700ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Keep the store here instead of in a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

const GS: char = '\u{1d}';
const STATION: &str = "st10";
/// Good parts per lot: the press reaching it closes the lot.
const TARGET: u64 = 6;
/// GTIN on the part labels (the product made at st10).
const PART_GTIN: &str = "04012345000016";
/// Materials: sheet-metal coils and bushings, each with its supplier's GTIN.
const COIL_GTIN: &str = "04150000021126";
const BUSHING_GTIN: &str = "09506000134352";

/// One step of the simulated shift.
#[derive(Debug)]
enum Step {
    /// A line for the reader, printed as `# …`.
    Say(String),
    /// The operator scans a code.
    Scan(String),
    /// The press makes this many good and scrap parts.
    Press { good: u32, scrap: u16 },
    /// The press runs (`true`) or stops for a changeover.
    Run(bool),
    /// The MES sends command `name` with this JSON body.
    Mes {
        name: &'static str,
        id: String,
        body: String,
    },
}

/// A GS1 DataMatrix part label (AIM `]d2`): GTIN and serial, which is last
/// so it needs no GS after it.
fn part_label(serial: &str) -> String {
    format!("]d201{PART_GTIN}21{serial}")
}

/// The `n`th walk-through (from 0) of a shift at st10.
fn shift(n: u64) -> Vec<Step> {
    let operator = ["0042", "0117", "0093"][(n % 3) as usize];
    let order = (104_233 + 2 * n) % 1_000_000;
    let next_order = (order + 1) % 1_000_000;
    let serial = |i: u64| format!("SN{:06}", n * 10 + i);
    let say = |s: &str| Step::Say(s.to_owned());
    let scan = Step::Scan;
    let stroke = || Step::Press { good: 1, scrap: 0 };
    let part = |i: u64| vec![scan(part_label(&serial(i))), stroke()];
    // Coil: the lot (AI 10) is variable-length and not last, so GS ends it.
    let coil = |lot: &str| format!("]d201{COIL_GTIN}10{lot}{GS}17270630");
    let bushings = format!("]d201{BUSHING_GTIN}1726123110B7781");
    let mut steps = vec![
        say(&format!(
            "shift walk-through {}: the MES opens a lot at {STATION}",
            n + 1
        )),
        Step::Mes {
            name: "open-lot",
            id: format!("mes-open-{}", n + 1),
            body: format!(r#"{{"id":"mes-open-{}","station":"{STATION}"}}"#, n + 1),
        },
        say(&format!(
            "operator {operator} badges in, scans work order WO{order:06} and two material lots"
        )),
        scan(format!("OP{operator}")),
        scan(format!("WO{order:06}")),
        scan(coil("C24-1187")),
        scan(bushings.clone()),
        say("part labels; the press counts each part"),
    ];
    for i in 1..=3 {
        steps.extend(part(i));
    }
    steps.push(say(
        "a serial scanned twice and a test label: both rejected; a scrap part",
    ));
    steps.push(scan(part_label(&serial(2))));
    steps.extend(part(4));
    steps.push(Step::Press { good: 0, scrap: 1 });
    steps.push(scan("TEST-0001".to_owned()));
    steps.extend(part(5));
    steps.push(say(&format!(
        "part 6 makes the lot target of {TARGET} good: the lot closes with its totals, the next opens"
    )));
    for i in 6..=8 {
        steps.extend(part(i));
    }
    let id = format!("mes-order-{}", n + 1);
    steps.extend([
        say(&format!(
            "changeover: the MES sends order WO{next_order:06} (coil only), a lot label is scanned"
        )),
        Step::Run(false),
        Step::Mes {
            name: "set-order",
            body: format!(
                r#"{{"id":"{id}","station":"{STATION}","order":"WO{next_order:06}","materials":["{COIL_GTIN}"]}}"#
            ),
            id,
        },
        scan(format!("LOT:K26-{:04}", (412 + n) % 10_000)),
        say("bushings are not on the new order's list: rejected; a new coil is"),
        scan(bushings),
        scan(coil("C24-1188")),
        Step::Run(true),
    ]);
    for i in 9..=10 {
        steps.extend(part(i));
    }
    steps.push(say(&format!("operator {operator} badges out")));
    steps.push(scan(format!("OP{operator}")));
    steps
}

fn demo_config(port: u16, pty: &Path, plc_port: u16, data_dir: &Path) -> String {
    format!(
        r#"# Generated by `linegate demo`.
[gateway]
id = "demo-gw"
site = "demo"
line = "line1"
data_dir = "{data_dir}"
time_zone = "Europe/Berlin"

[[shift]]
name = "A"
start = "06:00"

[[shift]]
name = "B"
start = "14:00"

[[shift]]
name = "C"
start = "22:00"

[store]
commit_interval = "10ms"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = "15s"
reconnect_min = "100ms"
reconnect_max = "2s"
status_interval = "10s"

[[station]]
id = "{STATION}"

  # First match wins: the test-label rule comes before anything it could
  # be mistaken for.
  [[station.scan_rule]]
  name = "test-label"
  pattern = '^TEST'
  action = "reject"
  reason = "test label, not a production part"

  [[station.scan_rule]]
  name = "badge"
  pattern = '^OP(?P<value>[0-9]{{4}})$'
  action = "set-operator"

  [[station.scan_rule]]
  name = "work-order"
  pattern = '^WO[0-9]{{6}}$'
  action = "set-order"

  [[station.scan_rule]]
  name = "lot-label"
  pattern = '^LOT:(?P<value>[A-Z0-9-]{{1,20}})$'
  action = "set-lot"

  [[station.scan_rule]]
  name = "part"
  symbology = ["]d2"]
  gs1 = ["01", "21"]
  value_ai = "21"
  action = "product"

  [[station.scan_rule]]
  name = "material"
  symbology = ["]d2"]
  gs1 = ["01", "10"]
  action = "consume-material"

  [station.lot]
  template = "{{line}}-{{yy}}{{jjj}}{{shift}}-{{seq:3}}"
  reset = "daily"
  target = {TARGET}
  good = "good_count"
  scrap = "scrap_count"

[[device]]
id = "scanner-1"
type = "serial-scanner"
station = "{STATION}"
path = "{pty}"
suffix = "CRLF"
reconnect_min = "100ms"
reconnect_max = "2s"

[[device]]
id = "press-plc"
type = "modbus-tcp"
station = "{STATION}"
host = "127.0.0.1"
port = {plc_port}
poll_interval = "200ms"
timeout = "500ms"

  [[device.register]]
  name = "good_count"
  address = "40001"
  type = "u32"
  word_order = "CDAB"
  role = "counter"
  max_rate = 50

  [[device.register]]
  name = "scrap_count"
  address = "40003"
  type = "u16"
  role = "counter"
  max_rate = 10

  [[device.register]]
  name = "run_state"
  address = "40004"
  type = "u16"
  role = "state"
"#,
        data_dir = data_dir.display(),
        pty = pty.display(),
    )
}

/// The simulated press: good parts (u32, CDAB) at 40001, scrap at 40003,
/// run state at 40004. Dropping it stops the PLC.
struct Press {
    plc: SimPlc,
    good: u32,
    scrap: u16,
}

impl Press {
    fn new(plc: SimPlc) -> Self {
        let press = Press {
            plc,
            good: 1_000,
            scrap: 20,
        };
        press.plc.set_holding_u32(0, press.good, WordOrder::Cdab);
        press.plc.set_holding(2, &[press.scrap]);
        press.run(true);
        press
    }

    fn make(&mut self, good: u32, scrap: u16) {
        self.good = self.good.wrapping_add(good);
        self.scrap = self.scrap.wrapping_add(scrap);
        self.plc.set_holding_u32(0, self.good, WordOrder::Cdab);
        self.plc.set_holding(2, &[self.scrap]);
    }

    fn run(&self, on: bool) {
        self.plc.set_holding(3, &[u16::from(on)]);
    }
}

/// What the MES side received, for the script to wait on, and a tally of
/// it for the closing summary.
struct Feed {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    last_seq: Option<u64>,
    lots_opened: u64,
    lots_closed: u64,
    products: u64,
    rejects: BTreeMap<String, u64>,
}

impl Feed {
    fn new(rx: mpsc::UnboundedReceiver<(String, Value)>) -> Self {
        Feed {
            rx,
            last_seq: None,
            lots_opened: 0,
            lots_closed: 0,
            products: 0,
            rejects: BTreeMap::new(),
        }
    }

    /// Count a record once (records arrive in seq order; a redelivery
    /// repeats a seq already seen).
    fn tally(&mut self, v: &Value) {
        let Some(seq) = v["seq"].as_u64() else {
            return;
        };
        if self.last_seq.is_some_and(|last| seq <= last) {
            return;
        }
        self.last_seq = Some(seq);
        match v["kind"].as_str() {
            Some("lot") if v["data"]["event"] == "opened" => self.lots_opened += 1,
            Some("lot") if v["data"]["event"] == "closed" => self.lots_closed += 1,
            Some("product") => self.products += 1,
            Some("reject") => {
                let reason = v["data"]["reason"].as_str().unwrap_or("?").to_owned();
                *self.rejects.entry(reason).or_default() += 1;
            }
            _ => {}
        }
    }

    /// Wait until a message `pred` accepts arrives, at most `limit`; every
    /// message before it is consumed. `false` on timeout.
    async fn wait(&mut self, limit: Duration, pred: impl Fn(&str, &Value) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while let Ok(Some((topic, v))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.tally(&v);
            if pred(&topic, &v) {
                return true;
            }
        }
        false
    }

    /// Wait for a message, or say on stderr what did not arrive.
    async fn expect(&mut self, what: &str, limit: Duration, pred: impl Fn(&str, &Value) -> bool) {
        if !self.wait(limit, pred).await {
            eprintln!("demo: {what} did not reach the MES within {limit:?}");
        }
    }

    fn drain(&mut self) {
        while let Ok((_, v)) = self.rx.try_recv() {
            self.tally(&v);
        }
    }

    fn summary(&self, scans: u64) -> String {
        let rejects = if self.rejects.is_empty() {
            "none".to_owned()
        } else {
            self.rejects
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{scans} scans; lots opened {}, closed {}; products {}; rejects: {rejects}",
            self.lots_opened, self.lots_closed, self.products
        )
    }
}

/// A `count` record of register `name` at raw value `raw`.
fn is_count(v: &Value, name: &str, raw: u64) -> bool {
    v["kind"] == "count" && v["data"]["name"] == name && v["data"]["raw"].as_u64() == Some(raw)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start rumqttd in its own thread: an MQTT 3.1.1 listener on
/// 127.0.0.1:`port` (the MES side) and an MQTT 5 one on `v5_port` (the
/// gateway's).
fn start_broker(port: u16, v5_port: u16) -> anyhow::Result<()> {
    let text = format!(
        r#"id = 0
[router]
id = 0
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 1048576
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 65536
    max_inflight_count = 100
    dynamic_filters = true

[v5.1]
name = "v5-1"
listen = "127.0.0.1:{v5_port}"
next_connection_delay_ms = 1
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 65536
    max_inflight_count = 100
    dynamic_filters = true
"#
    );
    let cfg: rumqttd::Config = toml::from_str(&text).context("embedded broker config")?;
    let mut broker = rumqttd::Broker::new(cfg);
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            if let Err(err) = broker.start() {
                tracing::error!(error = %err, "embedded broker stopped");
            }
        })?;
    Ok(())
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(demo(args))
}

/// Bound of every wait for a step's record.
const STEP_WAIT: Duration = Duration::from_secs(10);

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let port = free_port()?;
    let v5_port = free_port()?;
    start_broker(port, v5_port)?;
    let pty =
        VirtualSerial::open().context("cannot create the simulated scanner (pseudo-terminal)")?;
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("linegate-demo-{}", std::process::id())),
            true,
        ),
    };
    let plc = SimPlc::start()
        .await
        .context("cannot start the simulated PLC")?;
    let plc_port = plc.port();
    let mut press = Press::new(plc);
    let cfg = config::parse(
        Path::new("<demo>"),
        &demo_config(v5_port, pty.slave_path(), plc_port, &data_dir),
    )
    .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let root = cfg.mqtt.topics.root.clone();
    let topics = cfg.mqtt.topics.clone();

    // The MES side: subscribe to everything under the line and print it.
    let mut opts = MqttOptions::new("demo-mes", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(15));
    let (mes, mut mes_loop) = AsyncClient::new(opts, 64);
    let (seen_tx, seen_rx) = mpsc::unbounded_channel::<(String, Value)>();
    let (subscribed_tx, subscribed_rx) = oneshot::channel();
    let filter = format!("{root}/#");
    let printer = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match mes_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = mes.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(mes.clone());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    println!("{} {}", p.topic, String::from_utf8_lossy(&p.payload));
                    let v = serde_json::from_slice::<Value>(&p.payload).unwrap_or_default();
                    let _ = seen_tx.send((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let mes = tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .context("the embedded broker did not answer")?
        .context("subscriber stopped")?;
    let mut feed = Feed::new(seen_rx);

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut gateway = tokio::spawn(crate::app::gateway::run_until(cfg, async {
        let _ = stop_rx.await;
    }));

    let mut scans = 0u64;
    let script = async {
        // The press's first poll before the first step: its run state is
        // always recorded then, after the counters of the same poll.
        feed.expect("the press's first reading", STEP_WAIT, |_, v| {
            v["kind"] == "state" && v["data"]["name"] == "run_state"
        })
        .await;
        'shifts: for n in 0u64.. {
            for step in shift(n) {
                if args.scans.is_some_and(|max| scans >= max) {
                    break 'shifts;
                }
                let paced = Instant::now() + args.interval;
                match step {
                    Step::Say(text) => {
                        println!("# {text}");
                        continue;
                    }
                    Step::Scan(code) => {
                        pty.write(format!("{code}\r\n").as_bytes()).await?;
                        scans += 1;
                        let what = format!("the record of scan {code:?}");
                        feed.expect(&what, STEP_WAIT, |_, v| v["data"]["code"] == code.as_str())
                            .await;
                    }
                    Step::Press { good, scrap } => {
                        press.make(good, scrap);
                        if good > 0 {
                            let raw = u64::from(press.good);
                            feed.expect("the good count", STEP_WAIT, |_, v| {
                                is_count(v, "good_count", raw)
                            })
                            .await;
                        }
                        if scrap > 0 {
                            let raw = u64::from(press.scrap);
                            feed.expect("the scrap count", STEP_WAIT, |_, v| {
                                is_count(v, "scrap_count", raw)
                            })
                            .await;
                        }
                        continue;
                    }
                    Step::Run(on) => {
                        press.run(on);
                        feed.expect("the press's run state", STEP_WAIT, |_, v| {
                            v["kind"] == "state"
                                && v["data"]["name"] == "run_state"
                                && v["data"]["value"] == i64::from(on)
                        })
                        .await;
                        continue;
                    }
                    Step::Mes { name, id, body } => {
                        let topic = format!("{}/cmd/{name}", topics.gateway);
                        mes.publish(topic, QoS::AtLeastOnce, false, body).await?;
                        let result = topics.command_result(name);
                        feed.expect(&format!("the result of {name}"), STEP_WAIT, |t, v| {
                            t == result && v["id"] == id.as_str()
                        })
                        .await;
                    }
                }
                tokio::time::sleep_until(paced).await;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    // Until the script ends, Ctrl-C, or the gateway stops on its own (it
    // could not start: the store is in use, …).
    let ctrl_c = tokio::signal::ctrl_c();
    let (outcome, early) = tokio::select! {
        r = script => (r, None),
        _ = ctrl_c => (Ok(()), None),
        r = &mut gateway => (Ok(()), Some(r)),
    };
    let _ = stop_tx.send(());
    let stopped = match early {
        Some(r) => r,
        None => gateway.await,
    };
    drop(press);
    let stopped = stopped.context("gateway task").and_then(|r| r);
    if stopped.is_ok() {
        // The gateway's last word (its offline status) before the summary.
        let status = topics.status();
        feed.wait(Duration::from_secs(1), |t, v| {
            t == status && v["online"] == false
        })
        .await;
    }
    printer.abort();
    if stopped.is_ok() {
        feed.drain();
        println!("# {}", feed.summary(scans));
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    stopped?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scans(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Scan(code) => Some(code.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_shift_walks_from_badge_in_to_badge_out() {
        let steps = shift(0);
        let codes = scans(&steps);
        assert_eq!(codes.len(), 20, "--scans 20 is one walk-through");
        assert_eq!(codes[0], "OP0042");
        assert_eq!(codes[1], "WO104233");
        assert_eq!(codes[2], "]d2010415000002112610C24-1187\u{1d}17270630");
        assert_eq!(codes[3], "]d201095060001343521726123110B7781");
        assert_eq!(codes[4], "]d2010401234500001621SN000001");
        assert_eq!(codes.last(), Some(&"OP0042"), "the same badge logs out");
        assert!(codes.contains(&"TEST-0001"));
        assert!(codes.contains(&"LOT:K26-0412"));
        // One serial twice: the duplicate.
        let mut serials: Vec<&str> = codes
            .iter()
            .filter_map(|c| c.strip_prefix("]d2010401234500001621"))
            .collect();
        assert_eq!(serials.len(), 11);
        serials.sort_unstable();
        serials.dedup();
        assert_eq!(serials.len(), 10);
        // The press reaches the target with the sixth part, a MES command
        // opens the lot and another sets the next order.
        let good: u32 = steps
            .iter()
            .map(|s| match s {
                Step::Press { good, .. } => *good,
                _ => 0,
            })
            .sum();
        assert_eq!(good, 10);
        let commands: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mes { name, .. } => Some(*name),
                _ => None,
            })
            .collect();
        assert_eq!(commands, ["open-lot", "set-order"]);
    }

    #[test]
    fn the_next_shift_has_another_operator_order_and_serials() {
        let (a, b) = (shift(0), shift(1));
        let (a, b) = (scans(&a), scans(&b));
        assert_eq!(b[0], "OP0117");
        assert_eq!(b[1], "WO104235");
        assert_eq!(b[4], "]d2010401234500001621SN000011");
        assert!(a.iter().all(|code| !code.contains("SN000011")));
    }

    #[test]
    fn every_gs1_code_is_valid_and_the_config_loads() {
        for code in scans(&shift(0)) {
            let d = crate::gs1::decode(code.as_bytes(), 2026, false);
            if let Some(result) = &d.gs1 {
                assert!(result.is_ok(), "{code:?}: {result:?}");
            }
        }
        let cfg = demo_config(1883, Path::new("/dev/null"), 502, Path::new("/tmp/x"));
        let cfg = config::parse(Path::new("<demo>"), &cfg).expect("the demo config is valid");
        assert_eq!(cfg.stations[0].lot.target, Some(TARGET));
        assert_eq!(cfg.stations[0].scan_rules.len(), 6);
    }
}
