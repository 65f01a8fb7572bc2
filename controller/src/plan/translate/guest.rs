//! From a `Guest` declaration to PVE's vocabulary: the keys and values a guest should have.
//!
//! Pure: no I/O. It translates; it never decides whether anything should change (the planner
//! compares the result with what was observed). Secrets are not translated: passwords are
//! read from their references at creation time by the caller and never enter a plan.

use std::collections::BTreeMap;

use mycopod_specs::kinds::{GuestSpec, GuestState, GuestType, Network};
use mycopod_specs::values::ByteSize;

use mycopod_adapters::proxmox::api::GuestKind;
use mycopod_adapters::proxmox::compare::{CreateSource, DesiredGuest, PowerState};

/// The tag mycopod puts on every guest it creates; only guests carrying it are ever deleted.
pub const MANAGED_TAG: &str = "managed-by-mycopod";

/// Why a declaration cannot be turned into a PVE guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestSpecError {
    /// Neither the guest nor its cluster names a node.
    #[error("guest {guest}: no node given and the cluster has no defaultNode")]
    NoNode {
        /// The guest's name.
        guest: String,
    },
}

/// The guest `name` (metadata) declares with `spec`, as PVE keys, with `vmid` already
/// resolved by the caller and `default_node` from the cluster.
pub fn desired_guest(
    name: &str,
    spec: &GuestSpec,
    vmid: u32,
    default_node: Option<&str>,
) -> Result<DesiredGuest, GuestSpecError> {
    let node = spec
        .node
        .as_ref()
        .map(|n| n.as_str().to_owned())
        .or_else(|| default_node.map(str::to_owned))
        .ok_or_else(|| GuestSpecError::NoNode {
            guest: name.to_owned(),
        })?;
    let kind = match spec.guest_type {
        GuestType::Qemu => GuestKind::Qemu,
        GuestType::Lxc => GuestKind::Lxc,
    };
    let mut config = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        config.insert(key.to_owned(), value);
    };

    if let Some(cores) = spec.cores {
        set("cores", cores.to_string());
    }
    if let Some(memory) = spec.memory {
        set("memory", memory.as_mib().to_string());
    }
    if let Some(ostype) = &spec.ostype {
        set("ostype", ostype.clone());
    }
    if let Some(onboot) = spec.onboot {
        set("onboot", flag(onboot));
    }
    if let Some(protection) = spec.protection {
        set("protection", flag(protection));
    }
    if let Some(startup) = &spec.startup {
        let mut parts = Vec::new();
        if let Some(order) = startup.order {
            parts.push(format!("order={order}"));
        }
        if let Some(up) = startup.up {
            parts.push(format!("up={}", up.as_std().as_secs()));
        }
        if let Some(down) = startup.down {
            parts.push(format!("down={}", down.as_std().as_secs()));
        }
        if !parts.is_empty() {
            set("startup", parts.join(","));
        }
    }
    if let Some(description) = &spec.description {
        set("description", description.clone());
    }
    set("tags", tags(&spec.tags));

    match kind {
        GuestKind::Qemu => {
            if let Some(sockets) = spec.sockets {
                set("sockets", sockets.to_string());
            }
            if let Some(cpu) = &spec.cpu {
                set("cpu", cpu.clone());
            }
            if let Some(balloon) = spec.balloon {
                set("balloon", balloon.as_mib().to_string());
            }
            if let Some(agent) = spec.agent {
                set("agent", flag(agent));
            }
            for disk in &spec.disks {
                let mut value = allocation(&disk.storage, disk.size);
                push_flag(&mut value, "ssd", disk.ssd);
                if let Some(discard) = disk.discard {
                    value.push_str(if discard {
                        ",discard=on"
                    } else {
                        ",discard=ignore"
                    });
                }
                push_flag(&mut value, "iothread", disk.iothread);
                push_opt(&mut value, "cache", disk.cache.as_deref());
                push_opt(&mut value, "format", disk.format.as_deref());
                set(&disk.interface, value);
            }
            for (i, net) in spec.networks.iter().enumerate() {
                set(&format!("net{i}"), qemu_net(net));
            }
            if let Some(ci) = &spec.cloud_init {
                if let Some(user) = &ci.user {
                    set("ciuser", user.clone());
                }
                if !ci.ssh_keys.is_empty() {
                    set("sshkeys", percent_encode(&ci.ssh_keys.join("\n")));
                }
                for (i, ip) in ci.ip_config.iter().enumerate() {
                    let mut parts = Vec::new();
                    for (k, v) in [
                        ("ip", &ip.ip),
                        ("gw", &ip.gw),
                        ("ip6", &ip.ip6),
                        ("gw6", &ip.gw6),
                    ] {
                        if let Some(v) = v {
                            parts.push(format!("{k}={v}"));
                        }
                    }
                    if !parts.is_empty() {
                        set(&format!("ipconfig{i}"), parts.join(","));
                    }
                }
                if !ci.nameservers.is_empty() {
                    set("nameserver", ci.nameservers.join(" "));
                }
                if let Some(domain) = &ci.search_domain {
                    set("searchdomain", domain.clone());
                }
            }
        }
        GuestKind::Lxc => {
            if let Some(swap) = spec.swap {
                set("swap", swap.as_mib().to_string());
            }
            if let Some(rootfs) = &spec.rootfs {
                set("rootfs", allocation(&rootfs.storage, rootfs.size));
            }
            for mp in &spec.mount_points {
                let mut value = match (&mp.host_path, &mp.storage, mp.size) {
                    (Some(host), _, _) => host.clone(),
                    (None, Some(storage), Some(size)) => allocation(storage, size),
                    (None, Some(storage), None) => format!("{storage}:1"),
                    (None, None, _) => String::new(),
                };
                value.push_str(&format!(",mp={}", mp.path));
                push_flag(&mut value, "backup", mp.backup);
                push_flag(&mut value, "ro", mp.read_only);
                set(&mp.id, value.trim_start_matches(',').to_owned());
            }
            for (i, net) in spec.networks.iter().enumerate() {
                set(&format!("net{i}"), lxc_net(net, i));
            }
            if let Some(unprivileged) = spec.unprivileged {
                set("unprivileged", flag(unprivileged));
            }
            if let Some(features) = &spec.features {
                let mut parts = Vec::new();
                for (k, v) in [
                    ("nesting", features.nesting),
                    ("keyctl", features.keyctl),
                    ("fuse", features.fuse),
                ] {
                    if let Some(v) = v {
                        parts.push(format!("{k}={}", flag(v)));
                    }
                }
                if !features.mount.is_empty() {
                    parts.push(format!("mount={}", features.mount.join(";")));
                }
                if !parts.is_empty() {
                    set("features", parts.join(","));
                }
            }
        }
    }
    // The escape hatch goes last so that it wins over anything translated above.
    for (key, value) in &spec.extra_config {
        set(key, value.to_string());
    }

    let source = match (kind, &spec.clone, &spec.ostemplate) {
        (GuestKind::Qemu, Some(clone), _) => CreateSource::Clone {
            from: clone.from.get(),
            full: clone.full,
            node: None,
        },
        (GuestKind::Lxc, _, Some(template)) => CreateSource::OsTemplate(template.clone()),
        _ => CreateSource::Plain,
    };
    let guest_name = match kind {
        GuestKind::Qemu => spec.name.clone(),
        GuestKind::Lxc => spec.hostname.clone(),
    }
    .unwrap_or_else(|| name.to_owned());

    Ok(DesiredGuest {
        vmid,
        node,
        kind,
        name: Some(guest_name),
        config,
        remove: Default::default(),
        power: match spec.state {
            GuestState::Running => PowerState::Running,
            GuestState::Stopped | GuestState::Absent => PowerState::Stopped,
        },
        source,
    })
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_owned()
}

