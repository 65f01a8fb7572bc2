//! The seven kinds of `apiVersion: mycopod/v1` as typed Rust: the envelope (`metadata`) and one
//! `*Spec` struct per kind, with serde field names as users write them (camelCase) and JSON
//! Schema derived from the same types. Plain data: no loading and no cross-document checks here.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{
    ByteSize, Duration, HttpUrl, Ident, Name, RegisterAddress, TimeOfDay, TimeZone, Vmid,
};

/// The only API version this crate reads.
pub const API_VERSION: &str = "mycopod/v1";

/// The seven document kinds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Kind {
    /// A Proxmox VE cluster and how to reach it.
    ProxmoxCluster,
    /// A QEMU VM or LXC container.
    Guest,
    /// A Modbus device with its register map and setpoints.
    ModbusDevice,
    /// A threshold or offline alert on a register.
    AlertRule,
    /// Where alerts are sent.
    NotificationChannel,
    /// Who must approve which actions, and when.
    HandshakePolicy,
    /// Free text for an LLM to translate into the other kinds.
    Declaration,
}

impl Kind {
    /// All kinds, in the order the desired state lists them.
    pub const ALL: [Kind; 7] = [
        Kind::ProxmoxCluster,
        Kind::Guest,
        Kind::ModbusDevice,
        Kind::AlertRule,
        Kind::NotificationChannel,
        Kind::HandshakePolicy,
        Kind::Declaration,
    ];

    /// The kind as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ProxmoxCluster => "ProxmoxCluster",
            Kind::Guest => "Guest",
            Kind::ModbusDevice => "ModbusDevice",
            Kind::AlertRule => "AlertRule",
            Kind::NotificationChannel => "NotificationChannel",
            Kind::HandshakePolicy => "HandshakePolicy",
            Kind::Declaration => "Declaration",
        }
    }

    /// The kind named `text`, exactly.
    pub fn from_text(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique per kind.
    pub name: Name,
    /// Free key/value labels, matched by handshake policies (`tier: prod`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free key/value notes, never interpreted.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Whether the controller changes the world (`enforce`) or only reports drift (`detect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plan and apply changes.
    #[default]
    Enforce,
    /// Report drift, change nothing.
    Detect,
}

// ---------------------------------------------------------------------------------------------
// ProxmoxCluster

/// `kind: ProxmoxCluster`: how to reach a Proxmox VE cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxmoxClusterSpec {
    /// API endpoint, such as `https://pve.lan:8006`.
    pub endpoint: HttpUrl,
    /// Credentials, by reference only.
    pub auth: ProxmoxAuth,
    /// TLS verification.
    #[serde(default)]
    pub tls: Tls,
    /// Node used by guests that name none.
    #[serde(default)]
    pub default_node: Option<Name>,
}

/// Proxmox credentials: an API token (`tokenId` + `secretEnv`/`secretFile`) or a user with a
/// password reference (`user` + `passwordEnv`/`passwordFile`). `secret` and `password` are
/// accepted by the parser only so that validation can explain why they are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxmoxAuth {
    /// API token id, `user@realm!token`.
    #[serde(default)]
    pub token_id: Option<String>,
    /// Environment variable holding the token secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the token secret.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Refused: an inline token secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// User, `root@pam`.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Refused: an inline password.
    #[serde(default)]
    pub password: Option<String>,
}

/// TLS settings for the Proxmox API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// CA certificate (PEM) that signed the PVE certificate.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Turn verification off (reported as a warning).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

// ---------------------------------------------------------------------------------------------
// Guest

/// QEMU VM or LXC container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// A QEMU/KVM virtual machine.
    Qemu,
    /// An LXC container.
    Lxc,
}

/// Desired power state; `absent` asks for deletion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestState {
    /// Exists and runs.
    #[default]
    Running,
    /// Exists, stopped.
    Stopped,
    /// Does not exist.
    Absent,
}

