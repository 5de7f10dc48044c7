#!/usr/bin/env bash
# The prose-code measurements of results/prose-code/: each method over seeds 0-2 with `forgetless run`
# and prose-code's own defaults (1000 iterations per domain, batch 32, Adam lr 3e-3, sampled Fisher on
# 512 windows). EWC's strength is chosen on validation data (seed 0, mean validation loss over both
# domains after code); that search is the committed default of forgetless.defaults for prose-code.
# One torch thread, one run at a time (nice 19: the machine is shared). Finished runs are reused, so
# rerunning resumes. Usage: scripts/prose-code.sh OUT [METHOD...]   (default: ewc naive joint)
set -euo pipefail
out=${1:?usage: scripts/prose-code.sh OUT [METHOD...]}; shift
forgetless=${FORGETLESS:-.venv/bin/forgetless}
methods=("${@:-ewc naive joint}")
for method in ${methods[@]}; do
  case $method in
    ewc) flags=(--strength auto --strength-grid 3,10,30,100) ;;
    online-ewc) flags=(--strength 10) ;;
    *) flags=() ;;
  esac
  nice -n 19 $forgetless --threads 1 run --benchmark prose-code --method "$method" --seeds 0-2 "${flags[@]}" \
    --out "$out/$method"
done
