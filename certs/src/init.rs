//! `init`: a whole federation in one folder — CA, CRL, certificates, signing
//! keys, keyring and a working configuration for every party — so that a
//! test or a pilot starts from files that are known to fit together.
//!
//! Everything is checked and made in memory first; only then is anything
//! written, and `ca.pem` last, because its presence is what marks a folder
//! as initialised.

use crate::ca::{ca_common_name, hub_server_name, Ca, Validity};
use crate::error::{CertsError, Result};
use crate::fsutil::{self, Mode};
use crate::layout::Layout;
use crate::ledger::{format_time, CaRecord, IssuedEntry, Ledger, Serial};
use crate::spec;
use meldnet_agency::config::AgencyConfig;
use meldnet_core::SigningKey;
use meldnet_core::{KeyEntry, KeyringFile};
use meldnet_core::{Role, SpiffeId, TrustDomain};
use meldnet_hub::config::OperatorConfig;
use meldnet_hub::config::{AgencyEntry, HubConfig, RoutingConfig};
use meldnet_net::HubEndpoint;
use meldnet_net::{ClientTlsFiles, ServerTlsFiles};
use meldnet_node::config::{HashCheckConfig, NodeConfig};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The default validity of certificates and CRLs, in days (about 27 months,
/// the longest validity browsers accepted for server certificates).
pub const DEFAULT_DAYS: u32 = 825;

/// The longest validity accepted, in days: beyond that dates stop meaning
/// anything for a pilot federation.
pub const MAX_DAYS: u32 = 36_500;

/// What `init` is asked to make, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct InitOptions {
    /// The federation folder; refused if it already holds ca.pem.
    #[arg(long)]
    pub dir: PathBuf,
    /// The federation's trust domain, e.g. eu.meldnet.test.
    #[arg(long)]
    pub federation: String,
    /// Country codes of the hotline nodes, e.g. NL,DE,FR.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Agencies as JURISDICTION/name, e.g. DE/bka,NL/politie,EU/europol.
    #[arg(long, value_delimiter = ',')]
    pub agencies: Vec<String>,
    /// National regulators as CC/name, e.g. DE/bnetza (receive escalations where configured).
    #[arg(long, value_delimiter = ',')]
    pub regulators: Vec<String>,
    /// Victims' representatives (victim-support organisations, lawyers) as
    /// CC/name, e.g. NL/fier (receive the notifications victims chose).
    #[arg(long, value_delimiter = ',')]
    pub representatives: Vec<String>,
    /// Hub operator names.
    #[arg(long, value_delimiter = ',', default_value = "admin")]
    pub operators: Vec<String>,
    /// IP:port the hub listens on and clients connect to.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub hub_addr: String,
    /// IP:port where the hub serves Prometheus metrics (none if absent).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Validity of certificates and the CRL, in days (the CA gets twice this).
    #[arg(long, default_value_t = crate::DEFAULT_DAYS)]
    pub days: u32,
}

/// One certificate `init` made.
#[derive(Debug, Clone)]
pub struct MadeParty {
    /// Its identity.
    pub identity: SpiffeId,
    /// Its certificate file.
    pub cert: PathBuf,
    /// Its configuration file, if the role has one.
    pub config: Option<PathBuf>,
}

/// What `init` made, for the operator to read.
#[derive(Debug, Clone)]
pub struct InitSummary {
    /// The federation folder.
    pub dir: PathBuf,
    /// The federation.
    pub federation: TrustDomain,
    /// The CA certificate.
    pub ca: PathBuf,
    /// Every party's certificate and configuration.
    pub parties: Vec<MadeParty>,
    /// Every file written.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for InitSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "federation {} in {}",
            self.federation,
            self.dir.display()
        )?;
        writeln!(f, "  CA        {}", self.ca.display())?;
        for p in &self.parties {
            write!(f, "  {}\n    cert    {}", p.identity, p.cert.display())?;
            if let Some(c) = &p.config {
                write!(f, "\n    config  {}", c.display())?;
            }
            writeln!(f)?;
        }
        write!(f, "{} files written", self.files.len())
    }
}

/// A file to write.
struct Planned {
    path: PathBuf,
    bytes: Vec<u8>,
    mode: Mode,
}

