"""`bertfast embed` (bertfast/embed/): same vectors as SentenceEncoder.encode, resumable, clear errors.

Everything runs on the CPU with the embedded MiniLM-L6 on a few hundred short random texts; the Ray
test starts a one-CPU local Ray.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import bertfast.embed as embed_mod
from bertfast.cli import main as cli_main
from bertfast.embed import add_arguments, embed_corpus, run_cli
from bertfast.embed.ray_job import SCRATCH, adopt_finished
from bertfast.embed.store import MANIFEST, SUCCESS, OutputDir
from bertfast.exit_codes import EXIT_FAILED, EXIT_USAGE, UsageError
from bertfast.sentence import SentenceEncoder

from .helpers import EMBED_ATOL_FP32, assert_close

# The job calls encode() on other batch compositions than one whole-list call: fp32 CPU rounding only.
EMBED_ATOL = EMBED_ATOL_FP32
DIM = 384  # MiniLM-L6
WORDS = [
    "the",
    "river",
    "bank",
    "apple",
    "model",
    "fast",
    "slow",
    "tokens",
    "packed",
    "kernel",
    "graph",
    "bench",
    "ünïcödé",
    "我",
    "喜欢",
    "吃",
    "苹果",
    "naïve",
    "café",
    "résumé",
    "Zürich",
    "a",
    "of",
    "to",
    "in",
    "is",
    "42",
    "3.14",
    "hello-world",
    "e-mail",
]


def random_texts(rng: np.random.Generator, n: int) -> list[str]:
    """n fresh sentences of 1..24 words (odd lengths, repeated words, some unicode)."""
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder(minilm_dir) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(minilm_dir)


def read_output(path) -> pa.Table:
    """Every finished shard, sorted by id."""
    table = pq.read_table(path)
    return table.sort_by("id")


def embeddings(table: pa.Table) -> np.ndarray:
    col = table.column("embedding").combine_chunks()  # fixed_size_list<float32>[dim]
    return np.array(col.flatten().to_numpy()).reshape(len(table), col.type.list_size)  # (n, dim)


def assert_same_vectors(table: pa.Table, encoder: SentenceEncoder, texts: list[str], what: str) -> None:
    ref = encoder.encode(texts, batch_size=64)  # (n, dim)
    assert_close(torch.from_numpy(embeddings(table)), torch.from_numpy(ref), EMBED_ATOL, what)


def assert_schema(table: pa.Table, text_column: str = "text") -> None:
    want = pa.schema(
        [
            ("id", pa.int64()),
            (text_column, pa.string()),
            ("embedding", pa.list_(pa.float32(), DIM)),
        ]
    )
    assert table.schema.remove_metadata() == want, table.schema


def no_temp_files(path) -> bool:
    return not [n for n in os.listdir(path) if n.endswith(".tmp")]


# ---- the local path gives encode()'s vectors, for each format ------------------------------------------


def test_txt_matches_encode(tmp_path, minilm_dir, encoder):
    rng = np.random.default_rng()
    texts = random_texts(rng, 211)
    lines, ids = [], []
    for t in texts:  # blank and whitespace-only lines in between: skipped, but they keep their line number
        if rng.random() < 0.1:
            lines.append(" \t " if rng.random() < 0.5 else "")
        ids.append(len(lines))
        lines.append(t)
    (tmp_path / "in.txt").write_text("\r\n".join(lines), encoding="utf-8")  # CRLF, no final newline

    summary = embed_corpus(
        tmp_path / "in.txt",
        tmp_path / "out",
        model_dir=minilm_dir,
        batch_size=64,
        shard_size=61,
    )

    table = read_output(tmp_path / "out")
    assert_schema(table)
    assert table.column("id").to_pylist() == ids
    assert table.column("text").to_pylist() == texts
    assert_same_vectors(table, encoder, texts, "txt")
    shards = -(-len(lines) // 61)
    assert summary["complete"] and summary["shards"] == shards and summary["shards_computed"] == shards
    assert summary["rows"] == len(texts) and summary["input_rows"] == len(lines)
    assert sorted(n for n in os.listdir(tmp_path / "out") if n.startswith("part-")) == [
        f"part-{k:05d}.parquet" for k in range(shards)
    ]
    assert (tmp_path / "out" / SUCCESS).exists() and no_temp_files(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["dim"] == DIM and manifest["shard_size"] == 61 and manifest["rows_written"] == len(texts)
    assert manifest["input"]["size"] == os.path.getsize(tmp_path / "in.txt") and manifest["normalize"] is True
    assert len(manifest["finished"]) == shards


def test_jsonl_matches_encode_with_hash_through_cli(tmp_path, minilm_dir, encoder):
    """The CLI options end to end: --field, --store-hash, --shard-size, --quiet."""
    rng = np.random.default_rng()
    texts = random_texts(rng, 97)
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(
                json.dumps(
                    {"n": i, "body": t, "text": "not this one"},
                    ensure_ascii=bool(i % 2),
                )
                + "\n"
            )
            if i == 40:
                f.write("\n")  # a blank line: skipped, the ids after it are line numbers
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            str(tmp_path / "in.jsonl"),
            str(tmp_path / "out"),
            "--model",
            minilm_dir,
            "--field",
            "body",
            "--store-hash",
            "--shard-size",
            "50",
            "--quiet",
        ]
    )

    assert run_cli(args) == 0

    table = read_output(tmp_path / "out")
    assert_schema(table, "text_sha256")
    assert table.column("id").to_pylist() == list(range(41)) + list(range(42, 98))
    assert table.column("text_sha256").to_pylist() == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert_same_vectors(table, encoder, texts, "jsonl")


def test_parquet_matches_encode_on_two_devices(tmp_path, minilm_dir, encoder, monkeypatch):
    """Two encoders on two worker threads (two 'devices', both the CPU here): every shard once."""
    rng = np.random.default_rng()
    texts = random_texts(rng, 151)
    pq.write_table(
        pa.table({"other": np.arange(151), "sentence": texts}),
        tmp_path / "in.parquet",
        row_group_size=37,
    )
    monkeypatch.setattr(embed_mod, "local_devices", lambda device: ["cpu", "cpu"])

    summary = embed_corpus(
        tmp_path / "in.parquet", tmp_path / "out", model_dir=minilm_dir, column="sentence", shard_size=29, quiet=True
    )

    table = read_output(tmp_path / "out")
    assert_schema(table)
    assert table.column("id").to_pylist() == list(range(151))
    assert table.column("text").to_pylist() == texts
    assert_same_vectors(table, encoder, texts, "parquet")
    assert summary["shards_computed"] == 6 and summary["engine"] == "local (cpu, cpu)"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_unless_quiet(tmp_path, minilm_dir, monkeypatch):
    (tmp_path / "in.txt").write_text("\n".join(random_texts(np.random.default_rng(), 11)), encoding="utf-8")
    for quiet in (False, True):
        term = FakeTerminal()
        monkeypatch.setattr(sys, "stderr", term)
        embed_corpus(
            tmp_path / "in.txt",
            tmp_path / f"out-{quiet}",
            model_dir=minilm_dir,
            shard_size=4,
            quiet=quiet,
        )
        monkeypatch.undo()
        if quiet:
            assert term.getvalue() == ""
        else:
            assert "11/11" in term.getvalue(), term.getvalue()


# ---- resumption ------------------------------------------------------------------------------------------


class EncodeSpy:
    """Wraps SentenceEncoder.encode: records each call's texts, raises on call number `fail_on` (1-based)."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.real = SentenceEncoder.encode

    def install(self, monkeypatch) -> EncodeSpy:
        def encode(encoder, texts, **kwargs):
            self.calls.append(list(texts))
            if len(self.calls) == self.fail_on:
                raise RuntimeError("injected failure")
            return self.real(encoder, texts, **kwargs)

        monkeypatch.setattr(SentenceEncoder, "encode", encode)
        return self


