//! The real Proxmox client against the stateful simulator on loopback: every operation and
//! every error class. Must not talk to anything but the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use axum::http::Method;
use mycopod_adapters::proxmox::sim::{Fault, SimConfig, SimGuest, SimHandle, SimStatus};
use mycopod_adapters::proxmox::{
    Auth, ClientConfig, CreateSource, DesiredGuest, ErrorClass, GuestKind, PendingChange,
    PowerState, ProxmoxClient, ProxmoxError, RetryPolicy, ShutdownOutcome, compare, update_for,
};

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

fn fast(endpoint: String, auth: Auth) -> ClientConfig {
    let mut c = ClientConfig::new(endpoint, auth);
    c.retry = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    c.task_poll_interval = Duration::from_millis(2);
    c.task_timeout = Duration::from_secs(5);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn token() -> Auth {
    Auth::Token {
        token_id: "mycopod@pve!gitops".into(),
        secret: "tok-secret".into(),
    }
}

fn password() -> Auth {
    Auth::Password {
        user: "root@pam".into(),
        password: "secret".into(),
    }
}

async fn setup() -> (SimHandle, ProxmoxClient) {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let client = ProxmoxClient::new(fast(sim.base_url(), token())).unwrap();
    (sim, client)
}

fn web(vmid: u32) -> DesiredGuest {
    let mut d = DesiredGuest::new(vmid, "pve1", GuestKind::Qemu)
        .with("cores", "2")
        .with("memory", "2048")
        .with("net0", "virtio,bridge=vmbr0,tag=10")
        .with("scsi0", "local-lvm:32,ssd=1")
        .with("tags", "Web,prod");
    d.name = Some(format!("web{vmid}"));
    d
}

async fn diffs_of(
    client: &ProxmoxClient,
    d: &DesiredGuest,
) -> Vec<mycopod_adapters::proxmox::FieldDiff> {
    let o = client
        .observe_guest_config(&d.node, d.kind, d.vmid)
        .await
        .unwrap();
    compare(d, &o)
}

fn count(sim: &SimHandle, method: &str, path: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

#[tokio::test]
async fn observe_cluster_should_cost_one_request_and_list_every_guest() {
    within(async {
        let (sim, client) = setup().await;
        sim.seed_guests([
            SimGuest::qemu(120, "pve1")
                .with("name", "web")
                .with("tags", "prod;web")
                .running(),
            SimGuest::lxc(121, "pve2").with("hostname", "dns"),
            SimGuest::qemu(9000, "pve1").template(),
        ]);
        sim.clear_requests();
        let guests = client.observe_cluster().await.unwrap();
        assert_eq!(sim.request_count(), 1);
        let r = &sim.requests()[0];
        assert_eq!(
            (r.path.as_str(), r.query.as_str()),
            ("/cluster/resources", "type=vm")
        );
        assert_eq!(guests.len(), 3);
        let g120 = guests.iter().find(|g| g.vmid == 120).unwrap();
        assert_eq!(g120.status.as_deref(), Some("running"));
        assert_eq!(g120.tags.as_deref(), Some("prod;web"));
        assert!(guests.iter().find(|g| g.vmid == 9000).unwrap().template);
        assert_eq!(
            guests.iter().find(|g| g.vmid == 121).unwrap().kind,
            GuestKind::Lxc
        );
    })
    .await;
}

#[tokio::test]
async fn create_plain_qemu_should_wait_for_the_task_and_observe_back_without_diffs() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(120);
        client.create_guest(&d).await.unwrap();
        let g = sim.guest(120).unwrap();
        assert_eq!(
            g.lock, None,
            "the create lock is released once the task ends"
        );
        assert!(
            g.config["net0"].starts_with("virtio=BC:24:11:"),
            "{}",
            g.config["net0"]
        );
        assert_eq!(g.config["scsi0"], "local-lvm:vm-120-disk-0,ssd=1,size=32G");
        assert_eq!(g.config["tags"], "prod;web");
        assert!(g.config.contains_key("vmgenid"));
        assert!(diffs_of(&client, &d).await.is_empty());
        let creates = sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/nodes/pve1/qemu")
            .collect::<Vec<_>>();
        assert_eq!(creates.len(), 1);
        assert_eq!(creates[0].form("vmid").as_deref(), Some("120"));
        assert_eq!(creates[0].form("name").as_deref(), Some("web120"));
        assert!(
            sim.requests()
                .iter()
                .any(|r| r.path.contains("/tasks/UPID:pve1:") && r.path.ends_with("/status"))
        );
    })
    .await;
}

