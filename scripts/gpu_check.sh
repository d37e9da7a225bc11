#!/usr/bin/env bash
# One device call on a lent GPU machine: build the extension, run the whole test suite on the GPU,
# then the benchmark; logs and reports land in $OUT (8 files at most come back).
#
# Here, before the call:   python scripts/make_minilm_fp16.py .carry/minilm-fp16
# The call:                run(command="bash scripts/gpu_check.sh", carry=[".carry"])
# Afterwards: copy the report files from $OUT into benchmarks/results/ and commit them.
set -uo pipefail
OUT=${OUT:-/tmp/bertfast-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export BERTFAST_MINILM_DIR=${BERTFAST_MINILM_DIR:-$PWD/.carry/minilm-fp16}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET

{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; } \
  > "$OUT/env.txt" 2>&1
python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -20 "$OUT/build.log"; }

# 1. Tests on the GPU: kernels compiled (not interpreted), bf16, every autotune config, MiniLM fp16.
timeout 300 python3 -m pytest -q -rs tests -p no:cacheprovider > "$OUT/pytest.log" 2>&1
echo "pytest exit $?"; tail -15 "$OUT/pytest.log"

# 2. The benchmark: peers in one process; JSON + Markdown + PNG.
timeout 240 python3 -m bertfast bench --device cuda --model minilm bert-base --dtype fp16 \
  --batch 1 8 32 128 --seq 16 128 512 --out "$OUT" --no-progress > "$OUT/bench.log" 2>&1
echo "bench exit $?"; tail -40 "$OUT/bench.log"
