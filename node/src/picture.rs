//! Image files to the hashes a node shares: decoding (JPEG, PNG, GIF first
//! frame, BMP, WebP, TIFF) with the EXIF orientation applied, 8-bit RGB, then
//! PDQ (`pdq::hasher`); and the one function that hashes any file, the
//! way `meldnet-node hash` and `report new` both do.
//!
//! Decoding is bounded: dimensions and allocations have limits, so a
//! decompression bomb is an error, not an exhausted machine. A file that
//! fails gives an error naming the reason; it never panics.

use crate::hashing::{hash_file, media_type_of, FileHashes};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use meldnet_core::MediaType;
use meldnet_core::PdqHash;
use meldnet_pdq::{self, Dihedral};
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest width or height decoded (a 16,384-pixel side is far above any photo).
pub const MAX_DIMENSION: u32 = 16_384;
/// Most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
/// Largest image file read into memory for decoding (exact hashes stream
/// and have no limit).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing to hash.
    #[error("empty file (0 bytes)")]
    Empty,
    /// Named like an image but not one of the formats we decode.
    #[error("not a supported image (JPEG, PNG, GIF, BMP, WebP, TIFF)")]
    NotAnImage,
    /// The image is larger than the decoder limits.
    #[error("image too large to decode safely: {0}")]
    TooLarge(String),
    /// The decoder refused the content.
    #[error("corrupt or truncated {format} image: {reason}")]
    Corrupt {
        /// What the content looked like.
        format: String,
        /// What the decoder said.
        reason: String,
    },
}

/// A decoded picture: 8-bit RGB, row-major, orientation applied.
pub struct Rgb {
    /// Pixels, 3 bytes each.
    pub pixels: Vec<u8>,
    /// Width after orientation.
    pub width: u32,
    /// Height after orientation.
    pub height: u32,
}

fn decode_error(format: Option<ImageFormat>, e: image::ImageError) -> PictureError {
    let format = format.map_or("unknown".to_string(), |f| format!("{f:?}").to_uppercase());
    // One line: the reason ends up in a JSON field or a line of text.
    let one_line = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match e {
        image::ImageError::Limits(l) => PictureError::TooLarge(one_line(l.to_string())),
        other => PictureError::Corrupt {
            format,
            reason: one_line(other.to_string()),
        },
    }
}

/// The image format of a file, from its first bytes (never its name); None
/// when it is not one we decode.
pub fn sniff(path: &Path) -> Result<Option<ImageFormat>, PictureError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(32);
    std::fs::File::open(path)?.take(32).read_to_end(&mut head)?;
    Ok(image::guess_format(&head).ok().filter(|f| {
        matches!(
            f,
            ImageFormat::Jpeg
                | ImageFormat::Png
                | ImageFormat::Gif
                | ImageFormat::Bmp
                | ImageFormat::WebP
                | ImageFormat::Tiff
        )
    }))
}

/// Decodes an image file within the limits, EXIF orientation applied.
pub fn decode_rgb(path: &Path) -> Result<Rgb, PictureError> {
    decode_as(path, sniff(path)?)
}

/// `decode_rgb` with the format already read from the content (None: the
/// content is no image we decode).
fn decode_as(path: &Path, format: Option<ImageFormat>) -> Result<Rgb, PictureError> {
    let format = format.ok_or(PictureError::NotAnImage)?;
    let size = std::fs::metadata(path)?.len();
    if size > MAX_IMAGE_FILE_BYTES {
        return Err(PictureError::TooLarge(format!(
            "{size} bytes, at most {MAX_IMAGE_FILE_BYTES} are decoded"
        )));
    }
    let bytes = std::fs::read(path)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(&bytes) {
        return Err(PictureError::Corrupt {
            format: "JPEG".into(),
            reason: "truncated: no end-of-image marker after the last scan".into(),
        });
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes.as_slice()));
    reader.set_format(format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(Some(format), e))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let jpeg = match format {
        ImageFormat::Jpeg => decode_jpeg_like_the_reference(&bytes)?,
        _ => None,
    };
    let mut img = match jpeg {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder).map_err(|e| decode_error(Some(format), e))?,
    };
    img.apply_orientation(orientation);
    let (width, height) = (img.width(), img.height());
    let pixels = match img {
        DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        other => other.to_rgb8().into_raw(),
    };
    Ok(Rgb {
        pixels,
        width,
        height,
    })
}

/// JPEG pixels as libjpeg-turbo gives them (the reference hashed those;
/// the `image` crate's decoder rounds a few pixels differently and moved up
/// to 6 bits of some hashes): the libjpeg-turbo decoder as built into
/// mozjpeg, from source, with libjpeg's defaults (accurate integer IDCT,
/// smooth chroma upsampling). None for CMYK/YCCK JPEGs, which libjpeg
/// cannot turn into RGB; the `image` crate decodes those.
fn decode_jpeg_like_the_reference(bytes: &[u8]) -> Result<Option<image::RgbImage>, PictureError> {
    // libjpeg reports fatal errors by unwinding (without the panic hook).
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Option<image::RgbImage>> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        if matches!(
            d.color_space(),
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
        ) {
            return Ok(None);
        }
        let (w, h) = d.size();
        if w > MAX_DIMENSION as usize || h > MAX_DIMENSION as usize {
            return Err(std::io::Error::other(format!("{w}x{h} pixels")));
        }
        let mut started = d.rgb()?;
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok(image::RgbImage::from_raw(w as u32, h as u32, pixels))
    });
    match decoded {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(PictureError::Corrupt {
            format: "JPEG".into(),
            reason: e.to_string(),
        }),
        Err(payload) => Err(PictureError::Corrupt {
            format: "JPEG".into(),
            reason: payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg failed".into()),
        }),
    }
}

