"""Which devices the server runs on: one model, and one worker thread, per device."""

from __future__ import annotations


def plan_devices(device: str, cuda_count: int) -> list[str]:
    """The torch device names to load one model each on.

    device: "cpu"; "cuda" (every visible GPU); "cuda:N"; or a comma list "cuda:0,cuda:2".
    cuda_count: how many CUDA devices are visible (torch.cuda.device_count(), passed in so that the
    plan is testable without a GPU).
    """
    if not isinstance(device, str) or not device.strip():
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a comma list of 'cuda:N', got {device!r}")
    names = [d.strip() for d in device.split(",")]
    if names == ["cpu"]:
        return ["cpu"]
    if names == ["cuda"]:
        if cuda_count < 1:
            raise ValueError("device='cuda', but no CUDA device is visible")
        return [f"cuda:{i}" for i in range(cuda_count)]
    plan: list[str] = []
    for name in names:
        kind, _, index = name.partition(":")
        if kind != "cuda" or not index.isdigit():
            raise ValueError(f"device: {name!r} is not 'cpu', 'cuda' or 'cuda:N' (N a GPU index)")
        if int(index) >= cuda_count:
            raise ValueError(f"device: {name!r} is not visible ({cuda_count} CUDA device(s): cuda:0..)")
        if f"cuda:{int(index)}" in plan:
            raise ValueError(f"device: {name!r} is named twice")
        plan.append(f"cuda:{int(index)}")
    return plan
