"""Sentence models of every family against sentence-transformers and transformers, built inside the tests.

Tokenizers are trained here on a few hundred sentences (WordPiece, byte-level BPE, Unigram) and saved
with transformers' own tokenizer classes; encoders are tiny random transformers models of odd sizes,
saved as sentence-transformers folders with sentence-transformers' own modules. Nothing downloads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

import bertfast
from bertfast import families, tokenizer_json
from bertfast.sentence import SentenceEncoder
from bertfast.sentence.backbone import longest_input
from bertfast.tokenizer_json import load_tokenizer

from .helpers import MODEL_ATOL_FP32, MODEL_ATOL_FP32_TRITON, assert_close
from .models import randomize_

st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer  # noqa: E402

CORPUS_FILE = os.path.join(os.path.dirname(__file__), "data", "tokenizer_corpus.txt")
WORDS = (
    "the a river bank guitar street quiet walk people apple café naïve run ran fast slow blue green house "
    "tree water light night morning evening city country music book paper letter window door small large"
).split()
TEXTS = [
    "The bank of the river.",
    "A man is playing a guitar on a quiet street corner while people walk past.",
    "Héllo wörld — naïve café!",
    "x",
    "Dr. Smith paid $1,234.56 on 12/03/2024, didn't he?",
    " ".join(["long"] * 60),  # longer than every max length below: truncated
    "我喜欢吃苹果。",
]
PAIRS = (TEXTS[:5], [TEXTS[5], "a short one", TEXTS[1], "", "two words"])
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def corpus() -> list[str]:
    """The tokenizer tests' multilingual lines and 300 random sentences of common words."""
    with open(CORPUS_FILE, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    rng = np.random.default_rng(0)
    return lines + [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for _ in range(300)]


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    tok = tokenizers.implementations.BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(corpus(), vocab_size=600, min_frequency=1, special_tokens=specials, show_progress=False)
    return tok.get_vocab()


def _unigram_vocab(specials: list[str]) -> list[tuple[str, float]]:
    tok = tokenizers.implementations.SentencePieceUnigramTokenizer()
    tok.train_from_iterator(corpus(), vocab_size=2000, special_tokens=specials, unk_token="<unk>", show_progress=False)
    return [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]


def _bpe():
    tok = tokenizers.implementations.ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus(), vocab_size=500, min_frequency=1, special_tokens=BPE_SPECIALS, show_progress=False)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def build_tokenizer(family: str):
    """transformers' own tokenizer class of `family` over a vocabulary trained here."""
    t = transformers
    if family in ("bert", "distilbert", "electra"):
        cls = {"bert": t.BertTokenizerFast, "distilbert": t.DistilBertTokenizerFast, "electra": t.ElectraTokenizerFast}
        return cls[family](vocab=_wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    if family == "mpnet":
        return t.MPNetTokenizerFast(vocab=_wordpiece_vocab(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]))
    if family == "roberta":
        vocab, merges = _bpe()
        return t.RobertaTokenizerFast(vocab=vocab, merges=merges)
    if family == "albert":
        return t.AlbertTokenizerFast(vocab=_unigram_vocab(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]))
    cls = {"xlm-roberta": t.XLMRobertaTokenizerFast, "camembert": t.CamembertTokenizerFast}[family]
    return cls(vocab=_unigram_vocab(BPE_SPECIALS))


@pytest.fixture(scope="module")
def saved_tokenizers(tmp_path_factory) -> dict[str, str]:
    out = {}
    for family in families.SUPPORTED:
        d = str(tmp_path_factory.mktemp(f"tok_{family}"))
        tok = build_tokenizer(family)
        tok.save_pretrained(d)
        if families.family_for(family).tokenizer.kind == "wordpiece":
            write_vocab_txt(tok, d)
        out[family] = d
    return out


