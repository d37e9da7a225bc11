"""A run's report: the JSON schema's key lists, the Markdown tables, the PNG plot, merging and writing."""

from __future__ import annotations

import json
import math
import os

from .device import slug
from .engines import is_peer

# The report's keys in schema order, grouped by when they were added (the formatter would give one per line).
# fmt: off
RESULT_KEYS = ["model", "engine", "dtype", "batch", "seq", "lengths", "cuda_graphs", "median_ms", "ms_per_sentence",
               "tokens_per_s", "tflops", "frac_of_peak", "max_abs_err", "peak_mem_mb", "first_call_ms",
               # added with the strongest peers: one synchronized call, and the case's fastest peer
               "latency_ms", "best_peer", "speedup_vs_best_peer"]
TOP_KEYS = ["device", "torch", "triton", "transformers", "date", "driver", "peak", "results", "skipped",
            # added later; None where the run did not ask for them
            "weights", "profile", "sentence_transformers", "runtime"]
# fmt: on

CONVENTIONS = """\
* FLOPs are *useful* FLOPs: the encoder's GEMMs and attention over real tokens only, for every
  engine, per layer 2·T·(4H² + 2·H·I) + 4·Σ lenᵢ²·H (T = Σ lenᵢ). Engines that compute on padding
  therefore show lower useful throughput. Embeddings and pooler are not counted.
* median_ms: GPU: CUDA-event time per call of calls issued back to back (no synchronize between
  them), after warm-up, median over many calls with the input sets rotated; the engines are
  interleaved in rounds. latency_ms: wall time of one call followed by a synchronize, from an idle
  device, median of several. CPU: time.perf_counter per call for both (the CPU has no queue).
* best_peer: the fastest peer (any engine not named bertfast*) by median_ms in the same case;
  speedup_vs_best_peer = its median_ms over the row's.
* max_abs_err: against Hugging Face's eager BertModel in fp32 (TF32 off), on real positions only.
* peak_mem_mb (GPU): the engine's weights plus the largest allocation above the baseline during its
  calls of that case. first_call_ms: the first call of the case, synchronized (compilation,
  autotuning and allocation included; on the first case of an engine, its compile time).
* peak.matmul_tflops_by_dtype: the best of several rounds of F.linear (the engines' GEMM path) on a
  large square problem and on BERT's FFN shape, per dtype; copy_tbps counts bytes read + written.
  Where a row still measured more, the ceiling is raised to that figure (peak.raised says so), so
  frac_of_peak never exceeds 1; nothing is clamped.
* bert-base and bert-large have random weights (published configs, seeded HF init); minilm's are
  real (report "weights")."""


def report_stem(report: dict) -> str:
    """<device-slug>-<date>, the date with minutes so that several runs of a day do not collide."""
    date = report["date"].replace(":", "")[:15].replace("T", "-")  # 2026-11-25-0246
    return f"{slug(report['device'])}-{date}"


