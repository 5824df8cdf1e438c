#!/usr/bin/env bash
# run_bench_sweep.sh SWEEP_SCRIPT SWEEP_FILE OUT_DIR [LAUNCHES]: runs the sweep for real into OUT_DIR (fresh)
# and checks its results: one table row per configuration of the file, each with a finite, positive x floor,
# one row JSON per configuration carrying the report's work_per_step and the probe's rates, and each row's
# report with the row's own -H/-W/--steps/-s/-p. With LAUNCHES: the sweep made that many ditgen launches,
# and the rows that shared one are in its --prompt-file summary, with the launch's log and no log of their own.
set -euo pipefail
sweep=$1; file=$2; out=$3; launches=${4:-}
rm -rf "$out"; mkdir -p "$out"
"$sweep" "$file" --out "$out" --tag ci --probe-reps 3 2>&1 | tee "$out/sweep.log"
python3 - "$file" "$out" "$launches" << 'PY'
import json, math, os, shlex, sys
file, out, launches = sys.argv[1:4]
configs = [shlex.split(l, comments=True) for l in open(file)]
configs = [c for c in configs if c]
table = [l for l in open(os.path.join(out, "ci.md")) if l.startswith("| ") and not l.startswith("| config")]
def fail(msg):
    print(f"bench_sweep check: FAIL: {msg}"); sys.exit(1)
FLAGS = {"-H": "height", "--height": "height", "-W": "width", "--width": "width", "--steps": "steps",
         "-s": "seed", "--seed": "seed", "-p": "prompt", "--prompt": "prompt"}
def wanted(tokens):
    """The row's own settings: {report settings key: value} for the flags it gives."""
    want, i = {}, 1
    while i < len(tokens):
        flag, eq, val = tokens[i].partition("=")
        if flag in FLAGS:
            if not eq: i += 1; val = tokens[i]
            want[FLAGS[flag]] = val if FLAGS[flag] == "prompt" else int(val)
        i += 1
    return want
if len(table) != len(configs): fail(f"{len(table)} table rows for {len(configs)} configurations")
for k, line in enumerate(table, 1):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    ratio = float(cells[-1])
    if not (math.isfinite(ratio) and ratio > 0): fail(f"row {k}: x floor {cells[-1]}")
    row = json.load(open(os.path.join(out, f"ci_row{k:02d}.json")))
    if row["status"] != "ok": fail(f"row {k}: {row.get('error')}")
    w = row["work_per_step"]
    if not (w["matmul_flop"] > 0 and w["attention_flop"] > 0 and len(w["gemm_shape"]) == 3): fail(f"row {k}: work {w}")
    if not (row["probe"]["matmul_tflops"] > 0 and row["probe"]["attention_tflops"] > 0): fail(f"row {k}: probe {row['probe']}")
    if not (row["peak_memory_bytes"] > 0 and row["step_s_median"] > 0 and row["floor_step_s"] > 0): fail(f"row {k}: {row}")
    if int(cells[1]) != row["np"]: fail(f"row {k}: np {cells[1]} vs {row['np']}")
    if row["report"] != os.path.join(out, f"ci_row{k:02d}_run.json") or not os.path.isfile(row["report"]):
        fail(f"row {k}: report {row['report']}")
    settings = json.load(open(row["report"]))["settings"]
    if row["probe"].get("attention_backend") != settings.get("attention"):  # the probe ran the row's kernel
        fail(f"row {k}: probe attention {row['probe'].get('attention_backend')} vs the run's {settings.get('attention')}")
    for key, val in wanted(configs[k - 1]).items():
        if settings.get(key) != val: fail(f"row {k}: the report's {key} is {settings.get(key)!r}, the row's {val!r}")
    if len(row["denoise_steps_s"]) != settings["steps"]: fail(f"row {k}: {len(row['denoise_steps_s'])} steps timed")
    launch = row.get("launch")
    if launch:
        summary = json.load(open(launch["summary"]))
        reports = [item["report"] for item in summary["items"]]
        if len(reports) != len(launch["rows"]) or reports[launch["item"] - 1] != row["report"]:
            fail(f"row {k}: the launch's summary lists {reports}")
        if os.path.exists(os.path.join(out, f"ci_row{k:02d}.log")) or not os.path.isfile(row["log"]):
            fail(f"row {k}: log {row['log']} (a shared launch has one log)")
if launches:
    made = sum(l.startswith("bench_sweep: [") for l in open(os.path.join(out, "sweep.log")))
    if made != int(launches): fail(f"{made} ditgen launches, expected {launches}")
    print(f"bench_sweep check: {len(table)} rows ok in {made} launches")
else:
    print(f"bench_sweep check: {len(table)} rows ok")
PY
