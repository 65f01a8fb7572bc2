//! Observing the world through the real adapters: Proxmox clusters, Modbus devices, and the
//! configuration held in mycopod's own database, into the planner's plain data.
//!
//! Observation never changes anything and never fails as a whole: a cluster or device that
//! cannot be reached (or whose credentials are missing) is marked unreachable with the reason,
//! and the planner leaves its resources alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::plan::translate::device::device_def;
use crate::plan::translate::guest::desired_guest;
use futures::future::join_all;
use mycopod_adapters::modbus::{DeviceDef, ModbusClient};
use mycopod_adapters::proxmox::api::ClusterResource;
use mycopod_adapters::proxmox::client::{Auth, ClientConfig, ProxmoxClient, Tls};
use mycopod_adapters::proxmox::compare::guest_fingerprint;
use mycopod_adapters::proxmox::propstring::parse_tags;
use mycopod_specs::DesiredState;
use mycopod_specs::kinds::{GuestState, ProxmoxClusterSpec};

use super::deep_reads::{DEFAULT_FULL_READ_INTERVAL, DeepReads, spec_key};
use crate::device_clients::DeviceClients;
use crate::model::ConfigKind;
use crate::plan::{
    Observed, ObservedCluster, ObservedDevice, ObservedGuest, ResourceKind, StoredConfig,
};
use crate::secrets::{Registry, SecretError, SecretRef};
use crate::store::Store;

/// Why a cluster's client could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The secret a spec names is refused (unlisted, one of the server's own, another
    /// destination) or cannot be read.
    #[error("cluster {cluster}: {field}: {source}")]
    Secret {
        /// The ProxmoxCluster's `metadata.name`.
        cluster: String,
        /// The spec field naming it.
        field: &'static str,
        /// Why.
        source: SecretError,
    },
    /// The spec gives neither a token nor a user (validation refuses this; kept for safety).
    #[error("cluster {cluster}: no credentials declared")]
    NoCredentials {
        /// The ProxmoxCluster's `metadata.name`.
        cluster: String,
    },
    /// The client could not be built (bad CA file, ...).
    #[error("cluster {cluster}: {reason}")]
    Client {
        /// The ProxmoxCluster's `metadata.name`.
        cluster: String,
        /// What failed.
        reason: String,
    },
}

