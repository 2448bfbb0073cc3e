#!/usr/bin/env bash
# The long-context results campaign of docs/results.md: SmolLM2-135M-Instruct at 4K and 8K
# tokens and Qwen2.5-Coder-0.5B-Instruct at 4K, 8K and 16K, on the CPU, as a chain of
# resumable `maskgraph sweep` stages, in order of value (the first stages give a usable slice
# within an hour or so; the whole chain takes days of CPU time, see docs/results.md).
#
# Usage (from the repository root):
#   bash scripts/results_campaign.sh            # run (or resume) every stage, in order
#   bash scripts/results_campaign.sh status     # trials done / planned per stage, CPU time so far
#   bash scripts/results_campaign.sh snapshot   # rebuild the folders' tables from the rows landed so far
#   bash scripts/results_campaign.sh report     # snapshot, then the report, spliced into docs/results.md
#   OUT=/tmp/smoke SAMPLES=2 CHECK_SAMPLES=2 PASS=0 bash scripts/results_campaign.sh smoke
#                                               # the same chain on a random 2-layer model
#
# Every stage writes its sweep file to results/long/sweeps/<stage>.yaml and runs
#   maskgraph sweep results/long/sweeps/<stage>.yaml --out results/long/<folder>
# so each number can be rebuilt stage by stage. Stopping (Ctrl-C, kill) loses at most the
# samples in flight; rerunning resumes. Stages whose tasks depend on the dense check (the
# "wide" stages) are written when they start, from the dense check's results.
#
# Environment: PYTHON (default python3), OUT (default results/long), SAMPLES (default 20),
# CHECK_SAMPLES (dense-check samples per task, default 10), PASS (the dense score, 0-100, a
# task must reach in the dense check to be run with the graphs; default 50), WORKERS (worker
# processes of each sweep, each with its own copy of the model; default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-results/long}
SAMPLES=${SAMPLES:-20}
CHECK_SAMPLES=${CHECK_SAMPLES:-10}
PASS=${PASS:-50}
WORKERS=${WORKERS:-1}
SWEEPS="$OUT/sweeps"
TEXT="$OUT/text/kjv_pentateuch.txt"
mg() { "$PY" -m maskgraph "$@"; }
log() { echo "[campaign $(date -u +%FT%TZ)] $*"; }

# Candidate tasks of the dense check (retrieval and aggregation).
CHECK_TASKS="niah_single_number, niah_single_word, niah_multikey, niah_multivalue, vt, cwe, fwe"
DENSITIES="[0.02, 0.05, 0.1, 0.2]"
# The first slice: the methods of the published trend that need no calibration, two densities.
FIRST_GRAPHS="
  - {graph: streaming_llm, densities: [0.05, 0.2]}
  - {graph: oracle_topk, densities: [0.05, 0.2]}
  - {graph: quest, densities: [0.05, 0.2]}
  - {graph: random_sampling, densities: [0.05, 0.2]}"

# write_sweep STAGE MODEL LENGTH TASKS GRAPHS SAMPLES [EXTRA]: the stage's sweep file.
write_sweep() {
  local stage=$1 model=$2 length=$3 tasks=$4 graphs=$5 samples=$6 extra=${7:-}
  mkdir -p "$SWEEPS"
  cat > "$SWEEPS/$stage.yaml" <<EOF
# Written by scripts/results_campaign.sh (stage $stage); run with
#   maskgraph sweep $SWEEPS/$stage.yaml --out $OUT/$(folder "$stage")
sweep: $stage
models: [$model]
graphs:$graphs
tasks: [$tasks]
lengths: [$length]
samples: $samples
shard: 5
seed: 0
template: plain
metrics: true
$extra
EOF
}

# folder STAGE: the sweep folder of a stage (stages of one model and length share one, so that
# a wider stage reuses the trials of a narrower one: trials are found by their settings).
folder() {
  case $1 in
    check-*) echo "${1#check-}-check" ;;
    first-*) echo "${1#first-}" ;;
    wide-*) echo "${1#wide-}" ;;
    ppl-*) echo "$1" ;;
  esac
}

run_stage() {
  local stage=$1
  log "stage $stage: maskgraph sweep $SWEEPS/$stage.yaml --out $OUT/$(folder "$stage")"
  # A failed trial is recorded in its folder and does not stop the chain.
  mg sweep "$SWEEPS/$stage.yaml" --out "$OUT/$(folder "$stage")" --workers "$WORKERS" --no-progress || log "stage $stage: some trials failed (see status)"
  cost
}

