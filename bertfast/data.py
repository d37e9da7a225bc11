"""Data for pretraining and fine-tuning: MLM masking, NSP pairs, and batches for the four formats of
the BERT paper (single sentence, sentence pair, extractive QA, per-token labels).

Every batch function takes any tokenizer with Hugging Face's call interface
(`tok(texts, text_pair=..., truncation=..., max_length=..., padding=..., return_tensors="pt",
return_offsets_mapping=True)` plus `cls_token_id`, `sep_token_id`, `pad_token_id`): bertfast's own
`Tokenizer` or `transformers.BertTokenizerFast`. They return a dict of torch tensors whose keys are
exactly the arguments of the matching head's `forward`, so `model(**batch)` works.

Position conventions follow Hugging Face: ignored labels are -100; a QA window that does not hold the
answer points both start and end at [CLS] (index 0), as `run_qa.py` does.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100
IS_NEXT = 0  # HF's NSP label: sentence B follows sentence A
NOT_NEXT = 1  # sentence B comes from another document

_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


# ---------------------------------------------------------------------------------------- checks
def _check_int_tensor(name: str, t: Any) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An int in [lo, hi) (hi=None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo or (hi is not None and value >= hi):
        upper = "inf" if hi is None else str(hi)
        raise ValueError(f"{name} must be in [{lo}, {upper}), got {value}")
    return value


def _check_texts(name: str, texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} must not be empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return list(texts)


def _labels_tensor(labels: Any, n: int) -> torch.Tensor:
    """Sequence labels: ints -> long (classification), floats -> float32 (regression)."""
    t = labels if torch.is_tensor(labels) else torch.tensor(list(labels))
    if t.dim() == 0 or t.shape[0] != n:
        raise ValueError(f"labels must hold one label per example ({n}), got shape {tuple(t.shape)}")
    if t.dtype == torch.bool:
        raise TypeError("labels must be integers (classes) or floats (regression), got bool")
    return t.float() if t.is_floating_point() else t.long()


def _encode(tokenizer, texts, text_pair=None, *, max_length: int, truncation: Any = True, offsets: bool = False):
    return tokenizer(
        texts,
        text_pair=text_pair,
        truncation=truncation,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
        return_offsets_mapping=offsets,
    )


def _model_inputs(enc) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(enc[k]) for k in _MODEL_KEYS if k in enc}


# ---------------------------------------------------------------------------------------- MLM
def mask_for_mlm(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Iterable[int],
    attention_mask: torch.Tensor | None = None,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption, as HF's DataCollatorForLanguageModeling does it.

    Each real (attention_mask == 1), non-special token is selected with `probability`; a selected
    token becomes [MASK] with probability 0.8, a token drawn uniformly from [0, vocab_size) with 0.1,
    and stays with 0.1. Returns `(masked_ids, labels)`: a new tensor (the input is not modified) and
    labels holding the original id at selected positions and -100 elsewhere. All randomness comes
    from `generator` (a CPU torch.Generator) when given, so a seeded generator reproduces the output.
    """
    _check_int_tensor("input_ids", input_ids)
    vocab_size = _check_int("vocab_size", vocab_size, 1)
    mask_token_id = _check_int("mask_token_id", mask_token_id, 0, vocab_size)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)):
        raise TypeError(f"probability must be a float, got {type(probability).__name__}")
    if not 0.0 <= float(probability) <= 1.0:  # also refuses NaN
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if isinstance(special_ids, (str, bytes)) or not isinstance(special_ids, Iterable):
        raise TypeError(f"special_ids must be an iterable of ints, got {type(special_ids).__name__}")
    specials = [_check_int("special_ids[...]", int(s) if torch.is_tensor(s) else s, 0, vocab_size) for s in special_ids]
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        bad = int(input_ids.min()) if int(input_ids.min()) < 0 else int(input_ids.max())
        raise ValueError(f"input_ids must be in [0, {vocab_size}), found {bad}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")

    ids = input_ids.detach().cpu()
    candidates = torch.ones(ids.shape, dtype=torch.bool)
    if attention_mask is not None:
        if not torch.is_tensor(attention_mask):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        am = attention_mask.detach().cpu()
        if not bool(((am == 0) | (am == 1)).all()):
            raise ValueError("attention_mask must hold only 0 and 1")
        candidates &= am.bool()
    if specials:
        candidates &= ~torch.isin(ids, torch.tensor(specials, dtype=ids.dtype))

    probs = torch.full(ids.shape, float(probability), dtype=torch.float32)
    selected = torch.bernoulli(probs, generator=generator).bool() & candidates
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & selected
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & selected & ~to_mask
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=ids.dtype)

    masked = ids.clone()
    masked[to_mask] = mask_token_id
    masked[to_random] = random_ids[to_random]
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked.to(input_ids.device), labels.to(input_ids.device)


