//! What the controller observed, as plain data for the planner: guests per cluster, setpoint
//! values per device, and the configuration its own database holds.
//!
//! No client handles and no wire formats: the reconcile loop fills these from the adapters
//! (or tests fill them by hand).

use std::collections::{BTreeMap, BTreeSet};

use mycopod_adapters::modbus::Value;
use mycopod_adapters::proxmox::api::GuestKind;
use mycopod_adapters::proxmox::compare::ObservedConfig;
use serde::{Deserialize, Serialize};

use super::ResourceKind;

/// Everything observed for one plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Per `ProxmoxCluster` name.
    pub clusters: BTreeMap<String, ObservedCluster>,
    /// Per `ModbusDevice` name.
    pub devices: BTreeMap<String, ObservedDevice>,
    /// Database-held configuration, per kind and name.
    pub config: BTreeMap<(ResourceKind, String), StoredConfig>,
}

/// One Proxmox cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedCluster {
    /// Whether the cluster answered. When it did not, nothing is planned for its guests.
    pub reachable: bool,
    /// Its guests by vmid (templates included; the planner never touches them).
    pub guests: BTreeMap<u32, ObservedGuest>,
}

/// One guest as listed (and, where it was read deeply, with its configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedGuest {
    /// The node it is on.
    pub node: String,
    /// qemu or lxc.
    pub kind: GuestKind,
    /// Its name (qemu) or hostname (lxc).
    pub name: Option<String>,
    /// Whether it runs.
    pub running: bool,
    /// Its tags, lower-cased.
    pub tags: BTreeSet<String>,
    /// Whether it is a template.
    pub template: bool,
    /// Its configuration with digest and pending changes, when it was read deeply this time.
    /// `None` means "not read": the configuration is taken as unchanged.
    pub config: Option<ObservedConfig>,
    /// The PVE keys mycopod set on it the last time it applied it (from its own records), so
    /// that keys dropped from the declaration are removed.
    pub previously_owned: BTreeSet<String>,
}

/// One Modbus device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedDevice {
    /// Whether it answered. Writes are planned only for reachable devices.
    pub reachable: bool,
    /// The current values of its setpoint registers.
    pub values: BTreeMap<String, Value>,
}

/// A row of database-held configuration (an alert rule, a channel, a policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConfig {
    /// The spec as stored (JSON).
    pub spec: serde_json::Value,
}
