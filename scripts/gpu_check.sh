#!/usr/bin/env bash
# One device call on a lent GPU machine: build the extension, run the test suite on the GPU, then the
# benchmark with --profile and --runtime; logs and reports land in $OUT. The whole call stays under
# ~9 minutes (the device's limit is 10): each stage gets min(its cap, what is left of BUDGET_S), and
# the bench rewrites its JSON after every case, so a stage cut short still leaves its results.
#
# Here, before the call:   python scripts/make_minilm_fp16.py .carry/minilm-fp16
# The call:                run(command="bash scripts/gpu_check.sh", carry=[".carry"])
# Fewer stages:            run(command="STAGES='build bench runtime' bash scripts/gpu_check.sh", carry=[".carry"])
# The per-GPU tables:      run(command="STAGES='build tables' bash scripts/gpu_check.sh") -> commit
#                          $OUT/<gpu>.json (GEMM choices) and $OUT/configs-<gpu>.json (kernel configs)
#                          into bertfast/kernels/tables/, then run the bench again (it uses them).
# Afterwards: copy the report files from $OUT into benchmarks/results/ and commit them.
#
# Files back (8): env.txt build.log pytest.log bench.log runtime.log and <report>.{json,md,png}
# (the runtime stage appends its section to the bench stage's report).
set -uo pipefail
START=$(date +%s)
BUDGET_S=${BUDGET_S:-540}
STAGES=${STAGES:-"build tests bench runtime"}
OUT=${OUT:-/tmp/bertfast-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export BERTFAST_MINILM_DIR=${BERTFAST_MINILM_DIR:-$PWD/.carry/minilm-fp16}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET

# Seconds a stage may take: its cap, or what is left of the budget if that is less (at least 10).
limit() { local left=$((BUDGET_S - ($(date +%s) - START))); local s=$(( $1 < left ? $1 : left )); echo $(( s > 10 ? s : 10 )); }
has() { [[ " $STAGES " == *" $1 "* ]]; }

{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; \
  echo "MiniLM: $BERTFAST_MINILM_DIR"; ls "$BERTFAST_MINILM_DIR"; } > "$OUT/env.txt" 2>&1

if has build; then
  timeout "$(limit 90)" python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 \
    && echo "build ok" || { echo "build failed"; tail -20 "$OUT/build.log"; }
fi

# 1. Tests on the GPU: kernels compiled (not interpreted), bf16, MiniLM fp16 from BERTFAST_MINILM_DIR.
if has tests; then
  timeout "$(limit ${TESTS_S:-200})" python3 -m pytest -q -rs -p no:cacheprovider -m "not slow" tests > "$OUT/pytest.log" 2>&1
  echo "pytest exit $? ($(( $(date +%s) - START )) s so far)"; tail -15 "$OUT/pytest.log"
fi

# 0. The per-GPU tables (opt-in: STAGES='build tables'): every GEMM implementation timed on BERT-base's
#    shapes (the choice table) and Triton's autotuner over every token bucket (the config table).
if has tables; then
  export BERTFAST_CACHE_DIR="$OUT/cache"
  slug=$(python3 -c "import torch; from bertfast.tuning import gpu_slug; print(gpu_slug(torch.cuda.get_device_name()))")
  timeout "$(limit ${TABLES_S:-480})" python3 -m bertfast tune --model bert-base --dtype fp16 --max-tokens 4096 \
    --gemm-table "$OUT/$slug.json" --quiet > "$OUT/tables.log" 2>&1
  echo "tables exit $? ($(( $(date +%s) - START )) s so far)"; tail -20 "$OUT/tables.log"
  cp "$BERTFAST_CACHE_DIR/tuned-$slug.json" "$OUT/configs-$slug.json" 2>/dev/null
fi

# 2. The benchmark: BERT-base (random weights) fp16 against the strongest peers in one process, the
#    profile per part, and the sentence-transformers MiniLM workload (real weights).
if has bench; then
  # shellcheck disable=SC2086
  timeout "$(limit ${BENCH_S:-240})" python3 -m bertfast bench --device cuda --dtype fp16 --model bert-base \
    --batch 1 32 --seq 128 512 --varlen uniform --n-sets 2 --profile --st --out "$OUT" --no-progress \
    --engines ${ENGINES:-bertfast bertfast-graphs hf-sdpa torch-compile torch-compile-cudagraphs} > "$OUT/bench.log" 2>&1
  echo "bench exit $? ($(( $(date +%s) - START )) s so far)"; tail -60 "$OUT/bench.log"
fi

# 3. The runtime section (each probe in a fresh process, empty caches), appended to the bench's report.
if has runtime; then
  prior=$(ls -t "$OUT"/*.json 2>/dev/null | head -1)
  timeout "$(limit 600)" python3 -m bertfast bench --device cuda --dtype fp16 --model minilm --batch 1 --seq 128 \
    --varlen none --n-sets 1 --engines bertfast-graphs hf-sdpa --no-st --runtime --runtime-timeout-s 60 \
    ${prior:+--append "$prior"} --out "$OUT" --no-progress > "$OUT/runtime.log" 2>&1
  echo "runtime exit $? ($(( $(date +%s) - START )) s in all)"; grep -A12 "^## Runtime" "$OUT/runtime.log" | head -14
fi
