"""Cost of the one image path (issue 14) against the JPEG luma shortcut it replaced.

Before issue 14, extraction decoded a JPEG straight to its luma channel
(``Image.draft("L", ...)``), while prepare and predict decoded RGB and converted
with bowsvm's luma weights, so the two saw slightly different grey values. Now
every stage uses :func:`bowsvm.io.images.decode_image` (RGB decode, alpha over
white, 8-bit luma in bowsvm's arithmetic, one Lanczos resize). This times both on
the same JPEG bytes, side by side in one process, one thread, best of N::

    python benchmarks/bench_decode.py --repeats 7

Prints a Markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bowsvm.io.images import decode_image  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def luma_shortcut(data: bytes, max_side: int = 500) -> np.ndarray:
    """The pre-issue-14 extraction decode of a JPEG: luma straight from the decoder."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.draft("L", (max_side, max_side))
    img = img.convert("L")
    if max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                         Image.LANCZOS)
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def best(f, reps):
    ts = []
    for _ in range(reps):
        t = time.thread_time()
        f()
        ts.append(time.thread_time() - t)
    return min(ts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args(argv)
    from PIL import Image
    from skimage import data

    rows = []
    for label, resize in (("500x375 JPEG q90 (prepared shard)", True),
                          ("original photo JPEG q90, downsized to 500", False)):
        blobs = []
        for name in PHOTOS:
            img = Image.fromarray(getattr(data, name)())
            if resize:
                img = img.resize((500, 375), Image.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
        new = sum(best(lambda: decode_image(b, 500), a.repeats) for b in blobs)
        old = sum(best(lambda: luma_shortcut(b, 500), a.repeats) for b in blobs)
        rows.append((label, len(blobs) / new, len(blobs) / old, new / old))
    print("| JPEG input | images/s, one image path | images/s, luma shortcut (before) | cost ratio |")
    print("|---|---:|---:|---:|")
    for label, n, o, r in rows:
        print(f"| {label} | {n:.0f} | {o:.0f} | {r:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
