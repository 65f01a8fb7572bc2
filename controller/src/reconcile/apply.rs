//! Applying one planned action through the real adapters and the store.
//!
//! An action is applied exactly as planned: a guest update is sent with the digest observed
//! when the plan was made, so a change behind the plan's back is a conflict (the run is
//! re-planned) rather than a silent overwrite. This module decides nothing: what to do is the
//! plan's; whether to do it now is the run's.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::plan::translate::device::setpoint_value;
use crate::plan::translate::guest::desired_guest;
use chrono::{DateTime, Utc};
use mycopod_adapters::modbus::ModbusError;
use mycopod_adapters::proxmox::compare::{CreateSource, compare, update_for};
use mycopod_adapters::proxmox::error::ProxmoxError;
use mycopod_specs::DesiredState;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use super::observe::LiveWorld;
use crate::model::ConfigKind;
use crate::plan::{Action, Observed, ObservedGuest, ResourceKind, Verb};
use crate::store::{Store, StoreError};

/// How long a guest may take to shut down cleanly before it is stopped hard.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an action could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The Proxmox API refused or failed.
    #[error("{action}: {source}")]
    Proxmox {
        /// The action key.
        action: String,
        /// The adapter's error.
        source: ProxmoxError,
    },
    /// A Modbus device refused or failed.
    #[error("{action}: {source}")]
    Modbus {
        /// The action key.
        action: String,
        /// The adapter's error.
        source: ModbusError,
    },
    /// The database failed.
    #[error("{action}: {source}")]
    Store {
        /// The action key.
        action: String,
        /// The store's error.
        source: StoreError,
    },
    /// What the action needs is not there (a client without credentials, a resource that is
    /// neither declared nor observed).
    #[error("{action}: {message}")]
    Precondition {
        /// The action key.
        action: String,
        /// What is missing.
        message: String,
    },
}

impl ApplyError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Proxmox { source, .. } => source.is_transient(),
            ApplyError::Modbus { source, .. } => {
                source.class() == mycopod_adapters::modbus::ErrorClass::Transient
            }
            ApplyError::Store { source, .. } => !source.is_conflict() && !source.is_not_found(),
            ApplyError::Precondition { .. } => false,
        }
    }

    /// Whether the world changed since the plan was made (a stale digest): the run must be
    /// planned again rather than retried.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApplyError::Proxmox { source, .. }
            if source.class() == mycopod_adapters::proxmox::error::ErrorClass::Conflict)
    }
}

/// Where applying an action records what it did.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    /// The database for owned keys and database-held configuration (none in a dry setup).
    pub store: Option<&'a Store>,
    /// The commit the action comes from.
    pub commit: &'a str,
    /// The time written beside what is recorded.
    pub now: DateTime<Utc>,
    /// Hears the UPID of each PVE task the action starts, as soon as PVE answers with it.
    pub tasks: Option<&'a UnboundedSender<String>>,
}

/// What applying an action left to do by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Guest keys whose change waits for the next restart.
    pub restart_required: BTreeSet<String>,
}

/// The SHA-256 of a JSON value's canonical form (`model::canonical_json`), as
/// stored beside database-held configuration and invalid runs.
pub fn spec_hash(spec: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(
        crate::model::canonical_json(spec).as_bytes(),
    ))
}

fn config_kind(kind: ResourceKind) -> Option<ConfigKind> {
    match kind {
        ResourceKind::AlertRule => Some(ConfigKind::AlertRule),
        ResourceKind::NotificationChannel => Some(ConfigKind::NotificationChannel),
        ResourceKind::HandshakePolicy => Some(ConfigKind::HandshakePolicy),
        ResourceKind::Guest | ResourceKind::ModbusDevice => None,
    }
}

fn declared_spec(
    desired: &DesiredState,
    kind: ResourceKind,
    name: &str,
) -> Option<serde_json::Value> {
    let spec = match kind {
        ResourceKind::AlertRule => serde_json::to_value(&desired.alert_rule(name)?.spec),
        ResourceKind::NotificationChannel => serde_json::to_value(&desired.channel(name)?.spec),
        ResourceKind::HandshakePolicy => serde_json::to_value(&desired.policy(name)?.spec),
        ResourceKind::Guest | ResourceKind::ModbusDevice => return None,
    };
    spec.ok()
}