/// Whether a JPEG's last scan is followed by its end-of-image marker. The
/// JPEG decoder fills a cut-off image with grey and says nothing; inside a
/// scan every 0xFF byte is stuffed, so the marker cannot appear by chance,
/// and a thumbnail's own marker comes before the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(at) => bytes
            .get(at..)
            .is_some_and(|scan| scan.windows(2).any(|w| w == [0xFF, 0xD9])),
        None => false,
    }
}

/// PDQ of a decoded picture, with its eight variants when asked.
pub fn pdq_of(rgb: &Rgb, dihedral: bool) -> (PdqHash, u8, Option<Dihedral>) {
    let mut luma = meldnet_pdq::luma_from_rgb8(&rgb.pixels);
    let (rows, cols) = (rgb.height as usize, rgb.width as usize);
    if dihedral {
        let (d, q) = meldnet_pdq::hash_luma_dihedral(&mut luma, rows, cols);
        (d.original, q, Some(d))
    } else {
        let out = meldnet_pdq::hash_luma(&mut luma, rows, cols);
        (out.hash, out.quality, None)
    }
}

/// What a file is to be treated as.
enum Kind {
    /// Not an image by content nor by name.
    Other,
    /// An image by its content (the format), or by its name only (None): a
    /// damaged image is reported, not passed as "other".
    Image(Option<ImageFormat>),
}

fn kind(path: &Path) -> Result<Kind, PictureError> {
    Ok(match sniff(path)? {
        Some(f) => Kind::Image(Some(f)),
        None if media_type_of(path) == MediaType::Image => Kind::Image(None),
        None => Kind::Other,
    })
}

/// The PDQ hash and quality of a file when it is an image; None otherwise.
pub fn pdq_if_image(path: &Path) -> Result<Option<(PdqHash, u8)>, PictureError> {
    let Kind::Image(format) = kind(path)? else {
        return Ok(None);
    };
    let (hash, quality, _) = pdq_of(&decode_as(path, format)?, false);
    Ok(Some((hash, quality)))
}

/// Everything a node knows about one file.
pub struct FileReport {
    /// SHA-256, MD5 and size.
    pub exact: FileHashes,
    /// Image, video or other.
    pub media_type: MediaType,
    /// PDQ and quality, for images.
    pub pdq: Option<(PdqHash, u8)>,
    /// The eight variants, when asked.
    pub dihedral: Option<Dihedral>,
    /// Time spent decoding (images only).
    pub decode_time: Duration,
    /// Time spent on PDQ itself (images only).
    pub pdq_time: Duration,
}

/// Hashes one file: exact hashes always (one streaming pass), PDQ when the
/// file is an image by its content or by its name. An image that cannot be
/// decoded is an error, so that a damaged image never passes as "other".
pub fn hash_any(path: &Path, dihedral: bool) -> Result<FileReport, PictureError> {
    let exact = hash_file(path)?;
    if exact.size == 0 {
        return Err(PictureError::Empty);
    }
    let Kind::Image(format) = kind(path)? else {
        return Ok(FileReport {
            exact,
            media_type: media_type_of(path),
            pdq: None,
            dihedral: None,
            decode_time: Duration::ZERO,
            pdq_time: Duration::ZERO,
        });
    };
    let t = Instant::now();
    let rgb = decode_as(path, format)?;
    let decode_time = t.elapsed();
    let t = Instant::now();
    let (hash, quality, dihedral) = pdq_of(&rgb, dihedral);
    Ok(FileReport {
        exact,
        media_type: MediaType::Image,
        pdq: Some((hash, quality)),
        dihedral,
        decode_time,
        pdq_time: t.elapsed(),
    })
}

/// Hashes `paths` on `jobs` threads and calls `each` for every file in the
/// order given, as soon as it and all before it are done: output streams,
/// and memory stays bounded by what finished out of order.
pub fn hash_many(
    paths: &[std::path::PathBuf],
    jobs: usize,
    dihedral: bool,
    mut each: impl FnMut(&Path, Result<FileReport, PictureError>),
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                if tx.send((i, hash_any(path, dihedral))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut waiting = std::collections::BTreeMap::new();
        let mut want = 0;
        for (i, r) in rx {
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&want) {
                if let Some(path) = paths.get(want) {
                    each(path, r);
                }
                want += 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_is_complete_only_with_its_end_marker_after_the_last_scan() {
        let thumb_then_scan = [0xFF, 0xD8, 0xFF, 0xDA, 1, 0xFF, 0xD9, 0xFF, 0xDA, 2, 3];
        assert!(!jpeg_is_complete(&thumb_then_scan));
        let mut whole = thumb_then_scan.to_vec();
        whole.extend_from_slice(&[0xFF, 0xD9, 0, 0]);
        assert!(jpeg_is_complete(&whole));
        assert!(!jpeg_is_complete(&[0xFF, 0xD8, 0xFF, 0xD9]));
    }
}
