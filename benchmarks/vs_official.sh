#!/usr/bin/env bash
# Times our train step beside the official ATBA PyTorch step at the same shapes, in one run (timings on a shared
# machine are only comparable within one run). Prints one JSON line per measurement.
#
# Needs the peer harness of ../shared/bench: its venv (bash ../shared/bench/setup_venv.sh) and the official code
# extracted by ../shared/bench/fetch_refs.sh into $PEERBENCH_DIR (default ~/.cache/peerbench).
#
# usage: bash benchmarks/vs_official.sh ["B:T ..."]     default shapes: 8:256 8:512 1:1024 1:2048 1:4096
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-../shared/bench}
PEER_PY=${PEER_PY:-${PEERBENCH_DIR:-$HOME/.cache/peerbench}/venv/bin/python}
SHAPES=${1:-"8:256 8:512 1:1024 1:2048 1:4096"}
for shape in $SHAPES; do
  b=${shape%%:*}; t=${shape##*:}
  "$PEER_PY" "$BENCH/peer_atba_step.py" --B "$b" --T "$t" --n-encoder 5
  .venv/bin/python benchmarks/train_step.py --method=atba --batch="$b" --frames="$t" --layers=5
  .venv/bin/python benchmarks/train_step.py --method=hal --batch="$b" --frames="$t" --layers=5
done