def test_interrupted_run_resumes_without_duplicates(tmp_path, minilm_dir, encoder, monkeypatch):
    rng = np.random.default_rng()
    texts = random_texts(rng, 171)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    kw = {"model_dir": minilm_dir, "shard_size": 37, "quiet": True}

    EncodeSpy(fail_on=3).install(monkeypatch)  # shards 0 and 1 finish, shard 2 fails
    with pytest.raises(RuntimeError, match="injected failure"):
        embed_corpus(tmp_path / "in.txt", out, **kw)
    names = sorted(os.listdir(out))
    assert names == ["_manifest.json", "part-00000.parquet", "part-00001.parquet"], names
    assert sorted(json.loads((out / MANIFEST).read_text())["finished"]) == ["0", "1"]
    kept = {n: os.stat(out / n).st_mtime_ns for n in names if n.startswith("part-")}
    # What a killed process leaves: a temp file, and a shard renamed into place but never recorded.
    (out / ".part-00002.parquet.0123.tmp").write_bytes(b"PAR1 half a parquet file")
    (out / "part-00003.parquet").write_bytes(b"PAR1 cut short")

    spy = EncodeSpy().install(monkeypatch)
    summary = embed_corpus(tmp_path / "in.txt", out, **kw)

    assert [c for call in spy.calls for c in call] == texts[2 * 37 :]  # only the missing shards, once each
    assert summary["shards_skipped"] == 2 and summary["shards_computed"] == 3 and summary["complete"]
    assert {n: os.stat(out / n).st_mtime_ns for n in kept} == kept
    table = read_output(out)
    assert table.column("id").to_pylist() == list(range(171))  # no row twice, none missing
    assert_same_vectors(table, encoder, texts, "resumed")
    assert (out / SUCCESS).exists() and no_temp_files(out)

    # A complete directory: a rerun computes nothing, never loads or calls the model.
    EncodeSpy(fail_on=1).install(monkeypatch)
    again = embed_corpus(tmp_path / "in.txt", out, **kw)
    assert again["shards_computed"] == 0 and again["shards_skipped"] == 5 and again["complete"]


