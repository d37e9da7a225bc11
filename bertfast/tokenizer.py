"""bertfast's WordPiece tokenizer: the Python face of the C++ engine in csrc/ (`bertfast._wordpiece`).

    tok = Tokenizer.from_pretrained(model_dir)                 # vocab.txt + tokenizer_config.json
    enc = tok(["a sentence", "another"], padding=True, return_tensors="np")
    packed = tok.pack(texts, max_length=128)                   # flat ids + cu_seqlens for the encoder

Results match transformers' `BertTokenizerFast` (huggingface `tokenizers`: BertNormalizer,
BertPreTokenizer, WordPiece, BERT's [CLS]/[SEP] template, longest_first truncation, padding) id for
id, offset for offset; tests/test_tokenizer.py checks that on a large multilingual corpus and on every
assigned BMP code point. Batches are tokenized in C++ on several threads with the GIL released.
transformers' conventions this class follows (what the folder's files mean, how padding and truncation
resolve, the return containers, decode's cleanup) are in tokenizer_conventions.py.

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

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _wordpiece
from .tokenizer_conventions import (
    LARGE_INTEGER,
    VERY_LARGE_INTEGER,
    batch_outputs,
    check_length,
    clean_up_tokenization,
    pretrained_arguments,
    read_vocab,
    resolve_strategy,
    wordpiece_cleanup,
)

__all__ = ["Tokenizer", "read_vocab"]


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
            VERY_LARGE_INTEGER if model_max_length is None else check_length("model_max_length", model_max_length)
        )
        self.max_input_chars_per_word = check_length("max_input_chars_per_word", max_input_chars_per_word, 1)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        if num_threads is None:
            num_threads = int(os.environ.get("BERTFAST_NUM_THREADS", "0") or 0)
        self.num_threads = check_length("num_threads", num_threads)

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
        vocab_file, kwargs = pretrained_arguments(model_dir)
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
        strategy = resolve_strategy(padding, truncation, max_length, pad_to_multiple_of, self.model_max_length)
        keys = ["input_ids"]
        if return_token_type_ids is not False:
            keys.append("token_type_ids")
        if return_attention_mask is not False:
            keys.append("attention_mask")
        if return_offsets_mapping:
            keys.append("offset_mapping")
        texts, pairs = self._batch_of(text, text_pair)
        if isinstance(text, str) and return_tensors is None:  # one text: flat lists, no batch
            ids, types, mask, offsets = self._core.encode_single(
                text,
                text_pair,
                add_special_tokens,
                *self._template_ids(),
                *self._engine_codes(strategy),
                return_offsets_mapping,
            )
            found = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "offset_mapping": offsets}
            return {k: found[k] for k in keys}
        res = self._core.encode_batch(
            texts,
            pairs,
            add_special_tokens,
            *self._template_ids(),
            *self._engine_codes(strategy),
            return_offsets_mapping,
            "attention_mask" in keys,
            False,
            self.num_threads,
        )
        return batch_outputs(res, keys, return_tensors)

    def _template_ids(self) -> tuple[int, int, int]:
        """The ids the engine's [CLS] ... [SEP] template and padding write."""
        return self.cls_token_id, self.sep_token_id, self.pad_token_id

    @staticmethod
    def _engine_codes(s) -> tuple[int, int, int, int, int]:
        """A Strategy as the engine's argument order: truncation, its length, padding, its length, multiple."""
        return s.trunc, s.max_length, s.pad, s.max_length, s.multiple

    @staticmethod
    def _batch_of(text, text_pair) -> tuple[Sequence[str], Sequence[str] | None]:
        """(texts, pairs) of a call: one text is a batch of one; pairs must match the texts' form and length."""
        if isinstance(text, str):
            if text_pair is not None and not isinstance(text_pair, str):
                raise TypeError(f"text_pair must be a str when text is a str, got {type(text_pair).__name__}")
            return (text,), (None if text_pair is None else (text_pair,))
        if not isinstance(text, (list, tuple)):
            raise TypeError(f"text must be a str or a list/tuple of str, got {type(text).__name__}")
        if text_pair is None:
            return text, None
        if not isinstance(text_pair, (list, tuple)):
            raise TypeError(f"text_pair must be a list of str when text is a list, got {type(text_pair).__name__}")
        if len(text_pair) != len(text):
            raise ValueError(
                f"batch length of `text`: {len(text)} does not match batch length of `text_pair`: {len(text_pair)}."
            )
        return text, text_pair

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
        max_length = check_length("max_length", max_length)
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
            *self._template_ids(),
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
            pieces.append(wordpiece_cleanup(tok))
        text = "".join(pieces)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

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
