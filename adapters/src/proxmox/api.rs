//! Wire types of the PVE API subset mycopod uses, with PVE's leniency (numbers as strings,
//! booleans as 0/1) handled at the edge so the rest of the code sees plain Rust values.
//!
//! No I/O and no decisions here: shapes, parsing of UPIDs and of the `{"data": ...}` envelope.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::error::ProxmoxError;

/// The two kinds of guest PVE runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A QEMU/KVM virtual machine.
    Qemu,
    /// An LXC container.
    Lxc,
}

impl GuestKind {
    /// The path segment and `type` value PVE uses (`qemu`, `lxc`).
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
}

impl fmt::Display for GuestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(GuestKind::Qemu),
            "lxc" => Ok(GuestKind::Lxc),
            other => Err(format!("unknown guest type {other:?}")),
        }
    }
}

/// The `{"data": ...}` envelope of every PVE response.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    /// The payload.
    pub data: T,
}

/// The body of an error response: `message` (sometimes) and the per-field `errors` of a 400.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// A human message, when PVE sends one in the body.
    #[serde(default)]
    pub message: Option<String>,
    /// Parameter name to error text.
    #[serde(default)]
    pub errors: Option<BTreeMap<String, String>>,
}

/// Deserializes an integer sent as a number, a string, or a float.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(value_to_u64(&v))
}

fn value_to_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok().or_else(|| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f >= 0.0)
                .map(|f| f as u64)
        }),
        serde_json::Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

/// Deserializes a float sent as a number or a string.
pub fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Deserializes a boolean sent as `true`, `1`, `"1"`, `"yes"` or `"on"`.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => parse_bool(&s).unwrap_or(false),
        _ => false,
    })
}

/// Deserializes a vmid, which PVE sends as a number or a string; a missing one is an error.
pub fn lenient_vmid<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    value_to_u64(&v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| de::Error::custom(format!("invalid vmid {v}")))
}

/// PVE's boolean spellings.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Some(true),
        "0" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// Turns any JSON scalar PVE puts in a config into the string form PVE uses in `.conf` files.
pub fn value_to_config_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One guest as listed by `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ClusterResource {
    /// `qemu/120`.
    #[serde(default)]
    pub id: String,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: GuestKind,
    /// The guest's vmid.
    #[serde(deserialize_with = "lenient_vmid")]
    pub vmid: u32,
    /// The node it lives on.
    pub node: String,
    /// The guest's name (qemu `name`, lxc `hostname`).
    #[serde(default)]
    pub name: Option<String>,
    /// `running`, `stopped`, or `unknown` when its node is offline.
    #[serde(default)]
    pub status: Option<String>,
    /// Tags separated by `;`.
    #[serde(default)]
    pub tags: Option<String>,
    /// Whether the guest is a template.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub template: bool,
    /// A config lock held right now (`backup`, `create`, `clone`...).
    #[serde(default)]
    pub lock: Option<String>,
    /// Configured CPUs.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub maxcpu: Option<f64>,
    /// Configured memory in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub maxmem: Option<u64>,
    /// Configured disk in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub maxdisk: Option<u64>,
    /// Uptime in seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub uptime: Option<u64>,
}

/// One entry of `GET .../pending`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PendingItem {
    /// The config key.
    pub key: String,
    /// The current value.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// The value that applies at the next restart.
    #[serde(default)]
    pub pending: Option<serde_json::Value>,
    /// Set when the key is deleted at the next restart (1 or 2 = forced).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub delete: Option<u64>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Set once stopped: `OK`, `WARNINGS: N`, or an error message.
    #[serde(default)]
    pub exitstatus: Option<String>,
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskLogLine {
    /// Line number (1-based).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub n: Option<u64>,
    /// The text.
    #[serde(default)]
    pub t: String,
}

/// The answer of `POST /access/ticket`.
#[derive(Debug, Clone, Deserialize)]
pub struct TicketResponse {
    /// The `PVEAuthCookie` value.
    pub ticket: String,
    /// The header value writes must carry.
    #[serde(rename = "CSRFPreventionToken")]
    pub csrf_prevention_token: String,
    /// The user the ticket belongs to.
    #[serde(default)]
    pub username: String,
}

/// One node of `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// `online`, `offline` or `unknown`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A parsed task id: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    /// The whole string, as PVE sent it.
    pub raw: String,
    /// The node that runs the task (status is polled there).
    pub node: String,
    /// Process id (hex).
    pub pid: u32,
    /// Process start time (hex, jiffies).
    pub pstart: u64,
    /// Task start time (hex, epoch seconds).
    pub starttime: u64,
    /// Task type (`qmcreate`, `vzstart`...).
    pub task_type: String,
    /// The task's object id (usually the vmid).
    pub id: String,
    /// The user who started it.
    pub user: String,
}

