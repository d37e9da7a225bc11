"""Every family's packed tokenizer: `tokenizer.json` through the `tokenizers` library for the BPE (RoBERTa) and
SentencePiece / Unigram (XLM-R, CamemBERT, ALBERT) vocabularies, which bertfast's C++ WordPiece cannot read,
and the C++ WordPiece with the family's special tokens and pair template for the others.

    tok = load_tokenizer(model_dir)            # as the folder's family (bertfast.families) says
    packed = tok.pack(texts, max_length=128)   # input_ids, token_type_ids (T,), cu_seqlens (B + 1,), max_seqlen

`JsonTokenizer.pack` gives what `Tokenizer.pack` gives, as transformers' fast tokenizer from the same file
encodes with truncation=True (longest_first, from the right) and no padding: the file's own normalizer,
pre-tokenizer, model and post-processor (the family's special tokens) run unchanged.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import families
from .tokenizer import Tokenizer
from .tokenizer_conventions import LARGE_INTEGER, SPECIAL_NAMES, check_length, pretrained_arguments

__all__ = ["JsonTokenizer", "load_tokenizer"]

ENGINES_KEPT = 4  # truncation lengths with a tokenizer kept ready (see JsonTokenizer.__init__)


def _tokenizers_module():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "this model's tokenizer.json (BPE or SentencePiece) needs the tokenizers library: pip install tokenizers"
        ) from None
    return tokenizers


def _texts(texts: Any, name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{name} must be a str or a list/tuple of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return list(texts)


def _check_container(return_tensors: str) -> None:
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be 'np' or 'pt', got {return_tensors!r}")


def _in_container(packed: dict[str, Any], return_tensors: str) -> dict[str, Any]:
    """The packed numpy arrays as `return_tensors` asks ("pt": torch tensors sharing their memory)."""
    if return_tensors == "pt":
        import torch

        for k in ("input_ids", "token_type_ids", "cu_seqlens"):
            packed[k] = torch.from_numpy(packed[k])
    return packed


class JsonTokenizer:
    """A `tokenizers` tokenizer.json behind bertfast's packed interface.

    Args:
        tokenizer_file: path to tokenizer.json.
        model_max_length: the length `pack` truncates to when max_length is None (default: no limit).
    """

    def __init__(self, tokenizer_file: str | os.PathLike, model_max_length: int | None = None) -> None:
        tokenizers = _tokenizers_module()
        self.tokenizer_file = os.fspath(tokenizer_file)
        try:
            self._source = tokenizers.Tokenizer.from_file(self.tokenizer_file).to_str()
        except Exception as e:  # the Rust loader raises a bare Exception for a malformed file
            raise ValueError(f"tokenizer_file {self.tokenizer_file!r} is not a tokenizer.json: {e}") from None
        self.model_max_length = check_length("model_max_length", model_max_length)
        # One Rust tokenizer per truncation length, the most recently used few kept (a copy of a large
        # vocabulary is tens of MB): truncation is state on the object, so concurrent calls with different
        # lengths never share one; a call holds its engine even if another call evicts it meanwhile.
        self._by_length: OrderedDict[int | None, Any] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> JsonTokenizer:
        """tokenizer.json, and model_max_length from tokenizer_config.json when it gives one."""
        model_dir = os.fspath(model_dir)
        path = os.path.join(model_dir, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found (model_dir must hold a tokenizer.json)")
        mml = _tokenizer_config(model_dir).get("model_max_length")
        mml = None if mml is None or int(mml) > LARGE_INTEGER else int(mml)
        return cls(path, model_max_length=mml)

    def _engine(self, max_length: int | None):
        with self._lock:
            tok = self._by_length.get(max_length)
            if tok is None:
                tok = _tokenizers_module().Tokenizer.from_str(self._source)
                tok.no_padding()
                if max_length is None:
                    tok.no_truncation()
                else:
                    tok.enable_truncation(max_length, strategy="longest_first", direction="right")
                self._by_length[max_length] = tok
                if len(self._by_length) > ENGINES_KEPT:
                    self._by_length.popitem(last=False)
            self._by_length.move_to_end(max_length)
            return tok

    def token_to_id(self, token: str) -> int | None:
        return self._engine(None).token_to_id(token)

    def __len__(self) -> int:
        return self._engine(None).get_vocab_size(with_added_tokens=True)

    def pack(
        self,
        texts: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_tensors: str = "np",
    ) -> dict[str, Any]:
        """Rows truncated to max_length tokens (default: model_max_length), specials included, concatenated:
        input_ids and token_type_ids flat int64 (T,), cu_seqlens int32 (B + 1,), max_seqlen an int."""
        _check_container(return_tensors)
        max_length = check_length("max_length", max_length, 1)
        if max_length is None:
            max_length = self.model_max_length
        first = _texts(texts, "texts")
        if text_pair is None:
            inputs: list = first
        else:
            second = _texts(text_pair, "text_pair")
            if len(second) != len(first):
                raise ValueError(f"text_pair has {len(second)} texts, texts has {len(first)}")
            inputs = list(zip(first, second))
        encodings = self._engine(max_length).encode_batch(inputs, add_special_tokens=bool(add_special_tokens))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        cu = np.zeros(len(encodings) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        out: dict[str, Any] = {
            "input_ids": np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(cu[-1])),
            "token_type_ids": np.fromiter(
                (t for e in encodings for t in e.type_ids), dtype=np.int64, count=int(cu[-1])
            ),
            "cu_seqlens": cu,
            "max_seqlen": int(lengths.max()) if len(lengths) else 0,
        }
        return _in_container(out, return_tensors)

    def __repr__(self) -> str:
        return f"JsonTokenizer({self.tokenizer_file!r}, model_max_length={self.model_max_length})"


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {os.path.basename(path)} in {os.path.dirname(path)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _tokenizer_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, "tokenizer_config.json")
    return _read_json(path) if os.path.isfile(path) else {}


class DoubleSeparatorPairs:
    """bertfast's C++ WordPiece `Tokenizer` for a family whose pairs read `<s> A </s></s> B </s>` (MPNet): single
    texts as the tokenizer gives them, pairs with the second separator inserted, all token types 0.

    The engine truncates a pair to one token less than asked (it adds three specials, the template four), so
    each text keeps what transformers' longest_first truncation leaves it; its token types (0 up to the first
    separator) say where the second one goes. Every other attribute is the wrapped tokenizer's.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __getattr__(self, name: str):
        if name == "tokenizer":  # not set yet (a copy or unpickling in progress): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def pack(
        self,
        texts: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_tensors: str = "np",
    ) -> dict[str, Any]:
        """`Tokenizer.pack`, with the family's pair template (see the class)."""
        if text_pair is None or not add_special_tokens:
            kwargs = dict(max_length=max_length, add_special_tokens=add_special_tokens, return_tensors=return_tensors)
            return self.tokenizer.pack(texts, text_pair, **kwargs)
        _check_container(return_tensors)
        max_length = check_length("max_length", max_length, 4)
        if max_length is None and self.tokenizer.model_max_length <= LARGE_INTEGER:
            max_length = self.tokenizer.model_max_length
        inner = self.tokenizer.pack(
            texts, text_pair, max_length=None if max_length is None else max_length - 1, return_tensors="np"
        )
        cu = inner["cu_seqlens"].astype(np.int64)  # (B + 1,)
        B = cu.size - 1
        first = np.add.reduceat(inner["token_type_ids"] == 0, cu[:-1]) if B else np.zeros(0, np.int64)  # (B,)
        ids = np.insert(inner["input_ids"], cu[:-1] + first, self.tokenizer.sep_token_id)  # (T + B,)
        out: dict[str, Any] = {
            "input_ids": ids,
            "token_type_ids": np.zeros_like(ids),
            "cu_seqlens": (cu + np.arange(B + 1)).astype(np.int32),
            "max_seqlen": inner["max_seqlen"] + 1 if B else 0,
        }
        return _in_container(out, return_tensors)

    def __repr__(self) -> str:
        return f"DoubleSeparatorPairs({self.tokenizer!r})"