def write_vocab_txt(tok, d: str) -> None:
    """vocab.txt beside tokenizer.json, as WordPiece folders saved by earlier transformers releases have it."""
    vocab = tok.get_vocab()
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]))


# ------------------------------------------------------------------------------------ tokenizer ids


def _reference_packed(ref, texts, pair, max_length):
    enc = ref(texts, pair, truncation=max_length is not None, max_length=max_length)
    rows = enc["input_ids"]
    types = np.concatenate(enc["token_type_ids"]) if "token_type_ids" in enc else None
    return np.concatenate(rows), types, np.cumsum([0] + [len(r) for r in rows])


@pytest.mark.parametrize("family", families.SUPPORTED)
@pytest.mark.parametrize("max_length", [None, 1 + 32, 7])
@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pairs"])
def test_tokenizer_ids_equal_transformers(saved_tokenizers, family, max_length, pairs):
    d = saved_tokenizers[family]
    ours = load_tokenizer(d, families.family_for(family))
    ref = transformers.AutoTokenizer.from_pretrained(d)
    texts, pair = PAIRS if pairs else (TEXTS, None)
    packed = ours.pack(texts, pair, max_length=max_length)
    ids, types, cu = _reference_packed(ref, texts, pair, max_length)
    assert packed["input_ids"].tolist() == ids.tolist(), family
    assert packed["cu_seqlens"].tolist() == cu.tolist()
    assert packed["max_seqlen"] == int(np.diff(cu).max())
    if types is not None:  # transformers 5's ALBERT tokenizer returns none (tokenizer.json's types are kept)
        assert packed["token_type_ids"].tolist() == types.tolist()
    if pairs and family == "mpnet":  # <s> A </s></s> B </s>
        sep = ref.convert_tokens_to_ids("</s>")
        row = packed["input_ids"][cu[0] : cu[1]].tolist()
        assert row.count(sep) == 3 and row[0] == ref.convert_tokens_to_ids("<s>")


def test_tokenizer_kind_follows_the_registry(saved_tokenizers, tmp_path):
    for family in families.SUPPORTED:
        d = saved_tokenizers[family]
        tok = load_tokenizer(d, families.family_for(family))
        if families.family_for(family).tokenizer.kind == "tokenizer.json":
            assert type(tok).__name__ == "JsonTokenizer"
            continue
        assert type(tok).__name__ == ("DoubleSeparatorPairs" if family == "mpnet" else "Tokenizer")
        json_only = tmp_path / family  # a WordPiece folder as transformers 5 saves it: no vocab.txt
        shutil.copytree(d, json_only)
        os.remove(json_only / "vocab.txt")
        other = load_tokenizer(json_only, families.family_for(family))
        assert type(other).__name__ == "JsonTokenizer"
        for a, b in zip(tok.pack(*PAIRS, max_length=19).values(), other.pack(*PAIRS, max_length=19).values()):
            assert np.array_equal(a, b)


def test_json_tokenizer_concurrent_lengths_and_bad_input(saved_tokenizers):
    """Calls with different max lengths from many threads get what one thread gets (truncation is per call)."""
    from concurrent.futures import ThreadPoolExecutor

    tok = load_tokenizer(saved_tokenizers["xlm-roberta"], families.family_for("xlm-roberta"))
    lengths = [None, 3, 7, 13, 33] * 8
    alone = {n: tok.pack(TEXTS, max_length=n)["input_ids"].tolist() for n in set(lengths)}
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda n: tok.pack(TEXTS, max_length=n)["input_ids"].tolist(), lengths))
    assert together == [alone[n] for n in lengths]
    assert len(tok._by_length) <= tokenizer_json.ENGINES_KEPT < len(set(lengths))  # memory stays bounded
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        tok.pack(["a", 3])
    with pytest.raises(ValueError, match="max_length"):
        tok.pack(TEXTS, max_length=0)
    with pytest.raises(ValueError, match="text_pair has 1 texts"):
        tok.pack(TEXTS, ["one"])
    with pytest.raises(ValueError, match="return_tensors"):
        tok.pack(TEXTS, return_tensors="tf")


