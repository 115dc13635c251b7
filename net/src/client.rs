//! Connecting to the hub over mTLS, shared by nodes and agencies.

use crate::tls::ClientTlsFiles;
use meldnet_core::limits::MAX_MESSAGE_BYTES;
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the hub is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEndpoint {
    /// `host:port` of the hub.
    pub address: String,
    /// The DNS name in the hub's certificate, e.g. `hub.eu.meldnet.test`.
    pub server_name: String,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS file could not be read.
    #[error("{what} {path}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The address or TLS settings were refused, or the hub is unreachable.
    #[error("connecting to {address}: {message}")]
    Transport {
        /// The hub's address.
        address: String,
        /// What tonic said.
        message: String,
    },
}

fn read(what: &'static str, p: &std::path::Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(p).map_err(|source| ConnectError::File {
        what,
        path: p.display().to_string(),
        source,
    })
}

/// Opens an mTLS channel to the hub, presenting this party's certificate.
pub async fn connect(hub: &HubEndpoint, tls: &ClientTlsFiles) -> Result<Channel, ConnectError> {
    let transport = |message: String| ConnectError::Transport {
        address: hub.address.clone(),
        message,
    };
    let tls_config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("tls.ca", &tls.ca)?))
        .identity(Identity::from_pem(
            read("tls.cert", &tls.cert)?,
            read("tls.key", &tls.key)?,
        ))
        .domain_name(hub.server_name.clone());
    Endpoint::from_shared(format!("https://{}", hub.address))
        .map_err(|e| transport(e.to_string()))?
        .tls_config(tls_config)
        .map_err(|e| transport(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        // tonic's transport errors hide the TLS alert that says why the hub refused.
        .map_err(|e| transport(meldnet_core::with_causes(&e)))
}

/// The largest message a client decodes.
pub const CLIENT_MAX_DECODE: usize = MAX_MESSAGE_BYTES;
