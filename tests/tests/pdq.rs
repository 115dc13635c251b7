//! PDQ against Meta's reference output, the dihedral variants, bad files,
//! and the `meldnet-node hash` command-line contract (a real process).

use meldnet_core::PdqHash;
use meldnet_node::picture::{decode_rgb, hash_any, pdq_of, PictureError, Rgb};
use meldnet_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every image, lossless or JPEG, gives the reference's hash and quality to
/// the bit; a difference prints its Hamming distance.
#[test]
fn every_reference_image_gives_metas_hash_and_quality() {
    let data = pdq_data();
    let mut failures = Vec::new();
    for (file, want, want_q) in expected_pdq() {
        let rgb = decode_rgb(&data.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (got, q, _) = pdq_of(&rgb, false);
        let d = got.distance(&want);
        println!("{file}: distance {d}, quality {q} (reference {want_q})");
        if d != 0 || q != want_q {
            failures.push(format!(
                "{file}: got {got} q{q}, reference {want} q{want_q}: Hamming distance {d}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The eight dihedral hashes of one decode are the hashes of the picture
/// turned and mirrored losslessly, within a few bits (PDQ's downsampling is
/// not exactly symmetric); with Meta's whole data set
/// (`MELDNET_PDQ_DATA`), also of its rotated and mirrored JPEG files.
#[test]
fn dihedral_hashes_match_the_rotated_and_mirrored_pictures() {
    use image::imageops::{flip_horizontal, flip_vertical, rotate180, rotate270, rotate90};
    let decoded = decode_rgb(&pdq_data().join("bridge-mods/aaa-orig.jpg")).unwrap();
    let (_, _, d) = pdq_of(&decoded, true);
    let rgb = image::RgbImage::from_raw(decoded.width, decoded.height, decoded.pixels).unwrap();
    let back = |p: image::RgbImage| Rgb {
        width: p.width(),
        height: p.height(),
        pixels: p.into_raw(),
    };
    // Meta's names: rotations counter-clockwise, flip_x mirrors across the
    // x axis (top to bottom), flip_plus1 across the diagonal through the
    // top-left corner, flip_minus1 across the other.
    let turned: [(&str, image::RgbImage, &str); 8] = [
        ("original", rgb.clone(), "bridge-1-original.jpg"),
        ("rotate90", rotate270(&rgb), "bridge-2-rotate-90.jpg"),
        ("rotate180", rotate180(&rgb), "bridge-3-rotate-180.jpg"),
        ("rotate270", rotate90(&rgb), "bridge-4-rotate-270.jpg"),
        ("flip_x", flip_vertical(&rgb), "bridge-5-flipx.jpg"),
        ("flip_y", flip_horizontal(&rgb), "bridge-6-flipy.jpg"),
        (
            "flip_plus1",
            flip_horizontal(&rotate90(&rgb)),
            "bridge-7-flip-plus-1.jpg",
        ),
        (
            "flip_minus1",
            flip_vertical(&rotate90(&rgb)),
            "bridge-8-flip-minus-1.jpg",
        ),
    ];
    let files = pdq_data().join("reg-test-input/dih");
    for ((name, hash), (want_name, picture, file)) in d.unwrap().named().into_iter().zip(turned) {
        assert_eq!(name, want_name);
        let (other, _, _) = pdq_of(&back(picture), false);
        let dist = hash.distance(&other);
        println!("{name} vs the picture turned so: {dist}");
        assert!(dist <= 10, "{name}: distance {dist}");
        if files.is_dir() {
            let (other, _, _) = pdq_of(&decode_rgb(&files.join(file)).unwrap(), false);
            let dist = hash.distance(&other);
            println!("{name} vs {file}: {dist}");
            assert!(dist <= 10, "{name} vs {file}: distance {dist}");
        }
    }
}

fn scratch(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A PNG whose header claims 100,000 x 100,000 pixels (a decompression bomb).
fn png_bomb(good_png: &[u8]) -> Vec<u8> {
    let mut bomb = good_png.to_vec();
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut c = 0xffff_ffffu32;
    for &b in &bomb[12..29] {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    bomb[29..33].copy_from_slice(&(!c).to_be_bytes());
    bomb
}

#[test]
fn bad_files_get_clear_errors_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(pdq_data().join("reg-test-input/pen-and-coaster.png")).unwrap();
    let jpeg = std::fs::read(pdq_data().join("bridge-mods/aaa-orig.jpg")).unwrap();
    let err = |name: &str, bytes: &[u8]| {
        hash_any(&scratch(dir.path(), name, bytes), false)
            .err()
            .unwrap_or_else(|| panic!("{name} hashed"))
    };
    assert!(matches!(err("empty.jpg", b""), PictureError::Empty));
    let e = err("notes.jpg", b"this is not a picture at all").to_string();
    assert!(e.contains("not a supported image"), "{e}");
    let e = err("cut.png", &good[..good.len() / 3]).to_string();
    assert!(e.contains("corrupt or truncated PNG"), "{e}");
    let e = err("cut.jpg", &jpeg[..jpeg.len() / 2]).to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = err("bomb.png", &png_bomb(&good)).to_string();
    assert!(e.contains("too large"), "{e}");
    // Not an image by name or content: exact hashes only.
    let video = scratch(
        dir.path(),
        "clip.mp4",
        b"\0\0\0\x18ftypmp42 not really a video",
    );
    let r = hash_any(&video, false).unwrap();
    assert!(r.pdq.is_none());
}

#[test]
fn the_hash_command_prints_one_line_per_file_in_order_and_fails_when_any_failed() {
    let data = pdq_data();
    let dir = tempfile::tempdir().unwrap();
    let png = data.join("reg-test-input/pen-and-coaster.png");
    let jpg = data.join("bridge-mods/aaa-orig.jpg");
    let good = std::fs::read(&png).unwrap();
    let video = scratch(
        dir.path(),
        "clip.mp4",
        b"\0\0\0\x18ftypmp42 not really a video",
    );
    let empty = scratch(dir.path(), "empty.jpg", b"");
    let bomb = scratch(dir.path(), "bomb.png", &png_bomb(&good));
    let expected: std::collections::HashMap<String, (PdqHash, u8)> = expected_pdq()
        .into_iter()
        .map(|(f, h, q)| (f, (h, q)))
        .collect();

    let o = run(Command::new(bin("meldnet-node"))
        .args(["hash", "--json", "--jobs", "2"])
        .args([&png, &empty, &jpg, &video, &bomb]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines = json_lines(&o);
    let files: Vec<&str> = lines.iter().map(|l| l["file"].as_str().unwrap()).collect();
    let names: Vec<String> = [&png, &empty, &jpg, &video, &bomb]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(files, names, "one line per file, in the order given");
    for (line, rel) in [
        (&lines[0], "reg-test-input/pen-and-coaster.png"),
        (&lines[2], "bridge-mods/aaa-orig.jpg"),
    ] {
        let (h, q) = expected[rel];
        assert_eq!(line["pdq"], h.to_hex(), "{rel}");
        assert_eq!(line["pdq_quality"], q, "{rel}");
        assert_eq!(line["media_type"], "image");
        assert_eq!(line["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(line["md5"].as_str().unwrap().len(), 32);
    }
    assert!(lines[1]["error"].as_str().unwrap().contains("empty"));
    assert!(lines[1].get("sha256").is_none());
    assert_eq!(lines[3]["media_type"], "video");
    assert!(lines[3].get("pdq").is_none(), "no PDQ for a video");
    assert!(lines[4]["error"].as_str().unwrap().contains("too large"));

    // All good: exit 0; --dihedral adds the eight variants.
    let o = run(Command::new(bin("meldnet-node"))
        .args(["hash", "--json", "--dihedral"])
        .arg(&png));
    assert!(o.status.success(), "{}", stderr(&o));
    let line = &json_lines(&o)[0];
    let dih = line["dihedral"].as_object().unwrap();
    assert_eq!(dih.len(), 8);
    assert_eq!(dih["original"], line["pdq"]);
}

/// The same pixels in every lossless format we decode (PNG, BMP, GIF, TIFF,
/// lossless WebP) give the same hash: the format changes nothing but the
/// decoding. A few colours, so that GIF's palette keeps every pixel.
#[test]
fn every_lossless_format_gives_the_same_hash() {
    let dir = tempfile::tempdir().unwrap();
    let picture = image::RgbImage::from_fn(300, 200, |x, y| {
        let k = ((x / 23) + (y / 17) * 3) % 5;
        image::Rgb([
            [10, 200, 30, 240, 90][k as usize],
            [220, 40, 120, 250, 5][k as usize],
            [30, 60, 200, 250, 140][k as usize],
        ])
    });
    let mut hashes = Vec::new();
    for ext in ["png", "bmp", "gif", "tiff", "webp"] {
        let p = dir.path().join(format!("same.{ext}"));
        picture.save(&p).unwrap();
        let r = hash_any(&p, false).unwrap_or_else(|e| panic!("{ext}: {e}"));
        hashes.push((ext, r.pdq.unwrap()));
    }
    let (_, first) = hashes[0];
    for (ext, h) in &hashes {
        assert_eq!(*h, first, "{ext} differs from png");
    }
    assert!(
        first.1 >= 50,
        "a picture with structure has quality: {}",
        first.1
    );
}

/// Meta's haystack and needles: the index finds exactly what a brute-force
/// scan finds, for every needle, at the federation's threshold.
#[test]
fn the_index_equals_brute_force_on_metas_haystack_and_needles() {
    use meldnet_pdq::PdqIndex;
    use meldnet_pdq::MATCH_THRESHOLD;
    let read = |name: &str| -> Vec<PdqHash> {
        std::fs::read_to_string(pdq_data().join("reg-test-input").join(name))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| PdqHash::parse_hex(l.split_whitespace().next().unwrap()).unwrap())
            .collect()
    };
    let haystack = read("haystack.txt");
    let needles = read("needles.txt");
    let index = PdqIndex::build(&haystack);
    let mut found = 0;
    for n in &needles {
        let got = index.search(n, MATCH_THRESHOLD);
        assert_eq!(got, index.brute_force(n, MATCH_THRESHOLD), "needle {n}");
        found += got.len();
    }
    println!(
        "{} needles, {} haystack entries, {found} matches",
        needles.len(),
        haystack.len()
    );
    assert!(found > 0, "Meta's needles have matches in the haystack");
}
