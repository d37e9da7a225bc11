"""The models behind the routes: what kind a folder holds, how its texts become token ids, and the one
packed forward per batch that each device's worker runs.

An embedding model is a `SentenceEncoder` (its pooling and Normalize as the folder says); a reranker
is a sentence-transformers `CrossEncoder` folder (a BertForSequenceClassification with one label),
scored on the packed path with the CrossEncoder's activation. The forward adds nothing to what
`SentenceEncoder.encode` and `CrossEncoder.predict` compute; it only takes token ids the server has
already made, so that nothing is tokenized twice.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..heads import BertForSequenceClassification
from ..sentence import SentenceEncoder, default_model_dir
from ..tokenizer import Tokenizer

EMBEDDING = "embedding"
RERANKER = "reranker"

# The activations a CrossEncoder folder names (config_sentence_transformers.json), as torch functions.
_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.Tanh": torch.tanh,
}


class InputTooLong(ValueError):
    """A text (or pair) longer than the model allows, on a route that does not truncate."""

    def __init__(self, index: int, length: int, limit: int):
        # A text is tokenized only one token past the limit: `length` is a lower bound, not its length.
        super().__init__(f"is longer than the model's {limit} tokens")
        self.index, self.length, self.limit = index, length, limit


@dataclass(frozen=True)
class Encoded:
    """One text (or pair) as token ids, the length the batcher budgets by."""

    ids: np.ndarray  # (L,) int64, [CLS] and [SEP] included
    types: np.ndarray  # (L,) int64


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _cross_encoder_activation(model_dir: str) -> str | None:
    """The activation a CrossEncoder folder names, or None when the folder is no CrossEncoder."""
    st = _read_json(os.path.join(model_dir, "config_sentence_transformers.json"))
    if st.get("model_type") == "CrossEncoder":
        return st.get("activation_fn") or "torch.nn.modules.activation.Sigmoid"
    legacy = _read_json(os.path.join(model_dir, "config.json")).get("sentence_transformers")
    if isinstance(legacy, dict) and "activation_fn" in legacy:  # CrossEncoder folders before v4
        return legacy["activation_fn"]
    return None


def model_kind(model_dir: str) -> str:
    """EMBEDDING or RERANKER, from the folder's sentence-transformers files."""
    return RERANKER if _cross_encoder_activation(model_dir) is not None else EMBEDDING


def _on(device: torch.device):
    """Make `device` current on the worker's thread: kernels launch on the current CUDA device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _packed(items: Sequence[Encoded], device: torch.device):
    """Flat ids (T,), types (T,), cu_seqlens (B + 1,) int32 on `device`, and the longest length."""
    lengths = np.fromiter((len(e.ids) for e in items), dtype=np.int32, count=len(items))
    cu = np.zeros(len(items) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    ids = torch.from_numpy(np.concatenate([e.ids for e in items])).to(device)  # (T,)
    types = torch.from_numpy(np.concatenate([e.types for e in items])).to(device)  # (T,)
    return ids, types, torch.from_numpy(cu).to(device), int(lengths.max())


class _Model(abc.ABC):
    """What both kinds share: a tokenizer, a length limit, one model per device."""

    kind: str
    tokenizer: Tokenizer
    max_length: int
    vocab_size: int

    def __init__(self, name: str, devices: list[str], dtype: torch.dtype):
        self.name, self.devices, self.dtype = name, devices, dtype

    def _check_lengths(self, packed: dict, truncate: bool) -> list[Encoded]:
        cu = packed["cu_seqlens"]
        lengths = np.diff(cu)
        if not truncate:
            for i in np.flatnonzero(lengths > self.max_length)[:1]:
                raise InputTooLong(int(i), int(lengths[i]), self.max_length)
        ids, types = packed["input_ids"], packed["token_type_ids"]
        return [Encoded(ids[a:b], types[a:b]) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())]

    def _max_length_to_tokenize(self, truncate: bool) -> int:
        # Without truncation one token past the limit is enough to see that a text is too long.
        return self.max_length if truncate else self.max_length + 1

    def from_ids(self, rows: Sequence[Sequence[int]]) -> list[Encoded]:
        """Token id lists as the tokenizer makes them ([CLS] ... [SEP]), checked by the route."""
        return [Encoded(np.asarray(r, dtype=np.int64), np.zeros(len(r), dtype=np.int64)) for r in rows]

    def warmup_items(self) -> list[list[Encoded]]:
        """Batches the workers run once before traffic: one short text, and four cut at the length limit.
        Real texts through the model's own tokenizer, so every family's special tokens are right."""
        long = " ".join(["warm"] * (2 * self.max_length))
        return [self.warmup_batch(["warm up"]), self.warmup_batch([long] * 4)]

    @abc.abstractmethod
    def warmup_batch(self, texts: list[str]) -> list[Encoded]:
        """`texts` tokenized as this kind of model's requests are, cut at the length limit."""


