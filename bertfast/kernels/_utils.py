"""Helpers shared by the kernel files: interpreter detection, input checks, autotune config lists.

Nothing here touches the GPU at import time: `import bertfast.kernels` works on a machine with no
CUDA, with or without the Triton interpreter.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Optional

import torch
import triton

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INT_DTYPES = (torch.int32, torch.int64)

_TRUE = ("1", "true", "yes", "on")


def interpreting() -> bool:
    """True when TRITON_INTERPRET is on in the environment (it must be set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def is_interpreted(kernel) -> bool:
    """Whether a (possibly autotuned / heuristics-wrapped) kernel object runs in the Triton interpreter.

    triton decides this once, when `@triton.jit` decorates the function, so it is the kernel object and
    not the environment of the moment that says whether CPU tensors can be launched.
    """
    seen = 0
    while not isinstance(kernel, triton.runtime.JITFunction) and hasattr(kernel, "fn") and seen < 8:
        if type(kernel).__name__ == "InterpretedFunction":
            return True
        kernel = kernel.fn
        seen += 1
    return type(kernel).__name__ == "InterpretedFunction"


def _fix_interpreter_for_numpy_2_4() -> None:
    """Let the triton 3.6 interpreter run loops with runtime bounds under numpy >= 2.4.

    The interpreter holds every scalar as a 1-element array and converts it with int(array), which
    numpy 2.4 turned into a TypeError: `for k in range(0, K, BLOCK_K)` then fails on the CPU
    (triton-lang/triton#9171, fixed upstream after 3.6). We re-register `tensor.__index__` through
    the interpreter's own patch scope so it is restored with everything else after each launch.
    Applied only under the interpreter and only when this numpy needs it; compiled kernels never see it.
    """
    import numpy as np

    try:
        int(np.zeros(1, dtype=np.int32))
        return  # this numpy still converts 1-element arrays
    except TypeError:
        pass
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - layout of a different triton
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_bertfast_index_fix", False):
        return

    def _patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    _patch_lang_tensor._bertfast_index_fix = True
    interpreter._patch_lang_tensor = _patch_lang_tensor


def _fix_interpreter_fma() -> None:
    """Let the interpreter's tl.fma round once, as the GPU's fused multiply-add does.

    The triton 3.6 interpreter evaluates tl.fma(x, y, z) as x * y + z in the operands' dtype, rounding
    twice. Kernels that rely on the single rounding (attention's exp2(fma(qk, scale, -max)) with logits
    in the thousands) would then be tested on arithmetic they never run on a GPU. fp16 / fp32 operands
    are evaluated in float64 (their product is exact there) and rounded once to their dtype.
    """
    import numpy as np

    try:
        from triton.runtime.interpreter import InterpreterBuilder, TensorHandle
    except ImportError:  # pragma: no cover - layout of a different triton
        return
    original = InterpreterBuilder.create_fma
    if getattr(original, "_bertfast_fma_fix", False):
        return

    def create_fma(self, x, y, z):
        if x.data.dtype not in (np.float16, np.float32):
            return original(self, x, y, z)
        wide = x.data.astype(np.float64) * y.data.astype(np.float64) + z.data.astype(np.float64)
        return TensorHandle(wide.astype(x.data.dtype), z.dtype.scalar)

    create_fma._bertfast_fma_fix = True
    InterpreterBuilder.create_fma = create_fma


if interpreting():
    _fix_interpreter_for_numpy_2_4()
    _fix_interpreter_fma()


def configs(gpu: Sequence[triton.Config], interp: triton.Config) -> list:
    """The autotune list: the GPU configs, or the single small `interp` config under the interpreter."""
    return [interp] if interpreting() else list(gpu)


def bucket(n: int, lo: int = 16) -> int:
    """Round a size up to a power of two (at least `lo`): an autotune key that does not retune per size."""
    # Plain int arithmetic: triton.next_power_of_2 is a constexpr function with a call cost of its own,
    # and this runs on every launch of the model's hot path.
    return max(lo, 1 << (max(int(n), 1) - 1).bit_length())


def smem_bytes(stages: int, elem_bytes: int, *tiles: int) -> int:
    """Rough shared memory a pipelined loop needs: `stages` copies of the tiles (element counts) streamed."""
    return stages * elem_bytes * sum(tiles)


# Hopper has 228 KiB of shared memory per SM (227 KiB usable per block); leave room for the epilogue.
SMEM_LIMIT = 200 * 1024


# --------------------------------------------------------------------------------------------------
# Input checks at the launcher boundary: every message names the argument and what is allowed.
# --------------------------------------------------------------------------------------------------


def check_tensor(
    name: str,
    t,
    ndim: Optional[int] = None,
    dtypes: Optional[Iterable[torch.dtype]] = FLOAT_DTYPES,
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(f"{name} must have dtype in ({allowed}), got {str(t.dtype).replace('torch.', '')}")
    return t


def check_same_dtype(ref_name: str, ref: torch.Tensor, **others: Optional[torch.Tensor]) -> None:
    for name, t in others.items():
        if t is not None and t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}: they must match")


def check_shape(name: str, t: torch.Tensor, shape: Sequence[int]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_devices(kernel, **tensors: Optional[torch.Tensor]) -> torch.device:
    """All tensors on one device, and a device the kernel can run on; returns that device."""
    named = [(n, t) for n, t in tensors.items() if t is not None]
    device = named[0][1].device
    for name, t in named[1:]:
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but {named[0][0]} is on {device}: all must be on one device")
    if device.type != "cuda" and not is_interpreted(kernel):
        raise RuntimeError(
            f"bertfast Triton kernels need CUDA tensors (got {device.type} tensors). To run them on the CPU, "
            "set TRITON_INTERPRET=1 in the environment before triton is first imported."
        )
    return device


def check_out(
    out: Optional[torch.Tensor],
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    **inputs: Optional[torch.Tensor],
):
    """Validate a caller-provided output buffer (shape, dtype, device, no overlap with `inputs`),
    or allocate one with torch.empty (never zero-filled: the kernel writes every element)."""
    if out is None:
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    check_tensor("out", out, ndim=len(shape), dtypes=None)
    check_shape("out", out, shape)
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {out.dtype}")
    if out.device != device:
        raise ValueError(f"out is on {out.device} but the inputs are on {device}")
    if out.dim() == 2 and out.shape[1] > 1 and out.stride(1) != 1:
        raise ValueError(f"out must have unit stride along its last dim, got strides {out.stride()}")
    check_no_overlap(out, **inputs)
    return out


def _byte_span(t: torch.Tensor):
    if t.numel() == 0:
        return None
    start = t.data_ptr()
    extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    return start, start + (extent + 1) * t.element_size()


def check_no_overlap(out: torch.Tensor, **inputs: Optional[torch.Tensor]) -> None:
    """`out` must not share memory with any input: other programs still read the rows being written,
    and the autotuner re-runs a kernel while it benchmarks (in-place would then compound)."""
    out_span = _byte_span(out)
    if out_span is None:
        return
    for name, t in inputs.items():
        if t is None or t.device != out.device:
            continue
        span = _byte_span(t)
        if span is not None and span[0] < out_span[1] and out_span[0] < span[1]:
            raise ValueError(f"out overlaps {name} in memory: in-place is not supported, pass a separate buffer")


INPUT_PRECISIONS = ("ieee", "tf32", "tf32x3")


def check_input_precision(input_precision: Optional[str], dtype: torch.dtype) -> str:
    """The dot-product precision of a launch: None -> "ieee" for fp32 operands (accurate to fp32, as
    the whole-model fp32 check needs), "tf32" otherwise (fp16 / bf16 dots ignore it)."""
    if input_precision is None:
        return "ieee" if dtype == torch.float32 else "tf32"
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision must be None, 'ieee', 'tf32' or 'tf32x3', got {input_precision!r}")
    return input_precision


def check_eps(eps) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    return float(eps)


def layernorm_launch_params(h: int, elem_bytes: int):
    """Deterministic block sizes for the row-wise kernels: (BLOCK_H, BLOCK_T rows per program, num_warps).

    A program covers about 4K elements (several short rows, or one long row), so short hidden sizes
    do not leave tiny programs, and warps grow with the row (8 warps past 2K elements).
    """
    block_h = triton.next_power_of_2(h)
    if block_h * elem_bytes > 64 * 1024:
        raise ValueError(f"hidden size {h} is too large for the single-pass LayerNorm kernels (max 16384 fp32)")
    block_t = max(1, min(16, 4096 // block_h))
    elems = block_t * block_h
    num_warps = 8 if elems >= 8192 or block_h >= 4096 else 4 if elems >= 1024 else 2
    return block_h, block_t, num_warps


# The acceptance rule for a fused op, applied by the measuring code (GEMM choices, kernel configs)
# before it times a candidate: on fresh random inputs, the candidate's max error against an fp32 (or
# wider) reference is at most twice the error of PyTorch's own op in the same dtype, plus this atol.
ACCEPT_ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def acceptable_error(error: float, torch_error: float, dtype: torch.dtype) -> bool:
    """Whether a candidate's max error passes the acceptance rule (False for NaN)."""
    return error <= 2.0 * torch_error + ACCEPT_ATOL[dtype]


def row_config(key: tuple) -> dict:
    """The heuristic config {"BLOCK_T", "num_warps"} of the LayerNorm row kernels for a key (H, dtype
    name); BLOCK_H is always next_power_of_2(H)."""
    H, dtype = key
    _, block_t, num_warps = layernorm_launch_params(H, 4 if dtype == "float32" else 2)
    return {"BLOCK_T": block_t, "num_warps": num_warps}


def gpu_slug(device_name: str) -> str:
    """A file-name form of a GPU's name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return "".join(c if c.isalnum() else "-" for c in device_name).strip("-").lower()


def median_ms(fn_for, copies: int, reps: int, device: torch.device) -> float:
    """Median ms of fn_for(i) over reps calls, operand set i rotating; CUDA events on a GPU, a host
    clock (meaningless as a GPU figure: tests only) on the CPU."""
    for i in range(min(copies, 3)):
        fn_for(i)  # warm-up: compile, autotune-free config resolution, allocator
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for r, (start, end) in enumerate(events):
            start.record()
            fn_for(r % copies)
            end.record()
        torch.cuda.synchronize(device)
        samples = [s.elapsed_time(e) for s, e in events]
    else:
        for r in range(reps):
            t0 = time.perf_counter()
            fn_for(r % copies)
            samples.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(samples)
