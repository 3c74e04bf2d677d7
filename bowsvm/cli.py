"""The ``bowsvm`` console script: one subcommand per stage of :mod:`bowsvm.stages`.

A local stage's subcommand calls its ``run(args)``; a Spark stage's checks its
options here (no JVM start for a mistake) and then runs its job script under
spark-submit with the user's own tokens (:func:`bowsvm.spark.submit_stage`).
"""

from __future__ import annotations

import argparse
import sys

import bowsvm
from bowsvm import stages


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where there is none worth showing (None, False, required)."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _load_stages():
    return sorted((stages.load(name) for name in stages.STAGES), key=lambda m: m.ORDER)


def _spark_run(stage):
    def run(args) -> int:
        from bowsvm.spark import submit_stage

        stage.check_arguments(args)
        return submit_stage(stage, args)

    return run


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
    for mod in _load_stages():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.DESCRIPTION,
                           formatter_class=_HelpFormatter, allow_abbrev=False)
        mod.add_arguments(p)
        if hasattr(mod, "run"):
            p.set_defaults(_run=mod.run)
        else:
            from bowsvm.spark import add_spark_arguments

            add_spark_arguments(p)
            p.set_defaults(_run=_spark_run(mod))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args._tokens = argv[argv.index(args.command) + 1:]  # the stage's own command line
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
