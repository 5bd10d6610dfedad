#!/bin/bash
# Cost of the Wayland security-context code in `porthole run`: two builds of
# porthole (say, before and after a change to launcher/src/wayland.rs),
# as root, on the paths a launch can take:
#   none     `porthole run APP -- /bin/true`, no Wayland socket granted;
#   weston   --socket=wayland with a headless weston 10 (no
#            wp_security_context_v1: the probe, then the host socket bound);
#   context  --socket=wayland with porthole-test-compositor (offers the
#            global: a listener registered with the app's identity).
# Peak RSS: GNU time %M, median of RSS_RUNS (20). Start-up: interleave.py,
# medians of RUNS (300) rounds in which every command runs once.
#
# Usage (as root): bench_wayland.sh PORTHOLE_A PORTHOLE_B TEST_COMPOSITOR
# Needs: weston, time (Debian packages).
set -eu
unset DBUS_SESSION_BUS_ADDRESS DBUS_SYSTEM_BUS_ADDRESS WAYLAND_DISPLAY
HERE="$(cd "$(dirname "$0")" && pwd)"
A="$1"; B="$2"; COMPOSITOR="$3"
RUNS="${RUNS:-300}"; WARMUP="${WARMUP:-10}"; RSS_RUNS="${RSS_RUNS:-20}"

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
    none) echo "XDG_RUNTIME_DIR=$RT $WORK/$1 run org.porthole.Bench -- /bin/true" ;;
    weston) echo "XDG_RUNTIME_DIR=$RT WAYLAND_DISPLAY=wayland-w $WORK/$1 run --socket=wayland org.porthole.Bench -- /bin/true" ;;
    context) echo "XDG_RUNTIME_DIR=$RT WAYLAND_DISPLAY=wayland-c $WORK/$1 run --socket=wayland org.porthole.Bench -- /bin/true" ;;
  esac
}
rss() { # median peak RSS (KiB) of RSS_RUNS runs of a command line
  for _ in $(seq "$RSS_RUNS"); do
    /usr/bin/time -o "$WORK/rss" -f '%M' sh -c "exec $1" >/dev/null 2>&1
    tail -1 "$WORK/rss"
  done | sort -n | sed -n "$(( (RSS_RUNS + 1) / 2 ))p"
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
  echo "peak RSS KiB  $k: A $(rss "$(cmd a $k)")  B $(rss "$(cmd b $k)")"
done
for k in none weston context; do
  read -r ta tb < <(/usr/bin/python3 "$HERE/interleave.py" "$RUNS" "$WARMUP" "$(cmd a $k)" "$(cmd b $k)")
  echo "start-up ms   $k: A $ta  B $tb  B/A $(/usr/bin/python3 -c "print(f'{$tb/$ta:.3f}')")"
done
