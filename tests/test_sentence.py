"""SentenceEncoder.encode against sentence-transformers' encode(), argument by argument, on the real
MiniLM checkpoint: values, types, shapes and edge cases."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import bertfast
from bertfast.sentence import (
    PoolingSpec,
    SentenceEncoder,
    pool_packed,
    quantization_ranges,
    quantize_embeddings,
)

from .helpers import ATOL, EMBED_ATOL_FP32, assert_close

st = pytest.importorskip("sentence_transformers")
st_quantize = pytest.importorskip("sentence_transformers.util").quantize_embeddings

SENTENCES = [
    "我喜欢吃苹果。",
    "The bank of the river.",
    "A man is playing a guitar on a quiet street corner while people walk past.",
    "Héllo wörld — naïve café!",
    "x",
    " ".join(["long"] * 300),  # longer than max_seq_length (256): truncated as sentence-transformers does
]
WORDS = [
    "the",
    "a",
    "river",
    "bank",
    "guitar",
    "street",
    "quiet",
    "walk",
    "people",
    "apple",
    "café",
    "naïve",
    "我",
    "喜欢",
    "run",
    "ran",
    "fast",
    "slow",
    "blue",
]
FP32 = ATOL[torch.float32]


def random_sentences(n: int, seed: int) -> list[str]:
    """n sentences of 1..40 random words: varied lengths, so sorting and batching matter."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 41)))) for _ in range(n)]


@pytest.fixture(scope="module")
def st_model(minilm_dir):
    return st.SentenceTransformer(minilm_dir, device="cpu")


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir, backend="torch")


@pytest.fixture(scope="module")
def unnormalized_dir(minilm_dir, tmp_path_factory):
    """MiniLM without its Normalize module: a model whose embeddings are not unit length."""
    d = tmp_path_factory.mktemp("minilm_no_normalize")
    for name in os.listdir(minilm_dir):
        src = os.path.join(minilm_dir, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, d / name)
    with open(os.path.join(minilm_dir, "modules.json"), encoding="utf-8") as f:
        modules = [m for m in json.load(f) if not m["type"].endswith("Normalize")]
    (d / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return str(d)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ------------------------------------------------------------------------------- sentence embeddings


def test_sentence_embeddings_equal_sentence_transformers(encoder, st_model):
    ours = encoder.encode(SENTENCES, batch_size=4)
    ref = st_model.encode(SENTENCES, batch_size=4, convert_to_numpy=True)
    assert ours.dtype == ref.dtype == np.float32
    assert ours.shape == ref.shape == (len(SENTENCES), 384)
    assert cosine_rows(ours, ref).min() >= 0.99999
    assert_close(torch.from_numpy(ours), torch.from_numpy(ref), FP32, "sentence embeddings")
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=ATOL[torch.float32]), (
        "the model folder asks for Normalize"
    )


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_any_batch_size_gives_input_order(encoder, st_model, batch_size):
    texts = random_sentences(13, seed=batch_size)
    ref = st_model.encode(texts, batch_size=5)
    ours = encoder.encode(texts, batch_size=batch_size)
    assert_close(torch.from_numpy(ours), torch.from_numpy(ref), FP32, f"batch_size={batch_size}")


def test_batches_are_formed_longest_first(encoder, monkeypatch):
    texts = random_sentences(9, seed=11)
    seen: list[list[str]] = []
    pack = encoder.tokenizer.pack

    def recording_pack(batch, **kwargs):
        seen.append(list(batch))
        return pack(batch, **kwargs)

    monkeypatch.setattr(encoder.tokenizer, "pack", recording_pack)
    encoder.encode(texts, batch_size=4)
    assert [len(b) for b in seen] == [4, 4, 1]
    flat = [t for b in seen for t in b]
    assert sorted(flat) == sorted(texts)
    assert [len(t) for t in flat] == sorted((len(t) for t in texts), reverse=True)


