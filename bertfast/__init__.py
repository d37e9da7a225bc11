"""bertfast: BERT encoders made fast on NVIDIA GPUs with fused Triton kernels, and a faithful
drop-in BERT everywhere else.

    import bertfast
    model = bertfast.optimize(hf_model)          # patched in place, same outputs, lower latency
    enc = bertfast.BertModel.from_pretrained(d)  # native, no transformers needed

Importing bertfast never touches the GPU and never imports triton.
"""

from .checkpoint import CheckpointError
from .config import BertConfig, ConfigError
from .heads import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from .hf import is_optimized, optimize, restore, set_backend, set_cuda_graphs
from .modeling import BertModel, BertPreTrainedModel
from .runtime import graph_stats, refresh, set_graph_options, warmup

__version__ = "0.1.0"

# Loaded on first use, so `import bertfast` works (and reports clearly) even where the C++
# extension was not built: the error comes when the tokenizer is asked for, naming the cause.
_LAZY = {
    "Tokenizer": ("bertfast.tokenizer", "Tokenizer"),
    "SentenceEncoder": ("bertfast.sentence", "SentenceEncoder"),
    "encode": ("bertfast.encode_cache", "encode"),  # keeps one model per (folder, device, dtype, backend)
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bertfast' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The loaded names and the lazy ones, so that completion and dir() show Tokenizer, encode, ..."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "graph_stats",
    "refresh",
    "set_graph_options",
    "warmup",
    "is_optimized",
    "optimize",
    "restore",
    "set_backend",
    "set_cuda_graphs",
    "BertModel",
    "BertPreTrainedModel",
    "CheckpointError",
    "ConfigError",
    "SentenceEncoder",
    "Tokenizer",
    "encode",
    "__version__",
]
