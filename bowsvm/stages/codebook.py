"""The codebook stage: a seeded descriptor sample of the train images -> K-means codebook or GMM.

    bowsvm codebook --feature-set NAME --images IMAGES --codebooks CODEBOOKS [--memory-budget 2GB]
    spark-submit jobs/learn_codebook.py --feature-set NAME --images IMAGES --codebooks CODEBOOKS

On Spark: the driver lists the train ids and picks the sample images
(:func:`choose_sample_images`, seeded per id) and cuts them, in id order, into
moment blocks and range partitions (:func:`sample_plan`). Each task draws up to
``--samples-per-image`` descriptors from each of its images
(:func:`draw_sample`, seeded per (seed, id), so the sample does not depend on
partitioning or retries) and writes them itself, with the one feature-shard
writer (:class:`bowsvm.io.features.ShardWriter`, one file series per task
attempt, :func:`bowsvm.io.features.attempt_file`), into the staging folder
``_sample`` of the stage's temporary output folder (:func:`sample_partition`).
It returns only small results: its files and their rows, its first and last
id, and per moment block the count, float64 sum and float64 sum of outer
products of its rows. The sample never passes through the JVM.

The driver (:func:`staged_sample`) keeps the files of the successful attempts
in id order (images by id, each image's descriptors in draw order: the order
the driver-side stack of earlier versions had), adds the moments up in block
order, and trims the sample to ``--n-samples`` rows with the same seeded draw
as before. Then one of four paths (:func:`memory_path`; the progress shows
which, and the sample's size in bytes; the manifest records it):

- ``in-memory``: the sample, read back with pyarrow, fits ``--memory-budget``
  together with the PCA's float64 copies (5x the n x D float32 sample with PCA,
  1x without). Today's math on today's sample: :func:`bowsvm.coding.learn_codebook`
  (bowsvm's K-means, :func:`bowsvm.coding.kmeans.kmeans`, or scikit-learn's
  MiniBatchKMeans) or, for a Fisher vector preset, :func:`bowsvm.coding.learn_gmm_codebook`
  (EM on the driver, one ``[gmm] iteration`` line per iteration). Existing codebooks
  keep their bits.
- ``out-of-core-held``: PCA from the moments (:func:`bowsvm.coding.pca_from_moments`,
  less the trimmed rows' moments), the PCA'd sample (n x pca_dim float32) read
  into memory batch by batch, then the same K-means (:func:`bowsvm.coding.kmeans_codebook`)
  or EM (:func:`bowsvm.coding.gmm_codebook`).
- ``out-of-core-streamed``: the PCA'd sample exceeds the budget too; K-means reads the
  staging files every pass (batches of :data:`STREAM_ROWS` rows, projected as read:
  the same batches as the held path's, so the same bits). A GMM's EM streams them
  as well (:func:`bowsvm.coding.gmm.fit_gmm_streamed`, initialised by bowsvm's
  K-means on the same batches; one pass per EM iteration). ``--kmeans minibatch``
  is refused (it holds its sample), naming ``--memory-budget`` and the value it needs.
- ``mllib`` (``--kmeans mllib``, or ``auto`` above ``--mllib-threshold`` rows):
  Spark reads the staging files, projects them with the moments' PCA in the tasks
  and runs MLlib's KMeans (:func:`mllib_codebook`).

``--kmeans`` does not apply to a Fisher preset's GMM. The staging folder is
removed before the output is committed (and with the temporary folder on any
failure): CODEBOOKS/NAME does not keep the sample. A Java heap exhaustion on the
driver is reported naming ``--driver-memory`` and a value to raise it to. The
PCA, K-means and EM math lives in :mod:`bowsvm.coding._codebook`. Output
(CODEBOOKS/NAME, written atomically): ``codebook.npz`` + ``codebook.json``
(:class:`bowsvm.coding.Codebook`) and ``manifest.json`` (keys: docs/FORMATS.md,
"Codebooks").
"""

from __future__ import annotations

import bisect
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bowsvm._validation import check_int, parse_bytes
from bowsvm.io.image_shards import SHARD_COLUMNS, check_image_shards
from bowsvm.io import atomic_output_dir, parquet, read_manifest, write_json_atomic
from bowsvm.io.atomic import prepare_target
from bowsvm.io.store import absolute
from bowsvm._seed import seeded_key
from bowsvm.presets import add_feature_set_arguments, feature_set_preset
from bowsvm.spark import (
    SparkProgress, driver_memory, image_rows, java_heap_errors, maybe_inject_failure,
)

