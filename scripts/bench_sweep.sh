#!/usr/bin/env bash
# Benchmark sweep: runs every configuration of a sweep file with the right rank count, measures this
# machine's floor at each model's shapes in the same run, and prints the reference tool's table in Markdown
# (config, ranks, peak memory per GPU, latency, per-step time, floor per step, x floor). Writes the table
# (OUT/TAG.md), one JSON per row (OUT/TAG_rowNN.json) with the run's report (OUT/TAG_rowNN_run.json) and
# log, and the probe results (OUT/TAG_floorN.json).
#
#   scripts/bench_sweep.sh CONFIG_FILE [--dry-run] [--no-group] [--out DIR] [--tag NAME] [--probe-reps N]
#
# CONFIG_FILE: one configuration per line, `MODEL [ditgen flags...] [--np N]`; `#` starts a comment (quote
# a `#` that belongs to a prompt), blank lines are skipped. MODEL is a ditgen model command (flux2,
# qwen-image, ltx2). The rank count comes from the mesh flags, as ditgen resolves them:
#   - explicit degrees only (`--ulysses 2 --tp 2`, `--cfg 2 ...`): np = cfg x ring x ulysses x tp (no flag: 1);
#     an `--np` that differs is an error;
#   - a `--parallel PRESET` sizes itself from the launched ranks, so it needs `--np N`, checked with
#     ditgen's preset rules (with --cfg 2 the preset divides each half; explicit degrees override axes).
# `--np` is the sweep's own flag and is not passed on. The sweep sets `-o` (a line must not) and adds
# `--track-memory`. np 1 runs ditgen directly, more ranks through
#   $MPIRUN --allow-run-as-root --oversubscribe --bind-to none -np N -x NCCL_NVLS_ENABLE=0 ditgen ...
#
# Consecutive rows that differ only in -p/--prompt, --negative-prompt, -s/--seed, -H/--height, -W/--width
# and --steps (same model, np and other flags in the same order) share one launch: the sweep writes them
# as a JSON Lines prompt file (OUT/TAG_groupG.jsonl, one item per row with "output": OUT/TAG_rowNN_run.*,
# so each row keeps its own report) and runs `ditgen MODEL ... --prompt-file OUT/TAG_groupG.jsonl -o OUT`
# (log OUT/TAG_groupG.log, ditgen's summary OUT/TAG_groupG.summary.json). The model loads once; the
# warm-up runs before the group's first row only, and a later row's peak memory is the launch's so far.
# Rows with --prompt-file, --trace, a repeated or malformed one of those flags, or --aspect-ratio with a
# size run alone. --no-group: one launch per row.
#
# The floor of a row: work_per_step from its report (matmul and attention FLOPs of one step of the whole
# job) at the probe's rates for the dominant GEMM and attention shapes (ditgen_bench_floor, once per
# distinct shape set, after the runs, in the run's dtype and attention kernel; --fp8 rows: FP8 matmuls,
# --attention fp8 rows: FP8 attention), divided over the np
# GPUs: floor = matmul_flop / (matmul rate x np) + attention_flop / (attention rate x np). x floor = the
# median step / floor. Rows with --cache: the median step may be a cached one (fewer FLOPs than counted).
#
# --dry-run validates the file (unknown model, bad or missing np, a preset that cannot split np ranks) and
# prints the commands (a group's with its prompt file's lines) without running anything; any error exits
# non-zero. The binaries: $DITGEN_BIN
# (default build/ditgen) and $DITGEN_FLOOR_BIN (default build/ditgen_bench_floor), relative to the
# repository; $MPIRUN (default mpirun). Defaults: --out bench/results, --tag DATE_CONFIGNAME.
# Needs python3 (present on the Debian CI image and on the GPU machines; jq is not needed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v python3 > /dev/null || { echo "bench_sweep: python3 is needed (scripts/setup.sh installs it)" >&2; exit 2; }

read -r -d '' PROGRAM << 'PY' || true
import json, math, os, re, shlex, shutil, statistics, subprocess, sys, time