#[tokio::test]
async fn create_by_clone_should_clone_then_configure_and_grow_the_disk() {
    within(async {
        let (sim, client) = setup().await;
        sim.seed_guests([SimGuest::qemu(9000, "pve1")
            .template()
            .with("name", "debian-tpl")
            .with("cores", "1")
            .with("memory", "1024")
            .with("scsi0", "local-lvm:base-9000-disk-0,size=8G")
            .with("net0", "virtio=BC:24:11:00:00:99,bridge=vmbr0")]);
        let mut d = web(130).with("scsi0", "local-lvm:20,ssd=1");
        d.source = CreateSource::Clone {
            from: 9000,
            full: true,
            node: None,
        };
        client.create_guest(&d).await.unwrap();
        assert_eq!(count(&sim, "POST", "/nodes/pve1/qemu/9000/clone"), 1);
        let g = sim.guest(130).unwrap();
        assert_eq!(g.config["cores"], "2");
        assert_eq!(g.config["scsi0"], "local-lvm:vm-130-disk-0,ssd=1,size=20G");
        assert_ne!(
            g.config["net0"],
            "virtio=BC:24:11:00:00:99,bridge=vmbr0,tag=10"
        );
        assert_eq!(count(&sim, "PUT", "/nodes/pve1/qemu/130/resize"), 1);
        assert!(diffs_of(&client, &d).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn create_lxc_should_use_the_ostemplate_and_normalize_the_nic() {
    within(async {
        let (sim, client) = setup().await;
        let mut d = DesiredGuest::new(121, "pve1", GuestKind::Lxc)
            .with("cores", "1")
            .with("memory", "512")
            .with("rootfs", "local-lvm:4")
            .with("net0", "name=eth0,bridge=vmbr0,ip=dhcp")
            .with("onboot", "1");
        d.name = Some("dns".into());
        d.source =
            CreateSource::OsTemplate("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into());
        client.create_guest(&d).await.unwrap();
        let g = sim.guest(121).unwrap();
        assert_eq!(g.config["rootfs"], "local-lvm:vm-121-disk-0,size=4G");
        assert!(g.config["net0"].contains("hwaddr=BC:24:11:"));
        assert_eq!(g.config["hostname"], "dns");
        assert_eq!(g.config["ostype"], "debian");
        let post = sim
            .requests()
            .into_iter()
            .find(|r| r.path == "/nodes/pve1/lxc")
            .unwrap();
        assert_eq!(
            post.form("ostemplate").as_deref(),
            Some("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
        );
        assert!(diffs_of(&client, &d).await.is_empty());
        // Config updates of containers are PUT (synchronous).
        let d2 = d.clone().with("cores", "2");
        client.apply_config(&d2).await.unwrap();
        assert_eq!(count(&sim, "PUT", "/nodes/pve1/lxc/121/config"), 1);
        assert!(diffs_of(&client, &d2).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_retried_create_that_finds_the_guest_should_count_as_done() {
    within(async {
        let (sim, client) = setup().await;
        // The create takes effect, but its response is lost (a proxy error).
        sim.inject_fault(
            Fault::new("/nodes/pve1/qemu", 1, 596, "Connection timed out")
                .method(Method::POST)
                .after_handling(),
        );
        let d = web(120);
        client.create_guest(&d).await.unwrap();
        assert_eq!(
            count(&sim, "POST", "/nodes/pve1/qemu"),
            1,
            "no second create was sent"
        );
        assert!(sim.guest(120).is_some());
    })
    .await;
}

#[tokio::test]
async fn update_should_pass_the_digest_and_delete_keys_the_spec_used_to_own() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(120).with("onboot", "1");
        client.create_guest(&d).await.unwrap();
        let digest = sim.guest(120).unwrap().digest();
        let mut d2 = web(120).with("cores", "4");
        d2.remove.insert("onboot".into());
        let out = client.apply_config(&d2).await.unwrap();
        assert!(out.changed.contains("cores") && out.changed.contains("onboot"));
        let post = sim
            .requests()
            .into_iter()
            .rfind(|r| r.method == "POST" && r.path == "/nodes/pve1/qemu/120/config")
            .unwrap();
        assert_eq!(post.form("digest"), Some(digest));
        assert_eq!(post.form("delete").as_deref(), Some("onboot"));
        assert_eq!(post.form("cores").as_deref(), Some("4"));
        assert!(post.form("net0").is_none(), "unchanged keys are not sent");
        let g = sim.guest(120).unwrap();
        assert!(!g.config.contains_key("onboot"));
        assert!(diffs_of(&client, &d2).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_guest_should_be_read_in_one_request_when_pending_lists_the_digest() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(120);
        client.create_guest(&d).await.unwrap();
        sim.modify_guest(120, |g| {
            g.status = SimStatus::Running;
            g.pending.insert("cores".into(), Some("4".into()));
        });
        let digest = sim.guest(120).unwrap().digest();

        sim.clear_requests();
        let one = client
            .observe_guest_config("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap();
        let paths: Vec<String> = sim.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["/nodes/pve1/qemu/120/pending"]);
        assert_eq!(one.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(one.config.get("cores").map(String::as_str), Some("2"));
        assert_eq!(
            one.pending.get("cores"),
            Some(&PendingChange::Set("4".into()))
        );

        // An API whose `/pending` carries no digest costs a `/config` read, with the same
        // result: an update still carries the digest.
        sim.set_pending_digest(false);
        sim.clear_requests();
        let two = client
            .observe_guest_config("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap();
        let paths: Vec<String> = sim.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "/nodes/pve1/qemu/120/pending",
                "/nodes/pve1/qemu/120/config"
            ]
        );
        assert_eq!(two, one);
    })
    .await;
}

#[tokio::test]
async fn a_stale_digest_should_be_a_conflict() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(120);
        client.create_guest(&d).await.unwrap();
        let observed = client
            .observe_guest_config("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap();
        // Someone edits the guest behind mycopod's back.
        sim.modify_guest(120, |g| {
            g.config.insert("cores".into(), "8".into());
        });
        let d2 = web(120).with("memory", "4096");
        let update = update_for(&d2, &observed, &compare(&d2, &observed)).unwrap();
        let err = client
            .apply_update(&d2, observed.digest.as_deref(), &update)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Conflict, "{err}");
        assert!(
            err.to_string().contains("detected modified configuration"),
            "{err}"
        );
        assert_eq!(
            count(&sim, "POST", "/nodes/pve1/qemu/120/config"),
            1,
            "conflicts are not retried"
        );
    })
    .await;
}

#[tokio::test]
async fn a_retried_update_whose_first_attempt_landed_should_count_as_done() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        sim.inject_fault(
            Fault::new(
                "/nodes/pve1/qemu/120/config",
                1,
                596,
                "Connection timed out",
            )
            .method(Method::POST)
            .after_handling(),
        );
        let d2 = web(120).with("cores", "6");
        client.apply_config(&d2).await.unwrap();
        let statuses: Vec<u16> = sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/nodes/pve1/qemu/120/config")
            .map(|r| r.status)
            .collect();
        assert_eq!(
            statuses,
            vec![596, 500],
            "the retry met its own change as a digest conflict"
        );
        assert!(diffs_of(&client, &d2).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn drift_behind_the_clients_back_should_show_as_a_diff() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(120);
        client.create_guest(&d).await.unwrap();
        sim.modify_guest(120, |g| {
            g.config.insert("cores".into(), "8".into());
            g.config.insert("tags".into(), "prod".into());
            g.config.insert("balloon".into(), "0".into());
        });
        let diffs = diffs_of(&client, &d).await;
        let keys: Vec<&str> = diffs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, vec!["cores", "tags"], "balloon is not owned");
        client.apply_config(&d).await.unwrap();
        assert!(diffs_of(&client, &d).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn changes_to_a_running_vm_should_wait_in_pending_as_restart_required() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(120);
        client.create_guest(&d).await.unwrap();
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        let d2 = web(120).with("cores", "4").with("tags", "web;prod;db");
        let out = client.apply_config(&d2).await.unwrap();
        assert_eq!(
            out.restart_required.iter().collect::<Vec<_>>(),
            vec!["cores"]
        );
        let o = client
            .observe_guest_config("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap();
        assert_eq!(
            o.pending.get("cores"),
            Some(&PendingChange::Set("4".into()))
        );
        let diffs = compare(&d2, &o);
        assert_eq!(diffs.len(), 1);
        assert!(diffs[0].pending && diffs[0].key == "cores");
        // A second apply does not write it again.
        sim.clear_requests();
        let again = client.apply_config(&d2).await.unwrap();
        assert!(again.changed.is_empty());
        assert!(sim.requests().iter().all(|r| !r.is_write()));
        client.reboot("pve1", GuestKind::Qemu, 120).await.unwrap();
        assert!(diffs_of(&client, &d2).await.is_empty());
        assert_eq!(sim.guest(120).unwrap().config["cores"], "4");
    })
    .await;
}

#[tokio::test]
async fn disks_should_grow_with_resize_and_refuse_to_shrink() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        client
            .resize_disk("pve1", GuestKind::Qemu, 120, "scsi0", "40G")
            .await
            .unwrap();
        assert!(sim.guest(120).unwrap().config["scsi0"].contains("size=40G"));
        let resize = sim
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/resize"))
            .unwrap();
        assert_eq!(
            (
                resize.form("disk").as_deref(),
                resize.form("size").as_deref()
            ),
            (Some("scsi0"), Some("40G"))
        );
        let err = client
            .resize_disk("pve1", GuestKind::Qemu, 120, "scsi0", "10G")
            .await
            .unwrap_err();
        assert!(matches!(err, ProxmoxError::ShrinkRefused { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Rejected);
        let shrink = web(120).with("scsi0", "local-lvm:16,ssd=1");
        let err = client.apply_config(&shrink).await.unwrap_err();
        assert!(matches!(err, ProxmoxError::ShrinkRefused { .. }), "{err}");
        assert_eq!(count(&sim, "PUT", "/nodes/pve1/qemu/120/resize"), 1);
    })
    .await;
}

#[tokio::test]
async fn power_operations_should_wait_for_their_tasks() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        assert_eq!(
            client
                .guest_status("pve1", GuestKind::Qemu, 120)
                .await
                .unwrap(),
            "running"
        );
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        let out = client
            .shutdown("pve1", GuestKind::Qemu, 120, Duration::from_secs(30), true)
            .await
            .unwrap();
        assert_eq!(out, ShutdownOutcome::Clean);
        let shutdown = sim
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/status/shutdown"))
            .unwrap();
        assert_eq!(shutdown.form("timeout").as_deref(), Some("30"));
        assert_eq!(
            client
                .guest_status("pve1", GuestKind::Qemu, 120)
                .await
                .unwrap(),
            "stopped"
        );
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        client.stop("pve1", GuestKind::Qemu, 120).await.unwrap();
        assert_eq!(
            client
                .guest_status("pve1", GuestKind::Qemu, 120)
                .await
                .unwrap(),
            "stopped"
        );
        client.stop("pve1", GuestKind::Qemu, 120).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_shutdown_that_times_out_should_stop_hard_only_when_asked() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        sim.modify_guest(120, |g| g.ignores_shutdown = true);
        let err = client
            .shutdown("pve1", GuestKind::Qemu, 120, Duration::from_secs(1), false)
            .await
            .unwrap_err();
        assert!(matches!(err, ProxmoxError::TaskFailed { .. }), "{err}");
        assert_eq!(
            client
                .guest_status("pve1", GuestKind::Qemu, 120)
                .await
                .unwrap(),
            "running"
        );
        let out = client
            .shutdown("pve1", GuestKind::Qemu, 120, Duration::from_secs(1), true)
            .await
            .unwrap();
        assert_eq!(out, ShutdownOutcome::Forced);
        assert_eq!(
            client
                .guest_status("pve1", GuestKind::Qemu, 120)
                .await
                .unwrap(),
            "stopped"
        );
        assert_eq!(count(&sim, "POST", "/nodes/pve1/qemu/120/status/stop"), 1);
    })
    .await;
}

