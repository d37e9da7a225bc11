"""The bench's engines on the CPU: each returns what HF's eager BertModel returns (tiny config)."""

from __future__ import annotations

import pytest
import torch

from .helpers import MODEL_ATOL_FP32, assert_close

bench = pytest.importorskip("bertfast.bench")


def _inputs(batch=3, seq=13, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([seq, 5, 9][:batch])
    ids = torch.randint(500, vocab, (batch, seq), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


# Inductor's own start-up warns that torch.jit.script_method is deprecated: not ours to fix.
@pytest.mark.filterwarnings("ignore:.*script_method.*:DeprecationWarning")
@pytest.mark.parametrize("name", ["hf-sdpa", "bertfast", "torch-compile-cudagraphs"])
def test_engine_matches_hf_eager_on_cpu(name):
    # torch-compile-cudagraphs is torch.compile(mode="reduce-overhead"): no CUDA graphs on the CPU, but
    # it builds and runs Inductor's code, as a user would get it.
    ref_model = bench.build_hf("tiny", "eager")
    fwd = bench.engine(name).build("tiny", ref_model.state_dict(), torch.float32, torch.device("cpu"))
    ids, mask = _inputs()
    with torch.inference_mode():
        ref = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        out = fwd(ids, mask)[mask.bool()]
    assert_close(out, ref, MODEL_ATOL_FP32, what=f"{name} vs HF eager, real positions")


def test_default_engines_are_each_alternatives_strongest():
    # A fair "vs best peer": torch.compile is a default peer on every device, with CUDA graphs on CUDA.
    assert bench.DEFAULT_ENGINES["cpu"] == ["bertfast", "hf-sdpa", "torch-compile"]
    assert bench.DEFAULT_ENGINES["cuda"] == [
        "bertfast",
        "bertfast-graphs",
        "hf-eager",
        "hf-sdpa",
        "torch-compile-cudagraphs",
    ]
    for device, names in bench.DEFAULT_ENGINES.items():
        assert all(device in bench.engine(n).devices for n in names)


def test_engine_table():
    names = [e.name for e in bench.ENGINES]
    assert "torch-compile-cudagraphs" in names and "torch-compile-cudagraphs" in bench.DEFAULT_ENGINES["cuda"]
    assert bench.engine("torch-compile-cudagraphs").cuda_graphs
    assert [bench.is_peer(n) for n in ("bertfast", "bertfast-graphs", "hf-sdpa", "torch-compile")] == [
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="engine"):
        bench.engine("tensorrt")
