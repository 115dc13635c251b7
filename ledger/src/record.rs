//! One record of the log: what changed in one index, with its own checks.
//!
//! Layout (little-endian), `K` the key length of the record's index:
//!
//! ```text
//! 0..4    header check: CRC-32 of bytes 4..16+K
//! 4..8    payload length in bytes
//! 8..12   payload check: CRC-32 of the payload
//! 12      index id
//! 13      operation: 0 put, 1 delete
//! 14      codec: 0, the payload as given; else the id of the index's
//!         dictionary it is compressed with (zstd)
//! 15      key length K
//! 16..    key (K bytes), then the payload
//! ```
//!
//! Why two checks: the header's own check tells a genuine header from
//! damage, so that a reader can resynchronise on the next genuine record
//! after a damaged range and report exactly which bytes are damaged; the
//! payload's check tells a sound body from a flipped bit in it while the
//! record's place (its index and key) is still known.

/// Bytes before the key.
pub const FIXED: usize = 16;
/// The longest key an index may have.
pub const MAX_KEY: usize = 64;
/// The largest payload a record may carry (a stored report with its decision
/// is a few kilobytes; a list change less): larger lengths are damage.
pub const MAX_PAYLOAD: u32 = 16 << 20;

/// What a record does to its index's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sets the key (to the payload, or to the record's place for an index
    /// of bodies).
    Put,
    /// Removes the key.
    Delete,
}

/// A record's header, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The index it changes.
    pub index: u8,
    /// Put or delete.
    pub op: Op,
    /// The key.
    pub key: Vec<u8>,
    /// Payload length.
    pub len: u32,
    /// The payload's CRC-32 (of the bytes as stored).
    pub payload_crc: u32,
    /// 0: the payload as given; else the dictionary it is compressed with.
    pub codec: u8,
}

impl Header {
    /// Bytes of the header itself.
    pub fn size(&self) -> usize {
        FIXED + self.key.len()
    }
}

/// Why bytes are not a record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("fewer bytes than a record header")]
    Short,
    /// The header's check fails: not a genuine header.
    #[error("the record header's checksum fails")]
    Checksum,
    /// A field holds what no writer writes.
    #[error("the record header holds an impossible {0}")]
    Field(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Decodes and checks the header at the start of `b`.
pub fn decode_header(b: &[u8]) -> Result<Header, HeaderError> {
    let key_len = *b.get(15).ok_or(HeaderError::Short)? as usize;
    if key_len > MAX_KEY {
        // Checked before the CRC so that a damaged length never reads far.
        let crc = u32_at(b, 0).ok_or(HeaderError::Short)?;
        let _ = crc;
        return Err(HeaderError::Checksum);
    }
    let end = FIXED + key_len;
    let head = b.get(..end).ok_or(HeaderError::Short)?;
    let crc = u32_at(head, 0).ok_or(HeaderError::Short)?;
    if crc32fast::hash(head.get(4..).unwrap_or_default()) != crc {
        return Err(HeaderError::Checksum);
    }
    let len = u32_at(head, 4).ok_or(HeaderError::Short)?;
    if len > MAX_PAYLOAD {
        return Err(HeaderError::Field("payload length"));
    }
    let op = match head.get(13) {
        Some(0) => Op::Put,
        Some(1) => Op::Delete,
        _ => return Err(HeaderError::Field("operation")),
    };
    let codec = *head.get(14).ok_or(HeaderError::Short)?;
    Ok(Header {
        codec,
        index: *head.get(12).ok_or(HeaderError::Short)?,
        op,
        key: head.get(FIXED..end).unwrap_or_default().to_vec(),
        len,
        payload_crc: u32_at(head, 8).ok_or(HeaderError::Short)?,
    })
}

/// Appends a record to `buf`: header, then the payload that `write`
/// appends. Returns the payload's offset in `buf` and its length.
pub fn encode(
    buf: &mut Vec<u8>,
    index: u8,
    op: Op,
    key: &[u8],
    write: impl FnOnce(&mut Vec<u8>),
) -> (usize, u32) {
    encode_with(buf, index, op, key, 0, write)
}

/// [`encode`] with a payload that `write` compressed with dictionary
/// `codec` (0: not compressed).
pub fn encode_with(
    buf: &mut Vec<u8>,
    index: u8,
    op: Op,
    key: &[u8],
    codec: u8,
    write: impl FnOnce(&mut Vec<u8>),
) -> (usize, u32) {
    let at = buf.len();
    let key = key.get(..MAX_KEY.min(key.len())).unwrap_or_default();
    buf.extend_from_slice(&[0u8; FIXED]);
    buf.extend_from_slice(key);
    let payload_at = buf.len();
    write(buf);
    let payload = buf.get(payload_at..).unwrap_or_default();
    let len = payload.len() as u32;
    let payload_crc = crc32fast::hash(payload);
    if let Some(h) = buf.get_mut(at..payload_at) {
        if let Some(f) = h.get_mut(4..FIXED) {
            f.iter_mut()
                .zip(
                    len.to_le_bytes()
                        .into_iter()
                        .chain(payload_crc.to_le_bytes())
                        .chain([
                            index,
                            match op {
                                Op::Put => 0,
                                Op::Delete => 1,
                            },
                            codec,
                            key.len() as u8,
                        ]),
                )
                .for_each(|(d, s)| *d = s);
        }
        let crc = crc32fast::hash(h.get(4..).unwrap_or_default());
        if let Some(c) = h.get_mut(..4) {
            c.copy_from_slice(&crc.to_le_bytes());
        }
    }
    (payload_at, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_every_flipped_header_bit_is_caught() {
        let mut buf = Vec::new();
        let (at, len) = encode(&mut buf, 3, Op::Put, b"key-bytes", |b| {
            b.extend_from_slice(b"payload")
        });
        assert_eq!((at, len), (FIXED + 9, 7));
        let h = decode_header(&buf).unwrap();
        assert_eq!(h.index, 3);
        assert_eq!(h.op, Op::Put);
        assert_eq!(h.key, b"key-bytes");
        assert_eq!(h.len, 7);
        assert_eq!(h.payload_crc, crc32fast::hash(b"payload"));
        for bit in 0..h.size() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&b).is_err(), "bit {bit}");
        }
        assert_eq!(decode_header(&buf[..10]), Err(HeaderError::Short));
        let mut del = Vec::new();
        encode(&mut del, 1, Op::Delete, b"k", |_| {});
        assert_eq!(decode_header(&del).unwrap().op, Op::Delete);
    }
}
