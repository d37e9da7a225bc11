"""Embeddings in smaller types (int8 / uint8 scalar buckets, packed sign bits), with the same buckets as
sentence-transformers' quantize_embeddings."""

from __future__ import annotations

import numpy as np
import torch

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def _float_array(x, name: str) -> np.ndarray:
    """A float numpy array from a tensor or an array (bf16 upcast to fp32, as numpy has no bf16)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        x = (x.float() if x.dtype == torch.bfloat16 else x).cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be float embeddings to quantize, got dtype {x.dtype}")
    return x


def quantization_ranges(calibration: np.ndarray, precision: str = "int8") -> np.ndarray:
    """(2, D) float32: per-dimension min (row 0) and max (row 1) of the (n, D) calibration rows."""
    calibration = _float_array(calibration, "calibration_embeddings")
    if calibration.ndim != 2 or calibration.shape[0] < 2:
        raise ValueError(
            f"precision={precision!r} calibrates its per-dimension ranges on at least two embeddings, got an array "
            f"of shape {calibration.shape}: pass ranges or calibration_embeddings from a representative set"
        )
    return np.stack([calibration.min(axis=0), calibration.max(axis=0)]).astype(np.float32)


def _quantize_scalar(x: np.ndarray, ranges: np.ndarray, signed: bool) -> np.ndarray:
    """255 equal buckets per dimension between ranges[0] and ranges[1]; values outside are clipped.
    uint8 keeps the bucket index 0..255, int8 shifts it to -128..127."""
    lo = ranges[0]  # (D,)
    step = (ranges[1] - lo) / 255  # (D,) float32
    step = np.where(step == 0, np.float32(1), step)  # a constant dimension: every value in bucket 0
    bucket = np.clip(np.floor((x - lo) / step), 0, 255)  # (..., D)
    return (bucket - 128).astype(np.int8) if signed else bucket.astype(np.uint8)


def _quantize_bits(x: np.ndarray, signed: bool) -> np.ndarray:
    """One bit per dimension (x > 0), eight to a byte along the last axis: (..., ceil(D / 8)).
    ubinary keeps the byte 0..255, binary shifts it to -128..127."""
    packed = np.packbits(x > 0, axis=-1)  # (..., ceil(D / 8)) uint8
    return (packed.astype(np.int16) - 128).astype(np.int8) if signed else packed


def quantize_embeddings(
    embeddings: np.ndarray | torch.Tensor | list,
    precision: str,
    *,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Embeddings in a smaller type, with the same buckets as sentence-transformers' quantize_embeddings.

    precision: "float32" (a float32 copy), "int8" / "uint8" (per-dimension scalar quantization into
    255 buckets between a min and a max: `ranges` (2, D) if given, else those of
    `calibration_embeddings`, else those of the embeddings themselves, which needs two or more of
    them), "binary" / "ubinary" (the sign bits packed eight to a byte: D -> ceil(D / 8)).
    A list of (L_i, D) token-embedding matrices is quantized with one set of ranges for all of them.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    scalar = precision in ("int8", "uint8")
    if ranges is not None:
        ranges = np.asarray(ranges, dtype=np.float32)
        if ranges.ndim != 2 or ranges.shape[0] != 2:
            raise ValueError(f"ranges must have shape (2, D): per-dimension min and max, got {ranges.shape}")
    if isinstance(embeddings, (list, tuple)):
        mats = [_float_array(m, "embeddings") for m in embeddings]
        if scalar and ranges is None and mats:
            calibration = calibration_embeddings if calibration_embeddings is not None else np.concatenate(mats)
            ranges = quantization_ranges(calibration, precision)
        return [quantize_embeddings(m, precision, ranges=ranges) for m in mats]
    x = _float_array(embeddings, "embeddings")  # (N, D) or (D,)
    if precision == "float32":
        return x.astype(np.float32)
    if precision in ("binary", "ubinary"):
        return _quantize_bits(x, signed=precision == "binary")
    if ranges is None:
        ranges = quantization_ranges(x if calibration_embeddings is None else calibration_embeddings, precision)
    if ranges.shape[1] != x.shape[-1]:
        raise ValueError(f"ranges cover {ranges.shape[1]} dimensions, the embeddings have {x.shape[-1]}")
    return _quantize_scalar(x, ranges, signed=precision == "int8")
