#!/usr/bin/env python3
"""Runs a command and samples the memory of its whole process tree until it exits.

    memwatch.py [--interval 0.5] [--samples FILE.jsonl] [--summary FILE.json] -- COMMAND [ARGS...]

Every INTERVAL seconds it finds the tree, reads each process's /proc/PID/smaps_rollup and sums
Pss and Rss over the tree. PSS (proportional set size) splits each shared page among the
processes that map it, so the sum is the tree's real footprint (shared libraries, Ray's
shared-memory object store and the pages torch maps in every worker count once); the RSS sum
counts shared pages once per process and so overstates it, it is printed for comparison.

The tree: the command's descendants through their parent links, plus every process in the
command's session (the command is started in a session of its own, so daemons that double-fork
away from their parent, as some of Ray's processes may, stay in it), plus every process once
seen in the tree that still lives (same PID and start time) after being re-parented.
memwatch itself is not counted.

Exits with the command's status (128 + N after signal N). Prints one line on stderr at the end;
--summary FILE gets one JSON object: peak_pss_bytes, peak_rss_bytes (each the largest
per-sample sum), peak_processes, samples, wall_seconds, exit_code, command, peak_breakdown (every
process at the peak sample, largest PSS first). Processes still running in the command's
session 10 s after it exits are sent SIGTERM (named in the summary).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def read_stat(pid):
    """(ppid, session id, start time) of PID from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] is field 3 (state): ppid field 4, session field 6, starttime field 22.
    return int(rest[1]), int(rest[3]), int(rest[19])


def read_rollup(pid):
    """(pss_bytes, rss_bytes) of PID, or None if it is gone or unreadable (kernel threads read 0)."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return pss, rss


def name_of(pid):
    """The process's name as ps shows it (Ray renames its workers, e.g. ray::ClientAppActor)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode("utf-8", "replace") for a in argv if a]
    if not words:
        return "?"
    # Interpreters: name the script they run, not the interpreter.
    if os.path.basename(words[0]).startswith("python") and len(words) > 1:
        script = next((w for w in words[1:] if not w.startswith("-")), words[1])
        return os.path.basename(words[0]) + " " + os.path.basename(script)
    return os.path.basename(words[0].split()[0]) if words[0].startswith("/") else words[0][:60]


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def tree(root, root_sid, known):
    """PIDs in the tree of ROOT (see the module doc); updates KNOWN: {pid: starttime}."""
    me = os.getpid()
    stats = {}
    for pid in all_pids():
        if pid == me:
            continue
        st = read_stat(pid)
        if st is not None:
            stats[pid] = st
    children = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    members = set()
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in members or pid not in stats:
            continue
        members.add(pid)
        stack.extend(children.get(pid, ()))
    for pid, (_, sid, start) in stats.items():
        if sid == root_sid or known.get(pid) == start:
            members.add(pid)
    # Descendants of processes added by session or memory, too.
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)
    for pid in members:
        known[pid] = stats[pid][2]
    return members


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples (0.5)")
    ap.add_argument("--samples", help="write every sample as a JSON line here")
    ap.add_argument("--summary", help="also write the summary JSON here")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given")

    t0 = time.monotonic()
    proc = subprocess.Popen(command, start_new_session=True)
    # Pass SIGINT/SIGTERM on to the command's session, so that ^C stops the whole tree.
    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except OSError:
            pass
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    out = open(args.samples, "w") if args.samples else None
    known = {}
    peak_pss = peak_rss = peak_procs = samples = 0
    peak_at = None
    peak_breakdown = []
    while True:
        done = proc.poll() is not None
        members = tree(proc.pid, proc.pid, known) if not done else set()
        pss = rss = 0
        per_process = []
        for pid in members:
            r = read_rollup(pid)
            if r is not None:
                pss += r[0]
                rss += r[1]
                per_process.append((pid, r[0], r[1]))
        counted = len(per_process)
        if counted:
            samples += 1
            t = time.monotonic() - t0
            if pss > peak_pss:
                peak_pss, peak_at = pss, t
                peak_breakdown = [
                    {"pid": pid, "name": name_of(pid), "pss_bytes": p, "rss_bytes": r}
                    for pid, p, r in sorted(per_process, key=lambda x: -x[1])
                ]
            peak_rss = max(peak_rss, rss)
            peak_procs = max(peak_procs, counted)
            if out:
                out.write(json.dumps({"t": round(t, 3), "pss_bytes": pss, "rss_bytes": rss, "processes": counted}) + "\n")
                out.flush()
        if done:
            break
        try:
            proc.wait(timeout=args.interval)
        except subprocess.TimeoutExpired:
            pass
    code = proc.returncode
    wall = time.monotonic() - t0
    # Whatever the command left running in its session (Ray daemons after a crash) gets 10 s to
    # exit by itself, then SIGTERM, so that the next measurement starts on a quiet machine.
    def session_left():
        return [p for p in all_pids() if (read_stat(p) or (0, -1, 0))[1] == proc.pid]
    deadline = time.monotonic() + 10
    while session_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = session_left()
    leftover_names = [name_of(p) for p in leftovers]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    if out:
        out.close()
    summary = {
        "command": command,
        "exit_code": code,
        "wall_seconds": round(wall, 3),
        "samples": samples,
        "interval_seconds": args.interval,
        "peak_pss_bytes": peak_pss,
        "peak_pss_at_seconds": None if peak_at is None else round(peak_at, 3),
        "peak_rss_bytes": peak_rss,
        "peak_processes": peak_procs,
        "leftover_processes_stopped": leftover_names,
        "peak_breakdown": peak_breakdown,
    }
    text = json.dumps(summary)
    if args.summary:
        with open(args.summary, "w") as f:
            f.write(text + "\n")
    print(
        f"memwatch: peak PSS {peak_pss / 2**30:.3f} GiB, peak RSS sum {peak_rss / 2**30:.3f} GiB, "
        f"up to {peak_procs} processes, {summary['wall_seconds']:.1f} s, exit {code}",
        file=sys.stderr,
    )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
