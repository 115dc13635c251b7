//! End-to-end tests of the commands: the trees they make are loaded with the
//! same functions the hub, nodes and agencies use at start-up, and the
//! certificates are checked with the same rustls verifiers.

use crate::ledger::{Ledger, Serial};
use crate::{init, issue, revoke, show, CertsError, InitOptions, IssueOptions, RevokeTarget};
use meldnet_agency::config::AgencyConfig;
use meldnet_core::Keyring;
use meldnet_core::SigningKey;
use meldnet_core::SpiffeId;
use meldnet_hub::config::HubConfig;
use meldnet_net::{load_certs, ReloadingVerifier};
use meldnet_node::config::NodeConfig;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::RootCertStore;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FED: &str = "eu.meldnet.test";

fn id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{FED}/{path}")).unwrap()
}

fn options(dir: &Path) -> InitOptions {
    InitOptions {
        dir: dir.to_path_buf(),
        federation: FED.into(),
        nodes: vec!["NL".into(), "DE".into(), "FR".into()],
        agencies: vec!["DE/bka".into(), "NL/politie".into(), "EU/europol".into()],
        regulators: vec!["DE/bnetza".into()],
        representatives: vec![],
        operators: vec!["admin".into()],
        hub_addr: "127.0.0.1:7443".into(),
        metrics_addr: Some("127.0.0.1:9464".into()),
        days: 825,
    }
}

fn cert_der(path: &Path) -> CertificateDer<'static> {
    load_certs(path, "test").unwrap().remove(0)
}

fn roots(dir: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der(&dir.join("ca.pem"))).unwrap();
    roots
}

/// The hub's own client-certificate verifier, reading `crl.pem`.
fn hub_verifier(dir: &Path) -> Arc<ReloadingVerifier> {
    ReloadingVerifier::new(roots(dir), vec![dir.join("crl.pem")]).unwrap()
}

/// The `agency.toml` in `folder` loads, names `path`, has a keyring that
/// loads and a certificate the hub accepts: what `meldnet-agency` needs.
fn agency_client_works(verifier: &ReloadingVerifier, folder: &Path, path: &str) {
    let config = AgencyConfig::load(&folder.join("agency.toml")).unwrap();
    assert_eq!(config.tls.identity().unwrap(), id(path));
    Keyring::load(&config.keyring).unwrap();
    accepts(verifier, &config.tls.cert).unwrap();
}

