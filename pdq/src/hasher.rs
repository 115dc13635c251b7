//! PDQ, Meta's 256-bit perceptual hash, computed the way Meta's reference
//! computes it, to the bit: the whole federation's near-duplicate matching
//! compares hashes made here with hashes made by other tools.
//!
//! The steps (each in single precision, in the reference's order of
//! operations, because a different rounding flips bits near the median):
//! 1. luminance `0.299 R + 0.587 G + 0.114 B` (computed in double, stored as
//!    single, as the reference's Python bindings do);
//! 2. two passes of a Jarosz box filter along rows then columns, the window
//!    `ceil(dimension / 128)`, then decimation to 64x64 at pixel centres;
//! 3. quality: the sum of quantised gradients of the 64x64 image / 90, at most 100;
//! 4. the 2-D DCT of the 64x64 image, keeping frequencies 1..16 in each direction;
//! 5. bit `16 i + j` set when coefficient (i, j) is above the median of all 256.
//!
//! The eight dihedral variants (rotations and mirrors) come from the one DCT
//! by sign changes and a transpose, as in the reference.

#![allow(
    clippy::indexing_slicing,
    reason = "fixed 64x64 and 16x16 working buffers indexed by loop bounds; the image's size is checked against rows x cols where it enters (dct_of_luma)"
)]

use crate::hash::PdqHash;

/// Hamming distance at or below which two PDQ hashes are the same picture.
pub const MATCH_THRESHOLD: u32 = 31;
/// Hashes of lower quality are kept but never used for matching: a flat or
/// tiny image's hash says little about it.
pub const MIN_MATCH_QUALITY: u8 = 50;
/// Images smaller than this in either dimension hash to zero, quality 0.
const MIN_HASHABLE_DIM: usize = 5;

/// The hash and quality of one image, and optionally its dihedral variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdqOutput {
    /// The hash of the image as it is.
    pub hash: PdqHash,
    /// 0-100: how much structure the hash rests on.
    pub quality: u8,
}

/// The eight hashes of an image's rotations and mirrors, in Meta's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dihedral {
    /// As it is.
    pub original: PdqHash,
    /// Rotated 90 degrees counter-clockwise.
    pub rotate90: PdqHash,
    /// Rotated 180 degrees.
    pub rotate180: PdqHash,
    /// Rotated 270 degrees counter-clockwise.
    pub rotate270: PdqHash,
    /// Top and bottom exchanged.
    pub flip_x: PdqHash,
    /// Left and right exchanged (mirror image).
    pub flip_y: PdqHash,
    /// Mirrored about the main diagonal (upper left stays).
    pub flip_plus1: PdqHash,
    /// Mirrored about the other diagonal (upper right stays).
    pub flip_minus1: PdqHash,
}

impl Dihedral {
    /// The eight hashes with their names, in Meta's order.
    pub fn named(&self) -> [(&'static str, PdqHash); 8] {
        [
            ("original", self.original),
            ("rotate90", self.rotate90),
            ("rotate180", self.rotate180),
            ("rotate270", self.rotate270),
            ("flip_x", self.flip_x),
            ("flip_y", self.flip_y),
            ("flip_plus1", self.flip_plus1),
            ("flip_minus1", self.flip_minus1),
        ]
    }
}

impl PdqHash {
    /// Bit `k` (0..256) of the hash: coefficient `(k / 16, k % 16)` is above the median.
    pub fn bit(&self, k: usize) -> bool {
        self.0[31 - k / 8] >> (k % 8) & 1 == 1
    }

    fn set_bit(&mut self, k: usize) {
        self.0[31 - k / 8] |= 1 << (k % 8);
    }

    /// Number of differing bits; by 64-bit words (four popcounts, not 32):
    /// deconfliction compares each new picture with the batch's others.
    pub fn distance(&self, other: &PdqHash) -> u32 {
        self.0
            .chunks_exact(8)
            .zip(other.0.chunks_exact(8))
            .map(|(a, b)| {
                let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                (word(a) ^ word(b)).count_ones()
            })
            .sum()
    }

