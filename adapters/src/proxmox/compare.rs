//! Desired and observed guest configuration in PVE's own vocabulary, and their comparison on
//! owned keys only, plus the translation of differences into the PVE requests that remove them.
//!
//! Pure: no I/O, no clock. It reports differences; whether to act on them is the planner's call.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::api::GuestKind;
use super::error::ProxmoxError;
use super::propstring::{self, is_disk_key};

/// The power state a guest should be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Started.
    Running,
    /// Stopped.
    Stopped,
}

/// Where a new guest comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CreateSource {
    /// A plain `POST /nodes/{node}/qemu` (or lxc without a template, which PVE refuses).
    Plain,
    /// A clone of a qemu template, followed by a config update with the desired keys.
    Clone {
        /// The template's vmid.
        from: u32,
        /// Full clone (`full=1`) rather than a linked clone.
        full: bool,
        /// The node the template lives on, when it differs from the guest's node.
        node: Option<String>,
    },
    /// An LXC container from an `ostemplate` volume.
    OsTemplate(String),
}

/// A guest as the spec wants it, in PVE keys. Built by the caller from a `Guest` spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGuest {
    /// The guest's vmid.
    pub vmid: u32,
    /// The node it lives (or is created) on.
    pub node: String,
    /// qemu or lxc.
    pub kind: GuestKind,
    /// The guest name (`name` for qemu, `hostname` for lxc) unless `config` sets that key.
    pub name: Option<String>,
    /// PVE keys the spec owns, with their desired values (`cores`, `net0`, `tags`...).
    pub config: BTreeMap<String, String>,
    /// Keys the spec used to own and no longer sets: they are deleted (`delete=`).
    pub remove: BTreeSet<String>,
    /// The power state wanted.
    pub power: PowerState,
    /// How the guest is created when it does not exist.
    pub source: CreateSource,
}

impl DesiredGuest {
    /// A guest with no keys, running, created plainly (qemu) on `node`.
    pub fn new(vmid: u32, node: impl Into<String>, kind: GuestKind) -> Self {
        DesiredGuest {
            vmid,
            node: node.into(),
            kind,
            name: None,
            config: BTreeMap::new(),
            remove: BTreeSet::new(),
            power: PowerState::Running,
            source: CreateSource::Plain,
        }
    }

    /// Sets one key (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// The key the guest name lives under.
    pub fn name_key(&self) -> &'static str {
        match self.kind {
            GuestKind::Qemu => "name",
            GuestKind::Lxc => "hostname",
        }
    }

    /// The owned keys with their desired values, the name included.
    pub fn owned_config(&self) -> BTreeMap<String, String> {
        let mut c = self.config.clone();
        if let Some(name) = &self.name {
            c.entry(self.name_key().to_string())
                .or_insert_with(|| name.clone());
        }
        c
    }

    /// The owned keys with their desired values, the name included, without copying them
    /// (in key order, like [`DesiredGuest::owned_config`]).
    pub fn owned(&self) -> impl Iterator<Item = (&str, &str)> {
        let name = self
            .name
            .as_deref()
            .filter(|_| !self.config.contains_key(self.name_key()))
            .map(|n| (self.name_key(), n));
        let key = self.name_key();
        let mut name = name.into_iter().peekable();
        let mut config = self
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .peekable();
        std::iter::from_fn(move || match (config.peek(), name.peek()) {
            (Some((k, _)), Some(_)) if *k < key => config.next(),
            (_, Some(_)) => name.next(),
            (Some(_), None) => config.next(),
            (None, None) => None,
        })
    }

    /// Whether the spec owns `key` (the name key included when a name is set).
    pub fn owns(&self, key: &str) -> bool {
        self.config.contains_key(key) || (self.name.is_some() && key == self.name_key())
    }

    /// Every key the spec owns or owned: only these are ever compared.
    pub fn owned_keys(&self) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = self.owned().map(|(k, _)| k.to_owned()).collect();
        keys.extend(self.remove.iter().cloned());
        keys
    }

    /// `qemu/120` style label for logs and errors.
    pub fn label(&self) -> String {
        format!("{}/{} on {}", self.kind, self.vmid, self.node)
    }
}

