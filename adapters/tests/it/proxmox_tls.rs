//! The client over TLS: the simulator served with a certificate from a throw-away CA; the
//! client trusts it through a CA file, refuses it without, and accepts anything when told to
//! skip verification. Must not talk to anything but the loopback simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use mycopod_adapters::proxmox::sim::{SimConfig, SimControl, SimGuest, router};
use mycopod_adapters::proxmox::{Auth, ClientConfig, ErrorClass, ProxmoxClient, Tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate fails the handshake: wait for the next.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

struct TlsSim {
    url: String,
    ca_pem: String,
    control: SimControl,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TlsSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start_tls_sim() -> TlsSim {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let (app, control) = router(SimConfig::default());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TlsSim {
        url: format!("https://127.0.0.1:{port}"),
        ca_pem: ca.pem(),
        control,
        server,
    }
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
