//! PVE property strings (`virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10`,
//! `local-lvm:vm-120-disk-0,size=32G`, `order=1,up=30`) and the value normalizations PVE
//! applies: sizes with units, booleans as 0/1, tags as a set, MAC addresses in any case.
//!
//! Pure functions only; what counts as a difference for a whole guest is `compare.rs`'s job.

use std::collections::BTreeSet;

use super::api::parse_bool;

/// NIC models PVE writes as `model=MAC` in a qemu `netN`.
const NIC_MODELS: &[&str] = &[
    "virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "i82551", "i82557b", "i82559er", "ne2k_isa",
    "ne2k_pci", "pcnet",
];

/// A parsed property string: fields in their order, positional values under their default key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropString {
    /// `(key, value)` pairs; a flag without `=` and without a default key has an empty value.
    pub fields: Vec<(String, String)>,
}

impl PropString {
    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Renders the fields back into PVE's `a=b,c=d` form, the default key written positionally.
    pub fn render(&self, pve_key: &str) -> String {
        let default = default_key(pve_key);
        let mut parts = Vec::with_capacity(self.fields.len());
        for (k, v) in &self.fields {
            if Some(k.as_str()) == default {
                parts.insert(0, v.clone());
            } else if v.is_empty() {
                parts.push(k.clone());
            } else {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.join(",")
    }
}

/// The strip of trailing digits: `net0` -> `net`, `scsi12` -> `scsi`.
pub fn key_family(key: &str) -> &str {
    key.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// True for keys holding a volume: qemu disks, `efidisk0`, `tpmstate0`, lxc `rootfs` and `mpN`.
pub fn is_disk_key(key: &str) -> bool {
    let fam = key_family(key);
    let numbered = fam.len() < key.len();
    matches!(key, "rootfs" | "efidisk0" | "tpmstate0")
        || (numbered && matches!(fam, "scsi" | "virtio" | "sata" | "ide" | "mp" | "unused"))
}

/// The key a positional first value stands for, per PVE's formats.
pub fn default_key(pve_key: &str) -> Option<&'static str> {
    if is_disk_key(pve_key) {
        return Some(if key_family(pve_key) == "mp" || pve_key == "rootfs" {
            "volume"
        } else {
            "file"
        });
    }
    match key_family(pve_key) {
        "net" => Some("model"),
        "memory" => Some("current"),
        "agent" => Some("enabled"),
        "startup" => Some("order"),
        "cpu" => Some("cputype"),
        "vga" => Some("type"),
        "rng" => Some("source"),
        "efidisk" => Some("file"),
        _ => None,
    }
}

/// Parses a property string for the given PVE key.
pub fn parse(pve_key: &str, value: &str) -> PropString {
    PropString {
        fields: parse_borrowed(pve_key, value)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

/// The fields of a property string, borrowed; the usual handful stay on the stack.
pub type Fields<'a> = smallvec::SmallVec<[(&'a str, &'a str); 8]>;

/// [`parse`] without copying: the fields borrow from `value` (comparisons parse every owned
/// property string of every guest on each plan, so they must not allocate per field).
pub fn parse_borrowed<'a>(pve_key: &str, value: &'a str) -> Fields<'a> {
    let default = default_key(pve_key);
    let is_net = key_family(pve_key) == "net";
    let mut fields = Fields::new();
    for (i, part) in value.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) => {
                let k = k.trim();
                let v = v.trim();
                if is_net && NIC_MODELS.contains(&k) {
                    fields.push(("model", k));
                    if !v.is_empty() {
                        fields.push(("macaddr", v));
                    }
                } else {
                    fields.push((k, v));
                }
            }
            None => match default {
                Some(d) if i == 0 => fields.push((d, part)),
                _ => fields.push((part, "")),
            },
        }
    }
    fields
}

fn field<'a>(fields: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Parses a size like `32G`, `32768M`, `1.5T`, `4GiB` or a bare number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1u64 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1u64 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1u64 << 40),
        c if c.is_ascii_digit() => (s, 1),
        _ => return None,
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f = num
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)?;
    Some((f * mult as f64).round() as u64)
}