#[tokio::test]
async fn delete_should_purge_and_count_a_missing_guest_as_deleted() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        client
            .delete_guest("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap();
        assert!(sim.guest(120).is_none());
        let del = sim
            .requests()
            .into_iter()
            .find(|r| r.method == "DELETE")
            .unwrap();
        assert!(del.query.contains("purge=1"));
        assert!(del.query.contains("destroy-unreferenced-disks=1"));
        client
            .delete_guest("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap();
        let err = client
            .observe_guest_config("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
        assert!(matches!(err, ProxmoxError::GuestNotFound { .. }));
    })
    .await;
}

#[tokio::test]
async fn deleting_a_running_guest_should_be_rejected_by_pve_after_retries() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        let err = client
            .delete_guest("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap_err();
        // PVE answers 500 for this; the issue classes 5xx as transient, so it is retried to the bound.
        assert!(
            err.to_string().contains("is running - destroy failed"),
            "{err}"
        );
        assert_eq!(count(&sim, "DELETE", "/nodes/pve1/qemu/120"), 5);
    })
    .await;
}

#[tokio::test]
async fn a_lock_that_clears_after_a_few_retries_should_not_fail_the_update() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        sim.hold_lock(120, "backup", 3);
        let d2 = web(120).with("cores", "3");
        client.apply_config(&d2).await.unwrap();
        let posts: Vec<u16> = sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/nodes/pve1/qemu/120/config")
            .map(|r| r.status)
            .collect();
        assert_eq!(posts, vec![500, 500, 500, 200]);
        assert!(diffs_of(&client, &d2).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_lock_that_stays_should_fail_as_transient_after_the_bound() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        sim.hold_lock(120, "backup", 1000);
        let err = client
            .start("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(
            err.to_string().contains("VM 120 is locked (backup)"),
            "{err}"
        );
        assert_eq!(count(&sim, "POST", "/nodes/pve1/qemu/120/status/start"), 5);
    })
    .await;
}

