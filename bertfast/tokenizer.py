"""bertfast's WordPiece tokenizer: the Python face of the C++ engine in csrc/ (`bertfast._wordpiece`).

    tok = Tokenizer.from_pretrained(model_dir)                 # vocab.txt + tokenizer_config.json
    enc = tok(["a sentence", "another"], padding=True, return_tensors="np")
    packed = tok.pack(texts, max_length=128)                   # flat ids + cu_seqlens for the encoder

Results match transformers' `BertTokenizerFast` (huggingface `tokenizers`: BertNormalizer,
BertPreTokenizer, WordPiece, BERT's [CLS]/[SEP] template, longest_first truncation, padding) id for
id, offset for offset; tests/test_tokenizer.py checks that on a large multilingual corpus and on every
assigned BMP code point. Batches are tokenized in C++ on several threads with the GIL released.

Known differences from the reference (each one a case where the reference fails or is odd):
  * a str holding a lone surrogate raises ValueError naming the argument and index (the reference
    raises TypeError; neither can tokenize it);
  * an empty batch returns empty results (the reference raises IndexError);
  * a ragged batch with return_tensors="pt" raises ValueError naming `padding` (the reference raises
    ValueError too, with other words; with "np" both return an object array of int64 rows);
  * pad_to_multiple_of=0 is ignored, as `tokenizers` ignores it (transformers' own check divides by it
    when truncation is also on);
  * the Unicode tables are Unicode 14.0 (Python 3.11's unicodedata) adjusted to the reference's older
    category data; code points first assigned after 14.0 (other than 55 capitals whose lower-case
    mappings are included) may differ (see scripts/gen_unicode_tables.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _wordpiece

__all__ = ["Tokenizer"]

# transformers' "no limit" model_max_length (VERY_LARGE_INTEGER) and its threshold (LARGE_INTEGER).
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

_TRUNCATION = {"longest_first": 1, "only_first": 2, "only_second": 3, "do_not_truncate": 0}
_PADDING = {"longest": 1, "max_length": 2, "do_not_pad": 0}
_SPECIAL_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_content(value: Any) -> str | None:
    """A special token from a config: a string or an AddedToken dict ({"content": ...})."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"cannot read a special token from {value!r}")


