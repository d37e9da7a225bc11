"""Reading a corpus file as fixed shards of rows, each row keeping its index in the input as its id.

Formats, chosen by the file's extension:
  .txt      one text per line. The id is the 0-based line number. Lines that are empty or only
            whitespace are skipped (no row, no id), so ids can have gaps; a text keeps its own
            leading/trailing spaces (only the line ending, "\\n" or "\\r\\n", is removed).
  .jsonl    one JSON object per line, the text in `field`. The id is the 0-based line number;
            blank lines are skipped like in .txt. A line without the field, or whose value is not a
            string, is an error that names the field and the line.
  .parquet  the text in `column` (string type, no nulls). The id is the 0-based row index.

Shard k always covers input rows (lines) [k * shard_size, (k + 1) * shard_size), whatever was skipped
inside it, so the cut does not depend on the content and a rerun finds the same shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..exit_codes import UsageError

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}
TEXT_OPTIONS = {"field": "jsonl", "column": "parquet"}  # the option that says where a format's text is
_CHUNK = 1 << 20


@dataclass
class Shard:
    """One fixed slice of the input: input rows [start, stop), the texts kept from it, and their ids."""

    index: int
    start: int
    stop: int
    ids: np.ndarray  # (n,) int64, increasing, within [start, stop)
    texts: list[str]  # (n,)


@dataclass(frozen=True)
class CorpusInput:
    path: str  # absolute
    format: str  # "txt" | "jsonl" | "parquet"
    key: str | None  # the jsonl field or the parquet column; None for txt
    size: int
    mtime_ns: int
    num_rows: int  # input rows: lines for txt/jsonl (blank ones included), rows for parquet

    def num_shards(self, shard_size: int) -> int:
        return -(-self.num_rows // shard_size)

    def fingerprint(self) -> dict:
        """What the manifest records to recognise the same input on a rerun."""
        return {
            "path": self.path,
            "format": self.format,
            "key": self.key,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "rows": self.num_rows,
        }


def open_input(input_path: str | os.PathLike, *, field: str | None = None, column: str | None = None) -> CorpusInput:
    """Check the input before anything is written: it exists, is readable, has a known format, the
    field (.jsonl; default "text") or column (.parquet; default "text") is there, and it holds at least
    one text. Raises FileNotFoundError / ValueError, and UsageError for an option of another format."""
    path = os.path.abspath(os.fspath(input_path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"input_path {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"input_path {path!r} is a directory; give one .txt, .jsonl or .parquet file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(
            f"input_path {path!r}: unknown extension {ext or '(none)'!r}; expected one of {sorted(FORMATS)}"
        )
    fmt = FORMATS[ext]
    for name, value in (("field", field), ("column", column)):
        if value is not None and TEXT_OPTIONS[name] != fmt:
            raise UsageError(
                f"{name} {value!r} applies to .{TEXT_OPTIONS[name]} input only; input_path {path!r} is .{fmt}"
            )
    field = "text" if field is None else field
    column = "text" if column is None else column
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise ValueError(f"input_path {path!r} cannot be read: {e}") from None
    st = os.stat(path)
    if fmt == "parquet":
        num_rows = _check_parquet(path, column)
        key = column
    else:
        num_rows = _count_lines(path)
        key = field if fmt == "jsonl" else None
    corpus = CorpusInput(path, fmt, key, st.st_size, st.st_mtime_ns, num_rows)
    if not _has_a_text(corpus):
        raise ValueError(f"input_path {path!r} is empty: it holds no text to embed")
    return corpus


def _count_lines(path: str) -> int:
    """Lines as iter_shards numbers them: split on b"\\n"; a last line without a newline counts."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _check_parquet(path: str, column: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"input_path {path!r} is not a readable Parquet file: {e}") from None
    schema = pf.schema_arrow
    if column not in schema.names:
        raise ValueError(f"column {column!r} is not in {path!r}; its columns are {schema.names}")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise ValueError(f"column {column!r} of {path!r} has type {kind}, expected a string column")
    return pf.metadata.num_rows


def _has_a_text(corpus: CorpusInput) -> bool:
    """True when the first shard-sized scan finds a row; the first row's field is checked on the way."""
    if corpus.num_rows == 0:
        return False
    for shard in iter_shards(corpus, shard_size=max(1, min(corpus.num_rows, 4096))):
        if shard.texts:
            return True
    return False


def iter_shards(corpus: CorpusInput, shard_size: int, skip: frozenset[int] = frozenset()) -> Iterator[Shard]:
    """Every shard of the input in order; shards in `skip` are passed over without parsing their rows."""
    if corpus.format == "parquet":
        yield from _parquet_shards(corpus, shard_size, skip)
    else:
        yield from _line_shards(corpus, shard_size, skip)


def _line_shards(corpus: CorpusInput, shard_size: int, skip: frozenset[int]) -> Iterator[Shard]:
    k, ids, texts = 0, [], []
    with open(corpus.path, "rb") as f:
        for lineno, raw in enumerate(f):
            if lineno // shard_size != k:
                yield _shard(k, shard_size, corpus.num_rows, ids, texts)
                k, ids, texts = lineno // shard_size, [], []
            if k in skip:
                continue
            text = _parse_line(corpus, lineno, raw)
            if text is not None:
                ids.append(lineno)
                texts.append(text)
    if corpus.num_rows:
        yield _shard(k, shard_size, corpus.num_rows, ids, texts)


def _parse_line(corpus: CorpusInput, lineno: int, raw: bytes) -> str | None:
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"input_path {corpus.path!r}: line {lineno + 1} is not UTF-8 ({e})") from None
    if not line.strip():
        return None
    if corpus.format == "txt":
        return line
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"input_path {corpus.path!r}: line {lineno + 1} is not JSON ({e})") from None
    if not isinstance(record, dict) or corpus.key not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"field {corpus.key!r} is missing on line {lineno + 1} of {corpus.path!r} (it has {keys})")
    text = record[corpus.key]
    if not isinstance(text, str):
        raise TypeError(
            f"field {corpus.key!r} on line {lineno + 1} of {corpus.path!r} is {type(text).__name__}, expected a string"
        )
    return text


def _parquet_shards(corpus: CorpusInput, shard_size: int, skip: frozenset[int]) -> Iterator[Shard]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(corpus.path)
    k, row, texts = 0, 0, []
    for batch in pf.iter_batches(batch_size=min(shard_size, 65536), columns=[corpus.key]):
        col = batch.column(0)
        if col.null_count:
            first = row + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"column {corpus.key!r} of {corpus.path!r} has a null at row {first}")
        values = col.to_pylist()
        while values:
            take = (k + 1) * shard_size - row  # rows still missing from shard k
            part, values = values[:take], values[take:]
            if k not in skip:
                texts.extend(part)
            row += len(part)
            if row == (k + 1) * shard_size:
                yield _shard(
                    k,
                    shard_size,
                    corpus.num_rows,
                    list(range(k * shard_size, row)),
                    texts,
                )
                k, texts = k + 1, []
    if row > k * shard_size:
        yield _shard(k, shard_size, corpus.num_rows, list(range(k * shard_size, row)), texts)


def _shard(k: int, shard_size: int, num_rows: int, ids: list[int], texts: list[str]) -> Shard:
    start, stop = k * shard_size, min((k + 1) * shard_size, num_rows)
    if not texts:
        ids = []  # a skipped shard, or one whose lines were all blank
    return Shard(k, start, stop, np.asarray(ids, dtype=np.int64), texts)
