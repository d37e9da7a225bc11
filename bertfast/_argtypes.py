"""argparse types the commands share (`bertfast encode | embed | serve | tune`): each turns a bad value
into argparse's own usage error, which names the option. A leaf: argparse and the dtype parser only."""

from __future__ import annotations

import argparse

from ._dtypes import DTYPE_NAMES, parse_dtype


def dtype_arg(name: str):
    """--dtype: the package's one dtype parser, its message in argparse's error."""
    try:
        return parse_dtype(name)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DTYPE_NAMES)}, got {name!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
