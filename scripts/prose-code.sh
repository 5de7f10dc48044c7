#!/usr/bin/env bash
# The prose-code measurements of results/prose-code/, with `forgetless run` and prose-code's own defaults
# (1000 iterations per domain, batch 32, Adam lr 3e-3, sampled Fisher on 512 windows):
#   OUT/ewc: EWC over seeds 0-2, its strength chosen on validation data (seed 0, mean validation loss over
#            both domains after code): the committed search behind forgetless.defaults' prose-code row;
#   OUT/<method>-s<seed>: every other method, one run per seed, seeds interleaved (naive 0, joint 0,
#            naive 1, …), so that a stopped script has kept whole seeds of each.
# One torch thread, one run at a time (nice 19: the machine is shared). Finished runs are reused, so
# rerunning resumes. Usage: scripts/prose-code.sh OUT [METHOD...]   (default: ewc naive joint)
set -euo pipefail
out=${1:?usage: scripts/prose-code.sh OUT [METHOD...]}; shift
forgetless=${FORGETLESS:-.venv/bin/forgetless}
methods=("${@:-ewc naive joint}")
run() { nice -n 19 $forgetless --threads 1 run --benchmark prose-code "$@"; }
for method in ${methods[@]}; do
  [ "$method" = ewc ] && run --method ewc --seeds 0-2 --strength auto --strength-grid 3,10,30,100 --out "$out/ewc"
done
for seed in 0 1 2; do
  for method in ${methods[@]}; do
    [ "$method" = ewc ] || run --method "$method" --seeds "$seed" --out "$out/$method-s$seed"
  done
done
