"""One tolerance table per dtype and one comparison helper that says where and by how much."""

from __future__ import annotations

import contextlib
import zlib

import pytest
import torch

# Where the kernel tests run: CUDA when there is one, else the CPU under the Triton interpreter.
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# The dtypes every kernel is tested in; the interpreter has no real bf16 arithmetic.
KERNEL_DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not CUDA, reason="bf16 needs CUDA")),
]


def count_packed_calls(monkeypatch) -> list:
    """A list that grows by one per packed forward for the rest of the test, so that a test knows
    bertfast computed an output (and not transformers' own forward)."""
    from bertfast import forward

    calls = []
    real = forward.packed_forward  # the eager call of forward.run_packed, where every call is decided

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(forward, "packed_forward", counted)
    return calls


@pytest.fixture(autouse=True)
def seed_from_test_id(request):
    """Autouse where imported: fresh random data per test, reproducible from the test's id."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


# Every tolerance the tests use lives here; docs/design.md ("Numerics", "Testing") says where they come from.

# Absolute slack added to the "2x PyTorch's own error" rule, per dtype: a fused op (or a whole fp16
# model against HF's own fp16 error) may be off by 2x what PyTorch's unfused op is, plus this.
ATOL = {
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}

# fp64 against fp64 (the oracle against HF in double precision): only the last bits may differ.
FP64_ATOL = 1e-10

# Whole model against Hugging Face in fp32, real (non-padding) positions, on the torch path.
MODEL_ATOL_FP32 = 1e-4

# The same on the Triton kernels (the interpreter or a GPU): tiled GEMMs and the online softmax
# sum in another order than cuBLAS/MKL and eager attention, which a two-layer model doubles.
MODEL_ATOL_FP32_TRITON = 2e-4

# One fp32 GEMM or encoder output (unit-variance operands, K <= ~400) computed in another summation
# order: tiles vs BLAS, several threads vs one, a probe's engine vs HF.
SUM_ORDER_ATOL_FP32 = 1e-4

# Sentence embeddings (unit norm) by two fp32 paths of the same model: pooling, batching, sharding.
EMBED_ATOL_FP32 = 1e-6

# A random-weight BERT in fp16 replayed from a CUDA graph against the eager packed forward: the bucket's
# GEMMs have more rows than the batch's, so cuBLAS may pick other kernels (other rounding) per layer.
GRAPH_FP16_ATOL = 2e-2

# A scalar loss against HF's in fp32 (a mean of O(1) terms).
LOSS_ATOL_FP32 = 1e-6

# A parameter's gradient against HF's in fp32, both divided by the largest |HF gradient| of that
# parameter, so that one bound serves layers whose gradients differ by orders of magnitude.
GRAD_ATOL_FP32_RELATIVE = 1e-5


def _describe(actual: torch.Tensor, expected: torch.Tensor, what: str) -> str:
    diff = (actual.double() - expected.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    flat = int(diff.argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    bad = int((diff > 0).sum())
    return (
        f"{what}: max abs error {diff.max().item():.3e} at index {idx}: "
        f"got {actual[idx].item():.6g}, expected {expected[idx].item():.6g} "
        f"({bad} of {diff.numel()} elements differ; shape {tuple(actual.shape)})"
    )


def max_abs_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    diff = (actual.double() - expected.double()).abs()
    if torch.isnan(diff).any():
        return float("inf")
    return diff.max().item() if diff.numel() else 0.0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str = "tensor") -> None:
    """Max abs error <= atol, NaN never passes; on failure the message names the worst element."""
    err = max_abs_err(actual, expected)
    if not err <= atol:
        raise AssertionError(_describe(actual, expected, what) + f" > atol {atol:.1e}")


def assert_within_torch_error(
    actual: torch.Tensor,
    reference: torch.Tensor,
    torch_same_dtype: torch.Tensor,
    dtype: torch.dtype,
    what: str = "tensor",
) -> None:
    """The fused-op rule: error vs the high-precision reference <= 2x PyTorch's own same-dtype error + atol."""
    torch_err = max_abs_err(torch_same_dtype, reference)
    bound = 2.0 * torch_err + ATOL[dtype]
    err = max_abs_err(actual, reference)
    if not err <= bound:
        raise AssertionError(
            _describe(actual, reference, what)
            + f" > bound {bound:.3e} (2 x torch's own {dtype} error {torch_err:.3e} + atol {ATOL[dtype]:.0e})"
        )


def compare_outputs(ours, ref, mask: torch.Tensor, what: str, atol: float = MODEL_ATOL_FP32) -> None:
    """Every tensor field of two HF-style outputs, padded positions excluded where there is a sequence axis."""
    keys = [k for k in ref.keys() if k != "attentions"]
    assert list(ours.keys()) == keys, f"{what}: fields {list(ours.keys())} != HF's {keys}"
    flat_mask = mask.reshape(-1, mask.shape[-1]).bool()  # (B, S); multiple choice flattens (B, C, S)
    for key in keys:
        a, b = ours[key], ref[key]
        if key == "hidden_states":
            assert len(a) == len(b), f"{what}: {len(a)} hidden states, HF has {len(b)}"
            pairs = list(zip(a, b))
        else:
            pairs = [(a, b)]
        for i, (x, y) in enumerate(pairs):
            assert x.shape == y.shape, f"{what}.{key}: shape {tuple(x.shape)} != HF {tuple(y.shape)}"
            if x.dim() >= 2 and tuple(x.shape[:2]) == tuple(flat_mask.shape):  # (B, S, ...): real positions
                x, y = x[flat_mask], y[flat_mask]
            assert_close(x, y, atol, f"{what}.{key}[{i}]")


@contextlib.contextmanager
def without_known_configs(kernel: str):
    """The launch state of DEVICE with no known config for `kernel` (its heuristic answers), the known
    ones put back after: the state is process-wide, and a test's put_config must not leak."""
    from bertfast.kernels.state import launch_state

    state = launch_state(DEVICE)
    saved = state.known_configs(kernel)
    state.clear_configs(kernel)
    try:
        yield state
    finally:
        state.clear_configs(kernel)
        for key, config in saved.items():
            state.put_config(kernel, key, config)