root = os.environ["SWEEP_ROOT"]
MODELS = {"flux2": "png", "qwen-image": "png", "ltx2": "mp4"}
PRESETS = ["tp", "ulysses", "ring", "usp", "ulysses_tp", "tp_ulysses", "ring_tp", "tp_ring", "usp_tp"]
OUTPUT_FLAGS = {"-o", "--output", "--save-path"}
MESH_FLAGS = {"--parallel", "--ulysses", "--ring", "--tp", "--cfg", "--np"}
USAGE = "usage: scripts/bench_sweep.sh CONFIG_FILE [--dry-run] [--no-group] [--out DIR] [--tag NAME] [--probe-reps N]"
# The flags a --prompt-file item can carry (item key), with ditgen's ranges for the numbers.
ITEM_FLAGS = {"-p": "prompt", "--prompt": "prompt", "--negative-prompt": "negative_prompt", "-s": "seed",
              "--seed": "seed", "-H": "height", "--height": "height", "-W": "width", "--width": "width",
              "--steps": "steps", "--num-inference-steps": "steps"}
ITEM_KEYS = ["prompt", "negative_prompt", "seed", "height", "width", "steps"]
ITEM_RANGES = {"seed": (0, 2**64 - 1), "height": (1, 16384), "width": (1, 16384), "steps": (1, 10000)}
ALONE_FLAGS = {"--prompt-file", "--trace"}  # a row with one of these never shares a launch


def die(msg, code=2):
    print(f"bench_sweep: {msg}", file=sys.stderr)
    sys.exit(code)


class ConfigError(Exception):
    pass