fn accepts(verifier: &ReloadingVerifier, cert: &Path) -> Result<(), rustls::Error> {
    verifier
        .verify_client_cert(&cert_der(cert), &[], UnixTime::now())
        .map(|_| ())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn crl_serials(dir: &Path) -> (Vec<Serial>, u64) {
    let pem = std::fs::read_to_string(dir.join("crl.pem")).unwrap();
    let der = crate::x509::pem_to_der(dir, &pem, "X509 CRL").unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let serials = crl
        .iter_revoked_certificates()
        .map(|r| Serial::from_der_bytes(r.raw_serial()).unwrap())
        .collect();
    let number = crl.crl_number().unwrap().to_u64_digits();
    (serials, number.first().copied().unwrap_or(0))
}

fn serial_of(path: &Path) -> Serial {
    crate::x509::read_cert(path).unwrap().serial.unwrap()
}

#[test]
fn init_makes_a_tree_that_every_role_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    let summary = init(&options(&dir)).unwrap();
    assert_eq!(summary.parties.len(), 1 + 3 + 3 + 1 + 1);
    assert_eq!(
        summary.files.last(),
        Some(&dir.join("ca.pem")),
        "ca.pem is written last"
    );

    // The hub's config, keyring, signing key and TLS files load as the hub loads them.
    let hub = HubConfig::load(&dir.join("hub/hub.toml")).unwrap();
    assert_eq!(hub.federation.as_str(), FED);
    assert_eq!(hub.listen.to_string(), "127.0.0.1:7443");
    assert_eq!(
        hub.metrics_listen.map(|m| m.to_string()).as_deref(),
        Some("127.0.0.1:9464")
    );
    assert_eq!(hub.data_dir, dir.join("hub/data"));
    assert_eq!(hub.tls.crls, vec![dir.join("hub/../crl.pem")]);
    let agencies: Vec<String> = hub
        .agencies
        .iter()
        .map(|a| a.identity.to_string())
        .collect();
    assert_eq!(
        agencies,
        ["agency/DE/bka", "agency/NL/politie", "agency/EU/europol"].map(|p| id(p).to_string())
    );
    assert_eq!(hub.routing.member_states.len(), 27);
    meldnet_net::server_config(&hub.tls).unwrap();
    let keyring = Keyring::load(&hub.keyring).unwrap();
    assert_eq!(keyring.federation().as_str(), FED);
    assert_eq!(keyring.owners().count(), 4, "the hub and three nodes sign");
    let hub_key = SigningKey::load(&hub.signing_key).unwrap();
    assert!(keyring.get(&id("hub"), hub_key.public().id()).is_some());

    let hub_pem = dir.join("hub/hub.pem");
    let hub_der = cert_der(&hub_pem);
    assert_eq!(SpiffeId::from_certificate(&hub_der).unwrap(), id("hub"));
    let (_, hub_x509) = x509_parser::parse_x509_certificate(&hub_der).unwrap();
    let eku = hub_x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    // The hub certificate is a valid server certificate for every name clients use.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(&dir)),
        provider,
    )
    .build()
    .unwrap();
    for name in ["hub.eu.meldnet.test", "localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        server_verifier
            .verify_server_cert(&hub_der, &[], &name, &[], UnixTime::now())
            .unwrap();
    }

    let ca_der = cert_der(&dir.join("ca.pem"));
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca_x509.is_ca());
    assert_eq!(
        ca_x509.subject().to_string(),
        format!("CN=meldnet federation CA {FED}")
    );
    assert_eq!(hub_x509.issuer().as_raw(), ca_x509.subject().as_raw());

    let verifier = hub_verifier(&dir);
    for cc in ["NL", "DE", "FR"] {
        let node = NodeConfig::load(&dir.join(format!("nodes/{cc}/node.toml"))).unwrap();
        assert_eq!(node.hub.server_name, "hub.eu.meldnet.test");
        assert_eq!(node.hub.address, "127.0.0.1:7443");
        assert_eq!(node.tls.identity().unwrap(), id(&format!("node/{cc}")));
        let key = SigningKey::load(&node.signing_key).unwrap();
        assert!(Keyring::load(&node.keyring)
            .unwrap()
            .get(&id(&format!("node/{cc}")), key.public().id())
            .is_some());
        let der = cert_der(&node.tls.cert);
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(x.issuer().as_raw(), ca_x509.subject().as_raw());
        assert_eq!(
            x.subject().to_string(),
            format!("CN=spiffe://{FED}/node/{cc}")
        );
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let sans = &x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            sans.len(),
            1,
            "a client certificate's only SAN is its SPIFFE id"
        );
        accepts(&verifier, &node.tls.cert).unwrap();
    }
    for (folder, path) in [
        ("DE-bka", "agency/DE/bka"),
        ("NL-politie", "agency/NL/politie"),
        ("EU-europol", "agency/EU/europol"),
    ] {
        agency_client_works(&verifier, &dir.join(format!("agencies/{folder}")), path);
    }
    let operator = dir.join("operators/admin/operator.pem");
    assert_eq!(
        SpiffeId::from_certificate(&cert_der(&operator)).unwrap(),
        id("operator/admin")
    );
    accepts(&verifier, &operator).unwrap();

    // Private keys are owner-only.
    for key in files_under(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
    {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }

    // The ledger lists every certificate with the serial it really carries.
    let ledger = Ledger::load(&dir.join("issued.toml")).unwrap();
    assert_eq!(ledger.certs.len(), 9);
    assert_eq!(ledger.ca.serial, Serial(1));
    assert_eq!(ledger.next_serial, Serial(11));
    for e in &ledger.certs {
        let path = dir.join(&e.cert);
        assert_eq!(serial_of(&path), e.serial, "{}", e.cert.display());
        assert_eq!(
            SpiffeId::from_certificate(&cert_der(&path)).unwrap(),
            e.identity
        );
        assert!(!e.revoked);
    }
    assert_eq!(crl_serials(&dir), (vec![], 1));
    let shown = show(&dir).unwrap().to_string();
    assert!(shown.contains("spiffe://eu.meldnet.test/agency/EU/europol") && shown.contains("09"));
}

