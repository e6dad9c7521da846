//! The controller against the Kubernetes API. One pass, the same story for every fleet
//! (namespace), one file per step:
//!
//! 1. **read** (`sources`): reflectors cache the four kinds (and Secrets); the live ones are
//!    grouped by namespace;
//! 2. **dereference** (`secrets`): the Secrets they reference are filled in, missing ones
//!    generated (owned by the resource that needs them);
//! 3. **validate and build** (pure, shared with `--manifests` mode): `topology::resolve` and
//!    `render::render_all`;
//! 4. **apply**: managed nodes' workloads (`workloads`, decided by `workload_plan`), then
//!    the bundles pushed to the agents ([`FleetReconciler`]);
//! 5. **update status** (`status_writer`), publish `events` for transitions, and add or
//!    release `finalizers`.
//!
//! Only the holder of the leader [`Lease`](super::leader) runs passes; its renewal runs beside
//! them, a pass is stopped when leadership lapses, and every write is checked against it.
//!
//! A server without the core API (a bare apiextensions-apiserver) has no Secrets: the
//! controller says so once and keeps secrets in `--secrets-file` (or reports `MissingSecret`);
//! without workload APIs, managed nodes report `Managed=False` and the rest of the fleet
//! reconciles as usual.

mod discovery;
mod events;
mod finalizer_plan;
mod finalizers;
mod names;
mod retirement;
mod secrets;
mod sources;
mod status_writer;
mod workload_plan;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;

pub use names::{FIELD_MANAGER, FINALIZER};
pub use workload_plan::WorkloadError;

use self::events::EventPublisher;
use self::finalizers::Finalizers;
use self::sources::Stores;
use self::workloads::Workloads;
use super::agent_policy::AgentPolicy;
use super::file_credentials;
use super::fleet::{FleetReconciler, ReconcileReport};
use super::leader::{self, Gate, LeaseLock, Timing};
use super::managed_settings::ManagedSettings;
use super::metrics::ControllerMetrics;
use super::notices::{LoggedErrors, notices};
use crate::offline::LoadedFleet;
use crate::{render, topology};

/// Settings of the API-server mode.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Where and how agents may be reached (each with its node's own credentials).
    pub agents: AgentPolicy,
    /// Namespaces to watch; empty: every namespace.
    pub namespaces: Vec<String>,
    /// Where to keep generated secrets and node credentials when the server has no Secrets API.
    pub secrets_file: Option<PathBuf>,
    /// Reconcile at least this often (retries, agent status refresh).
    pub resync: Duration,
    /// Wait this long after a change for more changes before reconciling.
    pub debounce: Duration,
    /// Leader election: only the holder of this Lease reconciles.
    pub lease: Option<LeaseSettings>,
    /// What shapes the workloads of managed nodes.
    pub managed: ManagedSettings,
    /// Release a deleted resource whose cleanup has not finished after this long, with a
    /// warning (`None`: wait as long as it takes). See `names::SKIP_CLEANUP_ANNOTATION`.
    pub cleanup_timeout: Option<Duration>,
}

/// The leader-election Lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

/// The API-server mode failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API server could not be reached at start.
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// What a pass carries over to the next one.
struct Controller {
    client: Client,
    opts: KubeOptions,
    stores: Stores,
    fleet: FleetReconciler,
    events: EventPublisher,
    workloads: Workloads,
    logged: LoggedErrors,
    finalizers: Finalizers,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    opts: KubeOptions,
    metrics: &ControllerMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), KubeError> {
    client.apiserver_version().await?;
    let changed = Arc::new(Notify::new());
    let stores = Stores::start(&client, &opts.namespaces, &changed).await;
    if stores.secrets.is_none() {
        match &opts.secrets_file {
            Some(f) => {
                tracing::warn!(file = %f.display(), "the API server has no Secrets API: keeping secrets in the secrets file")
            }
            None => tracing::error!(
                "the API server has no Secrets API and no --secrets-file was given: resources that need a secret stay invalid (MissingSecret)"
            ),
        }
    }
    tracing::info!("controller started: watching AsteriskNodes, Trunks, Phones, BlfSubscriptions");
    let (mut gate, election) = match &opts.lease {
        Some(l) => {
            let lock = LeaseLock::new(client.clone(), &l.namespace, &l.name, &l.identity, l.duration);
            let (gate, election) = leader::elect(lock, Timing::for_lease(l.duration));
            (gate, Some(election))
        }
        None => (Gate::always(), None),
    };
    // Every write this replica makes goes through the gate, whatever step makes it.
    let client = leader::gated_client(client, gate.clone());
    let mut controller = Controller {
        fleet: FleetReconciler::default(),
        events: EventPublisher::new(client.clone()),
        workloads: Workloads::default(),
        logged: LoggedErrors::default(),
        finalizers: Finalizers::new(opts.cleanup_timeout),
        client,
        opts,
        stores,
    };
    tokio::pin!(shutdown);
    loop {
        // Standing by: alive and ready, taking over when the leader's Lease lapses.
        tokio::select! {
            () = &mut shutdown => break,
            () = gate.acquired() => {}
            () = tokio::time::sleep(controller.opts.resync) => {
                metrics.went_round(false);
                continue;
            }
        }
        // What another leader did meanwhile is unknown: push everything again (an agent
        // answers an unchanged bundle cheaply) and observe every workload afresh.
        controller.fleet = FleetReconciler::new(controller.opts.agents.clone()).with_gate(gate.clone());
        controller.workloads = Workloads::default();
        match controller.lead(&mut gate, &changed, metrics, &mut shutdown).await {
            Ending::Shutdown => break,
            Ending::Lapsed => metrics.went_round(false),
        }
    }
    if let Some(election) = election {
        election.resign().await;
    }
    Ok(())
}

