#!/bin/bash
# The GPU sweeps of BENCHMARKS.md ("Looking for the KD target"), as run on an NVIDIA H200 with PyTorch 2.11.
# Usage: bash scripts/teachers/kd_sweep.sh   (DATA and WORK as in kd_sweep.py; results printed and in $WORK)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 WORK=${WORK:-/tmp/kd-sweep}
mkdir -p "$WORK"
S=scripts/teachers/kd_sweep.py
# Teachers, in parallel: all rows; 2-fold and 5-fold out-of-fold; four more seeds for the ensemble;
# and the 40-epoch teacher shipped as models/fmnist-teacher-ls0 (its logits over the training images).
python3 $S teacher full 0 1 > "$WORK/full.log" 2>&1 &
for f in 0 1; do python3 $S teacher oof2-$f $f 2 > "$WORK/oof2-$f.log" 2>&1 & done
for f in 0 1 2 3 4; do python3 $S teacher oof5-$f $f 5 > "$WORK/oof5-$f.log" 2>&1 & done
for i in 1 2 3 4; do python3 $S teacher ens$i $i 1 > "$WORK/ens$i.log" 2>&1 & done
python3 scripts/teachers/train_teacher.py ${DATA:+--data "$DATA"} --out "$WORK/ls0-e40" --epochs 40 --label-smoothing 0 --save-train-logits > "$WORK/ls0-e40.log" 2>&1 &
wait
grep -h '"name"' "$WORK"/*.log || true
python3 $S views
python3 $S temperature "$WORK/ls0-e40.train-logits.f32"
