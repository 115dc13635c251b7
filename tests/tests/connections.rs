//! What a connection may cost the hub, whoever opens it: one that never
//! starts its handshake, or finishes it and then says nothing, is closed
//! within its timeout; past the cap per certificate identity a connection
//! is closed at once; and honest clients are served all the while.

use meldnet_tests::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn client_config(fed: &Federation, stem: &str) -> Arc<rustls::ClientConfig> {
    let root = fed.root();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(root.join(format!("{stem}.pem")))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(root.join(format!("{stem}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits until the peer closes `read` (EOF or error); false if it is
/// still open after `limit`.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(read: &mut R, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // TLS session tickets or a server preface: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_surplus_connections_are_closed_and_honest_clients_served() {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    fed.add_hub_config(
        "[connections]\nmax_per_identity = 8\nhandshake_timeout_s = 2\nfirst_byte_timeout_s = 2\nmax_pending_per_address = 150\n",
    )
    .unwrap();
    fed.start_hub().unwrap();
    let pid = fed.hub_pid().unwrap();
    let before = open_fds(pid);
    let addr = fed.hub_addr;

    // 100 TCP connections that never start a TLS handshake.
    let mut raw = Vec::new();
    for _ in 0..100 {
        raw.push(TcpStream::connect(addr).await.unwrap());
    }
    // 100 TLS connections of police DE that never send a request.
    let connector = tokio_rustls::TlsConnector::from(client_config(&fed, "agencies/DE-bka/agency"));
    let name = ServerName::try_from(format!("hub.{FEDERATION}")).unwrap();
    let mut silent = Vec::new();
    for _ in 0..100 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        if let Ok(tls) = connector.connect(name.clone(), tcp).await {
            silent.push(tls);
        }
    }
    // Meanwhile an honest client is served.
    let state = fed.state().await.unwrap();

    let started = Instant::now();
    for c in &mut raw {
        assert!(
            closed_within(c, Duration::from_secs(10)).await,
            "a connection without a handshake stayed open"
        );
    }
    for c in &mut silent {
        assert!(
            closed_within(c, Duration::from_secs(10)).await,
            "a silent TLS connection stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(12));
    let log = fed.hub_log();
    assert!(log.contains("sent nothing after its handshake"), "{log}");
    assert!(
        log.contains("too many connections of this identity"),
        "{log}"
    );
    assert!(log.contains("TLS handshake timed out"), "{log}");
    drop(raw);
    drop(silent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = open_fds(pid);
    assert!(
        after <= before + 4,
        "descriptors: {before} before, {after} after"
    );
    // And still serving.
    assert_eq!(fed.state().await.unwrap().digest, state.digest);
}

/// Before the handshake nobody is known: one address may hold only so many
/// connections there, and those past it are closed at once.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_pending_cap_of_an_address_are_closed_at_once() {
    let mut fed = Federation::init("NL", "DE/bka").unwrap();
    fed.add_hub_config("[connections]\nmax_pending_per_address = 10\nhandshake_timeout_s = 5\n")
        .unwrap();
    fed.start_hub().unwrap();
    let mut raw = Vec::new();
    for _ in 0..30 {
        raw.push(TcpStream::connect(fed.hub_addr).await.unwrap());
    }
    let mut at_once = 0;
    for c in &mut raw {
        if closed_within(c, Duration::from_millis(300)).await {
            at_once += 1;
        }
    }
    assert_eq!(at_once, 20, "the 20 past the cap of 10 are closed at once");
    assert!(fed
        .hub_log()
        .contains("too many connections in their handshake from this address"));
    // Once those time out, the address is served again.
    drop(raw);
    tokio::time::sleep(Duration::from_secs(1)).await;
    fed.state().await.unwrap();
}
