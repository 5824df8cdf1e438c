#!/usr/bin/env python3
"""Where the GPU sits idle in a --profile trace (trace_rank*.json[.gz]): the idle time between kernels on the
profiled step's GPU timeline, the longest gaps, and the host operations that ran during each (a synchronisation,
a copy to the host, or plain launch work the GPU waited for).

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
    # --profile's trace (lib/runtime/profile.cpp): pid "rank N device" for GPU work, "rank N host" for the host's.
    gpu = sorted((e for e in events if str(e.get("pid", "")).endswith("device")), key=lambda e: e["ts"])
    host = [e for e in events if str(e.get("pid", "")).endswith("host")]
    if not gpu:
        print("no GPU activity in", a.trace)
        return
    start, end = gpu[0]["ts"], max(e["ts"] + e["dur"] for e in gpu)
    busy_until, busy, gaps = gpu[0]["ts"], 0.0, []
    for e in gpu:
        if e["ts"] > busy_until:
            gaps.append((e["ts"] - busy_until, busy_until, e))
        busy += max(0.0, e["ts"] + e["dur"] - max(e["ts"], busy_until))  # the part not already covered
        busy_until = max(busy_until, e["ts"] + e["dur"])
    span = end - start
    idle = sum(g[0] for g in gaps)
    long_gaps = [g for g in gaps if g[0] >= a.min_us]
    print(f"GPU span {span / 1e3:.3f} ms, busy {busy / 1e3:.3f} ms, idle {idle / 1e3:.3f} ms in {len(gaps)} gaps; "
          f"{len(long_gaps)} gaps >= {a.min_us:g} us hold {sum(g[0] for g in long_gaps) / 1e3:.3f} ms")
    print("\n| gap us | at ms | next GPU work | host ops during the gap (longest first) |")
    print("|---:|---:|---|---|")
    for dur, t0, nxt in sorted(long_gaps, key=lambda g: -g[0])[: a.top]:
        t1 = t0 + dur
        during = sorted((o for o in host if o["ts"] < t1 and o["ts"] + o["dur"] > t0), key=lambda o: -o["dur"])
        ops = ", ".join(f"{o['name'][:40]} {o['dur']:.0f}us" for o in during[:4])
        print(f"| {dur:.0f} | {(t0 - start) / 1e3:.2f} | {nxt['name'][:50]} | {ops} |")


if __name__ == "__main__":
    main()
