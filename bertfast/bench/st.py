"""The sentence-transformers workload: MiniLM-L6 as a user runs it, `SentenceTransformer.encode` on
many varied sentences, plain against after `bertfast.optimize(model)`, in one process."""

from __future__ import annotations

import time

import torch

from .device import dtype_name, reason, sync
from .models import minilm_dir
from .workloads import sentences


def load_st(device: torch.device, dtype: torch.dtype):
    """MiniLM-L6 as a SentenceTransformer from minilm_dir(), offline, in `dtype` on `device`."""
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    model = SentenceTransformer(minilm_dir(), device=str(device), local_files_only=True)
    return model.to(dtype).eval()


def _encode_s(model, texts: list[str], batch_size: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Seconds for one encode() of all texts (synchronized), and the embeddings (N, D) in fp32."""
    sync(device)
    t0 = time.perf_counter()
    emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    sync(device)
    return time.perf_counter() - t0, emb.float()


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Max abs difference and the smallest row cosine between two (N, D) embedding matrices."""
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)  # (N,)
    return dict(max_abs_diff=(a - b).abs().max().item(), min_cosine=cos.min().item())


def st_workload(
    device: torch.device, dtype: torch.dtype, n_sentences: int, batch_sizes: list[int], repeats: int = 2
) -> dict:
    """Sentences per second of plain and bertfast-optimized MiniLM at each batch size.

    Each model first encodes everything once (warm-up: kernels compiled, graphs captured), then
    `repeats` timed passes alternate between the two models; the best pass of each is reported.
    """
    if n_sentences < 1 or repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"need n_sentences, repeats and batch sizes >= 1, got {n_sentences}, {repeats}, {batch_sizes}")
    import bertfast

    texts = sentences(n_sentences, seed=4321)
    out = dict(
        model="sentence-transformers all-MiniLM-L6-v2 (real weights)",
        dtype=dtype_name(dtype),
        device=str(device),
        n_sentences=n_sentences,
        repeats=repeats,
        rows=[],
    )
    try:
        plain = load_st(device, dtype)
        fast = bertfast.optimize(load_st(device, dtype))
    except Exception as ex:
        return dict(out, skipped=reason(ex))
    with torch.inference_mode():
        for bs in batch_sizes:
            best = {"plain": float("inf"), "bertfast": float("inf")}
            emb = {}
            for _name, model in (("plain", plain), ("bertfast", fast)):
                _encode_s(model, texts, bs, device)  # warm-up
            for _ in range(repeats):
                for name, model in (("plain", plain), ("bertfast", fast)):
                    s, emb[name] = _encode_s(model, texts, bs, device)
                    best[name] = min(best[name], s)
            row = dict(
                batch_size=bs,
                plain_sent_per_s=n_sentences / best["plain"],
                bertfast_sent_per_s=n_sentences / best["bertfast"],
                speedup=best["plain"] / best["bertfast"],
                **compare(emb["plain"], emb["bertfast"]),
            )
            out["rows"].append(row)
    return out
