"""`bertfast bench`: bertfast against its peers, in one process, with the device's ceilings beside.

    from bertfast import bench
    report = bench.run(bench.BenchOptions(models=["minilm"], device="cpu", quick=True))
    bench.write_reports(report, "benchmarks/results")   # <slug>.json, <slug>.md, <slug>.png

What is timed: the encoder forward (`model(input_ids, attention_mask=mask)`) of transformers'
BertModel, in several engines that share one set of weights, on padded batches: every engine gets
the same (B, S) ids and mask; bertfast removes the padding internally. What each figure means is
`report.CONVENTIONS` (also written into every report).

The package, one job per module:
  models     the models (published configs with random weights; MiniLM's real checkpoint)
  workloads  fixed shapes, seeded variable lengths, real sentences
  engines    HF eager / SDPA, torch.compile (default and reduce-overhead), bertfast with and without graphs
  device     device names and versions, timing (back to back; latency), the measured ceilings
  floors     useful FLOPs and the per-part floors (also used by benchmarks/floors.py)
  runner     BenchOptions and run(): cases x engines, interleaved
  profile    torch.profiler time per part (GEMMs, attention, norms, other)
  st         the sentence-transformers workload
  runtime    the probes measured in fresh processes (cold start, new bucket, replay rate, host time, threads)
  report     the JSON keys, Markdown, plot, merging and writing
  cli        the `bertfast bench` subcommand
"""

from .device import measure_peaks, raise_ceilings, slug
from .engines import DEFAULT_ENGINES, ENGINES, Engine, engine, is_peer
from .floors import encoder_flops, part_floors_ms, throughput
from .models import MODEL_CONFIGS, PUBLIC_MODELS, build_hf, minilm_dir, model_dims
from .profile import classify, profile_forward
from .report import CONVENTIONS, RESULT_KEYS, TOP_KEYS, markdown, merge_reports, plot, report_stem, write_reports
from .runner import BenchOptions, annotate_best_peer, run
from .workloads import VARLEN_DISTS, Case, InputSet, make_case, sentence_ids, sentences, varlen_lengths

__all__ = [
    "CONVENTIONS",
    "DEFAULT_ENGINES",
    "ENGINES",
    "MODEL_CONFIGS",
    "PUBLIC_MODELS",
    "RESULT_KEYS",
    "TOP_KEYS",
    "VARLEN_DISTS",
    "BenchOptions",
    "Case",
    "Engine",
    "InputSet",
    "annotate_best_peer",
    "build_hf",
    "classify",
    "encoder_flops",
    "engine",
    "is_peer",
    "make_case",
    "markdown",
    "measure_peaks",
    "merge_reports",
    "minilm_dir",
    "model_dims",
    "part_floors_ms",
    "plot",
    "profile_forward",
    "raise_ceilings",
    "report_stem",
    "run",
    "sentence_ids",
    "sentences",
    "slug",
    "throughput",
    "varlen_lengths",
    "write_reports",
]