# ----------------------------------------------------------------------------- sentence-transformers folders

HIDDEN, HEADS, INTERMEDIATE, LAYERS, DENSE_OUT, MAX_SEQ = 36, 3, 52, 2, 17, 33


EMBEDDING = 20  # ELECTRA's and ALBERT's embedding width, projected to HIDDEN


def _encoder(family: str, tok, seed: int):
    """A tiny random base model of `family` (odd sizes) sized for `tok`'s vocabulary."""
    t = transformers
    common = dict(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_SEQ + 9,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=tok.pad_token_id,
    )
    roberta_like = dict(type_vocab_size=1, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    configs = {
        "bert": lambda: t.BertConfig(**common),
        "roberta": lambda: t.RobertaConfig(**common, **roberta_like),
        "xlm-roberta": lambda: t.XLMRobertaConfig(**common, **roberta_like),
        "camembert": lambda: t.CamembertConfig(**common, **roberta_like),
        "mpnet": lambda: t.MPNetConfig(**common, relative_attention_num_buckets=32),
        "electra": lambda: t.ElectraConfig(**common, embedding_size=EMBEDDING),
        "albert": lambda: t.AlbertConfig(**common, embedding_size=EMBEDDING, hidden_act="gelu_new"),
        "distilbert": lambda: t.DistilBertConfig(
            vocab_size=len(tok),
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=INTERMEDIATE,
            max_position_embeddings=MAX_SEQ + 9,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=tok.pad_token_id,
        ),
    }
    model = t.AutoModel.from_config(configs[family]())
    return randomize_(model, seed).eval()


def make_st_folder(
    root,
    family: str,
    modes=("mean",),
    dense: bool = True,
    normalize: bool = True,
    prompts=None,
    seed: int = 0,
    lower_case: bool = False,
) -> str:
    """A sentence-transformers folder saved by sentence-transformers: Transformer, Pooling, (Dense), (Normalize)."""
    hf_dir, st_dir = os.path.join(root, "hf"), os.path.join(root, "st")
    tok = build_tokenizer(family)
    _encoder(family, tok, seed).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=MAX_SEQ, do_lower_case=lower_case)
    modules = [transformer, Pooling(HIDDEN, pooling_mode=tuple(modes))]
    if dense:
        layer = Dense(HIDDEN * len(modes), DENSE_OUT, activation_function=torch.nn.Tanh())
        randomize_(layer, seed + 1)
        modules.append(layer)
    if normalize:
        modules.append(Normalize())
    kwargs = dict(prompts=prompts[0], default_prompt_name=prompts[1]) if prompts else {}
    st.SentenceTransformer(modules=modules, device="cpu", **kwargs).save(st_dir)
    if families.family_for(family).tokenizer.kind == "wordpiece":
        write_vocab_txt(tok, st_dir)  # the C++ WordPiece reads vocab.txt
    return st_dir


@pytest.fixture(scope="module", params=["roberta", "mpnet"])
def folder(request, tmp_path_factory) -> tuple[str, str]:
    return request.param, make_st_folder(str(tmp_path_factory.mktemp(f"st_{request.param}")), request.param)


def random_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 45)))) for _ in range(n)]


def test_encode_equals_sentence_transformers(folder):
    family, d = folder
    texts = TEXTS + random_texts(33, seed=1)
    ref = st.SentenceTransformer(d, device="cpu").encode(texts, batch_size=5)
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    assert enc.dimension == DENSE_OUT == ref.shape[1]
    assert_close(torch.from_numpy(enc.encode(texts, batch_size=5)), torch.from_numpy(ref), MODEL_ATOL_FP32, family)
    assert_close(torch.from_numpy(enc.encode(texts, batch_size=64)), torch.from_numpy(ref), MODEL_ATOL_FP32, family)