impl FromStr for Upid {
    type Err = ProxmoxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ProxmoxError::InvalidUpid {
            upid: s.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        // The user may contain no ':'; a trailing ':' gives an empty last part.
        if parts.len() < 8 || parts[0] != "UPID" || parts[1].is_empty() {
            return Err(invalid());
        }
        let hex32 = |p: &str| u32::from_str_radix(p, 16).map_err(|_| invalid());
        let hex64 = |p: &str| u64::from_str_radix(p, 16).map_err(|_| invalid());
        Ok(Upid {
            raw: s.to_string(),
            node: parts[1].to_string(),
            pid: hex32(parts[2])?,
            pstart: hex64(parts[3])?,
            starttime: hex64(parts[4])?,
            task_type: parts[5].to_string(),
            id: parts[6].to_string(),
            user: parts[7].to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Formats a UPID the way PVE does (hex fields, trailing colon).
pub fn format_upid(
    node: &str,
    pid: u32,
    pstart: u64,
    starttime: u64,
    task_type: &str,
    id: &str,
    user: &str,
) -> String {
    format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{id}:{user}:")
}

/// True for the exit statuses PVE counts as success (`OK`, `WARNINGS: N`).
pub fn exit_status_is_ok(exit: &str) -> bool {
    exit == "OK" || exit.starts_with("WARNINGS:")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn upid_should_parse_node_type_and_id() {
        let u: Upid = "UPID:pve1:000C1A2B:0123ABCD:6750A1B2:qmcreate:120:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0x000C_1A2B);
        assert_eq!(u.task_type, "qmcreate");
        assert_eq!(u.id, "120");
        assert_eq!(u.user, "root@pam");
        assert_eq!(
            u.to_string(),
            "UPID:pve1:000C1A2B:0123ABCD:6750A1B2:qmcreate:120:root@pam:"
        );
    }

    #[test]
    fn upid_should_refuse_garbage() {
        assert!("UPID:pve1:zz".parse::<Upid>().is_err());
        assert!("not a upid".parse::<Upid>().is_err());
        assert!(
            "UPID:pve1:XYZ:0:0:qmstart:120:root@pam:"
                .parse::<Upid>()
                .is_err()
        );
    }

    #[test]
    fn format_upid_should_round_trip() {
        let s = format_upid("n2", 77, 5, 6, "vzstart", "121", "mycopod@pve!gitops");
        let u: Upid = s.parse().unwrap();
        assert_eq!((u.node.as_str(), u.pid, u.id.as_str()), ("n2", 77, "121"));
    }

    #[test]
    fn cluster_resource_should_accept_numbers_as_strings_and_bools_as_ints() {
        let json = r#"{"data":[
            {"id":"qemu/120","type":"qemu","vmid":"120","node":"pve1","name":"web","status":"running",
             "tags":"prod;web","template":0,"maxcpu":"2","maxmem":"2147483648","maxdisk":34359738368},
            {"id":"lxc/121","type":"lxc","vmid":121,"node":"pve1","status":"stopped","template":"1"}
        ]}"#;
        let env: Envelope<Vec<ClusterResource>> = serde_json::from_str(json).unwrap();
        assert_eq!(env.data[0].vmid, 120);
        assert_eq!(env.data[0].maxmem, Some(2_147_483_648));
        assert_eq!(env.data[0].maxcpu, Some(2.0));
        assert!(!env.data[0].template);
        assert!(env.data[1].template);
        assert_eq!(env.data[1].kind, GuestKind::Lxc);
    }

    #[test]
    fn exit_status_should_accept_ok_and_warnings_only() {
        assert!(exit_status_is_ok("OK"));
        assert!(exit_status_is_ok("WARNINGS: 2"));
        assert!(!exit_status_is_ok(
            "command 'qm start 120' failed: exit code 1"
        ));
    }
}
