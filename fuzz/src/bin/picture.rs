//! The image decoders behind PDQ: the input is written as a file and
//! hashed as `meldnet-node hash` and `report new` hash a hotline's file
//! (`node::picture::hash_any`): exact hashes, the format sniffed from the
//! content, the bounded decode (the `image` crate for PNG, GIF, BMP, WebP,
//! TIFF and CMYK JPEG; libjpeg-turbo as built into mozjpeg, C code, for
//! other JPEGs), the EXIF orientation, then PDQ.
//!
//! Bound: besides 1 MiB of input, a picture whose header says more than
//! 1,048,576 pixels is skipped. The node decodes up to 16,384 pixels a side
//! (1 GiB of decoder memory), which is bounded but takes seconds per
//! input; the fuzzer wants thousands of inputs a second, and the code
//! paths of a large picture are those of a small one.

use afl::fuzz;
use meldnet_fuzz::{scratch_dir, write_file, MAX_INPUT};
use meldnet_node::picture::hash_any;

const MAX_PIXELS: u64 = 1 << 20;

fn main() {
    let dir = scratch_dir();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let dims = image::ImageReader::new(std::io::Cursor::new(data))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        if let Some((w, h)) = dims {
            if u64::from(w) * u64::from(h) > MAX_PIXELS {
                return;
            }
        }
        // Named like a picture: content the sniffer does not know is then
        // refused as a damaged image, as the node does.
        let path = write_file(&dir, "input.jpg", data);
        if let Ok(report) = hash_any(&path, false) {
            assert_eq!(report.exact.size, data.len() as u64);
            if let Some((_, quality)) = report.pdq {
                assert!(quality <= 100, "PDQ quality {quality}");
            }
        }
    });
}
