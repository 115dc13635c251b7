//! The registry: which nodes, agencies and regulators take part, and the
//! keys nodes sign with. It starts from configuration (`keyring.toml` for
//! nodes' keys, `hub.toml` for agencies); operators then register, update
//! (rotate a node's keys) and revoke parties through the admin API, each
//! change stored and audited before it applies. Ingest and case steps take
//! their keys from here, routing its parties, and `auth` refuses a revoked
//! party at every call, on top of the CRL.

use meldnet_core::CountryCode;
use meldnet_core::Keyring;
use meldnet_core::PublicKey;
use meldnet_core::Refusal;
use meldnet_core::{Role, SpiffeId, TrustDomain};
use meldnet_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

pub use meldnet_proto::limits::MAX_KEYS;

#[derive(Clone)]
struct State {
    parties: BTreeMap<SpiffeId, pb::Registration>,
    keyring: Arc<Keyring>,
}

/// The registry; shared, changed only by operators.
pub struct Registry {
    federation: TrustDomain,
    state: RwLock<State>,
}

/// A registration checked against the registry's rules.
pub struct Checked {
    /// The party.
    pub id: SpiffeId,
    /// Its keys (nodes).
    pub keys: Vec<PublicKey>,
}

impl Registry {
    /// The parties of the configuration, then what operators stored.
    pub fn new(
        keyring: Keyring,
        agencies: &[SpiffeId],
        stored: Vec<pb::Registration>,
    ) -> Result<Registry, String> {
        let federation = keyring.federation().clone();
        let mut parties = BTreeMap::new();
        let configured = |id: &SpiffeId, keys: Vec<String>| pb::Registration {
            identity: id.to_string(),
            signing_keys: keys,
            source: "configuration".into(),
            ..Default::default()
        };
        for owner in keyring.owners() {
            if matches!(owner.role(), Role::Node(_)) {
                let keys = keyring.keys_of(owner).iter().map(|k| k.to_hex()).collect();
                parties.insert(owner.clone(), configured(owner, keys));
            }
        }
        for a in agencies {
            parties.insert(a.clone(), configured(a, Vec::new()));
        }
        let mut keyring = keyring;
        for r in stored {
            let id =
                SpiffeId::parse(&r.identity).map_err(|e| format!("stored registration: {e}"))?;
            let keys = parse_keys(&r.signing_keys)
                .map_err(|e| format!("stored registration of {id}: {e}"))?;
            keyring = keyring.with_owner_keys(&id, if r.revoked { &[] } else { &keys });
            parties.insert(id, r);
        }
        Ok(Registry {
            federation,
            state: RwLock::new(State {
                parties,
                keyring: Arc::new(keyring),
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys in force now (a batch keeps the ones it started with).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.read().keyring.clone()
    }

    /// The federation.
    pub fn federation(&self) -> &TrustDomain {
        &self.federation
    }

    /// Why a party was revoked, if it was.
    pub fn revoked(&self, id: &SpiffeId) -> Option<String> {
        self.read()
            .parties
            .get(id)
            .filter(|r| r.revoked)
            .map(|r| r.reason.clone())
    }

    /// Countries of the nodes taking part.
    pub fn nodes(&self) -> Vec<CountryCode> {
        self.read()
            .parties
            .iter()
            .filter(|(_, r)| !r.revoked)
            .filter_map(|(id, _)| match id.role() {
                Role::Node(cc) => Some(*cc),
                _ => None,
            })
            .collect()
    }

    /// Agencies taking part.
    pub fn agencies(&self) -> Vec<SpiffeId> {
        self.read()
            .parties
            .iter()
            .filter(|(id, r)| !r.revoked && matches!(id.role(), Role::Agency { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every party.
    pub fn list(&self) -> Vec<pb::Registration> {
        self.read().parties.values().cloned().collect()
    }

    /// A party's registration.
    pub fn get(&self, id: &SpiffeId) -> Option<pb::Registration> {
        self.read().parties.get(id).cloned()
    }

    /// Checks a registration: a node, agency or regulator of this
    /// federation; nodes with 1 to 8 keys, others with none.
    pub fn check(&self, r: &pb::Registration) -> Result<Checked, Refusal> {
        let id = SpiffeId::parse(&r.identity)
            .map_err(|e| Refusal::invalid("identity", e.to_string()))?;
        if id.trust_domain() != &self.federation {
            return Err(Refusal::invalid(
                "identity",
                format!("{id} is not of federation {}", self.federation),
            ));
        }
        let keys = parse_keys(&r.signing_keys)?;
        match id.role() {
            Role::Node(_) if keys.is_empty() => Err(Refusal::invalid(
                "signing_keys",
                "a node signs its reports: register at least one key",
            )),
            Role::Node(_) if keys.len() > MAX_KEYS => Err(Refusal::invalid(
                "signing_keys",
                format!("at most {MAX_KEYS} keys"),
            )),
            Role::Node(_) => Ok(Checked { id, keys }),
            role if !role.can_be_registered() => Err(Refusal::invalid(
                "identity",
                format!("{id}: only nodes, agencies and regulators are registered"),
            )),
            _ if !keys.is_empty() => Err(Refusal::invalid(
                "signing_keys",
                "agencies and regulators sign nothing: no keys",
            )),
            _ => Ok(Checked { id, keys }),
        }
    }

    /// Applies a registration (after it is durable).
    pub fn apply(&self, r: pb::Registration, keys: &[PublicKey]) -> Result<(), Refusal> {
        let id = SpiffeId::parse(&r.identity)
            .map_err(|e| Refusal::invalid("identity", e.to_string()))?;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let keyring = state
            .keyring
            .with_owner_keys(&id, if r.revoked { &[] } else { keys });
        state.keyring = Arc::new(keyring);
        state.parties.insert(id, r);
        Ok(())
    }
}

fn parse_keys(keys: &[String]) -> Result<Vec<PublicKey>, Refusal> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            PublicKey::from_hex(k, "signing_keys")
                .map_err(|e| Refusal::invalid(format!("signing_keys[{i}]"), e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldnet_core::SigningKey;
    use meldnet_core::{KeyEntry, KeyringFile};

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://t.test/{s}")).unwrap()
    }

    #[test]
    fn registering_rotating_and_revoking_change_keys_and_parties() {
        let k1 = SigningKey::generate();
        let file = KeyringFile {
            federation: TrustDomain::parse("t.test").unwrap(),
            keys: vec![KeyEntry {
                owner: id("node/NL"),
                public_key: k1.public().to_hex(),
            }],
        };
        let reg = Registry::new(
            Keyring::from_file(file, "test").unwrap(),
            &[id("agency/NL/politie")],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(reg.nodes(), [CountryCode::parse("NL").unwrap()]);
        let k2 = SigningKey::generate();
        let r = pb::Registration {
            identity: id("node/NL").to_string(),
            signing_keys: vec![k2.public().to_hex()],
            ..Default::default()
        };
        let c = reg.check(&r).unwrap();
        reg.apply(r, &c.keys).unwrap();
        assert!(reg
            .keyring()
            .get(&id("node/NL"), k2.public().id())
            .is_some());
        assert!(reg
            .keyring()
            .get(&id("node/NL"), k1.public().id())
            .is_none());
        let revoked = pb::Registration {
            identity: id("agency/NL/politie").to_string(),
            revoked: true,
            reason: "left".into(),
            ..Default::default()
        };
        reg.apply(revoked, &[]).unwrap();
        assert!(reg.agencies().is_empty());
        assert_eq!(
            reg.revoked(&id("agency/NL/politie")).as_deref(),
            Some("left")
        );
        // Rules for registrations name the field.
        let bad = |r: pb::Registration| reg.check(&r).err().map(|e| e.field);
        assert_eq!(
            bad(pb::Registration {
                identity: id("node/DE").to_string(),
                ..Default::default()
            })
            .as_deref(),
            Some("signing_keys")
        );
        assert_eq!(
            bad(pb::Registration {
                identity: id("node/DE").to_string(),
                signing_keys: vec!["zz".into()],
                ..Default::default()
            })
            .as_deref(),
            Some("signing_keys[0]")
        );
        assert_eq!(
            bad(pb::Registration {
                identity: "spiffe://other.test/node/DE".into(),
                signing_keys: vec![k2.public().to_hex()],
                ..Default::default()
            })
            .as_deref(),
            Some("identity")
        );
        assert_eq!(
            bad(pb::Registration {
                identity: id("operator/x").to_string(),
                ..Default::default()
            })
            .as_deref(),
            Some("identity")
        );
    }
}
