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
    from pybind11.setup_helpers import ParallelCompile, build_ext

    # The sources compile in parallel: BERTFAST_BUILD_JOBS processes, default one per core.
    ParallelCompile("BERTFAST_BUILD_JOBS", default=0).install()
    return build_ext


setup(ext_modules=_extensions(), cmdclass={"build_ext": _build_ext()})
