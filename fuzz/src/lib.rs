//! What the fuzz targets and the corpus generator share: the bound on an
//! input, a made-up federation whose keys come from fixed seeds (so that
//! the generated seeds carry signatures the targets verify), and a scratch
//! folder for the targets that read files.
//!
//! Every target calls the project's own decoders; a panic anywhere is a
//! crash (afl.rs turns it into an abort), never an accepted outcome.

use meldnet_core::CountryCode;
use meldnet_core::{SpiffeId, TrustDomain};
use meldnet_core::{KeyEntry, Keyring, KeyringFile};
use meldnet_core::SigningKey;
use std::path::{Path, PathBuf};

/// The largest input a target looks at (1 MiB, also afl-fuzz's own
/// largest test case): larger inputs return at once, so no run can spend
/// its memory on one input. Each target documents any tighter bound.
pub const MAX_INPUT: usize = 1 << 20;

/// The receiver's clock in the targets: 2026-06-01T00:00:00Z (fixed, so a
/// run is reproducible).
pub const NOW_MS: i64 = 1_780_272_000_000;

/// What an importer does with an accepted row: the list entry it becomes
/// (`list_import::to_list_entry`), whose wire form the hub validates
/// again (`ListEntry::from_proto`) and must accept as the same entry.
pub fn check_entry(entry: meldnet_list::ImportedEntry) {
    use meldnet_list::ListEntry;
    let nl = CountryCode::parse("NL").expect("NL");
    if let Ok(e) = meldnet_list::to_list_entry(entry, nl) {
        let again = ListEntry::from_proto(&e.to_proto());
        assert_eq!(again.as_ref(), Ok(&e), "an imported entry's wire form");
    }
}

/// The made-up federation of the fuzz targets.
pub struct Federation {
    /// Its trust domain.
    pub domain: TrustDomain,
    /// The hub's signing key.
    pub hub: SigningKey,
    /// Node NL's signing key.
    pub node_nl: SigningKey,
    /// The public keys of both, as a recipient holds them.
    pub keyring: Keyring,
}

impl Federation {
    /// Node NL's identity.
    pub fn nl(&self) -> SpiffeId {
        SpiffeId::node(&self.domain, CountryCode::parse("NL").expect("NL"))
    }

    /// The hub's identity.
    pub fn hub_id(&self) -> SpiffeId {
        SpiffeId::hub(&self.domain)
    }
}

/// A key from a fixed seed, through the key-file reader the parties use.
fn key_from_seed(dir: &Path, byte: u8) -> SigningKey {
    let path = dir.join(format!("key-{byte}"));
    std::fs::write(&path, format!("{}\n", hex(&[byte; 32]))).expect("write a key file");
    let key = SigningKey::load(&path).expect("read a key file");
    let _ = std::fs::remove_file(&path);
    key
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The federation: always the same keys.
pub fn federation() -> Federation {
    let dir = scratch_dir();
    let hub = key_from_seed(&dir, 0x11);
    let node_nl = key_from_seed(&dir, 0x22);
    let domain = TrustDomain::parse("fuzz.meldnet.test").expect("trust domain");
    let nl = SpiffeId::node(&domain, CountryCode::parse("NL").expect("NL"));
    let keyring = Keyring::from_file(
        KeyringFile {
            federation: domain.clone(),
            keys: vec![
                KeyEntry {
                    owner: SpiffeId::hub(&domain),
                    public_key: hub.public().to_hex(),
                },
                KeyEntry {
                    owner: nl,
                    public_key: node_nl.public().to_hex(),
                },
            ],
        },
        "fuzz",
    )
    .expect("keyring");
    Federation {
        domain,
        hub,
        node_nl,
        keyring,
    }
}

/// A folder for files a target writes: `MELDNET_FUZZ_SCRATCH` when set
/// (scripts/fuzz.sh sets it and removes it after the run), else one of this
/// process's own, in memory (`/dev/shm`) where there is one, so a file per
/// execution costs no disk. Targets make it before `fuzz!`, in the fork
/// server, so that every forked child uses the same one.
pub fn scratch_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MELDNET_FUZZ_SCRATCH") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        return dir;
    }
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("meldnet-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes `bytes` as `dir/name`, replacing what was there.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the input file");
    path
}
