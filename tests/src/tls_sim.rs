//! The Proxmox simulator served over HTTPS, as a real cluster is on port 8006: a certificate
//! from a throw-away CA made at start. The client tests trust it through that CA; the
//! side-by-side benchmark lets tools that only speak HTTPS (proxmoxer, Ansible) reach it.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::serve::Listener;
use mycopod_adapters::proxmox::sim::{SimConfig, SimControl, router};
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

/// A simulator listening with TLS on `127.0.0.1`. Dropping it stops the server.
pub struct TlsSim {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The port alone, for tools that take host and port apart.
    pub port: u16,
    /// The PEM of the CA that signed the server's certificate.
    pub ca_pem: String,
    /// Reads and changes the simulator's state.
    pub control: SimControl,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TlsSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TlsSim {
    /// Makes a CA and a certificate for `127.0.0.1` and `localhost`, binds a free loopback
    /// port and serves a simulator with `config` on it.
    pub async fn start(config: SimConfig) -> Result<TlsSim> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
            .signed_by(&leaf_key, &ca)?;
        let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the simulator's certificate")?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind a loopback port for the TLS simulator")?;
        let port = tcp.local_addr()?.port();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
        };
        let (app, control) = router(config);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TlsSim {
            url: format!("https://127.0.0.1:{port}"),
            port,
            ca_pem: ca.pem(),
            control,
            server,
        })
    }
}