# passing MODEL LENGTH: the checked tasks whose dense score reached $PASS, comma-separated.
passing() {
  "$PY" - "$OUT/$1-$2-check/metrics.json" "$PASS" <<'EOF'
import json, sys
from pathlib import Path
path, bar = Path(sys.argv[1]), float(sys.argv[2])
cells = json.loads(path.read_text())["cells"].values() if path.is_file() else []
ok = sorted({c["task"] for c in cells if c.get("ref_score") is not None and c["ref_score"] >= bar})
print(", ".join(ok))
EOF
}

# calibrate MODEL: the Double Sparsity and HashAttention files of MODEL, where absent (in the
# maskgraph cache, where `maskgraph sweep` finds them by itself).
calibrate() {
  local model=$1 kind command
  for kind in double_sparsity:double-sparsity hashattention:hashattention; do
    command=${kind#*:}
    if ! "$PY" -c "import sys; from maskgraph.calibrate.models import default_out, model_label as m; sys.exit(not default_out(m('$model'), '${kind%%:*}').is_file())"; then
      log "calibrating $command for $model"
      if [ "$command" = hashattention ]; then
        mg calibrate hashattention --model "$model" --steps 100
      else
        mg calibrate double-sparsity --model "$model"
      fi
    fi
  done
}

text_file() {
  [ -s "$TEXT" ] && return
  mkdir -p "$(dirname "$TEXT")"
  "$PY" -c "from maskgraph.eval.text import kjv_text; import sys; sys.stdout.write(kjv_text('Genesis 1:1-Deuteronomy 34:12'))" > "$TEXT"
}

# graphs_at DENSITIES: every shipped graph but dense at the target densities (a YAML list).
graphs_at() {
  local g out=""
  for g in streaming_llm oracle_topk oracle_topp quest vattention hashattention double_sparsity \
           pqcache socket random_sampling; do
    out="$out
  - {graph: $g, densities: $1}"
  done
  # MagicPIG has no density knob (its LSH parameters decide): once, at its own parameters.
  echo "$out
  - magicpig"
}

# model_length MODEL LENGTH: the first slice (one needle task, four methods, two densities),
# the dense check of every candidate task, then every graph on the tasks that passed: at 5 %
# and 20 % first, one more task per step, then at all four densities. Each step is one sweep
# whose file names every trial of the steps before it, so the folder's tables (metrics.json)
# are rebuilt with everything landed so far at the end of each step.
model_length() {
  local model=$1 length=$2 tasks t done_tasks="" densities step
  write_sweep "first-$model-$length" "$model" "$length" niah_single_number "$FIRST_GRAPHS" "$SAMPLES"
  run_stage "first-$model-$length"
  write_sweep "check-$model-$length" "$model" "$length" "$CHECK_TASKS" "
  - dense" "$CHECK_SAMPLES"
  run_stage "check-$model-$length"
  tasks=$(passing "$model" "$length")
  if [ -z "$tasks" ]; then
    log "$model at $length: no task passed the dense check; no graph runs"
    return
  fi
  log "$model at $length: dense check passed: $tasks"
  # The first slice's task first: every step's sweep file names it, so the folder's tables keep
  # the first slice while the later tasks land.
  case ", $tasks, " in
    *", niah_single_number, "*)
      tasks="niah_single_number$(echo ", $tasks" | sed 's/, niah_single_number//')" ;;
  esac
  calibrate "$model"
  for densities in "[0.05, 0.2]" "$DENSITIES"; do
    done_tasks=""
    for t in ${tasks//,/ }; do
      done_tasks="${done_tasks:+$done_tasks, }$t"
      step="wide-$model-$length"
      write_sweep "$step" "$model" "$length" "$done_tasks" "$(graphs_at "$densities")" "$SAMPLES"
      run_stage "$step"
    done
  done
}

# perplexity MODEL LENGTH SHARE WINDOWS: windows of LENGTH tokens of the Pentateuch (KJV), the
# last SHARE of each through the graph.
perplexity() {
  local model=$1 length=$2 share=$3 windows=$4
  text_file
  calibrate "$model"
  write_sweep "ppl-$model-$length" "$model" "$length" ppl "
  - dense$(graphs_at "$DENSITIES")" "$windows" "ppl_score_share: $share
text_file: ../text/kjv_pentateuch.txt"
  run_stage "ppl-$model-$length"
}

# cost: per sweep folder, trials finished, (cell, sample) pairs landed of those its sweep file
# plans, and the CPU time spent: trial time of finished trials (model load, dense prefill,
# reference and graph runs) and, for every landed pair, the graph run's own time.
cost() {
  "$PY" - "$OUT" "$SWEEPS" <<'EOF'
import json, sqlite3, sys
from pathlib import Path
from maskgraph.eval.sweepfile import load_sweep
root, sweeps = Path(sys.argv[1]), Path(sys.argv[2])
trial_s = row_s = 0.0
landed_all = planned_all = 0
for found in sorted(root.glob("*/sweep.json")):
    name = json.loads(found.read_text())["sweep"]["name"]
    trials = load_sweep(sweeps / f"{name}.yaml").trials()
    planned = sum(t.pairs for t in trials)
    landed, secs = set(), 0.0
    for t in trials:
        rows = found.parent / "trials" / t.id / "rows.jsonl"
        for line in rows.read_text().splitlines() if rows.is_file() else []:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            landed.add((r["cell"], r["index"]))
            secs += r.get("seconds") or 0.0
    done = failed = 0
    tsecs = 0.0
    db = found.parent / "results.sqlite"
    if db.is_file():
        con = sqlite3.connect(db)
        ids = {t.id for t in trials}
        for tid, status, s in con.execute("SELECT id, status, seconds FROM trials"):
            if tid in ids:
                done += status == "done"
                failed += status == "failed"
                tsecs += s or 0.0
        con.close()
    trial_s, row_s = trial_s + tsecs, row_s + secs
    landed_all, planned_all = landed_all + len(landed), planned_all + planned
    print(
        f"  {found.parent.name:26s} trials {done}/{len(trials)} done ({failed} failed); "
        f"pairs {len(landed)}/{planned}; {tsecs / 3600:.2f} h in finished trials, {secs / 3600:.2f} h of graph runs"
    )
print(f"  all: pairs {landed_all}/{planned_all} of the stages written so far; "
      f"{trial_s / 3600:.2f} h in finished trials, {row_s / 3600:.2f} h of graph runs")
EOF
}

# snapshot: rebuild every sweep folder's tables (metrics.json, results.sqlite) from the rows
# landed so far, also while a stage is running (a sweep rebuilds them itself only when it ends).
snapshot() {
  "$PY" - "$OUT" "$SWEEPS" <<'EOF'
import json, sys
from pathlib import Path
from maskgraph.eval.store import SweepStore
from maskgraph.eval.sweepfile import load_sweep
root, sweeps = Path(sys.argv[1]), Path(sys.argv[2])
for found in sorted(root.glob("*/sweep.json")):
    name = json.loads(found.read_text())["sweep"]["name"]
    cells = SweepStore(found.parent).finalise(load_sweep(sweeps / f"{name}.yaml").trials())["cells"]
    print(f"  {found.parent.name:28s} {len(cells)} cells")
EOF
}

# report: the report of every sweep folder (results/long/report.md, plots docs/img/results_*.png),
# spliced into docs/results.md between its "report: begin" and "report: end" markers.
report() {
  local dirs
  dirs=$(ls -d "$OUT"/*/sweep.json 2>/dev/null | xargs -r -n1 dirname | tr '\n' ' ')
  [ -n "$dirs" ] || { log "nothing has landed yet"; return; }
  # shellcheck disable=SC2086
  mg report $dirs --out "$OUT/report.md" --img-dir docs/img --prefix results_
  "$PY" - "$OUT/report.md" docs/results.md <<'EOF'
import re, sys
from pathlib import Path
report, page = Path(sys.argv[1]), Path(sys.argv[2])
body = report.read_text().replace("](docs/img/", "](img/")
body = re.sub(r"^## ", "### ", body, flags=re.M)  # sections sit under the page's own heading
body = re.sub(r"^### (Retrieval|Aggregation|Perplexity|Standard|The published)", r"#### \1", body, flags=re.M)
text = page.read_text()
begin, end = "<!-- report: begin -->", "<!-- report: end -->"
if begin not in text or end not in text:
    sys.exit(f"{page} has no {begin} ... {end} block")
head, rest = text.split(begin, 1)
page.write_text(f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}")
print(f"spliced {report} into {page}")
EOF
}

case ${1:-run} in
  status) cost ;;
  snapshot) snapshot ;;
  report) snapshot; report ;;
  smoke)  # the whole chain on a random 2-layer model at 512 tokens (minutes): OUT=/tmp/x ... smoke
    model_length tiny-llama 512
    perplexity tiny-llama 64 0.25 2
    cost
    ;;
  run)
    log "start (python: $PY; out: $OUT; $SAMPLES samples per cell, dense check $CHECK_SAMPLES)"
    model_length smollm2 4096
    perplexity smollm2 8000 0.25 10
    model_length smollm2 8000
    model_length qwen2.5-coder-0.5b 4096
    perplexity qwen2.5-coder-0.5b 16384 0.125 10
    model_length qwen2.5-coder-0.5b 8192
    model_length qwen2.5-coder-0.5b 16384
    log "campaign finished"
    ;;
  *) echo "usage: $0 [run|status|snapshot|report|smoke]" >&2; exit 2 ;;
esac