def test_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path, minilm_dir, encoder):
    texts = random_texts(np.random.default_rng(), 23)
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    out = tmp_path / "out"
    embed_corpus(tmp_path / "in.txt", out, model_dir=minilm_dir, shard_size=10, quiet=True)
    with pytest.raises(ValueError, match=r"shard_size: was 10, now 7"):
        embed_corpus(tmp_path / "in.txt", out, model_dir=minilm_dir, shard_size=7, quiet=True)
    (tmp_path / "in.txt").write_text("\n".join(texts[:-1]), encoding="utf-8")  # the input changed
    with pytest.raises(ValueError, match=r"output_dir .* other settings \(input:"):
        embed_corpus(tmp_path / "in.txt", out, model_dir=minilm_dir, shard_size=10, quiet=True)

    summary = embed_corpus(
        tmp_path / "in.txt",
        out,
        model_dir=minilm_dir,
        shard_size=7,
        overwrite=True,
        quiet=True,
    )

    assert summary["shards_computed"] == 4 and summary["shards_skipped"] == 0
    assert sorted(n for n in os.listdir(out) if n.startswith("part-")) == [f"part-{k:05d}.parquet" for k in range(4)]
    table = read_output(out)
    assert table.column("id").to_pylist() == list(range(22))
    assert_same_vectors(table, encoder, texts[:-1], "overwritten")


def test_failure_before_any_shard_leaves_nothing(tmp_path, minilm_dir, monkeypatch):
    (tmp_path / "in.txt").write_text("\n".join(random_texts(np.random.default_rng(), 5)), encoding="utf-8")
    EncodeSpy(fail_on=1).install(monkeypatch)
    with pytest.raises(RuntimeError, match="injected failure"):
        embed_corpus(
            tmp_path / "in.txt",
            tmp_path / "new" / "out",
            model_dir=minilm_dir,
            quiet=True,
        )
    assert not (tmp_path / "new" / "out").exists()


