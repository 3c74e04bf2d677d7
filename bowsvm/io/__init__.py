"""Shared I/O: atomic output folders, manifests, and shard formats.

See docs/FORMATS.md for the on-disk layout of every stage's output.
"""

from bowsvm.io.atomic import atomic_output_dir, check_complete, is_complete
from bowsvm.io.manifest import (
    content_hash,
    read_manifest,
    require_manifest_match,
    write_json_atomic,
)

__all__ = [
    "atomic_output_dir",
    "check_complete",
    "content_hash",
    "is_complete",
    "read_manifest",
    "require_manifest_match",
    "write_json_atomic",
]