# bowsvm.coding (numba), bowsvm.io.features (scipy) and pyspark are imported inside the
# functions that use them: the CLI imports every stage module to build its parser.

NAME = "codebook"
ORDER = 20
JOB = "learn_codebook.py"
HELP = "sample descriptors from the train images and learn a feature set's codebook (Spark)"
DESCRIPTION = (
    "Sample dense descriptors (seeded per image) from the train split of the image shards, "
    "optionally reduce them with PCA, and learn the preset's codebook with K-means "
    "(bowsvm's Lloyd K-means locally, Spark MLlib KMeans for large samples), or for a Fisher "
    "vector preset its diagonal GMM by EM. Writes CODEBOOKS/NAME."
)

#: Iterations and initialisation of the MLlib K-means (recorded in the codebook's meta).
MLLIB_MAX_ITER = 30
MLLIB_INIT = "k-means||"

#: Staging folder of the descriptor sample, inside the stage's temporary output
#: folder (removed before the output is committed; never part of CODEBOOKS/NAME).
SAMPLE_DIR = "_sample"

#: At most this many moment blocks (:func:`sample_plan`): a task returns one
#: count, sum and D x D sum of outer products (float64) per block it holds.
MOMENT_BLOCKS = 32

#: Rows of one sample file (a task starts a new file beyond it) and rows buffered
#: per Parquet write (one row group each).
SAMPLE_ROWS_PER_FILE = 1 << 20
WRITE_ROWS = 1 << 14

#: Rows per batch of the sample on the driver (:func:`iter_sample`): the batch size
#: of bowsvm's K-means on an array, so the held and the streamed paths see the same batches.
STREAM_ROWS = 65536

#: pyarrow reads of the staged sample: batches of READ_ROWS rows, no pre-buffering of
#: whole row groups, 1 MB reads. Reading 1M x 364 rows in batches of 65536 rows took
#: 0.74 GiB of peak RSS (decoding a list column holds its levels too), 8192 rows 0.25 GiB.
READ_ROWS = 8192
_LEAN_READ = {"pre_buffer": False, "buffer_size": 1 << 20}

#: The in-memory path's peak with PCA, in sample sizes: the float32 sample, plus
#: fit_pca's float64 copy and its centred float64 copy (2 + 2).
IN_MEMORY_FACTOR_PCA = 5


# --------------------------------------------------------------- options