def test_single_string_and_other_containers(encoder, st_model):
    one = encoder.encode(SENTENCES[2])
    ref = st_model.encode(SENTENCES[2])
    assert isinstance(one, np.ndarray) and one.shape == ref.shape == (384,)
    assert_close(torch.from_numpy(one), torch.from_numpy(ref), FP32, "single string")
    as_list = encoder.encode(SENTENCES[:3])
    for other in (tuple(SENTENCES[:3]), np.array(SENTENCES[:3])):
        assert np.array_equal(encoder.encode(other), as_list)


def test_convert_to_tensor_and_to_list(encoder, st_model):
    texts = random_sentences(5, seed=3)
    ours, ref = encoder.encode(texts, convert_to_tensor=True), st_model.encode(texts, convert_to_tensor=True)
    assert isinstance(ours, torch.Tensor) and ours.dtype == ref.dtype and ours.shape == ref.shape
    assert_close(ours, ref, FP32, "convert_to_tensor")
    single = encoder.encode(texts[0], convert_to_tensor=True)
    assert isinstance(single, torch.Tensor) and single.shape == (384,)
    # convert_to_tensor wins over convert_to_numpy, as in sentence-transformers
    assert isinstance(encoder.encode(texts, convert_to_tensor=True, convert_to_numpy=True), torch.Tensor)
    rows, ref_rows = encoder.encode(texts, convert_to_numpy=False), st_model.encode(texts, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == len(ref_rows) == 5
    for i, (a, b) in enumerate(zip(rows, ref_rows)):
        assert isinstance(a, torch.Tensor) and a.shape == b.shape == (384,)
        assert_close(a, b, FP32, f"row {i}")


def test_normalize_embeddings(unnormalized_dir):
    ref_model = st.SentenceTransformer(unnormalized_dir, device="cpu")
    ours_model = SentenceEncoder.from_pretrained(unnormalized_dir, backend="torch")
    texts = random_sentences(6, seed=5)
    raw, ref_raw = ours_model.encode(texts), ref_model.encode(texts)
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).min() > 1e-2, "this model does not normalize by itself"
    assert_close(torch.from_numpy(raw), torch.from_numpy(ref_raw), FP32, "unnormalized")
    unit = ours_model.encode(texts, normalize_embeddings=True)
    ref_unit = ref_model.encode(texts, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=EMBED_ATOL_FP32)
    assert_close(torch.from_numpy(unit), torch.from_numpy(ref_unit), FP32, "normalize_embeddings=True")


# ------------------------------------------------------------------------------- other outputs


def test_token_embeddings_equal_sentence_transformers(encoder, st_model):
    texts = random_sentences(5, seed=7) + [SENTENCES[-1]]  # the last one truncated to 256 tokens
    ours = encoder.encode(texts, output_value="token_embeddings", batch_size=4)
    ref = st_model.encode(texts, output_value="token_embeddings", batch_size=4)
    assert isinstance(ours, list) and len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert isinstance(a, torch.Tensor) and a.shape == b.shape, (i, a.shape, b.shape)
        assert_close(a, b, FP32, f"token embeddings of sentence {i}")
    assert ours[-1].shape[0] == 256
    # convert_to_tensor and convert_to_numpy do not apply: still a list of tensors
    as_tensor = encoder.encode(texts[:2], output_value="token_embeddings", convert_to_tensor=True)
    assert isinstance(as_tensor, list) and all(isinstance(t, torch.Tensor) for t in as_tensor)
    single = encoder.encode(texts[0], output_value="token_embeddings")
    assert isinstance(single, torch.Tensor)
    assert_close(single, ref[0], FP32, "single string tokens")


def test_output_value_none_gives_dicts(encoder, st_model):
    texts = random_sentences(4, seed=9)
    ours = encoder.encode(texts, output_value=None, batch_size=3)
    ref = st_model.encode(texts, output_value=None, batch_size=3)
    assert isinstance(ours, list) and len(ours) == 4
    tensor_keys = {k for k, v in ref[0].items() if isinstance(v, torch.Tensor)}
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert set(a) == tensor_keys
        n = int(b["attention_mask"].sum())  # sentence-transformers pads to the batch; bertfast does not
        assert a["input_ids"].tolist() == b["input_ids"][:n].tolist()
        assert a["token_type_ids"].tolist() == b["token_type_ids"][:n].tolist()
        assert a["attention_mask"].tolist() == [1] * n
        assert_close(a["token_embeddings"], b["token_embeddings"][:n], FP32, f"dict {i} token_embeddings")
        assert_close(a["sentence_embedding"], b["sentence_embedding"], FP32, f"dict {i} sentence_embedding")
    single = encoder.encode(texts[0], output_value=None)
    assert isinstance(single, dict) and set(single) == tensor_keys


@pytest.mark.parametrize("output_value", ["sentence_embedding", "token_embeddings", None])
def test_empty_list(encoder, st_model, output_value):
    for kwargs in ({}, {"convert_to_tensor": True}, {"convert_to_numpy": False}):
        ours = encoder.encode([], output_value=output_value, **kwargs)
        ref = st_model.encode([], output_value=output_value, **kwargs)
        assert type(ours) is type(ref), kwargs
        if isinstance(ref, (np.ndarray, torch.Tensor)):
            assert ours.shape == ref.shape and ours.dtype == ref.dtype, kwargs
        else:
            assert ours == ref == []


# ------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_precision_equals_sentence_transformers(encoder, st_model, precision):
    texts = random_sentences(11, seed=13)
    ours, ref = encoder.encode(texts, precision=precision), st_model.encode(texts, precision=precision)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    if precision == "float32":
        assert_close(torch.from_numpy(ours), torch.from_numpy(ref), FP32, "float32")
    else:  # floats that differ by ~1e-7 may sit on either side of a bucket edge: rare, and one step at most
        diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= (1 if precision.endswith("int8") else 255) and (diff > 0).mean() < 0.01
    for kwargs in ({"convert_to_tensor": True}, {"convert_to_numpy": False}):
        got, want = (
            encoder.encode(texts, precision=precision, **kwargs),
            st_model.encode(texts, precision=precision, **kwargs),
        )
        assert type(got) is type(want)
        first, want_first = (got, want) if isinstance(got, torch.Tensor) else (got[0], want[0])
        assert first.dtype == want_first.dtype and first.shape == want_first.shape


@pytest.mark.parametrize("precision", ["int8", "ubinary"])
def test_precision_of_token_embeddings(encoder, st_model, precision):
    texts = random_sentences(3, seed=17)
    ours = encoder.encode(texts, output_value="token_embeddings", precision=precision)
    ref = st_model.encode(texts, output_value="token_embeddings", precision=precision)
    assert isinstance(ours, list) and len(ours) == 3
    for a, b in zip(ours, ref):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert (diff > 0).mean() < 0.01


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("dim", [1, 33, 384])
def test_quantize_embeddings_is_sentence_transformers_quantization(precision, dim):
    """The implementation itself, bit for bit, on fresh random floats (odd dims: a partial last byte)."""
    rng = np.random.default_rng()
    x = rng.standard_normal((17, dim)).astype(np.float32)
    assert np.array_equal(quantize_embeddings(x, precision), st_quantize(x, precision))
    calib = rng.standard_normal((29, dim)).astype(np.float32) * 0.5
    if precision.endswith("int8"):
        kwargs = {"calibration_embeddings": calib}
        assert np.array_equal(quantize_embeddings(x, precision, **kwargs), st_quantize(x, precision, **kwargs))
        ranges = quantization_ranges(calib)
        assert np.array_equal(quantize_embeddings(x, precision, ranges=ranges), st_quantize(x, precision, ranges))
    mats = [x[:5], x[5:6], x[6:]]  # token matrices: one set of ranges for all
    for a, b in zip(quantize_embeddings(mats, precision), st_quantize(mats, precision)):
        assert np.array_equal(a, b)
    tensor = torch.from_numpy(x).to(torch.bfloat16)
    assert np.array_equal(quantize_embeddings(tensor, precision), st_quantize(tensor, precision))