#[tokio::test]
async fn a_failed_task_should_report_its_exit_status_and_log_tail() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        sim.fail_next_task(
            "qmstart",
            "start failed: QEMU exited with code 1",
            &[
                "kvm: -drive file=/dev/pve/vm-120-disk-0: Could not open",
                "ERROR: failed to start",
            ],
        );
        let err = client
            .start("pve1", GuestKind::Qemu, 120)
            .await
            .unwrap_err();
        let ProxmoxError::TaskFailed {
            exit_status,
            log_tail,
            upid,
            ..
        } = &err
        else {
            panic!("expected a task failure, got {err}");
        };
        assert_eq!(exit_status, "start failed: QEMU exited with code 1");
        assert!(upid.starts_with("UPID:pve1:") && upid.contains(":qmstart:120:"));
        assert!(
            log_tail.iter().any(|l| l.contains("Could not open")),
            "{log_tail:?}"
        );
        assert_eq!(
            log_tail.last().map(String::as_str),
            Some("TASK ERROR: start failed: QEMU exited with code 1")
        );
        assert_eq!(err.class(), ErrorClass::Rejected);
        assert!(err.to_string().contains("Could not open"));
        assert_eq!(
            count(&sim, "POST", "/nodes/pve1/qemu/120/status/start"),
            1,
            "a rejected task is not retried"
        );
    })
    .await;
}

