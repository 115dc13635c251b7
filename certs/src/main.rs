//! `meldnet-certs`: the federation CA on the command line. The work is done
//! in the library; this file only parses arguments and prints summaries.

use clap::{ArgGroup, Parser, Subcommand};
use meldnet_certs::{InitOptions, IssueOptions, RevokeTarget, DEFAULT_DAYS};
use std::path::PathBuf;
use std::process::ExitCode;

/// Makes a federation's CA, certificates, signing keys, configs and CRLs.
#[derive(Parser, Debug)]
#[command(name = "meldnet-certs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Makes a new federation in DIR: CA, CRL, certificates, keys, keyring and configs.
    Init(InitOptions),
    /// Issues one more certificate from the CA in DIR.
    Issue {
        /// The federation folder.
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE id, e.g. spiffe://eu.meldnet.test/node/NL.
        #[arg(long)]
        identity: String,
        /// Output prefix: writes PREFIX.pem and PREFIX.key.
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = DEFAULT_DAYS)]
        days: u32,
        /// Make a certificate that expired yesterday (for tests of refusal).
        #[arg(long, conflicts_with = "days")]
        expired: bool,
    },
    /// Issues a hosting provider's certificate from a node's provider CA
    /// (spiffe://<federation>/provider/<CC>/NAME), for the node's hash checks.
    Provider {
        /// The node's folder (holds node.pem and providers/).
        #[arg(long)]
        node_dir: PathBuf,
        /// The provider's short name.
        #[arg(long)]
        name: String,
        /// Output folder: NAME.pem, NAME.key and ca.pem (the node's provider CA).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = DEFAULT_DAYS)]
        days: u32,
    },
    /// Revokes certificates and rewrites DIR/crl.pem.
    #[command(group(ArgGroup::new("target").required(true).args(["identity", "cert"])))]
    Revoke {
        /// The federation folder.
        #[arg(long)]
        dir: PathBuf,
        /// Revoke every unrevoked certificate of this SPIFFE id.
        #[arg(long)]
        identity: Option<String>,
        /// Revoke the certificate in this PEM file.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Re-signs DIR/crl.pem from the ledger (before it expires, or after a failed write).
    Crl {
        /// The federation folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Prints the ledger of issued certificates.
    Show {
        /// The federation folder.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Errors are printed with their own message only: each already names the
/// file or identity and its cause.
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meldnet-certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(opts) => {
            let summary = meldnet_certs::init(&opts)?;
            println!("{summary}");
        }
        Command::Issue {
            dir,
            identity,
            out,
            days,
            expired,
        } => {
            let opts = IssueOptions {
                dir,
                identity,
                out,
                days,
                expired,
            };
            let summary = meldnet_certs::issue(&opts)?;
            println!("{summary}");
        }
        Command::Provider {
            node_dir,
            name,
            out,
            days,
        } => {
            let s = meldnet_certs::provider::issue_provider(&node_dir, &name, &out, days)?;
            println!("issued {} (valid to {})", s.identity, s.not_after);
            for f in &s.files {
                println!("  {}", f.display());
            }
        }
        Command::Revoke {
            dir,
            identity,
            cert,
        } => {
            let target = match (identity, cert) {
                (Some(id), _) => RevokeTarget::Identity(id),
                (None, Some(path)) => RevokeTarget::Cert(path),
                (None, None) => anyhow::bail!("revoke needs --identity or --cert"),
            };
            let summary = meldnet_certs::revoke(&dir, &target)?;
            println!("{summary}");
        }
        Command::Crl { dir } => {
            let summary = meldnet_certs::refresh_crl(&dir)?;
            println!("{summary}");
        }
        Command::Show { dir } => {
            let summary = meldnet_certs::show(&dir)?;
            println!("{summary}");
        }
    }
    Ok(())
}
