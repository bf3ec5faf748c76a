#!/bin/bash
# How long a refusal takes, whole process (farm-bench, median of 5), this checkout's msagg (A) against
# another msagg (B) in the same run: a bad --set value, predict without a model, a missing config file,
# and a run folder another process holds (extract, classify).
# Usage: tests/campaigns/refusal_times.sh 'B_COMMAND'   e.g.
#   tests/campaigns/refusal_times.sh 'env PYTHONPATH=/path/to/old/checkout .venv/bin/python -m pipeline'
set -u
B=${1:?give the command of the msagg to compare with}
A="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/msagg"
PY="$(dirname "$A")/python"
W=$(mktemp -d); cd "$W"
run() { echo "== $1"; shift; farm-bench -n 5 --timeout 600 "$@" 2>&1 | grep -E "wall|exit"; }
run "pretrain --set batch_size=abc" --vs "$B pretrain --cache c --out o --set batch_size=abc" -- $A pretrain --cache c --out o --set batch_size=abc
run "predict without a model" --vs "$B predict song.wav" -- $A predict song.wav
run "extract --config missing.toml" --vs "$B extract --pretrain p --cache c --out o --config missing.toml" -- $A extract --pretrain p --cache c --out o --config missing.toml
"$PY" -c "
import time; from msagg.stages.runs.lock import FolderLock
FolderLock('$W/busy').acquire(); print('locked', flush=True); time.sleep(3600)" > holder.log & HOLDER=$!
while ! grep -q locked holder.log; do sleep 0.2; done
run "extract on a busy folder" --vs "$B extract --pretrain p --cache c --out $W/busy" -- $A extract --pretrain p --cache c --out $W/busy
run "classify on a busy folder" --vs "$B classify --features f --out $W/busy" -- $A classify --features f --out $W/busy
kill $HOLDER; cd /; rm -rf "$W"