def add_arguments(parser) -> None:
    """The codebook stage's options (the CLI's and jobs/learn_codebook.py's)."""
    add_feature_set_arguments(parser, "codebooks")
    parser.add_argument("--samples-per-image", type=int, default=None,
                        help="descriptors drawn per image (default: the preset's)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="target size of the K-means sample (default: the preset's)")
    parser.add_argument("--kmeans", choices=("auto", "local", "minibatch", "mllib"), default="auto",
                        help="K-means engine: local (bowsvm's Lloyd passes on the nearest-basis "
                        "kernel, one progress line per pass), minibatch (scikit-learn's "
                        "MiniBatchKMeans), mllib (Spark MLlib KMeans), or auto (local, MLlib when "
                        "the sample has more than --mllib-threshold rows); a Fisher vector "
                        "preset's GMM is always fitted locally by EM (auto or local only)")
    parser.add_argument("--mllib-threshold", type=int, default=1_000_000,
                        help="sample size above which --kmeans auto uses MLlib")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the sample and K-means (default: the preset's random_state)")
    parser.add_argument("--memory-budget", default="2GB",
                        help="bytes the driver may hold for the sample: within it the sample is "
                        "loaded and learned from in memory (its peak with PCA is 5x the n x D "
                        "float32 sample); beyond it, out of core (PCA from the tasks' moments, "
                        "K-means streaming the sample from disk)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing codebook")


def _output(args) -> Path:
    return Path(args.codebooks) / args.feature_set


def sample_options(args, preset: dict) -> tuple[int, int, int]:
    """``(samples_per_image, n_samples, seed)``: the options, else the preset's (checked).

    Raises
    ------
    ValueError
        If ``--samples-per-image`` or ``--n-samples`` is below 1, or ``--seed``
        below 0.
    """
    cb = preset["codebook"]
    pick = lambda given, default: default if given is None else given  # noqa: E731
    return (check_int("--samples-per-image", pick(args.samples_per_image, cb["samples_per_image"]),
                      low=1),
            check_int("--n-samples", pick(args.n_samples, cb["n_samples"]), low=1),
            check_int("--seed", pick(args.seed, cb["random_state"]), low=0))


def check_arguments(args) -> None:
    """Check the options and refuse the output before Spark starts.

    Raises
    ------
    FileNotFoundError
        If the preset does not exist or ``--images`` is not a complete
        `bowsvm prepare` output.
    ValueError
        If an option is out of range, ``--memory-budget`` is not a size,
        ``--kmeans`` names a K-means engine for a Fisher vector preset, an image shard is corrupt or truncated (named), or
        CODEBOOKS/NAME overlaps ``--images``.
    FileExistsError
        If CODEBOOKS/NAME exists and may not be replaced (``--overwrite``).
    """
    preset, _ = feature_set_preset(args.preset or args.feature_set)  # unknown preset: named
    sample_options(args, preset)
    parse_bytes(args.memory_budget)
    engine_for(args, preset, 0)
    prepare_target(_output(args), args.overwrite, "codebook", [args.images], "--codebooks/NAME")
    check_image_shards(args.images)  # Spark would read a truncated shard as empty, silently


def engine_for(args, preset: dict, n_rows: int) -> str:
    """What learns the codebook: ``"gmm"`` (a Fisher vector preset), else the K-means engine.

    ``--kmeans auto`` is ``"mllib"`` above ``--mllib-threshold`` sample rows,
    else ``"local"``.

    Raises
    ------
    ValueError
        If ``--kmeans`` is ``minibatch`` or ``mllib`` for a Fisher vector preset.
    """
    if preset["coding"]["method"] == "fisher":
        if args.kmeans not in ("auto", "local"):
            raise ValueError(
                f"--kmeans {args.kmeans} does not apply to preset {preset['name']!r}: its "
                f"coding.method is 'fisher', whose codebook is a GMM fitted locally by EM; "
                f"leave --kmeans out (or pass auto or local).")
        return "gmm"
    if args.kmeans != "auto":
        return args.kmeans
    return "mllib" if n_rows > args.mllib_threshold else "local"


# --------------------------------------------------------------- partition functions

def choose_sample_images(ids, n_samples: int, samples_per_image: int, seed: int) -> set:
    """Ids of the train images to sample descriptors from (seeded, order-free).

    Enough images for ``n_samples`` descriptors at ``samples_per_image`` each:
    those with the smallest ``seeded_key(seed, id)``, whatever order ``ids`` is in.
    """
    n_images = max(1, -(-n_samples // max(1, samples_per_image)))
    ranked = sorted(ids, key=lambda i: (seeded_key(seed, i), i))
    return set(ranked[:n_images])


def sample_plan(chosen, n_part: int) -> tuple[list, list]:
    """How the sample images are cut: ``(partition starts, block starts)``, both id lists.

    The chosen ids, in order, are cut into ``min(MOMENT_BLOCKS, n)`` near-equal
    runs (moment blocks: each task returns the moments of its blocks, and the
    driver adds them up in block order, so the float64 sums do not depend on
    the partitioning); the ``n_part`` partitions are runs of whole blocks. Each
    list holds the first id of every run but the first (what
    :func:`bisect.bisect_right` needs to place an id).
    """
    ids = sorted(chosen)
    n_blocks = max(1, min(MOMENT_BLOCKS, len(ids)))
    b0 = [len(ids) * b // n_blocks for b in range(n_blocks)]
    n_part = max(1, min(n_part, n_blocks))
    p0 = [b0[n_blocks * p // n_part] for p in range(n_part)]
    return [ids[i] for i in p0[1:]], [ids[i] for i in b0[1:]]


def draw_sample(image_id, data, preset: dict, samples_per_image: int, seed: int):
    """The (n, D) float32 descriptors drawn from one encoded image, or None.

    The draw depends only on (seed, id), so the sample does not depend on
    partitioning or retries. An undecodable image, or one that yields no
    descriptor, gives None (the extract stage records it).
    """
    from bowsvm.coding import sample_descriptors
    from bowsvm.io.images import decode_image

    try:
        gray = decode_image(data, max_side=preset["max_side"])
    except Exception:
        return None
    X = sample_descriptors(gray, preset, samples_per_image, seeded_key(seed, image_id))
    return X.astype(np.float32) if X.shape[0] else None


def sample_partition(rows, preset: dict, samples_per_image: int, seed: int, staging: str,
                     block_starts: list):
    """Draw, write and sum up one task's descriptor sample (on executors); yield its result.

    ``rows`` are ``(id, encoded image bytes)`` sorted by id. The descriptors
    are written as dense feature shards (:class:`bowsvm.io.features.ShardWriter`:
    ``id`` = the image's id, ``label`` = the descriptor's index in the image's
    draw, ``x`` = the D floats) to ``staging/part-PPPPP-KKK.aA.parquet``, one
    file series per task attempt (:func:`bowsvm.io.features.attempt_file`), so
    a failed attempt never clobbers a good one. The one result (a small dict,
    all of the task that passes through the JVM) holds the partition, the files and their rows, the first and last id, the dimension
    and, per moment block (:func:`sample_plan`), the count, the float64 sum of
    the rows and the float64 sum of their outer products, added image by image
    in id order.
    """
    import functools

    from pyspark import TaskContext

    from bowsvm.io.features import ShardWriter, attempt_file, features_to_table

    maybe_inject_failure()
    ctx = TaskContext.get()
    part, attempt = ctx.partitionId(), ctx.taskAttemptId()  # unique: see attempt_file
    writer, blocks, buf, n_buf, first, last, dim = None, {}, [], 0, None, None, 0

    def flush():
        ids = [i for i, X in buf for _ in range(X.shape[0])]
        labels = np.concatenate([np.arange(X.shape[0]) for _, X in buf])
        writer.write(features_to_table(ids, labels, np.concatenate([X for _, X in buf]), "dense"))

    for image_id, data in rows:
        X = draw_sample(image_id, data, preset, samples_per_image, seed)
        if X is None:
            continue
        if writer is None:
            dim = X.shape[1]
            writer = ShardWriter(functools.partial(attempt_file, staging, part, attempt), dim,
                                 "dense", SAMPLE_ROWS_PER_FILE)
        acc = blocks.setdefault(bisect.bisect_right(block_starts, image_id),
                                [0, np.zeros(dim), np.zeros((dim, dim))])
        X64 = X.astype(np.float64)
        acc[0] += X.shape[0]
        acc[1] += X64.sum(axis=0)
        acc[2] += X64.T @ X64
        first = image_id if first is None else first
        last = image_id
        buf.append((image_id, X))
        n_buf += X.shape[0]
        if n_buf >= WRITE_ROWS:
            flush()
            buf, n_buf = [], 0
    if buf:
        flush()
    files = writer.close() if writer is not None else []
    yield {"partition": part, "files": [(str(f), int(n)) for f, n in files], "first": first,
           "last": last, "dim": dim,
           "moments": {b: (n, s.tobytes(), sxx.tobytes()) for b, (n, s, sxx) in blocks.items()}}


# --------------------------------------------------------------- the sample on the driver

@dataclass
class StagedSample:
    """The descriptor sample as the tasks left it: files in id order, moments, the trim.

    Attributes
    ----------
    files : list of str
        The staging files of the successful attempts, in id order.
    n_drawn : int
        Rows drawn (all files).
    dim : int
        D.
    keep : (n_drawn,) bool array or None
        The rows kept by the seeded trim to ``--n-samples`` (None: all).
    n : int
        Rows kept (the sample's size).
    moments : (int, (D,) float64, (D, D) float64)
        Count, sum and sum of outer products of the drawn rows (block order).
    """

    files: list
    n_drawn: int
    dim: int
    keep: np.ndarray | None
    n: int
    moments: tuple

    @property
    def nbytes(self) -> int:
        """Bytes of the sample as an (n, D) float32 array."""
        return 4 * self.n * self.dim


def staged_sample(results, n_samples: int, seed: int) -> StagedSample:
    """Gather the tasks' results into a :class:`StagedSample` (files, moments, the trim).

    The trim is today's: ``n_samples`` of the drawn rows, chosen by
    ``default_rng(seed).choice`` and kept in order.

    Raises
    ------
    RuntimeError
        If the tasks' id ranges overlap (a bug: the order of the sample would
        depend on the partitioning).
    """
    results = sorted(results, key=lambda r: r["partition"])
    prev = None
    for r in results:
        if r["first"] is None:
            continue
        if prev is not None and r["first"] <= prev:
            raise RuntimeError(f"internal error: sample task {r['partition']} starts at id "
                               f"{r['first']!r}, not after the previous task's {prev!r}")
        prev = r["last"]
    dim = max((r["dim"] for r in results), default=0)
    files = [f for r in results for f, n in r["files"] if n]
    n_drawn = sum(n for r in results for _, n in r["files"])
    count, s, sxx = 0, np.zeros(dim), np.zeros((dim, dim))
    blocks = {b: m for r in results for b, m in r["moments"].items()}
    for b in sorted(blocks):
        n, sb, sxxb = blocks[b]
        count += n
        s += np.frombuffer(sb, np.float64)
        sxx += np.frombuffer(sxxb, np.float64).reshape(dim, dim)
    keep = None
    if n_drawn > n_samples:  # trim to the target, seeded (the rows kept in order)
        keep = np.zeros(n_drawn, bool)
        keep[np.sort(np.random.default_rng(seed).choice(n_drawn, n_samples, replace=False))] = True
    return StagedSample(files, n_drawn, dim, keep, n_samples if keep is not None else n_drawn,
                        (count, s, sxx))


def iter_sample(sample: StagedSample, transform=None, rows: int = STREAM_ROWS, keep=None):
    """Yield the sample's rows as float32 batches of ``rows`` rows (the last one shorter).

    The files are read with pyarrow, in id order, the trim applied; the batches
    are cut at multiples of ``rows`` of the sample whatever the files' sizes,
    so they do not depend on the partitioning. ``transform`` (e.g. the PCA)
    maps each batch; ``keep`` replaces the sample's trim mask (a bool mask over
    the drawn rows).

    Raises
    ------
    ValueError
        If a staging file is corrupt (named), or the files hold another number
        of rows than the tasks reported.
    """
    from bowsvm.io.features import dense_rows

    keep = sample.keep if keep is None else keep

    def kept():
        r0 = 0
        for path in sample.files:
            for rb in parquet.iter_batches(path, "descriptor sample", columns=["x"],
                                           batch_size=READ_ROWS, file_options=_LEAN_READ):
                X = dense_rows(rb, sample.dim)
                m = X.shape[0]
                if r0 + m > sample.n_drawn:
                    break
                yield X if keep is None else X[keep[r0:r0 + m]]
                r0 += m
        if r0 != sample.n_drawn:  # a file lost rows after its task wrote it
            raise ValueError(
                f"the staged descriptor sample ({len(sample.files)} files in "
                f"{str(Path(sample.files[0]).parent) if sample.files else '?'!r}) holds a "
                f"different number of rows than its tasks wrote ({sample.n_drawn}); its "
                f"folder was changed while the stage ran: re-run the stage.")

    buf, have = [], 0
    for X in kept():
        while X.shape[0]:
            take = min(rows - have, X.shape[0])
            buf.append(X[:take])
            have += take
            X = X[take:]
            if have == rows:
                b = np.concatenate(buf) if len(buf) > 1 else buf[0]
                yield b if transform is None else transform(b)
                buf, have = [], 0
    if have:
        b = np.concatenate(buf) if len(buf) > 1 else buf[0]
        yield b if transform is None else transform(b)


def load_sample(sample: StagedSample, dim: int | None = None, transform=None) -> np.ndarray:
    """The sample as one C-contiguous (n, dim) float32 array (filled batch by batch)."""
    X = np.empty((sample.n, sample.dim if dim is None else dim), np.float32)
    r0 = 0
    for b in iter_sample(sample, transform):
        X[r0:r0 + b.shape[0]] = b
        r0 += b.shape[0]
    return X


def sample_moments(sample: StagedSample) -> tuple:
    """``(n, sum, sum of outer products)`` of the kept rows, float64.

    The tasks' moments, less those of the rows the trim dropped (read back
    from the files: at most ``--samples-per-image`` - 1 of them).
    """
    n, s, sxx = sample.moments
    if sample.keep is None:
        return n, s, sxx
    s, sxx = s.copy(), sxx.copy()
    for X in iter_sample(sample, keep=~sample.keep):
        X64 = X.astype(np.float64)
        s -= X64.sum(axis=0)
        sxx -= X64.T @ X64
    return sample.n, s, sxx


def memory_path(sample: StagedSample, engine: str, pca_dim, budget: int) -> tuple[str, int]:
    """Where the codebook is learned: ``(path, bytes)`` (see the module docstring).

    ``"mllib"`` (Spark reads the files), ``"in-memory"`` (today's math on the
    loaded sample; its peak, ``bytes``, is the sample plus, with PCA,
    :func:`bowsvm.coding.fit_pca`'s float64 copy and centred copy: 5x the
    sample), ``"out-of-core-held"`` (PCA from the moments, the PCA'd sample,
    ``bytes``, in memory) or ``"out-of-core-streamed"`` (K-means streams the
    sample from the files every pass; ``bytes``: one batch).

    Raises
    ------
    ValueError
        If ``--kmeans minibatch`` would need more than ``--memory-budget``
        (names the option and the value needed).
    """
    if engine == "mllib":
        return "mllib", 0
    in_memory = sample.nbytes * (IN_MEMORY_FACTOR_PCA if pca_dim else 1)
    if in_memory <= budget:
        return "in-memory", in_memory
    if engine == "minibatch":
        raise ValueError(
            f"--kmeans minibatch needs the {sample.n} x {sample.dim} sample in memory "
            f"({_size(in_memory)} with its PCA) but --memory-budget is {_size(budget)}; raise "
            f"--memory-budget to at least {_size(in_memory)}, or use --kmeans local (which "
            f"streams the sample from disk).")
    held = 4 * sample.n * (pca_dim or sample.dim)
    if held <= budget:
        return "out-of-core-held", held
    return "out-of-core-streamed", 4 * STREAM_ROWS * (sample.dim + (pca_dim or 0))


def path_message(sample: StagedSample, path: str, path_bytes: int, pca_dim, budget: int) -> str:
    """The progress line saying which path :func:`memory_path` took, and the sample's size."""
    held = _size(4 * sample.n * (pca_dim or sample.dim))
    why = {
        "mllib": "Spark reads the staging files; PCA from the tasks' moments",
        "in-memory": f"peak ~{_size(path_bytes)} <= --memory-budget {budget}",
        "out-of-core-held": (f"in memory the peak would be "
                             f"~{_size(sample.nbytes * (IN_MEMORY_FACTOR_PCA if pca_dim else 1))}"
                             f" > --memory-budget {budget}; PCA from the tasks' moments, the "
                             f"PCA'd sample held in memory: {held}"),
        "out-of-core-streamed": (f"the PCA'd sample, {held}, exceeds --memory-budget {budget}; "
                                 f"PCA from the tasks' moments, K-means reads the staging files "
                                 f"every pass"),
    }[path]
    return (f"sample: {sample.n} x {sample.dim} float32 = {_size(sample.nbytes)} in "
            f"{len(sample.files)} staging files; path: {path} ({why})")


def _size(n: int) -> str:
    return f"{n} bytes ({n / 2**30:.3g} GiB)"


def mllib_codebook(spark, sample: StagedSample, n_bases: int, pca_mean, pca_components,
                   seed: int):
    """K-means with Spark MLlib, Spark reading the sample's files (PCA applied in the tasks).

    The PCA (``pca_mean``, ``pca_components``, or None) is the one from the
    sample's moments (:func:`bowsvm.coding.pca_from_moments`); rows the trim
    dropped are left out by (id, index). K-means runs ``k-means||`` for 30
    iterations.
    """
    import pyarrow as pa
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.functions import array_to_vector

    from bowsvm.coding import codebook_from_centers
    from bowsvm.coding._codebook import project

    dim, dropped = sample.dim, set()
    if sample.keep is not None:  # the (id, index) of the rows the trim dropped (a few)
        from bowsvm.io.features import iter_shard_batches

        r0 = 0
        for path in sample.files:
            for ids, labels, X in iter_shard_batches(path, dim, lean=True):
                gone = np.flatnonzero(~sample.keep[r0:r0 + len(ids)])
                dropped.update((ids[i], int(labels[i])) for i in gone)
                r0 += len(ids)

    def features(batches):
        from bowsvm.io.features import dense_rows

        for rb in batches:
            X = dense_rows(rb, dim)
            if dropped:
                pairs = zip(rb.column("id").to_pylist(), rb.column("label").to_pylist())
                X = X[np.array([p not in dropped for p in pairs], bool)]
            P = X if pca_mean is None else project(X, pca_mean, pca_components)
            P = np.ascontiguousarray(P, np.float64)
            offsets = pa.array(np.arange(0, P.size + 1, max(1, P.shape[1]), dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [pa.ListArray.from_arrays(offsets, pa.array(P.reshape(-1)))], ["features"])

    n_part = max(2 * spark.sparkContext.defaultParallelism, sample.n // 50_000)
    df = (spark.read.parquet(*sample.files).mapInArrow(features, "features array<double>")
          .select(array_to_vector("features").alias("features")).repartition(n_part))
    km = KMeans(k=n_bases, seed=seed, maxIter=MLLIB_MAX_ITER, initMode=MLLIB_INIT, tol=1e-4)
    model = km.fit(df)
    seen = int(sum(model.summary.clusterSizes))
    if seen != sample.n:
        raise RuntimeError(f"internal error: MLlib K-means saw {seen} rows of the staged sample, "
                           f"not its {sample.n}")
    centers = np.stack([np.asarray(c, np.float32) for c in model.clusterCenters()])
    return codebook_from_centers(centers, pca_mean, pca_components, meta={
        "method": "spark.ml.KMeans", "n_samples": int(sample.n), "random_state": seed,
        "max_iter": MLLIB_MAX_ITER, "init": MLLIB_INIT,
        "inertia": float(model.summary.trainingCost)})


# --------------------------------------------------------------- the stage

def run_spark(spark, args) -> int:
    """The driver's work: sample on the executors, learn the codebook, write CODEBOOKS/NAME.

    Raises
    ------
    ValueError
        If ``--images`` has no train images, fewer descriptors could be
        sampled than the preset has bases, the sample does not fit
        ``--memory-budget`` where it must (:func:`memory_path`), or the
        driver's Java heap runs out (names ``--driver-memory``).
    """
    from bowsvm.coding import (
        gmm_codebook, kmeans_codebook, learn_codebook, learn_gmm_codebook, pca_from_moments,
    )
    from bowsvm.coding._codebook import project
    from pyspark.sql import functions as F

    t0 = time.time()
    sc = spark.sparkContext
    spark_start = max(0.0, t0 - sc.startTime / 1000)  # the session, built by run_stage_job
    preset, phash = feature_set_preset(args.preset or args.feature_set)
    cb_conf = preset["codebook"]
    per_image, n_samples, seed = sample_options(args, preset)
    budget = parse_bytes(args.memory_budget)
    images_manifest = read_manifest(args.images, stage="prepare")
    out = _output(args)

    sc._jsc.hadoopConfiguration().set(*parquet.SPARK_VERIFY_CONF)  # page CRCs of image shards
    with SparkProgress(spark, "codebook"), atomic_output_dir(
            out, args.overwrite, "codebook", [args.images], "--codebooks/NAME") as tmp, \
            parquet.spark_read_errors("image shard"):
        df = image_rows(spark, args.images, SHARD_COLUMNS).filter(F.col("split") == "train")
        with java_heap_errors(driver_memory(spark), "collecting the train ids"):
            ids = [r.id for r in df.select("id").collect()]
        if not ids:
            raise ValueError(f"{args.images!r} has no train images; a codebook is learned on train.")
        chosen = choose_sample_images(ids, n_samples, per_image, seed)
        print(f"[codebook] sampling up to {per_image} descriptors from each of {len(chosen)} of "
              f"{len(ids)} train images", file=sys.stderr, flush=True)
        bc = sc.broadcast(chosen)
        part_starts, block_starts = sample_plan(
            chosen, max(2 * sc.defaultParallelism, len(chosen) // 2000))
        staging = str(tmp / SAMPLE_DIR)
        with java_heap_errors(driver_memory(spark), "sampling descriptors"):
            results = (df.select("id", "image").rdd.filter(lambda r: r.id in bc.value)
                       .map(lambda r: (r.id, bytes(r.image)))
                       .repartitionAndSortWithinPartitions(
                           len(part_starts) + 1, lambda i: bisect.bisect_right(part_starts, i))
                       .mapPartitions(lambda it: sample_partition(it, preset, per_image, seed,
                                                                  staging, block_starts))
                       .collect())
        sample = staged_sample(results, n_samples, seed)
        n_bases = cb_conf["n_bases"]
        if sample.n < n_bases:
            raise ValueError(
                f"only {sample.n} descriptors could be sampled but the preset wants {n_bases} "
                f"bases; add images, raise --samples-per-image, or use a smaller codebook.")
        pca_dim = cb_conf["pca_dim"] or None
        engine = engine_for(args, preset, sample.n)
        path, path_bytes = memory_path(sample, engine, pca_dim, budget)
        print(f"[codebook] {path_message(sample, path, path_bytes, pca_dim, budget)}",
              file=sys.stderr, flush=True)
        what = (f"GMM (EM) of {sample.n} x {sample.dim} descriptors with {n_bases} Gaussians"
                if engine == "gmm" else
                f"K-means ({engine}) of {sample.n} x {sample.dim} descriptors into {n_bases} bases")
        print(f"[codebook] {what}" + (f" after PCA to {pca_dim}" if pca_dim else ""),
              file=sys.stderr, flush=True)
        t_km = time.time()
        try:
            if path == "in-memory":  # today's math on today's sample: the same bits
                X = load_sample(sample)
                if engine == "gmm":
                    cb = learn_gmm_codebook(X, n_bases, pca_dim=pca_dim, random_state=seed,
                                            max_iter=cb_conf["em_max_iter"], tol=cb_conf["em_tol"],
                                            var_floor=cb_conf["var_floor"], verbose=True)
                else:
                    cb = learn_codebook(X, n_bases, pca_dim=pca_dim, random_state=seed,
                                        method="minibatch" if engine == "minibatch" else "lloyd",
                                        verbose=True)
                del X
            else:
                mean = comps = None
                if pca_dim:
                    mean, comps = pca_from_moments(*sample_moments(sample), pca_dim)
                if path == "mllib":
                    with java_heap_errors(driver_memory(spark), "running MLlib K-means",
                                          need_bytes=3 * 8 * sample.n * (pca_dim or sample.dim)):
                        cb = mllib_codebook(spark, sample, n_bases, mean, comps, seed)
                else:
                    pca = None if mean is None else (lambda b: project(b, mean, comps))
                    rows = (load_sample(sample, pca_dim, pca) if path == "out-of-core-held" else
                            (lambda: iter_sample(sample, pca)))
                    if engine == "gmm":
                        cb = gmm_codebook(rows, n_bases, mean, comps, random_state=seed,
                                          max_iter=cb_conf["em_max_iter"], tol=cb_conf["em_tol"],
                                          var_floor=cb_conf["var_floor"], verbose=True,
                                          n_rows=sample.n)
                    else:
                        cb = kmeans_codebook(rows, n_bases, mean, comps, n_rows=sample.n,
                                             random_state=seed, verbose=True)
                    del rows
        except MemoryError:
            raise MemoryError(
                f"the driver ran out of memory on the {path} path with a sample of "
                f"{_size(sample.nbytes)}: lower --memory-budget (now {budget} bytes) to "
                f"what this machine can hold, so that the stage takes an out-of-core path."
            ) from None
        t_fit = round(time.time() - t_km, 3)
        if engine == "gmm":
            learned = {"method": "gmm", "kmeans": None, "log_likelihood": cb.gmm.log_likelihood,
                       "n_iter": cb.gmm.n_iter, "converged": cb.gmm.converged,
                       "em_seconds": t_fit}
        else:
            learned = {"method": "kmeans", "kmeans": engine, "kmeans_seconds": t_fit}
        shutil.rmtree(tmp / SAMPLE_DIR, ignore_errors=True)  # the sample is not kept
        cb.save(tmp)
        write_json_atomic(tmp / "manifest.json", {
            "stage": "codebook",
            "feature_set": args.feature_set,
            "preset": preset["name"],
            "preset_hash": phash,
            "codebook_hash": cb.hash,
            "n_bases": cb.n_bases, "dim": cb.dim, "input_dim": cb.input_dim,
            "pca_dim": pca_dim,
            **learned,
            "n_samples": int(sample.n), "n_sample_images": len(chosen),
            "samples_per_image": per_image, "seed": seed,
            "path": path, "sample_bytes": sample.nbytes, "memory_budget": budget,
            "images": absolute(args.images),
            "images_classes": images_manifest["classes"],
            "seconds": round(time.time() - t0, 3),
            "spark_start_seconds": round(spark_start, 3),
        })
    print(f"[codebook] wrote {out} ({cb.n_bases} {'Gaussians' if cb.gmm else 'bases'}, "
          f"hash {cb.hash}) in "
          f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return 0
