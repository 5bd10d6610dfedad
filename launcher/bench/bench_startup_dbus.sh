#!/bin/bash
# Start-up cost of a full launch with the D-Bus proxy: `porthole run APP_ID
# -- /bin/true` with a session bus (the launcher starts the instance's proxy
# beside the sandbox), against bwrap plus xdg-dbus-proxy started the way
# Flatpak starts them (flatpak_style.c: the proxy with --fd/--args, wait for
# its ready byte, then bwrap with --sync-fd and the socket bound at
# /run/user/UID/bus), as root and as an unprivileged user, in one run.
#
# Both sides use the same proxy program ($PROXY, default Debian's
# /usr/bin/xdg-dbus-proxy), the same private dbus-daemon, Flatpak's default
# policy for the app, and the bwrap setup of bench_startup.sh (namespaces,
# /usr read-only, /proc, /dev, tmpfs /tmp, a seccomp filter). Flatpak itself
# also wraps the proxy in a bwrap sandbox of its own; the baseline leaves
# that out, which favours the baseline.
#
# Timing: interleave.py (each round runs every command once, so load from
# other work on the machine falls on all of them alike), medians of RUNS.
#
# Usage (as root): bench_startup_dbus.sh [PORTHOLE_BIN]
# Variables: RUNS (default 50), WARMUP (5), BENCH_USER (porthole-test),
#   PROXY (/usr/bin/xdg-dbus-proxy), OUR_PROXY (if set and executable, a
#   third column: porthole with that proxy, e.g. porthole-dbus-proxy).
# Needs: bubblewrap, xdg-dbus-proxy, dbus-daemon, gcc,
#   python3-seccomp (Debian packages).
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
PORTHOLE="${1:-$HERE/../../target/release/porthole}"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-5}"
BENCH_USER="${BENCH_USER:-porthole-test}"
PROXY="${PROXY:-/usr/bin/xdg-dbus-proxy}"
OUR_PROXY="${OUR_PROXY:-}"
GEN="${GEN_SECCOMP:-/work/shared/bench/gen_seccomp.py}"

[ "$(id -u)" = 0 ] || { echo "run as root (switches to $BENCH_USER with setpriv)" >&2; exit 2; }
id "$BENCH_USER" >/dev/null 2>&1 || { echo "user $BENCH_USER missing (useradd -m $BENCH_USER)" >&2; exit 2; }
[ -x "$PROXY" ] || { echo "$PROXY missing (apt-get install xdg-dbus-proxy)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/porthole-bench-dbus.XXXXXX)"
# Runtime dirs on a tmpfs, as /run/user/UID is on a desktop.
mount -t tmpfs -o mode=755,size=64m porthole-bench "$WORK"
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  umount "$WORK"; rmdir "$WORK"
}
trap cleanup EXIT
cp "$PORTHOLE" "$WORK/porthole"; chmod 755 "$WORK/porthole"
cp "$PROXY" "$WORK/proxy"; chmod 755 "$WORK/proxy"
if [ -n "$OUR_PROXY" ]; then cp "$OUR_PROXY" "$WORK/our-proxy"; chmod 755 "$WORK/our-proxy"; fi
gcc -O2 -o "$WORK/flatpak-style" "$HERE/flatpak_style.c"
BLOB="$WORK/filter.bpf"
/usr/bin/python3 "$GEN" "$BLOB" >/dev/null
chmod 644 "$BLOB"
ASUSER="setpriv --reuid=$BENCH_USER --regid=$BENCH_USER --init-groups"
UID_USER="$(id -u "$BENCH_USER")"
HOME_USER="$(getent passwd "$BENCH_USER" | cut -d: -f6)"

. "$(dirname "$0")/bench_bus.sh"
start_bus root "$WORK/bus-root"
start_bus user "$WORK/bus-user"
RT_ROOT="$WORK/rt-root"; mkdir -m 700 "$RT_ROOT"
RT_USER="$WORK/rt-user"; mkdir -m 700 "$RT_USER"; chown "$BENCH_USER" "$RT_USER"

