//! Start the whole gateway from a validated config, and stop it cleanly.
//!
//! The service manager hears `READY=1` once the store is open and the
//! pipeline turns, and `STOPPING=1` when a clean stop begins; the watchdog
//! and status line run meanwhile (`app::service`).
//!
//! Reloads (SIGHUP, `linegate reload`) are served one at a time between
//! the other events ([`Live`]): the file is read and validated again, and
//! `app::reload`'s difference applied, devices alone, stations through the
//! pipeline's queue (so they change between two commits, from the durable
//! state), the uplink restarted for `[mqtt]`; a refusal keeps everything
//! as it was and is committed as a `config-reload-failed` alarm. A stop
//! asked for during a reload is served when the reload is done.
//!
//! Order at stop: devices and the control socket first (so nothing new
//! arrives), then the uplink (publishes `offline`), then the pipeline drains
//! and commits everything it already received, then the store is made
//! durable and closed.
//!
//! The control socket (`linegate lot …`) is bound after the store is open:
//! holding the store proves no other daemon serves this data directory, so a
//! socket file found there is stale. A socket that cannot be bound is logged
//! as an error and the gateway runs on without it: readings and the MES
//! matter more than the local command line.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::app::pipeline::{Input, NewStations, Pipeline};
use crate::app::reload;
use crate::app::service;
use crate::app::{control, metrics};
use crate::config::{Config, DeviceConfig, DeviceKind};
use crate::devices::health::{DeviceHealth, HealthRegistry};
use crate::devices::{modbus, scanner};
use crate::station::{Restore, Setup, Stations};
use crate::store::{self, CapacityStatus, Store};
use crate::tasks::{AbortOnDrop, Heartbeat};
use crate::uplink::{Outbound, Uplink, UplinkStats};

/// Readings and commands buffered ahead of the pipeline.
const INPUT_QUEUE: usize = 4096;

/// A reload asked for (SIGHUP, `linegate reload`): the reply, if someone
/// waits for it, gets the new config generation or why it was refused.
pub type ReloadRequest = Option<oneshot::Sender<Result<u64, String>>>;

/// The queue of reload requests: fed by SIGHUP and the control socket's
/// `reload`, served by the gateway one at a time.
pub fn reload_queue() -> (mpsc::Sender<ReloadRequest>, mpsc::Receiver<ReloadRequest>) {
    mpsc::channel(4)
}

/// Run the gateway until `stop` completes, then shut down cleanly.
pub async fn run_until(cfg: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    run(cfg, stop, None).await
}

