"""Dense descriptor throughput on 500x375 photos, side by side with two peers in ONE run.

* bowsvm: ``dense_hog``, ``dense_lbp``, ``dense_hog_lbp`` at patch sizes 16/24/32,
  step 8 (serial numba kernels, NUMBA_NUM_THREADS=1).
* (a) scikit-image, patch by patch: ``skimage.feature.hog`` on every patch (4 x 4
  cells, one block, L2-Hys = L2 / clip 0.2 / L2, same as ours but hard, unsigned
  orientation votes) and ``local_binary_pattern`` on every patch (with a one-pixel
  margin) + per-cell ``np.bincount``, sqrt, L2: the same LBP descriptors as ours,
  except that skimage's diagonal interpolation rounds differently at different
  absolute coordinates, so a patch cut out of the image can flip a tied code (the
  script counts the timed patches that match ours exactly). It is
  slow, so only a subset of patches is timed and the time is extrapolated to the
  full patch count (the table says how many patches were timed).
* (b) VLFeat dense SIFT (Debian ``libvlfeat-dev``, called through ctypes:
  ``vl_dsift_new_basic / vl_dsift_process / vl_dsift_delete``; the keypoint count
  and descriptors are read from the filter struct, since VLFeat's getters are
  inline functions), bin sizes 4/6/8 (patches 16/24/32), step 8, flat window
  (VLFeat's fast mode, the same "flat window" trick), float32 grey input. Skipped
  with a message if libvl is missing.

Times are CPU seconds of the calling thread (``time.thread_time``), best of
``--repeats`` per image, so other processes on the shared machine inflate them
less than wall time; wall-clock totals are printed too.

    .venv/bin/python benchmarks/bench_features.py [--repeats 5] [--subset 150]
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIZES = (16, 24, 32)
STEP = 8


def load_photos(names, shape=(375, 500)):
    """skimage's bundled photos, resized to ``shape`` (antialiased), as uint8 grey."""
    from PIL import Image
    from skimage import data

    out = {}
    for name in names:
        rgb = getattr(data, name)()
        img = Image.fromarray(rgb).convert("L").resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
        out[name] = np.asarray(img)
    return out


def best_cpu(f, repeats):
    """(best thread CPU seconds, best wall seconds, result) of ``repeats`` calls."""
    cpu, wall = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        res = f()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall), res


# ----------------------------------------------------------------- peers