def load_tokenizer(model_dir: str | os.PathLike, family: families.Family | None = None):
    """The tokenizer for a model folder, as its family's registry entry (`bertfast.families`) says.

    A WordPiece family gets bertfast's C++ WordPiece (`Tokenizer` over vocab.txt; MPNet's pairs through
    `DoubleSeparatorPairs`), with the special tokens the folder's tokenizer files name and the family's where
    they name none. A BPE or Unigram family, or a WordPiece folder saved as tokenizer.json alone (as
    transformers 5 saves one), gets `JsonTokenizer`. `family`: default, the one of the folder's config.json.
    """
    model_dir = os.fspath(model_dir)
    if family is None:
        family = families.family_of_config_json(_read_json(os.path.join(model_dir, "config.json")))
    spec = family.tokenizer
    has_vocab = os.path.isfile(os.path.join(model_dir, "vocab.txt"))
    if spec.kind == "tokenizer.json" or (not has_vocab and os.path.isfile(os.path.join(model_dir, "tokenizer.json"))):
        return JsonTokenizer.from_pretrained(model_dir)
    vocab_file, kwargs = pretrained_arguments(model_dir)
    for name in SPECIAL_NAMES:
        kwargs.setdefault(name, getattr(spec, name))
    tokenizer = Tokenizer(vocab_file, **kwargs)
    return tokenizer if spec.pair_separators == 1 else DoubleSeparatorPairs(tokenizer)