/// Why a term of leadership ended.
enum Ending {
    Shutdown,
    Lapsed,
}

impl Controller {
    /// Passes, one after another on changes and every resync, while this replica leads. A pass
    /// in progress when leadership lapses is stopped where it is (its writes are refused by
    /// then anyway); one in progress at shutdown is finished.
    async fn lead(
        &mut self,
        gate: &mut Gate,
        changed: &Notify,
        metrics: &ControllerMetrics,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Ending {
        loop {
            let started = std::time::Instant::now();
            tokio::select! {
                report = self.pass() => metrics.observe(&report, self.fleet.statuses(), started.elapsed()),
                () = gate.lost() => {
                    tracing::warn!("leadership lapsed during a pass: stopped it, standing by");
                    return Ending::Lapsed;
                }
            }
            tokio::select! {
                () = shutdown.as_mut() => return Ending::Shutdown,
                () = gate.lost() => return Ending::Lapsed,
                () = changed.notified() => tokio::time::sleep(self.opts.debounce).await,
                () = tokio::time::sleep(self.opts.resync) => {}
            }
        }
    }

    /// One pass: every namespace read, resolved, rendered, applied, and its statuses written.
    async fn pass(&mut self) -> ReconcileReport {
        let client = &self.client;
        // This pass's view of the labelled Secrets (the only ones the controller reads).
        let cached = self.stores.secrets.as_ref().map(|c| c.state());
        let mut fleets = BTreeMap::new();
        for (namespace, mut set) in self.stores.fleets() {
            secrets::fill(client, cached.as_deref(), self.opts.secrets_file.as_deref(), &mut set).await;
            let resolution = topology::resolve(&set);
            let bundles = render::render_all(&resolution.topology);
            fleets.insert(namespace, LoadedFleet { resources: set, resolution, bundles });
        }
        let mut targets =
            self.workloads.reconcile(client, cached.as_deref(), &fleets, &self.opts.managed).await;
        if self.stores.secrets.is_none()
            && let Some(file) = &self.opts.secrets_file
        {
            // No Secrets API: the nodes beside existing servers keep their credentials in the file.
            targets.extend(file_credentials::targets(file, &fleets));
        }
        // Deleted nodes beside existing servers, to be emptied before their finalizer goes.
        let (retiring, retiring_targets) =
            retirement::retiring(&self.stores, cached.as_deref(), self.opts.secrets_file.as_deref());
        targets.extend(retiring_targets);
        self.fleet.set_targets(targets);
        self.fleet.set_retiring(retiring);
        let before = self.fleet.statuses().clone();
        let report = self.fleet.reconcile(&fleets).await;
        self.logged.log(&report.errors);
        for notice in notices(&before, self.fleet.statuses()) {
            if let Some(fleet) = fleets.get(&notice.object.namespace) {
                self.events.publish(fleet, &notice).await;
            }
        }
        for fleet in fleets.values() {
            status_writer::write(client, fleet, self.fleet.statuses()).await;
        }
        self.finalizers.sync(client, &self.stores, &fleets, &self.fleet, &mut self.events).await;
        report
    }
}