    /// Whether two hashes of usable quality show the same picture.
    pub fn matches(&self, quality: u8, other: &PdqHash, other_quality: u8) -> bool {
        quality >= MIN_MATCH_QUALITY
            && other_quality >= MIN_MATCH_QUALITY
            && self.distance(other) <= MATCH_THRESHOLD
    }
}

/// Luminance of 8-bit RGB pixels (`rgb.len() == 3 * width * height`).
pub fn luma_from_rgb8(rgb: &[u8]) -> Vec<f32> {
    rgb.chunks_exact(3)
        .map(|p| {
            (f64::from(p[0]) * 0.299 + f64::from(p[1]) * 0.587 + f64::from(p[2]) * 0.114) as f32
        })
        .collect()
}

/// Hashes a luminance image (`luma.len() == rows * cols`, row-major). The
/// buffer is used as working space.
pub fn hash_luma(luma: &mut [f32], rows: usize, cols: usize) -> PdqOutput {
    match dct_of_luma(luma, rows, cols) {
        None => PdqOutput {
            hash: PdqHash([0; 32]),
            quality: 0,
        },
        Some((dct, quality)) => PdqOutput {
            hash: bits_above_median(&dct),
            quality,
        },
    }
}

/// Hashes a luminance image and all eight of its rotations and mirrors.
pub fn hash_luma_dihedral(luma: &mut [f32], rows: usize, cols: usize) -> (Dihedral, u8) {
    let Some((a, quality)) = dct_of_luma(luma, rows, cols) else {
        let z = PdqHash([0; 32]);
        return (
            Dihedral {
                original: z,
                rotate90: z,
                rotate180: z,
                rotate270: z,
                flip_x: z,
                flip_y: z,
                flip_plus1: z,
                flip_minus1: z,
            },
            0,
        );
    };
    // out[target] = sign * a[i][j]; frequencies are 1-based, so an even index is an odd frequency.
    let variant = |transpose: bool, negate: fn(usize, usize) -> bool| {
        let mut b = [[0f32; 16]; 16];
        for (i, row) in a.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let v = if negate(i, j) { -v } else { v };
                if transpose {
                    b[j][i] = v;
                } else {
                    b[i][j] = v;
                }
            }
        }
        bits_above_median(&b)
    };
    (
        Dihedral {
            original: bits_above_median(&a),
            rotate90: variant(true, |_, j| j & 1 == 0),
            rotate180: variant(false, |i, j| (i + j) & 1 == 1),
            rotate270: variant(true, |i, _| i & 1 == 0),
            flip_x: variant(false, |i, _| i & 1 == 0),
            flip_y: variant(false, |_, j| j & 1 == 0),
            flip_plus1: variant(true, |_, _| false),
            flip_minus1: variant(true, |i, j| (i + j) & 1 == 1),
        },
        quality,
    )
}

/// Steps 2 to 4: the 16x16 DCT block and the quality, or None for an image
/// too small to hash.
fn dct_of_luma(luma: &mut [f32], rows: usize, cols: usize) -> Option<([[f32; 16]; 16], u8)> {
    if rows < MIN_HASHABLE_DIM || cols < MIN_HASHABLE_DIM || luma.len() != rows * cols {
        return None;
    }
    let mut small = [[0f32; 64]; 64];
    if rows == 64 && cols == 64 {
        for (i, row) in small.iter_mut().enumerate() {
            row.copy_from_slice(&luma[i * 64..i * 64 + 64]);
        }
    } else {
        let along_rows = jarosz_window(cols);
        let along_cols = jarosz_window(rows);
        let mut scratch = vec![0f32; luma.len()];
        for _ in 0..2 {
            for (src, dst) in luma.chunks_exact(cols).zip(scratch.chunks_exact_mut(cols)) {
                box_1d(src, dst, along_rows);
            }
            box_columns(&scratch, luma, rows, cols, along_cols);
        }
        for (i, row) in small.iter_mut().enumerate() {
            let ini = ((i as f64 + 0.5) * rows as f64 / 64.0) as usize;
            for (j, v) in row.iter_mut().enumerate() {
                let inj = ((j as f64 + 0.5) * cols as f64 / 64.0) as usize;
                *v = luma[ini * cols + inj];
            }
        }
    }
    Some((dct_64_to_16(&small), quality(&small)))
}

