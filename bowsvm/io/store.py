"""Outputs on any ``pyarrow.fs`` file system: URIs, and a commit protocol without rename.

A plain path (``features``, ``/data/features``) is a local folder and keeps the
"temporary folder, then rename" commit of :mod:`bowsvm.io.atomic`. A URI
(``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http``, ``hdfs://nn:8020/p``,
``gs://...``, ``file:///abs/path``) is opened with
``pyarrow.fs.FileSystem.from_uri`` (credentials: the file system's usual
environment, e.g. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``) and becomes a :class:`Location`, which stands in for a
``Path`` where bowsvm reads and writes feature shards.

An object store has no atomic rename, so a URI output is committed by its
manifest instead (:func:`manifest_output_dir`, docs/FORMATS.md):

1. every file is written once, straight under the final prefix, under a name
   carrying the run's tag (``part-PPPPP-KKK.RUN.aA.parquet``: a task attempt
   never overwrites another attempt's, or the previous output's, files);
2. the driver writes ``manifest.json`` listing exactly the committed files
   (``files``: path and bytes), then the empty ``_SUCCESS`` marker, last;
3. the other files of the run (losing or failed attempts) are deleted, best
   effort, and so are the files the previous output's manifest listed and the
   new one does not (``--overwrite``).

Readers never list a URI output: they read ``_SUCCESS`` and ``manifest.json``
by name and open exactly the files the manifest lists, so leftovers of killed
runs and foreign objects under the prefix are never read. Writers list the
prefix once (and again before committing) to refuse a prefix holding objects
bowsvm did not write, as a foreign local folder is refused.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
import sys
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"

#: Value of a URI output manifest's ``commit.protocol``.
PROTOCOL = "manifest"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: A file of a bowsvm run under a URI output: a ``.RUN.`` tag of 12 hex digits in its name.
_RUN_TAG = re.compile(r"\.([0-9a-f]{12})(?:\.a\d+)?\.parquet$")

_FILESYSTEMS: dict = {}


def is_uri(path) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(path, Location) or bool(_URI.match(str(path)))


def _filesystem(uri: str):
    """``(FileSystem, path)`` of a URI; the file system is built once per process."""
    import pyarrow.fs as pafs

    if uri not in _FILESYSTEMS:
        try:
            _FILESYSTEMS[uri] = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:
            raise ValueError(
                f"cannot open {uri!r} as a file system ({type(exc).__name__}: {exc}); pass a "
                f"local folder or a URI pyarrow.fs understands, e.g. "
                f"s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http, "
                f"hdfs://namenode:8020/path or file:///abs/path."
            ) from None
    return _FILESYSTEMS[uri]


@dataclass(frozen=True)
class Location:
    """A file or folder on a ``pyarrow.fs`` file system, named by its root URI.

    The part of ``Path`` that bowsvm's shard readers and writers use: ``/``,
    ``name``, ``parent``, :meth:`exists`, :meth:`is_file`, :meth:`stat`,
    :meth:`relative_to`; no listing (readers trust manifests). Pickled as
    (root URI, relative path), so Spark tasks rebuild the file system from
    the URI in their own process (with their own credentials).

    Attributes
    ----------
    root : str
        The URI it was opened from (query parameters included).
    rel : str
        The path below ``root`` ("" for the root itself), with ``/``.
    """

    root: str
    rel: str = ""

    @classmethod
    def from_uri(cls, uri: str) -> Location:
        return cls(str(uri), "")

    def __reduce__(self):
        return (Location, (self.root, self.rel))

    @property
    def fs(self):
        return _filesystem(self.root)[0]

    @property
    def path(self) -> str:
        """The path within :attr:`fs`."""
        base = _filesystem(self.root)[1].rstrip("/")
        return f"{base}/{self.rel}" if self.rel else base

    def __truediv__(self, name) -> Location:
        name = str(name).strip("/")
        return Location(self.root, f"{self.rel}/{name}" if self.rel else name)

    def __str__(self) -> str:
        base = self.root.split("?", 1)[0].rstrip("/")
        return f"{base}/{self.rel}" if self.rel else base

    @property
    def uri(self) -> str:
        """The URI of this location, query parameters included (``str`` drops them)."""
        query = self.root.partition("?")[2]
        return str(self) + (f"?{query}" if query else "")

    def __fspath__(self):  # never open a Location as a local path by mistake
        raise TypeError(f"{self} is not a local path")

    @property
    def name(self) -> str:
        return posixpath.basename(self.rel) if self.rel else posixpath.basename(self.path)

    @property
    def parent(self) -> Location:
        return Location(self.root, posixpath.dirname(self.rel))

    def relative_to(self, other: Location):
        from pathlib import PurePosixPath

        if other.root != self.root or not (other.rel == "" or self.rel.startswith(other.rel + "/")):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.rel[len(other.rel):].lstrip("/"))

    def info(self):
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type == pafs.FileType.File

    def stat(self):
        """``st_size`` of a file; FileNotFoundError naming it if there is none."""
        import pyarrow.fs as pafs

        i = self.info()
        if i.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self} does not exist (or is not a file)")
        return SimpleNamespace(st_size=int(i.size))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Make the folder on a local file system; object stores have no folders (no-op)."""
        if self.fs.type_name == "local":
            self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        self.parent.mkdir()
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)