def special_ids_of(tokenizer) -> list[int]:
    """[CLS], [SEP], [PAD], [MASK] (and [UNK]) ids of a tokenizer: the positions never masked."""
    ids = []
    for attr in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            ids.append(int(v))
    return sorted(set(ids))


# ---------------------------------------------------------------------------------------- NSP
def nsp_pairs(documents: Sequence[Sequence[str]], *, seed: int) -> list[tuple[str, str, int]]:
    """Sentence pairs for next-sentence prediction from `documents` (each a list of sentences).

    Every consecutive pair (sentence i, i+1) of a document gives one example. Exactly half of them
    (rounded down) become NotNext (label 1): sentence B is replaced by a random sentence of a
    different document; the rest are IsNext (label 0), B following A. Order is shuffled; `seed`
    makes it all reproducible.
    """
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of documents (lists of sentences), got {type(documents).__name__}")
    docs: list[list[str]] = []
    for d, doc in enumerate(documents):
        if isinstance(doc, (str, bytes)) or not isinstance(doc, Sequence):
            raise TypeError(f"documents[{d}] must be a list of sentences, got {type(doc).__name__}")
        for i, s in enumerate(doc):
            if not isinstance(s, str):
                raise TypeError(f"documents[{d}][{i}] must be a str, got {type(s).__name__}")
        docs.append(list(doc))
    if not docs or all(len(d) == 0 for d in docs):
        raise ValueError("documents must hold at least one non-empty document")
    slots = [(d, i) for d, doc in enumerate(docs) for i in range(len(doc) - 1)]
    if not slots:
        raise ValueError("documents must hold a document with at least 2 sentences (for IsNext pairs)")
    n_not_next = len(slots) // 2
    non_empty = [d for d, doc in enumerate(docs) if doc]
    if n_not_next and len(non_empty) < 2:
        raise ValueError(f"documents must hold at least 2 non-empty documents for NotNext pairs, got {len(non_empty)}")

    rng = random.Random(seed)
    rng.shuffle(slots)
    pairs = []
    for k, (d, i) in enumerate(slots):
        a = docs[d][i]
        if k < n_not_next:
            other = rng.choice([e for e in non_empty if e != d])
            pairs.append((a, rng.choice(docs[other]), NOT_NEXT))
        else:
            pairs.append((a, docs[d][i + 1], IS_NEXT))
    rng.shuffle(pairs)
    return pairs


