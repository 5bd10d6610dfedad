#!/bin/bash
# Start-up of a Flatpak-installed app: `porthole run --command=true APP`
# against `flatpak run --command=true APP` of the same installation, as
# root and as an unprivileged user, in one run, with and without a session
# bus (with one, both start the app's D-Bus proxy: Debian's xdg-dbus-proxy
# on both sides, so the proxy program is not what is compared).
#
# The app and its runtime are the launcher tests' fixture
# (launcher/tests/flatpak-fixture.sh: a trimmed Debian 12 runtime with an
# extension, an app with a subdirectory extension and build-finish
# permissions), installed into private installations (FLATPAK_USER_DIR).
# Each launcher finds the app and runtime, reads metadata and overrides,
# and sets the sandbox up. Flatpak also regenerates nothing here (the
# runtime has no /usr/bin/ldconfig, so no ld.so.cache, as for porthole).
#
# Timing: interleave.py (each round runs every command once), medians of
# RUNS, of wall time and of CPU time (user+system of the launcher and
# everything it waited for: the sandbox, the app, the D-Bus proxy), which
# load from other work on the machine inflates least.
#
# Usage (as root): bench_flatpak.sh [PORTHOLE_BIN [PROBE_BIN]]
# Variables: RUNS (default 30), WARMUP (3), BENCH_USER (porthole-test),
#   PROXY (/usr/bin/xdg-dbus-proxy), OUR_PROXY (if set and executable,
#   e.g. target/release/porthole-dbus-proxy: with a bus, porthole runs
#   with it too, a third timing, as porthole runs by default).
# Needs: flatpak, xdg-dbus-proxy, dbus-daemon, the runtime tree of
#   scripts/install-deps (/var/tmp/porthole-runtime-bookworm).
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
PORTHOLE="${1:-$HERE/../../target/release/porthole}"
PROBE="${2:-$(dirname "$PORTHOLE")/porthole-probe}"
RUNS="${RUNS:-30}"
WARMUP="${WARMUP:-3}"
BENCH_USER="${BENCH_USER:-porthole-test}"
PROXY="${PROXY:-/usr/bin/xdg-dbus-proxy}"
FIXTURE="$HERE/../tests/flatpak-fixture.sh"
APP=org.porthole.FlatpakTest

