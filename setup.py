"""Builds bertfast's C++ extension (the WordPiece tokenizer in csrc/); metadata lives in pyproject.toml."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _extensions():
    sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.cpp"))
    if not sources:
        return []
    from pybind11.setup_helpers import Pybind11Extension

    return [
        Pybind11Extension(
            "bertfast._wordpiece",
            sources,
            include_dirs=["csrc"],
            depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.h")),
            cxx_std=17,
            extra_compile_args=["-O3", "-fvisibility=hidden"],
            extra_link_args=["-pthread"],
        )
    ]


def _build_ext():
    from pybind11.setup_helpers import build_ext

    return build_ext


setup(ext_modules=_extensions(), cmdclass={"build_ext": _build_ext()})