/// What mycopod does when a running guest has configuration changes that PVE keeps pending
/// until the guest restarts (CPU or memory of a running VM, say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Never restart: the plan notes the pending changes; someone restarts the guest by hand.
    #[default]
    Never,
    /// Plan a `restart` action that always waits for at least one approval, whatever the
    /// handshake policies say.
    Approval,
    /// Plan a `restart` action governed by the handshake policies like any other verb
    /// (without a policy for it, a restart needs one approval, as a stop does).
    Auto,
}

/// `kind: Guest`: a Proxmox VE guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GuestSpec {
    /// The ProxmoxCluster this guest lives in.
    pub cluster: Name,
    /// Node; defaults to the cluster's `defaultNode`.
    #[serde(default)]
    pub node: Option<Name>,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub guest_type: GuestType,
    /// Guest id; without one PVE chooses and adoption is unreliable (a warning).
    #[serde(default)]
    pub vmid: Option<Vmid>,
    /// QEMU name (defaults to `metadata.name`).
    #[serde(default)]
    pub name: Option<String>,
    /// LXC hostname (defaults to `metadata.name`).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Desired power state.
    #[serde(default)]
    pub state: GuestState,
    /// `enforce` (default) or `detect`.
    #[serde(default)]
    pub mode: Mode,
    /// Whether pending changes are applied by restarting the guest: `never` (default),
    /// `approval` or `auto`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// CPU cores (per socket for qemu).
    #[serde(default)]
    pub cores: Option<u32>,
    /// CPU sockets (qemu).
    #[serde(default)]
    pub sockets: Option<u32>,
    /// CPU type (qemu), such as `host` or `x86-64-v2-AES`.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory; a plain number means MiB.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Swap (lxc).
    #[serde(default)]
    pub swap: Option<ByteSize>,
    /// Balloon minimum (qemu); `0` disables ballooning.
    #[serde(default)]
    pub balloon: Option<ByteSize>,
    /// Disks (qemu).
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Root filesystem (lxc).
    #[serde(default)]
    pub rootfs: Option<RootFs>,
    /// Mount points (lxc).
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    /// Network interfaces.
    #[serde(default)]
    pub networks: Vec<Network>,
    /// Creation by cloning a template (qemu).
    #[serde(default)]
    pub clone: Option<CloneSource>,
    /// Creation from a container template (lxc), `storage:vztmpl/file`.
    #[serde(default)]
    pub ostemplate: Option<String>,
    /// OS type (`l26`, `win11` for qemu; `debian`, `alpine` for lxc).
    #[serde(default)]
    pub ostype: Option<String>,
    /// PVE tags; the controller adds `managed-by-mycopod`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Start at boot.
    #[serde(default)]
    pub onboot: Option<bool>,
    /// Boot order and delays.
    #[serde(default)]
    pub startup: Option<Startup>,
    /// Protection against removal.
    #[serde(default)]
    pub protection: Option<bool>,
    /// Unprivileged container (lxc).
    #[serde(default)]
    pub unprivileged: Option<bool>,
    /// Container features (lxc).
    #[serde(default)]
    pub features: Option<LxcFeatures>,
    /// QEMU guest agent (qemu).
    #[serde(default)]
    pub agent: Option<bool>,
    /// Cloud-init settings (qemu).
    #[serde(default)]
    pub cloud_init: Option<CloudInit>,
    /// Root password reference for a new container (lxc): an environment variable.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Refused: an inline container root password.
    #[serde(default)]
    pub password: Option<String>,
    /// Free text shown in the PVE UI.
    #[serde(default)]
    pub description: Option<String>,
    /// Raw PVE configuration keys applied verbatim (escape hatch).
    #[serde(default)]
    pub extra_config: BTreeMap<String, ScalarValue>,
}

/// A scalar YAML value: text, number or boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScalarValue {
    /// `true`/`false`.
    Bool(bool),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction.
    Float(f64),
    /// Text.
    Text(String),
}

