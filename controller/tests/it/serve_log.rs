//! `mycopod serve` with `MYCOPOD_LOG_FORMAT=json`: every line it writes, from start through a
//! reconcile to a clean stop on SIGTERM, is one JSON object (log shippers parse each line).

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle, SimStatus};

use crate::support;

#[tokio::test(flavor = "multi_thread")]
async fn every_line_of_a_json_serve_log_should_be_a_json_object() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pve = SimHandle::start(SimConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
            endpoint: {}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
            defaultNode: pve1\n---\napiVersion: mycopod/v1\nkind: Guest\n\
            metadata: {{name: alpha}}\nspec:\n  cluster: home\n  type: lxc\n  vmid: 301\n  \
            state: running\n  ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  \
            cores: 1\n  memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n",
            pve.base_url()
        );
        let config = support::serve_setup(dir.path(), &yaml, &pve.base_url());

        let mut child = Command::new(env!("CARGO_BIN_EXE_mycopod"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("PVE_TOKEN", "tok-secret")
            .env("MYCOPOD_LOG", "info")
            .env("MYCOPOD_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let it reconcile once, so the loop's own lines are in the log too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while pve
            .guest(301)
            .is_none_or(|g| g.status != SimStatus::Running)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the guest never ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            (status, out, err)
        })
        .await
        .unwrap();
        let (status, stdout, stderr) = status;
        assert!(status.success(), "a clean stop: {status:?}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        for line in &lines {
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(
                parsed.as_ref().is_ok_and(serde_json::Value::is_object),
                "not a JSON object: {line:?}"
            );
        }
        let messages: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("serving the API on http://")),
            "{messages:?}"
        );
        assert!(messages.iter().any(|m| m == "stopping"), "{messages:?}");
    })
    .await
    .unwrap();
}
