"""The reference outputs beside the test images, from Meta's own PDQ.

    python3 tests/data/pdq/reference.py [FOLDER]

makes the generated images (generated/: one small photo of this set saved
with each EXIF orientation the tests check), then writes FOLDER/expected.tsv
(default: this folder): for every image below FOLDER, the hash and quality
of Meta's C++ PDQ core through the PyPI `pdqhash` bindings (0.2.8), on the
pixels Pillow decodes (libjpeg-turbo, libpng, libwebp), EXIF orientation
applied, as 8-bit RGB. Needs: pip install pdqhash==0.2.8 numpy pillow.

Columns: file (relative to FOLDER), pdq (64 hex digits, most significant
bit first: Meta's canonical order), quality (0 to 100), width and height
after orientation. Pointed at Meta's whole data folder, it gives the
reference for the full set (MELDNET_PDQ_DATA).
"""
import pathlib
import sys

import numpy
import pdqhash
from PIL import Image, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
PICTURES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
# EXIF orientations: as stored, rotated 180, rotated 90 one way, the other.
ORIENTATIONS = (1, 3, 6, 8)


def make_generated():
    """Saves one photo with each orientation tag (the pixels stay as they are)."""
    out = HERE / "generated"
    out.mkdir(exist_ok=True)
    photo = Image.open(HERE / "bridge-mods" / "shrink-a-lot.jpg").convert("RGB")
    for o in ORIENTATIONS:
        exif = Image.Exif()
        exif[0x0112] = o
        photo.save(out / f"orientation-{o}.jpg", quality=92, exif=exif.tobytes())


def canonical_hex(bits):
    """The 256 bits as Meta's tools print them."""
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return f"{value:064x}"


def reference(folder):
    rows = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in PICTURES:
            continue
        upright = ImageOps.exif_transpose(Image.open(path))
        bits, quality = pdqhash.compute(numpy.asarray(upright.convert("RGB")))
        width, height = upright.size
        rows.append((path.relative_to(folder).as_posix(), canonical_hex(bits), quality, width, height))
    with open(folder / "expected.tsv", "w") as f:
        f.write("file\tpdq\tquality\twidth\theight\n")
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")
    print(f"{len(rows)} images in {folder / 'expected.tsv'}", file=sys.stderr)


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE
    if target == HERE:
        make_generated()
    reference(target)