/// Resolves a cluster's secret reference through the server's registry, toward its endpoint.
fn secret(
    cluster: &str,
    secrets: &Registry,
    destination: &url::Url,
    refs: [(Option<&str>, &'static str, bool); 2],
) -> Result<Option<String>, CredentialError> {
    for (name, field, is_file) in refs {
        if let Some(name) = name {
            let reference = if is_file {
                SecretRef::File(name)
            } else {
                SecretRef::Env(name)
            };
            return secrets
                .resolve(reference, destination)
                .map(Some)
                .map_err(|source| CredentialError::Secret {
                    cluster: cluster.to_owned(),
                    field,
                    source,
                });
        }
    }
    Ok(None)
}

/// The Proxmox client settings a `ProxmoxCluster` declares, its secret resolved through
/// `secrets` toward the cluster's endpoint (never anywhere else).
pub fn cluster_client_config(
    name: &str,
    spec: &ProxmoxClusterSpec,
    secrets: &Registry,
) -> Result<ClientConfig, CredentialError> {
    let a = &spec.auth;
    let endpoint = spec.endpoint.url();
    let auth = if let Some(token_id) = &a.token_id {
        let secret = secret(
            name,
            secrets,
            endpoint,
            [
                (a.secret_env.as_deref(), "spec.auth.secretEnv", false),
                (a.secret_file.as_deref(), "spec.auth.secretFile", true),
            ],
        )?
        .ok_or_else(|| CredentialError::NoCredentials {
            cluster: name.to_owned(),
        })?;
        Auth::Token {
            token_id: token_id.clone(),
            secret,
        }
    } else if let Some(user) = &a.user {
        let password = secret(
            name,
            secrets,
            endpoint,
            [
                (a.password_env.as_deref(), "spec.auth.passwordEnv", false),
                (a.password_file.as_deref(), "spec.auth.passwordFile", true),
            ],
        )?
        .ok_or_else(|| CredentialError::NoCredentials {
            cluster: name.to_owned(),
        })?;
        Auth::Password {
            user: user.clone(),
            password,
        }
    } else {
        return Err(CredentialError::NoCredentials {
            cluster: name.to_owned(),
        });
    };
    let mut config = ClientConfig::new(spec.endpoint.to_string().trim_end_matches('/'), auth);
    config.tls = match (&spec.tls.ca_file, spec.tls.insecure_skip_verify) {
        (Some(ca), _) => Tls::CaFile(PathBuf::from(ca)),
        (None, true) => Tls::InsecureSkipVerify,
        (None, false) => Tls::System,
    };
    Ok(config)
}

/// The clients of every declared cluster and device, made once and reused across
/// observations (so that connections and tickets are kept).
pub struct LiveWorld {
    secrets: Registry,
    clusters: BTreeMap<String, Result<ProxmoxClient, CredentialError>>,
    devices: BTreeMap<String, Result<Arc<ModbusClient>, String>>,
    /// The last deep read of each declared guest, so that an observation reads deeply only
    /// what may have changed (`deep_reads.rs`).
    deep_reads: Mutex<DeepReads>,
    /// Whether new deep reads are written to the store (not by `mycopod plan`, which writes
    /// nothing).
    record_reads: bool,
}

impl std::fmt::Debug for LiveWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveWorld")
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What an observation could not see, for the controller status and `mycopod plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveProblem {
    /// `ProxmoxCluster/home`, `ModbusDevice/fm-1`.
    pub resource: String,
    /// Why.
    pub message: String,
}

impl LiveWorld {
    /// Clients for what `desired` declares; secrets are resolved through `secrets` now.
    pub fn new(desired: &DesiredState, secrets: &Registry) -> LiveWorld {
        LiveWorld::build(desired, secrets, |def| {
            ModbusClient::new(def)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
    }

    /// As [`LiveWorld::new`], but the Modbus clients come from the registry telemetry polls
    /// through, so a setpoint write and a poll of one device never interleave.
    pub fn with_device_clients(
        desired: &DesiredState,
        secrets: &Registry,
        clients: &DeviceClients,
    ) -> LiveWorld {
        LiveWorld::build(desired, secrets, |def| {
            clients.client(def).map_err(|e| e.to_string())
        })
    }

    fn build(
        desired: &DesiredState,
        secrets: &Registry,
        modbus: impl Fn(DeviceDef) -> Result<Arc<ModbusClient>, String>,
    ) -> LiveWorld {
        let clusters = desired
            .clusters
            .iter()
            .map(|c| {
                let name = c.name().as_str();
                let client = cluster_client_config(name, &c.spec, secrets).and_then(|config| {
                    ProxmoxClient::new(config).map_err(|e| CredentialError::Client {
                        cluster: name.to_owned(),
                        reason: e.to_string(),
                    })
                });
                (name.to_owned(), client)
            })
            .collect();
        let devices = desired
            .devices
            .iter()
            .map(|d| {
                let name = d.name().as_str();
                let client = modbus(device_def(name, &d.spec));
                (name.to_owned(), client)
            })
            .collect();
        LiveWorld {
            secrets: secrets.clone(),
            clusters,
            devices,
            deep_reads: Mutex::new(DeepReads::new(DEFAULT_FULL_READ_INTERVAL)),
            record_reads: true,
        }
    }

    /// Sets how long a guest may go without a full read (default 10 minutes): the bound on
    /// how late an edit made outside mycopod that the cluster listing does not show is seen.
    pub fn with_full_read_interval(self, interval: Duration) -> LiveWorld {
        LiveWorld {
            deep_reads: Mutex::new(DeepReads::new(interval)),
            ..self
        }
    }

    /// Uses the deep reads kept in the store but never writes new ones (`mycopod plan`).
    pub fn without_recording_reads(self) -> LiveWorld {
        LiveWorld {
            record_reads: false,
            ..self
        }
    }

    /// Makes the next observation read `vmid` of `cluster` in full (something was applied),
    /// here and in `store`. A store that fails is logged: the read only costs a request.
    pub(crate) async fn forget_deep_read(&self, cluster: &str, vmid: u32, store: Option<&Store>) {
        let Some(client) = self.cluster(cluster) else {
            return;
        };
        let endpoint = client.config().endpoint.as_str();
        self.deep_reads().forget(endpoint, vmid);
        if let Some(store) = store
            && let Err(e) = store.forget_guest_read(endpoint, vmid).await
        {
            tracing::warn!(cluster, vmid, error = %e, "could not forget a guest's stored read");
        }
    }

    fn deep_reads(&self) -> std::sync::MutexGuard<'_, DeepReads> {
        // The map stays consistent whatever panicked while holding it: every write is one
        // insert or remove.
        self.deep_reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The secrets this world's clients were given: what declarations may name.
    pub fn secrets(&self) -> &Registry {
        &self.secrets
    }

    /// The Modbus client of a device, shared with telemetry so requests never interleave.
    pub fn device(&self, name: &str) -> Option<&Arc<ModbusClient>> {
        self.devices.get(name).and_then(|c| c.as_ref().ok())
    }

    /// The fewest requests any cluster's client lets be in flight (`None` without clusters):
    /// a run never has more guest actions running than this, so an action is `running` only
    /// once it can send.
    pub fn max_in_flight(&self) -> Option<usize> {
        self.clusters
            .values()
            .filter_map(|c| c.as_ref().ok())
            .map(|c| c.config().max_in_flight.max(1))
            .min()
    }

    /// The Proxmox client of a cluster.
    pub fn cluster(&self, name: &str) -> Option<&ProxmoxClient> {
        self.clusters.get(name).and_then(|c| c.as_ref().ok())
    }

    /// Observes everything `desired` declares. Each cluster is listed in one request; a
    /// declared guest that exists is read deeply (configuration, digest, pending changes)
    /// unless its last deep read still stands (`deep_reads.rs`); the rest is known from the
    /// listing alone. Database-held configuration comes from `store` when given.
    pub async fn observe(
        &self,
        desired: &DesiredState,
        store: Option<&Store>,
    ) -> (Observed, Vec<ObserveProblem>) {
        self.observe_at(desired, store, Utc::now()).await
    }

    /// [`LiveWorld::observe`] as if at `now` (which decides whose full re-read is due).
    pub async fn observe_at(
        &self,
        desired: &DesiredState,
        store: Option<&Store>,
        now: DateTime<Utc>,
    ) -> (Observed, Vec<ObserveProblem>) {
        let mut observed = Observed::default();
        let mut problems = Vec::new();

        let cluster_work = self.clusters.iter().map(|(name, client)| async move {
            let result = match client {
                Err(e) => Err(e.to_string()),
                Ok(client) => {
                    self.observe_cluster(client, name, desired, store, now)
                        .await
                }
            };
            (name.clone(), result)
        });
        for (name, result) in join_all(cluster_work).await {
            match result {
                Ok(cluster) => {
                    observed.clusters.insert(name, cluster);
                }
                Err(message) => {
                    problems.push(ObserveProblem {
                        resource: format!("ProxmoxCluster/{name}"),
                        message,
                    });
                    observed.clusters.insert(name, ObservedCluster::default());
                }
            }
        }

        let device_work = desired.devices.iter().filter_map(|d| {
            let client = self.devices.get(d.name().as_str())?.clone();
            let names: Vec<String> = d.spec.setpoints.keys().cloned().collect();
            let name = d.name().as_str().to_owned();
            // Bounded by the device's own timeout per request; this is a last guard.
            let limit = d.spec.timeout.as_std() * 4 + Duration::from_secs(1);
            Some(async move {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let result = match client {
                    Err(e) => Err(e),
                    Ok(_) if refs.is_empty() => Ok(BTreeMap::new()),
                    Ok(client) => {
                        match tokio::time::timeout(limit, client.observe_setpoints(&refs)).await {
                            Ok(Ok(values)) => Ok(values),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!("no answer within {limit:?}")),
                        }
                    }
                };
                (name, result)
            })
        });
        for (name, result) in join_all(device_work).await {
            let device = match result {
                Ok(values) => ObservedDevice {
                    reachable: true,
                    values,
                },
                Err(message) => {
                    problems.push(ObserveProblem {
                        resource: format!("ModbusDevice/{name}"),
                        message,
                    });
                    ObservedDevice::default()
                }
            };
            observed.devices.insert(name, device);
        }

        if let Some(store) = store {
            for (name, cluster) in observed.clusters.iter_mut().filter(|(_, c)| c.reachable) {
                match store.owned_keys(name).await {
                    Ok(mut owned) => {
                        for (vmid, guest) in cluster.guests.iter_mut() {
                            if let Some(keys) = owned.remove(vmid) {
                                guest.previously_owned = keys;
                            }
                        }
                    }
                    Err(e) => problems.push(ObserveProblem {
                        resource: format!("database (owned keys of {name})"),
                        message: e.to_string(),
                    }),
                }
            }
            for (config_kind, kind) in [
                (ConfigKind::AlertRule, ResourceKind::AlertRule),
                (
                    ConfigKind::NotificationChannel,
                    ResourceKind::NotificationChannel,
                ),
                (ConfigKind::HandshakePolicy, ResourceKind::HandshakePolicy),
            ] {
                match store.list_config_objects(config_kind).await {
                    Ok(rows) => {
                        for row in rows {
                            observed
                                .config
                                .insert((kind, row.name), StoredConfig { spec: row.spec });
                        }
                    }
                    Err(e) => problems.push(ObserveProblem {
                        resource: format!("database ({kind})"),
                        message: e.to_string(),
                    }),
                }
            }
        }
        (observed, problems)
    }
}

impl LiveWorld {
    /// One cluster: the listing (one request), then a deep read of each declared guest whose
    /// last deep read no longer stands (one request each).
    async fn observe_cluster(
        &self,
        client: &ProxmoxClient,
        name: &str,
        desired: &DesiredState,
        store: Option<&Store>,
        now: DateTime<Utc>,
    ) -> Result<ObservedCluster, String> {
        let listing = client.observe_cluster().await.map_err(|e| e.to_string())?;
        let listed: BTreeMap<u32, &ClusterResource> = listing.iter().map(|r| (r.vmid, r)).collect();
        let default_node = desired
            .cluster(name)
            .and_then(|c| c.spec.default_node.as_ref())
            .map(|n| n.as_str());
        // The declared guests that exist (templates are never read deeply), with the
        // fingerprint of what is declared for them (`None`: it does not translate, so it is
        // always read) and whether they are to run (`None`: `absent`).
        let declared: Vec<(&ClusterResource, Option<String>, Option<bool>)> = desired
            .guests
            .iter()
            .filter(|g| g.spec.cluster.as_str() == name)
            .filter_map(|g| {
                let vmid = g.spec.vmid?.get();
                let listed = listed.get(&vmid).filter(|r| !r.template)?;
                let spec = desired_guest(g.name().as_str(), &g.spec, vmid, default_node)
                    .ok()
                    .map(|d| spec_key(guest_fingerprint(&d)));
                let run = match g.spec.state {
                    GuestState::Running => Some(true),
                    GuestState::Stopped => Some(false),
                    GuestState::Absent => None,
                };
                Some((*listed, spec, run))
            })
            .collect();
        let listed_running = |r: &ClusterResource| r.status.as_deref() == Some("running");
        let mut guests: BTreeMap<u32, ObservedGuest> = listing
            .iter()
            .map(|r| {
                let guest = ObservedGuest {
                    node: r.node.clone(),
                    kind: r.kind,
                    name: r.name.clone(),
                    running: listed_running(r),
                    tags: parse_tags(r.tags.as_deref().unwrap_or("")),
                    template: r.template,
                    config: None,
                    previously_owned: Default::default(),
                };
                (r.vmid, guest)
            })
            .collect();
        // PVE lists a guest's status (like its uptime, CPUs and memory) from the statistics
        // `pvestatd` broadcasts every 10 s: for up to 10 s after a start the listing still says
        // `stopped`, or `unknown` for a guest created since the last broadcast. No power
        // action is planned, and no start verified, on that word alone: where the listing
        // disagrees with the declared state, the guest's own status is read, one request each.
        let statuses = declared
            .iter()
            .filter(|(r, _, run)| run.is_some_and(|run| run != listed_running(r)))
            .map(|(r, _, _)| async move {
                (r.vmid, client.guest_status(&r.node, r.kind, r.vmid).await)
            });
        for (vmid, status) in join_all(statuses).await {
            let running =
                status.map_err(|e| format!("read the status of guest {vmid}: {e}"))? == "running";
            if let Some(g) = guests.get_mut(&vmid) {
                g.running = running;
            }
        }
        // Reads are kept per endpoint: two repositories may name different clusters alike.
        let endpoint = client.config().endpoint.as_str();
        if let Some(store) = store
            && !self.deep_reads().loaded(endpoint)
        {
            let rows = match store.guest_reads(endpoint).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(cluster = name, error = %e, "could not load the stored guest reads; reading in full");
                    Vec::new()
                }
            };
            self.deep_reads().load(endpoint, rows);
        }
        let mut to_read = Vec::new();
        {
            let mut reads = self.deep_reads();
            let keep: BTreeSet<u32> = declared.iter().map(|(r, _, _)| r.vmid).collect();
            reads.retain(|cluster, vmid| cluster != endpoint || keep.contains(&vmid));
            for (listed, spec, _) in declared {
                let fresh = spec
                    .as_deref()
                    .and_then(|spec| reads.fresh(endpoint, listed, spec, now));
                match (fresh, guests.get_mut(&listed.vmid)) {
                    (Some(config), Some(g)) => g.config = Some(config.clone()),
                    _ => to_read.push((listed, spec)),
                }
            }
        }
        metrics::counter!("mycopod_guest_deep_reads_total").increment(to_read.len() as u64);
        let reads = to_read.into_iter().map(|(listed, spec)| async move {
            let result = client
                .observe_guest_config(&listed.node, listed.kind, listed.vmid)
                .await;
            (listed, spec, result)
        });
        let mut rows = Vec::new();
        for (listed, spec, result) in join_all(reads).await {
            let config = result.map_err(|e| format!("read guest {}: {e}", listed.vmid))?;
            if let Some(spec) = spec {
                rows.push(self.deep_reads().record(
                    endpoint,
                    listed,
                    &spec,
                    config.clone(),
                    now,
                    rand::random::<f64>(),
                ));
            }
            if let Some(g) = guests.get_mut(&listed.vmid) {
                g.config = Some(config);
            }
        }
        if let Some(store) = store.filter(|_| self.record_reads)
            && let Err(e) = store.record_guest_reads(&rows).await
        {
            tracing::warn!(cluster = name, error = %e, "could not store the guest reads");
        }
        Ok(ObservedCluster {
            reachable: true,
            guests,
        })
    }
}