/// Everything checked, before any key is made.
struct Checked {
    federation: TrustDomain,
    nodes: Vec<SpiffeId>,
    agencies: Vec<SpiffeId>,
    regulators: Vec<SpiffeId>,
    representatives: Vec<SpiffeId>,
    operators: Vec<SpiffeId>,
    hub_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    days: u32,
}

fn check(opts: &InitOptions) -> Result<Checked> {
    let federation = spec::federation(&opts.federation)?;
    let nodes = opts
        .nodes
        .iter()
        .map(|cc| spec::node(&federation, cc.trim()))
        .collect::<Result<Vec<_>>>()?;
    let agencies = opts
        .agencies
        .iter()
        .map(|a| spec::agency(&federation, a.trim()))
        .collect::<Result<Vec<_>>>()?;
    let regulators = opts
        .regulators
        .iter()
        .map(|r| spec::regulator(&federation, r.trim()))
        .collect::<Result<Vec<_>>>()?;
    spec::no_duplicates("--regulators", &regulators)?;
    let representatives = opts
        .representatives
        .iter()
        .map(|r| spec::representative(&federation, r.trim()))
        .collect::<Result<Vec<_>>>()?;
    spec::no_duplicates("--representatives", &representatives)?;
    let operators = opts
        .operators
        .iter()
        .map(|o| spec::operator(&federation, o.trim()))
        .collect::<Result<Vec<_>>>()?;
    spec::no_duplicates("--nodes", &nodes)?;
    spec::no_duplicates("--agencies", &agencies)?;
    spec::no_duplicates("--operators", &operators)?;
    let addr = |what: &'static str, s: &str| -> Result<SocketAddr> {
        s.parse().map_err(|e| {
            CertsError::invalid(
                what,
                s,
                format!("{e}; expected IP:port, e.g. 127.0.0.1:7443"),
            )
        })
    };
    let hub_addr = addr("--hub-addr", &opts.hub_addr)?;
    let metrics_addr = opts
        .metrics_addr
        .as_deref()
        .map(|m| addr("--metrics-addr", m))
        .transpose()?;
    check_days(opts.days)?;
    Ok(Checked {
        federation,
        nodes,
        agencies,
        regulators,
        representatives,
        operators,
        hub_addr,
        metrics_addr,
        days: opts.days,
    })
}

/// Refuses a validity of zero days or beyond [`MAX_DAYS`].
pub fn check_days(days: u32) -> Result<()> {
    if (1..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(CertsError::invalid(
            "--days",
            &days.to_string(),
            format!("must be between 1 and {MAX_DAYS}"),
        ))
    }
}