/// Formats bytes the way PVE writes sizes: the largest unit that divides evenly.
pub fn format_size(bytes: u64) -> String {
    for (unit, mult) in [
        ('T', 1u64 << 40),
        ('G', 1 << 30),
        ('M', 1 << 20),
        ('K', 1 << 10),
    ] {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    bytes.to_string()
}

/// Tags as PVE keeps them: lower-cased, split on `;`, `,` or spaces, as a set.
pub fn parse_tags(s: &str) -> BTreeSet<String> {
    s.split([';', ',', ' '])
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// If `file` uses the allocation syntax `storage:SIZE_GIB`, returns the storage and the size.
pub fn allocation(file: &str) -> Option<(&str, u64)> {
    let (storage, size) = file.split_once(':')?;
    if storage.is_empty()
        || size.is_empty()
        || !size.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    let gib = size.parse::<f64>().ok()?;
    Some((storage, (gib * (1u64 << 30) as f64).round() as u64))
}

/// The size in bytes a disk value declares: its `size=` field, else its allocation syntax.
pub fn disk_size(pve_key: &str, value: &str) -> Option<u64> {
    let p = parse_borrowed(pve_key, value);
    if let Some(s) = field(&p, "size") {
        return parse_size(s);
    }
    let file = field(&p, default_key(pve_key).unwrap_or("file"))?;
    allocation(file).map(|(_, bytes)| bytes)
}

/// Two scalar values are equal for PVE: same text, same boolean, same number, or same size.
pub fn scalar_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (parse_bool(a), parse_bool(b)) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x == y;
    }
    let has_unit = |s: &str| s.ends_with(|c: char| c.is_ascii_alphabetic());
    if (has_unit(a) || has_unit(b))
        && let (Some(x), Some(y)) = (parse_size(a), parse_size(b))
    {
        return x == y;
    }
    false
}

fn field_eq(field: &str, observed: &str, desired: &str) -> bool {
    match field {
        "macaddr" | "hwaddr" => observed.eq_ignore_ascii_case(desired),
        "size" => match (parse_size(observed), parse_size(desired)) {
            (Some(x), Some(y)) => x == y,
            _ => observed == desired,
        },
        _ => scalar_eq(observed, desired),
    }
}