def test_optimized_sentence_transformer_equals_plain(folder):
    import bertfast

    family, d = folder
    texts = TEXTS + random_texts(8, seed=2)
    ref = st.SentenceTransformer(d, device="cpu").encode(texts, batch_size=4)
    patched = bertfast.optimize(st.SentenceTransformer(d, device="cpu"), backend="torch")
    assert bertfast.is_optimized(patched)
    got = patched.encode(texts, batch_size=4)
    assert_close(
        torch.from_numpy(got), torch.from_numpy(ref), MODEL_ATOL_FP32, f"optimize(SentenceTransformer) {family}"
    )


def test_encode_on_the_triton_kernels(folder):
    family, d = folder
    texts = [TEXTS[1], TEXTS[3], TEXTS[5]]
    ref = st.SentenceTransformer(d, device="cpu").encode(texts)
    got = SentenceEncoder.from_pretrained(d, backend="triton").encode(texts)
    assert_close(torch.from_numpy(got), torch.from_numpy(ref), MODEL_ATOL_FP32_TRITON, f"{family} on triton")


def test_token_embeddings_and_dicts(folder):
    family, d = folder
    texts = [TEXTS[0], TEXTS[5], TEXTS[3]]
    model = st.SentenceTransformer(d, device="cpu")
    ref_tokens = model.encode(texts, output_value="token_embeddings")
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    for ours, ref in zip(enc.encode(texts, output_value="token_embeddings"), ref_tokens):
        n = ours.shape[0]  # sentence-transformers pads to the batch's longest; its real rows come first
        assert_close(ours, ref[:n], MODEL_ATOL_FP32, f"{family} token embeddings")
    rows = enc.encode(texts, output_value=None)
    ref_rows = model.encode(texts, output_value=None)
    for ours, ref in zip(rows, ref_rows):
        n = int(ref["attention_mask"].sum())
        assert ours["input_ids"].tolist() == ref["input_ids"][:n].tolist()
        assert_close(ours["sentence_embedding"], ref["sentence_embedding"], MODEL_ATOL_FP32, "sentence_embedding")


MODES = [
    ("cls",),
    ("max",),
    ("mean",),
    ("mean_sqrt_len_tokens",),
    ("weightedmean",),
    ("lasttoken",),
    ("cls", "mean", "max"),
]


@pytest.mark.parametrize("modes", MODES, ids=["+".join(m) for m in MODES])
def test_pooling_modes_equal_sentence_transformers(tmp_path, modes):
    d = make_st_folder(str(tmp_path), "roberta", modes=modes, dense=len(modes) > 1, normalize=False, seed=3)
    texts = TEXTS + random_texts(9, seed=4)
    ref = st.SentenceTransformer(d, device="cpu").encode(texts)
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    assert enc.pooling.modes == modes and enc.dimension == ref.shape[1]
    assert_close(torch.from_numpy(enc.encode(texts)), torch.from_numpy(ref), MODEL_ATOL_FP32, "+".join(modes))