/// The box filter's full window for a dimension: `ceil(dimension / 128)`.
fn jarosz_window(dimension: usize) -> usize {
    dimension.div_ceil(128)
}

/// A box filter of `window` along one row, the mean over the part of the
/// window inside the row, with the reference's running sum.
fn box_1d(input: &[f32], out: &mut [f32], window: usize) {
    let n = input.len();
    let half = (window + 2) / 2;
    let (p1, p2, p3, p4) = (half - 1, window - half + 1, n - window, half - 1);
    let mut sum = 0f32;
    let mut size = 0usize;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    for _ in 0..p1 {
        sum += input[ri];
        size += 1;
        ri += 1;
    }
    for _ in 0..p2 {
        sum += input[ri];
        size += 1;
        out[oi] = sum / size as f32;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p3 {
        sum += input[ri];
        sum -= input[li];
        out[oi] = sum / size as f32;
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p4 {
        sum -= input[li];
        size -= 1;
        out[oi] = sum / size as f32;
        li += 1;
        oi += 1;
    }
}

/// The same filter down every column at once, row by row: each column sees
/// exactly the operations `box_1d` would apply to it, in the same order, and
/// memory is read in order.
fn box_columns(input: &[f32], out: &mut [f32], rows: usize, cols: usize, window: usize) {
    let half = (window + 2) / 2;
    let (p1, p2, p3, p4) = (half - 1, window - half + 1, rows - window, half - 1);
    let mut sums = vec![0f32; cols];
    let row = |r: usize| &input[r * cols..(r + 1) * cols];
    let mut size = 0usize;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut write = |oi: usize, sums: &[f32], size: usize| {
        let d = size as f32;
        for (o, s) in out[oi * cols..(oi + 1) * cols].iter_mut().zip(sums) {
            *o = s / d;
        }
    };
    for _ in 0..p1 {
        sums.iter_mut().zip(row(ri)).for_each(|(s, v)| *s += v);
        size += 1;
        ri += 1;
    }
    for _ in 0..p2 {
        sums.iter_mut().zip(row(ri)).for_each(|(s, v)| *s += v);
        size += 1;
        write(oi, &sums, size);
        ri += 1;
        oi += 1;
    }
    for _ in 0..p3 {
        sums.iter_mut()
            .zip(row(ri).iter().zip(row(li)))
            .for_each(|(s, (add, sub))| {
                *s += add;
                *s -= sub;
            });
        write(oi, &sums, size);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p4 {
        sums.iter_mut().zip(row(li)).for_each(|(s, v)| *s -= v);
        size -= 1;
        write(oi, &sums, size);
        li += 1;
        oi += 1;
    }
}

/// Step 3: quantised gradients, summed.
fn quality(a: &[[f32; 64]; 64]) -> u8 {
    let step = |u: f32, v: f32| (((u - v) * 100.0) / 255.0) as i32;
    let mut sum: i32 = 0;
    for (upper, lower) in a.iter().zip(a.iter().skip(1)) {
        for (&u, &v) in upper.iter().zip(lower) {
            sum += step(u, v).abs();
        }
    }
    for row in a.iter() {
        for j in 0..63 {
            sum += step(row[j], row[j + 1]).abs();
        }
    }
    (sum / 90).min(100) as u8
}

/// The 16x64 DCT matrix, rows for frequencies 1..16, as the reference
/// computes it (scale in single precision, the product in double).
fn dct_matrix() -> &'static [[f32; 64]; 16] {
    static MATRIX: std::sync::OnceLock<[[f32; 64]; 16]> = std::sync::OnceLock::new();
    MATRIX.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt() as f32;
        let mut d = [[0f32; 64]; 16];
        for (i, row) in d.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let angle =
                    (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
                *v = (f64::from(scale) * angle.cos()) as f32;
            }
        }
        d
    })
}

