#!/usr/bin/env bash
# The GPU checks, as one script for a borrowed GPU machine: NAVSIM-size agents' latency, the RWM's throughput
# against the scorer, training-step time and memory against the batch, and a short imitation run of the `real`
# preset (bf16) for the VLA and TransFuser.
#
#     OUT=/tmp/gpu bash benchmarks/gpu_checks.sh [NAVTRAIN_LOGS]
#
# It writes a medium synthetic world (NAVTRAIN_LOGS navtrain logs of 60 frames, default 12, about 40 scenes each;
# 4 navtest logs) with one process per core, since the embedded 2.4 GB world is not worth copying for a timing
# run. Each step's log lands in $OUT; a step that fails is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for logs}
NAVTRAIN_LOGS=${1:-12}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu dry-runs the script on a machine without a GPU
IL_ARGS=${IL_ARGS:---epochs 2 --max-val-scenes 64 --num-workers 8}  # e.g. smaller for that dry run
export PYTHONUNBUFFERED=1 OPENSCENE_DATA_ROOT=${OPENSCENE_DATA_ROOT:-/tmp/irlvla_gpu/world}
export NAVSIM_EXP_ROOT=${NAVSIM_EXP_ROOT:-/tmp/irlvla_gpu/exp}
mkdir -p "$OUT"

step() {  # step NAME TIMEOUT_S COMMAND...: run, time, log to $OUT/NAME.log, report the exit status
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "[$name] rc=$rc in $((SECONDS - start)) s"
    grep -v -E "it/s\]|s/it\]|scene/s\]|log/s\]|sample/s\]" "$OUT/$name.log" | tail -n 40
}

SMI=
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 1 >"$OUT/gpu_usage.csv" &
    SMI=$!
fi

step world 90 "$PY" -c "
import os
from pathlib import Path
from irlvla_env.synthetic.config import SplitSize, SynthConfig
from irlvla_env.synthetic.generate import generate_dataset
config = SynthConfig(splits={'navtrain': SplitSize($NAVTRAIN_LOGS, 60), 'navtest': SplitSize(4, 63),
                             'navmini': SplitSize(1, 20)}, n_workers=os.cpu_count())
generate_dataset(Path(os.environ['OPENSCENE_DATA_ROOT']), config, progress=False)
"
step agents_cpu_size 60 "$PY" benchmarks/bench_agents.py --device "$DEVICE" --batch 8 --repeats 20
step agents_real_size 120 "$PY" benchmarks/bench_agents.py --device "$DEVICE" --preset real --batch 8 --repeats 10
for agent in vla transfuser; do
    step "train_step_${agent}_real" 120 "$PY" benchmarks/bench_train_step.py --agent $agent --preset real \
        --device "$DEVICE" --batches 8 16 32 64 --repeats 3
done
LABELS=$NAVSIM_EXP_ROOT/labels
step rwm_train 60 "$PY" -m irlvla_env.cli train rwm --max-scenes 64 --epochs 1 --threads 4 --no-progress \
    --labels-dir "$LABELS/navtrain"
step rwm_navtest_labels 60 "$PY" -m irlvla_env.cli eval-rwm --max-scenes 32 --no-progress --labels-dir "$LABELS/navtest"
step rwm_throughput 45 "$PY" benchmarks/bench_rwm.py --device "$DEVICE" --scenes 32 --threads 4 --labels-dir "$LABELS/navtest"
for agent in vla transfuser; do
    step "il_${agent}_real" 180 "$PY" -m irlvla_env.cli train il --agent $agent --preset real $IL_ARGS --no-progress \
        --run-dir "$NAVSIM_EXP_ROOT/il_${agent}_real"
done
for run in il_vla_real il_transfuser_real; do
    [ -f "$NAVSIM_EXP_ROOT/$run/metrics.json" ] && cp "$NAVSIM_EXP_ROOT/$run/metrics.json" "$OUT/$run.metrics.json"
done
if [ -n "$SMI" ]; then
    kill "$SMI"
    "$PY" -c "
import csv, sys
rows = list(csv.reader(open('$OUT/gpu_usage.csv')))[1:]
mem = [float(r[1].split()[0]) for r in rows if len(r) > 2]
print(f'peak GPU memory used: {max(mem, default=0):.0f} MiB over {len(mem)} samples')
"
fi
