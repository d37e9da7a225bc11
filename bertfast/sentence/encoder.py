"""`SentenceEncoder`: sentence-transformers' encode() on bertfast's packed path, for a model folder of any family.

A BERT folder runs on bertfast's native `BertModel` (no transformers needed); another family's encoder is
loaded with transformers and made fast by `bertfast.optimize()`. Tokens come packed from the folder's own
tokenizer (bertfast.tokenizer_json.load_tokenizer), are pooled per sequence with `cu_seqlens`, and go through
the folder's Dense and Normalize modules (bertfast.sentence.pooling).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..tokenizer_json import load_tokenizer
from .backbone import describe, family_of, load_encoder, longest_input, token_states
from .folder import PoolingSpec, Prompts, default_model_dir, transformer_dir
from .pooling import SentenceHead, pool_packed
from .quantize import PRECISIONS, quantize_embeddings

OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)


def _as_texts(sentences) -> tuple[list[str], bool]:
    """(texts, single): a str is one sentence; a list, tuple, 1-D numpy array of str, or any other iterable of
    str (a generator: read once, in order) is a batch."""
    if isinstance(sentences, str):
        return [sentences], True
    if isinstance(sentences, np.ndarray):
        if sentences.ndim != 1:
            raise TypeError(f"sentences as a numpy array must be 1-D, got {sentences.ndim} dimensions")
        sentences = sentences.tolist()
    if isinstance(sentences, (bytes, dict)) or not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a str or an iterable of str, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(t).__name__}")
    return texts, False


def _check_flag(name: str, value, allow_none: bool = False) -> None:
    if not (isinstance(value, (bool, np.bool_)) or (allow_none and value is None)):
        raise TypeError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")


def _check_encode_args(batch_size, show_progress_bar, output_value, precision, flags: dict) -> None:
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    _check_flag("show_progress_bar", show_progress_bar, allow_none=True)
    for name, value in flags.items():
        _check_flag(name, value)
    if output_value not in OUTPUT_VALUES:
        raise ValueError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if output_value is None and precision not in (None, "float32"):
        raise ValueError(f"precision={precision!r} applies to one output; with output_value=None it must be 'float32'")


def _target_device(device) -> torch.device:
    """The device `encode(device=...)` names, checked: a str, torch.device or CUDA index."""
    if isinstance(device, (list, tuple)):
        raise TypeError(
            "device must be one device: bertfast encodes in this process (for many GPUs use `bertfast embed`)"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but no CUDA device is available")
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    return dev


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar over sentences, or None when not asked for (or tqdm is not installed: then a warning)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        import warnings

        warnings.warn("show_progress_bar=True needs tqdm (pip install tqdm): encoding without a bar", stacklevel=3)
        return None
    return tqdm(total=total, desc="encode", unit="sentence", dynamic_ncols=True)


class SentenceEncoder:
    """Tokenizer + encoder + pooling (+ Dense, Normalize): `encode(sentences, ...)` takes sentence-transformers'
    encode() arguments and gives its outputs, computed on bertfast's packed path.

    model: a bertfast BertModel, or a transformers encoder patched by bertfast.optimize().
    tokenizer: bertfast.Tokenizer (WordPiece) or bertfast.tokenizer_json.JsonTokenizer (BPE, SentencePiece).
    pooling: the folder's pooling modes, Dense modules, Normalize and max_seq_length.
    prompts: the folder's prompts and default prompt name (default: none).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, pooling: PoolingSpec, prompts: Prompts | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.prompts = prompts if prompts is not None else Prompts()
        param = next(model.parameters())
        self.head = SentenceHead(pooling, model.config.hidden_size * len(pooling.modes)).to(param.device, param.dtype)
        limit = longest_input(model)
        self.max_length = min(pooling.max_seq_length or limit, limit, tokenizer.model_max_length or limit)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        backend: str = "auto",
    ) -> SentenceEncoder:
        """A sentence-transformers folder (or a plain encoder folder) of any family bertfast supports;
        None: the embedded MiniLM-L6. Nothing is downloaded."""
        model_dir = os.fspath(model_dir) if model_dir is not None else default_model_dir()
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
        encoder_dir = transformer_dir(model_dir)
        pooling, prompts = PoolingSpec.from_model_dir(model_dir), Prompts.from_model_dir(model_dir)
        model = load_encoder(encoder_dir, device=device, dtype=dtype, backend=backend)
        return cls(model, load_tokenizer(encoder_dir, family_of(model)), pooling, prompts)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dimension(self) -> int:
        return self.head.out_features

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def embed_packed(
        self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """(B, D) sentence embeddings of packed tokens on the model's device: `tokenizer.pack`'s input_ids and
        token_type_ids (T,), cu_seqlens (B + 1,) and max_seqlen; pooled, then the Dense and Normalize modules."""
        h, cu = token_states(self.model, input_ids, cu_seqlens, max_seqlen, token_type_ids)  # (T, H), (B + 1,)
        return self.head(pool_packed(h, cu, self.pooling.modes))  # (B, D)

    def get_sentence_embedding_dimension(self) -> int:
        """sentence-transformers' name for `dimension`."""
        return self.dimension

    def __repr__(self) -> str:
        """The modules in sentence-transformers' order, as its repr lists them."""
        p = self.pooling
        lines = [
            f"  (encoder): {describe(self.model)} on {self.device}, {str(self.dtype).removeprefix('torch.')}",
            f"  (tokenizer): {type(self.tokenizer).__name__}, max_length={self.max_length}",
            f"  (pooling): {'+'.join(p.modes)}",
        ]
        lines += [f"  (dense): {d.in_features} -> {d.out_features}, {d.activation.rsplit('.', 1)[-1]}" for d in p.dense]
        if p.normalize:
            lines.append("  (normalize): L2")
        named = sorted(k for k, v in self.prompts.prompts.items() if v)
        if named:
            lines.append(f"  (prompts): {named}, default={self.prompts.default_prompt_name!r}")
        return f"SentenceEncoder(dim={self.dimension},\n" + "\n".join(lines) + "\n)"

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = False,
    ):
        """Embeddings of `sentences`, with sentence-transformers' encode() arguments, outputs and types.

        sentences: a str (one result) or a list / tuple / 1-D array / other iterable of str, a generator
            included (a batch, in input order; inside, batches are formed longest first, as
            sentence-transformers does).
        prompt_name: the name of one of the model's prompts (config_sentence_transformers.json) to put
            before every sentence; None: the model's default_prompt_name, if it has one.
        prompt: a text to put before every sentence; it wins over prompt_name (with a warning if both
            are given), as in sentence-transformers. An empty prompt turns the default prompt off.
        batch_size: sentences per forward (default 64).
        show_progress_bar: a tqdm bar over sentences; None (the default) and False mean no bar.
            sentence-transformers' None shows one when its logger is at INFO; bertfast stays quiet.
        output_value: "sentence_embedding" (pooled, the model's Normalize applied), "token_embeddings"
            (a list of (L_i, H) tensors of the last layer, [CLS] and [SEP] included, L_i the real length),
            or None (a list of dicts with input_ids, token_type_ids, attention_mask, token_embeddings,
            sentence_embedding, each of the sentence's real length: bertfast does not pad).
        precision: "float32", or "int8" / "uint8" / "binary" / "ubinary" as `quantize_embeddings`, with
            int8 / uint8 ranges calibrated on this call's own embeddings (so on two or more of them).
        convert_to_numpy: sentence embeddings as one (N, D) numpy array (the default); False gives a
            list of (D,) tensors. convert_to_tensor: one (N, D) tensor, which wins over convert_to_numpy.
            Both apply to sentence embeddings only: other outputs are lists of tensors (or of numpy
            arrays when quantized), as in sentence-transformers.
        device: move the model there first (it stays there), as sentence-transformers does.
        normalize_embeddings: L2-normalize the sentence embeddings (the model may already do so); as in
            sentence-transformers, only for output_value="sentence_embedding".

        An empty list gives np.array([]) (or an empty tensor / list), as sentence-transformers.
        """
        texts, single = _as_texts(sentences)
        text_prompt = self.prompts.resolve(prompt, prompt_name)
        if text_prompt:
            texts = [text_prompt + t for t in texts]
        if self.pooling.lower_case:  # the folder's do_lower_case: the whole input, prompt included
            texts = [t.lower() for t in texts]
        _check_encode_args(
            batch_size,
            show_progress_bar,
            output_value,
            precision,
            {
                "convert_to_numpy": convert_to_numpy,
                "convert_to_tensor": convert_to_tensor,
                "normalize_embeddings": normalize_embeddings,
            },
        )
        if device is not None:
            target = _target_device(device)
            if self.device != target:
                self.model.to(target)
                self.head.to(target)
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != "sentence_embedding":  # lists of per-sentence tensors, whatever was asked
            convert_to_numpy = convert_to_tensor = False

        results = self._encode_in_order(
            texts,
            batch_size,
            output_value,
            normalize_embeddings,
            to_cpu=convert_to_numpy,
            progress=bool(show_progress_bar),
        )
        if len(results) and precision not in (None, "float32"):
            results = quantize_embeddings(results, precision)  # numpy: (N, D), or a list of (L_i, D)
        results = self._convert(results, output_value, convert_to_numpy, convert_to_tensor)
        return results[0] if single else results

    def _encode_in_order(self, texts, batch_size, output_value, normalize, to_cpu, progress):
        """Batches of the sentences sorted longest first, results put back in input order:
        a (N, D) tensor for sentence embeddings, else a list of N tensors or dicts."""
        N = len(texts)
        order = sorted(range(N), key=lambda i: -len(texts[i]))  # stable: ties keep input order
        bar = _progress_bar(N, progress)
        sorted_results: list = []
        try:
            for start in range(0, N, batch_size):
                batch = [texts[i] for i in order[start : start + batch_size]]
                sorted_results.extend(self._encode_batch(batch, output_value, normalize, to_cpu))
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        if output_value == "sentence_embedding":
            if N == 0:
                return torch.tensor([], device="cpu" if to_cpu else self.device)
            stacked = torch.stack(sorted_results)  # (N, D), sorted order
            inverse = torch.empty(N, dtype=torch.long)
            inverse[torch.tensor(order)] = torch.arange(N)
            return stacked.index_select(0, inverse.to(stacked.device))  # (N, D), input order
        in_order: list = [None] * N
        for rank, i in enumerate(order):
            in_order[i] = sorted_results[rank]
        return in_order

    def _encode_batch(self, batch: list[str], output_value, normalize: bool, to_cpu: bool) -> list:
        """One forward of `batch` (packed, no padding) -> per sentence: a (D,) embedding, a (L, H)
        token matrix, or a dict of both with the inputs."""
        device = self.device
        packed = self.tokenizer.pack(batch, max_length=self.max_length, return_tensors="pt")
        lengths = (packed["cu_seqlens"][1:] - packed["cu_seqlens"][:-1]).tolist()  # host, no sync
        ids = packed["input_ids"].to(device)  # (T,)
        types = packed["token_type_ids"].to(device)  # (T,)
        cu_seqlens = packed["cu_seqlens"].to(device)  # (b + 1,)
        if output_value == "sentence_embedding":
            emb = self.embed_packed(ids, cu_seqlens, packed["max_seqlen"], types)  # (b, D)
            if normalize:
                emb = F.normalize(emb.float(), p=2, dim=1).to(emb.dtype)
            return list(emb.cpu() if to_cpu else emb)  # (D,) each
        h, cu_seqlens = token_states(self.model, ids, cu_seqlens, packed["max_seqlen"], types)  # (T, H), (b + 1,)
        if output_value == "token_embeddings":
            return list(h.split(lengths))  # (L_b, H) each
        emb = self.head(pool_packed(h, cu_seqlens, self.pooling.modes))  # (b, D): Dense modules, Normalize
        return [
            {
                "input_ids": i,
                "token_type_ids": t,
                "attention_mask": torch.ones_like(i),
                "token_embeddings": x,
                "sentence_embedding": e,
            }
            for i, t, x, e in zip(ids.split(lengths), types.split(lengths), h.split(lengths), emb)
        ]

    def _convert(self, results, output_value, convert_to_numpy: bool, convert_to_tensor: bool):
        """The final container, as sentence-transformers returns it."""
        if convert_to_tensor:
            if isinstance(results, np.ndarray):
                return torch.from_numpy(results)
            return results  # (N, D) tensor on the model's device, or an empty one
        if convert_to_numpy:
            if not len(results):
                return np.array([])
            if isinstance(results, torch.Tensor):
                return (results.float() if results.dtype == torch.bfloat16 else results).cpu().numpy()
            return results
        if isinstance(results, np.ndarray):
            return list(torch.from_numpy(results))
        return list(results)
