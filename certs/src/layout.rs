//! Where everything lives in a federation folder. One place, so that `init`,
//! `issue`, `revoke` and the generated configs agree on every path.

use meldnet_core::CountryCode;
use meldnet_core::Jurisdiction;
use std::path::{Path, PathBuf};

/// The CA certificate, relative to the federation folder.
pub const CA_PEM: &str = "ca.pem";
/// The CA key.
pub const CA_KEY: &str = "ca.key";
/// The CRL the hub loads.
pub const CRL_PEM: &str = "crl.pem";
/// The CA's ledger.
pub const LEDGER: &str = "issued.toml";
/// The federation's public signing keys.
pub const KEYRING: &str = "keyring.toml";

/// The folder of one federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The federation folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ca.pem`.
    pub fn ca_pem(&self) -> PathBuf {
        self.root.join(CA_PEM)
    }

    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join(CA_KEY)
    }

    /// `crl.pem`.
    pub fn crl(&self) -> PathBuf {
        self.root.join(CRL_PEM)
    }

    /// `issued.toml`.
    pub fn ledger(&self) -> PathBuf {
        self.root.join(LEDGER)
    }

    /// `keyring.toml`.
    pub fn keyring(&self) -> PathBuf {
        self.root.join(KEYRING)
    }

    /// `hub/`.
    pub fn hub_dir(&self) -> PathBuf {
        self.root.join("hub")
    }

    /// `nodes/CC/`.
    pub fn node_dir(&self, cc: CountryCode) -> PathBuf {
        self.root.join("nodes").join(cc.as_str())
    }

    /// `agencies/J-name/`.
    pub fn agency_dir(&self, jurisdiction: Jurisdiction, name: &str) -> PathBuf {
        self.root
            .join("agencies")
            .join(format!("{jurisdiction}-{name}"))
    }

    /// `representatives/CC-name/`.
    pub fn representative_dir(&self, cc: CountryCode, name: &str) -> PathBuf {
        self.root
            .join("representatives")
            .join(format!("{cc}-{name}"))
    }

    /// `regulators/CC-name/`.
    pub fn regulator_dir(&self, cc: CountryCode, name: &str) -> PathBuf {
        self.root.join("regulators").join(format!("{cc}-{name}"))
    }

    /// `operators/NAME/`.
    pub fn operator_dir(&self, name: &str) -> PathBuf {
        self.root.join("operators").join(name)
    }

    /// `path` as recorded in the ledger: relative to the federation folder
    /// when inside it (the folder can then be moved), absolute otherwise.
    pub fn ledger_path(&self, path: &Path) -> PathBuf {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let (root, path) = (abs(&self.root), abs(path));
        match path.strip_prefix(&root) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
            _ => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_paths_are_relative_inside_and_absolute_outside() {
        let l = Layout::new("/srv/fed");
        assert_eq!(
            l.ledger_path(Path::new("/srv/fed/nodes/NL/node.pem")),
            PathBuf::from("nodes/NL/node.pem")
        );
        assert_eq!(
            l.ledger_path(Path::new("/tmp/x.pem")),
            PathBuf::from("/tmp/x.pem")
        );
        let de = CountryCode::parse("DE").unwrap();
        assert_eq!(
            l.agency_dir(Jurisdiction::Country(de), "bka"),
            PathBuf::from("/srv/fed/agencies/DE-bka")
        );
        assert_eq!(
            l.agency_dir(Jurisdiction::Eu, "europol"),
            PathBuf::from("/srv/fed/agencies/EU-europol")
        );
    }
}
