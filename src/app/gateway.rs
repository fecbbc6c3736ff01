//! Start the whole gateway from a validated config, and stop it cleanly.
//!
//! Order at stop: devices first (so nothing new arrives), then the uplink
//! (publishes `offline`), then the pipeline drains and commits everything it
//! already received, then the store is made durable and closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::app::pipeline::Pipeline;
use crate::config::{Config, DeviceConfig, DeviceKind};
use crate::devices::health::{DeviceHealth, HealthRegistry};
use crate::devices::{Reading, scanner};
use crate::station::{Context, Stations, state_key};
use crate::store::{self, Store};
use crate::tasks::AbortOnDrop;
use crate::uplink::Uplink;

/// Readings buffered between devices and the pipeline.
const READING_QUEUE: usize = 4096;
/// Commands buffered between the uplink and the pipeline.
const COMMAND_QUEUE: usize = 256;

/// Run the gateway until `stop` completes, then shut down cleanly.
pub async fn run_until(cfg: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let store_dir = cfg.gateway.data_dir.join("store");
    let store = store::open(&cfg.store, &store_dir)
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
    let stations = Stations::new(&cfg.stations, |id| restore_context(store.as_ref(), id));
    let health = HealthRegistry::default();

    let (readings_tx, readings_rx) = mpsc::channel(READING_QUEUE);
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (committed_tx, committed_rx) = watch::channel(store.stats().last_seq);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut pipeline = tokio::spawn(
        Pipeline {
            store: Arc::clone(&store),
            stations,
            store_cfg: cfg.store.clone(),
            committed: committed_tx,
        }
        .run(readings_rx, commands_rx),
    );
    let mut uplink = tokio::spawn(
        Uplink {
            gateway: cfg.gateway.clone(),
            mqtt: cfg.mqtt.clone(),
            store: Arc::clone(&store),
            committed: committed_rx,
            commands: commands_tx,
            health: health.clone(),
        }
        .run(shutdown_rx),
    );
    let devices: Vec<JoinHandle<()>> = cfg
        .devices
        .iter()
        .map(|d| {
            tokio::spawn(supervise(
                d.clone(),
                readings_tx.clone(),
                health.handle(&d.id),
            ))
        })
        .collect();
    drop(readings_tx);
    tracing::info!(
        gateway = %cfg.gateway.id,
        stations = cfg.stations.len(),
        devices = cfg.devices.len(),
        "linegate running"
    );

    let failure = tokio::select! {
        _ = stop => None,
        r = &mut pipeline => Some(format!("pipeline stopped unexpectedly: {r:?}")),
        r = &mut uplink => Some(format!("uplink stopped unexpectedly: {r:?}")),
    };
    for d in &devices {
        d.abort();
    }
    let _ = shutdown_tx.send(true);
    tracing::debug!("devices stopped; stopping the uplink");
    if !uplink.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut uplink).await;
        uplink.abort();
    }
    tracing::debug!("uplink stopped; draining the pipeline");
    if !pipeline.is_finished() {
        let _ = pipeline.await;
    }
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("store close task")?
        .context("cannot make the store durable at shutdown")?;
    tracing::info!("linegate stopped");
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(why)),
    }
}

fn restore_context(store: &dyn Store, station: &str) -> Option<Context> {
    match store.state(&state_key(station)) {
        Ok(bytes) => bytes.and_then(|b| Context::decode(station, &b)),
        Err(err) => {
            tracing::error!(station, error = %err, "cannot read persisted context; starting unknown");
            None
        }
    }
}

/// Run one device task and restart it if it ever fails; a device never takes
/// the gateway down. Returns when the pipeline is gone.
async fn supervise(cfg: DeviceConfig, tx: mpsc::Sender<Reading>, health: DeviceHealth) {
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
