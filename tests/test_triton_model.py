"""The whole model on the Triton path (the interpreter on CPU, compiled on a GPU) against HF fp32."""

from __future__ import annotations

import copy

import pytest
import torch

import bertfast
from bertfast import ops

from .helpers import ATOL, MODEL_ATOL_FP32_TRITON, assert_close
from .models import hf_model, ragged_batch

transformers = pytest.importorskip("transformers")
pytest.importorskip("triton")

if not (torch.cuda.is_available() or ops.interpreter_on()):
    pytest.skip("the Triton path needs a GPU or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture()
def kernel_calls(monkeypatch):
    """Counts the calls of every kernel entry point the model path uses, and which GEMM implementation
    ran: proof the kernels ran."""
    kernels = ops._kernels()
    dispatch = kernels.gemm_dispatch
    counts: dict[str, int] = {}

    def count(owner, name, key=None):
        real = getattr(owner, name)

        def counted(*args, _real=real, **kwargs):
            k = key(args) if key else name
            counts[k] = counts.get(k, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    launchers = ["launch_embed_layernorm", "launch_varlen_attention"]
    # the model's launchers: its boundary checked the call once
    for name in [*launchers, "launch_linear", "launch_linear_residual_layernorm"]:
        owner = dispatch if "linear" in name else kernels
        count(owner, name, key=lambda args, _n=name: _n.removeprefix("launch_"))
    for impl in kernels.gemm_impls.IMPLEMENTATIONS.values():
        count(impl, "launch", key=lambda args, _n=impl.name: f"gemm:{_n}")
    return counts


@pytest.fixture(params=["cublas", "triton", "splitk"])
def gemm_choice(request):
    """Every GEMM of the model through one implementation (a choice table whose heuristic says so)."""
    state = ops._kernels().state.launch_state(DEVICE)
    before = state.choices
    state.set_choice_table(ops._kernels().gemm_dispatch.ChoiceTable(default=request.param))
    yield request.param
    state.set_choice_table(before)


CONFIGS = [
    dict(hidden_size=48, num_attention_heads=3, intermediate_size=80, hidden_act="gelu"),  # head_dim 16
    dict(hidden_size=64, num_attention_heads=2, intermediate_size=96, hidden_act="gelu_new"),  # head_dim 32
    dict(hidden_size=96, num_attention_heads=3, intermediate_size=64, hidden_act="relu", num_hidden_layers=1),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["h48-d16-gelu", "h64-d32-gelu_new", "h96-d32-relu"])
def test_triton_model_matches_hf_fp32(cfg, gemm_choice, kernel_calls):
    seed = CONFIGS.index(cfg) + 40
    ref = hf_model("BertModel", seed=seed, **cfg).to(DEVICE)
    model = bertfast.optimize(copy.deepcopy(ref), backend="triton")
    ids, mask, types = (t.to(DEVICE) for t in ragged_batch(4, 37, ref.config.vocab_size, seed))
    with torch.no_grad():
        a = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        b = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    m = mask.bool()
    assert_close(a.last_hidden_state[m], b.last_hidden_state[m], MODEL_ATOL_FP32_TRITON, "last_hidden_state")
    assert_close(a.pooler_output, b.pooler_output, MODEL_ATOL_FP32_TRITON, "pooler_output")
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        assert_close(x[m], y[m], MODEL_ATOL_FP32_TRITON, f"hidden_states[{i}]")
    layers = ref.config.num_hidden_layers
    gemms = 4 * layers + 1  # QKV, out-proj, FFN1, FFN2 per layer; the pooler
    # cuBLAS runs linear_residual_layernorm as mm + one row pass, not through its plain launch.
    runs = gemms if gemm_choice != "cublas" else gemms - 2 * layers
    assert kernel_calls == {
        "embed_layernorm": 1,
        "linear": 2 * layers + 1,  # QKV, FFN1; the pooler
        "linear_residual_layernorm": 2 * layers,  # out-proj and FFN2 with their residual + LayerNorm
        "varlen_attention": layers,
        f"gemm:{gemm_choice}": runs,
    }


def test_native_packed_forward_on_triton_matches_torch_path(kernel_calls):
    cfg = bertfast.BertConfig.from_hf(hf_model("BertModel", seed=50).config)
    model = bertfast.BertModel(cfg).to(DEVICE).eval()
    lengths = [1, 70 if cfg.max_position_embeddings >= 70 else 60, 5, 33]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    toks = torch.randint(0, cfg.vocab_size, (int(cu[-1]),), device=DEVICE)
    with torch.no_grad():
        fast = model.set_backend("triton").forward_packed(toks, cu)
        slow = model.set_backend("torch").forward_packed(toks, cu)
    assert kernel_calls["varlen_attention"] == cfg.num_hidden_layers
    assert_close(fast.last_hidden_state, slow.last_hidden_state, MODEL_ATOL_FP32_TRITON, "packed states")
    assert_close(fast.pooler_output, slow.pooler_output, MODEL_ATOL_FP32_TRITON, "packed pooled")


def test_training_uses_the_torch_path(kernel_calls):
    ref = hf_model("BertForSequenceClassification", seed=51).to(DEVICE)
    model = bertfast.optimize(copy.deepcopy(ref), backend="triton").train()
    ids, mask, _ = (t.to(DEVICE) for t in ragged_batch(2, 9, ref.config.vocab_size, 51))
    loss = model(ids, attention_mask=mask, labels=torch.tensor([0, 1], device=DEVICE)).loss
    loss.backward()
    assert kernel_calls == {}, "kernels are inference-only: a graph for autograd must come from torch ops"
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_fp16_model_error_within_twice_hf_fp16_error():
    ref32 = hf_model("BertModel", seed=52, hidden_size=64, num_attention_heads=2, intermediate_size=96).to(DEVICE)
    ref16 = copy.deepcopy(ref32).half()
    model = bertfast.optimize(copy.deepcopy(ref32).half(), backend="triton")
    ids, mask, types = (t.to(DEVICE) for t in ragged_batch(3, 29, ref32.config.vocab_size, 52))
    with torch.no_grad():
        gold = ref32(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        hf16 = ref16(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        ours = model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = mask.bool()
    hf_err = (hf16[m].float() - gold[m]).abs().max().item()
    our_err = (ours[m].float() - gold[m]).abs().max().item()
    assert our_err <= 2 * hf_err + ATOL[torch.float16], f"fp16 error {our_err:.3e} vs HF's own fp16 error {hf_err:.3e}"
