"""The ``bowsvm`` console script.

Each subcommand lives in its own module under :mod:`bowsvm.commands` and
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are discovered, so a subcommand exists exactly when its capability does.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import bowsvm
from bowsvm import commands


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where there is none worth showing (None, False, required)."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _load_commands():
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"bowsvm.commands.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 100))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bowsvm",
        description=(
            "Large-scale image classification after Lin et al., CVPR 2011: "
            "prepare images, learn codebooks, extract dense HOG/LBP features with "
            "LCC or super-vector coding, train ASGD one-vs-all SVMs, score, fuse "
            "and report. Spark stages run through spark-submit (--master local[*] "
            "by default)."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bowsvm {bowsvm.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _load_commands():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=_HelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"bowsvm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bowsvm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
