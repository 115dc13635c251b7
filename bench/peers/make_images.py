"""Makes a folder of made-up test pictures that no PDQ implementation has been
tuned on: random rectangles and ellipses, some blurred, in many sizes (from
5x5 to 4000x3000, and thin ones) and in every format PDQ is computed for
(JPEG at several qualities, PNG, lossless WebP, BMP, GIF, TIFF). Never real
imagery. Usage: python3 make_images.py DIR [SEED]"""
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFilter

out = sys.argv[1]
random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
os.makedirs(out, exist_ok=True)
SIZES = [(5, 5), (7, 300), (63, 64), (64, 64), (65, 65), (127, 129), (128, 128), (200, 150),
         (333, 517), (640, 480), (1023, 767), (1024, 768), (1920, 1080), (2500, 1700),
         (4000, 3000), (96, 4000)]
for i, (w, h) in enumerate(SIZES * 3):
    rnd = lambda: (random.randrange(256), random.randrange(256), random.randrange(256))
    im = Image.new("RGB", (w, h), rnd())
    d = ImageDraw.Draw(im)
    for _ in range(random.randrange(3, 30)):
        x0, y0, x1, y1 = random.randrange(w), random.randrange(h), random.randrange(w), random.randrange(h)
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        [d.rectangle, d.ellipse][random.randrange(2)](box, fill=rnd())
    if random.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(random.uniform(0.5, 4)))
    fmt = random.choice(["png", "jpg", "webp", "bmp", "gif", "tiff"])
    name = os.path.join(out, f"u{i:03d}.{fmt}")
    if fmt == "webp":
        im.save(name, lossless=True)
    elif fmt == "jpg":
        im.save(name, quality=random.choice([60, 85, 95]))
    else:
        im.save(name)
print(len(SIZES) * 3, "pictures in", out, file=sys.stderr)
