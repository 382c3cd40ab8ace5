"""Writes the sample photos' thumbnails: public/samples/thumbs/<name>.webp for each
public/samples/<name>.jpg, a centre square of 160 px (the studio shows them at 56 CSS px,
so 160 covers a 3x phone screen) at WebP quality 70, each well under 8 KB.

The full JPEG is fetched only when a sample is picked. Run it again after changing a
sample, and commit the result:

    python3 -m venv target/thumbs && target/thumbs/bin/pip install pillow==13.0.0
    target/thumbs/bin/python xtask/scripts/thumbnails.py
"""

from pathlib import Path

from PIL import Image, ImageOps

SIZE = 160
QUALITY = 70
LIMIT = 8 * 1024

samples = Path(__file__).resolve().parents[2] / "public" / "samples"
out = samples / "thumbs"
out.mkdir(exist_ok=True)
for jpeg in sorted(samples.glob("*.jpg")):
    with Image.open(jpeg) as image:
        square = ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (SIZE, SIZE), Image.Resampling.LANCZOS)
    target = out / f"{jpeg.stem}.webp"
    square.save(target, "WEBP", quality=QUALITY, method=6)
    size = target.stat().st_size
    print(f"{target.relative_to(samples.parent.parent)}: {size} bytes")
    if size > LIMIT:
        raise SystemExit(f"{target.name} is {size} bytes, over {LIMIT}")