impl fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarValue::Bool(b) => write!(f, "{}", u8::from(*b)),
            ScalarValue::Integer(n) => write!(f, "{n}"),
            ScalarValue::Float(x) => write!(f, "{x}"),
            ScalarValue::Text(t) => f.write_str(t),
        }
    }
}

/// A qemu disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Disk {
    /// Bus and index: `scsi0`, `virtio1`, `sata0`, `ide2`.
    pub interface: String,
    /// Storage id, such as `local-lvm`.
    pub storage: String,
    /// Size, such as `32G`.
    pub size: ByteSize,
    /// Present as an SSD.
    #[serde(default)]
    pub ssd: Option<bool>,
    /// Pass discard/TRIM through.
    #[serde(default)]
    pub discard: Option<bool>,
    /// Dedicated IO thread.
    #[serde(default)]
    pub iothread: Option<bool>,
    /// Cache mode (`none`, `writeback`, ...).
    #[serde(default)]
    pub cache: Option<String>,
    /// Image format (`raw`, `qcow2`).
    #[serde(default)]
    pub format: Option<String>,
}

/// An lxc root filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RootFs {
    /// Storage id.
    pub storage: String,
    /// Size, such as `8G`.
    pub size: ByteSize,
}

/// An lxc mount point (`mp0`...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountPoint {
    /// PVE key, `mp0` to `mp255`.
    pub id: String,
    /// Storage id (a volume is allocated) ...
    #[serde(default)]
    pub storage: Option<String>,
    /// ... of this size.
    #[serde(default)]
    pub size: Option<ByteSize>,
    /// Or a host path bind-mounted instead.
    #[serde(default)]
    pub host_path: Option<String>,
    /// Path inside the container.
    pub path: String,
    /// Include in backups.
    #[serde(default)]
    pub backup: Option<bool>,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// A network interface. `model` is for qemu; `name`, `ip`, `gw`, `ip6`, `gw6` are for lxc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// NIC model (qemu): `virtio`, `e1000`, `vmxnet3`, `rtl8139`.
    #[serde(default)]
    pub model: Option<String>,
    /// Interface name inside the container (lxc), `eth0`.
    #[serde(default)]
    pub name: Option<String>,
    /// Bridge, `vmbr0`.
    pub bridge: String,
    /// VLAN tag, 1..=4094.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// PVE firewall on this interface.
    #[serde(default)]
    pub firewall: Option<bool>,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Fixed MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// IPv4 (lxc): `dhcp`, `manual` or CIDR.
    #[serde(default)]
    pub ip: Option<String>,
    /// IPv4 gateway (lxc).
    #[serde(default)]
    pub gw: Option<String>,
    /// IPv6 (lxc): `dhcp`, `auto`, `manual` or CIDR.
    #[serde(default)]
    pub ip6: Option<String>,
    /// IPv6 gateway (lxc).
    #[serde(default)]
    pub gw6: Option<String>,
}

/// Clone source of a qemu guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloneSource {
    /// Template vmid.
    pub from: Vmid,
    /// Full clone (default) rather than linked.
    #[serde(default = "yes")]
    pub full: bool,
    /// Target storage for a full clone.
    #[serde(default)]
    pub storage: Option<String>,
}

fn yes() -> bool {
    true
}

/// Boot order and delays (PVE `startup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Startup {
    /// Start order, lower first.
    #[serde(default)]
    pub order: Option<u32>,
    /// Delay after start before the next guest.
    #[serde(default)]
    pub up: Option<Duration>,
    /// Timeout for shutdown.
    #[serde(default)]
    pub down: Option<Duration>,
}

/// Container features (lxc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LxcFeatures {
    /// Allow nested containers (docker in lxc).
    #[serde(default)]
    pub nesting: Option<bool>,
    /// Allow keyctl.
    #[serde(default)]
    pub keyctl: Option<bool>,
    /// Allow FUSE.
    #[serde(default)]
    pub fuse: Option<bool>,
    /// Allowed filesystem types to mount (`nfs`, `cifs`).
    #[serde(default)]
    pub mount: Vec<String>,
}