/// A change waiting in `/pending` for the next restart of a running guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingChange {
    /// The key gets this value.
    Set(String),
    /// The key is removed.
    Delete,
}

/// A guest's configuration as read from PVE (one deep read).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObservedConfig {
    /// Current values (what the running guest uses), `digest` excluded.
    pub config: BTreeMap<String, String>,
    /// The digest to pass with the next update.
    pub digest: Option<String>,
    /// Changes that take effect at the next restart.
    pub pending: BTreeMap<String, PendingChange>,
}

/// One owned key whose observed value differs from the desired one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FieldDiff {
    /// The PVE key.
    pub key: String,
    /// What the guest uses now (`None`: absent).
    pub observed: Option<String>,
    /// What the spec wants (`None`: the key should be removed).
    pub desired: Option<String>,
    /// The desired value is already in `/pending`: only a restart is missing.
    pub pending: bool,
}

/// Compares owned keys only; PVE's normalizations never show up as differences.
///
/// Sorted by key. A key whose desired value already waits in `/pending` is reported with
/// `pending: true` (restart required), never as a change to write again.
pub fn compare(desired: &DesiredGuest, observed: &ObservedConfig) -> Vec<FieldDiff> {
    let mut diffs = Vec::new();
    for (key, want) in desired.owned() {
        let current = observed.config.get(key);
        let current_ok = current.is_some_and(|c| propstring::value_matches(key, c, want));
        let pending = match observed.pending.get(key) {
            Some(PendingChange::Set(p)) if propstring::value_matches(key, p, want) => {
                if current_ok {
                    continue;
                }
                true
            }
            Some(_) => false,
            None if current_ok => continue,
            None => false,
        };
        diffs.push(FieldDiff {
            key: key.to_owned(),
            observed: current.cloned(),
            desired: Some(want.to_owned()),
            pending,
        });
    }
    for key in &desired.remove {
        if desired.owns(key) {
            continue;
        }
        let current = observed.config.get(key);
        match (current, observed.pending.get(key)) {
            (None, None) => {}
            (Some(c), Some(PendingChange::Delete)) => diffs.push(FieldDiff {
                key: key.clone(),
                observed: Some(c.clone()),
                desired: None,
                pending: true,
            }),
            (None, Some(PendingChange::Delete)) => {}
            (c, _) => diffs.push(FieldDiff {
                key: key.clone(),
                observed: c.cloned(),
                desired: None,
                pending: false,
            }),
        }
    }
    diffs.sort();
    diffs
}

/// The requests that remove a set of differences: a config update and disk resizes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigUpdate {
    /// Keys to set, with the exact value to send.
    pub set: BTreeMap<String, String>,
    /// Keys to delete.
    pub delete: BTreeSet<String>,
    /// Disks to grow: key and the new size (`40G`).
    pub resize: BTreeMap<String, String>,
}

impl ConfigUpdate {
    /// True when nothing is to be sent.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty() && self.resize.is_empty()
    }
}