def resolve(path):
    """A URI as a :class:`Location`; a local path as a ``Path`` (unchanged otherwise)."""
    from pathlib import Path

    if isinstance(path, Location):
        return path
    if isinstance(path, str) and _URI.match(path):
        return Location.from_uri(path)
    return Path(path)


def absolute(path) -> str:
    """A path for another process: a URI unchanged, a local path made absolute."""
    from pathlib import Path

    if isinstance(path, Location):
        return path.uri
    return str(path) if is_uri(path) else str(Path(path).absolute())


def open_input(path, stream: bool = False):
    """What pyarrow reads ``path`` from: a local path itself, a Location's open file."""
    if not isinstance(path, Location):
        return path if not stream else open(path, "rb")
    return path.fs.open_input_stream(path.path) if stream else path.fs.open_input_file(path.path)


def _say(msg: str) -> None:
    print(f"[bowsvm] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- readers

def check_complete(loc: Location, what: str = "input") -> Location:
    """Return ``loc`` if it holds ``_SUCCESS`` and ``manifest.json`` (read by name).

    Raises
    ------
    FileNotFoundError
        Naming the URI: nothing there, or no marker / manifest.
    """
    import pyarrow.fs as pafs

    succ, man = loc.fs.get_file_info([(loc / SUCCESS).path, (loc / MANIFEST).path])
    if succ.type != pafs.FileType.File or man.type != pafs.FileType.File:
        missing = [n for n, i in ((SUCCESS, succ), (MANIFEST, man)) if i.type != pafs.FileType.File]
        raise FileNotFoundError(
            f"{what} {str(loc)!r} is not a complete bowsvm output (no {' or '.join(missing)} "
            f"there): run the stage that writes it first, or, if a run was killed while "
            f"committing, re-run it with --overwrite to the same URI (or delete the prefix)."
        )
    return loc


def read_json(loc: Location) -> dict:
    """A JSON object stored at ``loc``; ValueError naming it if it is not one."""
    try:
        m = json.loads(loc.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{str(loc)!r} is not valid JSON ({exc}); re-run the stage that "
                         f"wrote it.") from None
    if not isinstance(m, dict):
        raise ValueError(f"{str(loc)!r} is not a JSON object; re-run the stage that wrote it.")
    return m


def listed_files(manifest: dict) -> list[str]:
    """The files a URI output's manifest lists (``files`` paths, relative to its prefix)."""
    return [e["path"] for e in manifest.get("files") or []]


# --------------------------------------------------------------- writers

def _objects(loc: Location) -> list[str]:
    """Every file below ``loc`` (relative paths); pyarrow's folder markers are not files."""
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    base = loc.path.rstrip("/") + "/"
    return sorted(i.path[len(base):] for i in loc.fs.get_file_info(sel)
                  if i.type == pafs.FileType.File and i.path.startswith(base))


def run_of(name: str) -> str | None:
    """The run tag in a file name written under a URI output, or None."""
    m = _RUN_TAG.search(name)
    return m.group(1) if m else None


def check_target(loc: Location, overwrite: bool, stage: str | None, option: str,
                 own_run: str | None = None) -> list[str]:
    """Check that a stage may write the URI output ``loc``; return the files it may delete.

    Rules (those of a local folder, :func:`bowsvm.io.atomic.check_target`):
    nothing under the prefix: written. A complete output (``_SUCCESS``,
    ``manifest.json`` of ``stage``): replaced only with ``--overwrite``, and
    then only the files its manifest lists may be deleted. Files of an earlier
    bowsvm run that never committed (a run tag in their name, listed by no
    manifest) are left and reported. Anything else under the prefix is refused.

    Returns
    -------
    list of str
        The previous output's listed files (relative paths; empty if none).

    Raises
    ------
    FileExistsError
        Naming the URI (and the first foreign object) and how to fix it.
    """
    fix = ("choose another URI, or delete the objects yourself if you are sure they are "
           "not needed")
    try:
        objects = [o for o in _objects(loc) if own_run is None or run_of(o) != own_run]
    except OSError as exc:
        raise FileExistsError(f"{option} {str(loc)!r} cannot be listed ({exc}); check the URI, "
                              f"its endpoint and the credentials (AWS_* variables for S3).") from None
    if not objects:
        return []
    old: dict = {}
    if SUCCESS in objects and MANIFEST in objects:
        with contextlib.suppress(OSError, ValueError):
            old = read_json(loc / MANIFEST)
    if old.get("commit", {}).get("protocol") != PROTOCOL or not isinstance(old.get("stage"), str):
        raise FileExistsError(
            f"{option} {str(loc)!r} holds objects but not a complete bowsvm output (no "
            f"{SUCCESS} marker, or no {MANIFEST} of bowsvm's commit protocol), so --overwrite "
            f"will not delete them; {fix}.")
    if stage is not None and old["stage"] != stage:
        raise FileExistsError(f"{option} {str(loc)!r} holds the output of `bowsvm {old['stage']}`, "
                              f"not of `bowsvm {stage}`, so --overwrite will not replace it; {fix}.")
    listed = set(listed_files(old))
    foreign = [o for o in objects if o not in listed and o not in (SUCCESS, MANIFEST)
               and run_of(o) is None]
    if foreign:
        raise FileExistsError(
            f"{option} {str(loc)!r} holds {len(foreign)} object(s) bowsvm did not write "
            f"(first: {str(loc / foreign[0])!r}), so --overwrite will not replace it; {fix}.")
    if not overwrite:
        raise FileExistsError(f"output {str(loc)!r} already exists; pass --overwrite to replace "
                              f"it or choose another output URI.")
    stale = [o for o in objects if o not in listed and o not in (SUCCESS, MANIFEST)]
    if stale and own_run is None:  # reported once, before the work
        _say(f"left {len(stale)} object(s) under {loc} of earlier runs that never committed "
             f"(first: {stale[0]}); readers ignore them: delete them yourself when no run is "
             f"writing there")
    return sorted(listed)


@dataclass
class StoreOutput:
    """What :func:`manifest_output_dir` yields: the final prefix, the run tag, the manifest.

    A stage writes its files under :attr:`root` with :attr:`run` in their
    names, registers each committed one with :meth:`commit`, and hands its
    manifest to :func:`bowsvm.io.manifest.write_manifest` (kept here until the
    commit writes it).
    """

    root: Location
    run: str
    files: list = field(default_factory=list)
    manifest: dict | None = None

    def __truediv__(self, name) -> Location:
        return self.root / name

    def __str__(self) -> str:
        return str(self.root)

    def tagged(self, name: str) -> str:
        """``name`` with the run tag before its suffix: ``part-00000.parquet`` -> ``part-00000.RUN.parquet``."""
        stem, dot, ext = name.rpartition(".")
        return f"{stem}.{self.run}.{ext}" if dot else f"{name}.{self.run}"

    def commit(self, loc) -> None:
        """Register a written file (a Location under :attr:`root`) as part of the output."""
        self.files.append(loc.relative_to(self.root).as_posix())


@contextlib.contextmanager
def manifest_output_dir(loc: Location, overwrite: bool = False, stage: str | None = None,
                        option: str = "output"):
    """Write the URI output ``loc`` with the manifest commit (module docstring).

    Yields a :class:`StoreOutput`. On success: the target is checked again,
    ``manifest.json`` (the stage's, plus ``files`` and ``commit``) is written,
    then ``_SUCCESS``; then the run's unregistered files and the previous
    output's files the new manifest does not list are deleted (best effort).
    On any exception the run's files are deleted (best effort) and the
    previous output is untouched.

    Raises
    ------
    FileExistsError
        If ``loc`` may not be written (:func:`check_target`, before any work).
    RuntimeError
        If the block handed over no manifest (a bug in the stage).
    FileNotFoundError
        If a registered file is missing at the commit.
    """
    check_target(loc, overwrite, stage, option)
    out = StoreOutput(loc, uuid.uuid4().hex[:12])
    try:
        yield out
        if out.manifest is None:
            raise RuntimeError(f"internal error: stage handed no manifest for {loc}")
        written = out.manifest.get("stage")
        if stage is not None and written != stage:
            raise ValueError(f"internal error: stage {stage!r} wrote a manifest of stage "
                             f"{written!r} for {loc}")
        old = check_target(loc, overwrite, stage or written, option, own_run=out.run)
        infos = loc.fs.get_file_info([(loc / p).path for p in out.files])
        entries = []
        for p, i in zip(out.files, infos):
            if i.size is None:
                raise FileNotFoundError(f"internal error: committed file {str(loc / p)!r} is missing")
            entries.append({"path": p, "bytes": int(i.size)})
        manifest = dict(out.manifest, files=sorted(entries, key=lambda e: e["path"]),
                        commit={"protocol": PROTOCOL, "run": out.run})
        (loc / MANIFEST).write_bytes((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        (loc / SUCCESS).write_bytes(b"")  # last: the output is complete
    except BaseException:
        _delete(loc, [o for o in _safe_objects(loc) if run_of(o) == out.run])
        raise
    keep = set(out.files)
    losers = [o for o in _safe_objects(loc) if run_of(o) == out.run and o not in keep]
    _delete(loc, losers + [o for o in old if o not in keep])


def _safe_objects(loc: Location) -> list[str]:
    try:
        return _objects(loc)
    except OSError as exc:
        _say(f"could not list {loc} to remove this run's leftovers ({exc})")
        return []


def _delete(loc: Location, rels) -> None:
    for rel in rels:
        try:
            loc.fs.delete_file((loc / rel).path)
        except OSError as exc:  # best effort: readers never see unlisted files
            _say(f"could not delete {loc / rel} ({exc}); readers ignore it, delete it yourself")
