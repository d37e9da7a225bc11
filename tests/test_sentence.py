"""Sentence embeddings and the CLI against sentence-transformers, on the real MiniLM checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import bertfast
from bertfast.sentence import PoolingSpec, SentenceEncoder, pool_packed

from .helpers import assert_close

st = pytest.importorskip("sentence_transformers")

SENTENCES = [
    "我喜欢吃苹果。",
    "The bank of the river.",
    "A man is playing a guitar on a quiet street corner while people walk past.",
    "Héllo wörld — naïve café!",
    "x",
    " ".join(["long"] * 300),  # longer than max_seq_length (256): truncated as sentence-transformers does
]


@pytest.fixture(scope="module")
def st_model(minilm_dir):
    return st.SentenceTransformer(minilm_dir, device="cpu")


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_sentence_embeddings_equal_sentence_transformers(minilm_dir, st_model):
    ours = SentenceEncoder.from_pretrained(minilm_dir, backend="torch").encode(SENTENCES, batch_size=4)
    ref = st_model.encode(SENTENCES, batch_size=4, convert_to_numpy=True)
    assert ours.shape == ref.shape == (len(SENTENCES), 384)
    assert cosine_rows(ours, ref).min() >= 0.99999
    assert np.abs(ours - ref).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5), "the model folder asks for Normalize"


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
    assert_close(ours, ref, 1e-6, f"pooling {mode}")


def test_pooling_spec_reads_the_model_folder(minilm_dir):
    spec = PoolingSpec.from_model_dir(minilm_dir)
    assert spec == PoolingSpec(modes=("mean",), normalize=True, max_seq_length=256)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertfast", *args], capture_output=True, text=True, timeout=300)


def test_cli_encode_json_equals_sentence_transformers(st_model):
    texts = ["我喜欢吃苹果。", "The bank of the river."]
    proc = run_cli("encode", "--json", *texts)
    assert proc.returncode == 0, proc.stderr
    got = np.array(json.loads(proc.stdout), dtype=np.float32)
    ref = st_model.encode(texts)
    assert got.shape == ref.shape
    assert cosine_rows(got, ref).min() >= 0.99999


def test_cli_encode_text_and_info(minilm_dir):  # the default model is the packaged one
    proc = run_cli("encode", "The bank of the river.")
    assert proc.returncode == 0, proc.stderr
    assert "dim=384 norm=1.0000" in proc.stdout
    info = run_cli("info", "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["bertfast"] == bertfast.__version__ and data["torch"] == torch.__version__
    assert "backends" in data and "tokenizer" in data


def test_cli_reports_bad_model_dir(tmp_path):
    proc = run_cli("encode", "--model", str(tmp_path / "missing"), "hi")
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr
