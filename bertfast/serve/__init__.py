"""`bertfast serve`: an embedding and reranking server over the packed runtime.

OpenAI's POST /v1/embeddings, TEI's POST /embed and /rerank, GET /health, /info and /metrics
(Prometheus). Every request's texts go into one queue; a batcher forms batches by a token budget
(real lengths after tokenization, similar lengths together) and runs one packed forward per batch on
each device's worker. `add_arguments` / `run_cli` are the command line (`bertfast/serve/options.py`);
`app.create_app` builds the ASGI app for a loaded model.
"""

from .options import add_arguments, run_cli

__all__ = ["add_arguments", "run_cli"]
