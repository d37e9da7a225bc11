"""What the engines are fed: fixed shapes, seeded variable lengths, and real sentences.

Every case is a list of input sets (rotated between calls so that no call reuses the previous
call's tensors), each right-padded to its longest sequence as tokenizers do with padding=True.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .models import minilm_dir

VARLEN_DISTS = ("uniform", "bimodal")


def varlen_lengths(dist: str, batch: int, max_len: int, seed: int) -> list[int]:
    """Seeded lengths in [1, max_len] with a mean of about max_len / 2.

    uniform: U{1..max_len}. bimodal: half short (U{1..max/4}, queries), half long (U{3max/4..max},
    documents); the mean is max/2 as well, but the spread is what real mixed traffic looks like.
    """
    g = torch.Generator().manual_seed(seed)
    if dist == "uniform":
        x = torch.randint(1, max_len + 1, (batch,), generator=g)
    elif dist == "bimodal":
        q = max(1, max_len // 4)
        short = torch.randint(1, q + 1, (batch,), generator=g)
        long = torch.randint(max(1, max_len - q + 1), max_len + 1, (batch,), generator=g)
        x = torch.where(torch.rand(batch, generator=g) < 0.5, short, long)
    else:
        raise ValueError(f"dist: unknown length distribution {dist!r}; one of {VARLEN_DISTS}")
    return [int(v) for v in x]


# ----------------------------------------------------------------------------- real sentences
# Word lists read better one idea per line than as the formatter would wrap them.
# fmt: off
_EN_SUBJECTS = ["The committee", "My neighbour's cat", "A small startup in Berlin", "The new library",
                "Our quarterly report", "The train to Edinburgh", "This recipe", "The research team",
                "An old lighthouse", "The customer support agent", "Every student", "The weather service"]
_EN_VERBS = ["announced", "quietly rejected", "is still reviewing", "praised", "could not explain",
             "will publish", "has redesigned", "accidentally deleted", "carefully measured", "celebrated"]
_EN_OBJECTS = ["the budget for next year", "a proposal about renewable energy in rural areas",
               "the results", "its first product", "the delay", "an unusual pattern in the data",
               "the schedule after three weeks of heavy rain and several cancelled meetings",
               "a recipe with saffron, lemon and roasted almonds", "the annual report",
               "the bug that crashed the payment system on Friday night"]
_EN_TAILS = ["", ".", " yesterday.", ", according to a statement released on Monday.",
             (" despite strong objections from several members of the board, who argued that the plan "
              "was too expensive and poorly documented."), "?", " — nobody expected that!",
             " in 2024, after 17 months of work."]
_ZH_SUBJECTS = ["我们公司", "这家餐厅", "研究小组", "北京的天气", "我的朋友", "新的图书馆", "这部电影", "市政府"]
_ZH_VERBS = ["昨天宣布了", "正在讨论", "非常喜欢", "还没有解释", "重新设计了", "明年将发布"]
_ZH_OBJECTS = ["新的计划", "一个关于可再生能源的提案", "那个问题", "第一款产品", "年度报告",
               "数据中一个不寻常的模式，并且希望在下个月之前找到原因"]
# fmt: on


def sentences(n: int = 400, seed: int = 1234) -> list[str]:
    """A built-in, seeded set of varied sentences: ~75% English, ~15% Chinese, ~10% mixed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.75:
            s = f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)}{rng.choice(_EN_TAILS)}"
            if rng.random() < 0.25:  # some two-sentence inputs
                s += f" {rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)}."
        elif r < 0.9:
            s = f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}。"
        else:
            zh = f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}"
            s = f"{rng.choice(_EN_SUBJECTS)} said: “{zh}”"
        out.append(s)
    return out


_TOKENIZED: dict[str, Any] = {}  # minilm_dir -> (ids, tokenizer name)


