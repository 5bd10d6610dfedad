#!/usr/bin/python3
"""Interleaved timing: RUNS rounds, each running every command once (in a
rotating order), so that load from other work on the machine falls on all
commands alike (hyperfine runs one command's series after the other).
Prints the median wall time of each command in ms, space-separated.

Usage: interleave.py RUNS WARMUP CMD...   (each CMD run with sh -c)
With INTERLEAVE_CPU=1 the medians of CPU time (user+system of the command
and every process it waited for, from wait4) follow, in ms: the figure
that load from other work on the machine inflates least.
"""
import os
import statistics
import sys
import time


def run(cmd):
    t = time.perf_counter_ns()
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", cmd], os.environ,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                                       (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    _, status, usage = os.wait4(pid, 0)
    dt = time.perf_counter_ns() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {cmd}")
    return dt / 1e6, (usage.ru_utime + usage.ru_stime) * 1e3


def main():
    runs, warmup, cmds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    times = [[] for _ in cmds]
    cpu = [[] for _ in cmds]
    for r in range(warmup + runs):
        order = list(range(len(cmds)))
        k = r % len(cmds)
        order = order[k:] + order[:k]
        for i in order:
            dt, c = run(cmds[i])
            if r >= warmup:
                times[i].append(dt)
                cpu[i].append(c)
    out = [statistics.median(t) for t in times]
    if os.environ.get("INTERLEAVE_CPU") == "1":
        out += [statistics.median(c) for c in cpu]
    print(" ".join(f"{v:.3f}" for v in out))


main()
