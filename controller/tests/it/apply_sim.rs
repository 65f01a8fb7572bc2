//! Observe, plan and apply through the real adapters against the Proxmox and Modbus
//! simulators and a real SQLite store: the world converges, a second plan is empty, drift is
//! corrected, and an update planned against a configuration that changed since is refused as a
//! conflict instead of overwriting it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use chrono::Utc;
use mycopod::model::ConfigKind;
use mycopod::reconcile::apply::ApplyContext;
use mycopod::reconcile::observe::LiveWorld;
use mycopod_adapters::modbus::Value;
use mycopod_adapters::proxmox::sim::SimStatus;
use support::{Rig, within};

#[tokio::test(flavor = "multi_thread")]
async fn applying_a_plan_should_converge_so_that_the_next_plan_is_empty() {
    within(async {
        let rig = Rig::start().await;
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);

        let first = rig.converge_once(&world, &d).await;
        let keys: Vec<&str> = first.plan.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "NotificationChannel/ops:upsert",
                "AlertRule/low-flow:upsert",
                "Guest/dns:create",
                "Guest/web:create",
                "Guest/web:start",
                "ModbusDevice/fm-1:write"
            ]
        );

        let (second, _) = rig.plan(&world, &d).await;
        assert!(
            second.plan.is_empty(),
            "left over:\n{}",
            second.plan.render()
        );

        let web = rig.pve.guest(120).expect("web exists");
        assert_eq!(web.status, SimStatus::Running);
        assert_eq!(web.config.get("cores").map(String::as_str), Some("2"));
        assert_eq!(web.config.get("memory").map(String::as_str), Some("2048"));
        assert!(web.config["tags"].contains("managed-by-mycopod"));
        let dns = rig.pve.guest(121).expect("dns exists");
        assert_eq!(dns.status, SimStatus::Stopped);
        assert_eq!(dns.config.get("hostname").map(String::as_str), Some("dns"));
        let Value::Float(cutoff) = rig.modbus.value("cutoff").unwrap() else {
            panic!("cutoff is a float")
        };
        assert!((cutoff - 0.75).abs() < 1e-6, "{cutoff}");
        let rules = rig
            .store
            .list_config_objects(ConfigKind::AlertRule)
            .await
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "low-flow");
        assert_eq!(rules[0].commit_sha, "c1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_behind_mycopods_back_should_be_planned_and_corrected() {
    within(async {
        let rig = Rig::start().await;
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);
        rig.converge_once(&world, &d).await;

        rig.pve.modify_guest(120, |g| {
            g.config.insert("cores".into(), "4".into());
            g.status = SimStatus::Stopped;
        });
        rig.modbus.set_value("cutoff", &Value::Float(1.5)).unwrap();

        let fix = rig.converge_once(&world, &d).await;
        let rendered = fix.plan.render();
        assert!(rendered.contains("~ Guest/web update"), "{rendered}");
        assert!(rendered.contains(r#"cores  "4" -> "2""#), "{rendered}");
        assert!(rendered.contains("~ Guest/web start"), "{rendered}");
        assert!(
            rendered.contains("setpoints.cutoff  1.5 -> 0.75"),
            "{rendered}"
        );

        let (after, _) = rig.plan(&world, &d).await;
        assert!(after.plan.is_empty(), "left over:\n{}", after.plan.render());
        assert_eq!(rig.pve.guest(120).unwrap().config["cores"], "2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_planned_before_a_concurrent_change_should_be_refused_as_a_conflict() {
    within(async {
        let rig = Rig::start().await;
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);
        rig.converge_once(&world, &d).await;

        let wider = rig.desired(3);
        let (planned, observed) = rig.plan(&world, &wider).await;
        let update = planned
            .plan
            .actions
            .iter()
            .find(|a| a.key == "Guest/web:update")
            .expect("an update is planned");

        // Someone changes the guest after the plan was made (and, say, approved).
        rig.pve.modify_guest(120, |g| {
            g.config.insert("description".into(), "hand edit".into());
        });
        // The simulator recomputes the digest from the config, as PVE does.
        let err = world
            .apply(
                &wider,
                &observed,
                update,
                ApplyContext {
                    store: Some(&rig.store),
                    commit: "c2",
                    now: Utc::now(),
                    tasks: None,
                },
            )
            .await
            .expect_err("a stale digest must be refused");
        assert!(err.is_conflict(), "{err}");
        assert_eq!(
            rig.pve.guest(120).unwrap().config["cores"],
            "2",
            "nothing was overwritten"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_dropped_from_the_declaration_should_be_removed_and_keys_set_by_hand_kept() {
    within(async {
        let rig = Rig::start().await;
        let with_vga = rig.yaml(2, 0.75).replace(
            "  tags: [web]\n",
            "  tags: [web]\n  extraConfig: {vga: serial0}\n",
        );
        let d = support::desired(&with_vga);
        let world = LiveWorld::new(&d, &rig.env);
        rig.converge_once(&world, &d).await;
        assert_eq!(rig.pve.guest(120).unwrap().config["vga"], "serial0");
        // Someone sets a key by hand in Proxmox; mycopod never owned it.
        rig.pve.modify_guest(120, |g| {
            g.config.insert("description".into(), "set by hand".into());
        });

        let without = rig.desired(2);
        let fix = rig.converge_once(&world, &without).await;
        let rendered = fix.plan.render();
        assert!(rendered.contains("~ Guest/web update"), "{rendered}");
        assert!(
            rendered.contains(r#"vga  "serial0" -> (none)"#),
            "{rendered}"
        );
        assert!(!rendered.contains("description"), "{rendered}");

        // On a running guest PVE parks the removal until the next restart: a note, not a loop.
        let web = rig.pve.guest(120).unwrap();
        assert!(
            !web.config.contains_key("vga") || web.pending.get("vga") == Some(&None),
            "{web:?}"
        );
        assert_eq!(web.config["description"], "set by hand");
        let (after, _) = rig.plan(&world, &without).await;
        assert!(after.plan.is_empty(), "left over:\n{}", after.plan.render());
    })
    .await;
}
