//! The bucket scan of a `PdqTable`: which slots of a bucket's partner-chunk
//! array lie within `room` bits of the query's partner chunk (`pair_bounds`).
//!
//! Why its own module: it is the one loop every probed slot passes through
//! (about 12,000 per query at 3 million hashes), so it has a vector form
//! (AVX2: sixteen slots per step) chosen at run time, and a scalar form that
//! gives the same answers on every processor; the tests compare the two.

/// How the bucket scan runs: chosen once per search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// One slot at a time; every processor.
    Scalar,
    /// Sixteen slots a step; only where the processor has AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Scan {
    /// The fastest form this processor runs.
    pub(crate) fn detect() -> Scan {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Scan::Avx2;
        }
        Scan::Scalar
    }

    /// Calls `hit(i)`, in increasing `i`, for every `i` in `start..start + len`
    /// (positions in `partners`) whose value differs from `query` in at most
    /// `room` bits. Positions past the end of `partners` are never reported.
    #[inline]
    pub(crate) fn run(
        self,
        partners: &[u16],
        start: usize,
        len: usize,
        query: u16,
        room: u32,
        hit: &mut impl FnMut(usize),
    ) {
        let end = start.saturating_add(len).min(partners.len());
        let start = start.min(end);
        match self {
            Scan::Scalar => {
                for (i, p) in partners.iter().enumerate().take(end).skip(start) {
                    if (p ^ query).count_ones() <= room {
                        hit(i);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Scan::Avx2` is only made by `detect` after the
            // processor reported AVX2; `partners` holds `partners.len()`
            // `u16`s, which on x86-64 are little-endian in memory.
            Scan::Avx2 => unsafe {
                avx2(
                    partners.as_ptr().cast::<u8>(),
                    partners.len(),
                    start,
                    end,
                    query,
                    room,
                    hit,
                )
            },
        }
    }

    /// `run` for each probe in turn, `hit(tag, i)` for each position that
    /// passes. Why: a batch walk scans its buckets a block at a time, so
    /// the vector form's tables are made once a block and the scans run in
    /// one loop, instead of a call and its set-up for every bucket (a few
    /// vector steps each).
    #[inline]
    pub(crate) fn run_all(
        self,
        partners: &[u16],
        probes: &[Probe],
        hit: &mut impl FnMut(u32, usize),
    ) {
        match self {
            Scan::Scalar => {
                for p in probes {
                    let (start, len) = (p.start as usize, p.len as usize);
                    let room = u32::from(p.room);
                    self.run(partners, start, len, p.query, room, &mut |i| hit(p.tag, i));
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `run`.
            Scan::Avx2 => unsafe {
                avx2_all(partners.as_ptr().cast::<u8>(), partners.len(), probes, hit)
            },
        }
    }

    /// `run` over values stored as little-endian byte pairs (an index read
    /// in place from its bytes, at any alignment): position `i` is the
    /// value at bytes `2 i` and `2 i + 1`.
    #[inline]
    pub(crate) fn run_le(
        self,
        partners: &[u8],
        start: usize,
        len: usize,
        query: u16,
        room: u32,
        hit: &mut impl FnMut(usize),
    ) {
        let total = partners.len() / 2;
        let end = start.saturating_add(len).min(total);
        let start = start.min(end);
        match self {
            Scan::Scalar => scalar_le(partners, start, end, query, room, hit),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `run`; `partners` holds `total` byte pairs.
            Scan::Avx2 => unsafe { avx2(partners.as_ptr(), total, start, end, query, room, hit) },
        }
    }
}

/// One bucket scan of a batch walk (`Scan::run_all`): `len` positions
/// from `start`, the value they are compared with and the bits they may
/// differ by, and a tag handed back with every hit. 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Probe {
    pub(crate) start: u32,
    pub(crate) len: u32,
    pub(crate) query: u16,
    pub(crate) room: u16,
    pub(crate) tag: u32,
}

#[inline]
fn scalar_le(
    partners: &[u8],
    start: usize,
    end: usize,
    query: u16,
    room: u32,
    hit: &mut impl FnMut(usize),
) {
    let pairs = partners.chunks_exact(2).enumerate().take(end).skip(start);
    for (i, p) in pairs {
        if let &[a, b] = p {
            if (u16::from_le_bytes([a, b]) ^ query).count_ones() <= room {
                hit(i);
            }
        }
    }
}

/// The AVX2 form over `total` little-endian `u16`s from `base`: each step
/// loads sixteen values, counts the differing bits of each (a nibble table
/// through `vpshufb`, the two bytes of a value then added), and compares
/// with `room`. A last partial step loads a full sixteen where there are
/// that many (whatever lies past `end` is masked off) and otherwise falls
/// back to one value at a time.
///
/// # Safety
/// The processor must have AVX2, and `base` must point to `2 * total`
/// readable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(
    base: *const u8,
    total: usize,
    start: usize,
    end: usize,
    query: u16,
    room: u32,
    hit: &mut impl FnMut(usize),
) {
    // SAFETY: the caller's promises, passed on.
    unsafe { avx2_steps(&Tables::new(), base, total, start, end, query, room, hit) }
}

/// `avx2` for every probe of a batch walk, the tables made once.
///
/// # Safety
/// As for `avx2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_all(
    base: *const u8,
    total: usize,
    probes: &[Probe],
    hit: &mut impl FnMut(u32, usize),
) {
    let tables = Tables::new();
    for p in probes {
        let end = (p.start as usize).saturating_add(p.len as usize).min(total);
        let start = (p.start as usize).min(end);
        let room = u32::from(p.room);
        // SAFETY: the caller's promises, passed on; `start <= end <= total`.
        unsafe {
            avx2_steps(&tables, base, total, start, end, p.query, room, &mut |i| {
                hit(p.tag, i)
            })
        };
    }
}

/// The constants of the AVX2 bit count.
#[cfg(target_arch = "x86_64")]
struct Tables {
    /// Bits set in each nibble, for `vpshufb`.
    counts: std::arch::x86_64::__m256i,
    nibble: std::arch::x86_64::__m256i,
    ones: std::arch::x86_64::__m256i,
}

#[cfg(target_arch = "x86_64")]
impl Tables {
    #[target_feature(enable = "avx2")]
    fn new() -> Tables {
        use std::arch::x86_64::*;
        Tables {
            counts: _mm256_setr_epi8(
                0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
                0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
            ),
            nibble: _mm256_set1_epi8(0x0f),
            ones: _mm256_set1_epi8(1),
        }
    }
}

/// The steps of `avx2` over `start..end`.
///
/// # Safety
/// As for `avx2`, and `start <= end <= total`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments, reason = "one scan's whole description")]
unsafe fn avx2_steps(
    k: &Tables,
    base: *const u8,
    total: usize,
    start: usize,
    end: usize,
    query: u16,
    room: u32,
    hit: &mut impl FnMut(usize),
) {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    // SAFETY (whole block): every vector load reads the 32 bytes of values
    // `i..i + 16` with `i + 16 <= total` checked just before, and every
    // single read one value below `end <= total`: unaligned reads within
    // the `2 * total` bytes the caller vouches for. The other intrinsics
    // only compute on registers.
    unsafe {
        let q = _mm256_set1_epi16(query as i16);
        // A count is at most 16; a room of 16 or more lets every value pass.
        let limit = _mm256_set1_epi16(room.min(16) as i16);
        let mut i = start;
        while i < end {
            if i + LANES > total {
                while i < end {
                    let v = base.add(2 * i).cast::<u16>().read_unaligned();
                    if (u16::from_le(v) ^ query).count_ones() <= room {
                        hit(i);
                    }
                    i += 1;
                }
                return;
            }
            let v = _mm256_loadu_si256(base.add(2 * i).cast::<__m256i>());
            let x = _mm256_xor_si256(v, q);
            let lo = _mm256_and_si256(x, k.nibble);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), k.nibble);
            let per_byte = _mm256_add_epi8(
                _mm256_shuffle_epi8(k.counts, lo),
                _mm256_shuffle_epi8(k.counts, hi),
            );
            // Unsigned counts times signed ones, pairs added: per value.
            let per_value = _mm256_maddubs_epi16(per_byte, k.ones);
            let over = _mm256_cmpgt_epi16(per_value, limit);
            // Two mask bits per value; keep the low one of each pair.
            let mut within = !(_mm256_movemask_epi8(over) as u32) & 0x5555_5555;
            let left = end - i;
            if left < LANES {
                within &= (1u32 << (2 * left)) - 1;
            }
            while within != 0 {
                let lane = within.trailing_zeros() as usize / 2;
                hit(i + lane);
                within &= within - 1;
            }
            i += LANES;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(scan: Scan, p: &[u16], start: usize, len: usize, q: u16, room: u32) -> Vec<usize> {
        let mut out = Vec::new();
        scan.run(p, start, len, q, room, &mut |i| out.push(i));
        // The same values as little-endian bytes, one byte into a buffer
        // (misaligned for `u16`): the same answer.
        let mut bytes = vec![0u8];
        bytes.extend(p.iter().flat_map(|v| v.to_le_bytes()));
        let mut le = Vec::new();
        scan.run_le(&bytes[1..], start, len, q, room, &mut |i| le.push(i));
        assert_eq!(le, out, "{scan:?} over bytes");
        out
    }

    #[test]
    fn the_vector_scan_equals_the_scalar_one() {
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let q = 0b1010_0110_0101_1001u16;
        // Values at every distance from the query, and random ones.
        let mut p: Vec<u16> = (0..700)
            .map(|i| {
                let r = next();
                if i % 3 == 0 {
                    let mut v = q;
                    for _ in 0..(r % 6) {
                        v ^= 1 << ((r >> 8) % 16);
                    }
                    v
                } else {
                    r as u16
                }
            })
            .collect();
        p.push(q);
        p.push(!q);
        let scans = if Scan::detect() == Scan::Scalar {
            eprintln!("no AVX2 here: only the scalar scan is checked");
            vec![Scan::Scalar]
        } else {
            vec![Scan::Scalar, Scan::detect()]
        };
        for room in [0, 1, 2, 3, 5, 15, 16, 17, 31] {
            for (start, len) in [
                (0, 0),
                (0, 1),
                (0, 15),
                (0, 16),
                (0, 17),
                (3, 46),
                (5, 160),
                (p.len() - 20, 20),
                (p.len() - 7, 7),
                (p.len() - 3, 50),
                (p.len() + 4, 9),
                (0, p.len()),
            ] {
                let want: Vec<usize> = (start..(start + len).min(p.len()))
                    .filter(|&i| (p[i] ^ q).count_ones() <= room)
                    .collect();
                for &scan in &scans {
                    assert_eq!(
                        all(scan, &p, start, len, q, room),
                        want,
                        "{scan:?} room {room} at {start}+{len}"
                    );
                }
            }
        }
        // A block of probes at once: each probe's hits, tagged, in turn.
        let probes: Vec<Probe> = (0..60u32)
            .map(|k| Probe {
                start: k * 13 % 720,
                len: k % 40,
                query: q ^ (k as u16),
                room: (k % 5) as u16,
                tag: k,
            })
            .collect();
        let values = &p;
        let want: Vec<(u32, usize)> = probes
            .iter()
            .flat_map(|b| {
                let (start, len, room) = (b.start as usize, b.len as usize, u32::from(b.room));
                (start..(start + len).min(p.len()))
                    .filter(move |&i| (values[i] ^ b.query).count_ones() <= room)
                    .map(move |i| (b.tag, i))
            })
            .collect();
        assert!(want.len() > 20);
        for &scan in &scans {
            let mut got = Vec::new();
            scan.run_all(&p, &probes, &mut |t, i| got.push((t, i)));
            assert_eq!(got, want, "{scan:?} over a block");
        }
    }
}
