"""The peer of `meldnet-bench pdq`: Meta's PDQ (the C++ core, through the PyPI
`pdqhash` bindings) on pixels decoded by Pillow (libjpeg-turbo, libpng,
libwebp), EXIF orientation applied, 8-bit RGB. Reads file paths on stdin, one
per line; hashes each `rounds` times on one core; prints one JSON line per
file (hash, quality, best decode and hash seconds) and nothing else."""
import json
import sys
import time

import numpy as np
import pdqhash
from PIL import Image, ImageOps

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1


def hex256(bits):
    out = []
    for i in range(0, 256, 4):
        v = 0
        for b in bits[i:i + 4]:
            v = v * 2 + int(b)
        out.append("%x" % v)
    return "".join(out)


for line in sys.stdin:
    path = line.rstrip("\n")
    if not path:
        continue
    best_decode = best_hash = float("inf")
    result = None
    for _ in range(rounds):
        t0 = time.perf_counter()
        try:
            im = ImageOps.exif_transpose(Image.open(path))
            pixels = np.asarray(im.convert("RGB"))
        except Exception as e:  # a file Pillow cannot read
            result = {"file": path, "error": str(e)}
            break
        t1 = time.perf_counter()
        bits, quality = pdqhash.compute(pixels)
        t2 = time.perf_counter()
        best_decode = min(best_decode, t1 - t0)
        best_hash = min(best_hash, t2 - t1)
        result = {"file": path, "pdq": hex256(bits), "quality": int(quality)}
    if "error" not in result:
        result["decode_s"] = best_decode
        result["hash_s"] = best_hash
    print(json.dumps(result), flush=True)
