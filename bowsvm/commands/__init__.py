"""Subcommands of the ``bowsvm`` console script, one module each (see bowsvm.cli)."""
