//! The Proxmox client over TLS: the simulator served with a certificate from a throw-away CA
//! (`mycopod_tests::tls_sim`); the client trusts it through a CA file, refuses it without, and
//! accepts anything when told to skip verification. Must not talk to anything but the
//! loopback simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mycopod_adapters::proxmox::sim::{SimConfig, SimGuest};
use mycopod_adapters::proxmox::{Auth, ClientConfig, ErrorClass, ProxmoxClient, Tls};
use mycopod_tests::tls_sim::TlsSim;

async fn start_tls_sim() -> TlsSim {
    TlsSim::start(SimConfig::default()).await.unwrap()
}

fn config(url: &str, tls: Tls) -> ClientConfig {
    let mut c = ClientConfig::new(
        url,
        Auth::Token {
            token_id: "mycopod@pve!gitops".into(),
            secret: "tok-secret".into(),
        },
    );
    c.tls = tls;
    c.request_timeout = Duration::from_secs(5);
    c.retry.max_attempts = 1;
    c
}

#[tokio::test]
async fn a_ca_file_should_let_the_client_trust_the_cluster_certificate() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let sim = start_tls_sim().await;
        sim.control.seed_guests([SimGuest::qemu(120, "pve1")]);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("pve-ca.pem");
        std::fs::write(&ca_file, &sim.ca_pem).unwrap();
        let client = ProxmoxClient::new(config(&sim.url, Tls::CaFile(ca_file))).unwrap();
        let guests = client.observe_cluster().await.unwrap();
        assert_eq!(guests.len(), 1);
        assert_eq!(sim.control.request_count(), 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn an_unknown_ca_should_fail_the_handshake_as_a_transport_error() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let sim = start_tls_sim().await;
        let other = start_tls_sim().await;
        let client = ProxmoxClient::new(config(
            &sim.url,
            Tls::CaPem(other.ca_pem.clone().into_bytes()),
        ))
        .unwrap();
        let err = client.observe_cluster().await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
        assert_eq!(sim.control.request_count(), 0, "no request got through");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn insecure_skip_verify_should_accept_any_certificate() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let sim = start_tls_sim().await;
        let client = ProxmoxClient::new(config(&sim.url, Tls::InsecureSkipVerify)).unwrap();
        client.observe_cluster().await.unwrap();
        assert_eq!(sim.control.request_count(), 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_missing_ca_file_should_fail_when_the_client_is_built() {
    let err = ProxmoxClient::new(config(
        "https://127.0.0.1:1",
        Tls::CaFile("/nonexistent/pve-ca.pem".into()),
    ))
    .err()
    .expect("building must fail");
    assert!(err.to_string().contains("/nonexistent/pve-ca.pem"), "{err}");
}
