"""`bertfast serve` on a sentence-transformers folder of another family (RoBERTa: byte-level BPE through
tokenizer.json, positions from the padding id, a Dense and a Normalize module after pooling), as a real
process over real HTTP: its vectors equal sentence-transformers' own encode() of the same folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .helpers import MODEL_ATOL_FP32, assert_close
from .test_serve_process import ServerProcess

st = pytest.importorskip("sentence_transformers")
pytest.importorskip("transformers")

from .test_sentence_families import make_st_folder, random_texts  # noqa: E402  (after the importorskips)


@pytest.fixture(scope="module")
def roberta_server(tmp_path_factory):
    folder = make_st_folder(str(tmp_path_factory.mktemp("serve_roberta")), "roberta", seed=3)
    server = ServerProcess("--model", folder, "--max-batch-tokens", "1024")
    try:
        yield folder, server.wait_ready()
    finally:
        server.close()


def test_roberta_folder_vectors_equal_sentence_transformers(roberta_server):
    folder, server = roberta_server
    model = st.SentenceTransformer(folder, device="cpu")
    texts = random_texts(24, seed=11)  # 1 to 44 words: some longer than the folder's 33 tokens
    fits = [t for t in texts if len(model.tokenizer(t)["input_ids"]) <= model.max_seq_length]  # untruncated
    assert 3 <= len(fits) < len(texts)
    with server.client() as c:
        openai = c.post("/v1/embeddings", json={"input": fits})
        tei = c.post("/embed", json={"inputs": texts, "truncate": True})
        refused = c.post("/embed", json={"inputs": texts, "truncate": False})
        info = c.get("/info")
    assert openai.status_code == 200, openai.text
    got = torch.tensor(np.array([row["embedding"] for row in openai.json()["data"]], dtype=np.float32))
    expected = model.encode(fits, convert_to_tensor=True).float()  # (len(fits), D)
    assert_close(got, expected, MODEL_ATOL_FP32, "roberta /v1/embeddings vs sentence-transformers")
    assert tei.status_code == 200, tei.text  # cut at the model's length, as sentence-transformers cuts
    expected = model.encode(texts, convert_to_tensor=True).float()  # (24, D)
    assert_close(torch.tensor(tei.json()), expected, MODEL_ATOL_FP32, "roberta /embed, truncated")
    assert refused.status_code in (400, 413, 422), refused.text
    first_long = next(i for i, t in enumerate(texts) if t not in fits)
    assert f"[{first_long}]" in refused.text  # names the index of the first text that is too long
    assert info.json()["dimension"] == expected.shape[1]  # the Dense module's width, not the encoder's
