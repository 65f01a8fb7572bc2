//! Generates a realistic declarations repository of mixed kinds for the benchmark and the
//! `load_repo` example. Test support only: writes files into the folder it is given.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;

pub const DOCUMENTS: usize = 10_000;
pub const DOCS_PER_FILE: usize = 10;

fn cluster(i: usize) -> String {
    format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: cluster-{i}}}\nspec:\n  endpoint: https://pve{i}.lan:8006\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN_{i}}}\n  tls: {{caFile: /etc/mycopod/pve-ca.pem}}\n  defaultNode: pve1\n"
    )
}

fn guest(i: usize) -> String {
    let cluster = i % 10;
    if i.is_multiple_of(3) {
        format!(
            "apiVersion: mycopod/v1\nkind: Guest\nmetadata:\n  name: ct-{i}\n  labels: {{tier: lab}}\nspec:\n  cluster: cluster-{cluster}\n  type: lxc\n  vmid: {vmid}\n  ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  cores: 1\n  memory: 512MiB\n  swap: 512MiB\n  rootfs: {{storage: local-lvm, size: 4G}}\n  networks:\n    - {{name: eth0, bridge: vmbr0, ip: dhcp}}\n  unprivileged: true\n  features: {{nesting: true}}\n  tags: [lab]\n",
            vmid = 100 + i
        )
    } else {
        format!(
            "apiVersion: mycopod/v1\nkind: Guest\nmetadata:\n  name: vm-{i}\n  labels: {{tier: prod, app: web}}\nspec:\n  cluster: cluster-{cluster}\n  node: pve{node}\n  type: qemu\n  vmid: {vmid}\n  state: running\n  cores: 2\n  memory: 2GiB\n  disks:\n    - {{interface: scsi0, storage: local-lvm, size: 32G, ssd: true, discard: true}}\n  networks:\n    - {{model: virtio, bridge: vmbr0, vlan: 10, firewall: true}}\n  clone: {{from: 9000, full: true}}\n  agent: true\n  onboot: true\n  cloudInit:\n    user: debian\n    ipConfig:\n      - {{ip: dhcp}}\n  tags: [web, prod]\n",
            node = i % 3 + 1,
            vmid = 100 + i
        )
    }
}

fn device(i: usize) -> String {
    format!(
        "apiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {{name: fm-{i}}}\nspec:\n  connection: {{tcp: {{host: 10.0.{}.{}, port: 502}}}}\n  unit: 1\n  pollInterval: 10s\n  timeout: 1s\n  registers:\n    - {{name: flow_rate, table: holding, address: 0, type: f32, unit: m3/h}}\n    - {{name: totalizer, table: holding, address: 2, type: f32, unit: m3}}\n    - {{name: temperature, table: holding, address: 4, type: f32, unit: degC}}\n    - {{name: status, table: holding, address: 10, type: u16}}\n    - {{name: alarm, table: holding, address: 10, type: bool, bit: 0}}\n    - {{name: cutoff, table: holding, address: 20, type: f32, writable: true, min: 0, max: 5, tolerance: 0.001}}\n    - {{name: damping, table: holding, address: 22, type: f32, writable: true, min: 0, max: 100}}\n    - {{name: tag, table: holding, address: 30, type: string, length: 8}}\n  setpoints:\n    cutoff: 0.75\n    damping: 2\n",
        i / 250,
        i % 250
    )
}

fn alert(i: usize, devices: usize) -> String {
    format!(
        "apiVersion: mycopod/v1\nkind: AlertRule\nmetadata: {{name: alert-{i}}}\nspec:\n  device: fm-{}\n  register: flow_rate\n  condition: {{below: 2.0}}\n  for: 5m\n  hysteresis: 0.2\n  severity: warning\n  notify: [ops-{}]\n",
        i % devices,
        i % 10
    )
}

fn channel(i: usize) -> String {
    format!(
        "apiVersion: mycopod/v1\nkind: NotificationChannel\nmetadata: {{name: ops-{i}}}\nspec:\n  webhook: {{url: \"https://hooks.example/{i}\", secretEnv: HOOK_{i}}}\n"
    )
}

fn policy(i: usize) -> String {
    format!(
        "apiVersion: mycopod/v1\nkind: HandshakePolicy\nmetadata: {{name: policy-{i}}}\nspec:\n  match: {{kinds: [Guest], labels: {{tier: prod}}, verbs: [delete, stop]}}\n  approvals: 1\n  approverRoles: [admin]\n  expiresAfter: 1d\n  windows:\n    - {{days: [mon, tue, wed], start: \"18:00\", end: \"23:00\", timezone: Europe/Berlin}}\n"
    )
}

fn declaration(i: usize) -> String {
    format!(
        "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {{name: wish-{i}}}\nspec:\n  text: >\n    A small Debian container number {i} with one core and 512 MiB of memory on VLAN 20.\n"
    )
}

/// Writes the repository: 10 clusters, 10 channels, then guests, devices, alerts, policies
/// and declarations in realistic proportions, ten documents per file in nested folders.
pub fn generate(root: &Path) -> usize {
    let mut docs: Vec<String> = Vec::with_capacity(DOCUMENTS);
    docs.extend((0..10).map(cluster));
    docs.extend((0..10).map(channel));
    let rest = DOCUMENTS - docs.len();
    let (guests, devices, alerts, policies) = (
        rest * 45 / 100,
        rest * 25 / 100,
        rest * 20 / 100,
        rest * 5 / 100,
    );
    let declarations = rest - guests - devices - alerts - policies;
    docs.extend((0..guests).map(guest));
    docs.extend((0..devices).map(device));
    docs.extend((0..alerts).map(|i| alert(i, devices)));
    docs.extend((0..policies).map(policy));
    docs.extend((0..declarations).map(declaration));
    let mut bytes = 0;
    for (f, chunk) in docs.chunks(DOCS_PER_FILE).enumerate() {
        let dir = root.join(format!("area-{}", f / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for d in chunk {
            let _ = write!(text, "---\n{d}");
        }
        bytes += text.len();
        std::fs::write(dir.join(format!("file-{f}.yaml")), text).unwrap();
    }
    assert_eq!(docs.len(), DOCUMENTS);
    bytes
}
