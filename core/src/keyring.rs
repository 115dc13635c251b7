//! The public signing keys of a federation's parties, as a TOML file
//! (`keyring.toml`). The hub uses it to check node signatures; recipients use
//! it to check both the node's and the hub's signature, offline, years later.

use crate::identity::{SpiffeId, TrustDomain};
use crate::signing::{KeyId, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// One entry of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Whose key: the hub or a node.
    pub owner: SpiffeId,
    /// 64 hex digits.
    pub public_key: String,
}

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringFile {
    /// The federation all owners belong to.
    pub federation: TrustDomain,
    /// The keys.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// Errors loading a keyring; each names the entry.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("keyring {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("keyring {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said, with the key.
        message: String,
    },
    /// An entry is invalid.
    #[error("keyring {path}: keys[{index}].{field}: {message}")]
    Entry {
        /// The file.
        path: String,
        /// Which entry.
        index: usize,
        /// Which key of it.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Public keys by owner and key id.
#[derive(Debug, Clone)]
pub struct Keyring {
    federation: TrustDomain,
    keys: HashMap<(SpiffeId, KeyId), PublicKey>,
}

impl Keyring {
    /// Loads and validates `keyring.toml`.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Io {
            path: p.clone(),
            source,
        })?;
        let file: KeyringFile = toml::from_str(&text).map_err(|e| KeyringError::Parse {
            path: p.clone(),
            message: e.to_string(),
        })?;
        Self::from_file(file, &p)
    }

    /// Builds from the parsed file; `source` names it in errors.
    pub fn from_file(file: KeyringFile, source: &str) -> Result<Self, KeyringError> {
        let mut keys = HashMap::new();
        for (index, e) in file.keys.into_iter().enumerate() {
            let entry_err = |field, message: String| KeyringError::Entry {
                path: source.to_string(),
                index,
                field,
                message,
            };
            if e.owner.trust_domain() != &file.federation {
                return Err(entry_err(
                    "owner",
                    format!("not of federation {}", file.federation),
                ));
            }
            if !e.owner.role().signs() {
                return Err(entry_err("owner", "only the hub and nodes sign".into()));
            }
            let key = PublicKey::from_hex(&e.public_key, "public_key")
                .map_err(|err| entry_err("public_key", err.to_string()))?;
            keys.insert((e.owner, key.id()), key);
        }
        Ok(Keyring {
            federation: file.federation,
            keys,
        })
    }

    /// The federation.
    pub fn federation(&self) -> &TrustDomain {
        &self.federation
    }

    /// The key `id` of `owner`, if registered.
    pub fn get(&self, owner: &SpiffeId, id: KeyId) -> Option<&PublicKey> {
        self.keys.get(&(owner.clone(), id))
    }

    /// Every owner with at least one key.
    /// A copy in which `owner` holds exactly `keys` (none: it is gone).
    /// Why a copy: readers keep the keyring they started a batch with.
    pub fn with_owner_keys(&self, owner: &SpiffeId, keys: &[PublicKey]) -> Keyring {
        let mut k = self.clone();
        k.keys.retain(|(o, _), _| o != owner);
        for key in keys {
            k.keys.insert((owner.clone(), key.id()), *key);
        }
        k
    }

    /// The keys of `owner`.
    pub fn keys_of(&self, owner: &SpiffeId) -> Vec<PublicKey> {
        let mut v: Vec<PublicKey> = self
            .keys
            .iter()
            .filter(|((o, _), _)| o == owner)
            .map(|(_, k)| *k)
            .collect();
        v.sort_by_key(|k| k.to_hex());
        v
    }

    /// Every owner of a key, each once, in order.
    pub fn owners(&self) -> impl Iterator<Item = &SpiffeId> {
        let mut v: Vec<&SpiffeId> = self.keys.keys().map(|(o, _)| o).collect();
        v.sort();
        v.dedup();
        v.into_iter()
    }
}
