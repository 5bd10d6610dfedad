#!/usr/bin/python3
"""Interleaved timing: RUNS rounds, each running every command once (in a
rotating order), so that load from other work on the machine falls on all
commands alike (hyperfine runs one command's series after the other).
Prints the median wall time of each command in ms, space-separated.

Usage: interleave.py RUNS WARMUP CMD...   (each CMD run with sh -c)
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
    _, status = os.waitpid(pid, 0)
    dt = time.perf_counter_ns() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {cmd}")
    return dt / 1e6


def main():
    runs, warmup, cmds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    times = [[] for _ in cmds]
    for r in range(warmup + runs):
        order = list(range(len(cmds)))
        k = r % len(cmds)
        order = order[k:] + order[:k]
        for i in order:
            dt = run(cmds[i])
            if r >= warmup:
                times[i].append(dt)
    print(" ".join(f"{statistics.median(t):.3f}" for t in times))


main()