def sentence_ids() -> tuple[list[list[int]], str]:
    """The built-in sentences tokenized with the MiniLM vocabulary (with [CLS]/[SEP]), and which
    tokenizer did it: bertfast's C++ Tokenizer when it imports, else transformers' BertTokenizerFast."""
    where = minilm_dir()
    if where not in _TOKENIZED:
        texts = sentences()
        try:
            from bertfast.tokenizer import Tokenizer

            tok = Tokenizer.from_pretrained(where)
            name = "bertfast.tokenizer.Tokenizer"
        except Exception as e:  # not built yet: say so in the report
            import transformers

            tok = transformers.BertTokenizerFast.from_pretrained(where)
            name = f"transformers.BertTokenizerFast (bertfast Tokenizer unavailable: {type(e).__name__})"
        _TOKENIZED[where] = ([list(map(int, x)) for x in tok(texts)["input_ids"]], name)
    return _TOKENIZED[where]


# ----------------------------------------------------------------------------- cases
@dataclass
class InputSet:
    ids: torch.Tensor  # (B, S) padded with 0
    mask: torch.Tensor  # (B, S) 1 at real tokens
    lengths: list[int]


@dataclass
class Case:
    lengths_kind: str  # "fixed" | "varlen-<dist>" | "varlen-sentences"
    batch: int
    seq: int  # the case's maximum length
    sets: list[InputSet]

    @property
    def name(self) -> str:
        return f"{self.lengths_kind} b{self.batch} s{self.seq}"


def _case_lengths(kind: str, batch: int, seq: int, set_seed: int, k: int) -> tuple[list[int], list[list[int]] | None]:
    """Lengths of one input set, and its token rows when they are real sentences."""
    if kind == "fixed":
        return [seq] * batch, None
    if kind == "varlen-sentences":
        all_ids, _ = sentence_ids()
        start = (k * batch) % len(all_ids)
        rows = [all_ids[(start + i) % len(all_ids)] for i in range(batch)]
        rows = [r if len(r) <= seq else r[: seq - 1] + [r[-1]] for r in rows]  # truncate, keep [SEP]
        return [len(r) for r in rows], rows
    if kind.startswith("varlen-"):
        return varlen_lengths(kind.removeprefix("varlen-"), batch, seq, set_seed), None
    raise ValueError(f"kind: unknown workload {kind!r}")


def make_case(kind: str, batch: int, seq: int, vocab: int, n_sets: int, seed: int = 0) -> Case:
    """Input sets for a case: right-padded to the longest sequence of each batch (as tokenizers do
    with padding=True); ids are random non-special tokens, or real tokens for varlen-sentences."""
    sets = []
    for k in range(n_sets):
        set_seed = seed * 1000 + k
        lengths, rows = _case_lengths(kind, batch, seq, set_seed, k)
        g = torch.Generator().manual_seed(set_seed)
        S = max(lengths)
        ids = torch.randint(min(1000, vocab // 2), vocab, (batch, S), generator=g)  # (B, S), no special tokens
        if rows is not None:
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r) % vocab  # (the modulo only matters for the tests' tiny vocab)
        mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, S)
        sets.append(InputSet(ids * mask, mask, lengths))
    return Case(kind, batch, seq, sets)


def plan_cases(
    batches: Sequence[int], seqs: Sequence[int], varlen: Sequence[str], varlen_seqs: Sequence[int] | None, max_pos: int
) -> list[tuple[str, int, int]]:
    """(kind, batch, seq) of a run: every fixed batch x seq, then each variable-length workload at
    `varlen_seqs` (default: 128 if asked for, and the largest seq); real sentences at one length."""
    seqs = [s for s in seqs if s <= max_pos]
    out = [("fixed", b, s) for b in batches for s in seqs]
    if not seqs:
        return out
    vseqs = varlen_seqs if varlen_seqs is not None else sorted({s for s in seqs if s == 128} | {max(seqs)})
    for kind in varlen:
        for s in vseqs:
            if s > max_pos:
                continue
            for b in batches:
                if kind == "varlen-sentences" and s != max(vseqs):
                    continue  # real sentences are short: one max length suffices
                out.append((kind, b, s))
    return out