fn push_flag(value: &mut String, key: &str, on: Option<bool>) {
    if let Some(on) = on {
        value.push_str(&format!(",{key}={}", flag(on)));
    }
}

fn push_opt(value: &mut String, key: &str, option: Option<&str>) {
    if let Some(v) = option {
        value.push_str(&format!(",{key}={v}"));
    }
}

/// PVE's allocation syntax for a new volume: `storage:SIZE` with the size in GiB.
fn allocation(storage: &str, size: ByteSize) -> String {
    const GIB: u64 = 1 << 30;
    let bytes = size.as_bytes();
    if bytes.is_multiple_of(GIB) {
        // The common case, without the float formatting.
        return format!("{storage}:{}", bytes / GIB);
    }
    let gib = bytes as f64 / GIB as f64;
    let text = format!("{gib:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{storage}:{text}")
}

/// The declared tags plus the managed tag, lower-cased, sorted and `;`-separated as PVE keeps
/// them.
fn tags(declared: &[String]) -> String {
    let mut set: std::collections::BTreeSet<String> =
        declared.iter().map(|t| t.trim().to_lowercase()).collect();
    set.insert(MANAGED_TAG.to_owned());
    set.into_iter().collect::<Vec<_>>().join(";")
}

fn qemu_net(net: &Network) -> String {
    let mut value = net.model.clone().unwrap_or_else(|| "virtio".to_owned());
    value.push_str(&format!(",bridge={}", net.bridge));
    if let Some(vlan) = net.vlan {
        value.push_str(&format!(",tag={vlan}"));
    }
    push_flag(&mut value, "firewall", net.firewall);
    if let Some(mtu) = net.mtu {
        value.push_str(&format!(",mtu={mtu}"));
    }
    push_opt(&mut value, "macaddr", net.mac.as_deref());
    value
}

fn lxc_net(net: &Network, index: usize) -> String {
    let name = net.name.clone().unwrap_or_else(|| format!("eth{index}"));
    let mut value = format!("name={name},bridge={}", net.bridge);
    for (k, v) in [
        ("ip", &net.ip),
        ("gw", &net.gw),
        ("ip6", &net.ip6),
        ("gw6", &net.gw6),
    ] {
        push_opt(&mut value, k, v.as_deref());
    }
    if let Some(vlan) = net.vlan {
        value.push_str(&format!(",tag={vlan}"));
    }
    push_flag(&mut value, "firewall", net.firewall);
    if let Some(mtu) = net.mtu {
        value.push_str(&format!(",mtu={mtu}"));
    }
    push_opt(&mut value, "hwaddr", net.mac.as_deref());
    value
}