fn to_toml<T: serde::Serialize>(what: &Path, header: &str, value: &T) -> Result<Vec<u8>> {
    let body = toml::to_string(value).map_err(|e| CertsError::Serialize {
        what: what.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(format!("{header}{body}").into_bytes())
}

const CONFIG_HEADER: &str =
    "# Made by `meldnet-certs init`. Relative paths are relative to this file's folder.\n\n";

/// Makes the federation described by `opts`. Refuses, writing nothing, if
/// the folder already has a CA or any value is invalid.
pub fn init(opts: &InitOptions) -> Result<InitSummary> {
    let layout = Layout::new(&opts.dir);
    let ca_pem = layout.ca_pem();
    if ca_pem.symlink_metadata().is_ok() {
        return Err(CertsError::AlreadyInitialised {
            path: ca_pem.display().to_string(),
        });
    }
    let c = check(opts)?;
    let fed = &c.federation;
    let now = OffsetDateTime::now_utc();

    // The CA must outlive certificates issued later with the same --days.
    let ca_validity = Validity::days_from(now, c.days.saturating_mul(2));
    let leaf_validity = Validity::days_from(now, c.days);
    let (ca, ca_files) = Ca::create(fed, Serial(1), ca_validity)?;
    let mut ledger = Ledger {
        federation: fed.clone(),
        next_serial: Serial(2),
        crl_number: 1,
        crl_days: c.days,
        ca: CaRecord {
            subject: ca_common_name(fed),
            serial: Serial(1),
            not_after: format_time(ca_validity.not_after)?,
        },
        certs: Vec::new(),
    };

    let mut plan: Vec<Planned> = Vec::new();
    let mut parties: Vec<MadeParty> = Vec::new();
    let mut keyring = KeyringFile {
        federation: fed.clone(),
        keys: Vec::new(),
    };
    let hub_endpoint = HubEndpoint {
        address: c.hub_addr.to_string(),
        server_name: hub_server_name(fed),
    };

    // Issues a certificate into `dir/<stem>.pem` and `.key`, records it.
    let mut issue =
        |plan: &mut Vec<Planned>, id: &SpiffeId, dir: &Path, stem: &str| -> Result<PathBuf> {
            let serial = ledger.take_serial()?;
            let issued = ca.issue(id, serial, leaf_validity)?;
            let cert = dir.join(format!("{stem}.pem"));
            plan.push(Planned {
                path: cert.clone(),
                bytes: issued.cert_pem.into_bytes(),
                mode: Mode::Public,
            });
            plan.push(Planned {
                path: dir.join(format!("{stem}.key")),
                bytes: issued.key_pem.into_bytes(),
                mode: Mode::Private,
            });
            ledger.certs.push(IssuedEntry {
                identity: id.clone(),
                serial,
                cert: layout.ledger_path(&cert),
                not_after: format_time(leaf_validity.not_after)?,
                revoked: false,
                revoked_at: None,
            });
            Ok(cert)
        };
    let signing_key =
        |plan: &mut Vec<Planned>, keyring: &mut KeyringFile, id: &SpiffeId, dir: &Path| {
            let key = SigningKey::generate();
            keyring.keys.push(KeyEntry {
                owner: id.clone(),
                public_key: key.public().to_hex(),
            });
            plan.push(Planned {
                path: dir.join("signing.key"),
                bytes: key.to_file_text().into_bytes(),
                mode: Mode::Private,
            });
        };

    // The hub.
    let hub_id = SpiffeId::hub(fed);
    let hub_dir = layout.hub_dir();
    let hub_cert = issue(&mut plan, &hub_id, &hub_dir, "hub")?;
    signing_key(&mut plan, &mut keyring, &hub_id, &hub_dir);
    let hub_config = HubConfig {
        federation: fed.clone(),
        listen: c.hub_addr,
        data_dir: "data".into(),
        signing_key: "signing.key".into(),
        keyring: "../keyring.toml".into(),
        metrics_listen: c.metrics_addr,
        tls: ServerTlsFiles {
            ca: "../ca.pem".into(),
            cert: "hub.pem".into(),
            key: "hub.key".into(),
            crls: vec!["../crl.pem".into()],
        },
        agencies: c
            .agencies
            .iter()
            .map(|id| AgencyEntry {
                identity: id.clone(),
            })
            .collect(),
        routing: RoutingConfig::default(),
        clock: Default::default(),
        takedown: Default::default(),
        retention: Default::default(),
        connections: Default::default(),
        calls: Default::default(),
        store: Default::default(),
    };
    let hub_toml = hub_dir.join("hub.toml");
    add_config(
        &mut plan,
        &mut parties,
        hub_id,
        hub_cert,
        hub_toml,
        &hub_config,
    )?;

    let client_tls = |stem: &str| ClientTlsFiles {
        ca: "../../ca.pem".into(),
        cert: format!("{stem}.pem").into(),
        key: format!("{stem}.key").into(),
    };

    // Nodes.
    for id in &c.nodes {
        let Role::Node(cc) = id.role() else { continue };
        let dir = layout.node_dir(*cc);
        let cert = issue(&mut plan, id, &dir, "node")?;
        signing_key(&mut plan, &mut keyring, id, &dir);
        for (path, bytes, mode) in crate::provider::make_node_files(id, ca_validity, leaf_validity)?
        {
            plan.push(Planned {
                path: dir.join(path),
                bytes,
                mode,
            });
        }
        let config = NodeConfig {
            data_dir: "data".into(),
            signing_key: "signing.key".into(),
            keyring: "../../keyring.toml".into(),
            inbox_dir: "inbox".into(),
            list_dir: "hashlist".into(),
            hub: hub_endpoint.clone(),
            tls: client_tls("node"),
            hash_check: Some(HashCheckConfig {
                listen: "127.0.0.1:0"
                    .parse()
                    .map_err(|_| CertsError::invalid("listen", "127.0.0.1:0", "bad address"))?,
                metrics_listen: None,
                provider_ca: "providers/ca.pem".into(),
                tls: ServerTlsFiles {
                    ca: "../../ca.pem".into(),
                    cert: "providers/server.pem".into(),
                    key: "providers/server.key".into(),
                    crls: vec!["../../crl.pem".into(), "providers/crl.pem".into()],
                },
                sync_interval_s: 60,
            }),
            notices: None,
        };
        let path = dir.join("node.toml");
        add_config(&mut plan, &mut parties, id.clone(), cert, path, &config)?;
    }

    // Agencies, regulators and representatives (recipients like agencies:
    // they use meldnet-agency), each with an agency.toml.
    let recipients = c
        .agencies
        .iter()
        .chain(&c.regulators)
        .chain(&c.representatives)
        .filter_map(|id| {
            let dir = match id.role() {
                Role::Agency { jurisdiction, name } => layout.agency_dir(*jurisdiction, name),
                Role::Regulator { country, name } => layout.regulator_dir(*country, name),
                Role::Representative { country, name } => layout.representative_dir(*country, name),
                _ => return None,
            };
            Some((id, dir))
        });
    for (id, dir) in recipients {
        let cert = issue(&mut plan, id, &dir, "agency")?;
        let config = AgencyConfig {
            keyring: "../../keyring.toml".into(),
            out_dir: "deliveries".into(),
            hub: hub_endpoint.clone(),
            tls: client_tls("agency"),
        };
        let path = dir.join("agency.toml");
        add_config(&mut plan, &mut parties, id.clone(), cert, path, &config)?;
    }

    // Operators.
    for id in &c.operators {
        let Role::Operator(name) = id.role() else {
            continue;
        };
        let dir = layout.operator_dir(name);
        let cert = issue(&mut plan, id, &dir, "operator")?;
        let config = OperatorConfig {
            keyring: "../../keyring.toml".into(),
            hub: hub_endpoint.clone(),
            tls: client_tls("operator"),
        };
        let path = dir.join("operator.toml");
        add_config(&mut plan, &mut parties, id.clone(), cert, path, &config)?;
    }

    // The shared files; the CA key and certificate last.
    let keyring_path = layout.keyring();
    plan.push(Planned {
        bytes: to_toml(
            &keyring_path,
            "# Public Ed25519 keys of the hub and the nodes. Made by `meldnet-certs init`.\n\n",
            &keyring,
        )?,
        path: keyring_path,
        mode: Mode::Public,
    });
    plan.push(Planned {
        path: layout.crl(),
        bytes: ca
            .crl(ledger.crl_number, &[], now, ledger.crl_days)?
            .into_bytes(),
        mode: Mode::Public,
    });
    let ledger_text = toml::to_string(&ledger).map_err(|e| CertsError::Serialize {
        what: layout.ledger().display().to_string(),
        message: e.to_string(),
    })?;
    plan.push(Planned {
        path: layout.ledger(),
        bytes: ledger_text.into_bytes(),
        mode: Mode::Public,
    });
    plan.push(Planned {
        path: layout.ca_key(),
        bytes: ca_files.key_pem.into_bytes(),
        mode: Mode::Private,
    });
    plan.push(Planned {
        path: ca_pem.clone(),
        bytes: ca_files.cert_pem.into_bytes(),
        mode: Mode::Public,
    });

    let mut files = Vec::with_capacity(plan.len());
    for p in plan {
        if let Some(parent) = p.path.parent() {
            fsutil::create_dir_all(parent)?;
        }
        fsutil::write_atomic(&p.path, &p.bytes, p.mode)?;
        files.push(p.path);
    }
    Ok(InitSummary {
        dir: opts.dir.clone(),
        federation: c.federation,
        ca: ca_pem,
        parties,
        files,
    })
}

/// Plans one party's config file and records the party with it.
fn add_config<T: serde::Serialize>(
    plan: &mut Vec<Planned>,
    parties: &mut Vec<MadeParty>,
    identity: SpiffeId,
    cert: PathBuf,
    path: PathBuf,
    config: &T,
) -> Result<()> {
    plan.push(Planned {
        bytes: to_toml(&path, CONFIG_HEADER, config)?,
        path: path.clone(),
        mode: Mode::Public,
    });
    parties.push(MadeParty {
        identity,
        cert,
        config: Some(path),
    });
    Ok(())
}
