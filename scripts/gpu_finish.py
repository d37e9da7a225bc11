"""The last step of scripts/gpu_check.sh: one report of the whole check, and the logs in one archive.

    python scripts/gpu_finish.py OUT LOGS

Reads LOGS/stages.jsonl (one line per stage: name, status ran|failed|cut|skipped, seconds, limit, exit
code), LOGS/smoke.json and LOGS/tables.json; puts them, as "gpu_check", into the bench's report in OUT
(or into a report of its own when the bench never ran), rewrites its Markdown with a GPU-check section
first, and packs LOGS into OUT/gpu-check-logs.tar.gz. OUT then holds at most 8 files: the report's
.json, .md and .png, the two tables, and the archive.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import sys
import tarfile
from pathlib import Path

MAX_FILES = 8
ARCHIVE = "gpu-check-logs.tar.gz"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stages(logs: Path) -> list[dict]:
    try:
        lines = (logs / "stages.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _bench_report(out: Path) -> Path | None:
    """The bench's report JSON in OUT: the one .json that is neither a table nor a section file."""
    found = [
        p for p in out.glob("*.json") if "header" not in (_read_json(p) or {}) and "results" in (_read_json(p) or {})
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _rows(report: dict, lengths: str, batch: int, seq: int, model: str = "bert-base", dtype: str = "float16"):
    """{engine: median_ms} of one case."""
    return {
        r["engine"]: r["median_ms"]
        for r in report.get("results", [])
        if (r["model"], r["dtype"], r["lengths"], r["batch"], r["seq"]) == (model, dtype, lengths, batch, seq)
    }


def _ours_and_peers(case: dict) -> tuple[float | None, dict]:
    ours = [ms for e, ms in case.items() if e.startswith("bertfast")]
    return (min(ours) if ours else None), {e: ms for e, ms in case.items() if not e.startswith("bertfast")}


def _target(name: str, measured, met) -> dict:
    return dict(target=name, measured=measured, met=met)


def _speed_targets(report: dict) -> list[dict]:
    out = []
    ours, peers = _ours_and_peers(_rows(report, "fixed", 1, 128))
    best = min(peers.values(), default=None)
    out.append(
        _target(
            "1x128 <= 0.30 ms, ahead of every peer",
            ours,
            None if ours is None or best is None else ours <= 0.30 and ours < best,
        )
    )
    ours, _ = _ours_and_peers(_rows(report, "fixed", 32, 128))
    out.append(_target("32x128 <= 1.6 ms", ours, None if ours is None else ours <= 1.6))
    ours, peers = _ours_and_peers(_rows(report, "fixed", 32, 512))
    best = min(peers.values(), default=None)
    ratio = None if ours is None or best is None else ours / best
    out.append(_target("32x512 <= 0.85 x the best peer", ratio, None if ratio is None else ratio <= 0.85))
    ours, peers = _ours_and_peers(_rows(report, "varlen-uniform", 32, 128))
    sdpa, tcg = peers.get("hf-sdpa"), peers.get("torch-compile-cudagraphs")
    met = None if ours is None or sdpa is None or tcg is None else ours <= 1.2 and sdpa / ours >= 2.5 and ours < tcg
    out.append(
        _target(
            "32x128 U[16,128] <= 1.2 ms, >= 2.5x hf-sdpa, ahead of torch-compile-cudagraphs",
            {"ms": ours, "x_hf_sdpa": sdpa / ours if ours and sdpa else None, "torch_compile_cudagraphs_ms": tcg},
            met,
        )
    )
    parts = {
        p["engine"]: p.get("parts_ms") or {}
        for p in report.get("profile") or []
        if p.get("case") == "fixed b32 s128" and p.get("dtype") == "float16"
    }
    ours_p = parts.get("bertfast-graphs") or parts.get("bertfast") or {}
    ref_p = parts.get("hf-sdpa") or {}
    if ours_p.get("gemm") and ref_p.get("gemm"):
        out.append(
            _target(
                "32x128 GEMM time within 5% of cuBLAS (hf-sdpa's)",
                ours_p["gemm"] / ref_p["gemm"],
                ours_p["gemm"] <= 1.05 * ref_p["gemm"],
            )
        )
    if ours_p.get("attention") and ref_p.get("attention"):
        out.append(
            _target(
                "32x128 attention at or below cuDNN's (hf-sdpa's)",
                ours_p["attention"] / ref_p["attention"],
                ours_p["attention"] <= ref_p["attention"],
            )
        )
    for row in (report.get("sentence_transformers") or {}).get("rows", []):
        out.append(
            _target(
                f"sentence-transformers >= 2.5x at batch {row['batch_size']}", row["speedup"], row["speedup"] >= 2.5
            )
        )
    return out


def _accuracy_and_runtime_targets(report: dict, smoke: dict | None) -> list[dict]:
    out = []
    for c in (smoke or {}).get("checks", []):
        if c["name"].startswith("model") and "hf_err" in c:
            out.append(
                _target(
                    f"{c['name']}: error <= 2x HF's own (+ atol)", {"err": c["err"], "hf_err": c["hf_err"]}, c["ok"]
                )
            )
    rt = report.get("runtime") or {}

    def num(v):
        return v if isinstance(v, (int, float)) else None

    cold, new, rate = num(rt.get("cold_start_s")), num(rt.get("new_bucket_s")), num(rt.get("replay_rate"))
    threads, reserved = rt.get("threads_ok") or {}, rt.get("reserved_mb") or {}
    out.append(_target("cold start <= 5 s", rt.get("cold_start_s"), None if cold is None else cold <= 5))
    out.append(_target("new bucket <= 1 s", rt.get("new_bucket_s"), None if new is None else new <= 1))
    out.append(_target("replay rate >= 99%", rt.get("replay_rate"), None if rate is None else rate >= 0.99))
    mism = threads.get("mismatches")
    out.append(_target("0 mismatches under threads", threads, None if mism is None else mism == 0))
    flat = None if "at_end" not in reserved else reserved["at_end"] <= 1.05 * reserved["after_quarter"]
    out.append(_target("reserved memory flat (end <= 1.05x after a quarter)", reserved, flat))
    return out


def targets(report: dict, smoke: dict | None) -> list[dict]:
    """Issue 16's targets against this run's figures: met True/False, or None where not measured."""
    return _speed_targets(report) + _accuracy_and_runtime_targets(report, smoke)


def check_lines(gc: dict) -> list[str]:
    lines = [
        f"## GPU check ({gc['mode']}): {gc['verdict']}",
        "",
        "| stage | status | seconds | limit s | exit |",
        "|---|---|---|---|---|",
    ]
    for s in gc["stages"]:
        lines.append(
            f"| {s['stage']} | {s['status']} | {s.get('seconds', '–')} | {s.get('limit', '–')} | {s.get('rc', '–')} |"
        )
    smoke = gc.get("smoke") or {}
    if smoke.get("checks"):
        lines += ["", "Smoke checks (error against HF fp32 / fp64 references, real positions):", ""]
        for c in smoke["checks"]:
            detail = {k: v for k, v in c.items() if k not in ("name", "ok", "trace", "choices")}
            lines.append(f"- {'ok' if c['ok'] else 'FAILED'} {c['name']}: {json.dumps(detail, default=str)}")
    tables = gc.get("tables") or {}
    if tables:
        gemm = tables.get("gemm") or {}
        lines += [
            "",
            f"Tables: GEMM choices {gemm.get('rows', 0)} rows (wins {json.dumps(gemm.get('wins', {}))}; cut: "
            f"{', '.join(gemm.get('cut') or []) or 'none'}); kernel configs: {json.dumps(tables.get('configs'))}.",
        ]
    if gc.get("targets"):
        lines += ["", "| target (H100/H200, fp16, BERT-base) | measured | met |", "|---|---|---|"]
        for t in gc["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {json.dumps(t['measured'], default=str)} | {met} |")
    return lines + [""]


def finish(out: Path, logs: Path, mode: str) -> dict:
    st = stages(logs)
    smoke, tables = _read_json(logs / "smoke.json"), _read_json(logs / "tables.json")
    bad = [s["stage"] for s in st if s["status"] in ("failed", "cut")]
    gc = dict(
        mode=mode,
        verdict="all stages ran" if not bad else "not complete: " + ", ".join(bad),
        stages=st,
        smoke=smoke,
        tables=tables,
    )
    path = _bench_report(out)
    if path is not None:
        report = _read_json(path)
        gc["targets"] = targets(report, smoke)
        report["gpu_check"] = gc
        path.write_text(json.dumps(report, indent=1, default=str))
        md = path.with_suffix(".md")
        body = md.read_text() if md.is_file() else ""
        md.write_text("\n".join(check_lines(gc)) + "\n" + body)
    else:  # the bench never ran (smoke failed, or the budget ran out): the check's report alone
        device = (tables or {}).get("device") or (smoke or {}).get("device") or "unknown device"
        stem = f"gpu-check-{_dt.datetime.now().strftime('%Y-%m-%d-%H%M')}"
        report = dict(device=device, date=_dt.datetime.now().isoformat(timespec="seconds"), results=[], runtime=None)
        report["gpu_check"] = gc
        (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
        (out / f"{stem}.md").write_text("\n".join(check_lines(gc)))
    for extra in out.iterdir():  # anything a stage left in OUT beside the report and the tables goes to the logs
        keep = extra.suffix in (".json", ".md", ".png") or extra.name == ARCHIVE
        if extra != logs and not keep:
            shutil.move(str(extra), logs / extra.name)
    with tarfile.open(out / ARCHIVE, "w:gz") as tar:
        tar.add(logs, arcname="logs")
    shutil.rmtree(logs)
    files = sorted(p.name for p in out.iterdir())
    if len(files) > MAX_FILES:
        raise SystemExit(f"gpu_finish: {len(files)} files in {out}, at most {MAX_FILES} come back: {files}")
    return dict(verdict=gc["verdict"], files=files)


if __name__ == "__main__":
    result = finish(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "gpu")
    print(json.dumps(result))
