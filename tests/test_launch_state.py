"""kernels.state: the per-device launch state (configs, GEMM choices, memo, version) and the config files."""

from __future__ import annotations

import threading

import pytest
import torch

from bertfast.kernels import choice_table, config_file, state
from bertfast.kernels._sources import KERNEL_SOURCES, kernel_hash


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
    assert changed == {"linear", "linear_splitk", "linear_tma", "gemm_choice"}
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernel_hash("softmax")


def test_config_file_round_trip_drops_only_the_kernels_whose_sources_changed(tmp_path):
    kdir = _copy_kernels(tmp_path)
    cache = config_file.TunedConfigCache("GPU X", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    cache.put("linear", (64, 768, 768, True), {"BLOCK_M": 64, "num_warps": 4})
    cache.put("varlen_attention", (128, 64, "tf32", "float16"), {"BLOCK_M": 128, "num_warps": 8})
    path = cache.save()
    assert path.name == "tuned-gpu-x.json"
    again = config_file.TunedConfigCache("GPU X", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    assert again.load() and again.stale_kernels == []
    assert sorted(again.items()) == sorted(cache.items())
    loaded = _fresh()
    assert loaded.load(again) == 2
    assert loaded.config("linear", (64, 768, 768, True), lambda k: {}) == {"BLOCK_M": 64, "num_warps": 4}

    attention = kdir / "attention.py"
    attention.write_text(attention.read_text() + "\n")
    edited = config_file.TunedConfigCache("GPU X", "3.6.0", directory=tmp_path, kernel_dir=kdir)
    assert edited.load() and edited.stale_kernels == ["varlen_attention"]
    assert edited.get("linear", (64, 768, 768, True)) == {"BLOCK_M": 64, "num_warps": 4}
    assert edited.get("varlen_attention", (128, 64, "tf32", "float16")) is None
    other = config_file.TunedConfigCache("GPU X", "3.7.0", directory=tmp_path, kernel_dir=kdir)
    assert not other.load() and other.invalid_reason.startswith("stale cache file") and other.configs == {}
    path.write_text("{ broken")
    assert not again.load() and "unreadable" in again.invalid_reason and again.configs == {}
    with pytest.raises(ValueError, match="kernel must be one of"):
        cache.put("softmax", (1,), {})
