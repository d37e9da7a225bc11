"""MPNet's (T5's) bidirectional bucketing of relative positions, in plain torch: the torch path's bias
(bertfast.ops.attention) and the attention kernel's reference (kernels.attention) share this one copy.

A leaf module: imports torch only, so the kernels (which import no other part of bertfast) may use it.
"""

from __future__ import annotations

import math

import torch

# How far MPNet's buckets reach (transformers' compute_position_bias default); one name for every caller.
MAX_DISTANCE = 128


def relative_position_bucket(
    rel: torch.Tensor, num_buckets: int = 32, max_distance: int = MAX_DISTANCE
) -> torch.Tensor:
    """The bucket of rel = key position - query position (an integer tensor), in float32 as the model was
    trained: each direction has num_buckets // 2 buckets, exact below a quarter of num_buckets, then
    log(n / exact) / log(max_distance / exact) * (half - exact) spaced up to max_distance."""
    half = num_buckets // 2
    exact = half // 2
    n = rel.abs()
    far = n.clamp(min=exact).float() / exact
    large = exact + (torch.log(far) / math.log(max_distance / exact) * (half - exact)).long()
    bucket = torch.where(n < exact, n, large.clamp(max=half - 1))
    return torch.where(rel > 0, bucket + half, bucket)
