//! Which declared guests an observation reads deeply (configuration and pending changes: one
//! `/pending` request each) and which it takes from their last deep read, so that observing a cluster
//! where nothing changed costs one request (`/cluster/resources`).
//!
//! A guest is read deeply when it was never read, when its declared spec changed, when what
//! the cluster listing says of it (node, status, name, tags, template, lock, CPUs, memory,
//! disk) differs from what it said at the last read, when its uptime went down (it restarted,
//! so pending changes may have taken effect), after something was applied to it, and when its
//! full re-read is due. Every guest is read again within `interval` of its last read, at a
//! jittered moment in the second half of that interval so that re-reads spread out instead of
//! arriving together; this bounds how long an edit made outside mycopod that the listing does
//! not show (a `description`, a NIC) goes unseen. Pure: the time and the jitter are given.
//!
//! The reads are kept per cluster endpoint and travel to and from the store's `guest_reads`
//! rows, so that one process's reads serve the next (`apply`, then `plan` or `serve`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mycopod_adapters::proxmox::api::ClusterResource;
use mycopod_adapters::proxmox::compare::ObservedConfig;
use mycopod_store::GuestRead;
use sha2::{Digest, Sha256};

/// The default bound on how long a guest goes without a full read.
pub const DEFAULT_FULL_READ_INTERVAL: Duration = Duration::from_secs(600);

/// The last deep read of each guest, per cluster endpoint.
#[derive(Debug)]
pub struct DeepReads {
    interval: Duration,
    entries: HashMap<(String, u32), Entry>,
    /// The clusters whose stored reads were loaded.
    loaded: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    spec: String,
    summary: String,
    uptime: Option<u64>,
    read_at: DateTime<Utc>,
    due: DateTime<Utc>,
    config: ObservedConfig,
}