#[test]
fn init_refuses_an_existing_ca_and_invalid_names_writing_nothing() {
    let tmp = tempfile::tempdir().unwrap();

    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("ca.pem"), "not ours").unwrap();
    let e = init(&options(&existing)).unwrap_err();
    assert!(matches!(e, CertsError::AlreadyInitialised { .. }), "{e}");
    assert_eq!(files_under(&existing), vec![existing.join("ca.pem")]);
    assert_eq!(
        std::fs::read_to_string(existing.join("ca.pem")).unwrap(),
        "not ours"
    );

    let bad_country = tmp.path().join("bad-country");
    let mut o = options(&bad_country);
    o.nodes.push("XX".into());
    let e = init(&o).unwrap_err();
    assert!(e.to_string().contains("XX"), "{e}");
    assert!(!bad_country.exists());

    for spec in ["DE/BKA", "XX/bka", "bka", "DE/bka/x"] {
        let d = tmp.path().join("bad-agency");
        let mut o = options(&d);
        o.agencies = vec![spec.into()];
        let e = init(&o).unwrap_err();
        assert!(
            matches!(e, CertsError::Invalid { what: "agency", .. }),
            "{spec}: {e}"
        );
        assert!(!d.exists(), "{spec}");
    }

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut o = options(&empty);
    o.nodes = vec!["NL".into(), "NL".into()];
    assert!(init(&o).unwrap_err().to_string().contains("twice"));
    let mut o = options(&empty);
    o.hub_addr = "hub:7443".into();
    assert!(init(&o).unwrap_err().to_string().contains("--hub-addr"));
    let mut o = options(&empty);
    o.federation = "EU.Test".into();
    assert!(init(&o).is_err());
    assert!(files_under(&empty).is_empty());
}

#[test]
fn revoke_lists_the_serial_in_the_crl_and_refuses_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    init(&options(&dir)).unwrap();
    let nl_pem = dir.join("nodes/NL/node.pem");
    let nl_serial = serial_of(&nl_pem);
    let verifier = hub_verifier(&dir);
    accepts(&verifier, &nl_pem).unwrap();

    let s = revoke(&dir, &RevokeTarget::Identity(id("node/NL").to_string())).unwrap();
    assert_eq!(s.revoked.len(), 1);
    assert_eq!(s.revoked[0].serial, nl_serial);
    assert_eq!(crl_serials(&dir), (vec![nl_serial], 2));
    // The running hub's verifier picks the new CRL up and refuses the node.
    let e = accepts(&verifier, &nl_pem).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("revoked"), "{e}");
    accepts(&verifier, &dir.join("nodes/DE/node.pem")).unwrap();

    let e = revoke(&dir, &RevokeTarget::Identity(id("node/NL").to_string())).unwrap_err();
    assert!(matches!(e, CertsError::NothingToRevoke(_)), "{e}");
    assert_eq!(
        crl_serials(&dir),
        (vec![nl_serial], 2),
        "a refused revoke leaves the CRL alone"
    );

    // By file: the serial is read from the certificate.
    let bka_pem = dir.join("agencies/DE-bka/agency.pem");
    let bka_serial = serial_of(&bka_pem);
    let s = revoke(&dir, &RevokeTarget::Cert(bka_pem.clone())).unwrap();
    assert_eq!(s.revoked[0].identity, id("agency/DE/bka"));
    assert_eq!(crl_serials(&dir), (vec![nl_serial, bka_serial], 3));
    assert!(revoke(&dir, &RevokeTarget::Cert(bka_pem)).is_err());

    let ledger = Ledger::load(&dir.join("issued.toml")).unwrap();
    assert_eq!(ledger.crl_number, 3);
    let revoked: Vec<Serial> = ledger
        .certs
        .iter()
        .filter(|c| c.revoked)
        .map(|c| c.serial)
        .collect();
    assert_eq!(revoked, vec![nl_serial, bka_serial]);
    assert!(ledger
        .certs
        .iter()
        .all(|c| c.revoked == c.revoked_at.is_some()));

    // A certificate of another CA with the same serial is not ours to revoke.
    let other = tmp.path().join("other");
    init(&options(&other)).unwrap();
    let foreign = other.join("nodes/DE/node.pem");
    assert_eq!(
        serial_of(&foreign),
        serial_of(&dir.join("nodes/DE/node.pem"))
    );
    let e = revoke(&dir, &RevokeTarget::Cert(foreign)).unwrap_err();
    assert!(e.to_string().contains("not issued by the CA"), "{e}");

    assert!(matches!(
        revoke(&dir, &RevokeTarget::Identity(id("node/SE").to_string())),
        Err(CertsError::NothingToRevoke(_))
    ));
    assert!(revoke(
        &dir,
        &RevokeTarget::Identity("spiffe://other.test/node/NL".into())
    )
    .is_err());
}

