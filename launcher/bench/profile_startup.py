#!/usr/bin/python3
"""Where a launch's time goes: runs `porthole run APP -- /bin/true` N times
with PORTHOLE_STARTUP_TRACE=1 (CLOCK_MONOTONIC microseconds at each stage,
from the launcher and from the sandbox's pid 1) and prints the median time
of each step between consecutive stages, and of the whole launch.

usage: profile_startup.py PORTHOLE [N] [-- extra run options]
Run as root or as the user to profile; the same binary as the benchmark
(scripts/build-static) gives the figures for the README.
"""
import os
import statistics
import subprocess
import sys

args = sys.argv[1:]
extra = []
if "--" in args:
    i = args.index("--")
    args, extra = args[:i], args[i + 1:]
porthole = args[0]
n = int(args[1]) if len(args) > 1 else 200
env = dict(os.environ, PORTHOLE_STARTUP_TRACE="1")
# For each stage: its offset from the launch's first stage, and the time
# since the previous stage of the same process (the launcher and pid 1 run
# side by side, so only a process's own steps add up).
offset = {}
own_step = {}
totals = []
for _ in range(n):
    r = subprocess.run([porthole, "run", *extra, "org.example.Profile", "--", "/bin/true"],
                       env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert r.returncode == 0, r.stderr
    marks = []
    for line in r.stderr.splitlines():
        parts = line.split(" ", 3)
        if parts[0] == "porthole-trace" and len(parts) == 4:
            who = "pid 1" if parts[2] == "1" else "launcher"
            marks.append((int(parts[1]), who, parts[3]))
    start = marks[0][0]
    last = {}
    for t, who, stage in marks:
        key = (who, stage)
        offset.setdefault(key, []).append((t - start) / 1000)
        if who in last:
            own_step.setdefault(key, []).append((t - last[who]) / 1000)
        last[who] = t
    totals.append((marks[-1][0] - start) / 1000)
med = statistics.median
print(f"{n} launches of {porthole} {' '.join(extra)}; medians in ms")
print("| stage | process | at (ms from start) | since the process's previous stage |")
print("|---|---|---|---|")
for key in sorted(offset, key=lambda k: med(offset[k])):
    who, stage = key
    step = f"{med(own_step[key]):.3f}" if key in own_step else "-"
    print(f"| {stage} | {who} | {med(offset[key]):.3f} | {step} |")
print(f"| whole launch (first to last stage) | | {med(totals):.3f} | |")