/// [`run_until`], reloading the config file (`cfg.source`) at each request
/// on `reloads` (see `app::reload`), whose sender the control socket also
/// gets (`linegate reload`).
pub async fn run(
    cfg: Config,
    stop: impl Future<Output = ()>,
    reloads: Option<(mpsc::Sender<ReloadRequest>, mpsc::Receiver<ReloadRequest>)>,
) -> anyhow::Result<()> {
    let (reload_tx, mut reloads) = match reloads {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let store_dir = cfg.gateway.data_dir.join(store::STORE_DIR);
    let mut stop = std::pin::pin!(stop);
    let Some(store) = open_store(&cfg, &store_dir, stop.as_mut()).await? else {
        tracing::info!("linegate stopped");
        return Ok(());
    };
    let mut restore_stations = stations_from_store(&cfg);
    let stations = restore_stations(store.as_ref())
        // Unknown state is not the same as no state: a fresh lot allocator
        // could reissue numbers. Stop; the store is checked again at start.
        .map_err(|err| {
            anyhow::Error::new(err).context("cannot read the station state from the store")
        })?;
    let health = HealthRegistry::default();

    // One ordered queue for device readings and MES commands.
    let (input_tx, input_rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let (committed_tx, committed_rx) = watch::channel(store.stats().last_seq);
    let (capacity_tx, capacity_rx) = watch::channel(CapacityStatus::default());
    let outbound = Outbound::default();
    let (pipeline_beat, uplink_beat) = (Heartbeat::default(), Heartbeat::default());
    let commit_times = Arc::new(metrics::CommitTimes::default());
    let stats = Arc::new(watch::channel(UplinkStats::default()).0);

    let mut pipeline = tokio::spawn(
        Pipeline {
            store: Arc::clone(&store),
            stations,
            store_cfg: cfg.store.clone(),
            store_dir: store_dir.clone(),
            committed: committed_tx,
            capacity: capacity_tx,
            outbound: outbound.clone(),
            restore: restore_stations,
            heartbeat: pipeline_beat.clone(),
            commit_times: Arc::clone(&commit_times),
        }
        .run(input_rx),
    );
    let (generation_tx, generation_rx) = watch::channel(1u64);
    let parts = UplinkParts {
        store: Arc::clone(&store),
        committed: committed_rx,
        capacity: capacity_rx,
        outbound,
        commands: input_tx.clone(),
        health,
        stats: Arc::clone(&stats),
        heartbeat: uplink_beat.clone(),
        generation: generation_rx.clone(),
    };
    let status = crate::uplink::StatusSources {
        gateway: cfg.gateway.clone(),
        store: Arc::clone(&store),
        capacity: parts.capacity.clone(),
        health: parts.health.clone(),
        uplink: stats.subscribe(),
        generation: generation_rx.clone(),
    };
    let _metrics = match cfg.metrics {
        Some(addr) => match metrics::bind(addr).await {
            Ok(listener) => {
                tracing::info!(listen = %addr, "metrics endpoint listening at /metrics");
                Some(AbortOnDrop(tokio::spawn(metrics::serve(
                    listener,
                    status.clone(),
                    Arc::clone(&commit_times),
                ))))
            }
            Err(err) => {
                tracing::error!(listen = %addr, error = %err, "cannot open the metrics endpoint; running without it");
                None
            }
        },
        None => None,
    };
    let mut live = Live {
        uplink: parts.spawn(&cfg),
        devices: BTreeMap::new(),
        parts,
        generation: generation_tx,
        cfg,
    };
    for d in live.cfg.devices.clone() {
        live.start_device(&d);
    }
    let cfg = &live.cfg;
    let mut control = match control::bind(&cfg.gateway.data_dir) {
        Ok(socket) => {
            let path = socket.path().display();
            if socket.replaced_stale() {
                tracing::info!(socket = %path, "control socket listening; replaced a stale socket file left by an unclean stop");
            } else {
                tracing::info!(socket = %path, "control socket listening");
            }
            Some(AbortOnDrop(tokio::spawn(socket.serve(control::Daemon {
                input: input_tx.clone(),
                reloads: reload_tx.clone(),
                status: status.clone(),
            }))))
        }
        Err(err) => {
            tracing::error!(
                socket = %control::socket_path(&cfg.gateway.data_dir).display(),
                error = %err,
                "cannot open the control socket; running without it (`linegate lot` will not reach this gateway)"
            );
            None
        }
    };
    drop(input_tx);
    let service_status = service::StatusSource {
        store: Arc::clone(&store),
        uplink: stats.subscribe(),
        generation: generation_rx,
    };

    // Ready once the pipeline turns (it has read its state from the store);
    // a stop or a failure before that ends the start.
    let started = tokio::select! {
        () = pipeline_beat.first() => Ok(()),
        _ = &mut stop => Err(None),
        r = &mut pipeline => Err(Some(pipeline_failure(r))),
        r = &mut live.uplink.task => Err(Some(anyhow::anyhow!("uplink stopped unexpectedly: {r:?}"))),
    };
    let mut watchdog = None;
    let mut failure = match started {
        Err(failure) => failure,
        Ok(()) => {
            let period = service::watchdog_period();
            tracing::info!(
                gateway = %live.cfg.gateway.id,
                stations = live.cfg.stations.len(),
                devices = live.cfg.devices.len(),
                config = *live.generation.borrow(),
                watchdog_s = period.map(|p| p.as_secs_f64()),
                "linegate running"
            );
            service::ready(&service_status.line());
            watchdog = Some(AbortOnDrop(tokio::spawn(service::run(
                period,
                pipeline_beat,
                uplink_beat,
                service_status.clone(),
            ))));
            loop {
                let reload = async {
                    match reloads.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut stop => break None,
                    r = &mut pipeline => break Some(pipeline_failure(r)),
                    r = &mut live.uplink.task => break Some(anyhow::anyhow!("uplink stopped unexpectedly: {r:?}")),
                    Some(request) = reload => {
                        service::reloading();
                        let outcome = live.reload().await;
                        service::ready(&service_status.line());
                        if let Some(reply) = request {
                            let _ = reply.send(outcome);
                        }
                    }
                }
            }
        }
    };
    if failure.is_none() {
        service::stopping();
    }
    // No pings while stopping: a stop that hangs is the service manager's
    // to time out.
    drop(watchdog);
    for d in live.devices.values() {
        d.abort();
    }
    if let Some(mut task) = control.take() {
        // Ends every client connection too, and removes the socket file.
        task.0.abort();
        let _ = (&mut task.0).await;
    }
    tracing::debug!("devices stopped; stopping the uplink");
    live.uplink.stop().await;
    // The pipeline drains once every sender of its queue is gone.
    drop(live);
    tracing::debug!("uplink stopped; draining the pipeline");
    if !pipeline.is_finished() {
        let r = pipeline.await;
        if !matches!(r, Ok(Ok(()))) {
            failure = failure.or(Some(pipeline_failure(r)));
        }
    }
    let closed = tokio::task::spawn_blocking(move || store.close())
        .await
        .context("store close task")
        .and_then(|r| r.context("cannot make the store durable at shutdown"));
    match (failure, closed) {
        (None, Ok(())) => {
            tracing::info!("linegate stopped");
            Ok(())
        }
        (Some(err), _) | (None, Err(err)) => Err(err),
    }
}

/// Open the store. A disk too full for the engine to open on is waited
/// out (logged, retried with backoff up to 30 s) rather than failed: an exit
/// would make the service manager restart the gateway into the same full
/// disk, over and over. `None` when `stop` completed first.
async fn open_store(
    cfg: &Config,
    dir: &std::path::Path,
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let mut wait = Duration::from_secs(1);
    loop {
        let (scfg, data_dir) = (cfg.store.clone(), cfg.gateway.data_dir.clone());
        let opened = service::extending_start(tokio::task::spawn_blocking(move || {
            store::ReopenableStore::open(&scfg, &data_dir)
        }))
        .await
        .context("store open task")?;
        match opened {
            Ok(store) => return Ok(Some(Arc::new(store))),
            Err(err) if err.is_disk_full() => {
                tracing::error!(
                    dir = %dir.display(),
                    error = %err,
                    retry_in_s = wait.as_secs(),
                    "cannot open the store: the disk is full; waiting for space"
                );
            }
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("cannot open the store in {}", dir.display())));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.as_mut() => return Ok(None),
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// The stations, rebuilt from the store's durable state: at start, and
/// again after the pipeline reopened the store.
fn stations_from_store(cfg: &Config) -> crate::app::pipeline::RestoreStations {
    let cfg = cfg.clone();
    Box::new(move |store: &dyn Store| {
        let setup = Setup {
            site: &cfg.gateway.site,
            line: &cfg.gateway.line,
            calendar: &cfg.calendar,
            stations: &cfg.stations,
            devices: &cfg.devices,
        };
        let mut restore = StoreRestore {
            store,
            failed: None,
        };
        let stations = Stations::new(setup, &mut restore);
        match restore.failed {
            Some(err) => Err(err),
            None => Ok(stations),
        }
    })
}

/// Why the pipeline ended, as an error (a store error keeps its type, so the
/// CLI can map it to its exit code).
fn pipeline_failure(
    r: Result<Result<(), crate::store::StoreError>, tokio::task::JoinError>,
) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("pipeline stopped unexpectedly"),
        Ok(Err(err)) => anyhow::Error::new(err).context("the store failed a commit"),
        Err(join) => anyhow::anyhow!("pipeline task failed: {join}"),
    }
}

/// Durable state by key; a read error is logged and treated as "unknown"
/// (a context starts empty, a counter starts from a new baseline).
/// The stations' view of the store's durable state at start-up. A read
/// error is kept and makes the start fail (exit 74): starting with state
/// missing could repeat lot numbers or forget serials.
struct StoreRestore<'a> {
    store: &'a dyn Store,
    failed: Option<crate::store::StoreError>,
}

