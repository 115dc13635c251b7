//! How parties of the federation connect: mTLS with rustls (identity only
//! from the certificate's SPIFFE URI SAN; CRLs reloaded when their files
//! change), the accepting loop (connection limits, handshake and first-byte
//! deadlines, re-checks of an open connection), admission of each call
//! (limits per caller, bounded bodies), and the client endpoint.
//!
//! Never: take an identity from anything but the certificate.

mod accept;
mod admission;
mod client;
mod tls;

pub use accept::{incoming, AuthedStream, ConnectionLimits, Recheck};
pub use admission::{Admission, AdmissionLayer, Admit, CallLimits, Gate};
pub use client::{connect, ConnectError, HubEndpoint, CLIENT_MAX_DECODE};
pub use tls::{
    load_certs, load_key, server_config, server_config_with, ClientTlsFiles, PeerInfo,
    ReloadingVerifier, ServerTlsFiles, TlsError,
};