def _fmt(v, spec=".2f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def flops_unit(report: dict) -> tuple[str, float]:
    """The unit the text and the columns both use for FLOP rates: GFLOP/s on CPU, TFLOP/s on GPU."""
    return ("GFLOP/s", 1e3) if report.get("device_type") == "cpu" else ("TFLOP/s", 1.0)


def best_bertfast(rows_of_case: dict[str, dict]) -> dict | None:
    """The fastest bertfast* row of a case (by median_ms)."""
    ours = [r for e, r in rows_of_case.items() if not is_peer(e)]
    return min(ours, key=lambda r: r["median_ms"]) if ours else None


def _header(report: dict) -> list[str]:
    p = report["peak"]
    unit, scale = flops_unit(report)
    bw_unit, bw_scale = ("GB/s", 1e3) if report.get("device_type") == "cpu" else ("TB/s", 1.0)
    per = ", ".join(f"{k} {v * scale:.1f}" for k, v in p["matmul_tflops_by_dtype"].items())
    ceil = f"{p.get('matmul_op', 'matmul')} {unit}: {per}; copy {p['copy_tbps'] * bw_scale:.2f} {bw_unit} (read+write)"
    lines = [
        f"# bertfast bench — {report['device']}",
        "",
        f"{report['date']} · torch {report['torch']} · triton {report['triton']} · "
        f"transformers {report['transformers']}"
        + (f" · driver {report['driver']}" if report.get("driver") else "")
        + (f" · {report['cpu_threads']} threads" if report.get("cpu_threads") else "")
        + (
            f" · host load {report['host_load_per_core']:.2f} per core at the start"
            if report.get("host_load_per_core") is not None
            else ""
        ),
        "",
        f"Ceilings: {ceil}. Sentence lengths tokenized by: {report.get('tokenizer') or 'n/a'}.",
    ]
    for dt, r in (p.get("raised") or {}).items():
        lines.append(
            f"{dt}: ceiling raised to the best measured, {r['raised_to'] * scale:.1f} {unit} by {r['by']} "
            f"(the ceiling runs gave {r['measured'] * scale:.1f})."
        )
    for model, note in (report.get("weights") or {}).items():
        lines.append(f"Weights of {model}: {note}.")
    return lines + [""]


def _case_key(r: dict) -> tuple:
    return (r["model"], r["dtype"], r["lengths"], r["batch"], r["seq"])


def _speed_tables(report: dict) -> list[str]:
    rows = report["results"]
    unit, scale = flops_unit(report)
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    cases = list(dict.fromkeys(_case_key(r) for r in rows))
    by = {(_case_key(r), r["engine"]): r for r in rows}
    has_ours = any(not is_peer(e) for e in engines)
    lines = [
        "Median ms per batch, calls back to back (lower is better); `useful` FLOP rates count real tokens only, for "
        "every engine; err = max abs error vs HF fp32 eager on real positions.",
        "",
    ]
    head = ["model", "dtype", "lengths", "batch", "seq"] + [f"{e} ms" for e in engines]
    if has_ours:
        head += [
            "best peer",
            "best bertfast speed-up vs best peer",
            f"bertfast useful {unit} (% peak)",
            "bertfast ms/sent",
            "bertfast err",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cases:
        of_case = {e: by[(c, e)] for e in engines if (c, e) in by}
        cells = [c[0], c[1], c[2], str(c[3]), str(c[4])]
        cells += [_fmt(of_case[e]["median_ms"]) if e in of_case else "skipped" for e in engines]
        if has_ours:
            bf = best_bertfast(of_case)
            if bf is None:
                cells += ["–"] * 5
            else:
                frac = bf["frac_of_peak"]
                rate = _fmt(bf["tflops"] * scale)
                cells += [
                    bf.get("best_peer") or "–",
                    f"{bf['speedup_vs_best_peer']:.2f}x ({bf['engine']})" if bf.get("speedup_vs_best_peer") else "–",
                    f"{rate} ({frac * 100:.1f}%)" if frac is not None else rate,
                    _fmt(bf["ms_per_sentence"], ".3f"),
                    _fmt(bf["max_abs_err"], ".1e"),
                ]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("device_type") == "cpu":
        return lines + [
            "",
            "Latency (one call, synchronized) equals the back-to-back time on the CPU: the same samples.",
        ]
    lines += ["", "Latency: ms of one call followed by a synchronize, from an idle device.", ""]
    head = ["model", "dtype", "lengths", "batch", "seq"] + [f"{e} ms" for e in engines]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cases:
        cells = [c[0], c[1], c[2], str(c[3]), str(c[4])]
        cells += [_fmt(by[(c, e)].get("latency_ms")) if (c, e) in by else "skipped" for e in engines]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _profile_table(profile: list[dict]) -> list[str]:
    lines = ["", "## Where the time goes (torch.profiler), ms per forward, each part × its floor", ""]
    head = ["model", "dtype", "case", "engine", "source", "GEMMs", "attention", "norms", "other", "total", "median_ms"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in profile:
        if "skipped" in p:
            lines.append(f"| {p['model']} | {p['dtype']} | {p['case']} | {p['engine']} | skipped: {p['skipped']} |")
            continue
        cells = [p["model"], p["dtype"], p["case"], p["engine"], p["source"]]
        for part in ("gemm", "attention", "norms", "other"):
            x = p["vs_floor"].get(part)
            cells.append(f"{p['parts_ms'][part]:.3f}" + (f" ({x:.1f}x)" if x is not None else ""))
        cells += [f"{p['total_ms']:.3f}", _fmt(p.get("median_ms"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _st_table(st: dict) -> list[str]:
    lines = ["", f"## sentence-transformers: {st.get('model', 'MiniLM-L6')}, {st.get('dtype', '')}", ""]
    if "skipped" in st:
        return lines + [f"Skipped: {st['skipped']}"]
    lines += [
        f"{st['n_sentences']} varied sentences, `SentenceTransformer.encode` plain against after "
        f"`bertfast.optimize(model)`, same process; sentences per second (higher is better).",
        "",
    ]
    head = ["batch_size", "plain sent/s", "bertfast sent/s", "speed-up", "max abs diff", "min cosine"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in st["rows"]:
        cells = [
            str(r["batch_size"]),
            _fmt(r["plain_sent_per_s"], ".0f"),
            _fmt(r["bertfast_sent_per_s"], ".0f"),
            f"{r['speedup']:.2f}x",
            _fmt(r["max_abs_diff"], ".1e"),
            _fmt(r["min_cosine"], ".6f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _runtime_lines(rt: dict) -> list[str]:
    lines = [
        "",
        f"## Runtime: each figure from a fresh process, {rt.get('dtype', '')} (cold start, new bucket, host "
        f"time: {rt.get('model', '')}; replay rate, threads: {rt.get('replay_model', '')})",
        "",
    ]
    for key in ("cold_start_s", "new_bucket_s", "replay_rate", "reserved_mb", "host_us_per_call", "threads_ok"):
        lines.append(f"- `{key}`: {json.dumps(rt.get(key), default=str)}")
    if rt.get("method"):
        lines += ["", rt["method"]]
    return lines


def markdown(report: dict) -> str:
    """The Markdown report: header (device, versions, ceilings, weights), the speed and latency tables,
    then the profile, sentence-transformers and runtime sections when the run has them."""
    lines = _header(report) + _speed_tables(report)
    if report.get("profile"):
        lines += _profile_table(report["profile"])
    if report.get("sentence_transformers"):
        lines += _st_table(report["sentence_transformers"])
    if report.get("runtime"):
        lines += _runtime_lines(report["runtime"])
    if report["skipped"]:
        lines += ["", "Skipped:", ""]
        for s in report["skipped"]:
            lines.append(f"- {s.get('model', '')} {s.get('dtype', '')} {s['engine']} ({s['case']}): {s['reason']}")
    return "\n".join(lines) + "\n"


def _plot_fixed(ax, sel: list[dict]) -> None:
    batches = sorted({r["batch"] for r in sel})
    markers = dict(zip(batches, "os^Dvp<>*h"))
    for k, eng in enumerate(dict.fromkeys(r["engine"] for r in sel)):
        # One line per engine, drawn as one segment per batch size (the seq sweep), so that shapes with
        # the same batch×seq but different batch do not zig-zag; marker = batch.
        for b in batches:
            pts = sorted(
                (r["batch"] * r["seq"], r["ms_per_sentence"]) for r in sel if r["engine"] == eng and r["batch"] == b
            )
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=f"C{k}",
                marker=markers[b],
                markersize=4,
                label=eng if b == batches[0] else None,
            )
    for b in batches:
        ax.plot([], [], color="gray", marker=markers[b], linestyle="none", label=f"batch {b}")
    ax.set_xlabel("batch × seq (tokens per batch)")


def _plot_varlen(ax, sel: list[dict]) -> None:
    kinds = list(dict.fromkeys(r["lengths"] for r in sel))
    markers = dict(zip(kinds, "os^Dv"))
    for k, eng in enumerate(dict.fromkeys(r["engine"] for r in sel)):
        for kind in kinds:
            pts = sorted(
                (r["tokens"], r["ms_per_sentence"]) for r in sel if r["engine"] == eng and r["lengths"] == kind
            )
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=f"C{k}",
                marker=markers[kind],
                markersize=5,
                linestyle=":",
                label=eng if kind == kinds[0] else None,
            )
    for kind in kinds:
        ax.plot([], [], color="gray", marker=markers[kind], linestyle="none", label=kind)
    ax.set_xlabel("real tokens per batch (mean over input sets)")


def plot(report: dict, path: str) -> None:
    """ms per sentence, log-log, one colour per engine; per model/dtype a panel of fixed shapes
    (x: batch × seq, marker: batch) and, below it, one of the variable-length workloads (x: real
    tokens per batch, marker: workload)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    panels = list(dict.fromkeys((r["model"], r["dtype"]) for r in rows)) or [("no results", "")]
    fig, axes = plt.subplots(2, len(panels), figsize=(5.5 * len(panels), 8.4), squeeze=False)
    for col, (model, dt) in enumerate(panels):
        sel = [r for r in rows if r["model"] == model and r["dtype"] == dt]
        for ax, kind, draw in ((axes[0][col], "fixed", _plot_fixed), (axes[1][col], "variable lengths", _plot_varlen)):
            part = [r for r in sel if (r["lengths"] == "fixed") == (kind == "fixed")]
            if part:
                draw(ax, part)
                ax.legend(fontsize=7)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_ylabel("ms per sentence")
            ax.set_title(f"{model} {dt}, {kind}" + ("" if part else " (none)"))
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{report['device']} — {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge_reports(prior: dict, new: dict) -> dict:
    """`prior` with `new`'s rows appended (same device), keeping prior's date and so its file name;
    each run's ceilings are kept under peak_runs. Rows of a case measured again replace the old ones;
    the profile, sentence-transformers and runtime sections of `new` replace prior's where present."""
    if prior.get("device") != new.get("device"):
        raise ValueError(
            f"cannot merge reports of different devices: {prior.get('device')!r} and {new.get('device')!r}"
        )

    def key(r: dict) -> tuple:
        return (r["model"], r["engine"], r["dtype"], r["batch"], r["seq"], r["lengths"], r["cuda_graphs"])

    fresh = {key(r) for r in new["results"]}
    out = dict(prior)
    out["results"] = [r for r in prior["results"] if key(r) not in fresh] + new["results"]
    out["skipped"] = prior.get("skipped", []) + new.get("skipped", [])
    out["peak_runs"] = prior.get("peak_runs", [dict(date=prior["date"], **prior["peak"])]) + [
        dict(date=new["date"], **new["peak"])
    ]
    out["weights"] = {**(prior.get("weights") or {}), **(new.get("weights") or {})}
    if new.get("tokenizer"):
        out["tokenizer"] = new["tokenizer"]
    for section in ("profile", "sentence_transformers", "runtime"):
        if new.get(section):
            out[section] = new[section]
    return out


def write_reports(report: dict, out_dir: str, with_plot: bool = True) -> dict[str, str]:
    """Write <stem>.json, <stem>.md (and <stem>.png); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, report_stem(report))
    paths = {"json": stem + ".json", "md": stem + ".md"}
    with open(paths["json"] + ".tmp", "w") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(paths["json"] + ".tmp", paths["json"])
    with open(paths["md"], "w") as f:
        f.write(markdown(report))
    if with_plot:
        paths["png"] = stem + ".png"
        plot(report, paths["png"])
    return paths