#[tokio::test]
async fn a_failed_create_task_should_leave_no_guest_behind() {
    within(async {
        let (sim, client) = setup().await;
        sim.fail_next_task("qmcreate", "unable to create VM 120 - lvcreate failed", &[]);
        let err = client.create_guest(&web(120)).await.unwrap_err();
        assert!(matches!(err, ProxmoxError::TaskFailed { .. }), "{err}");
        assert!(sim.guest(120).is_none());
    })
    .await;
}

#[tokio::test]
async fn bad_parameters_should_be_rejected_with_the_field_errors_and_not_retried() {
    within(async {
        let (sim, client) = setup().await;
        let d = DesiredGuest::new(120, "pve1", GuestKind::Qemu)
            .with("cores", "many")
            .with("bogus", "1")
            .with("net0", "virtio,bridge=vmbr0,tag=5000");
        let err = client.create_guest(&d).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Rejected);
        assert_eq!(err.status(), Some(400));
        let ProxmoxError::Api {
            errors, message, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(message, "Parameter verification failed.");
        assert!(errors["cores"].contains("type check ('integer') failed - got 'many'"));
        assert!(errors["bogus"].contains("property is not defined in schema"));
        assert!(errors.contains_key("net0"));
        let text = err.to_string();
        assert!(text.contains("cores: type check"), "{text}");
        assert_eq!(count(&sim, "POST", "/nodes/pve1/qemu"), 1);
    })
    .await;
}