/// Turns differences into requests. Existing disks keep their volume (the allocation syntax
/// would add a new disk): options are rewritten on the observed volume and growth becomes a
/// `resize`; a smaller size is refused with [`ProxmoxError::ShrinkRefused`].
pub fn update_for(
    desired: &DesiredGuest,
    observed: &ObservedConfig,
    diffs: &[FieldDiff],
) -> Result<ConfigUpdate, ProxmoxError> {
    let mut update = ConfigUpdate::default();
    for d in diffs.iter().filter(|d| !d.pending) {
        let Some(want) = &d.desired else {
            update.delete.insert(d.key.clone());
            continue;
        };
        let existing = observed.config.get(&d.key).filter(|_| is_disk_key(&d.key));
        let Some(have) = existing else {
            update.set.insert(d.key.clone(), want.clone());
            continue;
        };
        let guest = desired.label();
        let have_size = propstring::disk_size(&d.key, have);
        let want_size = propstring::disk_size(&d.key, want);
        if let (Some(h), Some(w)) = (have_size, want_size) {
            if w < h {
                return Err(ProxmoxError::ShrinkRefused {
                    guest,
                    disk: d.key.clone(),
                    observed: propstring::format_size(h),
                    desired: propstring::format_size(w),
                });
            }
            if w > h {
                update
                    .resize
                    .insert(d.key.clone(), propstring::format_size(w));
            }
        }
        // Options other than the volume and its size: rewrite them onto the observed volume.
        let file_key = propstring::default_key(&d.key).unwrap_or("file");
        let have_p = propstring::parse(&d.key, have);
        let want_p = propstring::parse(&d.key, want);
        let want_volume = want_p.get(file_key).unwrap_or_default();
        let same_volume = propstring::allocation(want_volume).is_some()
            || want_volume.is_empty()
            || have_p.get(file_key) == Some(want_volume);
        if !same_volume {
            // A different volume entirely: send it as written.
            update.set.insert(d.key.clone(), want.clone());
            continue;
        }
        let mut merged = have_p.clone();
        for (k, v) in &want_p.fields {
            if k == file_key || k == "size" {
                continue;
            }
            match merged.fields.iter_mut().find(|(mk, _)| mk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => merged.fields.push((k.clone(), v.clone())),
            }
        }
        if merged != have_p {
            update.set.insert(d.key.clone(), merged.render(&d.key));
        }
    }
    Ok(update)
}

