"""Codebooks: K-means bases or a diagonal GMM, with an optional PCA, saved as .npz + JSON (no pickle)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bowsvm._validation import check_array, check_int
from bowsvm.io.arrays import load_npz
from bowsvm.io.atomic import atomic_file
from bowsvm.io.manifest import write_json_atomic

__all__ = ["Codebook", "codebook_from_centers", "fit_pca", "gmm_codebook", "kmeans_codebook",
           "learn_codebook", "learn_gmm_codebook", "pca_from_moments", "project"]

CODEBOOK_NPZ = "codebook.npz"
CODEBOOK_JSON = "codebook.json"
FORMAT_VERSION = 1
#: samples x bases below which K-means runs single-threaded
_SMALL_KMEANS = 1 << 27


def _array_hash(arrays: dict) -> str:
    """SHA-256 (16 hex) over names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class Codebook:
    """A set of bases (or a diagonal GMM) with an optional PCA projection applied before coding.

    Parameters
    ----------
    bases : (p, d) array_like
        Stored as float32. For a GMM codebook: the K Gaussians' means.
    pca_mean : (D,) array_like, optional
    pca_components : (d, D) array_like, optional
        If given, descriptors x (D-dim) are projected to
        ``(x - pca_mean) @ pca_components.T`` (d-dim) before coding. Both or
        neither.
    meta : dict, optional
        JSON-able extra information (how it was learned); saved alongside.
        For a GMM codebook, ``n_iter``, ``log_likelihood`` and ``converged``
        of EM are read from it into :attr:`gmm`.
    gmm_weights : (p,) array_like, optional
    gmm_variances : (p, d) array_like, optional
        Mixing weights and diagonal variances: with them the codebook is the
        Gaussian mixture of Fisher vector coding (means = ``bases``), checked
        by :class:`bowsvm.coding.GMM`. Both or neither.

    Attributes
    ----------
    bases : (p, d) float32
    pca_mean, pca_components : float32 arrays or None
    gmm_weights, gmm_variances : float32 arrays or None
    gmm : bowsvm.coding.GMM or None
        The mixture (float32, read-only), None for a K-means codebook.
    kind : str
        ``"gmm"`` or ``"kmeans"``.
    n_bases, dim, input_dim : int
        p, d, and D (= d without PCA).
    hash : str
        Content hash of the arrays (bit-exact: any changed bit changes it).

    Raises
    ------
    ValueError
        Bad shapes, NaN/Inf, only one of a pair given, or a GMM that
        :class:`bowsvm.coding.GMM` refuses.
    """

    def __init__(self, bases, pca_mean=None, pca_components=None, meta=None, *,
                 gmm_weights=None, gmm_variances=None):
        bases = check_array("bases", bases, ndim=2, min_rows=1)
        if bases.shape[1] < 1:
            raise ValueError(f"bases must have at least one column, got {bases.shape}.")
        self.bases = np.ascontiguousarray(bases, dtype=np.float32)
        if (pca_mean is None) != (pca_components is None):
            raise ValueError(
                "pass both pca_mean and pca_components, or neither (no PCA)."
            )
        if pca_mean is not None:
            pca_mean = check_array("pca_mean", pca_mean, ndim=1)
            pca_components = check_array("pca_components", pca_components, ndim=2)
            if pca_components.shape != (self.bases.shape[1], pca_mean.shape[0]):
                raise ValueError(
                    f"pca_components must have shape (d, D) = ({self.bases.shape[1]}, "
                    f"{pca_mean.shape[0]}) to match bases and pca_mean, got "
                    f"{pca_components.shape}."
                )
            pca_mean = np.ascontiguousarray(pca_mean, dtype=np.float32)
            pca_components = np.ascontiguousarray(pca_components, dtype=np.float32)
        self.pca_mean = pca_mean
        self.pca_components = pca_components
        self.meta = dict(meta or {})
        if (gmm_weights is None) != (gmm_variances is None):
            raise ValueError(
                "pass both gmm_weights and gmm_variances (a GMM codebook), or neither "
                "(K-means bases)."
            )
        self.gmm = None
        self.gmm_weights = self.gmm_variances = None
        if gmm_weights is not None:
            from bowsvm.coding.gmm import GMM

            self.gmm = GMM(
                gmm_weights, self.bases, gmm_variances,
                n_iter=self.meta.get("n_iter", 0),
                log_likelihood=self.meta.get("log_likelihood", float("nan")),
                converged=self.meta.get("converged", False),
            )
            self.gmm_weights = self.gmm.weights
            self.gmm_variances = self.gmm.variances
        self.hash = _array_hash(self._arrays())

    # ------------------------------------------------------------------ info
    @property
    def n_bases(self) -> int:
        return int(self.bases.shape[0])

    @property
    def dim(self) -> int:
        return int(self.bases.shape[1])

    @property
    def input_dim(self) -> int:
        return self.dim if self.pca_mean is None else int(self.pca_mean.shape[0])

    @property
    def kind(self) -> str:
        return "kmeans" if self.gmm is None else "gmm"

    def __repr__(self):
        pca = "" if self.pca_mean is None else f", pca {self.input_dim}->{self.dim}"
        gmm = "" if self.gmm is None else ", gmm"
        return f"Codebook(p={self.n_bases}, d={self.dim}{pca}{gmm}, hash={self.hash})"

    def _arrays(self) -> dict:
        a = {"bases": self.bases}
        if self.pca_mean is not None:
            a["pca_mean"] = self.pca_mean
            a["pca_components"] = self.pca_components
        if self.gmm is not None:
            a["gmm_weights"] = self.gmm_weights
            a["gmm_variances"] = self.gmm_variances
        return a

    def arrays(self) -> dict:
        """The arrays saved in ``codebook.npz`` (by name); ``Codebook(**arrays)`` rebuilds it.

        What the extract stage broadcasts to its executors (with :attr:`meta`).
        """
        return dict(self._arrays())

    # ------------------------------------------------------------ projection
    def project(self, X):
        """Map raw descriptors (m, D) to coding space (m, d), float32.

        Raises
        ------
        ValueError
            If X does not have ``input_dim`` columns or holds NaN/Inf.
        """
        X = check_array("descriptors", X, ndim=2)
        if X.shape[1] != self.input_dim:
            raise ValueError(
                f"descriptors have dimension {X.shape[1]} but this codebook expects "
                f"{self.input_dim}; extract them with the preset the codebook was "
                f"learned for."
            )
        if self.pca_mean is None:
            return np.ascontiguousarray(X, dtype=np.float32)
        return project(X, self.pca_mean, self.pca_components)

    # ------------------------------------------------------------------- I/O
    def metadata(self) -> dict:
        """The JSON metadata written next to the arrays."""
        return {
            "format_version": FORMAT_VERSION,
            "codebook_hash": self.hash,
            "n_bases": self.n_bases,
            "dim": self.dim,
            "input_dim": self.input_dim,
            "pca": self.pca_mean is not None,
            "kind": self.kind,
            "meta": self.meta,
        }

    @staticmethod
    def _paths(path):
        path = Path(path)
        if path.suffix == ".npz":
            return path, path.with_suffix(".json")
        return path / CODEBOOK_NPZ, path / CODEBOOK_JSON

    def save(self, path):
        """Write ``codebook.npz`` + ``codebook.json`` into a folder, or to ``X.npz`` + ``X.json``.

        ``path`` ending in ``.npz`` names the array file; anything else is a
        folder (created if missing). Each file is written atomically
        (:func:`bowsvm.io.atomic.atomic_file`: a temporary file beside it,
        renamed over it once complete).

        Returns
        -------
        pathlib.Path
            The .npz file written.
        """
        npz, js = self._paths(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(npz, "wb") as f:
            np.savez(f, **self._arrays())
        write_json_atomic(js, self.metadata())
        return npz

    @classmethod
    def load(cls, path):
        """Load a codebook written by :meth:`save` (``np.load(allow_pickle=False)``).

        Raises
        ------
        FileNotFoundError
            If the .npz or .json file is missing.
        ValueError
            If the .npz is corrupt or holds object arrays (names the file), or
            the arrays do not match the hash recorded in the JSON metadata.
        """
        npz, js = cls._paths(path)
        if not npz.exists():
            raise FileNotFoundError(
                f"no codebook at {str(npz)!r}; pass a folder written by `bowsvm codebook` "
                f"or a .npz written by Codebook.save."
            )
        if not js.exists():
            raise FileNotFoundError(f"codebook metadata {str(js)!r} is missing.")
        with open(js) as f:
            md = json.load(f)
        arrays = load_npz(npz, "codebook file")
        if "bases" not in arrays:
            raise ValueError(f"{str(npz)!r} holds no 'bases' array; not a codebook file.")
        cb = cls(
            arrays["bases"], arrays.get("pca_mean"), arrays.get("pca_components"),
            meta=md.get("meta"), gmm_weights=arrays.get("gmm_weights"),
            gmm_variances=arrays.get("gmm_variances"),
        )
        if md.get("codebook_hash") != cb.hash:
            raise ValueError(
                f"codebook {str(npz)!r} has hash {cb.hash} but its metadata records "
                f"{md.get('codebook_hash')}; the files are corrupt or mismatched."
            )
        return cb


def _pca_sample(X, pca_dim):
    """The sample projected by the PCA fitted on it (or as is): ``(X float32, mean, comps)``."""
    mean = comps = None
    if pca_dim is not None:
        mean, comps = fit_pca(X, pca_dim)
        X = project(X, mean, comps)
    return np.ascontiguousarray(X, dtype=np.float32), mean, comps


def fit_pca(X, n_components):
    """PCA of a descriptor sample: (mean (D,), components (n_components, D)), float32.

    Components are the top eigenvectors of the centred sample's scatter matrix
    (float64; equal to its top right singular vectors), with signs fixed so the
    largest-magnitude entry of each is positive (deterministic).
    """
    X = check_array("descriptors", X, ndim=2, min_rows=2)
    D = X.shape[1]
    n_components = check_int("pca_dim", n_components, low=1, high=min(D, X.shape[0]))
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    Xc = X64 - mean
    # eigenvectors of the D x D scatter matrix: one GEMM plus a small eigh,
    # much cheaper than an SVD of the (m, D) sample when m >> D
    return _pca_of_scatter(mean, Xc.T @ Xc, n_components)


def _pca_of_scatter(mean, scatter, n_components):
    """fit_pca's last step: the top eigenvectors of a (D, D) scatter matrix, signs fixed."""
    evals, evecs = np.linalg.eigh(scatter)
    comps = evecs[:, ::-1][:, :n_components].T
    sign = np.sign(comps[np.arange(n_components), np.argmax(np.abs(comps), axis=1)])
    sign[sign == 0] = 1
    comps = comps * sign[:, None]
    return mean.astype(np.float32), comps.astype(np.float32)


def pca_from_moments(n, sum_x, sum_xxt, n_components):
    """:func:`fit_pca` of a sample known only by its moments: (mean (D,), components), float32.

    The out-of-core codebook's PCA: the sample never needs to be in memory,
    only its row count, the float64 sum of its rows and the float64 sum of
    their outer products (each part of the sample contributes its own, added
    up). mean = sum_x / n, scatter = sum_xxt - n mean mean^T, then the same
    eigh and sign rule as :func:`fit_pca`.

    Parameters
    ----------
    n : int
        Rows of the sample (at least 2).
    sum_x : (D,) array_like
        Sum of the rows.
    sum_xxt : (D, D) array_like
        Sum of x x^T over the rows.
    n_components : int
        1 <= n_components <= min(D, n).

    Returns
    -------
    mean : (D,) float32
    components : (n_components, D) float32

    Raises
    ------
    ValueError
        If n < 2, the shapes do not agree, the moments hold NaN/Inf, or
        n_components is out of range.

    Notes
    -----
    Equal to :func:`fit_pca` on the same rows up to rounding (about 1e-6 on
    the components for well-separated eigenvalues): the scatter matrix is
    formed from uncentred sums, which loses ``log10(|mean|^2 / variance)``
    digits of float64's 16; descriptors (values of order 0.1, variances of
    order 1e-3) keep more than 10.
    """
    n = check_int("n", n, low=2)
    sum_x = check_array("sum_x", sum_x, ndim=1).astype(np.float64)
    D = sum_x.shape[0]
    sum_xxt = check_array("sum_xxt", sum_xxt, ndim=2).astype(np.float64)
    if sum_xxt.shape != (D, D):
        raise ValueError(f"sum_xxt must have shape (D, D) = ({D}, {D}) to match sum_x, got "
                         f"{sum_xxt.shape}.")
    n_components = check_int("pca_dim", n_components, low=1, high=min(D, n))
    mean = sum_x / n
    scatter = sum_xxt - n * np.outer(mean, mean)
    return _pca_of_scatter(mean, (scatter + scatter.T) / 2, n_components)


def project(X, mean, components):
    """Rows (m, D) -> ``(X - mean) @ components.T`` (m, d) float32: the codebook's PCA.

    The one projection of a sample (:func:`learn_codebook`, the codebook
    stage's out-of-core path) and of descriptors (:meth:`Codebook.project`).
    """
    return np.ascontiguousarray((np.asarray(X, dtype=np.float32) - mean) @ components.T)


def codebook_from_centers(centers, pca_mean=None, pca_components=None, meta=None):
    """Build a :class:`Codebook` from given K-means centres (e.g. Spark MLlib's)."""
    return Codebook(centers, pca_mean, pca_components, meta=meta)


def learn_codebook(
    descriptors,
    n_bases,
    pca_dim=None,
    random_state=0,
    *,
    method="lloyd",
    max_iter=None,
    tol=1e-4,
    verbose=False,
    n_threads=None,
    batch_size=4096,
    n_init=1,
):
    """Learn a codebook from a sample of descriptors by K-means.

    Parameters
    ----------
    descriptors : (m, D) array_like
        Descriptor sample (m >= n_bases).
    n_bases : int
        Codebook size p.
    pca_dim : int, optional
        Project to this many PCA dimensions (fitted on the same sample) before
        K-means; None keeps D.
    random_state : int
        Seed of K-means.
    method : {"lloyd", "minibatch"}
        ``"lloyd"`` (default): :func:`bowsvm.coding.kmeans.kmeans`, Lloyd passes
        whose assignment step is the exact nearest-basis kernel; the same seed
        and sample give the same bases bit for bit whatever the machine's thread
        count. ``"minibatch"``: scikit-learn's MiniBatchKMeans (identical bases
        only on the same machine and thread count: it uses BLAS and OpenMP
        reductions).
    max_iter : int, optional
        Passes over all rows at most (default 30 for lloyd, 100 for minibatch).
    tol : float
        lloyd: stop when a pass improves the inertia by less than this fraction.
    verbose : bool
        lloyd: one progress line per pass on stderr.
    n_threads : int, optional
        lloyd: threads of the assignment step.
    batch_size, n_init
        minibatch only: passed to :class:`sklearn.cluster.MiniBatchKMeans`.

    Returns
    -------
    Codebook
        ``meta`` records the method, its parameters and the final inertia.

    Raises
    ------
    ValueError
        If there are fewer descriptors than bases, pca_dim is out of range,
        the method is unknown, or the sample holds NaN/Inf.
    """
    X = check_array("descriptors", descriptors, ndim=2, min_rows=1)
    n_bases = check_int("n_bases", n_bases, low=1)
    if method not in ("lloyd", "minibatch"):
        raise ValueError(f"method={method!r} is not valid; pass 'lloyd' or 'minibatch'.")
    if X.shape[0] < n_bases:
        raise ValueError(
            f"n_bases={n_bases} exceeds the {X.shape[0]} sampled descriptors; sample "
            f"more descriptors or use a smaller codebook."
        )
    random_state = check_int("random_state", random_state, low=0)
    if max_iter is None:
        max_iter = 30 if method == "lloyd" else 100
    max_iter = check_int("max_iter", max_iter, low=1)
    X, mean, comps = _pca_sample(X, pca_dim)
    if method == "lloyd":
        return kmeans_codebook(X, n_bases, mean, comps, n_rows=X.shape[0],
                               random_state=random_state, max_iter=max_iter, tol=tol,
                               n_threads=n_threads, verbose=verbose)
    meta = {"method": "MiniBatchKMeans", "n_samples": int(X.shape[0]),
            "random_state": random_state, "max_iter": max_iter, "pca_dim": pca_dim}
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    km = MiniBatchKMeans(
        n_clusters=n_bases, batch_size=check_int("batch_size", batch_size, low=1),
        max_iter=max_iter, n_init=check_int("n_init", n_init, low=1),
        random_state=random_state,
    )
    # small problems run on one thread: sklearn's OpenMP threads cost more
    # than they save below ~1e8 distance evaluations (measured: 15x slower
    # fit of 2000 x 16 with 2 threads on a busy 2-core machine)
    with threadpool_limits(1 if X.shape[0] * n_bases < _SMALL_KMEANS else None):
        km.fit(X)
    meta.update(batch_size=batch_size, n_init=n_init, inertia=float(km.inertia_))
    return Codebook(km.cluster_centers_.astype(np.float32), mean, comps, meta=meta)


def learn_gmm_codebook(
    descriptors,
    n_components,
    pca_dim=None,
    random_state=0,
    *,
    max_iter=100,
    tol=1e-4,
    var_floor=1e-4,
    verbose=False,
):
    """Learn a GMM codebook (Fisher vector coding) from a sample of descriptors by EM.

    The same sample and PCA as :func:`learn_codebook` (PCA fitted on the
    sample by :func:`fit_pca`, the sample projected in float32), then
    :func:`bowsvm.coding.fit_gmm` on the projected sample.

    Parameters
    ----------
    descriptors : (m, D) array_like
        Descriptor sample (m >= n_components).
    n_components : int
        K, the number of Gaussians (the preset's ``codebook.n_bases``).
    pca_dim : int, optional
        Project to this many PCA dimensions first; None keeps D.
    random_state : int
        Seed of the GMM's initialisation (``fit_gmm``'s K-means init).
    max_iter, tol, var_floor
        Passed to :func:`bowsvm.coding.fit_gmm` (the preset's
        ``codebook.em_max_iter``, ``em_tol``, ``var_floor``).
    verbose : bool
        One progress line per EM iteration on stderr (``[gmm] iteration``).

    Returns
    -------
    Codebook
        With ``gmm`` set (``bases`` = the means); ``meta`` records the method
        ``"gmm"``, the EM settings, ``n_iter``, ``log_likelihood`` and
        ``converged``.

    Raises
    ------
    ValueError
        If there are fewer descriptors than Gaussians, pca_dim is out of
        range, or the sample holds NaN/Inf (or has no spread).
    """
    X = check_array("descriptors", descriptors, ndim=2, min_rows=1)
    n_components = check_int("n_components", n_components, low=1)
    if X.shape[0] < n_components:
        raise ValueError(
            f"n_components={n_components} exceeds the {X.shape[0]} sampled descriptors; "
            f"sample more descriptors or use fewer Gaussians."
        )
    random_state = check_int("random_state", random_state, low=0)
    X, mean, comps = _pca_sample(X, pca_dim)
    return gmm_codebook(X, n_components, mean, comps, random_state=random_state,
                        max_iter=max_iter, tol=tol, var_floor=var_floor, verbose=verbose)


def kmeans_codebook(X, n_bases, pca_mean, pca_components, *, n_rows, random_state=0,
                    max_iter=30, tol=1e-4, n_threads=None, verbose=False):
    """:func:`learn_codebook`'s Lloyd K-means on a sample already in coding space.

    Parameters
    ----------
    X : (n, d) array, or a callable returning an iterator of (m, d) float32 batches
        The (PCA'd) sample, in memory or streamed (:func:`bowsvm.coding.kmeans.kmeans`).
    n_bases : int
    pca_mean, pca_components : arrays or None
        The PCA the rows were projected with (kept in the codebook).
    n_rows : int
        Rows of the sample (recorded in ``meta``).
    random_state, max_iter, tol, n_threads, verbose
        As for :func:`learn_codebook`.

    Returns
    -------
    Codebook
        ``meta`` as :func:`learn_codebook`'s for ``method="lloyd"``.

    Raises
    ------
    ValueError
        As :func:`bowsvm.coding.kmeans.kmeans` (fewer rows than bases, NaN/Inf).
    """
    from bowsvm.coding.kmeans import kmeans

    res = kmeans(X, n_bases, random_state=random_state, max_iter=max_iter, tol=tol,
                 n_threads=n_threads, verbose=verbose)
    pca_dim = None if pca_components is None else int(pca_components.shape[0])
    meta = {"method": "kmeans-lloyd", "n_samples": int(n_rows), "random_state": random_state,
            "max_iter": max_iter, "pca_dim": pca_dim, "tol": tol, "n_iter": res.n_iter,
            "converged": res.converged, "inertia": float(res.inertia)}
    return Codebook(res.centers, pca_mean, pca_components, meta=meta)


def gmm_codebook(X, n_components, pca_mean, pca_components, *, random_state=0, max_iter=100,
                 tol=1e-4, var_floor=1e-4, verbose=False, n_rows=None):
    """:func:`learn_gmm_codebook`'s EM on a sample already in coding space.

    ``X`` is the (PCA'd) sample: an (n, d) array in memory (:func:`bowsvm.coding.fit_gmm`,
    initialised by scikit-learn's KMeans), or a callable returning an iterator of
    (m, d) batches, streamed from disk (:func:`bowsvm.coding.kmeans.kmeans` for the
    initial means, then :func:`bowsvm.coding.gmm.fit_gmm_streamed`; ``n_rows`` is then
    the sample's row count, for ``meta``). ``pca_mean`` / ``pca_components`` are the
    PCA it was projected with (or None); the other parameters and the returned
    codebook are :func:`learn_gmm_codebook`'s.

    Raises
    ------
    ValueError
        As :func:`bowsvm.coding.fit_gmm`.
    """
    from bowsvm.coding.gmm import fit_gmm, fit_gmm_streamed

    if callable(X):
        from bowsvm.coding.kmeans import kmeans

        init = kmeans(X, n_components, random_state=random_state, verbose=verbose)
        gmm = fit_gmm_streamed(X, init.centers, max_iter=max_iter, tol=tol,
                               var_floor=var_floor, verbose=verbose)
        n, how = int(n_rows), "kmeans-lloyd"
    else:
        gmm = fit_gmm(X, n_components, random_state=random_state, max_iter=max_iter, tol=tol,
                      var_floor=var_floor, verbose=verbose)
        n, how = int(X.shape[0]), "kmeans"
    pca_dim = None if pca_components is None else int(pca_components.shape[0])
    meta = {"method": "gmm", "init": how, "n_samples": n,
            "random_state": random_state, "max_iter": max_iter, "tol": tol,
            "var_floor": var_floor, "pca_dim": pca_dim, "n_iter": gmm.n_iter,
            "log_likelihood": gmm.log_likelihood, "converged": gmm.converged}
    return Codebook(gmm.means, pca_mean, pca_components, meta=meta, gmm_weights=gmm.weights,
                    gmm_variances=gmm.variances)