/// Cloud-init (qemu).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudInit {
    /// Default user.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding that user's password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Refused: an inline password.
    #[serde(default)]
    pub password: Option<String>,
    /// Public SSH keys (public keys are not secrets).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// IP configuration per interface (`ipconfig0`, ...), in order.
    #[serde(default)]
    pub ip_config: Vec<IpConfig>,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// DNS search domain.
    #[serde(default)]
    pub search_domain: Option<String>,
}

/// One cloud-init interface configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpConfig {
    /// `dhcp` or CIDR.
    #[serde(default)]
    pub ip: Option<String>,
    /// Gateway.
    #[serde(default)]
    pub gw: Option<String>,
    /// `dhcp`, `auto` or CIDR.
    #[serde(default)]
    pub ip6: Option<String>,
    /// IPv6 gateway.
    #[serde(default)]
    pub gw6: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// ModbusDevice

/// `kind: ModbusDevice`: a device, its register map and the setpoints to hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModbusDeviceSpec {
    /// How to reach the device.
    pub connection: Connection,
    /// Unit (slave) id, 0..=247; default 1.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Poll interval, default `10s`.
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
    /// Timeout of one request, default `1s`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Failed polls in a row before the device counts as offline; default 3.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    /// Largest gap of unused registers bridged when coalescing reads; default 16.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// `enforce` writes setpoints; `detect` only reports drift.
    #[serde(default)]
    pub mode: Mode,
    /// The register map.
    #[serde(default)]
    pub registers: Vec<Register>,
    /// Register name -> desired value.
    #[serde(default)]
    pub setpoints: BTreeMap<String, SetpointValue>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> Duration {
    Duration::from(std::time::Duration::from_secs(10))
}
fn default_timeout() -> Duration {
    Duration::from(std::time::Duration::from_secs(1))
}
fn default_offline_after() -> u32 {
    3
}
fn default_max_gap() -> u16 {
    16
}

/// Transport to a Modbus device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Connection {
    /// Modbus TCP.
    Tcp(TcpConnection),
    /// RTU frames tunnelled over TCP (serial gateways).
    RtuOverTcp(TcpConnection),
    /// Modbus RTU on a serial line.
    Rtu(RtuConnection),
}

/// A TCP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpConnection {
    /// Host name or IP address.
    pub host: String,
    /// Port, default 502.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    502
}

/// Serial line parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// A serial line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RtuConnection {
    /// Device path, `/dev/ttyUSB0`.
    pub path: String,
    /// Baud rate, default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity, default none.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2; default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Data bits, default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
}

fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> u8 {
    1
}
fn default_data_bits() -> u8 {
    8
}

/// Modbus data table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers (read/write words).
    Holding,
    /// Input registers (read-only words).
    Input,
    /// Coils (read/write bits).
    Coil,
    /// Discrete inputs (read-only bits).
    Discrete,
}

impl Table {
    /// Whether the table holds single bits rather than 16-bit words.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Whether the protocol can write to the table.
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Holding | Table::Coil)
    }
}

/// Value type of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// Unsigned 32-bit (two registers).
    U32,
    /// Signed 32-bit (two registers).
    I32,
    /// Unsigned 64-bit (four registers).
    U64,
    /// Signed 64-bit (four registers).
    I64,
    /// IEEE 754 single (two registers).
    F32,
    /// IEEE 754 double (four registers).
    F64,
    /// A bit: a coil or discrete input, or one `bit` of a word.
    Bool,
    /// ASCII text, two characters per register, `length` registers.
    String,
}

impl ValueType {
    /// Registers the type needs (`None` for strings, whose length is given).
    pub fn words(self) -> Option<u16> {
        match self {
            ValueType::U16 | ValueType::I16 | ValueType::Bool => Some(1),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(2),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(4),
            ValueType::String => None,
        }
    }

    /// Whether values of this type are numbers (usable in thresholds).
    pub fn is_numeric(self) -> bool {
        !matches!(self, ValueType::Bool | ValueType::String)
    }

