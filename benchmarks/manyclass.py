"""A many-class image tree anyone can regenerate: two-character strings over photos.

No 1000-class dataset ships here, so this script makes one, deterministically:
each class is a two-character string over Latin, Greek and Cyrillic letters
(letters whose glyphs look alike across scripts, such as Latin A, Greek Alpha
and Cyrillic A, are merged first, so no two classes look the same), rendered
with the TrueType fonts Debian packages ship (DejaVu, Liberation), in a random
colour, size, slant and position near the centre over a crop of one of
scikit-image's bundled photos (blurred and calmed) with a colour cast and noise,
saved as JPEG. ``--hard`` draws as the first version did: text anywhere over the busy
photo, which no feature set here learned (6% val top-1 on 1000 classes). Typefaces are split: train
and val images use one set of fonts, test images use fonts held out from
training, so test accuracy measures generalisation to unseen typefaces.

    python benchmarks/manyclass.py --out bench-out/manyclass --classes 1000 \\
        --train 21 --val 3 --test 8

writes ``OUT/{train,val,test}/CLASS/NNN.jpg`` (an ImageNet-style split tree that
``bowsvm prepare --input OUT`` reads) and ``OUT/classes.json`` (the strings, the
fonts of each split, the options). The same options give the same bytes on any
machine with the same fonts and Pillow's JPEG encoder (the font list is recorded).
Needs the Debian packages fonts-dejavu-core and fonts-liberation2 (or
fonts-liberation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
GREEK = "ΓΔΘΛΞΠΣΦΨΩαβγδεζηθλμξπρσφψω"
CYRILLIC = "БГДЖЗИЙЛПФЦЧШЩЪЫЬЭЮЯбвгджзийклмнптфцчшщъыьэюя"
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation2",
             "/usr/share/fonts/truetype/liberation")
# scikit-image photos that ship with the package (no download)
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "page", "rocket",
          "text", "brick", "grass", "gravel", "clock", "hubble_deep_field",
          "immunohistochemistry", "colorwheel")


def find_fonts() -> list[Path]:
    """The usable TrueType fonts, sorted by file name (math and symbol fonts left out).

    Raises
    ------
    FileNotFoundError
        If no DejaVu or Liberation font is installed (names the Debian packages).
    """
    seen, fonts = set(), []
    for d in FONT_DIRS:
        for p in sorted(Path(d).glob("*.ttf")):
            if "Math" in p.name or p.name in seen:
                continue
            seen.add(p.name)
            fonts.append(p)
    if len(fonts) < 4:
        raise FileNotFoundError(
            f"found {len(fonts)} fonts under {', '.join(FONT_DIRS)}; install the Debian "
            f"packages fonts-dejavu-core and fonts-liberation2 (apt-get install -y ...).")
    return sorted(fonts, key=lambda p: p.name)


def _glyph(ch: str, font_path: Path, size: int = 32) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), size)
    img = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(img).text((size // 2, size // 4), ch, fill=255, font=font)
    a = np.asarray(img, np.float32)
    ys, xs = np.nonzero(a > 64)
    if len(ys) == 0:
        return np.zeros((16, 16), np.float32)
    crop = img.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)).resize((16, 16))
    return np.asarray(crop, np.float32) / 255.0


def distinct_letters(font_path: Path, threshold: float = 0.9) -> list[str]:
    """Letters of the three alphabets, minus those that look like an earlier one.

    Two glyphs (rendered with ``font_path``, cropped to their ink, 16 x 16) look
    alike when the correlation of their pixels exceeds ``threshold`` and their
    aspect ratios agree; the later letter is dropped.
    """
    keep, glyphs = [], []
    for ch in LATIN + GREEK + CYRILLIC:
        g = _glyph(ch, font_path).ravel()
        g = g - g.mean()
        n = np.linalg.norm(g)
        if n == 0:
            continue
        g /= n
        if any(float(g @ h) > threshold for h in glyphs):
            continue
        keep.append(ch)
        glyphs.append(g)
    return keep


def class_strings(n_classes: int, letters: list[str], seed: int) -> list[str]:
    """``n_classes`` distinct two-letter strings, drawn with a seeded generator."""
    pairs = [a + b for a in letters for b in letters]
    if n_classes > len(pairs):
        raise ValueError(f"--classes {n_classes} exceeds the {len(pairs)} distinct two-letter "
                         f"strings of {len(letters)} letters; ask for fewer classes.")
    rng = np.random.default_rng(seed)
    return sorted(pairs[i] for i in rng.choice(len(pairs), n_classes, replace=False))


def load_photos() -> list[np.ndarray]:
    """The bundled scikit-image photos as RGB uint8 arrays."""
    import skimage.data

    out = []
    for name in PHOTOS:
        a = np.asarray(getattr(skimage.data, name)())
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(a[:, :, :3]).astype(np.uint8))
    return out


# How an image is drawn: the defaults make a tree whose classes HOG+LBP features can
# tell apart (text near the centre, calmed background); HARD draws as the first version
# did (text anywhere, busy background; not the same bytes, the placement draw changed),
# a tree on which no feature set got past 6% val top-1.
RENDER_DEFAULTS = {"jitter": 0.25, "max_rotation": 5.0, "text_size": (0.45, 0.55),
                   "calm": 0.5, "blur": 1.0}
RENDER_HARD = {"jitter": 1.0, "max_rotation": 15.0, "text_size": (0.35, 0.55),
               "calm": 0.0, "blur": 0.0}


def render(text: str, font_path: Path, photo: np.ndarray, size: int, rng, *,
           jitter: float = 0.25, max_rotation: float = 5.0,
           text_size: tuple[float, float] = (0.45, 0.55), calm: float = 0.5,
           blur: float = 1.0):
    """One image: ``text`` in ``font_path`` over a random crop of ``photo``.

    The text is ``text_size`` (a range, fractions of ``size``) high, turned by up
    to ``max_rotation`` degrees and placed at the centre moved by up to ``jitter``
    of the free space each way (1 = anywhere in the frame). The background crop is
    blurred (Gaussian, ``blur`` px) and pulled towards its mean colour by ``calm``
    (0 = the photo as it is, 1 = flat).
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    h, w = photo.shape[:2]
    side = int(rng.integers(size, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    bg = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    if blur > 0:
        bg = bg.filter(ImageFilter.GaussianBlur(blur))
    cast = rng.uniform(0.6, 1.2, 3)
    bg = np.clip(np.asarray(bg, np.float32) * cast, 0, 255)
    mean = bg.mean(axis=(0, 1))
    bg = bg * (1 - calm) + mean * calm
    # text colour far from the background's mean colour
    colour = np.where(mean > 127, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
    font = ImageFont.truetype(str(font_path), int(size * rng.uniform(*text_size)))
    layer = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(layer).text((size // 2, size // 2), text, fill=255, font=font)
    layer = layer.rotate(float(rng.uniform(-max_rotation, max_rotation)), resample=Image.BILINEAR)
    ink = np.asarray(layer, np.float32) / 255.0
    ys, xs = np.nonzero(ink > 0.05)
    ink = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    th, tw = ink.shape
    if th > size or tw > size:  # scale a long string down into the frame
        s = size / max(th, tw)
        ink = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
            (max(1, int(tw * s)), max(1, int(th * s))), Image.BILINEAR), np.float32) / 255.0
        th, tw = ink.shape
    cy, cx = (size - th) / 2, (size - tw) / 2
    oy = int(round(cy * (1 + jitter * rng.uniform(-1, 1))))
    ox = int(round(cx * (1 + jitter * rng.uniform(-1, 1))))
    out = bg.copy()
    a = ink[:, :, None]
    out[oy:oy + th, ox:ox + tw] = out[oy:oy + th, ox:ox + tw] * (1 - a) + colour * a
    out += rng.normal(0, rng.uniform(2, 10), out.shape)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _seed_of(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def make_tree(out, n_classes: int = 1000, n_train: int = 21, n_val: int = 3, n_test: int = 8,
              size: int = 96, seed: int = 0, test_font_fraction: float = 0.25,
              quality: int = 90, progress=None, **render_options) -> dict:
    """Write the tree under ``out`` and return what ``classes.json`` records.

    Every image's random draws come from a generator seeded by (seed, split,
    class, index), so any subset regenerates identically. ``render_options``
    (keys of ``RENDER_DEFAULTS``) change how images are drawn (see ``render``).
    """
    unknown = set(render_options) - set(RENDER_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown render option(s) {sorted(unknown)}; valid: "
                         f"{sorted(RENDER_DEFAULTS)}")
    drawing = {**RENDER_DEFAULTS, **render_options}
    out = Path(out)
    fonts = find_fonts()
    rng = np.random.default_rng(seed)
    order = [fonts[i] for i in rng.permutation(len(fonts))]
    n_test_fonts = max(1, int(round(len(fonts) * test_font_fraction)))
    split_fonts = {"test": sorted(order[:n_test_fonts]), "train": sorted(order[n_test_fonts:])}
    split_fonts["val"] = split_fonts["train"]
    letters = distinct_letters(next(f for f in fonts if f.name == "DejaVuSans.ttf")
                               if any(f.name == "DejaVuSans.ttf" for f in fonts) else fonts[0])
    classes = class_strings(n_classes, letters, seed)
    photos = load_photos()
    counts = {"train": n_train, "val": n_val, "test": n_test}
    total, done = n_classes * sum(counts.values()), 0
    for ci, text in enumerate(classes):
        name = f"c{ci:04d}"
        for split, n in counts.items():
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                r = np.random.default_rng(_seed_of(seed, split, ci, i))
                font = split_fonts[split][int(r.integers(len(split_fonts[split])))]
                photo = photos[int(r.integers(len(photos)))]
                render(text, font, photo, size, r, **drawing).save(folder / f"{i:03d}.jpg", quality=quality)
                done += 1
        if progress is not None:
            progress(done, total)
    info = {"classes": {f"c{i:04d}": t for i, t in enumerate(classes)},
            "letters": "".join(letters),
            "fonts": {k: [f.name for f in v] for k, v in split_fonts.items()},
            "options": {"n_classes": n_classes, "n_train": n_train, "n_val": n_val,
                        "n_test": n_test, "size": size, "seed": seed,
                        "test_font_fraction": test_font_fraction, "quality": quality,
                        "render": drawing}}
    (out / "classes.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    return info


def add_drawing_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``render`` (how images are drawn), with ``RENDER_DEFAULTS``."""
    p.add_argument("--jitter", type=float, default=RENDER_DEFAULTS["jitter"],
                   help="text placement: centre moved by up to this fraction of the free "
                        "space (1 = anywhere)")
    p.add_argument("--max-rotation", type=float, default=RENDER_DEFAULTS["max_rotation"],
                   help="text turned by up to this many degrees")
    p.add_argument("--text-size", default="%g,%g" % RENDER_DEFAULTS["text_size"],
                   help="LOW,HIGH: text height as fractions of the image side")
    p.add_argument("--calm", type=float, default=RENDER_DEFAULTS["calm"],
                   help="background pulled towards its mean colour (0 = photo as is)")
    p.add_argument("--blur", type=float, default=RENDER_DEFAULTS["blur"],
                   help="background Gaussian blur in pixels")
    p.add_argument("--hard", action="store_true",
                   help="draw as the first version did (text anywhere, busy background); "
                        "overrides the five drawing options above")


def drawing_options(p: argparse.ArgumentParser, args) -> dict:
    """``render`` keyword arguments from parsed :func:`add_drawing_arguments` options.

    Out-of-range values end the program through ``p.error``, naming the option.
    """
    try:
        lo, hi = (float(v) for v in args.text_size.split(","))
    except ValueError:
        p.error(f"--text-size {args.text_size!r}: give LOW,HIGH, e.g. 0.45,0.55")
    if not (0 < lo <= hi <= 1 and 0 <= args.jitter <= 1 and 0 <= args.calm <= 1
            and args.blur >= 0 and args.max_rotation >= 0):
        p.error("drawing options out of range: need 0 < LOW <= HIGH <= 1 (--text-size), "
                "--jitter and --calm in [0, 1], --blur and --max-rotation >= 0")
    if args.hard:
        return dict(RENDER_HARD)
    return {"jitter": args.jitter, "max_rotation": args.max_rotation, "text_size": (lo, hi),
            "calm": args.calm, "blur": args.blur}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write (must not exist)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--train", type=int, default=21, help="train images per class")
    p.add_argument("--val", type=int, default=3, help="val images per class")
    p.add_argument("--test", type=int, default=8, help="test images per class (held-out fonts)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    add_drawing_arguments(p)
    args = p.parse_args(argv)
    drawing = drawing_options(p, args)
    if Path(args.out).exists():
        p.error(f"--out {args.out!r} exists; pass a new folder (the tree is written whole).")

    step = [0]

    def progress(done, total):  # about every 5%
        if done * 20 // total > step[0] or done == total:
            step[0] = done * 20 // total
            print(f"[manyclass] {done}/{total} images", file=sys.stderr, flush=True)

    info = make_tree(args.out, args.classes, args.train, args.val, args.test, args.size,
                     args.seed, progress=progress, **drawing)
    print(f"[manyclass] {len(info['classes'])} classes over {len(info['letters'])} letters; "
          f"fonts train/val {len(info['fonts']['train'])}, test {len(info['fonts']['test'])}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
