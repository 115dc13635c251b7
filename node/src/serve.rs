//! `meldnet-node serve`: the node's long-running part. Follows the hub's
//! known-hash list (a sync at start, then every `sync_interval_s`) and
//! answers its country's hosting providers (`hash_check`) over mTLS: gRPC
//! and HTTP/JSON on one port, with gRPC health and reflection. With
//! `[notices]` it also receives the inbox and sends standard notices to the
//! providers on the same port (`notices`).

use crate::config::NodeConfig;
use crate::hash_check::{http_routes, Checker};
use crate::list::NodeList;
use crate::notices::Notices;
use meldnet_core::CountryCode;
use meldnet_core::Keyring;
use meldnet_core::SpiffeId;
use meldnet_net::server_config_with;
use meldnet_net::{incoming, ConnectionLimits, Recheck};
use meldnet_proto::v1::hash_check_server::HashCheckServer;
use meldnet_proto::v1::provider_notices_server::ProviderNoticesServer;
use meldnet_recipient::{receive, InboxOptions};
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

/// With `[notices]`: receives the node's inbox (as `meldnet-node inbox
/// --follow` would), makes notices from what arrives, queues re-notices
/// and sends the waiting case steps to the hub; each failure is logged and
/// tried again.
async fn notice_loops(cfg: NodeConfig, notices: Notices, keyring: Keyring, me: SpiffeId) {
    let inbox = {
        let (cfg, keyring, me) = (cfg.clone(), keyring.clone(), me.clone());
        async move {
            let opts = InboxOptions {
                out_dir: cfg.inbox_dir.clone(),
                max: None,
                follow: true,
            };
            loop {
                match meldnet_net::connect(&cfg.hub, &cfg.tls).await {
                    Ok(channel) => match receive(channel, &keyring, &me, &opts).await {
                        Ok(s) => tracing::info!(stored = s.stored, "inbox stream ended"),
                        Err(e) => tracing::warn!(error = %e, "inbox: receiving stopped"),
                    },
                    Err(e) => tracing::warn!(error = %e, "hub unreachable; inbox waits"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    };
    let work = async move {
        let mut last_renotice = std::time::Instant::now();
        let renotice_every = std::time::Duration::from_secs(
            cfg.notices
                .as_ref()
                .map_or(10, |n| (n.renotice_after_s / 4).clamp(1, 10)),
        );
        loop {
            let woken = notices.stepped.notified();
            match notices.make_from_log(&cfg.inbox_dir).await {
                Ok(n) if n > 0 => tracing::info!(made = n, "notices made"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "making notices"),
            }
            match notices.apply_assignments(&cfg.inbox_dir).await {
                Ok(n) if n > 0 => {
                    tracing::info!(made = n, "notices made for the providers analysts chose")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "analysts' choices of provider"),
            }
            // Re-notices are due in hours: looked for every 10 s at most
            // (sooner for a short schedule), as the look reads every notice.
            if last_renotice.elapsed() >= renotice_every {
                last_renotice = std::time::Instant::now();
                if let Err(e) = notices.renotice_due().await {
                    tracing::error!(error = %e, "re-notices");
                }
            }
            match notices.store().steps_waiting() {
                Ok(true) => match meldnet_net::connect(&cfg.hub, &cfg.tls).await {
                    Ok(channel) => {
                        if let Err(e) = notices.send_steps(channel).await {
                            tracing::error!(error = %e, "case steps");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "hub unreachable; case steps wait"),
                },
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "notice store"),
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    };
    tokio::join!(inbox, work);
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
        keyring.clone(),
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
    let notices = match &cfg.notices {
        Some(n) => {
            let me = cfg.tls.identity()?;
            let key = meldnet_core::SigningKey::load(&cfg.signing_key)
                .map_err(|e| ServeError::Config(format!("signing_key: {e}")))?;
            let notices = Notices::open(n, key, keyring.clone(), me.clone(), verifier.clone())
                .map_err(ServeError::Config)?;
            Some((notices, me))
        }
        None => None,
    };
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
    let mut routes = tonic::service::Routes::new(HashCheckServer::new(checker.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha);
    let mut loops = None;
    if let Some((notices, me)) = &notices {
        routes = routes.add_service(ProviderNoticesServer::new(notices.clone()));
        loops = Some(tokio::spawn(notice_loops(
            cfg.clone(),
            notices.clone(),
            keyring.clone(),
            me.clone(),
        )));
        tracing::info!("notices to the providers of {country} (gRPC and HTTP/JSON, mTLS)");
    }
    let mut router = routes.into_axum_router().merge(http_routes(checker));
    if let Some((notices, _)) = notices {
        router = router.merge(crate::notices::http_routes(notices));
    }
    let routes = router;
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
    if let Some(l) = loops {
        l.abort();
    }
    result?;
    Ok(())
}