def test_quantize_constant_dimension_and_bad_input():
    x = np.random.default_rng().standard_normal((6, 9)).astype(np.float32)
    x[:, 4] = 0.25  # one dimension never changes: its step is taken as 1, as sentence-transformers does
    assert np.array_equal(quantize_embeddings(x, "uint8"), st_quantize(x, "uint8"))
    with pytest.raises(ValueError, match="precision"):
        quantize_embeddings(x, "int4")
    with pytest.raises(TypeError, match="embeddings"):
        quantize_embeddings(x.astype(np.int8), "int8")
    with pytest.raises(ValueError, match="ranges"):
        quantize_embeddings(x, "int8", ranges=np.ones((3, 9)))


# ------------------------------------------------------------------------------- device, progress, errors


def test_device_argument(encoder):
    texts = random_sentences(3, seed=19)
    assert np.array_equal(encoder.encode(texts, device="cpu"), encoder.encode(texts, device=torch.device("cpu")))
    assert encoder.device == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        encoder.encode(texts, device="nonsense")
    with pytest.raises(TypeError, match="device"):
        encoder.encode(texts, device=["cpu", "cpu"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            encoder.encode(texts, device="cuda")


def test_progress_bar_only_when_asked(encoder, capsys):
    texts = random_sentences(5, seed=23)
    encoder.encode(texts, batch_size=2)
    assert capsys.readouterr().err == ""
    encoder.encode(texts, batch_size=2, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "encode" in err and "5/5" in err


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"output_value": "pooled"}, ValueError, "output_value"),
        ({"precision": "fp16"}, ValueError, "precision"),
        ({"precision": "int8", "output_value": None}, ValueError, "precision"),
        ({"convert_to_tensor": "yes"}, TypeError, "convert_to_tensor"),
        ({"convert_to_numpy": None}, TypeError, "convert_to_numpy"),
        ({"normalize_embeddings": 1}, TypeError, "normalize_embeddings"),
        ({"show_progress_bar": "no"}, TypeError, "show_progress_bar"),
    ],
)
def test_bad_arguments_name_themselves(encoder, kwargs, error, names):
    with pytest.raises(error, match=names):
        encoder.encode(["a sentence", "another one"], **kwargs)


def test_bad_sentences_and_single_int8(encoder):
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        encoder.encode(["fine", 3])
    with pytest.raises(TypeError, match="sentences"):
        encoder.encode(42)
    with pytest.raises(ValueError, match="precision='int8'"):  # ranges from one embedding: impossible, as in ST
        encoder.encode("one sentence", precision="int8")


def test_module_level_encode_passes_arguments(minilm_dir, encoder):
    texts = random_sentences(3, seed=29)
    got = bertfast.encode(texts, minilm_dir, convert_to_tensor=True, precision="ubinary")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and got.shape == (3, 48)
    assert torch.equal(got, encoder.encode(texts, convert_to_tensor=True, precision="ubinary"))


# ------------------------------------------------------------------------------- pooling and patching


def test_patched_sentence_transformer_matches_unpatched(minilm_dir, st_model):
    patched = bertfast.optimize(st.SentenceTransformer(minilm_dir, device="cpu"), backend="torch")
    assert bertfast.is_optimized(patched)
    a = patched.encode(SENTENCES, batch_size=3)
    b = st_model.encode(SENTENCES, batch_size=3)
    assert cosine_rows(a, b).min() >= 0.99999


@pytest.mark.parametrize("mode", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_pooling_modes_match_sentence_transformers(mode):
    torch.manual_seed(0)
    lengths = [3, 1, 7, 5]
    S, H = max(lengths), 8
    padded = torch.randn(len(lengths), S, H)
    mask = (torch.arange(S)[None] < torch.tensor(lengths)[:, None]).long()
    packed = padded[mask.bool()]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    ours = pool_packed(packed, cu, (mode,))
    pooling = st.models.Pooling(H, pooling_mode=mode)
    ref = pooling({"token_embeddings": padded, "attention_mask": mask})["sentence_embedding"]
    assert_close(ours, ref, EMBED_ATOL_FP32, f"pooling {mode}")


def test_pooling_spec_reads_the_model_folder(minilm_dir, unnormalized_dir):
    assert PoolingSpec.from_model_dir(minilm_dir) == PoolingSpec(modes=("mean",), normalize=True, max_seq_length=256)
    assert PoolingSpec.from_model_dir(unnormalized_dir).normalize is False
