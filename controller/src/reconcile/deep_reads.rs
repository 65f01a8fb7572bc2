//! Which declared guests an observation reads deeply (configuration and pending changes: two
//! requests each) and which it takes from their last deep read, so that observing a cluster
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

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use mycopod_adapters::proxmox::api::ClusterResource;
use mycopod_adapters::proxmox::compare::ObservedConfig;

/// The default bound on how long a guest goes without a full read.
pub const DEFAULT_FULL_READ_INTERVAL: Duration = Duration::from_secs(600);

/// The last deep read of each guest, per cluster.
#[derive(Debug)]
pub struct DeepReads {
    interval: Duration,
    entries: HashMap<(String, u32), Entry>,
}

#[derive(Debug)]
struct Entry {
    spec: u64,
    summary: u64,
    uptime: Option<u64>,
    due: Instant,
    config: ObservedConfig,
}

/// What the cluster listing says of a guest that a configuration change would move.
fn summary(listed: &ClusterResource) -> u64 {
    let mut h = DefaultHasher::new();
    listed.node.hash(&mut h);
    listed.kind.as_str().hash(&mut h);
    listed.name.hash(&mut h);
    listed.status.hash(&mut h);
    listed.tags.hash(&mut h);
    listed.template.hash(&mut h);
    listed.lock.hash(&mut h);
    listed.maxcpu.map(f64::to_bits).hash(&mut h);
    listed.maxmem.hash(&mut h);
    listed.maxdisk.hash(&mut h);
    h.finish()
}

impl DeepReads {
    /// Every guest is read in full at least once per `interval` (zero: at every observation).
    pub fn new(interval: Duration) -> DeepReads {
        DeepReads {
            interval,
            entries: HashMap::new(),
        }
    }

    /// The last deep read of guest `vmid` of `cluster` when it still stands for the guest:
    /// `listed` is what the cluster listing says of it now, `spec` the fingerprint of its
    /// declared spec. `None` means: read it deeply.
    pub fn fresh(
        &self,
        cluster: &str,
        listed: &ClusterResource,
        spec: u64,
        now: Instant,
    ) -> Option<&ObservedConfig> {
        let entry = self.entries.get(&(cluster.to_owned(), listed.vmid))?;
        let restarted =
            matches!((entry.uptime, listed.uptime), (Some(before), Some(up)) if up < before);
        let stands =
            entry.spec == spec && entry.summary == summary(listed) && !restarted && now < entry.due;
        stands.then_some(&entry.config)
    }

    /// Records a deep read made at `now`. `jitter` in `[0, 1]` places the next full read
    /// between half the interval (1) and the whole interval (0) from now.
    pub fn record(
        &mut self,
        cluster: &str,
        listed: &ClusterResource,
        spec: u64,
        config: ObservedConfig,
        now: Instant,
        jitter: f64,
    ) {
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let due = now + self.interval.mul_f64(1.0 - 0.5 * jitter);
        self.entries.insert(
            (cluster.to_owned(), listed.vmid),
            Entry {
                spec,
                summary: summary(listed),
                uptime: listed.uptime,
                due,
                config,
            },
        );
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

    const MIN: Duration = Duration::from_secs(60);

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
        let t0 = Instant::now();
        let mut reads = DeepReads::new(10 * MIN);
        assert!(
            reads.fresh("home", &listed(), 7, t0).is_none(),
            "never read"
        );
        reads.record("home", &listed(), 7, config(), t0, 0.0);
        assert_eq!(reads.fresh("home", &listed(), 7, t0 + MIN), Some(&config()));

        let mut uptime_grew = listed();
        uptime_grew.uptime = Some(1060);
        let cases: Vec<(&str, ClusterResource, u64, &str)> = vec![
            ("uptime grew", uptime_grew, 7, "home"),
            ("another cluster", listed(), 7, "lab"),
        ];
        for (what, now_listed, spec, cluster) in cases {
            let stands = reads.fresh(cluster, &now_listed, spec, t0 + MIN).is_some();
            assert_eq!(stands, what == "uptime grew", "{what}");
        }

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
                reads.fresh("home", &now_listed, 7, t0 + MIN).is_none(),
                "a change of {what} must be read deeply"
            );
        }
        assert!(
            reads.fresh("home", &listed(), 8, t0 + MIN).is_none(),
            "a changed spec must be read deeply"
        );
        reads.forget("home", 120);
        assert!(
            reads.fresh("home", &listed(), 7, t0 + MIN).is_none(),
            "forgotten"
        );
    }

    #[test]
    fn every_guest_should_be_read_again_within_the_interval_at_a_jittered_moment() {
        let t0 = Instant::now();
        let mut reads = DeepReads::new(10 * MIN);
        for (jitter, due) in [
            (0.0, 10 * MIN),
            (1.0, 5 * MIN),
            (0.5, MIN * 15 / 2),
            (f64::NAN, 10 * MIN),
            (7.0, 5 * MIN),
        ] {
            reads.record("home", &listed(), 7, config(), t0, jitter);
            let just_before = t0 + due - Duration::from_millis(1);
            assert!(
                reads.fresh("home", &listed(), 7, just_before).is_some(),
                "jitter {jitter}: still stands just before {due:?}"
            );
            assert!(
                reads.fresh("home", &listed(), 7, t0 + due).is_none(),
                "jitter {jitter}: due at {due:?}"
            );
        }
        let mut always = DeepReads::new(Duration::ZERO);
        always.record("home", &listed(), 7, config(), t0, 0.0);
        assert!(always.fresh("home", &listed(), 7, t0).is_none());
    }

    #[test]
    fn retain_should_drop_guests_no_longer_declared() {
        let t0 = Instant::now();
        let mut reads = DeepReads::new(10 * MIN);
        reads.record("home", &listed(), 7, config(), t0, 0.0);
        reads.record("lab", &listed(), 7, config(), t0, 0.0);
        reads.retain(|cluster, _| cluster == "lab");
        assert_eq!(reads.len(), 1);
        assert!(reads.fresh("lab", &listed(), 7, t0).is_some());
    }
}
