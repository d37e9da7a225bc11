"""gemm_dispatch: every choice computes the same function; the per-GPU choice table and its loader."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
import triton

from bertfast.kernels import gemm, gemm_dispatch, gemm_impls, gemm_splitk
from bertfast.kernels._sources import kernel_hash
from bertfast.kernels.choice_table import _row_key
from bertfast.kernels.gemm_dispatch import CHOICES, ChoiceTable, linear, linear_residual_layernorm
from bertfast.kernels.state import launch_state

from .helpers import (
    CUDA,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)
from .test_kernel_gemm import DEVICE, _check, _operands

HOPPER = CUDA and torch.cuda.get_device_capability()[0] >= 9


def _choices(dtype, M=1):
    """The choices that run (M, dtype) here: TMA takes fp16 / bf16 on Hopper (or the interpreter),
    split-K is offered up to 256 rows."""
    tma = dtype != torch.float32 and (HOPPER or not CUDA)
    return [c for c in CHOICES if (c != "tma" or tma) and (c != "splitk" or M <= 256)]


@pytest.fixture
def choice_table():
    """Installs a ChoiceTable on the test device's launch state; the previous one is restored after."""
    state = launch_state(DEVICE)
    before = state.choices

    def install(table):
        state.set_choice_table(table)
        return table

    yield install
    state.set_choice_table(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("M", [1, 33, 257])
def test_every_choice_computes_the_same_function(dtype, M):
    N, K = 72, 96
    x, weight, bias, residual = _operands(M, N, K, dtype)
    for choice in set(CHOICES) - set(_choices(dtype, M)):
        with pytest.raises((TypeError, ValueError), match=f"choice='{choice}' cannot run"):
            linear(x, weight, bias, choice=choice)
    for choice in _choices(dtype, M):
        for act, res in (("gelu", residual), (None, residual), ("quick_gelu", None), (None, None)):
            out = torch.full((M, N), float("nan"), dtype=dtype, device=DEVICE)
            assert linear(x, weight, bias, act, res, out=out, choice=choice) is out
            _check(x, weight, bias, act, res, out, dtype, f"dispatch {choice} M={M} act={act} res={res is not None}")


def test_cublas_choice_keeps_the_exact_erf_gelu():
    """In fp32 the tanh GELU is ~1e-4 away from the erf one: far outside the bound _check allows."""
    x, weight, bias, _ = _operands(40, 64, 48, torch.float32, with_residual=False)
    x = 3.0 * x
    out = linear(x, weight, bias, "gelu", choice="cublas")
    _check(x, weight, bias, "gelu", None, out, torch.float32, "cublas gelu")


def test_strided_operands_every_choice():
    M, N, K = 33, 80, 48
    x = torch.randn(M, 2 * K + 8, device=DEVICE).half()[:, 8 : 8 + K]
    weight = (torch.randn(N, K + 16, device=DEVICE) / K**0.5).half()[:, :K]
    bias = torch.randn(2 * N, device=DEVICE).half()[::2]
    residual = torch.randn(N, M, device=DEVICE).half().t()
    for choice in _choices(torch.float16):
        buf = torch.full((M, N + 8), float("nan"), dtype=torch.float16, device=DEVICE)
        linear(x, weight, bias, "gelu", residual, out=buf[:, 8:], choice=choice)
        _check(x, weight, bias, "gelu", residual, buf[:, 8:], torch.float16, f"dispatch strided {choice}")
        assert torch.isnan(buf[:, :8]).all(), f"{choice} wrote outside the output view"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("M", [1, 127])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_residual_layernorm_every_choice(dtype, M, with_bias):
    N, K, eps = 96, 64, 1e-12
    x, weight, bias, residual = _operands(M, N, K, dtype, with_bias=with_bias)
    ln_w = (1.0 + 0.1 * torch.randn(N, device=DEVICE)).to(dtype)
    ln_b = (0.1 * torch.randn(N, device=DEVICE)).to(dtype)
    f64 = torch.float64
    y = gemm.linear_ref(x, weight, bias, None, residual, compute_dtype=f64, out_dtype=f64)
    ref = F.layer_norm(y, (N,), ln_w.to(f64), ln_b.to(f64), eps)
    same = F.layer_norm(F.linear(x, weight, bias) + residual, (N,), ln_w, ln_b, eps)  # torch's own, in dtype
    for choice in _choices(dtype):
        out = torch.full((M, N), float("nan"), dtype=dtype, device=DEVICE)
        linear_residual_layernorm(x, weight, bias, residual, ln_w, ln_b, eps, out=out, choice=choice)
        assert_within_torch_error(out, ref, same, dtype, f"linear_residual_layernorm {choice} M={M}")


def test_cublas_layernorm_uses_the_fused_row_pass(monkeypatch):
    """cuBLAS without bias, then one row pass that adds bias and residual (the Triton choices fuse
    them into the GEMM and hand the row pass neither)."""
    calls = []
    real = gemm_impls.launch_layernorm

    def spy(y, bias, residual, *args):
        calls.append((bias is not None, residual is not None))
        return real(y, bias, residual, *args)

    monkeypatch.setattr(gemm_impls, "launch_layernorm", spy)
    x, weight, bias, residual = _operands(9, 32, 48, torch.float32)
    ones, zeros = torch.ones(32, device=DEVICE), torch.zeros(32, device=DEVICE)
    out = linear_residual_layernorm(x, weight, bias, residual, ones, zeros, 1e-5, choice="cublas")
    linear_residual_layernorm(x, weight, bias, residual, ones, zeros, 1e-5, choice="triton")
    assert calls == [(True, True), (False, False)]
    ref = F.layer_norm(F.linear(x.double(), weight.double(), bias.double()) + residual.double(), (32,), eps=1e-5)
    assert (out.double() - ref).abs().max().item() < 1e-4


def test_default_choice_is_cublas_and_decided_once_per_key(monkeypatch, choice_table):
    table = choice_table(ChoiceTable())
    calls = []
    real = gemm_dispatch._preferred
    monkeypatch.setattr(gemm_dispatch, "_preferred", lambda state, key: calls.append(key) or real(state, key))
    spy = []
    cublas = gemm_impls.IMPLEMENTATIONS["cublas"]
    monkeypatch.setattr(cublas, "launch", lambda *a, _real=cublas.launch: spy.append(1) or _real(*a))
    for M in (20, 30, 17):  # one M bucket
        x, weight, bias, residual = _operands(M, 24, 40, torch.float32)
        _check(x, weight, bias, "relu", residual, linear(x, weight, bias, "relu", residual), torch.float32, "default")
    key = (32, 24, 40, "bias+relu+residual", "float32")
    assert calls == [key] and table.choice(key) is None and table.source(key) == "default"
    assert gemm_impls.DEFAULT == "cublas" and spy == [1, 1, 1]


def _row(choice="splitk", m_bucket=16, n=24, k=40, epilogue="bias+gelu", dtype="float32"):
    ms = {c: 1.0 + i for i, c in enumerate(CHOICES)}
    ms[choice] = 0.5
    return {
        "m": m_bucket,
        "m_bucket": m_bucket,
        "n": n,
        "k": k,
        "epilogue": epilogue,
        "dtype": dtype,
        "ms": ms,
        "choice": choice,
        "margin": 1.0,
    }


def test_a_table_row_decides_the_choice(monkeypatch, tmp_path, choice_table):
    path = gemm_dispatch.write_table([_row("splitk")], tmp_path / "gpu-x.json", device_name="GPU X")
    table = choice_table(gemm_dispatch.load_choice_table(path, "GPU X"))
    assert table.invalid_reason is None
    ran = []
    real = gemm_splitk.launch_linear_splitk
    monkeypatch.setattr(gemm_splitk, "launch_linear_splitk", lambda *a, **k: ran.append(1) or real(*a, **k))
    x, weight, bias, _ = _operands(9, 24, 40, torch.float32, with_residual=False)
    _check(x, weight, bias, "gelu", None, linear(x, weight, bias, "gelu"), torch.float32, "table says splitk")
    assert ran == [1] and table.source((16, 24, 40, "bias+gelu", "float32")) == "table"
    linear(x, weight, bias, "relu")  # another epilogue: no row, the heuristic
    assert ran == [1]


def test_a_tables_tma_falls_back_for_operands_tma_cannot_read(monkeypatch, choice_table):
    choice_table(ChoiceTable([_row("tma", dtype="float16", n=24, k=40)]))
    ran = []
    real = gemm.launch_triton_linear
    monkeypatch.setattr(gemm, "launch_triton_linear", lambda *a, **k: ran.append(1) or real(*a, **k))
    x = torch.randn(9, 41, device=DEVICE).half()[:, 1:]  # misaligned base: no descriptors
    _, weight, bias, _ = _operands(9, 24, 40, torch.float16, with_residual=False)
    _check(x, weight, bias, "gelu", None, linear(x, weight, bias, "gelu"), torch.float16, "tma -> triton")
    assert ran == [1]
    with pytest.raises(ValueError, match="(?s)choice='tma'.*16-byte aligned"):
        linear(x, weight, bias, "gelu", choice="tma")
    aligned = torch.randn(9, 40, device=DEVICE).half()
    linear(aligned, weight, bias, "gelu")
    assert ran == [1], "aligned operands run the table's TMA choice"


def _write(tmp_path, data) -> str:
    path = tmp_path / "t.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _valid(**header):
    h = {
        "format": gemm_dispatch.TABLE_FORMAT,
        "device": "GPU X",
        "triton": triton.__version__,
        "kernels": kernel_hash("gemm_choice"),
        **header,
    }
    return {"header": h, "rows": [_row()]}


@pytest.mark.parametrize(
    "header,reason",
    [
        ({"device": "GPU Y"}, "measured on 'GPU Y', running on 'GPU X'"),
        ({"triton": "0.0.1"}, "measured with triton 0.0.1"),
        ({"kernels": "0123456789abcdef"}, "kernel sources changed"),
    ],
)
def test_stale_or_other_gpu_tables_are_ignored(tmp_path, header, reason):
    table = gemm_dispatch.load_choice_table(_write(tmp_path, _valid(**header)), "GPU X")
    assert reason in table.invalid_reason
    assert table.choice((16, 24, 40, "bias+gelu", "float32")) is None and table.rows == []


@pytest.mark.parametrize(
    "data,reason",
    [
        ("{not json", "unreadable"),
        ({"rows": []}, "a 'header' object and a 'rows' list"),
        ({**_valid(), "header": {**_valid()["header"], "format": "v0"}}, "header.format"),
        ({**_valid(), "rows": [{**_row(), "choice": "magic"}]}, "rows[0].choice must be one of"),
        ({**_valid(), "rows": [{**_row(), "m_bucket": 24}]}, "rows[0].m_bucket must be a power of two"),
        ({**_valid(), "rows": [{**_row(), "epilogue": "bias+softmax"}]}, "epilogue must be"),
        ({**_valid(), "rows": [{**_row(), "ms": {"cublas": 1.0}}]}, "has no measured time"),
    ],
)
def test_malformed_tables_are_ignored_with_a_warning(tmp_path, data, reason):
    with pytest.warns(RuntimeWarning, match="malformed GEMM choice table"):
        table = gemm_dispatch.load_choice_table(_write(tmp_path, data), "GPU X")
    assert reason in table.invalid_reason
    assert table.choice((16, 24, 40, "bias+gelu", "float32")) is None and table.rows == []


def test_missing_table_is_quietly_the_heuristic(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = gemm_dispatch.load_choice_table(tmp_path / "none.json", "GPU X")
    assert "no table" in table.invalid_reason and table.rows == []


def test_measure_choices_rows_round_trip_through_a_table(tmp_path):
    """The row format on the CPU (host-clock times, meaningless as figures): every candidate timed,
    the winner the fastest, the margin the runner-up's excess, and the file loads back."""
    shapes = [(5, 40, 64, "bias+gelu"), (17, 48, 32, "bias+residual+layernorm")]
    rows = gemm_dispatch.measure_choices(shapes, torch.float16, DEVICE, reps=2)
    assert [(r["m"], r["n"], r["k"], r["epilogue"]) for r in rows] == shapes
    for r in rows:
        times = {c: t for c, t in r["ms"].items() if t is not None}
        x = torch.empty(r["m"], r["k"], dtype=torch.float16, device=DEVICE)
        assert set(times) == set(gemm_dispatch.candidates(x, torch.empty(r["n"], r["k"], dtype=x.dtype))), r
        ordered = sorted(times.values())
        assert times[r["choice"]] == ordered[0]
        assert r["margin"] == pytest.approx(ordered[1] / ordered[0] - 1.0, abs=1e-3)
        assert all(e is not None and e < 1e-2 for e in r["max_error"].values()), r
    path = gemm_dispatch.write_table(rows, tmp_path / "x.json", device_name="GPU X")
    table = gemm_dispatch.load_choice_table(path, "GPU X")
    assert table.invalid_reason is None
    assert [table.choice(_row_key(r)) for r in rows] == [r["choice"] for r in rows]


def test_epilogue_names_round_trip():
    for bias in (False, True):
        for act in ("", "gelu", "gelu_tanh"):
            for res, ln in ((False, False), (True, False), (True, True)):
                name = gemm_dispatch.epilogue_name(bias, act, res, ln)
                assert gemm_dispatch.parse_epilogue(name) == {
                    "bias": bias,
                    "activation": act or None,
                    "residual": res,
                    "layernorm": ln,
                }


def test_dispatch_bad_inputs():
    x, weight, bias, residual = _operands(8, 16, 32, torch.float32)
    with pytest.raises(ValueError, match="choice must be None or one of"):
        linear(x, weight, bias, choice="cutlass")
    with pytest.raises(TypeError, match="(?s)choice='tma'.*float16 / bfloat16 only"):
        linear(x, weight, bias, choice="tma")
    with pytest.raises(ValueError, match="activation must be None or one of"):
        linear(x, weight, bias, "gelu_new")
    ones = torch.ones(16, device=DEVICE)
    with pytest.raises(ValueError, match="residual must be a tensor"):
        linear_residual_layernorm(x, weight, bias, None, ones, ones, 1e-5)
    with pytest.raises(ValueError, match="ln_weight must have shape"):
        linear_residual_layernorm(x, weight, bias, residual, ones[:8], ones, 1e-5)
    with pytest.raises(ValueError, match="eps must be a positive float"):
        linear_residual_layernorm(x, weight, bias, residual, ones, ones, 0.0)


def test_a_refused_choice_lists_every_implementations_reasons():
    """One error per refusal: its type from the chosen implementation's own reason (TypeError for a
    dtype), its message a line per implementation, as the dispatcher saw them."""
    x, weight, bias, _ = _operands(300, 16, 32, torch.float32, with_residual=False)
    with pytest.raises(TypeError) as refused:
        linear(x, weight, bias, choice="tma")
    lines = str(refused.value).splitlines()
    assert lines[0] == "choice='tma' cannot run this call:"
    assert lines[1:] == [
        "  cublas: supported",
        "  triton: supported",
        "  splitk: splitk is offered for at most 256 rows, got M=300",
        "  tma: tma takes float16 / bfloat16 only, got torch.float32",
    ]
    with pytest.raises(ValueError, match="(?s)choice='splitk' cannot run.*at most 256 rows"):
        linear(x, weight, bias, choice="splitk")
    reasons = gemm_impls.IMPLEMENTATIONS["tma"].not_supported_reasons(x, weight, launch_state(DEVICE))
    assert [r.error for r in reasons] == [TypeError] and all(isinstance(r, str) for r in reasons)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_launchers_equal_the_checked_entry_points(dtype, choice_table):
    """The model's launchers (no checks) take the same choice and compute the same bits as the
    checked entry points, for every choice a table can name."""
    M, N, K = 37, 64, 48
    x, weight, bias, residual = _operands(M, N, K, dtype)
    ln_w, ln_b = torch.randn(N, device=DEVICE).to(dtype), torch.randn(N, device=DEVICE).to(dtype)
    for choice in _choices(dtype, M):
        choice_table(ChoiceTable(invalid_reason="test: one choice", default=choice))
        for act, res in (("gelu", None), (None, residual), ("tanh", residual)):
            checked = linear(x, weight, bias, act, res)
            assert torch.equal(checked, linear(x, weight, bias, act, res, choice=choice)), (choice, act)
            launched = gemm_dispatch.launch_linear(x, weight, bias, act or "", res)
            assert torch.equal(launched, checked), (choice, act)
        for b in (bias, None):
            checked = linear_residual_layernorm(x, weight, b, residual, ln_w, ln_b, 1e-5)
            launched = gemm_dispatch.launch_linear_residual_layernorm(x, weight, b, residual, ln_w, ln_b, 1e-5)
            assert torch.equal(launched, checked), choice
