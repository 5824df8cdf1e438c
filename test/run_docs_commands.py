#!/usr/bin/env python3
"""Runs the commands of a documentation page and checks its links (CTest docs.<page>).

    test/run_docs_commands.py --build DIR [--fixtures DIR] [--work DIR] [--timeout S] [--list] PAGE.md...

A command block is run when its fence's info string is `bash` or `sh` and the line right before the fence
is a test marker:

    <!-- test -->                  the block must exit 0
    <!-- test exit=2 -->           the block (one command) must exit 2: a documented refusal
    <!-- test timeout=300 -->      a longer limit than --timeout (120 s) for this block
    <!-- test needs=fixtures -->   skipped (with a note) when the fixtures folder is missing

Arguments combine: <!-- test needs=fixtures timeout=240 -->.

Each marked block runs on its own, as a reader who copies just that block would run it: `bash` with `set -eE
-o pipefail`, in a fresh scratch copy of the repository root (WORK/PAGE/blockN/repo: `build` links to the
build folder, `scripts/`, `configs/`, `bench/sweeps/` and `test/sweeps/` are copies, `../shared/fixtures`
links to the fixtures; the build folder first on PATH, OMP_NUM_THREADS=1 unless set), so nothing a command
writes lands in the source tree. The first failing command ends its block and fails the test, naming the
page, the line, the block and the command; the other blocks still run. A block that runs past its limit is
killed with everything it started.

Links: every relative link `[text](path)` or `[text](path#anchor)` outside code must name an existing file
or folder (relative to the page), and an anchor must be a heading of the target page (GitHub's slugs).

--list prints each page's marked blocks and command counts without running anything.
Exit status: 0 all passed, 1 a command or a link failed, 2 a usage error or a malformed marker.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

MARKER = re.compile(r"^<!--\s*test(?P<args>(\s+[a-z]+=\S+)*)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
IMAGE_OR_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
COPIED = ["scripts", "configs", "bench/sweeps", "test/sweeps"]


class Block:
    def __init__(self, page, index, line, info, text, args):
        self.page, self.index, self.line, self.info, self.text, self.args = page, index, line, info, text, args

    def commands(self):
        """The block's commands: non-blank, non-comment lines, a `\\` continuation or a heredoc body
        counting with the line that starts it."""
        count, cont, heredoc = 0, False, None
        for raw in self.text.splitlines():
            line = raw.strip()
            if heredoc is not None:
                if line == heredoc:
                    heredoc = None
                continue
            if cont:
                cont = line.endswith("\\")
                continue
            if not line or line.startswith("#"):
                continue
            count += 1
            cont = line.endswith("\\")
            m = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", line)
            if m:
                heredoc = m.group(1)
        return count


def fail_usage(msg):
    print(f"run_docs_commands: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_page(path):
    """Marked blocks and the lines outside fences (for the link check)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, prose = [], []
    i, pending = 0, None
    name = os.path.basename(path)
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            fence, info = m.group("fence"), m.group("info").strip()
            start = i
            body = []
            i += 1
            while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""):
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                fail_usage(f"{name}:{start + 1}: a code fence that never closes")
            if pending is not None:
                if info.split()[0:1] not in (["bash"], ["sh"]):
                    fail_usage(f"{name}:{pending[0]}: a test marker before a '{info or 'plain'}' block (only bash or sh blocks run)")
                blocks.append(Block(name, len(blocks) + 1, start + 1, info, "\n".join(body) + "\n", pending[1]))
                pending = None
            i += 1
            continue
        if pending is not None:
            fail_usage(f"{name}:{pending[0]}: a test marker that is not right above a code fence")
        mk = MARKER.match(lines[i].strip())
        if mk:
            args = {}
            for kv in mk.group("args").split():
                k, v = kv.split("=", 1)
                if k in ("exit", "timeout") and v.isdigit():
                    args[k] = int(v)
                elif k == "needs" and v == "fixtures":
                    args[k] = v
                else:
                    fail_usage(f"{name}:{i + 1}: unknown test marker argument '{kv}' (exit=N, timeout=S, needs=fixtures)")
            pending = (i + 1, args)
        elif re.search(r"<!--\s*test", CODE_SPAN.sub("", lines[i])):
            fail_usage(f"{name}:{i + 1}: malformed test marker (write <!-- test -->, <!-- test exit=N -->)")
        else:
            prose.append((i + 1, lines[i]))
        i += 1
    if pending is not None:
        fail_usage(f"{name}:{pending[0]}: a test marker at the end of the page")
    return blocks, prose


def slug(text):
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    in_fence = None
    for line in open(path, encoding="utf-8"):
        m = FENCE.match(line.rstrip("\n"))
        if m:
            f = m.group("fence")
            if in_fence is None:
                in_fence = f
            elif line.strip().startswith(in_fence) and line.strip().strip(in_fence[0]) == "":
                in_fence = None
            continue
        if in_fence:
            continue
        h = HEADING.match(line)
        if h:
            s = slug(h.group("text"))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def check_links(path, prose):
    errors, count = [], 0
    base = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    for lineno, line in prose:
        for m in IMAGE_OR_LINK.finditer(CODE_SPAN.sub("", line)):
            target = m.group("target")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            count += 1
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(base, file_part)) if file_part else os.path.abspath(path)
            if not os.path.exists(dest):
                errors.append(f"{name}:{lineno}: link '{target}': {os.path.relpath(dest, base)} does not exist")
                continue
            if anchor:
                if not dest.endswith(".md") or os.path.isdir(dest):
                    errors.append(f"{name}:{lineno}: link '{target}': an anchor on a file that is not Markdown")
                elif anchor not in anchors(dest):
                    errors.append(f"{name}:{lineno}: link '{target}': {os.path.basename(dest)} has no heading "
                                  f"with the anchor '#{anchor}'")
    return errors, count