#[tokio::test]
async fn forbidden_should_be_rejected_without_retry() {
    within(async {
        let (sim, client) = setup().await;
        sim.inject_fault(Fault::new(
            "/cluster/resources",
            1,
            403,
            "Permission check failed (/vms, VM.Audit)",
        ));
        let err = client.observe_cluster().await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Rejected);
        assert!(err.to_string().contains("Permission check failed"), "{err}");
        assert_eq!(sim.request_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn proxy_errors_should_be_retried_with_backoff_until_they_pass() {
    within(async {
        let (sim, client) = setup().await;
        sim.inject_fault(Fault::new(
            "/cluster/resources",
            2,
            596,
            "Connection timed out",
        ));
        let guests = client.observe_cluster().await.unwrap();
        assert!(guests.is_empty());
        let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![596, 596, 200]);
    })
    .await;
}

#[tokio::test]
async fn an_offline_node_should_give_transient_595_errors() {
    within(async {
        let (sim, client) = setup().await;
        sim.seed_guests([SimGuest::qemu(200, "pve2").running()]);
        sim.set_node_online("pve2", false);
        let guests = client.observe_cluster().await.unwrap();
        assert_eq!(guests[0].status.as_deref(), Some("unknown"));
        let err = client
            .observe_guest_config("pve2", GuestKind::Qemu, 200)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(595));
        assert_eq!(err.class(), ErrorClass::Transient);
        sim.set_node_online("pve2", true);
        client
            .observe_guest_config("pve2", GuestKind::Qemu, 200)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_slow_server_should_hit_the_request_timeout_as_a_transient_error() {
    within(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let mut cfg = fast(sim.base_url(), token());
        cfg.request_timeout = Duration::from_millis(50);
        cfg.retry.max_attempts = 2;
        let client = ProxmoxClient::new(cfg).unwrap();
        sim.set_latency(Duration::from_millis(300));
        let err = client.observe_cluster().await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_should_be_rejected() {
    within(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let client = ProxmoxClient::new(fast(
            sim.base_url(),
            Auth::Token {
                token_id: "mycopod@pve!gitops".into(),
                secret: "wrong".into(),
            },
        ))
        .unwrap();
        let err = client.observe_cluster().await.unwrap_err();
        assert_eq!(err.status(), Some(401));
        assert_eq!(err.class(), ErrorClass::Rejected);
    })
    .await;
}

#[tokio::test]
async fn ticket_auth_should_send_csrf_on_writes_and_renew_once_on_a_401() {
    within(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let client = ProxmoxClient::new(fast(sim.base_url(), password())).unwrap();
        // A write succeeds only with the CSRF token the simulator checks.
        client.create_guest(&web(120)).await.unwrap();
        assert_eq!(count(&sim, "POST", "/access/ticket"), 1);
        sim.revoke_tickets();
        client.start("pve1", GuestKind::Qemu, 120).await.unwrap();
        assert_eq!(count(&sim, "POST", "/access/ticket"), 2);
        let statuses: Vec<u16> = sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/status/start"))
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, vec![401, 200]);
        let login = sim
            .requests()
            .into_iter()
            .find(|r| r.path == "/access/ticket")
            .unwrap();
        assert_eq!(login.form("username").as_deref(), Some("root@pam"));
    })
    .await;
}

#[tokio::test]
async fn a_ticket_should_be_renewed_before_it_expires() {
    within(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let mut cfg = fast(sim.base_url(), password());
        cfg.ticket_renew_after = Duration::from_millis(30);
        let client = ProxmoxClient::new(cfg).unwrap();
        client.observe_cluster().await.unwrap();
        client.observe_cluster().await.unwrap();
        assert_eq!(count(&sim, "POST", "/access/ticket"), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        client.observe_cluster().await.unwrap();
        assert_eq!(count(&sim, "POST", "/access/ticket"), 2);
        assert!(sim.requests().iter().all(|r| r.status != 401));
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_should_be_a_rejected_login() {
    within(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let client = ProxmoxClient::new(fast(
            sim.base_url(),
            Auth::Password {
                user: "root@pam".into(),
                password: "nope".into(),
            },
        ))
        .unwrap();
        let err = client.observe_cluster().await.unwrap_err();
        assert!(matches!(err, ProxmoxError::Login { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Rejected);
    })
    .await;
}

#[tokio::test]
async fn at_most_three_requests_should_be_in_flight() {
    within(async {
        let (sim, client) = setup().await;
        sim.seed_guests((100..112).map(|id| SimGuest::qemu(id, "pve1")));
        sim.set_latency(Duration::from_millis(30));
        let calls = (100..112).map(|id| {
            let c = client.clone();
            async move { c.guest_status("pve1", GuestKind::Qemu, id).await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(sim.max_in_flight(), 3);
    })
    .await;
}

#[tokio::test]
async fn writes_to_one_guest_should_be_serialized() {
    within(async {
        let (sim, client) = setup().await;
        client.create_guest(&web(120)).await.unwrap();
        sim.set_latency(Duration::from_millis(10));
        let a = web(120).with("cores", "3");
        let b = web(120).with("cores", "3").with("memory", "4096");
        let (ra, rb) = tokio::join!(client.apply_config(&a), client.apply_config(&b));
        ra.unwrap();
        rb.unwrap();
        assert!(
            sim.requests().iter().all(|r| r.status == 200),
            "no conflict between the two writes"
        );
    })
    .await;
}

#[tokio::test]
async fn next_id_and_nodes_should_accept_pve_shapes() {
    within(async {
        let (sim, client) = setup().await;
        sim.seed_guests([SimGuest::qemu(100, "pve1")]);
        assert_eq!(client.next_id().await.unwrap(), 101);
        let nodes = client.nodes().await.unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            vec!["pve1", "pve2"]
        );
    })
    .await;
}

#[tokio::test]
async fn power_state_of_a_desired_guest_should_be_reachable_through_start_and_shutdown() {
    within(async {
        let (_sim, client) = setup().await;
        let mut d = web(120);
        d.power = PowerState::Running;
        client.create_guest(&d).await.unwrap();
        client.start(&d.node, d.kind, d.vmid).await.unwrap();
        let guests = client.observe_cluster().await.unwrap();
        assert_eq!(guests[0].status.as_deref(), Some("running"));
    })
    .await;
}

#[tokio::test]
async fn cloud_init_keys_should_round_trip_without_spurious_diffs() {
    within(async {
        let (sim, client) = setup().await;
        let d = web(140)
            .with("ciuser", "ops")
            .with("sshkeys", "ssh-ed25519 AAAAC3Nza me@home")
            .with("ipconfig0", "ip=10.0.0.40/24,gw=10.0.0.1")
            .with("agent", "1")
            .with("startup", "order=2,up=30")
            .with("description", "web front\nmanaged by mycopod");
        client.create_guest(&d).await.unwrap();
        let stored = sim.guest(140).unwrap();
        assert_eq!(
            stored.config["sshkeys"],
            "ssh-ed25519%20AAAAC3Nza%20me%40home"
        );
        assert!(diffs_of(&client, &d).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_running_container_should_take_cores_live_and_park_mount_points() {
    within(async {
        let (sim, client) = setup().await;
        let mut d = DesiredGuest::new(150, "pve1", GuestKind::Lxc)
            .with("cores", "1")
            .with("rootfs", "local-lvm:4")
            .with("net0", "name=eth0,bridge=vmbr0,ip=dhcp");
        d.source = CreateSource::OsTemplate(
            "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz".into(),
        );
        client.create_guest(&d).await.unwrap();
        client.start("pve1", GuestKind::Lxc, 150).await.unwrap();
        let d2 = d
            .clone()
            .with("cores", "2")
            .with("mp0", "local-lvm:8,mp=/srv/data");
        let out = client.apply_config(&d2).await.unwrap();
        assert_eq!(out.restart_required.iter().collect::<Vec<_>>(), vec!["mp0"]);
        assert_eq!(sim.guest(150).unwrap().config["cores"], "2");
        let diffs = diffs_of(&client, &d2).await;
        assert_eq!(diffs.len(), 1);
        assert!(diffs[0].pending && diffs[0].key == "mp0");
        let out = client
            .shutdown("pve1", GuestKind::Lxc, 150, Duration::from_secs(5), false)
            .await
            .unwrap();
        assert_eq!(out, ShutdownOutcome::Clean);
        assert_eq!(
            count(&sim, "POST", "/nodes/pve1/lxc/150/status/shutdown"),
            1
        );
        assert!(diffs_of(&client, &d2).await.is_empty());
        assert_eq!(
            sim.guest(150).unwrap().config["mp0"],
            "local-lvm:vm-150-disk-1,mp=/srv/data,size=8G"
        );
    })
    .await;
}