[ "$(id -u)" = 0 ] || { echo "run as root (switches to $BENCH_USER with setpriv)" >&2; exit 2; }
id "$BENCH_USER" >/dev/null 2>&1 || { echo "user $BENCH_USER missing (useradd -m $BENCH_USER)" >&2; exit 2; }
command -v flatpak >/dev/null || { echo "flatpak missing (apt-get install flatpak)" >&2; exit 2; }
[ -x "$PROXY" ] || { echo "$PROXY missing (apt-get install xdg-dbus-proxy)" >&2; exit 2; }
[ -x "$PROBE" ] || { echo "$PROBE missing (cargo build --release -p porthole-launcher)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/porthole-bench-flatpak.XXXXXX)"
chmod 755 "$WORK"
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cp "$PORTHOLE" "$WORK/porthole"; chmod 755 "$WORK/porthole"
ASUSER="setpriv --reuid=$BENCH_USER --regid=$BENCH_USER --init-groups"
HOME_USER="$(getent passwd "$BENCH_USER" | cut -d: -f6)"

mkdir -p "$WORK/shared/ro" "$WORK/shared/rw"
"$FIXTURE" build "$WORK/fixture" "$PROBE" "$WORK/shared"
install_for() { # WHO BASE
  mkdir -p "$2"
  FLATPAK_SYSTEM_DIR="$2/system" FLATPAK_CONFIG_DIR="$2/config" flatpak --system remotes >/dev/null
  if [ "$1" = user ]; then
    chown "$BENCH_USER" "$2"
    $ASUSER env -i PATH=/usr/bin:/bin HOME="$HOME_USER" "$FIXTURE" install "$WORK/fixture" "$2"
  else
    env -i PATH=/usr/bin:/bin HOME=/root "$FIXTURE" install "$WORK/fixture" "$2"
  fi
}
install_for root "$WORK/inst-root"
install_for user "$WORK/inst-user"

. "$(dirname "$0")/bench_bus.sh"
start_bus root "$WORK/bus-root"
start_bus user "$WORK/bus-user"
RT_ROOT="$WORK/rt-root"; mkdir -m 700 "$RT_ROOT"
RT_USER="$WORK/rt-user"; mkdir -m 700 "$RT_USER"; chown "$BENCH_USER" "$RT_USER"

OUR_PROXY="${OUR_PROXY:-}"
if [ -n "$OUR_PROXY" ]; then cp "$OUR_PROXY" "$WORK/our-proxy"; chmod 755 "$WORK/our-proxy"; fi

# cmd WHO LAUNCHER BUS(yes/no) [PROXY]
cmd() {
  local who=$1 launcher=$2 bus=$3 proxy=${4:-$PROXY} base rt home prefix=""
  if [ "$who" = root ]; then base="$WORK/inst-root" rt="$RT_ROOT" home=/root
  else base="$WORK/inst-user" rt="$RT_USER" home="$HOME_USER" prefix="$ASUSER "; fi
  local env="env -i PATH=/usr/bin:/bin HOME=$home LANG=C.UTF-8 XDG_RUNTIME_DIR=$rt FLATPAK_USER_DIR=$base/user FLATPAK_SYSTEM_DIR=$base/system FLATPAK_CONFIG_DIR=$base/config PORTHOLE_DBUS_PROXY=$proxy"
  [ "$bus" = yes ] && env="$env DBUS_SESSION_BUS_ADDRESS=unix:path=$WORK/bus-$who/bus"
  local bin=/usr/bin/flatpak
  [ "$launcher" = porthole ] && bin="$WORK/porthole"
  echo "${prefix}$env $bin run --command=true $APP"
}

# Sanity: both launchers run the app as each identity, with and without bus.
for who in root user; do for bus in no yes; do for l in flatpak porthole; do
  sh -c "$(cmd $who $l $bus)" 2>/dev/null || { echo "FAILED: $(cmd $who $l $bus)" >&2; exit 1; }
done; done; done

echo "# installed-app start-up: porthole run vs flatpak run  $(date -u +%FT%TZ)"
echo "# $(uname -srm); $(nproc) cores; $(flatpak --version); proxy $PROXY; RUNS=$RUNS"
# The harness alone: the same shell, setpriv and env around /bin/true, so
# that what both launchers pay for being started here can be taken out.
harness() { cmd "$@" | sed "s| [^ ]* run --command=true $APP\$| /bin/true|"; }
for who in root user; do for bus in no yes; do
  read -r f o b fc oc bc < <(INTERLEAVE_CPU=1 /usr/bin/python3 "$HERE/interleave.py" "$RUNS" "$WARMUP" "$(cmd $who flatpak $bus)" "$(cmd $who porthole $bus)" "$(harness $who flatpak $bus)")
  ratio=$(/usr/bin/python3 -c "print(f'{$o/$f:.2f}')")
  cratio=$(/usr/bin/python3 -c "print(f'{$oc/$fc:.2f}')")
  printf '%-5s bus=%-3s  wall: flatpak run %7.3f ms  porthole run %7.3f ms  %sx   CPU: %6.2f ms  %6.2f ms  %sx\n' \
    "$who" "$bus" "$f" "$o" "$ratio" "$fc" "$oc" "$cratio"
  printf '%-5s bus=%-3s  without the harness (%.3f ms wall, %.2f ms CPU: sh, env%s around /bin/true): wall %sx, CPU %sx\n' \
    "$who" "$bus" "$b" "$bc" "$([ "$who" = user ] && echo ", setpriv")" \
    "$(/usr/bin/python3 -c "print(f'{($o-$b)/($f-$b):.2f}')")" "$(/usr/bin/python3 -c "print(f'{($oc-$bc)/($fc-$bc):.2f}')")"
  if [ "$bus" = yes ] && [ -n "$OUR_PROXY" ]; then
    read -r f o fc oc < <(INTERLEAVE_CPU=1 /usr/bin/python3 "$HERE/interleave.py" "$RUNS" "$WARMUP" "$(cmd $who flatpak $bus)" "$(cmd $who porthole $bus "$WORK/our-proxy")")
    printf '%-5s bus=%-3s  wall: flatpak run %7.3f ms  porthole run + porthole-dbus-proxy %7.3f ms  %sx   CPU: %6.2f ms  %6.2f ms  %sx\n' \
      "$who" "$bus" "$f" "$o" "$(/usr/bin/python3 -c "print(f'{$o/$f:.2f}')")" "$fc" "$oc" "$(/usr/bin/python3 -c "print(f'{$oc/$fc:.2f}')")"
  fi
done; done
