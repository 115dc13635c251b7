//! Wiring: loads keys and configuration, opens the store, and serves the
//! gRPC services (plus health and reflection) over mTLS.

use crate::admin::AdminService;
use crate::auth::{Auth, HubGate};
use crate::config::HubConfig;
use crate::delivery::InboxService;
use crate::hash_list::{HashList, HashListService, ListError};
use crate::ingest::Ingest;
use crate::ingest::Routes;
use crate::registry::Registry;
use crate::routing::Router;
use crate::rules::RuleSet;
use crate::store::{Store, StoreError};
use crate::submission::SubmissionService;
use crate::takedown::{CasesService, DeadlineWatcher};
use crate::victims::{Notifier, SeriesIndex, SeriesService};
use meldnet_core::limits::MAX_MESSAGE_BYTES;
use meldnet_core::time::Clock;
use meldnet_core::SpiffeId;
use meldnet_core::{Keyring, KeyringError};
use meldnet_core::{SigningError, SigningKey};
use meldnet_net::incoming;
use meldnet_net::AdmissionLayer;
use meldnet_net::{server_config, TlsError};
use meldnet_proto::v1::admin_server::AdminServer;
use meldnet_proto::v1::cases_server::CasesServer;
use meldnet_proto::v1::hash_list_server::HashListServer;
use meldnet_proto::v1::inbox_server::InboxServer;
use meldnet_proto::v1::series_server::SeriesServer;
use meldnet_proto::v1::submission_server::SubmissionServer;
use std::future::Future;
use std::sync::Arc;
use std::sync::RwLock;
use tokio::sync::Notify;

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The keyring is unusable.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The signing key is unusable.
    #[error("signing_key: {0}")]
    Signing(#[from] SigningError),
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("data_dir: {0}")]
    Store(#[from] StoreError),
    /// A setting contradicts another.
    #[error("config: {key}: {message}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The known-hash list could not be loaded.
    #[error("data_dir: {0}")]
    List(#[from] ListError),
    /// The listening socket.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Calls one connection may have open at once (HTTP/2 streams).
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// How long connections may drain after shutdown begins.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The hub's parts over its store, made from its configuration: what
/// `run` serves, and what a tool that fills a stopped hub's store uses
/// (the ingest path as it is, without the network).
pub struct Hub {
    /// Ingest, with everything it shares (store, registry, routes, list,
    /// cases, series, clock, signer, takedown).
    pub ingest: Ingest,
    /// The hub's identity.
    pub hub_id: SpiffeId,
}

/// Opens the store in `cfg.data_dir` and assembles the hub's parts over it.
pub fn open_hub(cfg: &HubConfig) -> Result<Hub, HubError> {
    let keyring = Arc::new(Keyring::load(&cfg.keyring)?);
    if keyring.federation() != &cfg.federation {
        return Err(HubError::Config {
            key: "keyring",
            message: format!(
                "keyring is of federation {}, hub of {}",
                keyring.federation(),
                cfg.federation
            ),
        });
    }
    let signer = Arc::new(SigningKey::load(&cfg.signing_key)?);
    let hub_id = SpiffeId::hub(&cfg.federation);
    if keyring.get(&hub_id, signer.public().id()).is_none() {
        return Err(HubError::Config {
            key: "signing_key",
            message: format!(
                "its public key ({}) is not in the keyring for {hub_id}: recipients could not verify decisions",
                signer.public().id()
            ),
        });
    }
    let clock = Arc::new(if cfg.clock.adjustable {
        tracing::warn!(
            "clock.adjustable is true: operators can move this hub's clock (tests only)"
        );
        Clock::adjustable()
    } else {
        Clock::system()
    });
    let store = Store::open_with(&cfg.data_dir, clock.clone(), cfg.store.options())?;
    // Rules changed through the admin API outlive a restart; hub.toml's
    // rules (or the defaults) apply until the first change.
    let rules = match store.rules()? {
        Some((version, text)) => {
            let set =
                RuleSet::parse(&text, &cfg.federation, version).map_err(|e| HubError::Config {
                    key: "stored routing rules",
                    message: e.to_string(),
                })?;
            if !cfg.routing.rules.is_empty() {
                tracing::warn!(version, "routing rules changed through the admin API are in force; [[routing.rules]] in hub.toml is not applied");
            }
            set
        }
        None => cfg.rule_set(1).map_err(|e| HubError::Config {
            key: "routing.rules",
            message: e.to_string(),
        })?,
    };
    tracing::info!(
        version = rules.version,
        rules = rules.rules.len(),
        "routing rules"
    );
    let agencies: Vec<_> = cfg.agencies.iter().map(|a| a.identity.clone()).collect();
    let registry = Arc::new(
        Registry::new((*keyring).clone(), &agencies, store.registrations()?)
            .map_err(|m| HubError::Store(StoreError::Corrupt(m)))?,
    );
    let router = Router::new(
        cfg.federation.clone(),
        cfg.routing.member_states.iter().copied(),
        cfg.routing.participating.iter().copied(),
        registry.nodes(),
        registry.agencies(),
        Arc::new(rules),
    );
    let routes: Routes = Arc::new(RwLock::new(Arc::new(router)));
    let runs = crate::cases::PdqRuns::open(&cfg.data_dir.join("cases"), crate::cases::FREEZE_AT)
        .map_err(|e| HubError::Store(StoreError::Io(e.to_string())))?;
    let cases = store.case_index(runs)?;
    tracing::info!(pdq = cases.pdq_len(), "cases loaded");
    let cases = Arc::new(crate::cases::CasesLock::new(cases));
    crate::cases::make_runs(&cases).map_err(|e| HubError::Store(StoreError::Io(e.to_string())))?;
    let series = SeriesIndex::load(&store)?;
    let series = Arc::new(RwLock::new(series));
    let takedown = Arc::new(cfg.takedown.clone());
    let list = Arc::new(HashList::load(
        store.clone(),
        signer.clone(),
        clock.clone(),
    )?);
    tracing::info!(list = %list.tip(), "known-hash list loaded");
    let ingest = Ingest {
        registry: registry.clone(),
        routes: routes.clone(),
        signer: signer.clone(),
        store: store.clone(),
        list: list.clone(),
        clock: clock.clone(),
        cases: cases.clone(),
        takedown: takedown.clone(),
        series: series.clone(),
    };
    Ok(Hub { ingest, hub_id })
}

/// Starts the hub and serves until `shutdown` completes. `on_listening`
/// gets the bound address (the config may say port 0).
pub async fn run(
    cfg: HubConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), HubError> {
    let Hub { ingest, hub_id } = open_hub(&cfg)?;
    let Ingest {
        registry,
        store,
        list,
        clock,
        cases,
        series,
        signer,
        takedown,
        ..
    } = ingest.clone();
    let (tls, verifier) = server_config(&cfg.tls)?;
    let auth = Auth::new(verifier, registry.clone());
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, federation = %cfg.federation, "hub listening (mTLS, TLS 1.3)");
    on_listening(addr);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SubmissionServer<SubmissionService>>()
        .await;
    health_reporter
        .set_serving::<InboxServer<InboxService>>()
        .await;
    health_reporter
        .set_serving::<HashListServer<HashListService>>()
        .await;
    health_reporter
        .set_serving::<CasesServer<CasesService>>()
        .await;
    health_reporter
        .set_serving::<SeriesServer<SeriesService>>()
        .await;
    let (reflection, reflection_alpha) =
        meldnet_proto::reflection().map_err(|e| HubError::Config {
            key: "reflection",
            message: e.to_string(),
        })?;

    let recheck_auth = auth.clone();
    let recheck: meldnet_net::Recheck = Arc::new(move |peer| {
        recheck_auth
            .still_valid(peer)
            .map_err(|s| s.message().to_string())
    });
    let incoming = incoming(
        listener,
        tls,
        cfg.federation.clone(),
        cfg.connections.clone(),
        Some(recheck),
    );
    let gate = HubGate::new(auth.clone());
    let admission = AdmissionLayer::new(Arc::new(gate), cfg.calls.clone());
    // Delivery streams never end by themselves: tell them when to.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let deadlines = Arc::new(Notify::new());
    let notifications = Arc::new(Notify::new());
    let notifier = Notifier {
        store: store.clone(),
        signer: signer.clone(),
        clock: clock.clone(),
        hub: hub_id.clone(),
        wake: notifications.clone(),
    };
    let notifying = tokio::spawn(notifier.run(stopping.clone()));
    let watcher = DeadlineWatcher {
        store: store.clone(),
        signer,
        clock: clock.clone(),
        hub: hub_id.clone(),
        wake: deadlines.clone(),
    };
    let watching = tokio::spawn(watcher.run(stopping.clone()));
    let retention = Arc::new(Notify::new());
    let expiring = tokio::spawn(
        crate::retention::RetentionWatcher {
            store: store.clone(),
            policy: cfg.retention.policy(),
            clock: clock.clone(),
            hub: hub_id.clone(),
            every: std::time::Duration::from_secs(u64::from(cfg.retention.every_minutes) * 60),
            wake: retention.clone(),
        }
        .run(stopping.clone()),
    );
    let stopping_watch = stopping.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    let serving = tonic::transport::Server::builder()
        // A connection that stops answering pings is closed.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(admission)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            SubmissionServer::new(SubmissionService::new(
                ingest.clone(),
                auth.clone(),
                cfg.calls.max_stream_batches,
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            InboxServer::new(InboxService::new(store.clone(), auth.clone(), stopping))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(HashListServer::new(HashListService::new(
            list.clone(),
            auth.clone(),
        )))
        .add_service(CasesServer::new(CasesService::new(
            store.clone(),
            registry.clone(),
            clock.clone(),
            takedown,
            auth.clone(),
            cases,
        )))
        .add_service(SeriesServer::new(SeriesService::new(
            store.clone(),
            auth.clone(),
            series,
            notifications.clone(),
        )))
        .add_service(AdminServer::new(AdminService::new(
            ingest,
            auth,
            vec![deadlines, notifications, retention],
        )))
        .serve_with_incoming_shutdown(incoming, shutdown);
    // Graceful shutdown waits for clients to close their connections; an
    // idle client that never does must not keep the hub from stopping.
    let mut stopped = stopping_watch;
    let drain_limit = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    tokio::select! {
        r = serving => r?,
        () = drain_limit => tracing::warn!("clients still connected {} s after shutdown began: closing", SHUTDOWN_DRAIN.as_secs()),
    }
    let _ = watching.await;
    let _ = notifying.await;
    let _ = expiring.await;
    store.flush()?;
    tracing::info!("hub stopped");
    Ok(())
}