def _check_length(name: str, value: Any, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _wordpiece_cleanup(token: str) -> str:
    # tokenizers' WordPiece decoder cleans each token (with its leading space) this way.
    return (
        token.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _clean_up_tokenization(text: str) -> str:
    # transformers' clean_up_tokenization (applied when clean_up_tokenization_spaces is on).
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


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


def read_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """One token per line; line i is id i (a trailing newline, or \\r\\n line ends, are not part of tokens)."""
    with open(vocab_file, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


class Tokenizer:
    """BERT WordPiece tokenizer with the call signature and outputs of transformers' BertTokenizerFast.

    Args:
        vocab_file: path to vocab.txt (one token per line, line number = id).
        do_lower_case: lower-case the text (full Unicode lower-casing, as Rust's char::to_lowercase).
        strip_accents: strip accents (NFD, then drop nonspacing marks); None follows do_lower_case.
        tokenize_chinese_chars: make every CJK ideograph a word of its own.
        unk_token, sep_token, pad_token, cls_token, mask_token: the special tokens; written in a text
            they are kept whole (matched on the raw text, case-sensitively, before normalization).
        additional_special_tokens: more tokens kept whole when written in a text.
        model_max_length: the length truncation=True / padding="max_length" use when max_length is None
            (default: no limit, as transformers).
        max_input_chars_per_word: a longer word becomes one [UNK] (100, as BERT).
        clean_up_tokenization_spaces: decode()'s default for the same-named argument.
        num_threads: threads for batches (0: one per core; small batches always run on one).
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        additional_special_tokens: Iterable[str] = (),
        model_max_length: int | None = None,
        max_input_chars_per_word: int = 100,
        clean_up_tokenization_spaces: bool = False,
        num_threads: int | None = None,
    ) -> None:
        vocab = read_vocab(vocab_file)
        if not vocab:
            raise ValueError(f"vocab_file {vocab_file!s} holds no tokens")
        self.vocab_file = str(vocab_file)
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.model_max_length = (
            VERY_LARGE_INTEGER if model_max_length is None else _check_length("model_max_length", model_max_length)
        )
        self.max_input_chars_per_word = _check_length("max_input_chars_per_word", max_input_chars_per_word, 1)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        if num_threads is None:
            num_threads = int(os.environ.get("BERTFAST_NUM_THREADS", "0") or 0)
        self.num_threads = _check_length("num_threads", num_threads)

        self._vocab: dict[str, int] = {}
        for i, tok in enumerate(vocab):
            self._vocab[tok] = i  # a duplicate line keeps its last id, as a dict built from the file would
        self._base_vocab_size = len(self._vocab)
        self._id_to_token: list[str | None] = [None] * len(vocab)
        for tok, i in self._vocab.items():
            self._id_to_token[i] = tok

        # Special tokens missing from the vocabulary are added after it, as transformers adds them.
        specials = {
            "unk_token": unk_token,
            "sep_token": sep_token,
            "pad_token": pad_token,
            "cls_token": cls_token,
            "mask_token": mask_token,
        }
        self.additional_special_tokens = [str(t) for t in additional_special_tokens]
        self._added: dict[str, int] = {}
        for name, tok in specials.items():
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"{name} must be a non-empty str, got {tok!r}")
            setattr(self, name, tok)
        for tok in list(specials.values()) + self.additional_special_tokens:
            if tok not in self._vocab and tok not in self._added:
                self._added[tok] = len(self._id_to_token)
                self._id_to_token.append(tok)
        self.all_special_tokens = list(dict.fromkeys(list(specials.values()) + self.additional_special_tokens))
        self.all_special_ids = [self._token_id(t) for t in self.all_special_tokens]
        self._special_id_set = frozenset(self.all_special_ids)
        self.unk_token_id = self._token_id(unk_token)
        self.sep_token_id = self._token_id(sep_token)
        self.pad_token_id = self._token_id(pad_token)
        self.cls_token_id = self._token_id(cls_token)
        self.mask_token_id = self._token_id(mask_token)

        strip = self.do_lower_case if strip_accents is None else bool(strip_accents)
        self._core = _wordpiece.WordPieceCore(
            vocab,
            self.unk_token_id,
            self.do_lower_case,
            strip,
            self.tokenize_chinese_chars,
            [(t, self._token_id(t)) for t in self.all_special_tokens],
            self.max_input_chars_per_word,
            "##",
        )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, **overrides: Any) -> Tokenizer:
        """Loads vocab.txt, tokenizer_config.json and special_tokens_map.json (when present) from a folder.

        Keyword arguments override what the files say (e.g. do_lower_case=False).
        """
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
        for name in _SPECIAL_NAMES:
            if cfg.get(name) is not None:
                kwargs[name] = _token_content(cfg[name])
        extra = [_token_content(t) for t in cfg.get("additional_special_tokens") or []]
        for entry in (cfg.get("added_tokens_decoder") or {}).values():
            if isinstance(entry, dict) and entry.get("special", True) and isinstance(entry.get("content"), str):
                extra.append(entry["content"])
        main = {
            kwargs.get(name, default)
            for name, default in zip(_SPECIAL_NAMES, ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"))
        }
        extra = [t for t in dict.fromkeys(extra) if t not in main]
        if extra:
            kwargs["additional_special_tokens"] = extra
        kwargs.update(overrides)
        return cls(vocab_file, **kwargs)

    # ------------------------------------------------------------------ vocabulary

    def _token_id(self, token: str) -> int:
        i = self._vocab.get(token)
        return self._added[token] if i is None else i

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (vocab.txt), without added tokens, as in transformers."""
        return self._base_vocab_size

    def __len__(self) -> int:
        return self._base_vocab_size + len(self._added)

    def get_vocab(self) -> dict[str, int]:
        v = dict(self._vocab)
        v.update(self._added)
        return v

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            i = self._vocab.get(tokens)
            if i is None:
                i = self._added.get(tokens, self.unk_token_id)
            return i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False):
        """Token string per id (None for an id outside the vocabulary, as transformers)."""
        if isinstance(ids, (int, np.integer)):
            i = int(ids)
            return self._id_to_token[i] if 0 <= i < len(self._id_to_token) else None
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        table, n = self._id_to_token, len(self._id_to_token)
        special = self._special_id_set if skip_special_tokens else ()
        return [table[i] if 0 <= i < n else None for i in ids if i not in special]

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, without [CLS]/[SEP]."""
        ids, _ = self._core.tokenize(text)
        return [self._id_to_token[i] for i in ids]

    # ------------------------------------------------------------------ encoding

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """transformers' _get_padding_truncation_strategies, returning the engine's integer codes."""
        max_length = _check_length("max_length", max_length)
        pad_to_multiple_of = _check_length("pad_to_multiple_of", pad_to_multiple_of)
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # transformers: max_length alone turns truncation on
        if padding is True:
            pad = 1
        elif padding is False or padding is None:
            pad = 0
        elif isinstance(padding, str) and padding in _PADDING:
            pad = _PADDING[padding]
        else:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if truncation is True:
            trunc = 1
        elif truncation is False or truncation is None:
            trunc = 0
        elif isinstance(truncation, str) and truncation in _TRUNCATION:
            trunc = _TRUNCATION[truncation]
        else:
            raise ValueError(
                "truncation must be True, False, None, 'longest_first', 'only_first', 'only_second' "
                f"or 'do_not_truncate', got {truncation!r}"
            )
        if max_length is None:
            if pad == 2:
                if self.model_max_length > LARGE_INTEGER:
                    pad = 0
                else:
                    max_length = self.model_max_length
            if trunc:
                if self.model_max_length > LARGE_INTEGER:
                    trunc = 0
                else:
                    max_length = self.model_max_length
        if trunc and pad and pad_to_multiple_of and max_length is not None and max_length % pad_to_multiple_of:
            raise ValueError(
                f"Truncation and padding are both activated but truncation length ({max_length}) is "
                f"not a multiple of pad_to_multiple_of ({pad_to_multiple_of})."
            )
        return pad, trunc, (max_length or 0), (pad_to_multiple_of or 0)

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_offsets_mapping: bool = False,
    ) -> dict[str, Any]:
        """Encodes a text, a pair, or a batch of texts / pairs, as BertTokenizerFast.__call__ does.

        truncation=None behaves as in transformers: off, unless max_length is given without padding.
        Returns a dict with input_ids, token_type_ids, attention_mask (and offset_mapping): Python
        lists when return_tensors is None (flat for one text, one list per text for a batch), else
        int64 arrays of shape [B, L] ("np": numpy, "pt": torch; a single text gives B = 1).
        """
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")
        pad, trunc, max_len, multiple = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        want_types = return_token_type_ids is not False
        want_mask = return_attention_mask is not False
        if isinstance(text, str):
            if text_pair is not None and not isinstance(text_pair, str):
                raise TypeError(f"text_pair must be a str when text is a str, got {type(text_pair).__name__}")
            if return_tensors is None:
                ids, types, mask, offsets = self._core.encode_single(
                    text,
                    text_pair,
                    add_special_tokens,
                    self.cls_token_id,
                    self.sep_token_id,
                    self.pad_token_id,
                    trunc,
                    max_len,
                    pad,
                    max_len,
                    multiple,
                    return_offsets_mapping,
                )
                out = {"input_ids": ids}
                if want_types:
                    out["token_type_ids"] = types
                if want_mask:
                    out["attention_mask"] = mask
                if return_offsets_mapping:
                    out["offset_mapping"] = offsets
                return out
            texts, pairs = (text,), (None if text_pair is None else (text_pair,))
        elif isinstance(text, (list, tuple)):
            texts = text
            if text_pair is None:
                pairs = None
            elif isinstance(text_pair, (list, tuple)):
                if len(text_pair) != len(text):
                    raise ValueError(
                        f"batch length of `text`: {len(text)} does not match batch length of "
                        f"`text_pair`: {len(text_pair)}."
                    )
                pairs = text_pair
            else:
                raise TypeError(f"text_pair must be a list of str when text is a list, got {type(text_pair).__name__}")
        else:
            raise TypeError(f"text must be a str or a list/tuple of str, got {type(text).__name__}")

        res = self._core.encode_batch(
            texts,
            pairs,
            add_special_tokens,
            self.cls_token_id,
            self.sep_token_id,
            self.pad_token_id,
            trunc,
            max_len,
            pad,
            max_len,
            multiple,
            return_offsets_mapping,
            want_mask,
            False,
            self.num_threads,
        )
        keys = (
            ["input_ids"]
            + (["token_type_ids"] if want_types else [])
            + (["attention_mask"] if want_mask else [])
            + (["offset_mapping"] if return_offsets_mapping else [])
        )
        if "cu_seqlens" in res:  # rows of different lengths
            cu = res["cu_seqlens"]
            if return_tensors == "pt":
                raise ValueError(
                    "padding: the rows have different lengths and cannot form one tensor; "
                    "pass padding=True (or 'max_length' with truncation) with return_tensors='pt'"
                )
            if return_tensors == "np":  # as transformers: a 1-D object array of int64 rows
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

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ) -> list[int]:
        """The input_ids of one text (or pair), as BertTokenizerFast.encode."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            return_token_type_ids=False,
            return_attention_mask=False,
        )["input_ids"]

    def pack(
        self,
        texts: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_tensors: str = "np",
    ) -> dict[str, Any]:
        """The packed, padding-free form the encoder consumes.

        Every text is truncated (longest_first) to max_length tokens (default: model_max_length) and
        the rows are concatenated: input_ids and token_type_ids are flat int64 [T], cu_seqlens int32
        [B + 1] with cu_seqlens[0] = 0 and row b = [cu_seqlens[b], cu_seqlens[b + 1]), max_seqlen an int.
        The same as tok(texts, truncation=True, max_length=..., padding=True) without the padding.
        """
        if return_tensors not in ("np", "pt"):
            raise ValueError(f"return_tensors must be 'np' or 'pt', got {return_tensors!r}")
        max_length = _check_length("max_length", max_length)
        if max_length is None:
            max_length = self.model_max_length if self.model_max_length <= LARGE_INTEGER else None
        if isinstance(texts, str):
            texts = (texts,)
            if text_pair is not None:
                if not isinstance(text_pair, str):
                    raise TypeError(f"text_pair must be a str when texts is a str, got {type(text_pair).__name__}")
                text_pair = (text_pair,)
        elif not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a str or a list/tuple of str, got {type(texts).__name__}")
        if text_pair is not None and not isinstance(text_pair, (list, tuple)):
            raise TypeError(f"text_pair must be a list/tuple of str, got {type(text_pair).__name__}")
        res = self._core.encode_batch(
            texts,
            text_pair,
            add_special_tokens,
            self.cls_token_id,
            self.sep_token_id,
            self.pad_token_id,
            0 if max_length is None else 1,
            max_length or 0,
            0,
            0,
            0,
            False,
            False,
            True,
            self.num_threads,
        )
        out = {
            "input_ids": res["input_ids"],
            "token_type_ids": res["token_type_ids"],
            "cu_seqlens": res["cu_seqlens"],
            "max_seqlen": int(res["max_seqlen"]),
        }
        if return_tensors == "pt":
            import torch

            for k in ("input_ids", "token_type_ids", "cu_seqlens"):
                out[k] = torch.from_numpy(out[k])
        return out

    # ------------------------------------------------------------------ decoding

    def decode(
        self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of a list of ids, as BertTokenizerFast.decode: "##" pieces are glued to the previous
        piece, other tokens are joined with spaces, and the WordPiece decoder's cleanup is applied."""
        if isinstance(token_ids, (int, np.integer)):
            token_ids = [int(token_ids)]
        elif hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
            if isinstance(token_ids, int):
                token_ids = [token_ids]
        table, n = self._id_to_token, len(self._id_to_token)
        special = self._special_id_set if skip_special_tokens else ()
        pieces = []
        for i in token_ids:
            if not isinstance(i, (int, np.integer)):
                raise TypeError(f"token_ids must hold ints, got {type(i).__name__}")
            if i in special or not 0 <= i < n or table[i] is None:
                continue
            tok = table[i]
            if pieces:
                tok = tok[2:] if tok.startswith("##") else " " + tok
            pieces.append(_wordpiece_cleanup(tok))
        text = "".join(pieces)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return _clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
            f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars}, "
            f"model_max_length={self.model_max_length})"
        )