/// Decodes `%XX` escapes (PVE keeps `sshkeys` URL-encoded).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an observed value satisfies a desired one for the PVE key `pve_key`.
///
/// Only the fields the desired value sets are compared, so what PVE adds (a MAC, `size=`, a
/// volume name for an allocation) never counts as a difference.
pub fn value_matches(pve_key: &str, observed: &str, desired: &str) -> bool {
    // Every rule below holds a value equal to itself; most owned keys come back from PVE
    // exactly as they were sent, so this skips the parsing for them.
    if observed == desired {
        return true;
    }
    match pve_key {
        "tags" => return parse_tags(observed) == parse_tags(desired),
        "description" => return observed.trim_end() == desired.trim_end(),
        "sshkeys" => {
            return percent_decode(observed).trim() == percent_decode(desired).trim();
        }
        _ => {}
    }
    if !desired.contains('=') && !desired.contains(',') && !observed.contains('=') {
        if let Some((storage, bytes)) = allocation(desired).filter(|_| is_disk_key(pve_key)) {
            return observed.split_once(':').map(|(s, _)| s) == Some(storage)
                && disk_size(pve_key, observed).is_none_or(|o| o == bytes);
        }
        return scalar_eq(observed, desired);
    }
    let want = parse_borrowed(pve_key, desired);
    let have = parse_borrowed(pve_key, observed);
    let file_key = default_key(pve_key).filter(|_| is_disk_key(pve_key));
    for &(k, v) in &want {
        if Some(k) == file_key
            && let Some((storage, bytes)) = allocation(v)
        {
            let Some(hv) = field(&have, k) else {
                return false;
            };
            if hv.split_once(':').map(|(s, _)| s) != Some(storage) {
                return false;
            }
            if field(&want, "size").is_none()
                && let Some(hs) = field(&have, "size").and_then(parse_size)
                && hs != bytes
            {
                return false;
            }
            continue;
        }
        match field(&have, k) {
            Some(hv) => {
                if !field_eq(k, hv, v) {
                    return false;
                }
            }
            None => {
                // A flag set to its false value is the same as an absent one.
                if parse_bool(v) != Some(false) {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_should_split_a_qemu_nic_into_model_and_mac() {
        let p = parse("net0", "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=10");
        assert_eq!(p.get("model"), Some("virtio"));
        assert_eq!(p.get("macaddr"), Some("BC:24:11:AA:BB:CC"));
        assert_eq!(p.get("bridge"), Some("vmbr0"));
        assert_eq!(p.get("tag"), Some("10"));
    }

    #[test]
    fn parse_should_put_a_positional_volume_under_its_default_key() {
        let p = parse("scsi0", "local-lvm:vm-120-disk-0,size=32G,ssd=1");
        assert_eq!(p.get("file"), Some("local-lvm:vm-120-disk-0"));
        assert_eq!(p.get("size"), Some("32G"));
        let s = parse("startup", "order=1,up=30");
        assert_eq!(s.get("order"), Some("1"));
        assert_eq!(parse("startup", "2,up=5").get("order"), Some("2"));
        assert_eq!(
            parse("rootfs", "local-lvm:8").get("volume"),
            Some("local-lvm:8")
        );
    }

    #[test]
    fn value_matches_should_ignore_what_pve_adds() {
        assert!(value_matches(
            "net0",
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=10",
            "virtio,bridge=vmbr0,tag=10"
        ));
        assert!(value_matches(
            "net0",
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0",
            "model=virtio,bridge=vmbr0"
        ));
        assert!(!value_matches(
            "net0",
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=10",
            "virtio,bridge=vmbr0,tag=20"
        ));
        assert!(value_matches(
            "net0",
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0",
            "virtio=bc:24:11:aa:bb:cc,bridge=vmbr0"
        ));
    }

    #[test]
    fn value_matches_should_compare_disks_by_storage_and_size() {
        let observed = "local-lvm:vm-120-disk-0,size=32G,ssd=1";
        assert!(value_matches("scsi0", observed, "local-lvm:32,ssd=1"));
        assert!(value_matches("scsi0", observed, "local-lvm:32"));
        assert!(!value_matches("scsi0", observed, "local-lvm:40"));
        assert!(!value_matches("scsi0", observed, "ceph:32"));
        assert!(value_matches(
            "scsi0",
            observed,
            "local-lvm:vm-120-disk-0,size=32768M"
        ));
        assert!(value_matches(
            "rootfs",
            "local-lvm:vm-121-disk-0,size=8G",
            "local-lvm:8"
        ));
        assert!(value_matches(
            "scsi0",
            "local-lvm:vm-120-disk-0,size=32G",
            "local-lvm:32,discard=0"
        ));
    }

    #[test]
    fn value_matches_should_normalize_tags_booleans_and_sizes() {
        assert!(value_matches("tags", "prod;web", "Web,prod"));
        assert!(!value_matches("tags", "prod;web", "web"));
        assert!(value_matches("onboot", "1", "yes"));
        assert!(!value_matches("onboot", "0", "1"));
        assert!(value_matches("memory", "2048", "2048"));
        assert!(value_matches("memory", "current=2048", "2048"));
        assert!(value_matches(
            "agent",
            "enabled=1,fstrim_cloned_disks=1",
            "1"
        ));
        assert!(value_matches("description", "hello\n", "hello"));
        assert!(value_matches(
            "sshkeys",
            "ssh-ed25519%20AAAA%20me%40home%0A",
            "ssh-ed25519 AAAA me@home"
        ));
        assert!(scalar_eq("32G", "32768M"));
        assert!(!scalar_eq("web", "web2"));
    }

    #[test]
    fn sizes_should_parse_and_format_like_pve() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("1.5T"), Some(3 << 39));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(format_size(32768 << 20), "32G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(disk_size("scsi0", "local-lvm:32"), Some(32 << 30));
        assert_eq!(
            disk_size("scsi0", "local-lvm:vm-1-disk-0,size=10G"),
            Some(10 << 30)
        );
    }

    #[test]
    fn render_should_write_the_default_key_first() {
        let p = parse("scsi0", "local-lvm:vm-120-disk-0,size=32G,ssd=1");
        assert_eq!(p.render("scsi0"), "local-lvm:vm-120-disk-0,size=32G,ssd=1");
    }

    #[test]
    fn tags_should_be_a_lowercase_set() {
        let t = parse_tags("Prod; web,,db");
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec!["db", "prod", "web"]);
    }

    #[test]
    fn percent_decode_should_keep_lone_percent_signs() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%20b"), "a b");
    }
}
