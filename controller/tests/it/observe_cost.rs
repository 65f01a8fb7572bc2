//! What observing costs against the Proxmox simulator: a converged cluster is observed in one
//! request, a guest is read in full only when something about it may have changed, and an
//! edit made outside mycopod that the cluster listing does not show is still found within the
//! full-read interval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use chrono::{DateTime, Utc};

use mycopod::plan::{Options, plan};
use mycopod::reconcile::observe::LiveWorld;
use mycopod_adapters::proxmox::sim::RequestRecord;
use support::{Rig, within};

const INTERVAL: Duration = Duration::from_secs(600);

/// The requests an observation of `rig`'s world sent, as `METHOD path`.
async fn observe_counting(
    rig: &Rig,
    world: &LiveWorld,
    cores: u32,
    at: DateTime<Utc>,
) -> (Vec<String>, mycopod::plan::Planned) {
    rig.pve.clear_requests();
    let desired = rig.desired(cores);
    let (observed, problems) = world.observe_at(&desired, Some(&rig.store), at).await;
    assert!(problems.is_empty(), "{problems:?}");
    let sent = rig
        .pve
        .requests()
        .iter()
        .map(|r: &RequestRecord| format!("{} {}", r.method, r.path))
        .collect();
    (sent, plan("c1", &desired, &observed, Options::default()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_converged_cluster_should_be_observed_in_one_request_and_edits_found_within_the_bound() {
    within(async {
        let rig = Rig::start().await;
        let world = LiveWorld::new(&rig.desired(2), &rig.env).with_full_read_interval(INTERVAL);
        rig.converge_once(&world, &rig.desired(2)).await;
        let t0 = Utc::now();
        let bound = chrono::Duration::from_std(INTERVAL).unwrap();

        // The observation that verifies what was applied reads in full; after it, nothing.
        let (sent, planned) = observe_counting(&rig, &world, 2, t0).await;
        assert!(sent.len() > 1, "applied guests are read in full: {sent:?}");
        assert!(planned.plan.is_empty(), "{:?}", planned.plan.actions);
        let (sent, planned) = observe_counting(&rig, &world, 2, t0).await;
        assert_eq!(sent, ["GET /cluster/resources"], "steady state");
        assert!(planned.plan.is_empty());

        // An edit the listing does not show (web's VLAN) is not seen before its full read
        // is due...
        assert!(rig.pve.modify_guest(120, |g| {
            g.config
                .insert("net0".into(), "virtio,bridge=vmbr0,tag=99".into());
        }));
        let (sent, planned) = observe_counting(&rig, &world, 2, t0 + bound / 4).await;
        assert_eq!(sent, ["GET /cluster/resources"]);
        assert!(planned.plan.is_empty());
        // ... and is seen once it is, never later than the interval.
        let (mut sent, planned) = observe_counting(&rig, &world, 2, t0 + bound).await;
        // The two reads go side by side, in either order.
        sent.sort();
        assert_eq!(
            sent,
            [
                "GET /cluster/resources",
                "GET /nodes/pve1/lxc/121/pending",
                "GET /nodes/pve1/qemu/120/pending"
            ],
            "both guests read in full, one request each"
        );
        let update = planned
            .plan
            .actions
            .iter()
            .find(|a| a.key == "Guest/web:update")
            .unwrap_or_else(|| panic!("the edit is found: {:?}", planned.plan.actions));
        assert!(
            update.changes.iter().any(|c| c.field == "net0"),
            "{update:?}"
        );
        let t1 = t0 + bound;

        // A change the listing shows (dns's CPUs) is read at once, and only that guest.
        assert!(rig.pve.modify_guest(121, |g| {
            g.config.insert("cores".into(), "3".into());
        }));
        let (sent, _) = observe_counting(&rig, &world, 2, t1).await;
        assert_eq!(
            sent,
            ["GET /cluster/resources", "GET /nodes/pve1/lxc/121/pending"]
        );

        // A changed declaration is read at once, and only its guest.
        let (sent, planned) = observe_counting(&rig, &world, 4, t1).await;
        assert_eq!(
            sent,
            ["GET /cluster/resources", "GET /nodes/pve1/qemu/120/pending"]
        );
        assert!(
            planned
                .plan
                .actions
                .iter()
                .any(|a| a.key == "Guest/web:update"),
            "{:?}",
            planned.plan.actions
        );
    })
    .await;
}