def test_ray_scratch_adopts_only_complete_shards(tmp_path):
    """What a killed Ray run leaves: a shard's folder is adopted only when its ids are exactly the staged ones."""
    settings = {"num_shards": 3}
    out = OutputDir.open(tmp_path / "out", settings, overwrite=False)
    staged, scratch = {}, tmp_path / "out" / SCRATCH
    for k in range(3):
        staged[k] = str(tmp_path / f"staged-{k}.parquet")
        pq.write_table(pa.table({"id": pa.array(range(10 * k, 10 * k + 9), pa.int64())}), staged[k])
        (scratch / f"shard={k}").mkdir(parents=True)
    pq.write_table(
        pa.table({"id": pa.array([10 * 0 + i for i in (4, 5, 6, 7, 8)], pa.int64())}),
        scratch / "shard=0" / "a.parquet",
    )
    pq.write_table(
        pa.table({"id": pa.array([0, 1, 2, 3], pa.int64())}),
        scratch / "shard=0" / "b.parquet",
    )
    pq.write_table(
        pa.table({"id": pa.array(range(10, 19), pa.int64())}),
        scratch / "shard=1" / "a.parquet",
    )
    (scratch / "shard=1" / "b.parquet").write_bytes(b"PAR1 cut short")  # a writer killed mid-file
    pq.write_table(
        pa.table({"id": pa.array(range(20, 28), pa.int64())}),
        scratch / "shard=2" / "a.parquet",
    )  # one short

    done = []
    adopt_finished(out, staged, done.append)

    assert done == [0] and sorted(out.finished) == [0]
    assert sorted(os.listdir(tmp_path / "out" / "part-00000")) == [
        "a.parquet",
        "b.parquet",
    ]
    assert not scratch.exists() and not (tmp_path / "out" / "part-00001").exists()


# ---- bad input -------------------------------------------------------------------------------------------


def _write_bad_parquet(path):
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)


BAD_INPUTS = [
    # (file name, content, extra kwargs, error, message)
    (
        "missing.txt",
        None,
        {},
        FileNotFoundError,
        r"input_path .*missing\.txt.* does not exist",
    ),
    ("in.csv", "a,b\n", {}, ValueError, r"input_path .*unknown extension '\.csv'"),
    ("empty.txt", "", {}, ValueError, r"input_path .* is empty"),
    ("blank.txt", "\n  \n\t\n", {}, ValueError, r"input_path .* is empty"),
    (
        "latin1.txt",
        "ok\ncaf\xe9\n".encode("latin-1"),
        {},
        ValueError,
        r"line 2 is not UTF-8",
    ),
    (
        "in.jsonl",
        '{"text": "a"}\n{"body": "b"}\n',
        {},
        ValueError,
        r"field 'text' is missing on line 2",
    ),
    (
        "in.jsonl",
        '{"text": "a"}\n{"text": 3}\n',
        {},
        TypeError,
        r"field 'text' on line 2 .* is int",
    ),
    ("in.jsonl", '{"text": "a"}\n{"text": \n', {}, ValueError, r"line 2 is not JSON"),
    (
        "in.parquet",
        "parquet",
        {"column": "body"},
        ValueError,
        r"column 'body' is not in .*; its columns are \['text'\]",
    ),
    (
        "nulls.parquet",
        "parquet",
        {},
        ValueError,
        r"column 'text' .* has a null at row 1",
    ),
    (
        "junk.parquet",
        b"not parquet at all",
        {},
        ValueError,
        r"input_path .* is not a readable Parquet file",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "error", "message"), BAD_INPUTS, ids=[f"{b[0]}-{b[4][:18]}" for b in BAD_INPUTS]
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, minilm_dir, name, content, kwargs, error, message):
    path = tmp_path / name
    if content == "parquet":
        _write_bad_parquet(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=message):
        embed_corpus(path, tmp_path / "out", model_dir=minilm_dir, quiet=True, **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path, minilm_dir):
    (tmp_path / "in.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    cases = [
        ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
        ({"shard_size": 2.5}, r"shard_size must be a positive integer"),
        ({"device": "tpu"}, r"device must be one of"),
        ({"dtype": "int8"}, r"dtype must be one of"),
        ({"store": "both"}, r"store must be 'text' or 'hash'"),
        ({"model_dir": tmp_path / "nope"}, r"model_dir .*nope.* is not a directory"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            embed_corpus(
                tmp_path / "in.txt",
                tmp_path / "out",
                **{"model_dir": minilm_dir, **kwargs},
            )
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"output_dir .*file.* exists and is not a directory"):
        embed_corpus(tmp_path / "in.txt", tmp_path / "file", model_dir=minilm_dir)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "part-00000.parquet").write_bytes(b"someone else's")
    with pytest.raises(ValueError, match=r"holds part-\* shards but no _manifest\.json"):
        embed_corpus(tmp_path / "in.txt", tmp_path / "other", model_dir=minilm_dir)
    assert os.listdir(tmp_path / "other") == ["part-00000.parquet"]


