"""Cost of verifying feature shards against the manifest (sizes, rows, SHA-256).

    python benchmarks/bench_shard_verify.py [--mb 400] [--dim 4096] [--shards 8]

Writes a dense feature set of about --mb MB (L2-normalised random rows, pyarrow
defaults + page checksums), then times, each on a warm page cache (best of 3):
``scan_split`` without and with the SHA-256 check, and one full read of the split
(``iter_chunks``: decode + value checks, page CRCs verified), i.e. one epoch's I/O;
and a plain ``pq.read_table`` of every shard without and with page CRC verification.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=400)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--shards", type=int, default=8)
    a = p.parse_args()

    from bowsvm.io.features import iter_chunks, open_feature_set, scan_split
    from bowsvm.io import atomic_output_dir, write_json_atomic
    from bowsvm.io.features import shard_entries, write_shard

    rows = int(a.mb * 2**20 / (4 * a.dim))
    per = -(-rows // a.shards)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with atomic_output_dir(root / "fs") as out:
            (out / "train").mkdir()
            for k in range(a.shards):
                n = min(per, rows - k * per)
                X = rng.standard_normal((n, a.dim), dtype=np.float32)
                X /= np.linalg.norm(X, axis=1, keepdims=True)
                write_shard(out / "train" / f"part-{k:05d}.parquet", [str(i) for i in range(n)],
                            rng.integers(0, 10, n), X, "dense")
            write_json_atomic(out / "manifest.json", {
                "stage": "extract", "feature_set": "fs", "dim": a.dim, "layout": "dense",
                "classes": [str(c) for c in range(10)], "preset_hash": None,
                "preset_config": {"pooling": {"normalize": "l2"}},
                "shards": shard_entries(out)})
        fs = open_feature_set(root, "fs")
        total = sum(f.stat().st_size for f in (root / "fs" / "train").glob("*.parquet"))

        def best(fn):
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            return min(ts)

        info = scan_split(fs, "train", check_hash=False)
        t_nohash = best(lambda: scan_split(fs, "train", check_hash=False))
        t_hash = best(lambda: scan_split(fs, "train", check_hash=True))
        t_read = best(lambda: sum(1 for _ in iter_chunks(info, a.dim, 4096)))
        import pyarrow.parquet as pq

        files = info.files

        def read_all(verify):
            for f in files:
                pq.read_table(f, page_checksum_verification=verify)

        t_plain = best(lambda: read_all(False))
        t_crc = best(lambda: read_all(True))
        print(f"feature set: {rows} rows x {a.dim} dims, {a.shards} shards, {total / 2**20:.0f} MB on disk")
        print(f"scan_split without hash: {t_nohash:.3f} s")
        print(f"scan_split with SHA-256: {t_hash:.3f} s  (hash cost {t_hash - t_nohash:.3f} s, "
              f"{total / 2**20 / max(t_hash - t_nohash, 1e-9):.0f} MB/s)")
        print(f"one full read (iter_chunks, decode + checks): {t_read:.3f} s  "
              f"(hash = {100 * (t_hash - t_nohash) / t_read:.0f}% of one epoch's read)")
        print(f"pq.read_table of every shard: {t_plain:.3f} s without page CRC verification, "
              f"{t_crc:.3f} s with")


if __name__ == "__main__":
    main()
