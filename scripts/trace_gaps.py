#!/usr/bin/env python3
"""Where the GPU sits idle in a --profile trace (trace_rank*.json[.gz]): the idle time between kernels on the
profiled step's GPU timeline, the longest gaps, and what the host was doing when each ended (the launch that
ended it and the innermost CPU operations around that launch; a synchronising runtime call inside the gap).

Usage: scripts/trace_gaps.py TRACE [--top 15] [--min-us 20]
"""
import argparse
import gzip
import json


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--min-us", type=float, default=20.0, help="gaps shorter than this are launch latency")
    a = ap.parse_args()
    events = [e for e in load(a.trace).get("traceEvents", []) if e.get("ph") == "X"]
    gpu = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")), key=lambda e: e["ts"])
    runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]
    cpu_ops = [e for e in events if e.get("cat") in ("cpu_op", "user_annotation")]
    launch_of = {e.get("args", {}).get("correlation"): e for e in runtime}
    if not gpu:
        print("no GPU activity in", a.trace)
        return
    start, end = gpu[0]["ts"], max(e["ts"] + e["dur"] for e in gpu)
    busy_until, busy, gaps = gpu[0]["ts"], 0.0, []
    for e in gpu:
        if e["ts"] > busy_until:
            gaps.append((e["ts"] - busy_until, busy_until, e))
        busy += max(0.0, e["ts"] + e["dur"] - max(e["ts"], busy_until)) if e["ts"] + e["dur"] > busy_until else 0.0
        busy_until = max(busy_until, e["ts"] + e["dur"])
    span = end - start
    idle = sum(g[0] for g in gaps)
    long_gaps = [g for g in gaps if g[0] >= a.min_us]
    print(f"GPU span {span / 1e3:.3f} ms, busy {busy / 1e3:.3f} ms, idle {idle / 1e3:.3f} ms in {len(gaps)} gaps; "
          f"{len(long_gaps)} gaps >= {a.min_us:g} us hold {sum(g[0] for g in long_gaps) / 1e3:.3f} ms")
    syncs = [e for e in runtime if any(s in e["name"] for s in ("Synchronize", "Memcpy", "EventQuery"))]
    print("\n| gap us | at ms | next GPU work | launched by | host ops around the launch | sync calls in gap |")
    print("|---:|---:|---|---|---|---|")
    for dur, t0, nxt in sorted(long_gaps, key=lambda g: -g[0])[: a.top]:
        launch = launch_of.get(nxt.get("args", {}).get("correlation"))
        lt = launch["ts"] if launch else nxt["ts"]
        around = sorted((o for o in cpu_ops if o["ts"] <= lt <= o["ts"] + o["dur"]), key=lambda o: o["dur"])
        ops = " < ".join(o["name"][:40] for o in around[:3])
        inside = sorted({s["name"] for s in syncs if s["ts"] < t0 + dur and s["ts"] + s["dur"] > t0})
        print(f"| {dur:.0f} | {(t0 - start) / 1e3:.2f} | {nxt['name'][:50]} | {launch['name'] if launch else '?'} | "
              f"{ops} | {', '.join(inside)} |")


if __name__ == "__main__":
    main()
