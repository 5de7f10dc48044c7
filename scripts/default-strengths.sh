#!/usr/bin/env bash
# The validation searches behind forgetless.defaults: each line is one `forgetless run --strength auto`
# with the run's default settings (2×400 MLP, Adam lr 1e-3 fresh per task, batch 128, 2000 steps per
# task, exact Fisher, 10% of each task's training images held out), seed 0, scored on validation
# average accuracy after the last task. The grids are decades around the value an earlier search with
# the same settings chose (results/vandeven2019/README.md) where there was one, else the method's grid.
# Each finished search's result.json is copied to results/default-strengths/<benchmark>-<scenario>_<method>.json
# (the table in src/forgetless/defaults.py cites those files). A search already copied is skipped, so
# the script resumes; one process, niced (the machine is shared).
#
# `verify` checks a default once it is in src/forgetless/defaults.py: `forgetless run` with no --strength
# (so the run uses the default and says so in result.json's strength_source; without the row it would
# search instead, and say so) on other seeds than the
# search's (VERIFY_SEEDS, 7-8 unless set; no test names them), its result.json copied to
# results/default-strengths/verify-<benchmark>-<scenario>_<method>.json (tests/test_defaults.py reads it).
#
#   scripts/default-strengths.sh            # all of them, one after another
#   scripts/default-strengths.sh split-mnist task ewc  # one
#   scripts/default-strengths.sh verify split-mnist task ewc
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
FORGETLESS=${FORGETLESS:-"$BIN/forgetless"}   # e.g. "env PYTHONPATH=/frozen/src .venv/bin/python -m forgetless"
OUT=results/default-strengths
mkdir -p "$OUT"

search() {  # benchmark scenario method grid
    local name="$1-$2_$3"
    [[ -f "$OUT/$name.json" ]] && { echo "have $OUT/$name.json"; return; }
    echo "$(date +%T) searching $name over $4"
    nice -n 19 $FORGETLESS --threads 1 run --benchmark "$1" --scenario "$2" --method "$3" --seeds 0 \
        --strength auto --strength-grid "$4" --out "runs/default-strengths/$name" --overwrite > /dev/null
    cp "runs/default-strengths/$name/result.json" "$OUT/$name.json"
    echo "$(date +%T) done $name: $(python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['strength_search']; print('best', s['best'], '(grid edge)' if s['best_at_grid_edge'] else '')" "$OUT/$name.json")"
}

verify() {  # benchmark scenario method
    local name="verify-$1-$2_$3" seeds="${VERIFY_SEEDS:-7-8}"
    [[ -f "$OUT/$name.json" ]] && { echo "have $OUT/$name.json"; return; }
    echo "$(date +%T) verifying the default of $1-$2_$3 on seeds $seeds"
    nice -n 19 $FORGETLESS --threads 1 run --benchmark "$1" --scenario "$2" --method "$3" --seeds "$seeds" \
        --out "runs/default-strengths/$name" --overwrite > /dev/null
    cp "runs/default-strengths/$name/result.json" "$OUT/$name.json"
    echo "$(date +%T) done $name: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); m=r['metrics']['average_accuracy']; print(r['strength_source'], '| test average accuracy', m)" "$OUT/$name.json")"
}

if [[ "${1:-}" == verify ]]; then
    shift; [[ $# -eq 3 ]] || { echo "usage: $0 verify BENCHMARK SCENARIO METHOD"; exit 2; }
    verify "$@"; exit 0
fi

ALL=(
  # split MNIST, task-incremental (earlier choices: EWC 1e5, online EWC 1e6, SI 10)
  "split-mnist task ewc 1e3,1e4,1e5,1e6,1e7"
  "split-mnist task online-ewc 1e4,1e5,1e6,1e7,1e8"
  "split-mnist task si 0.1,1,10,100,1000"
  "split-mnist task mas 0.01,0.1,1,10,100,1000,10000"
  "split-mnist task l2 0.001,0.01,0.1,1,10,100,1000"
  # domain-incremental (earlier: 1e6, 1e7, 1e4)
  "split-mnist domain ewc 1e4,1e5,1e6,1e7,1e8,1e9,1e10"   # 1e8 won the grid up to 1e8 (its edge)
  "split-mnist domain online-ewc 1e5,1e6,1e7,1e8,1e9"
  "split-mnist domain si 100,1000,1e4,1e5,1e6"
  "split-mnist domain mas 0.01,0.1,1,10,100,1000,10000"
  "split-mnist domain l2 0.001,0.01,0.1,1,10,100,1000"
  # class-incremental (earlier: 1e4, 1e5, 1)
  "split-mnist class ewc 100,1000,1e4,1e5,1e6"
  "split-mnist class online-ewc 1000,1e4,1e5,1e6,1e7"
  "split-mnist class si 0.01,0.1,1,10,100"
  "split-mnist class mas 0.01,0.1,1,10,100,1000,10000"
  "split-mnist class l2 0.001,0.01,0.1,1,10,100,1000"
  # the seed split (even digits, then odd digits; domain-incremental): every method's own grid
  "seed-split domain ewc 1,10,100,1000,1e4,1e5,1e6"
  "seed-split domain online-ewc 1,10,100,1000,1e4,1e5,1e6"
  "seed-split domain si 0.01,0.1,1,10,100,1000,10000,1e5,1e6"   # 1e4 won the grid up to 1e4 (its edge)
  "seed-split domain mas 1e-4,0.001,0.01,0.1,1,10,100,1000,10000"   # 0.01 won the grid from 0.01 (its edge)
  "seed-split domain l2 0.001,0.01,0.1,1,10,100,1000"
)

if [[ $# -gt 0 ]]; then
    for line in "${ALL[@]}"; do
        read -r b s m g <<< "$line"
        [[ "$b $s $m" == "$*" ]] && { search "$b" "$s" "$m" "$g"; exit 0; }
    done
    echo "no search for '$*'; the searches are:"; printf '  %s\n' "${ALL[@]}"; exit 2
fi
for line in "${ALL[@]}"; do
    read -r b s m g <<< "$line"
    search "$b" "$s" "$m" "$g"
done
