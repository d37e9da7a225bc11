"""transformers' BertTokenizerFast conventions, kept apart from the tokenizer that follows them.

What a tokenizer folder's files mean (vocab.txt, tokenizer_config.json, special_tokens_map.json), how
`padding` / `truncation` / `max_length` resolve into one strategy, in which containers results come
back, and how decoded text is cleaned. `Tokenizer` (tokenizer.py) holds the vocabulary and the C++
engine; everything here is plain Python over their inputs and outputs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _wordpiece

# transformers' "no limit" model_max_length (VERY_LARGE_INTEGER) and its threshold (LARGE_INTEGER).
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

SPECIAL_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
SPECIAL_DEFAULTS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")

# The engine's integer codes for transformers' strategy names.
_TRUNCATION = {"longest_first": 1, "only_first": 2, "only_second": 3, "do_not_truncate": 0}
_PADDING = {"longest": 1, "max_length": 2, "do_not_pad": 0}


def check_length(name: str, value: Any, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# ------------------------------------------------------------------ a tokenizer folder


def read_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """One token per line; line i is id i (a trailing newline, or \\r\\n line ends, are not part of tokens)."""
    with open(vocab_file, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _token_content(value: Any) -> str | None:
    """A special token from a config: a string or an AddedToken dict ({"content": ...})."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"cannot read a special token from {value!r}")


def pretrained_arguments(model_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(vocab.txt path, Tokenizer keyword arguments) as a folder's tokenizer files say."""
    root = Path(model_dir)
    vocab_file = root / "vocab.txt"
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{vocab_file} not found (model_dir must hold a WordPiece vocab.txt)")
    cfg: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = root / name
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                cfg.update(json.load(f))
    kwargs: dict[str, Any] = {}
    for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "clean_up_tokenization_spaces"):
        if key in cfg:
            kwargs[key] = cfg[key]
    if cfg.get("model_max_length") is not None:
        mml = int(cfg["model_max_length"])
        kwargs["model_max_length"] = None if mml > LARGE_INTEGER else mml
    for name in SPECIAL_NAMES:
        if cfg.get(name) is not None:
            kwargs[name] = _token_content(cfg[name])
    extra = [_token_content(t) for t in cfg.get("additional_special_tokens") or []]
    for entry in (cfg.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and entry.get("special", True) and isinstance(entry.get("content"), str):
            extra.append(entry["content"])
    main = {kwargs.get(name, default) for name, default in zip(SPECIAL_NAMES, SPECIAL_DEFAULTS)}
    extra = [t for t in dict.fromkeys(extra) if t not in main]
    if extra:
        kwargs["additional_special_tokens"] = extra
    return vocab_file, kwargs


# ------------------------------------------------------------------ padding and truncation


class Strategy(NamedTuple):
    """The engine's codes: pad (0 none, 1 longest, 2 max_length), trunc (0 none, else _TRUNCATION's),
    max_length (0: none) and pad_to_multiple_of (0: none)."""

    pad: int
    trunc: int
    max_length: int
    multiple: int


def _code(value, codes: dict[str, int], message: str) -> int:
    if value is True:
        return 1
    if value is False or value is None:
        return 0
    if isinstance(value, str) and value in codes:
        return codes[value]
    raise ValueError(f"{message}, got {value!r}")


def resolve_strategy(padding, truncation, max_length, pad_to_multiple_of, model_max_length: int) -> Strategy:
    """transformers' _get_padding_truncation_strategies, returning the engine's integer codes."""
    max_length = check_length("max_length", max_length)
    pad_to_multiple_of = check_length("pad_to_multiple_of", pad_to_multiple_of)
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"  # transformers: max_length alone turns truncation on
    pad = _code(padding, _PADDING, "padding must be True, False, 'longest', 'max_length' or 'do_not_pad'")
    trunc = _code(
        truncation,
        _TRUNCATION,
        "truncation must be True, False, None, 'longest_first', 'only_first', 'only_second' or 'do_not_truncate'",
    )
    unlimited = model_max_length > LARGE_INTEGER
    if max_length is None:
        if pad == 2:
            if unlimited:
                pad = 0
            else:
                max_length = model_max_length
        if trunc:
            if unlimited:
                trunc = 0
            else:
                max_length = model_max_length
    if trunc and pad and pad_to_multiple_of and max_length is not None and max_length % pad_to_multiple_of:
        raise ValueError(
            f"Truncation and padding are both activated but truncation length ({max_length}) is "
            f"not a multiple of pad_to_multiple_of ({pad_to_multiple_of})."
        )
    return Strategy(pad, trunc, max_length or 0, pad_to_multiple_of or 0)


# ------------------------------------------------------------------ return containers


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building many small lists that cannot form cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def batch_outputs(res: dict[str, Any], keys: list[str], return_tensors: str | None) -> dict[str, Any]:
    """The engine's batch result in transformers' containers: one Python list per row (None), a [B, L]
    int64 array ("np") or tensor ("pt"); rows of different lengths give "np" a 1-D object array of
    rows, as transformers does, and cannot form a "pt" tensor."""
    if "cu_seqlens" in res:  # rows of different lengths
        cu = res["cu_seqlens"]
        if return_tensors == "pt":
            raise ValueError(
                "padding: the rows have different lengths and cannot form one tensor; "
                "pass padding=True (or 'max_length' with truncation) with return_tensors='pt'"
            )
        if return_tensors == "np":
            bounds = cu.tolist()
            out = {}
            for k in keys:
                col = np.empty(len(bounds) - 1, dtype=object)
                for i in range(len(bounds) - 1):
                    col[i] = res[k][bounds[i] : bounds[i + 1]]
                out[k] = col
            return out
    elif return_tensors is None:
        rows, width = res["input_ids"].shape
        cu = np.arange(0, rows * width + 1, max(width, 1), dtype=np.int64)[: rows + 1]
    if return_tensors is None:
        with _gc_paused():  # millions of new lists would otherwise set off the cyclic GC again and again
            return {
                k: _wordpiece.split_rows(
                    res[k].reshape(-1, 2) if k == "offset_mapping" else res[k].reshape(-1),
                    cu,
                    k == "offset_mapping",
                )
                for k in keys
            }
    if return_tensors == "pt":
        import torch

        return {k: torch.from_numpy(res[k]) for k in keys}
    return {k: res[k] for k in keys}


# ------------------------------------------------------------------ decoded text


# transformers' clean_up_tokenization, in its order; tokenizers' WordPiece decoder also turns " do not"
# into " don't", right after " 'm".
_CLEANUP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_WORDPIECE_CLEANUP = _CLEANUP[:7] + ((" do not", " don't"),) + _CLEANUP[7:]


def _replace_all(text: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def wordpiece_cleanup(token: str) -> str:
    """tokenizers' WordPiece decoder's cleanup of each token (with its leading space)."""
    return _replace_all(token, _WORDPIECE_CLEANUP)


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (applied when clean_up_tokenization_spaces is on)."""
    return _replace_all(text, _CLEANUP)
