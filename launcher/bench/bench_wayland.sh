#!/bin/bash
# Cost of the Wayland security-context code in `porthole run`: two builds of
# porthole (say, before and after a change to launcher/src/wayland.rs),
# as root, on the paths a launch can take:
#   none     `porthole run APP -- /bin/true`, no Wayland socket granted;
#   weston   --socket=wayland with a headless weston 10 (no
#            wp_security_context_v1: the probe, then the host socket bound);
#   context  --socket=wayland with porthole-test-compositor (offers the
#            global: a listener registered with the app's identity).
# Peak RSS and minor page faults: GNU time %M and %R, medians of RSS_RUNS
# (20). The Wayland step alone: the time from the "prepare" to the "execute"
# line of PORTHOLE_STARTUP_TRACE=1 (connect, registry roundtrip and, with
# the global, the registration), medians of STEP_RUNS (100) alternating
# runs. Start-up: interleave.py, medians of RUNS (300) rounds in which every
# command runs once.
#
# Usage (as root): bench_wayland.sh PORTHOLE_A PORTHOLE_B TEST_COMPOSITOR
# Needs: weston, time (Debian packages).
set -eu
unset DBUS_SESSION_BUS_ADDRESS DBUS_SYSTEM_BUS_ADDRESS WAYLAND_DISPLAY
HERE="$(cd "$(dirname "$0")" && pwd)"
A="$1"; B="$2"; COMPOSITOR="$3"
RUNS="${RUNS:-300}"; WARMUP="${WARMUP:-10}"; RSS_RUNS="${RSS_RUNS:-20}"; STEP_RUNS="${STEP_RUNS:-100}"

WORK="$(mktemp -d /tmp/porthole-bench-wl.XXXXXX)"
# A tmpfs runtime dir, as /run/user/UID is on a desktop.
mount -t tmpfs -o mode=755,size=64m porthole-bench "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  umount "$WORK"; rmdir "$WORK"
}
trap cleanup EXIT
cp "$A" "$WORK/a"; cp "$B" "$WORK/b"; chmod 755 "$WORK/a" "$WORK/b"
RT="$WORK/rt"; mkdir -m 700 "$RT"

XDG_RUNTIME_DIR="$RT" HOME="$RT" weston --backend=headless-backend.so --socket=wayland-w \
  --idle-time=0 >/dev/null 2>&1 & PIDS+=($!)
"$COMPOSITOR" "$RT/wayland-c" >"$WORK/compositor.log" 2>&1 & PIDS+=($!)
for s in wayland-w wayland-c; do
  for _ in $(seq 100); do [ -S "$RT/$s" ] && break; sleep 0.05; done
done
sleep 0.5

cmd() { # BIN PATH-KIND -> the command line
  case "$2" in
    none) echo "env XDG_RUNTIME_DIR=$RT $WORK/$1 run org.porthole.Bench -- /bin/true" ;;
    weston) echo "env XDG_RUNTIME_DIR=$RT WAYLAND_DISPLAY=wayland-w $WORK/$1 run --socket=wayland org.porthole.Bench -- /bin/true" ;;
    context) echo "env XDG_RUNTIME_DIR=$RT WAYLAND_DISPLAY=wayland-c $WORK/$1 run --socket=wayland org.porthole.Bench -- /bin/true" ;;
  esac
}
rss() { # "peak RSS (KiB) / minor faults", medians of RSS_RUNS runs of a command line
  for _ in $(seq "$RSS_RUNS"); do
    # shellcheck disable=SC2086
    /usr/bin/time -o "$WORK/rss" -f '%M %R' $1 >/dev/null 2>&1
    tail -1 "$WORK/rss"
  done | /usr/bin/python3 -c '
import statistics, sys
rows = [l.split() for l in sys.stdin if l.strip()]
print("%d / %d" % (statistics.median_low(int(r[0]) for r in rows), statistics.median_low(int(r[1]) for r in rows)))'
}
step() { # median microseconds from "prepare" to "execute", A then B, alternating runs
  /usr/bin/python3 - "$STEP_RUNS" "$1" "$2" <<'PY'
import os, statistics, subprocess, sys
runs, cmds = int(sys.argv[1]), sys.argv[2:]
times = [[] for _ in cmds]
for _ in range(runs):
    for i, c in enumerate(cmds):
        err = subprocess.run(["sh", "-c", "exec env PORTHOLE_STARTUP_TRACE=1 " + c[len("env "):]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
        t = {l.split()[3]: int(l.split()[1]) for l in err.splitlines() if l.startswith("porthole-trace")}
        times[i].append(t["execute"] - t["prepare"])
print(" ".join(str(int(statistics.median(t))) for t in times))
PY
}
for bin in a b; do for k in none weston context; do
  sh -c "$(cmd $bin $k)" || { echo "FAILED: $(cmd $bin $k)" >&2; exit 1; }
done; done
grep -q "committed engine=org.porthole app_id=org.porthole.Bench" "$WORK/compositor.log" \
  || { echo "the test compositor saw no security context" >&2; exit 1; }

echo "# A=$A"
echo "# B=$B"
echo "# $(date -u +%FT%TZ); $(uname -srm); $(nproc) cores; RUNS=$RUNS RSS_RUNS=$RSS_RUNS"
echo "size (text+data bytes): A $(size "$A" | awk 'NR==2{print $1+$2}')  B $(size "$B" | awk 'NR==2{print $1+$2}')"
for k in none weston context; do
  echo "peak RSS KiB / minor faults  $k: A $(rss "$(cmd a $k)")  B $(rss "$(cmd b $k)")"
done
for k in none weston context; do
  read -r sa sb < <(step "$(cmd a $k)" "$(cmd b $k)")
  echo "wayland step us  $k: A $sa  B $sb"
done
for k in none weston context; do
  read -r ta tb < <(/usr/bin/python3 "$HERE/interleave.py" "$RUNS" "$WARMUP" "$(cmd a $k)" "$(cmd b $k)")
  echo "start-up ms   $k: A $ta  B $tb  B/A $(/usr/bin/python3 -c "print(f'{$tb/$ta:.3f}')")"
done
