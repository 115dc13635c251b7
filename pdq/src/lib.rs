//! PDQ, Meta's perceptual hash, bit-exact with Meta's reference
//! implementation (the test images' hashes and qualities match to the bit),
//! and an index for near matches by Hamming distance.
//!
//! Pure: luminance in, hashes out; no file formats, no I/O, nothing of the
//! federation. Anyone who needs bit-exact PDQ in Rust can use this crate on
//! its own; decoding images to pixels is the caller's (the node's `picture`).

mod hash;
mod hasher;
mod index;

pub use hash::{parse_hex, HashError, PdqHash};
pub use hasher::{
    hash_luma, hash_luma_dihedral, luma_from_rgb8, Dihedral, PdqOutput, MATCH_THRESHOLD,
    MIN_MATCH_QUALITY,
};
pub use index::{IndexBytesError, Match, NearSet, PdqIndex, PdqIndexView, PdqSet, PdqTable};
