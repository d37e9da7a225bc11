"""The runtime probes on the CPU: threads against single-threaded results (the torch path), the
GPU-only probes answering "needs CUDA", and one probe run the way the report runs it, in a fresh
Python process."""

from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("bertfast.bench")
from bertfast.bench import runtime  # noqa: E402

from .helpers import SUM_ORDER_ATOL_FP32

CPU = torch.device("cpu")


def test_threads_probe_finds_no_mismatch_on_the_torch_path():
    got = runtime.probe_threads("tiny", torch.float32, CPU, threads=4, calls=160)
    assert got["threads"] == 4 and got["calls"] == 160 and got["failures"] == []
    assert got["mismatches"] == 0 and got["max_abs_err"] <= got["tolerance"] == SUM_ORDER_ATOL_FP32


class _SharedBufferModel(torch.nn.Module):
    """A model with the defect the probe hunts: one buffer shared by concurrent calls."""

    def __init__(self):
        super().__init__()
        self.config = type("C", (), {"max_position_embeddings": 128, "vocab_size": 1000})()
        self.emb = torch.nn.Embedding(1000, 8)
        self.last_ids = None

    def forward(self, input_ids, attention_mask):
        self.last_ids = input_ids
        time.sleep(0.002)  # another thread's call lands here
        return type("Out", (), {"last_hidden_state": self.emb(self.last_ids)})()


def test_threads_probe_catches_a_shared_buffer():
    got = runtime.probe_threads("tiny", torch.float32, CPU, threads=4, calls=40, model=_SharedBufferModel())
    assert got["calls"] == 40 and got["mismatches"] > 0


@pytest.mark.parametrize("probe", runtime.GPU_ONLY)
def test_gpu_only_probes_skip_on_cpu(probe):
    assert runtime.run_probe(probe, "tiny", torch.float32, CPU) == {"skipped": "needs CUDA"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="probe"):
        runtime.run_probe("warp_speed", "tiny", torch.float32, CPU)
    with pytest.raises(ValueError, match="threads"):
        runtime.probe_threads("tiny", torch.float32, CPU, threads=4, calls=2)


def test_runtime_section_runs_threads_in_a_fresh_process():
    rt = runtime.runtime_section(
        "cpu", "float32", model_name="tiny", replay_model="tiny", timeout_s=240, probes=("cold_start", "threads")
    )
    assert rt["cold_start_s"] == {"skipped": "needs CUDA"}
    assert rt["threads_ok"] == {
        "threads": 4,
        "streams": 0,  # a stream per thread on CUDA only
        "calls": 160,
        "mismatches": 0,
        "max_abs_err": rt["probes"]["threads"]["max_abs_err"],
    }
    assert rt["probes"]["threads"]["probe"] == "threads" and rt["probes"]["threads"]["wall_s"] > 0
    assert rt["probes"]["threads"]["max_abs_err"] <= SUM_ORDER_ATOL_FP32
    assert rt["new_bucket_s"] == {"skipped": "not run"} and "host_us_per_call" in rt["method"]


def test_runtime_budget_is_shared_by_the_probes():
    with pytest.raises(ValueError, match="budget_s"):
        runtime.runtime_section("cpu", "float32", model_name="tiny", replay_model="tiny", budget_s=0)
    # Under 5 s left: the probe is reported as not run instead of being started and cut.
    rt = runtime.runtime_section(
        "cpu", "float32", model_name="tiny", replay_model="tiny", probes=("threads",), budget_s=4
    )
    assert rt["threads_ok"] == {"skipped": "not run: the runtime budget of 4 s was spent"}
    assert rt["probes"]["threads"]["wall_s"] is None