#[test]
fn init_makes_representatives_that_the_agency_client_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    init(&InitOptions {
        representatives: vec!["NL/fier".into(), "DE/weisser".into()],
        ..options(&dir)
    })
    .unwrap();
    let verifier = hub_verifier(&dir);
    for (folder, path) in [
        ("NL-fier", "representative/NL/fier"),
        ("DE-weisser", "representative/DE/weisser"),
    ] {
        agency_client_works(
            &verifier,
            &dir.join(format!("representatives/{folder}")),
            path,
        );
    }
    let e = init(&InitOptions {
        representatives: vec!["NL".into()],
        ..options(&tmp.path().join("bad"))
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("expected CC/name, e.g. NL/fier"),
        "{e}"
    );
}

#[test]
fn issue_expired_gives_a_certificate_that_has_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fed");
    init(&options(&dir)).unwrap();
    let opts = |identity: &str, out: &str, expired: bool| IssueOptions {
        dir: dir.clone(),
        identity: identity.into(),
        out: tmp.path().join(out),
        days: 30,
        expired,
    };

    let s = issue(&opts(&id("node/NL").to_string(), "certs/nl-expired", true)).unwrap();
    assert_eq!(s.serial, Serial(11), "serials continue after init's");
    let der = cert_der(&s.cert);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let not_after = x.validity().not_after.timestamp();
    assert!(not_after < now - 23 * 3600, "ended about a day ago");
    assert!(x.validity().not_before.timestamp() < not_after);
    assert_eq!(SpiffeId::from_certificate(&der).unwrap(), id("node/NL"));
    assert!(x.extended_key_usage().unwrap().unwrap().value.client_auth);
    let mode = std::fs::metadata(&s.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let e = accepts(&hub_verifier(&dir), &s.cert).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");

    // A fresh hub certificate carries the server names and a new serial.
    let s = issue(&opts(&id("hub").to_string(), "hub2", false)).unwrap();
    assert_eq!(s.serial, Serial(12));
    let der = cert_der(&s.cert);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(x.extended_key_usage().unwrap().unwrap().value.server_auth);
    assert_eq!(
        x.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .len(),
        4
    );
    accepts(&hub_verifier(&dir), &s.cert).unwrap();

    let ledger = Ledger::load(&dir.join("issued.toml")).unwrap();
    assert_eq!(ledger.next_serial, Serial(13));
    let last = &ledger.certs[ledger.certs.len() - 2];
    assert_eq!(
        (last.identity.clone(), last.serial),
        (id("node/NL"), Serial(11))
    );
    assert!(
        last.cert.is_absolute(),
        "outside the folder the path is absolute"
    );

    // Refusals: another federation, a malformed id, an existing output.
    assert!(matches!(
        issue(&opts("spiffe://other.test/node/NL", "x", false)),
        Err(CertsError::Identity(_))
    ));
    assert!(issue(&opts("spiffe://eu.meldnet.test/node/XX", "x", false)).is_err());
    assert!(issue(&opts(&id("node/NL").to_string(), "certs/nl-expired", false)).is_err());
    let mut too_long = opts(&id("node/DE").to_string(), "de-long", false);
    too_long.days = 825 * 3;
    assert!(issue(&too_long).unwrap_err().to_string().contains("CA"));
    assert_eq!(
        Ledger::load(&dir.join("issued.toml")).unwrap().next_serial,
        Serial(13)
    );
}