/// Step 4: `D A Dᵀ`, summing over k in order, in single precision.
fn dct_64_to_16(a: &[[f32; 64]; 64]) -> [[f32; 16]; 16] {
    let d = dct_matrix();
    let mut t = [[0f32; 64]; 16];
    for (i, trow) in t.iter_mut().enumerate() {
        for (j, tv) in trow.iter_mut().enumerate() {
            let mut sum = 0f32;
            for k in 0..64 {
                sum += d[i][k] * a[k][j];
            }
            *tv = sum;
        }
    }
    let mut b = [[0f32; 16]; 16];
    for (i, brow) in b.iter_mut().enumerate() {
        for (j, bv) in brow.iter_mut().enumerate() {
            let mut sum = 0f32;
            for k in 0..64 {
                sum += t[i][k] * d[j][k];
            }
            *bv = sum;
        }
    }
    b
}

/// Step 5: the median is the 128th smallest coefficient (what Torben's
/// method gives for 256 values); bits are set strictly above it.
fn bits_above_median(b: &[[f32; 16]; 16]) -> PdqHash {
    let mut all: Vec<f32> = b.iter().flatten().copied().collect();
    all.sort_by(f32::total_cmp);
    let median = all[127];
    let mut h = PdqHash([0; 32]);
    for (i, row) in b.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v > median {
                h.set_bit(i * 16 + j);
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_meta_hex_order() {
        let mut h = PdqHash([0; 32]);
        h.set_bit(0);
        h.set_bit(255);
        assert_eq!(
            h.to_hex(),
            format!("8{}1", "0".repeat(62)),
            "bit 255 is the first hex digit's top bit, bit 0 the last digit's lowest"
        );
        assert!(h.bit(0) && h.bit(255) && !h.bit(1));
    }

    #[test]
    fn distance_and_matching() {
        let a = PdqHash([0; 32]);
        let mut b = a;
        for k in 0..31 {
            b.set_bit(k * 3);
        }
        assert_eq!(a.distance(&b), 31);
        assert!(a.matches(50, &b, 100));
        assert!(!a.matches(49, &b, 100), "low quality never matches");
        b.set_bit(200);
        assert!(!a.matches(100, &b, 100));
    }

    #[test]
    fn tiny_images_hash_to_zero() {
        let mut luma = vec![10.0; 4 * 100];
        let out = hash_luma(&mut luma, 4, 100);
        assert_eq!(out.quality, 0);
        assert_eq!(out.hash, PdqHash([0; 32]));
    }

    #[test]
    fn a_flat_image_has_quality_zero() {
        let mut luma = vec![128.0; 200 * 300];
        assert_eq!(hash_luma(&mut luma, 200, 300).quality, 0);
    }

    #[test]
    fn the_column_filter_equals_the_row_filter_on_the_transpose() {
        let (rows, cols) = (37, 11);
        let input: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 255) as f32)
            .collect();
        let mut by_columns = vec![0f32; rows * cols];
        box_columns(&input, &mut by_columns, rows, cols, 3);
        for j in 0..cols {
            let column: Vec<f32> = (0..rows).map(|i| input[i * cols + j]).collect();
            let mut out = vec![0f32; rows];
            box_1d(&column, &mut out, 3);
            for i in 0..rows {
                assert_eq!(out[i].to_bits(), by_columns[i * cols + j].to_bits());
            }
        }
    }
}
