"""scripts/gpu_check.sh's dry run: every stage on the CPU, the same files back as on a GPU.

A renamed flag, a broken stage or a report without its sections fails here, on the CPU, instead of in
the one short GPU window. The run takes a few minutes on a free core (the interpreter, tiny configs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["build", "smoke", "tables", "bench", "bench-bf16", "runtime", "tests-gpu", "tests-rest"]
DRY_RUN_LIMIT_S = 600  # the script's own budget is 290 s; past this the run is broken, not slow


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRY_RUN_LIMIT_S,
    )
    return out, done


def _report_path(out: Path) -> Path:
    reports = [p for p in out.glob("*.json") if "results" in json.loads(p.read_text())]
    assert len(reports) == 1, [p.name for p in out.iterdir()]
    return reports[0]


def _report(out: Path) -> dict:
    return json.loads(_report_path(out).read_text())


def test_dry_run_leaves_the_files_a_gpu_run_leaves(dry_run):
    out, done = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= 8 and all(p.is_file() for p in out.iterdir()), names  # no folder left behind
    stem = _report_path(out).stem
    slug = _report(out)["gpu_check"]["tables"]["slug"]
    expected = {f"{stem}.json", f"{stem}.md", f"{stem}.png", f"{slug}.json", f"configs-{slug}.json"}
    assert expected | {"gpu-check-logs.tar.gz"} == set(names)
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with tarfile.open(out / "gpu-check-logs.tar.gz") as tar:
        logged = set(tar.getnames())
    for name in ["env.txt", "stages.jsonl", "smoke.json", "tables.json"] + [f"{s}.log" for s in STAGES]:
        assert f"logs/{name}" in logged, sorted(logged)


def test_dry_run_report_has_every_section_and_every_stage_ran(dry_run):
    out, _ = dry_run
    rep = _report(out)
    gc = rep["gpu_check"]
    assert gc["mode"] == "dry-run"
    assert [s["stage"] for s in gc["stages"]] == STAGES
    assert {s["stage"]: s["status"] for s in gc["stages"]} == dict.fromkeys(STAGES, "ran"), gc["stages"]
    assert gc["smoke"]["ok"] and all(c["ok"] for c in gc["smoke"]["checks"])
    assert {c["name"].split()[0] for c in gc["smoke"]["checks"]} == {"model", "gemm", "attention", "graphs"}
    # the bench: fp32 fixed and variable lengths, the bf16 row appended, each with its best peer named
    cases = {(r["dtype"], r["lengths"], r["batch"], r["seq"]) for r in rep["results"]}
    assert {("float32", "fixed", 2, 16), ("float32", "varlen-uniform", 2, 16), ("bfloat16", "fixed", 2, 16)} <= cases
    ours = [r for r in rep["results"] if r["engine"] == "bertfast"]
    assert ours and all(r["best_peer"] in ("hf-sdpa", "hf-eager") and r["speedup_vs_best_peer"] > 0 for r in ours)
    assert all(r["max_abs_err"] is not None for r in ours)
    assert rep["profile"] and rep["sentence_transformers"]
    rt = rep["runtime"]
    assert rt["threads_ok"]["mismatches"] == 0 and rt["threads_ok"]["calls"] > 0
    assert rt["cold_start_s"] == {"skipped": "needs CUDA"}  # the GPU-only probes say so, not silently absent
    gemm = json.loads((out / f"{gc['tables']['slug']}.json").read_text())
    assert gemm["rows"] and {r["choice"] for r in gemm["rows"]} <= {"cublas", "triton", "splitk", "tma"}
    md = next(out.glob("*.md")).read_text()
    assert md.startswith("## GPU check (dry-run): all stages ran") and "## Runtime" in md


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_smoke_still_leaves_a_report_saying_so(tmp_path):
    finish = _load_script("gpu_finish")
    out, logs = tmp_path / "out", tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    stages = [dict(stage="build", status="ran", seconds=3, limit=60, rc=0, note="")]
    stages.append(dict(stage="smoke", status="failed", seconds=20, limit=60, rc=1, note=""))
    stages += [dict(stage=s, status="skipped", seconds=0, limit=0, rc=None, note="smoke failed") for s in STAGES[2:]]
    (logs / "stages.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stages))
    check = dict(name="attention d64 float16", ok=False, err=0.5, bound=0.003)
    (logs / "smoke.json").write_text(json.dumps({"ok": False, "device": "cuda", "checks": [check]}))
    (logs / "smoke.log").write_text("FAIL attention d64 float16\n")
    (out / "stray.txt").write_text("a file a stage left in OUT")
    got = finish.finish(out, logs, "gpu")
    assert got["verdict"] == "not complete: smoke"
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and "gpu-check-logs.tar.gz" in names, names
    rep = _report(out)
    assert rep["results"] == [] and rep["gpu_check"]["smoke"]["checks"] == [check]
    assert [s["status"] for s in rep["gpu_check"]["stages"]] == ["ran", "failed"] + ["skipped"] * (len(STAGES) - 2)
    md = next(out.glob("*.md")).read_text()
    assert "## GPU check (gpu): not complete: smoke" in md and "- FAILED attention d64 float16" in md
    with tarfile.open(out / "gpu-check-logs.tar.gz") as tar:
        assert {"logs/smoke.log", "logs/stray.txt", "logs/stages.jsonl"} <= set(tar.getnames())
    assert not logs.exists()


def test_smoke_checks_in_parallel_processes(tmp_path, monkeypatch):
    # The GPU run's --jobs path: each check in its own process, the results merged in plan order.
    smoke = _load_script("gpu_smoke")
    out = tmp_path / "smoke.json"
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the worker processes run the kernels on the CPU
    argv = ["--device", "cpu", "--base-model", "tiny", "--checks", "attention", "graphs", "--jobs", "2"]
    assert smoke.main(argv + ["--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert [c["name"] for c in got["checks"]] == [
        "attention d32 float16",
        "attention d64 float16",
        "graphs tiny float16",
    ]
    assert got["ok"] and all(c["err"] <= c["bound"] for c in got["checks"][:2])
    assert got["checks"][2]["skipped"] == "needs CUDA" and not list(tmp_path.glob("smoke-*.json"))


def test_targets_read_off_a_report():
    finish = _load_script("gpu_finish")

    def row(engine, lengths, batch, seq, ms):
        return dict(
            model="bert-base", dtype="float16", lengths=lengths, batch=batch, seq=seq, engine=engine, median_ms=ms
        )

    results = [row("bertfast-graphs", "fixed", 1, 128, 0.25), row("torch-compile-cudagraphs", "fixed", 1, 128, 0.31)]
    results += [row("bertfast-graphs", "fixed", 32, 128, 1.7), row("bertfast", "fixed", 32, 128, 1.9)]
    results += [row("bertfast-graphs", "fixed", 32, 512, 8.0), row("hf-sdpa", "fixed", 32, 512, 10.0)]
    results += [row("bertfast-graphs", "varlen-uniform", 32, 128, 1.0), row("hf-sdpa", "varlen-uniform", 32, 128, 3.0)]
    results.append(row("torch-compile-cudagraphs", "varlen-uniform", 32, 128, 1.1))
    parts = dict(case="fixed b32 s128", dtype="float16")
    profile = [dict(parts, engine="bertfast-graphs", parts_ms={"gemm": 1.0, "attention": 0.1})]
    profile.append(dict(parts, engine="hf-sdpa", parts_ms={"gemm": 0.97, "attention": 0.12}))
    st = {"rows": [{"batch_size": 32, "speedup": 2.6}, {"batch_size": 128, "speedup": 2.4}]}
    runtime = dict(cold_start_s=4.0, new_bucket_s={"skipped": "timed out after 30 s"}, replay_rate=0.995)
    runtime.update(threads_ok={"mismatches": 0}, reserved_mb={"after_quarter": 1000.0, "at_end": 1100.0})
    report = dict(results=results, profile=profile, sentence_transformers=st, runtime=runtime)
    smoke = {"checks": [dict(name="model minilm bfloat16", ok=True, err=0.01, hf_err=0.008, bound=0.024)]}
    got = [(t["target"], t["met"]) for t in finish.targets(report, smoke)]
    expected = [
        ("1x128 <= 0.30 ms", True),
        ("32x128 <= 1.6 ms", False),  # 1.7 ms
        ("32x512 <= 0.85 x", True),  # 0.80 x
        ("32x128 U[16,128] <= 1.2 ms", True),  # 1.0 ms, 3.0x hf-sdpa, ahead of 1.1 ms
        ("32x128 GEMM time within 5%", True),  # 1.0 vs 0.97 ms
        ("32x128 attention at or below", True),
        ("sentence-transformers >= 2.5x at batch 32", True),
        ("sentence-transformers >= 2.5x at batch 128", False),
        ("model minilm bfloat16: error <= 2x", True),
        ("cold start <= 5 s", True),
        ("new bucket <= 1 s", None),  # not measured: the probe was cut
        ("replay rate >= 99%", True),
        ("0 mismatches under threads", True),
        ("reserved memory flat", False),  # grew 10%
    ]
    assert len(got) == len(expected)
    for (target, met), (prefix, want) in zip(got, expected):
        assert target.startswith(prefix) and met is want, (target, met, want)