impl LiveWorld {
    /// Applies one action of a plan that was made from `desired` and `observed`.
    #[tracing::instrument(skip_all, fields(action = %action.key))]
    pub async fn apply(
        &self,
        desired: &DesiredState,
        observed: &Observed,
        action: &Action,
        at: ApplyContext<'_>,
    ) -> Result<Applied, ApplyError> {
        let ApplyContext {
            store, commit, now, ..
        } = at;
        let key = action.key.clone();
        let precondition = |message: String| ApplyError::Precondition {
            action: key.clone(),
            message,
        };
        match action.resource.kind {
            ResourceKind::Guest => self.apply_guest(desired, observed, action, at).await,
            ResourceKind::ModbusDevice => {
                let name = action.resource.name.as_str();
                let device = desired
                    .device(name)
                    .ok_or_else(|| precondition(format!("device {name} is not declared")))?;
                let client = self
                    .device(name)
                    .ok_or_else(|| precondition(format!("no client for device {name}")))?;
                for change in &action.changes {
                    let Some(register) = change.field.strip_prefix("setpoints.") else {
                        continue;
                    };
                    let value = device.spec.setpoints.get(register).ok_or_else(|| {
                        precondition(format!("setpoint {register} is no longer declared"))
                    })?;
                    client
                        .apply_setpoint(register, &setpoint_value(value))
                        .await
                        .map_err(|source| ApplyError::Modbus {
                            action: key.clone(),
                            source,
                        })?;
                }
                Ok(Applied::default())
            }
            kind => {
                let store = store
                    .ok_or_else(|| precondition("no database to hold configuration".into()))?;
                let config = config_kind(kind)
                    .ok_or_else(|| precondition(format!("{kind} is not database-held")))?;
                let name = action.resource.name.as_str();
                let store_error = |source| ApplyError::Store {
                    action: key.clone(),
                    source,
                };
                match action.verb {
                    Verb::Upsert => {
                        let spec = declared_spec(desired, kind, name).ok_or_else(|| {
                            precondition(format!("{kind}/{name} is not declared"))
                        })?;
                        store
                            .upsert_config_object(
                                config,
                                name,
                                &spec,
                                &spec_hash(&spec),
                                commit,
                                now,
                            )
                            .await
                            .map_err(store_error)?;
                    }
                    Verb::Remove => {
                        store
                            .remove_config_object(config, name)
                            .await
                            .map_err(store_error)?;
                    }
                    other => return Err(precondition(format!("{other} does not apply to {kind}"))),
                }
                Ok(Applied::default())
            }
        }
    }

    async fn apply_guest(
        &self,
        desired: &DesiredState,
        observed: &Observed,
        action: &Action,
        at: ApplyContext<'_>,
    ) -> Result<Applied, ApplyError> {
        let ApplyContext {
            store, now, tasks, ..
        } = at;
        let key = action.key.clone();
        let precondition = |message: String| ApplyError::Precondition {
            action: key.clone(),
            message,
        };
        let proxmox = |source| ApplyError::Proxmox {
            action: key.clone(),
            source,
        };
        let name = action.resource.name.as_str();
        let declared = desired.guest(name);

        // Which cluster and vmid: the declaration's, or (for undeclared guests being pruned)
        // the one the plan names.
        let planned_vmid = action
            .changes
            .iter()
            .find(|c| c.field == "vmid")
            .and_then(|c| c.observed.as_ref().or(c.desired.as_ref()))
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok());
        let (cluster, vmid) = match declared {
            Some(g) => (
                g.spec.cluster.as_str().to_owned(),
                g.spec.vmid.map(|v| v.get()).or(planned_vmid),
            ),
            None => {
                let vmid =
                    planned_vmid.ok_or_else(|| precondition("the plan names no vmid".into()))?;
                let cluster = observed
                    .clusters
                    .iter()
                    .find(|(_, c)| c.guests.contains_key(&vmid))
                    .map(|(n, _)| n.clone())
                    .ok_or_else(|| precondition(format!("guest {vmid} was not observed")))?;
                (cluster, Some(vmid))
            }
        };
        let vmid = vmid.ok_or_else(|| precondition(format!("guest {name} has no vmid")))?;
        // Whatever happens next, the guest's next observation must read it in full.
        self.forget_deep_read(&cluster, vmid, store).await;
        let client = self.cluster(&cluster).ok_or_else(|| {
            precondition(format!(
                "no client for cluster {cluster} (check its credentials)"
            ))
        })?;
        let reporting;
        let client = match tasks {
            Some(sink) => {
                reporting = client.reporting_tasks_to(sink.clone());
                &reporting
            }
            None => client,
        };
        let seen: Option<&ObservedGuest> = observed
            .clusters
            .get(&cluster)
            .and_then(|c| c.guests.get(&vmid));
        let default_node = desired
            .cluster(&cluster)
            .and_then(|c| c.spec.default_node.as_ref())
            .map(|n| n.as_str());

