//! Fixed-length hashes that travel as lower-case hex. A value of these types
//! always has the right length; the hex form is canonical (lower case), so
//! the same hash is always the same signed bytes.

use std::fmt;

/// Why a string is not a hash of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {digits} lower-case hex digits, got {got}")]
pub struct HashError {
    /// How many hex digits the kind needs.
    pub digits: usize,
    /// What was found instead, in words.
    pub got: String,
}

/// Value of a lower-case hex digit, or 0xff.
const fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0xff,
    }
}

const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = hex_value(i as u8);
        i += 1;
    }
    t
};

/// One pass over the digits: the hub parses a dozen hashes per report.
fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HashError> {
    let err = |got: String| HashError { digits: N * 2, got };
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return Err(err(format!("{} characters", s.len())));
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        if hi == 0xff || lo == 0xff {
            let c = s[i * 2..]
                .chars()
                .find(|c| !matches!(c, '0'..='9' | 'a'..='f'))
                .unwrap_or('?');
            return Err(err(format!("the character {c:?}")));
        }
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

macro_rules! fixed_hash {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Parses lower-case hex of exactly the right length.
            pub fn parse_hex(s: &str) -> Result<Self, HashError> {
                parse_hex::<$len>(s).map($name)
            }
            /// Lower-case hex, the form used on the wire.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }
    };
}

fixed_hash!(
    /// A SHA-256 digest: exact matching of files, and digests of signed bytes.
    Sha256,
    32
);
fixed_hash!(
    /// An MD5 digest: still what many hash lists in the field carry.
    Md5,
    16
);
fixed_hash!(
    /// A SHA-1 digest: what Project VIC and many police lists key on.
    Sha1,
    20
);
fixed_hash!(
    /// A PDQ perceptual hash (256 bits), Meta's format.
    PdqHash,
    32
);

impl Sha256 {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(bytes).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_hex() {
        let h = "ab".repeat(32);
        assert_eq!(Sha256::parse_hex(&h).unwrap().to_hex(), h);
        let e = Sha256::parse_hex(&"AB".repeat(32)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected 64 lower-case hex digits, got the character 'A'"
        );
        assert!(Sha256::parse_hex("abc").is_err());
        assert!(Md5::parse_hex(&"0".repeat(32)).is_ok());
        assert!(Md5::parse_hex(&"0".repeat(64)).is_err());
        assert!(PdqHash::parse_hex(&"g".repeat(64)).is_err());
    }
}
