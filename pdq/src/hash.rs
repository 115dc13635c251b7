//! The PDQ hash as a value, and the lower-case hex hashes travel in.

#![allow(
    clippy::indexing_slicing,
    reason = "a 256-entry table indexed by a byte; output positions from chunks of a length checked first"
)]

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

/// Exactly `N` bytes from lower-case hex, in one pass over the digits (the
/// hub parses a dozen hashes per report). The form every hash of the
/// federation travels in, so the same hash is always the same signed bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HashError> {
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

/// A PDQ perceptual hash (256 bits), Meta's format: bit 255 is the first
/// hex digit's top bit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PdqHash(pub [u8; 32]);

impl PdqHash {
    /// Parses 64 lower-case hex digits.
    pub fn parse_hex(s: &str) -> Result<Self, HashError> {
        parse_hex::<32>(s).map(PdqHash)
    }

    /// Lower-case hex, the form used on the wire.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PdqHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PdqHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PdqHash({})", self.to_hex())
    }
}
