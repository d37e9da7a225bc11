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