/// What the cluster listing says of a guest that a configuration change would move, as a
/// fingerprint that is the same in every process.
fn summary(listed: &ClusterResource) -> String {
    let mut h = Sha256::new();
    let fields = [
        listed.node.clone(),
        listed.kind.as_str().to_owned(),
        format!("{:?}", listed.name),
        format!("{:?}", listed.status),
        format!("{:?}", listed.tags),
        listed.template.to_string(),
        format!("{:?}", listed.lock),
        format!("{:?}", listed.maxcpu.map(f64::to_bits)),
        format!("{:?}", listed.maxmem),
        format!("{:?}", listed.maxdisk),
    ];
    for field in fields {
        h.update(field.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The fingerprint of a declared spec as kept with a read.
pub fn spec_key(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

impl DeepReads {
    /// Every guest is read in full at least once per `interval` (zero: at every observation).
    pub fn new(interval: Duration) -> DeepReads {
        DeepReads {
            interval,
            entries: HashMap::new(),
            loaded: HashSet::new(),
        }
    }

    /// The last deep read of guest `listed.vmid` of `cluster` when it still stands for the
    /// guest: `listed` is what the cluster listing says of it now, `spec` the fingerprint of
    /// its declared spec ([`spec_key`]). `None` means: read it deeply.
    pub fn fresh(
        &self,
        cluster: &str,
        listed: &ClusterResource,
        spec: &str,
        now: DateTime<Utc>,
    ) -> Option<&ObservedConfig> {
        let entry = self.entries.get(&(cluster.to_owned(), listed.vmid))?;
        let restarted =
            matches!((entry.uptime, listed.uptime), (Some(before), Some(up)) if up < before);
        // The due time was set by whoever read it; this process's own interval bounds too.
        let bound = chrono::Duration::from_std(self.interval)
            .ok()
            .and_then(|i| entry.read_at.checked_add_signed(i))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let stands = entry.spec == spec
            && entry.summary == summary(listed)
            && !restarted
            && now < entry.due
            && now < bound;
        stands.then_some(&entry.config)
    }

    /// Records a deep read made at `now` and returns it as a store row. `jitter` in `[0, 1]`
    /// places the next full read between half the interval (1) and the whole interval (0)
    /// from now.
    pub fn record(
        &mut self,
        cluster: &str,
        listed: &ClusterResource,
        spec: &str,
        config: ObservedConfig,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> GuestRead {
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let wait = chrono::Duration::from_std(self.interval.mul_f64(1.0 - 0.5 * jitter))
            .unwrap_or(chrono::Duration::MAX);
        let entry = Entry {
            spec: spec.to_owned(),
            summary: summary(listed),
            uptime: listed.uptime,
            read_at: now,
            due: now
                .checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            config,
        };
        let row = GuestRead {
            cluster: cluster.to_owned(),
            vmid: listed.vmid,
            spec: entry.spec.clone(),
            summary: entry.summary.clone(),
            uptime: entry.uptime,
            read_at: entry.read_at,
            due_at: entry.due,
            config: serde_json::to_value(&entry.config).unwrap_or_default(),
        };
        self.entries
            .insert((cluster.to_owned(), listed.vmid), entry);
        row
    }

    /// Whether the stored reads of `cluster` were loaded.
    pub fn loaded(&self, cluster: &str) -> bool {
        self.loaded.contains(cluster)
    }

    /// Takes in stored reads of `cluster` (those that do not decode are left out) and marks
    /// it loaded. A read already held in memory is newer and kept.
    pub fn load(&mut self, cluster: &str, rows: Vec<GuestRead>) {
        for row in rows {
            let Ok(config) = serde_json::from_value::<ObservedConfig>(row.config) else {
                continue;
            };
            self.entries
                .entry((cluster.to_owned(), row.vmid))
                .or_insert(Entry {
                    spec: row.spec,
                    summary: row.summary,
                    uptime: row.uptime,
                    read_at: row.read_at,
                    due: row.due_at,
                    config,
                });
        }
        self.loaded.insert(cluster.to_owned());
    }

    /// Forgets a guest: its next observation reads it deeply (something was applied to it).
    pub fn forget(&mut self, cluster: &str, vmid: u32) {
        self.entries.remove(&(cluster.to_owned(), vmid));
    }

    /// Keeps only the guests `keep` names (those still declared and listed).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, u32) -> bool) {
        self.entries
            .retain(|(cluster, vmid), _| keep(cluster.as_str(), *vmid));
    }

    /// How many guests have a deep read on record.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no guest has a deep read on record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use mycopod_adapters::proxmox::api::GuestKind;

    const INTERVAL: Duration = Duration::from_secs(600);

    fn t0() -> DateTime<Utc> {
        use chrono::TimeZone as _;
        Utc.with_ymd_and_hms(2026, 12, 7, 6, 0, 0).unwrap()
    }

    fn min(n: i64) -> chrono::Duration {
        chrono::Duration::minutes(n)
    }

    fn listed() -> ClusterResource {
        serde_json::from_value(serde_json::json!({
            "id": "qemu/120", "type": "qemu", "vmid": 120, "node": "pve1", "name": "web",
            "status": "running", "tags": "web", "maxcpu": 2, "maxmem": 2147483648u64,
            "maxdisk": 34359738368u64, "uptime": 1000
        }))
        .unwrap()
    }

    fn config() -> ObservedConfig {
        ObservedConfig {
            config: [("cores".to_owned(), "2".to_owned())].into(),
            digest: Some("d1".into()),
            pending: Default::default(),
        }
    }

    #[test]
    fn a_deep_read_should_stand_until_something_it_depends_on_moves() {
        let t0 = t0();
        let mut reads = DeepReads::new(INTERVAL);
        assert!(
            reads.fresh("home", &listed(), "7", t0).is_none(),
            "never read"
        );
        reads.record("home", &listed(), "7", config(), t0, 0.0);
        assert_eq!(
            reads.fresh("home", &listed(), "7", t0 + min(1)),
            Some(&config())
        );

        let mut uptime_grew = listed();
        uptime_grew.uptime = Some(1060);
        assert!(
            reads
                .fresh("home", &uptime_grew, "7", t0 + min(1))
                .is_some(),
            "a growing uptime is no change"
        );
        assert!(
            reads.fresh("lab", &listed(), "7", t0 + min(1)).is_none(),
            "another cluster"
        );

        type Move = Box<dyn Fn(&mut ClusterResource)>;
        let moved: Vec<(&str, Move)> = vec![
            ("status", Box::new(|l| l.status = Some("stopped".into()))),
            ("node", Box::new(|l| l.node = "pve2".into())),
            ("cpus", Box::new(|l| l.maxcpu = Some(4.0))),
            ("memory", Box::new(|l| l.maxmem = Some(1 << 30))),
            ("disk", Box::new(|l| l.maxdisk = Some(1 << 36))),
            ("tags", Box::new(|l| l.tags = Some("web;prod".into()))),
            ("name", Box::new(|l| l.name = Some("www".into()))),
            ("lock", Box::new(|l| l.lock = Some("backup".into()))),
            ("template", Box::new(|l| l.template = true)),
            ("kind", Box::new(|l| l.kind = GuestKind::Lxc)),
            ("restart", Box::new(|l| l.uptime = Some(5))),
        ];
        for (what, change) in moved {
            let mut now_listed = listed();
            change(&mut now_listed);
            assert!(
                reads.fresh("home", &now_listed, "7", t0 + min(1)).is_none(),
                "a change of {what} must be read deeply"
            );
        }
        assert!(
            reads.fresh("home", &listed(), "8", t0 + min(1)).is_none(),
            "a changed spec must be read deeply"
        );
        reads.forget("home", 120);
        assert!(
            reads.fresh("home", &listed(), "7", t0 + min(1)).is_none(),
            "forgotten"
        );
    }

    #[test]
    fn every_guest_should_be_read_again_within_the_interval_at_a_jittered_moment() {
        let t0 = t0();
        let mut reads = DeepReads::new(INTERVAL);
        let seconds = chrono::Duration::seconds;
        for (jitter, due) in [
            (0.0, seconds(600)),
            (1.0, seconds(300)),
            (0.5, seconds(450)),
            (f64::NAN, seconds(600)),
            (7.0, seconds(300)),
        ] {
            reads.record("home", &listed(), "7", config(), t0, jitter);
            let just_before = t0 + due - chrono::Duration::milliseconds(1);
            assert!(
                reads.fresh("home", &listed(), "7", just_before).is_some(),
                "jitter {jitter}: still stands just before {due:?}"
            );
            assert!(
                reads.fresh("home", &listed(), "7", t0 + due).is_none(),
                "jitter {jitter}: due at {due:?}"
            );
        }
        let mut always = DeepReads::new(Duration::ZERO);
        always.record("home", &listed(), "7", config(), t0, 0.0);
        assert!(always.fresh("home", &listed(), "7", t0).is_none());
    }

    #[test]
    fn a_read_should_survive_the_trip_through_a_store_row() {
        let t0 = t0();
        let mut first = DeepReads::new(INTERVAL);
        let row = first.record("https://a:8006", &listed(), "7", config(), t0, 0.3);
        let mut next = DeepReads::new(INTERVAL);
        assert!(!next.loaded("https://a:8006"));
        let mut garbled = row.clone();
        garbled.vmid = 121;
        garbled.config = serde_json::json!({"config": 5});
        next.load("https://a:8006", vec![row, garbled]);
        assert!(next.loaded("https://a:8006"));
        assert_eq!(next.len(), 1, "a row that does not decode is read again");
        assert_eq!(
            next.fresh("https://a:8006", &listed(), "7", t0 + min(1)),
            Some(&config())
        );
        assert!(
            next.fresh("https://a:8006", &listed(), "7", t0 + min(10))
                .is_none(),
            "the due time travels too"
        );
        // A reader with a shorter interval reads it again sooner than its writer would have.
        let row = first.record("https://a:8006", &listed(), "7", config(), t0, 0.0);
        let mut eager = DeepReads::new(Duration::from_secs(60));
        eager.load("https://a:8006", vec![row]);
        assert!(eager.fresh("https://a:8006", &listed(), "7", t0).is_some());
        assert!(
            eager
                .fresh("https://a:8006", &listed(), "7", t0 + min(1))
                .is_none()
        );
    }

    #[test]
    fn retain_should_drop_guests_no_longer_declared() {
        let t0 = t0();
        let mut reads = DeepReads::new(INTERVAL);
        reads.record("home", &listed(), "7", config(), t0, 0.0);
        reads.record("lab", &listed(), "7", config(), t0, 0.0);
        reads.retain(|cluster, _| cluster == "lab");
        assert_eq!(reads.len(), 1);
        assert!(reads.fresh("lab", &listed(), "7", t0).is_some());
    }
}