BASE="--unshare-all --die-with-parent --new-session --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev --tmpfs /tmp"
flatpak_cmd() { # ADDRESS SOCKET UID
  echo "sh -c 'exec $WORK/flatpak-style $WORK/proxy $1 $2 $3 -- $BASE --seccomp 9 /bin/true 9<$BLOB'"
}
ours_cmd() { # RT HOME ADDRESS PROXY
  echo "sh -c 'HOME=$2 XDG_RUNTIME_DIR=$1 DBUS_SESSION_BUS_ADDRESS=$3 PORTHOLE_DBUS_PROXY=$4 exec $WORK/porthole run org.porthole.Bench -- /bin/true'"
}
FP_ROOT="$(flatpak_cmd "unix:path=$WORK/bus-root/bus" "$RT_ROOT/flatpak-bus" 0)"
FP_USER="$ASUSER $(flatpak_cmd "unix:path=$WORK/bus-user/bus" "$RT_USER/flatpak-bus" "$UID_USER")"
OURS_ROOT="$(ours_cmd "$RT_ROOT" /root "unix:path=$WORK/bus-root/bus" "$WORK/proxy")"
OURS_USER="$ASUSER $(ours_cmd "$RT_USER" "$HOME_USER" "unix:path=$WORK/bus-user/bus" "$WORK/proxy")"
OUR2_ROOT="$(ours_cmd "$RT_ROOT" /root "unix:path=$WORK/bus-root/bus" "$WORK/our-proxy")"
OUR2_USER="$ASUSER $(ours_cmd "$RT_USER" "$HOME_USER" "unix:path=$WORK/bus-user/bus" "$WORK/our-proxy")"

# Sanity: every command succeeds, and the app really gets a bus on both
# sides (gdbus lists the names through the proxy).
check="gdbus call --session --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus --method org.freedesktop.DBus.ListNames"
for c in "$FP_ROOT" "$OURS_ROOT" "$FP_USER" "$OURS_USER"; do
  sh -c "$c" || { echo "FAILED: $c" >&2; exit 1; }
done
sh -c "$(echo "$FP_ROOT" | sed "s|/bin/true|$check|")" | grep -q org.freedesktop.DBus || { echo "no bus in the flatpak-style sandbox" >&2; exit 1; }
sh -c "$(echo "$OURS_ROOT" | sed "s|/bin/true|$check|")" | grep -q org.freedesktop.DBus || { echo "no bus in porthole's sandbox" >&2; exit 1; }

echo "# full launch with the D-Bus proxy: porthole vs bwrap + xdg-dbus-proxy (Flatpak's way)  $(date -u +%FT%TZ)"
echo "# $(uname -srm); $(nproc) cores; $(bwrap --version); proxy $PROXY; RUNS=$RUNS"
for who in root user; do
  if [ $who = root ]; then F="$FP_ROOT"; O="$OURS_ROOT"; O2="$OUR2_ROOT"; else F="$FP_USER"; O="$OURS_USER"; O2="$OUR2_USER"; fi
  set -- "$F" "$O"
  [ -n "$OUR_PROXY" ] && set -- "$@" "$O2"
  read -r f o o2 < <(/usr/bin/python3 "$HERE/interleave.py" "$RUNS" "$WARMUP" "$@")
  ratio=$(/usr/bin/python3 -c "print(f'{$o/$f:.2f}')")
  printf '%-5s  bwrap+proxy (Flatpak way) %7.3f ms   porthole+proxy %7.3f ms   porthole/flatpak-way %sx' "$who" "$f" "$o" "$ratio"
  if [ -n "$OUR_PROXY" ]; then
    printf '   porthole+porthole-dbus-proxy %7.3f ms (%sx)' "$o2" "$(/usr/bin/python3 -c "print(f'{$o2/$f:.2f}')")"
  fi
  echo
done
