"""Kept so that `bertfast/cli.py` (`from . import bench_cli; bench_cli.register(sub)`) and
`python -m bertfast.bench_cli bench ...` keep working: the subcommand lives in bertfast.bench.cli."""

import sys

from .bench.cli import cmd_bench, main, options_from_args, register

__all__ = ["cmd_bench", "main", "options_from_args", "register"]

if __name__ == "__main__":
    sys.exit(main())