def batch_pretraining(
    tokenizer,
    pairs: Sequence[tuple[str, str, int]],
    *,
    max_length: int = 128,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """A BertForPreTraining batch from `nsp_pairs` output: masked ids, MLM `labels`, `next_sentence_label`."""
    if len(pairs) == 0:
        raise ValueError("pairs must not be empty")
    a = _check_texts("pairs (sentence A)", [p[0] for p in pairs])
    b = _check_texts("pairs (sentence B)", [p[1] for p in pairs])
    nsp = torch.tensor([int(p[2]) for p in pairs], dtype=torch.long)
    if bool(((nsp != IS_NEXT) & (nsp != NOT_NEXT)).any()):
        raise ValueError("pairs labels must be 0 (IsNext) or 1 (NotNext)")
    batch = _model_inputs(_encode(tokenizer, a, b, max_length=max_length, truncation="longest_first"))
    masked, labels = mask_for_mlm(
        batch["input_ids"],
        vocab_size=int(tokenizer.vocab_size),
        mask_token_id=int(tokenizer.mask_token_id),
        special_ids=special_ids_of(tokenizer),
        attention_mask=batch["attention_mask"],
        probability=probability,
        generator=generator,
    )
    batch["input_ids"] = masked
    batch["labels"] = labels
    batch["next_sentence_label"] = nsp
    return batch


# ---------------------------------------------------------------------------- sentence (pair) tasks
def batch_sentences(
    tokenizer, texts: Sequence[str], labels: Any = None, *, max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Single-sentence classification/regression: [CLS] text [SEP], token types all 0."""
    texts = _check_texts("texts", texts)
    batch = _model_inputs(_encode(tokenizer, texts, max_length=max_length))
    if labels is not None:
        batch["labels"] = _labels_tensor(labels, len(texts))
    return batch


def batch_sentence_pairs(
    tokenizer, texts_a: Sequence[str], texts_b: Sequence[str], labels: Any = None, *, max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Sentence-pair classification: [CLS] a [SEP] b [SEP], token types 0 for a (and its [SEP]), 1 for b."""
    texts_a = _check_texts("texts_a", texts_a)
    texts_b = _check_texts("texts_b", texts_b)
    if len(texts_a) != len(texts_b):
        raise ValueError(f"texts_b must have as many texts as texts_a ({len(texts_a)}), got {len(texts_b)}")
    enc = _encode(tokenizer, texts_a, texts_b, max_length=max_length, truncation="longest_first")
    batch = _model_inputs(enc)
    if labels is not None:
        batch["labels"] = _labels_tensor(labels, len(texts_a))
    return batch


# ---------------------------------------------------------------------------------------- QA
@dataclass
class QAWindow:
    """One window of one (question, context) example."""

    example: int  # index of the example it came from
    input_ids: list[int]  # [CLS] question [SEP] context-window [SEP]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # char span in the context for context tokens, None elsewhere
    start_position: int  # token index of the answer start, 0 ([CLS]) when not in this window
    end_position: int


def _pieces(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Each text tokenized alone, without specials: (ids, char offsets)."""
    enc = _encode(tokenizer, texts, max_length=None, truncation=False, offsets=True)
    ids, mask, offs = enc["input_ids"], enc["attention_mask"], enc["offset_mapping"]
    out = []
    for r in range(len(texts)):
        n = int(mask[r].sum())
        row_ids = [int(x) for x in ids[r, 1 : n - 1]]  # drop [CLS] ... [SEP]
        row_off = [(int(s), int(e)) for s, e in offs[r, 1 : n - 1].tolist()]
        out.append((row_ids, row_off))
    return out


def _answer_span(answer: Any, context: str, i: int) -> tuple[int, int]:
    """(start_char, end_char), end exclusive; a dict {"answer_start", "text"} (SQuAD style) also works."""
    if isinstance(answer, dict):
        start = answer.get("answer_start")
        text = answer.get("text")
        if not isinstance(text, str):
            raise TypeError(f"answers[{i}]['text'] must be a str")
        start = _check_int(f"answers[{i}]['answer_start']", start, 0)
        end = start + len(text)
        if context[start:end] != text:
            raise ValueError(f"answers[{i}]: text {text!r} is not at character {start} of its context")
    else:
        if not isinstance(answer, Sequence) or len(answer) != 2:
            raise TypeError(f"answers[{i}] must be (start_char, end_char) or a dict, got {answer!r}")
        start, end = answer
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)):
            raise TypeError(f"answers[{i}] must hold two ints, got {answer!r}")
    if not 0 <= start < end <= len(context):
        raise ValueError(
            f"answers[{i}] span ({start}, {end}) lies outside its context of {len(context)} characters "
            "(need 0 <= start < end <= len(context))"
        )
    return start, end


def qa_windows(
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    answers: Sequence[Any] | None = None,
    *,
    max_length: int = 384,
    stride: int = 128,
) -> list[QAWindow]:
    """Split each (question, context) into windows of at most `max_length` tokens.

    Consecutive windows of a context overlap by `stride` tokens (HF's `stride` with
    `return_overflowing_tokens=True`, truncating only the context). With `answers` (character spans
    `(start, end)`, end exclusive, or SQuAD dicts), each window gets the token positions of the
    answer, or (0, 0) — [CLS] — when the answer is not wholly inside it.
    """
    questions = _check_texts("questions", questions)
    contexts = _check_texts("contexts", contexts)
    if len(questions) != len(contexts):
        raise ValueError(f"contexts must have as many texts as questions ({len(questions)}), got {len(contexts)}")
    if answers is not None and len(answers) != len(contexts):
        raise ValueError(f"answers must hold one answer per context ({len(contexts)}), got {len(answers)}")
    _check_int("max_length", max_length, 4)
    _check_int("stride", stride, 0)
    spans = [_answer_span(a, c, i) for i, (a, c) in enumerate(zip(answers, contexts))] if answers else None

    cls_id, sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    q_tok = _pieces(tokenizer, questions)
    c_tok = _pieces(tokenizer, contexts)
    windows = []
    for ex, ((q_ids, _), (c_ids, c_off)) in enumerate(zip(q_tok, c_tok)):
        room = max_length - len(q_ids) - 3  # context tokens per window
        if room <= 0 or (len(c_ids) > room and room <= stride):
            raise ValueError(
                f"max_length {max_length} leaves {room} context tokens after question {ex} "
                f"({len(q_ids)} tokens); need more than 0 and, to split the context, more than stride ({stride})"
            )
        tok_start = tok_end = None
        if spans is not None:
            s_char, e_char = spans[ex]
            inside = [k for k, (s, e) in enumerate(c_off) if s < e_char and e > s_char]
            if not inside:
                raise ValueError(f"answers[{ex}] span {spans[ex]} covers no token of its context (only spaces?)")
            tok_start, tok_end = inside[0], inside[-1]
        head = [cls_id, *q_ids, sep_id]
        begin = 0
        while True:
            stop = min(begin + room, len(c_ids))
            ids = head + c_ids[begin:stop] + [sep_id]
            types = [0] * len(head) + [1] * (stop - begin + 1)
            offsets: list[tuple[int, int] | None] = [None] * len(head) + list(c_off[begin:stop]) + [None]
            sp = ep = 0
            if tok_start is not None and begin <= tok_start and tok_end < stop:
                sp, ep = len(head) + tok_start - begin, len(head) + tok_end - begin
            windows.append(QAWindow(ex, ids, types, offsets, sp, ep))
            if stop >= len(c_ids):
                break
            begin = stop - stride
    return windows


def collate_qa(
    windows: Sequence[QAWindow], *, pad_token_id: int, with_positions: bool = True
) -> dict[str, torch.Tensor]:
    """Pad windows into a BertForQuestionAnswering batch (right padding)."""
    if len(windows) == 0:
        raise ValueError("windows must not be empty")
    S = max(len(w.input_ids) for w in windows)
    B = len(windows)
    ids = torch.full((B, S), int(pad_token_id), dtype=torch.long)
    types = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, S, dtype=torch.long)
    for r, w in enumerate(windows):
        n = len(w.input_ids)
        ids[r, :n] = torch.tensor(w.input_ids)
        types[r, :n] = torch.tensor(w.token_type_ids)
        mask[r, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if with_positions:
        batch["start_positions"] = torch.tensor([w.start_position for w in windows], dtype=torch.long)
        batch["end_positions"] = torch.tensor([w.end_position for w in windows], dtype=torch.long)
    return batch


def batch_qa(
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    answers: Sequence[Any] | None = None,
    *,
    max_length: int = 384,
    stride: int = 128,
) -> dict[str, torch.Tensor]:
    """Extractive QA batch: one row per window (see `qa_windows`); `start_positions`/`end_positions`
    when `answers` are given. Use `qa_windows` + `collate_qa` to keep each window's example index
    and offsets (for turning predicted positions back into text)."""
    windows = qa_windows(tokenizer, questions, contexts, answers, max_length=max_length, stride=stride)
    return collate_qa(windows, pad_token_id=int(tokenizer.pad_token_id), with_positions=answers is not None)


# --------------------------------------------------------------------------------- token labels
def batch_token_labels(
    tokenizer,
    words: Sequence[Sequence[str]],
    labels: Sequence[Sequence[int]] | None = None,
    *,
    max_length: int = 128,
) -> dict[str, torch.Tensor]:
    """Per-token labels (NER) for pre-split words: each word's first WordPiece gets its label; the
    other pieces, [CLS]/[SEP] and padding get -100. Words cut off by `max_length` lose their label.

    The words of a sentence are joined with single spaces and tokenized once; pieces map back to
    words through the offset mapping (no `is_split_into_words` needed).
    """
    if isinstance(words, (str, bytes)) or not isinstance(words, Sequence) or len(words) == 0:
        raise ValueError("words must be a non-empty list of sentences (lists of words)")
    texts, starts = [], []
    for i, ws in enumerate(words):
        if isinstance(ws, (str, bytes)) or not isinstance(ws, Sequence):
            raise TypeError(f"words[{i}] must be a list of words, got {type(ws).__name__}")
        pos, st = 0, []
        for j, w in enumerate(ws):
            if not isinstance(w, str) or not w.strip():
                raise ValueError(f"words[{i}][{j}] must be a non-empty str, got {w!r}")
            st.append(pos)
            pos += len(w) + 1
        texts.append(" ".join(ws))
        starts.append(st)
    if labels is not None:
        if len(labels) != len(words):
            raise ValueError(f"labels must hold one list per sentence ({len(words)}), got {len(labels)}")
        for i, (ws, ls) in enumerate(zip(words, labels)):
            if len(ls) != len(ws):
                raise ValueError(f"labels[{i}] must hold one label per word ({len(ws)}), got {len(ls)}")
    if any(len(ws) == 0 for ws in words):
        raise ValueError("words must not hold an empty sentence")

    enc = _encode(tokenizer, texts, max_length=max_length, offsets=True)
    batch = _model_inputs(enc)
    if labels is None:
        return batch
    offs = torch.as_tensor(enc["offset_mapping"])
    out = torch.full(batch["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
    mask = batch["attention_mask"]
    for r in range(len(texts)):
        seen = -1
        for k in range(int(mask[r].sum())):
            s, e = int(offs[r, k, 0]), int(offs[r, k, 1])
            if s == e:  # special token
                continue
            w = bisect.bisect_right(starts[r], s) - 1
            if w > seen:  # first piece of word w
                out[r, k] = int(labels[r][w])
                seen = w
    batch["labels"] = out
    return batch
