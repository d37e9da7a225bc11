"""kernels.state: the per-device launch state (configs, GEMM choices, memo, version) and the config files."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from bertfast.kernels import choice_table, config_file, state
from bertfast.kernels._sources import KERNEL_SOURCES, kernel_hash

from .helpers import SUM_ORDER_ATOL_FP32, assert_close


def _fresh(device="cpu") -> state.LaunchState:
    return state.LaunchState(torch.device(device))


def test_config_is_the_heuristic_once_per_key_until_a_put_replaces_it():
    s = _fresh()
    calls = []

    def heuristic(key):
        calls.append(key)
        return {"BLOCK": key[0] * 2, "num_warps": 4}

    assert s.config("linear", (16, 3), heuristic) == {"BLOCK": 32, "num_warps": 4}
    assert s.config("linear", (16, 3), heuristic) is s.config("linear", (16, 3), heuristic)
    assert calls == [(16, 3)] and s.config_source("linear", (16, 3)) == "heuristic" and s.version == 0
    s.put_config("linear", (16, 3), {"BLOCK": 64, "num_warps": 8})
    assert s.version == 1 and s.config_source("linear", (16, 3)) == "table"
    assert s.config("linear", (16, 3), heuristic) == {"BLOCK": 64, "num_warps": 8} and calls == [(16, 3)]
    assert s.config("linear_tma", (16, 3), heuristic) == {"BLOCK": 32, "num_warps": 4}, "configs are per kernel"
    assert s.known_configs() == {"linear": {(16, 3): {"BLOCK": 64, "num_warps": 8}}}
    s.clear_configs("linear")
    assert s.version == 2 and s.config("linear", (16, 3), heuristic)["BLOCK"] == 32


def test_memo_is_built_once_and_dropped_by_every_change():
    s = _fresh()
    builds = []
    assert s.memo("x", 5, lambda k: builds.append(k) or k + 1) == 6
    assert s.memo("x", 5, lambda k: builds.append(k) or k + 1) == 6 and builds == [5]
    assert s.memo("none", 1, lambda k: builds.append("none")) is None
    assert s.memo("none", 1, lambda k: builds.append("again")) is None and builds == [5, "none"], "None is memoised"
    builds.remove("none")
    s.set_choice_table(choice_table.ChoiceTable())
    assert s.version == 1
    assert s.memo("x", 5, lambda k: builds.append(k) or k + 2) == 7 and builds == [5, 5]


def test_autotuning_is_on_for_every_thread_of_the_device_and_nests():
    s = _fresh()
    seen = []
    with s.autotuning():
        with s.autotuning():
            pass
        t = threading.Thread(target=lambda: seen.append(s.autotune))
        t.start()
        t.join()
        assert s.autotune
    assert seen == [True] and not s.autotune
    assert not _fresh().autotune, "another device's state is not tuning"


def test_launch_state_is_one_object_per_device_and_set_choice_table_bumps_it():
    cpu = state.launch_state(torch.device("cpu"))
    assert state.launch_state("cpu") is cpu and cpu.device == torch.device("cpu")
    assert "no tables for cpu" in cpu.choices.invalid_reason
    before, old = cpu.version, cpu.choices
    table = choice_table.ChoiceTable()
    try:
        state.set_choice_table("cpu", table)
        assert cpu.choices is table and cpu.version == before + 1
    finally:
        state.set_choice_table("cpu", old)


def _copy_kernels(tmp_path):
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    for f in config_file.TABLE_DIR.parent.glob("*.py"):
        (kdir / f.name).write_bytes(f.read_bytes())
    return kdir


def test_kernel_hash_is_per_kernel(tmp_path):
    kdir = _copy_kernels(tmp_path)
    before = {k: kernel_hash(k, kdir) for k in KERNEL_SOURCES}
    assert before == {k: kernel_hash(k) for k in KERNEL_SOURCES}, "a copy hashes the same"
    assert all(len(h) == 16 for h in before.values())
    attention = kdir / "attention.py"
    attention.write_text(attention.read_text().replace("def _", "def  _", 1))
    after = {k: kernel_hash(k, kdir) for k in KERNEL_SOURCES}
    assert [k for k in KERNEL_SOURCES if after[k] != before[k]] == ["varlen_attention"]
    gemm = kdir / "gemm.py"
    gemm.write_text(gemm.read_text() + "\n")
    changed = {k for k in KERNEL_SOURCES if kernel_hash(k, kdir) != after[k]}
    assert changed == {"triton_linear", "linear_splitk", "linear_tma", "gemm_choice"}
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernel_hash("softmax")


def test_config_file_round_trip_drops_only_the_kernels_whose_sources_changed(tmp_path):
    kdir = _copy_kernels(tmp_path)
    cache = config_file.TunedConfigCache("GPU X", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    assert not cache.load() and cache.invalid_reason == "no cache file"
    cache.put("triton_linear", (64, 768, 768, True), {"BLOCK_M": 64, "num_warps": 4})
    cache.put("varlen_attention", (128, 64, "tf32", "float16"), {"BLOCK_M": 128, "num_warps": 8})
    path = cache.save()
    assert path.name == "tuned-gpu-x.json"
    again = config_file.TunedConfigCache("GPU X", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    assert again.load() and again.stale_kernels == []
    assert sorted(again.items()) == sorted(cache.items())
    loaded = _fresh()
    assert loaded.load(again) == 2
    assert loaded.config("triton_linear", (64, 768, 768, True), lambda k: {}) == {"BLOCK_M": 64, "num_warps": 4}

    attention = kdir / "attention.py"
    attention.write_text(attention.read_text() + "\n")
    edited = config_file.TunedConfigCache("GPU X", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    assert edited.load() and edited.stale_kernels == ["varlen_attention"]
    assert edited.get("triton_linear", (64, 768, 768, True)) == {"BLOCK_M": 64, "num_warps": 4}
    assert edited.get("varlen_attention", (128, 64, "tf32", "float16")) is None
    other = config_file.TunedConfigCache("GPU X", "3.7.0", directory=tmp_path, kernel_dir=kdir)
    assert not other.load() and other.invalid_reason.startswith("stale cache file") and other.configs == {}
    other_gpu = config_file.TunedConfigCache("GPU Y", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    assert not other_gpu.load() and other_gpu.path != path
    path.write_text(json.dumps({"header": again.header}))
    assert not again.load() and "malformed" in again.invalid_reason
    path.write_text("{ broken")
    assert not again.load() and "unreadable" in again.invalid_reason and again.configs == {}
    with pytest.raises(ValueError, match="kernel must be one of"):
        cache.put("softmax", (1,), {})


def test_measure_configs_dry_run_on_the_interpreter(tmp_path):
    """tuning.measure_configs on tiny shapes (host timings: they exercise the code, nothing more):
    one entry per kernel and key the shapes reach, each a config its kernel accepts, written in the
    config-file format that a launch state loads back."""
    from bertfast import ops, tuning
    from bertfast.kernels import gemm

    if not ops.interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 (the kernels run on CPU tensors)")
    shapes = {"gemm": [(5, 40, 64, "bias+gelu"), (17, 48, 32, "bias+residual+layernorm")], "attention": [(16, 32)]}
    path = tmp_path / "configs-cpu-x.json"
    data = tuning.measure_configs("cpu", shapes, reps=2, dtypes=["float32"], path=path, device_name="CPU X")
    assert data["header"] == {"format": config_file.FORMAT, "device": "CPU X", "triton": data["header"]["triton"]}
    counts = {k: len(v["configs"]) for k, v in data["kernels"].items()}
    assert counts == {
        "triton_linear": 2,
        "linear_splitk": 2,
        "bias_activation": 1,
        "layernorm": 1,
        "embed_layernorm": 1,
        "varlen_attention": 1,
    }, "fp32: no TMA"
    assert all(v["hash"] == kernel_hash(k) for k, v in data["kernels"].items())
    linear_key = json.dumps(list(gemm.config_key(5, 40, 64, True, False, "gelu", "ieee", torch.float32)))
    winner = data["kernels"]["triton_linear"]["configs"][linear_key]
    x, w = torch.randn(5, 64), torch.randn(40, 64)
    out = gemm.triton_linear(x, w, None, "gelu", config=winner)
    assert_close(out, gemm.linear_ref(x, w, None, "gelu"), SUM_ORDER_ATOL_FP32, "the measured winner")
    cache = config_file.TunedConfigCache("CPU X", data["header"]["triton"], directory=tmp_path, prefix="configs")
    assert cache.path == path and cache.load() and cache.as_dict() == data