/// PVE wants `sshkeys` URL-encoded: every byte outside `A-Za-z0-9-_.~` as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use expect_test::expect;

    #[test]
    fn allocation_should_write_whole_and_fractional_gib() {
        let gib = 1u64 << 30;
        let cases = [
            (32 * gib, "local-lvm:32"),
            (gib + gib / 2, "local-lvm:1.5"),
            (gib / 2, "local-lvm:0.5"),
            (0, "local-lvm:0"),
        ];
        for (bytes, want) in cases {
            assert_eq!(allocation("local-lvm", ByteSize::from_bytes(bytes)), want);
        }
    }

    fn guest(yaml_spec: &str) -> (String, GuestSpec) {
        let text = format!(
            "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  endpoint: https://pve.lan:8006\n  auth: {{tokenId: \"a@pve!b\", secretEnv: PVE_TOKEN}}\n  defaultNode: pve1\n---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: g}}\nspec:\n{}",
            yaml_spec
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        let loaded = mycopod_specs::load_str("g.yaml", &text);
        let checked = mycopod_specs::check(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let g = &checked.desired.guests[0];
        (g.name().as_str().to_owned(), g.spec.clone())
    }

    fn render(d: &DesiredGuest) -> String {
        let mut out = format!(
            "{} vmid={} node={} name={:?} power={:?} source={:?}\n",
            d.kind, d.vmid, d.node, d.name, d.power, d.source
        );
        for (k, v) in &d.config {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }

    #[test]
    fn a_qemu_guest_should_translate_every_declared_field_to_pve_keys() {
        let (name, spec) = guest(
            "cluster: home\ntype: qemu\nvmid: 120\nstate: running\ncores: 2\nsockets: 1\ncpu: host\nmemory: 2GiB\nballoon: 1GiB\nagent: true\nonboot: true\nstartup: {order: 2, up: 30s}\ndisks: [{interface: scsi0, storage: local-lvm, size: 32G, ssd: true, discard: true, iothread: true}]\nnetworks: [{model: virtio, bridge: vmbr0, vlan: 10, firewall: true}]\nclone: {from: 9000, full: true}\ntags: [Web, prod]\ncloudInit: {user: ops, sshKeys: [\"ssh-ed25519 AAAA ops@lan\"], ipConfig: [{ip: dhcp}], nameservers: [10.0.0.1]}\nextraConfig: {vga: serial0}",
        );
        let desired = desired_guest(&name, &spec, 120, Some("pve1")).unwrap();
        expect![[r#"
            qemu vmid=120 node=pve1 name=Some("g") power=Running source=Clone { from: 9000, full: true, node: None }
            agent: 1
            balloon: 1024
            ciuser: ops
            cores: 2
            cpu: host
            ipconfig0: ip=dhcp
            memory: 2048
            nameserver: 10.0.0.1
            net0: virtio,bridge=vmbr0,tag=10,firewall=1
            onboot: 1
            scsi0: local-lvm:32,ssd=1,discard=on,iothread=1
            sockets: 1
            sshkeys: ssh-ed25519%20AAAA%20ops%40lan
            startup: order=2,up=30
            tags: managed-by-mycopod;prod;web
            vga: serial0
        "#]]
        .assert_eq(&render(&desired));
    }

    #[test]
    fn an_lxc_guest_should_translate_rootfs_mounts_networks_and_features() {
        let (name, spec) = guest(
            "cluster: home\ntype: lxc\nvmid: 121\nstate: stopped\nhostname: dns\nostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\ncores: 1\nmemory: 512MiB\nswap: 256MiB\nrootfs: {storage: local-lvm, size: 4G}\nmountPoints: [{id: mp0, storage: tank, size: 500M, path: /data, backup: true}]\nnetworks: [{name: eth0, bridge: vmbr0, ip: dhcp}]\nunprivileged: true\nfeatures: {nesting: true}",
        );
        let desired = desired_guest(&name, &spec, 121, Some("pve1")).unwrap();
        expect![[r#"
            lxc vmid=121 node=pve1 name=Some("dns") power=Stopped source=OsTemplate("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
            cores: 1
            features: nesting=1
            memory: 512
            mp0: tank:0.488,mp=/data,backup=1
            net0: name=eth0,bridge=vmbr0,ip=dhcp
            rootfs: local-lvm:4
            swap: 256
            tags: managed-by-mycopod
            unprivileged: 1
        "#]]
        .assert_eq(&render(&desired));
    }

    #[test]
    fn a_guest_without_a_node_should_take_the_cluster_default_or_fail_by_name() {
        let (name, spec) = guest("cluster: home\ntype: qemu\nvmid: 130");
        assert_eq!(
            desired_guest(&name, &spec, 130, Some("pve2")).unwrap().node,
            "pve2"
        );
        assert_eq!(
            desired_guest(&name, &spec, 130, None).unwrap_err(),
            GuestSpecError::NoNode { guest: "g".into() }
        );
    }
}
