//! Fixed-length hashes that travel as lower-case hex. A value of these types
//! always has the right length; the hex form is canonical (lower case), so
//! the same hash is always the same signed bytes.

use std::fmt;

pub use meldnet_pdq::{parse_hex, HashError, PdqHash};

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