/// A stable hash of a desired guest (what is sent for it); equal specs hash equally. The
/// controller re-reads a guest in full when its fingerprint changes.
pub fn guest_fingerprint(desired: &DesiredGuest) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(desired.vmid.to_le_bytes());
    h.update(desired.node.as_bytes());
    h.update(desired.kind.as_str().as_bytes());
    for (k, v) in desired.owned() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([1]);
    }
    for k in &desired.remove {
        h.update(k.as_bytes());
        h.update([2]);
    }
    h.update(format!("{:?}{:?}", desired.power, desired.source).as_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn observed(pairs: &[(&str, &str)]) -> ObservedConfig {
        ObservedConfig {
            config: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            digest: Some("abc".into()),
            pending: BTreeMap::new(),
        }
    }

    fn web() -> DesiredGuest {
        DesiredGuest::new(120, "pve1", GuestKind::Qemu)
            .with("cores", "2")
            .with("memory", "2048")
            .with("net0", "virtio,bridge=vmbr0,tag=10")
            .with("scsi0", "local-lvm:32,ssd=1")
            .with("tags", "web;prod")
    }

    #[test]
    fn owned_should_list_the_same_pairs_as_owned_config_in_the_same_order() {
        let qemu = DesiredGuest::new(100, "pve1", GuestKind::Qemu)
            .with("cores", "2")
            .with("net0", "virtio,bridge=vmbr0")
            .with("tags", "a");
        let lxc = DesiredGuest::new(101, "pve1", GuestKind::Lxc)
            .with("cores", "1")
            .with("memory", "512");
        let named_in_config = DesiredGuest::new(102, "pve1", GuestKind::Qemu).with("name", "x");
        for mut guest in [qemu, lxc, named_in_config] {
            for name in [None, Some("web")] {
                guest.name = name.map(str::to_owned);
                let borrowed: Vec<(String, String)> = guest
                    .owned()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let owned: Vec<(String, String)> = guest.owned_config().into_iter().collect();
                assert_eq!(borrowed, owned, "{guest:?}");
                for (k, _) in &owned {
                    assert!(guest.owns(k), "{k} of {guest:?}");
                }
                assert!(!guest.owns("nothing"));
            }
        }
    }

    #[test]
    fn compare_should_find_nothing_when_pve_only_normalized() {
        let o = observed(&[
            ("cores", "2"),
            ("memory", "2048"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10"),
            ("scsi0", "local-lvm:vm-120-disk-0,size=32G,ssd=1"),
            ("tags", "prod;web"),
            ("vmgenid", "1234"),
            ("sockets", "1"),
        ]);
        assert_eq!(compare(&web(), &o), vec![]);
    }

    #[test]
    fn compare_should_ignore_keys_the_spec_does_not_own() {
        let mut o = observed(&[("cores", "2"), ("memory", "2048"), ("onboot", "1")]);
        o.config.insert(
            "net0".into(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10".into(),
        );
        o.config.insert(
            "scsi0".into(),
            "local-lvm:vm-120-disk-0,size=32G,ssd=1".into(),
        );
        o.config.insert("tags".into(), "prod;web".into());
        o.config.insert("balloon".into(), "0".into());
        assert!(compare(&web(), &o).is_empty());
    }

    #[test]
    fn compare_should_report_changes_removals_and_pending() {
        let mut d = web();
        d.remove.insert("onboot".into());
        let mut o = observed(&[
            ("cores", "1"),
            ("memory", "1024"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10"),
            ("scsi0", "local-lvm:vm-120-disk-0,size=32G,ssd=1"),
            ("tags", "prod;web"),
            ("onboot", "1"),
        ]);
        o.pending
            .insert("memory".into(), PendingChange::Set("2048".into()));
        let diffs = compare(&d, &o);
        assert_eq!(
            diffs,
            vec![
                FieldDiff {
                    key: "cores".into(),
                    observed: Some("1".into()),
                    desired: Some("2".into()),
                    pending: false
                },
                FieldDiff {
                    key: "memory".into(),
                    observed: Some("1024".into()),
                    desired: Some("2048".into()),
                    pending: true
                },
                FieldDiff {
                    key: "onboot".into(),
                    observed: Some("1".into()),
                    desired: None,
                    pending: false
                },
            ]
        );
        let u = update_for(&d, &o, &diffs).unwrap();
        assert_eq!(u.set.get("cores").map(String::as_str), Some("2"));
        assert!(!u.set.contains_key("memory"));
        assert!(u.delete.contains("onboot"));
    }

    #[test]
    fn update_should_grow_disks_with_resize_and_keep_the_volume() {
        let d = DesiredGuest::new(120, "pve1", GuestKind::Qemu)
            .with("scsi0", "local-lvm:40,ssd=1,discard=on");
        let o = observed(&[("scsi0", "local-lvm:vm-120-disk-0,size=32G,ssd=1")]);
        let diffs = compare(&d, &o);
        let u = update_for(&d, &o, &diffs).unwrap();
        assert_eq!(u.resize.get("scsi0").map(String::as_str), Some("40G"));
        assert_eq!(
            u.set.get("scsi0").map(String::as_str),
            Some("local-lvm:vm-120-disk-0,size=32G,ssd=1,discard=on")
        );
    }

    #[test]
    fn update_should_refuse_to_shrink_a_disk() {
        let d = DesiredGuest::new(120, "pve1", GuestKind::Qemu).with("scsi0", "local-lvm:16");
        let o = observed(&[("scsi0", "local-lvm:vm-120-disk-0,size=32G")]);
        let diffs = compare(&d, &o);
        let err = update_for(&d, &o, &diffs).unwrap_err();
        assert!(matches!(err, ProxmoxError::ShrinkRefused { .. }), "{err}");
        assert_eq!(err.class(), super::super::error::ErrorClass::Rejected);
    }

    #[test]
    fn spec_hash_should_change_with_the_spec() {
        let a = web();
        let b = web().with("cores", "4");
        assert_eq!(guest_fingerprint(&a), guest_fingerprint(&web()));
        assert_ne!(guest_fingerprint(&a), guest_fingerprint(&b));
    }
}