def prepare(scratch, source, build, fixtures):
    if os.path.exists(scratch):
        shutil.rmtree(scratch)
    repo = os.path.join(scratch, "repo")
    os.makedirs(repo)
    os.symlink(os.path.abspath(build), os.path.join(repo, "build"))
    for d in COPIED:
        src = os.path.join(source, d)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(repo, d), symlinks=True)
    if fixtures:
        os.makedirs(os.path.join(scratch, "shared"))
        os.symlink(os.path.abspath(fixtures), os.path.join(scratch, "shared", "fixtures"))
    return repo


def run_block(block, repo, timeout, env):
    expect = block.args.get("exit", 0)
    limit = block.args.get("timeout", timeout)
    header = [
        "set -E -o pipefail" + ("" if expect else " -e"),
        f"trap 'rc=$?; echo \"docs: FAIL: {block.page}:$((LINENO + {block.line - 2})) (block {block.index}): "
        f"exit $rc: $BASH_COMMAND\" >&2' ERR" if not expect else ":",
    ]
    script = os.path.join(os.path.dirname(repo), "block.sh")
    with open(script, "w", encoding="utf-8") as f:
        f.write("\n".join(header) + "\n" + block.text)
    start = time.monotonic()
    proc = subprocess.Popen(["bash", script], cwd=repo, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        proc.wait()
        return f"ran past its {limit} s limit and was killed", time.monotonic() - start
    finally:
        # Whatever the block left running in its session (a stray rank) goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    seconds = time.monotonic() - start
    if rc != expect:
        what = f"exited {rc}, the page says {expect}" if expect else f"failed (exit {rc}; the failing command is named above)"
        return what, seconds
    return None, seconds


def child_cpu():
    """User + system seconds of the finished child processes (the blocks and all they started)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pages", nargs="+")
    ap.add_argument("--build", help="build folder with ditgen (linked as ./build in the scratch copy)")
    ap.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--fixtures", default=None, help="golden fixtures folder (linked as ../shared/fixtures)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new one under /tmp)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per block (default 120)")
    ap.add_argument("--list", action="store_true", help="list the marked blocks, run nothing")
    a = ap.parse_args()

    failures, total_start = [], time.monotonic()
    for page in a.pages:
        if not os.path.isfile(page):
            fail_usage(f"no page '{page}'")
        blocks, prose = parse_page(page)
        name = os.path.basename(page)
        link_errors, nlinks = check_links(page, prose)
        for e in link_errors:
            print(f"docs: FAIL: {e}", file=sys.stderr)
        failures += link_errors
        ncmd = sum(b.commands() for b in blocks)
        if a.list:
            print(f"{name}: {len(blocks)} marked block(s), {ncmd} command(s), {nlinks} relative link(s)")
            for b in blocks:
                print(f"  block {b.index} (line {b.line}): {b.commands()} command(s) {b.args or ''}")
            continue
        if not a.build:
            fail_usage("--build DIR is needed to run the commands")
        if not os.access(os.path.join(a.build, "ditgen"), os.X_OK):
            fail_usage(f"{a.build}/ditgen not found: build first (scripts/build.sh)")
        work = a.work or os.path.join("/tmp", f"ditgen_docs_{os.getpid()}")
        env = dict(os.environ)
        env["PATH"] = os.path.abspath(a.build) + os.pathsep + env.get("PATH", "")
        env.setdefault("OMP_NUM_THREADS", "1")  # many ranks on few cores: one thread each
        page_start, page_failed, cpu_start = time.monotonic(), False, child_cpu()
        for b in blocks:
            repo = prepare(os.path.join(work, os.path.splitext(name)[0], f"block{b.index}"), a.source, a.build,
                           a.fixtures)
            if b.args.get("needs") == "fixtures" and not (a.fixtures and os.path.isdir(a.fixtures)):
                print(f"docs: {name} block {b.index} (line {b.line}): skipped, no fixtures folder "
                      f"({a.fixtures or 'none given'})", flush=True)
                continue
            print(f"docs: {name} block {b.index} (line {b.line}, {b.commands()} command(s)) in {repo}", flush=True)
            err, seconds = run_block(b, repo, a.timeout, env)
            if err:
                msg = f"{name}:{b.line}: block {b.index} {err}"
                print(f"docs: FAIL: {msg}", file=sys.stderr, flush=True)
                failures.append(msg)
                page_failed = True
                continue
            print(f"docs: {name} block {b.index}: ok ({seconds:.1f} s)", flush=True)
        if not page_failed and not link_errors:
            print(f"docs: {name}: {len(blocks)} block(s), {ncmd} command(s), {nlinks} link(s) ok "
                  f"in {time.monotonic() - page_start:.1f} s ({child_cpu() - cpu_start:.1f} s CPU)")
    if failures:
        print(f"docs: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    if len(a.pages) > 1 and not a.list:
        print(f"docs: all {len(a.pages)} pages passed in {time.monotonic() - total_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