@pytest.mark.parametrize("layout", ["saved", "sentence_bert_config"])
def test_do_lower_case_follows_sentence_transformers(tmp_path, layout):
    """sentence-transformers 6 saves do_lower_case as a Lowercase step in tokenizer.json; earlier releases
    wrote it to sentence_bert_config.json beside an unchanged tokenizer. Both lower-case every input."""
    d = make_st_folder(str(tmp_path), "roberta", seed=11, lower_case=True)  # byte-level BPE: case-sensitive
    if layout == "sentence_bert_config":
        shutil.copy(os.path.join(str(tmp_path), "hf", "tokenizer.json"), os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "sentence_bert_config.json"), "w", encoding="utf-8") as f:
            json.dump({"max_seq_length": MAX_SEQ, "do_lower_case": True}, f)
    texts = ["The BANK of the River.", "Héllo WÖRLD", "MiXeD CaSe words"]
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    assert enc.pooling.lower_case == (layout == "sentence_bert_config")
    model = st.SentenceTransformer(d, device="cpu")
    if layout == "saved":
        # transformers 5 rebuilds a RoBERTa tokenizer from vocab and merges, dropping the Lowercase step of
        # the saved tokenizer.json, so the reloaded model is given the lower-cased input it was built to see.
        ref = model.encode([t.lower() for t in texts], prompt="query: ")
    else:
        ref = model.encode(texts, prompt="Query: ")
    got = enc.encode(texts, prompt="Query: ")
    assert_close(torch.from_numpy(got), torch.from_numpy(ref), MODEL_ATOL_FP32, f"do_lower_case ({layout})")
    lowered = enc.encode([t.lower() for t in texts], prompt="query: ")
    assert_close(torch.from_numpy(got), torch.from_numpy(lowered), 0.0, "the same as lower-case input")


def test_prompts_follow_sentence_transformers(tmp_path):
    prompts = ({"query": "query: ", "doc": "passage: "}, "query")
    d = make_st_folder(str(tmp_path), "mpnet", prompts=prompts, seed=5)
    texts = [TEXTS[0], TEXTS[2], TEXTS[3]]
    model = st.SentenceTransformer(d, device="cpu")
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    for kwargs in ({}, {"prompt_name": "doc"}, {"prompt": "instruct: "}, {"prompt": ""}):
        ref = model.encode(texts, **kwargs)
        assert_close(torch.from_numpy(enc.encode(texts, **kwargs)), torch.from_numpy(ref), MODEL_ATOL_FP32, str(kwargs))
    default, plain = enc.encode(texts), enc.encode(texts, prompt="")
    assert np.abs(default - plain).max() > 1e-3  # the default prompt is applied
    with pytest.warns(UserWarning, match="prompt_name is ignored"):
        both = enc.encode(texts, prompt="instruct: ", prompt_name="doc")
    assert_close(torch.from_numpy(both), torch.from_numpy(model.encode(texts, prompt="instruct: ")), MODEL_ATOL_FP32)
    with pytest.raises(ValueError, match="prompt_name 'nope'"):
        enc.encode(texts, prompt_name="nope")


OTHER_FAMILIES = [f for f in families.SUPPORTED if f not in ("roberta", "mpnet")]


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_every_family_folder_equals_sentence_transformers(tmp_path, family):
    d = make_st_folder(str(tmp_path), family, modes=("mean", "cls"), seed=9)
    texts = TEXTS + random_texts(6, seed=10)
    ref = st.SentenceTransformer(d, device="cpu").encode(texts, batch_size=4)
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    import bertfast

    native = isinstance(enc.model, bertfast.BertModel)  # BERT runs natively, the others patched by optimize()
    assert native == (family == "bert") and (native or bertfast.is_optimized(enc.model))
    got = enc.encode(texts, batch_size=4)
    assert_close(torch.from_numpy(got), torch.from_numpy(ref), MODEL_ATOL_FP32, f"{family} sentence folder")


def test_generators_and_repr(folder):
    family, d = folder
    texts = random_texts(7, seed=6)
    enc = SentenceEncoder.from_pretrained(d, backend="torch")
    from_gen = enc.encode(t for t in texts)
    ref = st.SentenceTransformer(d, device="cpu").encode(texts)
    assert from_gen.shape == ref.shape
    assert_close(torch.from_numpy(from_gen), torch.from_numpy(ref), MODEL_ATOL_FP32, "generator")
    text = repr(enc)
    for part in (f"dim={DENSE_OUT}", family, f"hidden={HIDDEN}", "mean", f"{HIDDEN} -> {DENSE_OUT}, Tanh", "L2"):
        assert part in text, (part, text)


# ------------------------------------------------------------------------------------------ refusals