    /// The type as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
            ValueType::Bool => "bool",
            ValueType::String => "string",
        }
    }
}

/// Order of words in multi-register values, or of bytes within a word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (Modbus' own convention).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// One entry of a register map. The engineering value is `raw * scale + offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Register {
    /// Name used by setpoints and alert rules.
    pub name: Ident,
    /// Data table.
    pub table: Table,
    /// Zero-based address of the first register.
    pub address: RegisterAddress,
    /// Value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Registers occupied; required for strings, optional check for others.
    #[serde(default)]
    pub length: Option<u16>,
    /// Bit of a holding/input word, 0..=15, for `bool` values.
    #[serde(default)]
    pub bit: Option<u8>,
    /// Order of the words of multi-register values.
    #[serde(default)]
    pub word_order: Order,
    /// Order of the bytes within each word.
    #[serde(default)]
    pub byte_order: Order,
    /// Multiplier applied to the raw value.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Added after scaling.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Engineering unit, `m3/h`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Whether setpoints may write it.
    #[serde(default)]
    pub writable: bool,
    /// Lowest allowed engineering value.
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest allowed engineering value.
    #[serde(default)]
    pub max: Option<f64>,
    /// Largest difference between read and desired values that still counts as equal.
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

impl Register {
    /// Registers (or bits) occupied, from the type and `length`.
    pub fn width(&self) -> u32 {
        if self.table.is_bits() {
            return 1;
        }
        match self.value_type.words() {
            Some(w) => u32::from(self.length.unwrap_or(w).max(w)),
            None => u32::from(self.length.unwrap_or(1).max(1)),
        }
    }
}

/// Desired value of a writable register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SetpointValue {
    /// For `bool` registers and coils.
    Bool(bool),
    /// For numeric registers (engineering units).
    Number(f64),
    /// For `string` registers.
    Text(String),
}

// ---------------------------------------------------------------------------------------------
// AlertRule

/// Alert severity.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// For the record.
    Info,
    /// Look soon.
    #[default]
    Warning,
    /// Act now.
    Critical,
}

/// `kind: AlertRule`: a condition on a register (or device reachability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// The ModbusDevice.
    pub device: Name,
    /// The register (not needed for `offline`).
    #[serde(default)]
    pub register: Option<Ident>,
    /// When to fire.
    pub condition: Condition,
    /// How long the condition must hold before firing.
    #[serde(default, rename = "for")]
    pub for_duration: Option<Duration>,
    /// Distance from the threshold the value must recover before the alert clears.
    #[serde(default)]
    pub hysteresis: Option<f64>,
    /// Severity of the alert.
    #[serde(default)]
    pub severity: AlertSeverity,
    /// NotificationChannel names.
    #[serde(default)]
    pub notify: Vec<Name>,
}

/// Alert condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Condition {
    /// Value above the threshold.
    Above(f64),
    /// Value below the threshold.
    Below(f64),
    /// Value outside `[lo, hi]`.
    Outside([f64; 2]),
    /// The device stopped answering (`offline: true`).
    Offline(bool),
}

// ---------------------------------------------------------------------------------------------
// NotificationChannel

/// `kind: NotificationChannel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationChannelSpec {
    /// An HMAC-SHA256 signed webhook.
    pub webhook: Webhook,
    /// Lowest alert severity sent; default `info` (all).
    #[serde(default)]
    pub min_severity: Option<AlertSeverity>,
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Webhook {
    /// Target URL.
    pub url: HttpUrl,
    /// Environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the signing secret.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Refused: an inline signing secret.
    #[serde(default)]
    pub secret: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// HandshakePolicy

/// An action verb, as planned by the controller.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Create a guest.
    Create,
    /// Change a guest's configuration.
    Update,
    /// Start a guest.
    Start,
    /// Stop a guest.
    Stop,
    /// Delete a guest.
    Delete,
    /// Restart a running guest so that its pending configuration takes effect.
    Restart,
    /// Write a Modbus setpoint.
    Write,
    /// Insert or update configuration held in the database.
    Upsert,
    /// Remove configuration held in the database.
    Remove,
}

