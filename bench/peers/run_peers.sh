#!/usr/bin/env bash
# run_peers.sh [MODEL...]: times the diffusers peers (bench/peers/peer_bench.py) for every model and
# mode, each in its own process (FLUX.2's 64 GB of weights leave no room for anything else on an 80 GB
# card; a process exit frees everything), with a timeout each. Results: $OUT/peers/<model>_<mode>.json
# (+ .log), $OUT/peers/peers.json (all of them, a list) and $OUT/peers/summary.txt (one line a run).
#
#   MODEL...        default: qwen qwen_cfg flux2 ltx2
#   OUT             result folder root (default ./out)
#   PEER_MODES      default "eager compile"
#   PEER_REPS       timed steps, median reported (default 5)
#   PEER_WARMUP     untimed steps first (default: peer_bench's, 2 eager / 3 compile)
#   PEER_TIMEOUT_EAGER / PEER_TIMEOUT_COMPILE   seconds per process (default 300 / 540)
#   PEER_ARGS       more peer_bench.py flags for every run (e.g. "--tiny", "--fullgraph")
#   PYTHON          default python3
# Needs the bundle from scripts/peers_bundle.sh at .peers/diffusers (carried to the device run); the
# device's Python needs only torch. Exit status: the number of runs that did not end "ok".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/out}
DIR=$OUT/peers
PY=${PYTHON:-python3}
MODES=${PEER_MODES:-eager compile}
REPS=${PEER_REPS:-5}
MODELS=("$@"); (( ${#MODELS[@]} )) || MODELS=(qwen qwen_cfg flux2 ltx2)
mkdir -p "$DIR"

if [[ ! -f $ROOT/.peers/diffusers/__init__.py ]]; then
  echo "run_peers: no diffusers bundle at $ROOT/.peers/diffusers (run scripts/peers_bundle.sh and carry .peers)" >&2
  exit 2
fi
export PYTHONPATH=$ROOT/.peers${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

summary=$DIR/summary.txt
{ echo "# diffusers peers, $(date -u +%FT%TZ), diffusers $(cut -d' ' -f1-2 "$ROOT/.peers/DIFFUSERS_COMMIT" 2>/dev/null)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/# gpu: /'
  $PY -c 'import sys, torch; print("# python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} >> "$summary"

failed=0
for model in "${MODELS[@]}"; do
  for mode in $MODES; do
    tag=${model}_${mode}
    json=$DIR/$tag.json; log=$DIR/$tag.log
    rm -f "$json"
    if [[ $mode == compile ]]; then t=${PEER_TIMEOUT_COMPILE:-540}; else t=${PEER_TIMEOUT_EAGER:-300}; fi
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout -k 15 "$t" "$PY" "$ROOT/bench/peers/peer_bench.py" --model "$model" --mode "$mode" --reps "$REPS" \
      ${PEER_WARMUP:+--warmup "$PEER_WARMUP"} --json "$json" ${PEER_ARGS:-} > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [[ ! -s $json ]]; then  # killed (timeout, OOM killer) before it could write its own
      status=error; (( rc == 124 || rc == 137 )) && status=timeout
      $PY - "$json" "$model" "$mode" "$status" "$rc" "$t" "$log" <<'EOF'
import json, sys
path, model, mode, status, rc, limit, log = sys.argv[1:]
tail = open(log, errors="replace").read()[-3000:]
json.dump({"peer": "diffusers", "model": model, "mode": mode, "status": status, "exit_code": int(rc),
           "timeout_s": int(limit), "log_tail": tail}, open(path, "w"), indent=2)
EOF
    fi
    line=$(grep -E "^peer diffusers" "$log" | tail -1)
    [[ -n $line ]] || line="peer diffusers $model $mode: rc=$rc, no result line (see $tag.log)"
    echo "$line [rc=$rc, ${secs}s]" | tee -a "$summary"
    grep -q '"status": "ok"' "$json" || failed=$((failed + 1))
  done
done

$PY - "$DIR" <<'EOF'
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
runs = []
for p in sorted(d.glob("*.json")):
    if p.name == "peers.json":
        continue
    try:
        runs.append(json.loads(p.read_text()))
    except ValueError:
        pass
(d / "peers.json").write_text(json.dumps(runs, indent=1) + "\n")
EOF
echo "run_peers: $failed run(s) not ok; results in $DIR" | tee -a "$summary"
exit "$failed"
