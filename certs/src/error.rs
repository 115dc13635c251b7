//! Errors of the certificate tool. Each names the file, identity or spec it
//! is about, so that an operator can act on the message alone.

use meldnet_core::IdentityError;
use std::path::Path;

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// `init` found an existing CA; a second CA would split the federation.
    #[error("{path} already exists: this folder already holds a federation CA; refusing to overwrite it")]
    AlreadyInitialised {
        /// The existing CA certificate.
        path: String,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A command-line value is not acceptable.
    #[error("{what} {value:?}: {message}")]
    Invalid {
        /// Which option or value.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// An identity is malformed or of another federation.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The certificate library refused the parameters or a key.
    #[error("{what}: {message}")]
    Crypto {
        /// What was being made or read.
        what: String,
        /// What rcgen said.
        message: String,
    },
    /// A certificate, key or CRL file does not parse.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The ledger (`issued.toml`) is missing, unreadable or inconsistent.
    #[error("ledger {path}: {message}")]
    Ledger {
        /// The ledger file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration could not be serialized.
    #[error("writing {what}: {message}")]
    Serialize {
        /// Which file.
        what: String,
        /// What the serializer said.
        message: String,
    },
    /// `revoke` found no certificate that is issued and not yet revoked.
    #[error("nothing to revoke: no unrevoked certificate in the ledger matches {0}")]
    NothingToRevoke(String),
    /// The ledger was updated but the CRL could not be written; the ledger
    /// stays the source of truth, and `crl` rewrites the file from it.
    #[error("the ledger was updated but {path} was not rewritten ({source}); run `meldnet-certs crl --dir DIR` to rewrite it")]
    CrlNotWritten {
        /// The CRL file.
        path: String,
        /// The cause.
        source: Box<CertsError>,
    },
}

impl CertsError {
    /// An I/O error naming `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CertsError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// An `Invalid` error for a command-line value.
    pub fn invalid(what: &'static str, value: &str, message: impl ToString) -> Self {
        CertsError::Invalid {
            what,
            value: value.chars().take(200).collect(),
            message: message.to_string(),
        }
    }

    /// A `Crypto` error from rcgen.
    pub fn crypto(what: impl ToString, e: rcgen::Error) -> Self {
        CertsError::Crypto {
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    /// A `Parse` error naming `path`.
    pub fn parse(path: &Path, message: impl ToString) -> Self {
        CertsError::Parse {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = CertsError> = std::result::Result<T, E>;
