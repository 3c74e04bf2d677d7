"""Feature shards on a local folder and on an S3-compatible server, side by side (issue 15, item 3).

Writes the same generated dense feature set (``--rows`` x ``--dim`` float32, seeded)
through the one shard writer (``ShardWriter``, files named as the extract stage's
tasks name them) and the one output commit (``atomic_output_dir``: temporary folder
and rename for the local folder, the manifest commit for the URI), then reads it back
as training does (``open_feature_set``, ``scan_split``: sizes, footers and SHA-256 of
every shard; ``iter_chunks``: every row decoded and value-checked). The S3 server is
moto's (``moto_server``, started here on a free loopback port) unless ``--endpoint``
names another one (credentials from the AWS_* variables then).

    python benchmarks/bench_object_store.py --rows 40000 --dim 1024 --out /tmp/bench-os

Prints one Markdown table: seconds per phase and backend, MB/s, and the S3 / local ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from bowsvm.io.atomic import atomic_output_dir
from bowsvm.io.features import (
    ShardWriter, attempt_file, iter_chunks, open_feature_set, scan_split, shard_entries,
)
from bowsvm.io.manifest import write_manifest
from bowsvm.io.store import StoreOutput, resolve

NAME = "bench"
CLASSES = [f"c{i}" for i in range(10)]


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server process on a free loopback port, and its ``HOST:PORT``."""
    import pyarrow.fs as pafs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                 ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
        os.environ.setdefault(k, v)
    pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                      allow_bucket_creation=True).create_dir("bench")
    return proc, f"127.0.0.1:{port}"


def tables(rows: int, dim: int, per_file: int, seed: int):
    """The feature rows, one table per shard, the same for every backend."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, per_file):
        n = min(per_file, rows - start)
        X = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
        yield pa.table({"id": [f"img-{start + i:08d}" for i in range(n)],
                        "label": pa.array(rng.integers(0, len(CLASSES), n), pa.int32()),
                        "x": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), dim)})


def write(root, rows: int, dim: int, per_file: int, seed: int) -> dict:
    """Write the feature set under ``root``; seconds of the shards and of the commit."""
    seconds = 0.0  # writing only: the rows are generated outside the clock
    with atomic_output_dir(resolve(root) / NAME, True, "extract", option="--features") as tmp:
        store = isinstance(tmp, StoreOutput)
        base = tmp.root if store else tmp
        files = []
        for p, t in enumerate(tables(rows, dim, per_file, seed)):  # one "task" per shard
            t0 = time.perf_counter()
            with ShardWriter(lambda k, p=p: attempt_file(base / "train", p, 0, k,
                                                         run=tmp.run if store else None),
                             dim, "dense") as w:
                w.write(t)
            seconds += time.perf_counter() - t0
            files += [f.relative_to(base).as_posix() for f, _ in w.files]
        t1 = time.perf_counter()
        if store:
            for f in files:
                tmp.commit(base / f)
        entries = shard_entries(base, files)  # footers, sizes, SHA-256: as the extract stage
        write_manifest(tmp, {"stage": "extract", "dim": dim, "layout": "dense",
                             "classes": CLASSES, "shards": entries,
                             "counts": {"train": rows}})
    t2 = time.perf_counter()
    return {"write": seconds, "commit": t2 - t1,
            "bytes": sum(e["bytes"] for e in entries), "files": len(entries)}


def read(root, dim: int) -> dict:
    """Read the feature set back as training does; seconds of the checks and of the rows."""
    t0 = time.perf_counter()
    fs = open_feature_set(root, NAME)
    info = scan_split(fs, "train")
    t1 = time.perf_counter()
    n, total = 0, 0.0
    for _, labels, X in iter_chunks(info, dim, 4096):
        n += labels.shape[0]
        total += float(X[:, 0].sum())
    t2 = time.perf_counter()
    return {"scan": t1 - t0, "stream": t2 - t1, "rows": n, "checksum": total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=40000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--rows-per-file", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="local folder for the local copy (default: a temporary one)")
    ap.add_argument("--endpoint", default=None,
                    help="HOST:PORT of an S3-compatible server (default: start moto_server)")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-os-"))
    proc = None
    if args.endpoint is None:
        proc, endpoint = start_moto()
    else:
        endpoint = args.endpoint
    backends = {"local folder": str(out / "features"),
                "S3 (moto, loopback)": f"s3://bench/{uuid.uuid4().hex[:8]}?endpoint_override="
                                       f"{endpoint}&scheme=http"}
    try:
        res = {}
        for name, root in backends.items():
            w = write(root, args.rows, args.dim, args.rows_per_file, args.seed)
            r = read(root, args.dim)
            res[name] = {**w, **r}
            print(f"[bench] {name}: {w['files']} shards, {w['bytes'] / 2**20:.0f} MB, "
                  f"write {w['write']:.2f} s, commit {w['commit']:.2f} s, scan {r['scan']:.2f} s, "
                  f"stream {r['stream']:.2f} s", file=sys.stderr, flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    local, s3 = res["local folder"], res["S3 (moto, loopback)"]
    assert local["rows"] == s3["rows"] == args.rows and local["checksum"] == s3["checksum"], \
        "the two backends read different rows"
    mb = local["bytes"] / 2**20
    print(f"\n{args.rows} rows x {args.dim} float32 ({mb:.0f} MB in {local['files']} shards)\n")
    print("| phase | local folder s | S3 (moto) s | S3 / local |")
    print("|---|---:|---:|---:|")
    for k, label in (("write", "write shards (ShardWriter)"),
                     ("commit", "commit (footers, sizes, SHA-256 re-read; manifest; rename or _SUCCESS)"),
                     ("scan", "open + scan_split (sizes, footers, SHA-256 re-read)"),
                     ("stream", "iter_chunks (every row decoded and checked)")):
        print(f"| {label} | {local[k]:.2f} | {s3[k]:.2f} | {s3[k] / max(local[k], 1e-9):.1f}x |")
    lt = sum(local[k] for k in ("write", "commit", "scan", "stream"))
    st = sum(s3[k] for k in ("write", "commit", "scan", "stream"))
    print(f"| total ({mb:.0f} MB written, read twice) | {lt:.2f} | {st:.2f} | {st / lt:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