impl Restore for StoreRestore<'_> {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.store.state(key).unwrap_or_else(|err| {
            tracing::error!(key, error = %err, "cannot read persisted state");
            self.failed.get_or_insert(err);
            None
        })
    }

    fn scan(&mut self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.store.state_prefix(prefix).unwrap_or_else(|err| {
            tracing::error!(prefix, error = %err, "cannot read persisted state");
            self.failed.get_or_insert(err);
            Vec::new()
        })
    }
}

/// Run one device task and restart it if it ever fails; a device never takes
/// the gateway down. Returns when the pipeline is gone.
async fn supervise(cfg: DeviceConfig, tx: mpsc::Sender<Input>, health: DeviceHealth) {
    let id: Arc<str> = Arc::from(cfg.id.as_str());
    let station: Arc<str> = Arc::from(cfg.station.as_str());
    loop {
        // Aborting the supervisor must stop the device too.
        let mut task = AbortOnDrop(match &cfg.kind {
            DeviceKind::SerialScanner(sc) => tokio::spawn(scanner::run(
                Arc::clone(&id),
                Arc::clone(&station),
                sc.clone(),
                tx.clone(),
                health.clone(),
            )),
            DeviceKind::ModbusTcp(m) => tokio::spawn(modbus::run(
                Arc::clone(&id),
                Arc::clone(&station),
                m.clone(),
                tx.clone(),
                health.clone(),
            )),
            DeviceKind::ModbusRtu(bus) => tokio::spawn(modbus::rtu::run(
                Arc::clone(&id),
                Arc::clone(&station),
                bus.clone(),
                tx.clone(),
                health.clone(),
            )),
        });
        match (&mut task.0).await {
            Ok(()) => return,
            Err(err) => {
                tracing::error!(device = %id, error = %err, "device task failed; restarting");
                health.set_offline(format!("device task failed: {err}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// What the uplink task is made of besides its config: kept to start it
/// again after a reload changed `[mqtt]`.
struct UplinkParts {
    store: Arc<dyn Store>,
    committed: watch::Receiver<u64>,
    capacity: watch::Receiver<CapacityStatus>,
    outbound: Outbound,
    commands: mpsc::Sender<Input>,
    health: HealthRegistry,
    stats: Arc<watch::Sender<UplinkStats>>,
    heartbeat: Heartbeat,
    generation: watch::Receiver<u64>,
}

/// The running uplink task and its stop switch.
struct UplinkTask {
    task: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl UplinkTask {
    /// Stop it as at a clean stop: up to 5 s to say goodbye (the retained
    /// `offline` status), then aborted. What it had out is sent again by
    /// the next session (nothing is deleted without its PUBACK).
    async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if !self.task.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
            self.task.abort();
        }
    }
}

impl UplinkParts {
    /// Start an uplink task on `cfg`'s `[gateway]` and `[mqtt]`.
    fn spawn(&self, cfg: &Config) -> UplinkTask {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(
            Uplink {
                gateway: cfg.gateway.clone(),
                mqtt: cfg.mqtt.clone(),
                signing: cfg.commands.clone(),
                store: Arc::clone(&self.store),
                committed: self.committed.clone(),
                capacity: self.capacity.clone(),
                outbound: self.outbound.clone(),
                commands: self.commands.clone(),
                health: self.health.clone(),
                stats: Arc::clone(&self.stats),
                heartbeat: self.heartbeat.clone(),
                generation: self.generation.clone(),
            }
            .run(shutdown_rx),
        );
        UplinkTask { task, shutdown }
    }
}

/// The parts of a running gateway a reload changes: the config, the
/// device tasks (by id), the uplink.
struct Live {
    cfg: Config,
    devices: BTreeMap<String, JoinHandle<()>>,
    uplink: UplinkTask,
    /// Also the device tasks' queue (`commands`) and health registry.
    parts: UplinkParts,
    /// The config generation: 1 at start, one more per applied reload.
    generation: watch::Sender<u64>,
}

impl Live {
    fn start_device(&mut self, d: &DeviceConfig) {
        let task = tokio::spawn(supervise(
            d.clone(),
            self.parts.commands.clone(),
            self.parts.health.handle(&d.id),
        ));
        self.devices.insert(d.id.clone(), task);
    }

    async fn stop_device(&mut self, id: &str) {
        if let Some(task) = self.devices.remove(id) {
            task.abort();
            let _ = task.await;
        }
        self.parts.health.remove(id);
    }

    /// Read the config file again and apply the difference; on refusal
    /// the running config stays, and a `config-reload-failed` alarm is
    /// committed for the MES. The new generation, or why not.
    async fn reload(&mut self) -> Result<u64, String> {
        let path = self.cfg.source.clone();
        let outcome = self.apply(&path).await;
        match &outcome {
            Ok(generation) => tracing::info!(
                config = generation,
                file = %path.display(),
                "configuration reloaded"
            ),
            Err(why) => {
                tracing::error!(
                    config = *self.generation.borrow(),
                    file = %path.display(),
                    "configuration reload refused; the running configuration is kept: {why}"
                );
                let message = format!(
                    "configuration reload refused, generation {} kept: {why}",
                    *self.generation.borrow()
                );
                let _ = self.parts.commands.send(Input::ReloadFailed(message)).await;
            }
        }
        outcome
    }

    async fn apply(&mut self, path: &std::path::Path) -> Result<u64, String> {
        let new = crate::config::load(path).map_err(|e| e.to_string())?;
        let diff = reload::difference(&self.cfg, &new);
        if !diff.needs_restart.is_empty() {
            return Err(format!(
                "{} changed: applied only by a restart; nothing of the new file was applied",
                diff.needs_restart.join(", ")
            ));
        }
        tracing::info!(changes = %diff.summary(), "applying the reloaded configuration");
        // Devices going away or changing stop first, so that no reading
        // of the old device meets the new stations.
        for id in diff.devices_removed.iter().chain(&diff.devices_changed) {
            self.stop_device(id).await;
        }
        if diff.stations {
            let (tx, rx) = oneshot::channel();
            let new_stations = NewStations(stations_from_store(&new));
            let rebuilt = match self
                .parts
                .commands
                .send(Input::Restation(new_stations, tx))
                .await
            {
                Ok(()) => rx
                    .await
                    .unwrap_or_else(|_| Err("the pipeline stopped".into())),
                Err(_) => Err("the pipeline stopped".into()),
            };
            if let Err(why) = rebuilt {
                // Put back what was stopped: the old config runs on.
                for id in diff.devices_removed.iter().chain(&diff.devices_changed) {
                    if let Some(d) = self.cfg.devices.iter().find(|d| &d.id == id).cloned() {
                        self.start_device(&d);
                    }
                }
                return Err(why);
            }
        }
        for id in diff.devices_added.iter().chain(&diff.devices_changed) {
            if let Some(d) = new.devices.iter().find(|d| &d.id == id).cloned() {
                self.start_device(&d);
            }
        }
        let mqtt = diff.mqtt;
        self.cfg = new;
        if mqtt {
            self.uplink.stop().await;
            self.uplink = self.parts.spawn(&self.cfg);
        }
        let generation = *self.generation.borrow() + 1;
        self.generation.send_replace(generation);
        Ok(generation)
    }
}