def test_cli_reports_bad_input_and_missing_ray(tmp_path, capsys, monkeypatch):
    # a bad input is EXIT_FAILED, as a bad model folder is in every command; a missing extra is EXIT_USAGE
    assert cli_main(["embed", str(tmp_path / "absent.txt"), str(tmp_path / "out")]) == EXIT_FAILED
    assert "input_path" in capsys.readouterr().err

    (tmp_path / "in.txt").write_text("a\n", encoding="utf-8")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    assert cli_main(["embed", str(tmp_path / "in.txt"), str(tmp_path / "out"), "--ray", "auto"]) == EXIT_USAGE
    assert "pip install 'bertfast[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("in.jsonl", "column", "text"),
        ("in.txt", "column", "body"),
        ("in.txt", "field", "text"),
        ("in.parquet", "field", "t"),
    ],
)
def test_an_option_of_another_format_is_refused(tmp_path, minilm_dir, name, option, value):
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"text": ["a", "b"]}), path)
    else:
        path.write_text('{"text": "a"}\n' if name.endswith(".jsonl") else "a\n", encoding="utf-8")
    with pytest.raises(UsageError, match=rf"{option} '{value}' applies to \.\w+ input only; input_path .*{name}"):
        embed_corpus(path, tmp_path / "out", model_dir=minilm_dir, **{option: value})
    assert not (tmp_path / "out").exists()


def test_every_option_has_help_and_store_flags_exclude_each_other():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, f"{action.dest} has no help text"
    with pytest.raises(SystemExit):
        parser.parse_args(["in.txt", "out", "--store-text", "--store-hash"])
    args = parser.parse_args(["in.txt", "out"])
    assert (args.store, args.device, args.shard_size, args.ray) == (
        "text",
        "auto",
        10_000,
        None,
    )


# ---- Ray Data in local mode ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_ray_local_mode_matches_encode_and_quiet_prints_nothing(tmp_path, minilm_dir, encoder, capfd, monkeypatch):
    try:
        import ray
        import ray.data
    except ImportError as e:
        pytest.skip(f"Ray Data is not installed ({e}): pip install 'bertfast[ray]'")
    rng = np.random.default_rng()
    texts = random_texts(rng, 67)
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    ray_env = {k: os.environ.get(k) for k in ("RAY_DATA_LOG_LEVEL", "RAY_BACKEND_LOG_LEVEL")}
    capfd.readouterr()
    try:  # the job starts its own local Ray, as `bertfast embed --ray auto --quiet` does
        summary = embed_corpus(
            tmp_path / "in.jsonl", tmp_path / "out", model_dir=minilm_dir, shard_size=23, ray="auto", quiet=True
        )
        printed = capfd.readouterr()
    finally:
        ray.shutdown()
    assert printed.out == "" and printed.err == "", "quiet: nothing from Ray (Python loggers, C++ core worker)"
    assert {k: os.environ.get(k) for k in ray_env} == ray_env, "the environment is restored after the run"

    table = read_output(tmp_path / "out")
    assert_schema(table)
    assert table.column("id").to_pylist() == list(range(67))
    assert table.column("text").to_pylist() == texts
    assert_same_vectors(table, encoder, texts, "ray")
    assert summary["complete"] and summary["shards_computed"] == 3 and summary["engine"] == "ray (auto)"
    assert sorted(n for n in os.listdir(tmp_path / "out")) == [
        "_SUCCESS",
        "_manifest.json",
        "part-00000",
        "part-00001",
        "part-00002",
    ]