def preset_shape(p, w):
    """ditgen's --parallel presets (lib/comm/mesh.cpp preset_shape) for w ranks: {axis: degree}."""
    def need_even():
        if not (w >= 4 and w % 2 == 0):
            raise ConfigError(f"--parallel {p} combines two axes and needs an even rank count of at least 4, got {w}")
    if p == "tp": return {"tp": w}
    if p == "ulysses": return {"ulysses": w}
    if p == "ring": return {"ring": w}
    if p == "usp":
        if w < 4: raise ConfigError(f"--parallel usp needs at least 4 ranks, got {w}")
        u = max(1, w // 2); r = w // u
        if u * r != w: raise ConfigError(f"--parallel usp cannot split {w} ranks into ulysses x ring")
        return {"ulysses": u, "ring": r}
    if p in ("ulysses_tp", "tp_ulysses", "ring_tp", "tp_ring"):
        need_even()
        a, b = p.split("_")
        return {a: w // 2, b: 2}
    if p == "usp_tp":
        if w != 8: raise ConfigError(f"--parallel usp_tp means ulysses 2 x ring 2 x tp 2 and needs exactly 8 ranks, got {w}")
        return {"ulysses": 2, "ring": 2, "tp": 2}
    raise ConfigError(f"unknown --parallel '{p}' (choose one of: {', '.join(PRESETS)})")


def positive_int(flag, v):
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(f"{flag} '{v}' is not a whole number")
    if n < 1: raise ConfigError(f"{flag} {n} must be at least 1")
    return n


def parse_row(tokens):
    """-> (model, ditgen args without --np, np). Raises ConfigError."""
    model = tokens[0]
    if model not in MODELS:
        raise ConfigError(f"unknown model '{model}' (choose one of: {', '.join(MODELS)})")
    args, mesh, i = [], {}, 1
    while i < len(tokens):
        t = tokens[i]
        flag, eq, val = t.partition("=")
        if flag in OUTPUT_FLAGS:
            raise ConfigError(f"{flag}: the sweep chooses the output (OUT/TAG_rowNN_run.*); drop it from the line")
        if flag in MESH_FLAGS:
            if not eq:
                if i + 1 >= len(tokens): raise ConfigError(f"{flag} needs a value")
                i += 1; val = tokens[i]
            mesh[flag] = val
            if flag != "--np": args += [flag, val]
        else:
            args.append(t)
        i += 1
    deg = {}
    for axis in ("ulysses", "ring", "tp", "cfg"):
        if f"--{axis}" in mesh: deg[axis] = positive_int(f"--{axis}", mesh[f"--{axis}"])
    if deg.get("cfg", 1) > 2: raise ConfigError(f"--cfg {deg['cfg']}: CFG parallelism is 1 or 2")
    np_given = positive_int("--np", mesh["--np"]) if "--np" in mesh else None
    if "--parallel" in mesh:
        preset = mesh["--parallel"]
        if preset not in PRESETS:
            raise ConfigError(f"unknown --parallel '{preset}' (choose one of: {', '.join(PRESETS)})")
        if np_given is None:
            raise ConfigError(f"--parallel {preset} sizes itself from the launched ranks: add --np N "
                              "(or give the degrees: --ulysses/--ring/--tp/--cfg)")
        halves = deg.get("cfg", 1)
        if np_given % halves:
            raise ConfigError(f"--cfg {halves} splits the ranks into {halves} halves, but --np is {np_given}")
        shape = {"cfg": 1, "ring": 1, "ulysses": 1, "tp": 1}
        shape.update(preset_shape(preset, np_given // halves))
        shape.update(deg)
        product = shape["cfg"] * shape["ring"] * shape["ulysses"] * shape["tp"]
        if product != np_given:
            raise ConfigError(f"--parallel {preset} on {np_given} ranks with the given degrees is cfg {shape['cfg']} x "
                              f"ring {shape['ring']} x ulysses {shape['ulysses']} x tp {shape['tp']} = {product} "
                              f"ranks, not --np {np_given}")
        np_ = np_given
    else:
        np_ = deg.get("cfg", 1) * deg.get("ring", 1) * deg.get("ulysses", 1) * deg.get("tp", 1)
        if np_given is not None and np_given != np_:
            raise ConfigError(f"--np {np_given} differs from the mesh degrees' product {np_} "
                              "(cfg x ring x ulysses x tp; an unset degree is 1)")
    return model, args, np_


def split_item(args):
    """A row's ditgen args -> (the other args, {item key: value}), or None when the row cannot share a launch
    (a flag given twice, without a value or with a value ditgen would refuse: the row runs alone and ditgen
    says what is wrong)."""
    common, item, i = [], {}, 0
    while i < len(args):
        t = args[i]
        if t.startswith("--"):
            flag, eq, val = t.partition("=")
        else:
            flag, eq, val = t, "", ""
            if len(t) > 2 and t[:2] in ITEM_FLAGS:  # -H64, -s3
                flag, eq, val = t[:2], "=", t[2:]
        if flag in ALONE_FLAGS: return None
        key = ITEM_FLAGS.get(flag)
        if key is None:
            common.append(t); i += 1; continue
        if not eq:
            if i + 1 >= len(args): return None
            i += 1; val = args[i]
        if key in item: return None
        if key in ITEM_RANGES:
            lo, hi = ITEM_RANGES[key]
            if not re.fullmatch(r"0|[1-9][0-9]*", val) or not lo <= int(val) <= hi: return None
            item[key] = int(val)
        else:
            item[key] = val
        i += 1
    if ("height" in item or "width" in item) and any(t.split("=")[0] == "--aspect-ratio" for t in common):
        return None
    return common, item


def plan_launches(rows, group):
    """Consecutive rows with the same model, np and other flags share a launch: [[row, ...], ...]."""
    launches = []
    for r in rows:
        split = split_item(r["args"]) if group else None
        r["common"], r["item"] = split if split else (None, None)
        last = launches[-1][-1] if launches else None
        if (split and last is not None and last["common"] is not None and last["model"] == r["model"] and
                last["np"] == r["np"] and last["common"] == r["common"]):
            launches[-1].append(r)
        else:
            launches.append([r])
    return launches


def read_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        die(f"cannot read the sweep file '{path}': {e.strerror}")
    rows, errors = [], []
    for n, line in enumerate(lines, 1):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            errors.append(f"{path}:{n}: {e}"); continue
        if not tokens: continue
        try:
            model, args, np_ = parse_row(tokens)
            rows.append({"line": n, "config": " ".join(shlex.quote(t) for t in tokens), "model": model,
                         "args": args, "np": np_})
        except ConfigError as e:
            errors.append(f"{path}:{n}: {e}")
    if not rows and not errors:
        errors.append(f"{path}: no configuration (one per line: MODEL [ditgen flags] [--np N])")
    return rows, errors


def resolve_bin(env, default):
    """$env or `default`: a bare name from PATH, a relative path from here or else from the repository."""
    p = os.environ.get(env) or default
    if os.sep not in p: return shutil.which(p) or p
    return p if os.path.isabs(p) or os.path.exists(p) else os.path.join(root, p)


def main(argv):
    config = None; dry = False; group = True; out = os.path.join(root, "bench", "results"); tag = None; reps = 10
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--dry-run": dry = True
        elif a == "--no-group": group = False
        elif a in ("--out", "--tag", "--probe-reps"):
            if i + 1 >= len(argv): die(f"{a} needs a value\n{USAGE}")
            i += 1
            if a == "--out": out = argv[i]
            elif a == "--tag": tag = argv[i]
            else:
                try: reps = int(argv[i])
                except ValueError: reps = 0
                if reps < 1: die(f"--probe-reps '{argv[i]}' must be a whole number >= 1")
        elif a in ("-h", "--help"):
            print(USAGE); return 0
        elif a.startswith("-"): die(f"unknown option '{a}'\n{USAGE}")
        elif config is None: config = a
        else: die(f"one sweep file only (got '{config}' and '{a}')\n{USAGE}")
        i += 1
    if config is None: die(USAGE)
    if tag is None:
        tag = time.strftime("%Y-%m-%d") + "_" + os.path.splitext(os.path.basename(config))[0]
    if not tag or "/" in tag: die(f"--tag '{tag}' must be a non-empty file name part")
    rows, errors = read_config(config)
    for e in errors: print(f"bench_sweep: {e}", file=sys.stderr)
    if errors:
        die(f"{len(errors)} error(s) in {config}; nothing was run")

    ditgen = resolve_bin("DITGEN_BIN", "build/ditgen")
    floor_bin = resolve_bin("DITGEN_FLOOR_BIN", "build/ditgen_bench_floor")
    mpirun = os.environ.get("MPIRUN") or "mpirun"

    def command(model, args, np_):
        args = [ditgen, model] + args
        if not {"--track-memory", "--mem"} & set(args): args.append("--track-memory")
        if np_ > 1:
            args = [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(np_),
                    "-x", "NCCL_NVLS_ENABLE=0"] + args
        return args

    for k, r in enumerate(rows, 1):
        r["index"] = k
        r["name"] = f"{tag}_row{k:02d}"
        r["run_out"] = os.path.join(out, f"{r['name']}_run.{MODELS[r['model']]}")
        r["report"] = os.path.splitext(r["run_out"])[0] + ".json"
    launches = plan_launches(rows, group)
    groups = []  # the launches that run several rows
    for rs in launches:
        first = rs[0]
        if len(rs) == 1:
            first["command"] = command(first["model"], first["args"] + ["-o", first["run_out"]], first["np"])
            continue
        g = {"index": len(groups) + 1, "rows": [r["index"] for r in rs], "lines": [r["line"] for r in rs],
             "span": f"{rs[0]['index']}-{rs[-1]['index']}"}
        g["name"] = f"{tag}_group{g['index']}"
        g["prompt_file"] = os.path.join(out, g["name"] + ".jsonl")
        g["summary"] = os.path.join(out, g["name"] + ".summary.json")
        g["items"] = [{**{k2: r["item"][k2] for k2 in ITEM_KEYS if k2 in r["item"]}, "output": r["run_out"]}
                      for r in rs]
        g["command"] = command(first["model"], first["common"] + ["--prompt-file", g["prompt_file"], "-o", out],
                               first["np"])
        for k2, r in enumerate(rs, 1):
            r["group"] = g; r["item_index"] = k2; r["command"] = g["command"]
        groups.append(g)

    if dry:
        print(f"# sweep {config}: {len(rows)} configuration(s) in {len(launches)} launch(es), tag {tag}, out {out}")
        for rs in launches:
            if len(rs) == 1:
                r = rs[0]
                print(f"# row {r['index']} (line {r['line']}): {r['config']}  -> np {r['np']}")
            else:
                g = rs[0]["group"]
                print(f"# group {g['index']}: rows {g['span']} share one launch (np {rs[0]['np']}), prompt file "
                      f"{g['prompt_file']}:")
                for r, item in zip(rs, g["items"]):
                    print(f"# row {r['index']} (line {r['line']}): {r['config']}")
                    print(f"#   {json.dumps(item)}")
            print(" ".join(shlex.quote(a) for a in rs[0]["command"]))
        print("# then the floor probe, once per distinct shape set of the reports' work_per_step, e.g.")
        print(" ".join(shlex.quote(a) for a in [floor_bin, "--matmul", "M,K,N", "--attention", "B,H,S,D", "--dtype",
                                                 "bf16|fp16|fp32|fp8", "--device", "cuda|cpu", "--attention-backend",
                                                 "auto|flash|sdpa|fp8", "--reps", str(reps),
                                                 "--json", os.path.join(out, f"{tag}_floor1.json")]))
        return 0

    for b in (ditgen, floor_bin):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            die(f"{b} is not an executable: build it (ninja -C build ditgen ditgen_bench_floor) or set "
                "DITGEN_BIN / DITGEN_FLOOR_BIN")
    os.makedirs(out, exist_ok=True)

    def read_report(r):
        with open(r["report"]) as f:
            rep = json.load(f)
        r["rep"] = rep
        work = rep.get("work_per_step")
        if not work:
            r["error"] = "the report has no work_per_step"; return
        cpu = rep.get("device", "").startswith("cpu")
        s = rep.get("settings", {})
        dtype = "fp8" if s.get("fp8") else {"BFloat16": "bf16", "Half": "fp16", "Float": "fp32"}.get(s.get("dtype"), "auto")
        att = list(work["attention_shape"]) + ([work["attention_keys"]] if work.get("attention_keys") else [])
        r["probe_key"] = ("cpu" if cpu else "cuda", dtype, s.get("attention", "auto"), tuple(work["gemm_shape"]),
                          tuple(att))

    # The runs: one launch per row, or per group of rows.
    for rs in launches:
        g = rs[0].get("group")
        if g is None:
            r = rs[0]
            log = os.path.join(out, f"{r['name']}.log")
            print(f"bench_sweep: [{r['index']}/{len(rows)}] np {r['np']}: {r['config']}", file=sys.stderr, flush=True)
        else:
            log = os.path.join(out, f"{g['name']}.log")
            print(f"bench_sweep: [{g['span']}/{len(rows)}] group {g['index']}: one launch for rows {g['span']} "
                  f"(np {rs[0]['np']}), prompt file {g['prompt_file']}", file=sys.stderr, flush=True)
            for r in rs:
                print(f"bench_sweep:   row {r['index']}: {r['config']}", file=sys.stderr, flush=True)
            with open(g["prompt_file"], "w") as f:
                f.write("".join(json.dumps(item) + "\n" for item in g["items"]))
            if os.path.exists(g["summary"]): os.remove(g["summary"])
        for r in rs:
            if os.path.exists(r["report"]): os.remove(r["report"])
        t0 = time.time()
        with open(log, "w") as f:
            rc = subprocess.call(rs[0]["command"], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wall = time.time() - t0
        if g is not None: g["wall_s"] = wall; g["rc"] = rc
        for r in rs:
            r["wall_s"] = wall
            r["log"] = log
            # A shared launch writes each row's report when that row is done: a written one is complete even
            # when a later row failed.
            if (rc != 0 and g is None) or not os.path.isfile(r["report"]):
                r["error"] = f"ditgen exited with {rc}" if rc else "no report was written"
                if g is not None:
                    r["error"] = (f"the launch of rows {g['span']} exited with {rc}" if rc else
                                  f"the launch of rows {g['span']} wrote no report for row {r['index']}")
                which = "" if g is None else f" row {r['index']}"
                print(f"bench_sweep:   FAILED{which} ({r['error']}); see {log}", file=sys.stderr)
            else:
                read_report(r)
        if g is not None and rc != 0:
            print("bench_sweep:   (--no-group runs each row in a launch of its own)", file=sys.stderr)

    # The floor probes: once per distinct shape set.
    probes = {}
    for r in rows:
        key = r.get("probe_key")
        if key is None or key in probes: continue
        j = len(probes) + 1
        dev, dtype, backend, gemm, att = key
        pjson = os.path.join(out, f"{tag}_floor{j}.json")
        cmd = [floor_bin, "--matmul", ",".join(map(str, gemm)), "--attention", ",".join(map(str, att)),
               "--dtype", dtype, "--device", dev, "--attention-backend", backend, "--reps", str(reps), "--json", pjson]
        print(f"bench_sweep: floor probe {j}: {' '.join(cmd[1:-2])}", file=sys.stderr, flush=True)
        plog = os.path.join(out, f"{tag}_floor{j}.log")
        with open(plog, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        p = {"index": j, "command": cmd, "json": pjson, "log": plog, "device": dev, "dtype": dtype,
             "attention_backend": backend}
        if rc == 0 and os.path.isfile(pjson):
            with open(pjson) as f:
                pj = json.load(f)
            p["matmul_tflops"] = pj["matmul"][0]["tflops"]
            p["attention_tflops"] = pj["attention"][0]["tflops"]
            p["device_name"] = pj.get("device", dev)
        else:
            p["error"] = f"ditgen_bench_floor exited with {rc}; see {plog}"
            print(f"bench_sweep:   FAILED ({p['error']})", file=sys.stderr)
        probes[key] = p

    # Rows, table.
    def gib(b): return f"{b / 2**30:.2f} GiB"
    def secs(x): return f"{x:.3f} s" if x >= 1 else f"{x * 1e3:.1f} ms"
    lines = [f"# Benchmark sweep {tag}", "",
             f"From `{config}`, {time.strftime('%Y-%m-%d %H:%M')}. Floor per step: the step's matmul and attention "
             "FLOPs (report `work_per_step`) at the probe's rates for the model's shapes, over np GPUs.", ""]
    for g in groups:
        lines += [f"Rows {g['span']} (lines {', '.join(map(str, g['lines']))}) shared one launch "
                  f"(`--prompt-file {g['prompt_file']}`): the model loaded once, any warm-up ran before row "
                  f"{g['rows'][0]} only, and a later row's peak memory is the launch's so far.", ""]
    lines += ["| config | np | peak memory / GPU | latency | per step | TFLOP / step | floor / step | x floor |",
              "|---|---|---|---|---|---|---|---|"]
    failed = 0
    for k, r in enumerate(rows, 1):
        row = {"config": r["config"], "line": r["line"], "np": r["np"], "command": r["command"],
               "report": r["report"], "log": r.get("log"), "wall_s": r.get("wall_s")}
        g = r.get("group")
        if g is not None:  # wall_s is the whole launch's
            row["launch"] = {"group": g["index"], "rows": g["rows"], "item": r["item_index"],
                             "prompt_file": g["prompt_file"], "prompt_file_item": g["items"][r["item_index"] - 1],
                             "summary": g["summary"]}
        cfg_cell = r["config"].replace("|", "\\|")
        rep = r.get("rep")
        probe = probes.get(r.get("probe_key"))
        if probe and "error" in probe and "error" not in r: r["error"] = probe["error"]
        if rep is not None:
            cpu = rep.get("device", "").startswith("cpu")
            kind = "host_rss_peak_bytes" if cpu else "device_allocated_peak_bytes"
            peak = max((x.get(kind, 0) for x in rep.get("ranks", [])), default=0)
            steps = rep.get("denoise_steps_s", [])
            row.update({"model": rep.get("model"), "device": rep.get("device"), "settings": rep.get("settings"),
                        "peak_memory_bytes": peak, "peak_memory_kind": kind.replace("_bytes", ""),
                        "inference_s": rep.get("latency", {}).get("inference_s"),
                        "step_s_median": statistics.median(steps) if steps else None,
                        "denoise_steps_s": steps, "work_per_step": rep.get("work_per_step")})
        if "error" in r:
            failed += 1
            row["status"] = "failed"; row["error"] = r["error"]
            lines.append(f"| {cfg_cell} | {r['np']} | FAIL: {r['error']} | | | | | |")
        else:
            w = row["work_per_step"]
            mm, at = probe["matmul_tflops"] * 1e12, probe["attention_tflops"] * 1e12
            floor = w["matmul_flop"] / (mm * r["np"]) + w["attention_flop"] / (at * r["np"])
            step = row["step_s_median"]
            ratio = step / floor if floor > 0 and step is not None else float("nan")
            row.update({"status": "ok", "probe": {k2: probe[k2] for k2 in ("json", "device", "dtype", "attention_backend",
                                                                             "matmul_tflops", "attention_tflops")
                                                         if k2 in probe},
                        "floor_step_s": floor, "x_floor": ratio})
            if not math.isfinite(ratio): failed += 1
            lines.append(f"| {cfg_cell} | {r['np']} | {gib(row['peak_memory_bytes'])} | {secs(row['inference_s'])} | "
                         f"{secs(step)} | {(w['matmul_flop'] + w['attention_flop']) / 1e12:.4g} | {secs(floor)} | "
                         f"{ratio:.2f} |")
        with open(os.path.join(out, f"{r['name']}.json"), "w") as f:
            json.dump(row, f, indent=2); f.write("\n")
    lines.append("")
    for p in probes.values():
        if "error" in p:
            lines.append(f"- floor probe {p['index']}: FAILED ({p['error']})")
        else:
            c = p["command"]
            lines.append(f"- floor probe {p['index']} ({p['device_name']}, {p['dtype']}): matmul {c[2]} at "
                         f"{p['matmul_tflops']:.4g} TFLOP/s, attention {c[4]} at {p['attention_tflops']:.4g} TFLOP/s")
    text = "\n".join(lines) + "\n"
    md = os.path.join(out, f"{tag}.md")
    with open(md, "w") as f:
        f.write(text)
    print(text, end="")
    print(f"bench_sweep: table {md}, rows {os.path.join(out, tag + '_rowNN.json')}", file=sys.stderr)
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
PY

SWEEP_ROOT=$root exec python3 -c "$PROGRAM" "$@"