class EmbeddingModel(_Model):
    kind = EMBEDDING

    def __init__(self, model_dir: str, name: str, devices: list[str], dtype, backend: str):
        super().__init__(name, devices, dtype)
        self.encoders = [
            SentenceEncoder.from_pretrained(model_dir, device=d, dtype=dtype, backend=backend) for d in devices
        ]
        first = self.encoders[0]
        self.tokenizer, self.max_length = first.tokenizer, first.max_length
        self.dimension = first.dimension
        self.vocab_size = first.model.config.vocab_size
        self.dtype = first.dtype

    def warmup_batch(self, texts: list[str]) -> list[Encoded]:
        return self.tokenize(texts, truncate=True)

    def tokenize(self, inputs: list[str | list[int]], truncate: bool) -> list[Encoded]:
        """Texts tokenized as encode() does (cut at the model's length when `truncate`, else refused
        when longer), and token id lists taken as they are (cut the same way)."""
        texts = [(i, t) for i, t in enumerate(inputs) if isinstance(t, str)]
        out: list[Encoded | None] = [None] * len(inputs)
        if texts:
            packed = self.tokenizer.pack([t for _, t in texts], max_length=self._max_length_to_tokenize(truncate))
            try:
                encoded = self._check_lengths(packed, truncate)
            except InputTooLong as e:
                raise InputTooLong(texts[e.index][0], e.length, e.limit) from None
            for (i, _), e in zip(texts, encoded):
                out[i] = e
        for i, ids in enumerate(inputs):
            if not isinstance(ids, str):
                if len(ids) > self.max_length and not truncate:
                    raise InputTooLong(i, len(ids), self.max_length)
                out[i] = self.from_ids([ids[: self.max_length]])[0]
        return out

    @torch.inference_mode()
    def forward(self, worker: int, items: Sequence[Encoded]) -> np.ndarray:
        """(B, D) float32 sentence embeddings of `items`, on worker `worker`'s device: `encode()`'s math."""
        enc = self.encoders[worker]
        with _on(enc.device):
            ids, types, cu, longest = _packed(items, enc.device)
            emb = enc.embed_packed(ids, cu, longest, types)  # (B, D): encode()'s pooling, Dense and Normalize
            return emb.float().cpu().numpy()


class RerankModel(_Model):
    kind = RERANKER

    def __init__(self, model_dir: str, name: str, devices: list[str], dtype, backend: str):
        super().__init__(name, devices, dtype)
        activation = _cross_encoder_activation(model_dir)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"{model_dir}: the CrossEncoder activation {activation!r} is not one of {sorted(_ACTIVATIONS)}"
            )
        self.activation = _ACTIVATIONS[activation]
        self.models = [
            BertForSequenceClassification.from_pretrained(model_dir, device=d, dtype=dtype, backend=backend)
            for d in devices
        ]
        config = self.models[0].config
        if config.num_labels != 1:
            raise ValueError(
                f"{model_dir}: a reranker scores with one label, the model has num_labels={config.num_labels}"
            )
        self.tokenizer = Tokenizer.from_pretrained(model_dir)
        limit = config.max_position_embeddings
        self.max_length = min(limit, self.tokenizer.model_max_length or limit)
        self.vocab_size = config.vocab_size
        self.dimension = None
        self.dtype = self.models[0].classifier.weight.dtype

    def warmup_batch(self, texts: list[str]) -> list[Encoded]:
        return self.tokenize(texts[0], texts, truncate=True)

    def tokenize(self, query: str, texts: list[str], truncate: bool) -> list[Encoded]:
        """(query, text) pairs, truncated longest first as CrossEncoder.predict does when `truncate`."""
        packed = self.tokenizer.pack([query] * len(texts), texts, max_length=self._max_length_to_tokenize(truncate))
        return self._check_lengths(packed, truncate)

    @torch.inference_mode()
    def forward(self, worker: int, items: Sequence[Encoded]) -> np.ndarray:
        """(B,) float32 raw logits of the pairs; `scores()` applies the activation."""
        model = self.models[worker]
        device = model.classifier.weight.device
        with _on(device):
            ids, types, cu, longest = _packed(items, device)
            out = model.bert.forward_packed(ids, cu, max_seqlen=longest, token_type_ids=types)
            logits = model.classifier(out.pooler_output)  # (B, 1); the head's dropout is off in eval
            return logits[:, 0].float().cpu().numpy()

    def scores(self, logits: np.ndarray, raw: bool) -> np.ndarray:
        return logits if raw else self.activation(torch.from_numpy(logits)).numpy()


# The name the embedded default model answers to (in /info and OpenAI's `model`).
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def load_model(model_dir: str | None, devices: list[str], dtype, backend: str = "auto") -> EmbeddingModel | RerankModel:
    """The folder's model, one copy per device (default: the embedded MiniLM)."""
    if model_dir is None:
        model_dir, name = default_model_dir(), DEFAULT_MODEL_NAME
    else:
        model_dir = os.fspath(model_dir)
        name = os.path.basename(os.path.normpath(model_dir))
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model: {model_dir} is not a directory")
    cls = RerankModel if model_kind(model_dir) == RERANKER else EmbeddingModel
    return cls(model_dir, name, devices, dtype, backend)