        match action.verb {
            Verb::Create | Verb::Update => {
                let g = declared
                    .ok_or_else(|| precondition(format!("guest {name} is not declared")))?;
                let mut want = desired_guest(name, &g.spec, vmid, default_node)
                    .map_err(|e| precondition(e.to_string()))?;
                if action.verb == Verb::Create {
                    // A template on another node is cloned there, with `target` set to ours.
                    if let CreateSource::Clone { from, node, .. } = &mut want.source
                        && let Some(template) = observed
                            .clusters
                            .get(&cluster)
                            .and_then(|c| c.guests.get(from))
                        && template.node != want.node
                    {
                        *node = Some(template.node.clone());
                    }
                    client.create_guest(&want).await.map_err(proxmox)?;
                    record_owned(store, &cluster, &want, now, &key).await?;
                    return Ok(Applied::default());
                }
                if let Some(seen) = seen {
                    want.remove = seen
                        .previously_owned
                        .difference(&want.owned_keys())
                        .cloned()
                        .collect();
                }
                let applied = match seen.and_then(|s| s.config.as_ref()) {
                    // Exactly what was planned, against the configuration that was observed;
                    // keys PVE parks in /pending show in the next observation as "restart
                    // required".
                    Some(config) => {
                        let diffs = compare(&want, config);
                        let update = update_for(&want, config, &diffs).map_err(proxmox)?;
                        client
                            .apply_update(&want, config.digest.as_deref(), &update)
                            .await
                            .map_err(proxmox)?;
                        Applied::default()
                    }
                    None => {
                        let outcome = client.apply_config(&want).await.map_err(proxmox)?;
                        Applied {
                            restart_required: outcome.restart_required,
                        }
                    }
                };
                record_owned(store, &cluster, &want, now, &key).await?;
                Ok(applied)
            }
            Verb::Start | Verb::Stop | Verb::Restart | Verb::Delete => {
                // A guest created earlier in this run was not observed: its node and kind are
                // the declaration's.
                let (node, kind) = match (seen, declared) {
                    (Some(s), _) => (s.node.clone(), s.kind),
                    (None, Some(g)) => {
                        let want = desired_guest(name, &g.spec, vmid, default_node)
                            .map_err(|e| precondition(e.to_string()))?;
                        (want.node, want.kind)
                    }
                    (None, None) => {
                        return Err(precondition(format!("guest {vmid} was not observed")));
                    }
                };
                match action.verb {
                    Verb::Start => client.start(&node, kind, vmid).await.map_err(proxmox)?,
                    // PVE's reboot shuts the guest down and starts it again, which applies
                    // its pending configuration.
                    Verb::Restart => client.reboot(&node, kind, vmid).await.map_err(proxmox)?,
                    Verb::Stop => {
                        client
                            .shutdown(&node, kind, vmid, SHUTDOWN_TIMEOUT, true)
                            .await
                            .map_err(proxmox)?;
                    }
                    _ => {
                        client.stop(&node, kind, vmid).await.map_err(proxmox)?;
                        client
                            .delete_guest(&node, kind, vmid)
                            .await
                            .map_err(proxmox)?;
                    }
                }
                Ok(Applied::default())
            }
            other => Err(precondition(format!("{other} does not apply to guests"))),
        }
    }
}

/// Records the keys `want` sets as owned by mycopod (the removed ones are no longer owned).
async fn record_owned(
    store: Option<&Store>,
    cluster: &str,
    want: &mycopod_adapters::proxmox::compare::DesiredGuest,
    now: DateTime<Utc>,
    action: &str,
) -> Result<(), ApplyError> {
    let Some(store) = store else {
        return Ok(());
    };
    let keys: BTreeSet<String> = want.owned_config().into_keys().collect();
    store
        .record_owned_keys(cluster, want.vmid, &keys, now)
        .await
        .map_err(|source| ApplyError::Store {
            action: action.to_owned(),
            source,
        })
}