impl Verb {
    /// Every verb, in the order DESIGN.md lists them.
    pub const ALL: [Verb; 9] = [
        Verb::Create,
        Verb::Update,
        Verb::Start,
        Verb::Stop,
        Verb::Delete,
        Verb::Restart,
        Verb::Write,
        Verb::Upsert,
        Verb::Remove,
    ];

    /// The verb as written in keys, policies and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Delete => "delete",
            Verb::Restart => "restart",
            Verb::Write => "write",
            Verb::Upsert => "upsert",
            Verb::Remove => "remove",
        }
    }

    /// Parses a verb as written in policies and keys.
    pub fn parse(text: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|verb| verb.as_str() == text)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Operator roles.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Approves, rejects, triggers, acknowledges.
    Operator,
    /// Everything.
    Admin,
}

/// Weekday for time windows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// `kind: HandshakePolicy`: which actions need how many approvals, from whom, and when they
/// may be applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HandshakePolicySpec {
    /// Which actions the policy governs.
    #[serde(rename = "match")]
    pub match_: PolicyMatch,
    /// Distinct approvals required; 0 applies automatically.
    #[serde(default = "default_approvals")]
    pub approvals: u32,
    /// Roles whose approvals count; default operator and admin.
    #[serde(default = "default_roles")]
    pub approver_roles: Vec<Role>,
    /// Whether the author of the change may approve it.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// A waiting run expires after this long.
    #[serde(default)]
    pub expires_after: Option<Duration>,
    /// When approved actions may be applied; empty means any time.
    #[serde(default)]
    pub windows: Vec<TimeWindow>,
}

fn default_approvals() -> u32 {
    1
}
fn default_roles() -> Vec<Role> {
    vec![Role::Operator, Role::Admin]
}

/// Selects actions. Every given criterion must match; an empty list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Kinds of the resources.
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Resource names; `*` matches any run of characters.
    #[serde(default)]
    pub names: Vec<String>,
    /// Labels the resource must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Verbs of the actions.
    #[serde(default)]
    pub verbs: Vec<Verb>,
}

/// A weekly window in a time zone. `end` before `start` spans midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeWindow {
    /// Days the window opens on; empty means every day.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Opening time.
    pub start: TimeOfDay,
    /// Closing time.
    pub end: TimeOfDay,
    /// IANA time zone; default UTC.
    #[serde(default)]
    pub timezone: Option<TimeZone>,
}

// ---------------------------------------------------------------------------------------------
// Declaration

/// `kind: Declaration`: natural language to be translated (never applied as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeclarationSpec {
    /// What the owner wants, in their words.
    pub text: String,
    /// Kinds the translation may produce; empty means any.
    #[serde(default)]
    pub kinds: Vec<Kind>,
}

/// The typed `spec` of a document, one variant per kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    /// `ProxmoxCluster`.
    ProxmoxCluster(ProxmoxClusterSpec),
    /// `Guest`.
    Guest(Box<GuestSpec>),
    /// `ModbusDevice`.
    ModbusDevice(ModbusDeviceSpec),
    /// `AlertRule`.
    AlertRule(AlertRuleSpec),
    /// `NotificationChannel`.
    NotificationChannel(NotificationChannelSpec),
    /// `HandshakePolicy`.
    HandshakePolicy(HandshakePolicySpec),
    /// `Declaration`.
    Declaration(DeclarationSpec),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::ProxmoxCluster(_) => Kind::ProxmoxCluster,
            Spec::Guest(_) => Kind::Guest,
            Spec::ModbusDevice(_) => Kind::ModbusDevice,
            Spec::AlertRule(_) => Kind::AlertRule,
            Spec::NotificationChannel(_) => Kind::NotificationChannel,
            Spec::HandshakePolicy(_) => Kind::HandshakePolicy,
            Spec::Declaration(_) => Kind::Declaration,
        }
    }
}