def skimage_patches(img, subset, rng, kind):
    """Time scikit-image per-patch descriptors on ``subset`` patches per size.

    Returns (seconds for the subset, patches timed, total patches, number of
    timed patches whose LBP descriptor equals ours to 1e-6).
    """
    from skimage.feature import hog, local_binary_pattern

    from bowsvm.features import dense_lbp, patch_grid

    grid = patch_grid(img.shape, SIZES, STEP)
    f01 = img.astype(np.float64) / 255.0
    padded = np.pad(img, 1)
    seconds = 0.0
    timed = 0
    total = 0
    ok = 0
    ours = dense_lbp(img).descriptors if kind != "hog" else None
    row0 = 0
    for y0s, x0s, P in grid:
        n = y0s.size * x0s.size
        total += n
        pick = rng.choice(n, size=min(subset, n), replace=False)
        c = P // 4
        h = P // 2
        for k in pick:
            y0, x0 = y0s[k // x0s.size], x0s[k % x0s.size]
            t0 = time.thread_time()
            if kind in ("hog", "hog+lbp"):
                hog(f01[y0:y0 + P, x0:x0 + P], orientations=8, pixels_per_cell=(c, c),
                    cells_per_block=(4, 4), block_norm="L2-Hys", feature_vector=True)
            if kind in ("lbp", "hog+lbp"):
                codes = local_binary_pattern(padded[y0:y0 + P + 2, x0:x0 + P + 2], 8, 1,
                                             "nri_uniform")[1:-1, 1:-1].astype(np.intp)
                v = np.concatenate([np.bincount(codes[a:a + h, b:b + h].ravel(), minlength=59)
                                    for a in (0, h) for b in (0, h)])
                v = np.sqrt(v)
                v /= np.linalg.norm(v)
            seconds += time.thread_time() - t0
            timed += 1
            if ours is not None:
                # the one-pixel margin is zero padding at the image border, as ours
                ok += bool(np.allclose(v, ours[row0 + k], atol=1e-6))
        row0 += n
    return seconds, timed, total, ok


class _Geom(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("numBinT", "numBinX", "numBinY", "binSizeX", "binSizeY")]


class _Dsift(ctypes.Structure):  # mirrors VlDsiftFilter in vl/dsift.h (0.9.21)
    _fields_ = [(n, ctypes.c_int) for n in (
        "imWidth", "imHeight", "stepX", "stepY", "boundMinX", "boundMinY", "boundMaxX", "boundMaxY")] + [
        ("geom", _Geom), ("useFlatWindow", ctypes.c_int), ("windowSize", ctypes.c_double),
        ("numFrames", ctypes.c_int), ("descrSize", ctypes.c_int), ("frames", ctypes.c_void_p),
        ("descrs", ctypes.POINTER(ctypes.c_float)), ("numBinAlloc", ctypes.c_int),
        ("numFrameAlloc", ctypes.c_int), ("numGradAlloc", ctypes.c_int),
        ("grads", ctypes.c_void_p), ("convTmp1", ctypes.c_void_p), ("convTmp2", ctypes.c_void_p)]


def load_vlfeat():
    """libvl through ctypes, or (None, reason)."""
    path = ctypes.util.find_library("vl") or "libvl.so"
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        return None, f"libvl not loadable ({exc}); apt-get install libvlfeat-dev"
    lib.vl_dsift_new_basic.restype = ctypes.POINTER(_Dsift)
    lib.vl_dsift_new_basic.argtypes = [ctypes.c_int] * 4
    lib.vl_dsift_process.argtypes = [ctypes.POINTER(_Dsift), ctypes.c_void_p]
    lib.vl_dsift_process.restype = None
    lib.vl_dsift_delete.argtypes = [ctypes.POINTER(_Dsift)]
    lib.vl_dsift_delete.restype = None
    return lib, None


def vlfeat_dsift(lib, img32, flat=True):
    """Dense SIFT at bin sizes 4/6/8, step 8; returns the list of descriptor arrays."""
    H, W = img32.shape
    out = []
    for P in SIZES:
        f = lib.vl_dsift_new_basic(W, H, STEP, P // 4)
        f.contents.useFlatWindow = int(flat)
        lib.vl_dsift_process(f, img32.ctypes.data)
        n, d = f.contents.numFrames, f.contents.descrSize
        out.append(np.ctypeslib.as_array(f.contents.descrs, (n, d)).copy())
        lib.vl_dsift_delete(f)
    return out


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="best of N per image (ours, VLFeat)")
    ap.add_argument("--subset", type=int, default=150,
                    help="patches per size and image timed for the scikit-image baseline")
    ap.add_argument("--photos", nargs="+", default=list(PHOTOS))
    ap.add_argument("--gaussian", action="store_true",
                    help="also time VLFeat with its Gaussian window (slow)")
    args = ap.parse_args(argv)

    from bowsvm.features import dense_hog, dense_hog_lbp, dense_lbp, to_gray

    photos = load_photos(args.photos)
    rng = np.random.default_rng(0)
    funcs = {"hog": dense_hog, "lbp": dense_lbp, "hog+lbp": dense_hog_lbp}
    for f in funcs.values():  # compile / load the numba cache outside the timings
        f(photos[args.photos[0]])

    rows = []
    for kind, f in funcs.items():
        cpu = wall = 0.0
        n = 0
        for img in photos.values():
            c, w, res = best_cpu(lambda: f(img), args.repeats)
            cpu += c
            wall += w
            n += res.descriptors.shape[0]
        rows.append((f"bowsvm {kind}", res.descriptors.shape[1], n, cpu, wall, ""))
    ours = {r[0].split()[1]: r for r in rows}

    base = {}
    for kind in funcs:
        sec = 0.0
        timed = total = 0
        ok = 0
        for img in photos.values():
            s, t, tot, good = skimage_patches(img, args.subset, rng, kind)
            sec += s
            timed += t
            total += tot
            ok += good
        est = sec * total / timed
        note = f"extrapolated from {timed} of {total} patches"
        if kind != "hog":
            note += f"; LBP equal to ours on {ok} of {timed}"
        d = {"hog": 128, "lbp": 236, "hog+lbp": 364}[kind]
        base[kind] = est
        rows.append((f"scikit-image per patch {kind}", d, total, est, float("nan"), note))

    lib, why = load_vlfeat()
    vl_cpu = None
    if lib is None:
        print(f"VLFeat column skipped: {why}")
    else:
        for flat in ([True, False] if args.gaussian else [True]):
            cpu = wall = 0.0
            n = 0
            reps = args.repeats if flat else 1
            for img in photos.values():
                im32 = to_gray(img)
                c, w, res = best_cpu(lambda: vlfeat_dsift(lib, im32, flat), reps)
                cpu += c
                wall += w
                n += sum(r.shape[0] for r in res)
            name = "VLFeat dsift " + ("flat window" if flat else "Gaussian window")
            rows.append((name, 128, n, cpu, wall, "bin sizes 4/6/8, step 8"))
            if flat:
                vl_cpu = (n, cpu)

    # decode cost for context (JPEG q90 of the same 500x375 photos, and the
    # original skimage photos, which decode_image downsizes to 500 px)
    from io import BytesIO

    from PIL import Image
    from skimage import data as skdata

    from bowsvm.io.images import decode_image

    for label, arrays in (
        ("decode_image, 500x375 JPEG q90", list(photos.values())),
        ("decode_image, original RGB JPEG q90 + downsize", [getattr(skdata, p)() for p in photos]),
    ):
        blobs = []
        for a in arrays:
            buf = BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
        cpu = wall = 0.0
        for b in blobs:
            c, w, _ = best_cpu(lambda: decode_image(b), args.repeats)
            cpu += c
            wall += w
        rows.append((label, 0, 0, cpu, wall, "images/s only"))

    n_img = len(photos)
    print(f"\n{n_img} photos ({', '.join(photos)}) resized to 500x375 grey; patch sizes "
          f"{SIZES}, step {STEP}; single thread; CPU time of the thread, best of {args.repeats}.\n")
    print("| method | d | descriptors | CPU s | wall s | descriptors/s | images/s | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, d, n, cpu, wall, note in rows:
        rate = f"{n / cpu:,.0f}" if n else "-"
        wall_s = "-" if np.isnan(wall) else f"{wall:.4f}"
        print(f"| {name} | {d or '-'} | {n or '-'} | {cpu:.4f} | {wall_s} | {rate} | "
              f"{n_img / cpu:.1f} | {note} |")
    print()
    for kind in funcs:
        _, _, n, cpu, _, _ = ours[kind]
        line = f"{kind}: {base[kind] / cpu:.0f}x faster than scikit-image per patch"
        if vl_cpu is not None:
            line += (f"; {(n / cpu) / (vl_cpu[0] / vl_cpu[1]):.1f}x VLFeat dense SIFT (flat) "
                     f"descriptors/s")
        print(line)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main()
