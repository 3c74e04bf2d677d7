"""The ending every benchmark script shares: its JSON summary on stdout and, with
``--out``, in that file as well."""

from __future__ import annotations

import json
from pathlib import Path


def emit(summary, out=None, **dumps) -> str:
    """Print ``summary`` as one JSON line (``dumps``: :func:`json.dumps` options) and,
    if ``out`` is given, write the same line to that file; returns the line."""
    text = json.dumps(summary, **dumps)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return text