def test_missing_transformers_is_a_clear_import_error(folder, monkeypatch):
    family, d = folder
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        SentenceEncoder.from_pretrained(d)


def test_unsupported_model_type_is_refused_by_name(folder, tmp_path):
    _, d = folder
    bad = tmp_path / "deberta"
    bad.mkdir()
    with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "deberta-v2"}), encoding="utf-8")
    with pytest.raises(ValueError, match="'deberta-v2'.*roberta"):
        SentenceEncoder.from_pretrained(bad)


def test_bad_dense_modules_are_refused(tmp_path):
    d = make_st_folder(str(tmp_path), "roberta", seed=7)
    path = os.path.join(d, "2_Dense", "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for bad, message in (
        ({"activation_function": "os.system"}, "activation_function"),
        ({"in_features": HIDDEN + 1}, "in_features"),
        ({"module_input_name": "token_embeddings"}, "module_input_name"),
    ):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({**cfg, **bad}, f)
        with pytest.raises(ValueError, match=message):
            SentenceEncoder.from_pretrained(d, backend="torch")


# ------------------------------------------------------------------------------------- the commands


def test_cli_encode_and_embed_read_the_folder(folder, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    from bertfast.cli import main
    from bertfast.embed import embed_corpus

    family, d = folder
    texts = random_texts(11, seed=8)
    ref = st.SentenceTransformer(d, device="cpu").encode(texts)
    assert main(["encode", "--json", "--model", d, "--backend", "torch", *texts]) == 0
    printed = np.array(json.loads(capsys.readouterr().out), dtype=np.float32)
    assert_close(torch.from_numpy(printed), torch.from_numpy(ref), MODEL_ATOL_FP32, f"bertfast encode {family}")
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    embed_corpus(tmp_path / "in.txt", tmp_path / "out", model_dir=d, device="cpu", shard_size=4, quiet=True)
    table = pq.read_table(tmp_path / "out").sort_by("id")
    col = table.column("embedding").combine_chunks()
    assert col.type.list_size == DENSE_OUT
    got = np.array(col.flatten().to_numpy()).reshape(len(table), DENSE_OUT)
    assert_close(torch.from_numpy(got), torch.from_numpy(ref), MODEL_ATOL_FP32, f"bertfast embed {family}")


def test_folder_without_model_type_is_bert_for_the_tokenizer_too(saved_tokenizers, tmp_path):
    """A config.json without `model_type` (older BERT checkpoints) is BERT for the tokenizer, as for the encoder."""
    d = tmp_path / "bert"
    shutil.copytree(saved_tokenizers["bert"], d)
    (d / "config.json").write_text(json.dumps({"hidden_size": HIDDEN}), encoding="utf-8")
    tok = load_tokenizer(d)
    assert type(tok).__name__ == "Tokenizer"
    ref = load_tokenizer(saved_tokenizers["bert"], families.family_for("bert"))
    for a, b in zip(tok.pack(*PAIRS, max_length=19).values(), ref.pack(*PAIRS, max_length=19).values()):
        assert np.array_equal(a, b)


def test_longest_input_is_the_encoders_own_limit():
    """MPNet numbers positions after its embeddings' own padding_idx (1), whatever config.pad_token_id says:
    the sentence encoder's limit is the one the model's input checks enforce."""
    model = transformers.MPNetModel(
        transformers.MPNetConfig(
            vocab_size=40, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_SEQ + 9, pad_token_id=0,
        )
    ).eval()  # fmt: skip
    bertfast.optimize(model)
    limit = longest_input(model)
    assert limit == MAX_SEQ + 9 - (model.embeddings.padding_idx + 1)
    ids = torch.randint(2, 40, (1, limit))
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))  # the longest input runs
        with pytest.raises(ValueError):
            model(input_ids=torch.randint(2, 40, (1, limit + 1)), attention_mask=torch.ones(1, limit + 1))
