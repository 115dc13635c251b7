//! `meldnet-node serve`: the node's long-running part. Follows the hub's
//! known-hash list (a sync at start, then every `sync_interval_s`) and
//! answers its country's hosting providers (`hash_check`) over mTLS: gRPC
//! and HTTP/JSON on one port, with gRPC health and reflection.

use crate::config::NodeConfig;
use crate::hash_check::{http_routes, Checker};
use crate::list::NodeList;
use meldnet_core::CountryCode;
use meldnet_core::Keyring;
use meldnet_net::server_config_with;
use meldnet_net::{incoming, ConnectionLimits, Recheck};
use meldnet_proto::v1::hash_check_server::HashCheckServer;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::RwLock;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is missing or wrong.
    #[error("config: {0}")]
    Config(String),
    /// Keys.
    #[error(transparent)]
    Keyring(#[from] meldnet_core::KeyringError),
    /// The list.
    #[error(transparent)]
    List(#[from] crate::list::ListError),
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] meldnet_net::TlsError),
    /// The socket.
    #[error("hash_check.listen: {0}")]
    Io(#[from] std::io::Error),
    /// The server.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Follows the hub: one sync now and then one per interval; failures are
/// logged and the node goes on answering from what it holds.
async fn follow(cfg: NodeConfig, list: Arc<RwLock<NodeList>>, every: std::time::Duration) {
    loop {
        match meldnet_net::connect(&cfg.hub, &cfg.tls).await {
            Ok(channel) => match crate::list::sync(&list, channel, |_| {}).await {
                Ok(s) if s.records > 0 => {
                    tracing::info!(from = s.from.version, to = %s.to, "list synced")
                }
                Ok(_) => {}
                Err(e) => {
                    let held = list.read().await.tip();
                    tracing::error!(error = %e, %held, "list sync failed")
                }
            },
            Err(e) => tracing::warn!(error = %e, "hub unreachable; list not synced"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Serves until `shutdown` completes; `on_listening` gets the bound address.
pub async fn serve(
    cfg: NodeConfig,
    country: CountryCode,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let hc = cfg
        .hash_check
        .clone()
        .ok_or_else(|| ServeError::Config("hash_check: missing; `serve` needs it".into()))?;
    let federation = cfg.tls.identity()?.trust_domain().clone();
    let keyring = Keyring::load(&cfg.keyring)?;
    let list = Arc::new(RwLock::new(NodeList::open_for_sync(
        &cfg.list_dir,
        keyring,
    )?));
    tracing::info!(list = %list.read().await.tip(), "known-hash list loaded");
    if let Some(addr) = hc.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| ServeError::Config(format!("hash_check.metrics_listen {addr}: {e}")))?;
    }
    let (tls, verifier) = server_config_with(
        &hc.tls,
        Some(("hash_check.provider_ca", &hc.provider_ca)),
        true,
    )?;
    let recheck_with = verifier.clone();
    let recheck: Recheck = Arc::new(move |peer| recheck_with.recheck(&peer.chain));
    let checker = Checker::new(list.clone(), country, verifier);
    let listener = tokio::net::TcpListener::bind(hc.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "hash checks for the providers of {country} (gRPC and HTTP/JSON, mTLS)");
    on_listening(addr);
    let follower = tokio::spawn(follow(
        cfg.clone(),
        list,
        std::time::Duration::from_secs(hc.sync_interval_s),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<HashCheckServer<Checker>>()
        .await;
    let (reflection, reflection_alpha) =
        meldnet_proto::reflection().map_err(|e| ServeError::Config(format!("reflection: {e}")))?;
    let routes = tonic::service::Routes::new(HashCheckServer::new(checker.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .into_axum_router()
        .merge(http_routes(checker));
    let result = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(routes))
        .serve_with_incoming_shutdown(
            incoming(
                listener,
                tls,
                federation,
                ConnectionLimits::default(),
                Some(recheck),
            ),
            shutdown,
        )
        .await;
    follower.abort();
    result?;
    Ok(())
}
