"""bertfast: BERT encoders made fast on NVIDIA GPUs with fused Triton kernels, and a faithful
drop-in BERT everywhere else.

    import bertfast
    model = bertfast.optimize(hf_model)          # patched in place, same outputs, lower latency
    enc = bertfast.BertModel.from_pretrained(d)  # native, no transformers needed

Importing bertfast never touches the GPU and never imports triton.
"""

from .config import BertConfig, ConfigError
from .checkpoint import CheckpointError
from .modeling import BertModel, BertPreTrainedModel
from .heads import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from .hf import is_optimized, optimize, restore

__version__ = "0.1.0"

__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "is_optimized",
    "optimize",
    "restore",
    "BertModel",
    "BertPreTrainedModel",
    "CheckpointError",
    "ConfigError",
    "__version__",
]
