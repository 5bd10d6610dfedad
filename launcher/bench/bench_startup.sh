#!/bin/bash
# Start-up cost of `porthole run APP_ID -- /bin/true` against bubblewrap with
# an equivalent setup, as root and as an unprivileged user, in one run.
#
#   bwrap:    --unshare-all (user, mount, pid, ipc, uts, cgroup, net),
#             --die-with-parent --new-session, /usr read-only, the merged-usr
#             symlinks, --proc /proc, --dev /dev, --tmpfs /tmp, and a
#             Flatpak-like seccomp filter passed as fd 9 (gen_seccomp.py from
#             shared/bench), so both sides load a filter.
#   porthole: the same namespaces plus everything `run` always does (etc
#             files, /run/user, app data dir, /.flatpak-info, instance record,
#             instance cgroup, two seccomp filters (x86_64 + i386; x32 denied),
#             capability drop).
#
# Both are started through the same `sh -c 'exec ...'` wrapper (bwrap needs
# it for `9<blob`), so the wrapper's cost cancels out in the ratio. Medians
# from hyperfine -N, peak RSS from GNU time (median of 10).
#
# Usage (as root): bench_startup.sh [PORTHOLE_BIN]
# Variables: RUNS (default 50), WARMUP (5), BENCH_USER (porthole-test).
# Needs: hyperfine, bubblewrap, time, python3-seccomp (Debian packages).
set -eu
# The sandbox core, without the D-Bus proxy: no bus for porthole to proxy
# (bench_startup_dbus.sh measures a full launch with the proxy).
unset DBUS_SESSION_BUS_ADDRESS DBUS_SYSTEM_BUS_ADDRESS
HERE="$(cd "$(dirname "$0")" && pwd)"
# The static build (scripts/build-static) when there is one, as installed.
STATIC="$HERE/../../target/static/x86_64-unknown-linux-gnu/release/porthole"
if [ -x "$STATIC" ]; then DEFAULT="$STATIC"; else DEFAULT="$HERE/../../target/release/porthole"; fi
PORTHOLE="${1:-$DEFAULT}"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-5}"
BENCH_USER="${BENCH_USER:-porthole-test}"
GEN="${GEN_SECCOMP:-/work/shared/bench/gen_seccomp.py}"

[ "$(id -u)" = 0 ] || { echo "run as root (switches to $BENCH_USER with setpriv)" >&2; exit 2; }
id "$BENCH_USER" >/dev/null 2>&1 || { echo "user $BENCH_USER missing (useradd -m $BENCH_USER)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/porthole-bench.XXXXXX)"
# XDG_RUNTIME_DIR is a tmpfs on a desktop (/run/user/UID from logind); on
# this host /tmp and /run are on ext4, so give the runtime dirs a tmpfs, as
# in real use (porthole writes its instance records there; bwrap writes
# nothing).
mount -t tmpfs -o mode=755,size=64m porthole-bench "$WORK"
trap 'umount "$WORK"; rmdir "$WORK"' EXIT
cp "$PORTHOLE" "$WORK/porthole"
chmod 755 "$WORK/porthole"
BLOB="$WORK/filter.bpf"
/usr/bin/python3 "$GEN" "$BLOB" >/dev/null
chmod 644 "$BLOB"
RT_ROOT="$WORK/rt-root"; mkdir -m 700 "$RT_ROOT"
RT_USER="$WORK/rt-user"; mkdir -m 700 "$RT_USER"; chown "$BENCH_USER" "$RT_USER"

BASE="--unshare-all --die-with-parent --new-session --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev --tmpfs /tmp"
BWRAP="sh -c 'exec bwrap $BASE --seccomp 9 /bin/true 9<$BLOB'"
OURS_ROOT="sh -c 'XDG_RUNTIME_DIR=$RT_ROOT exec $WORK/porthole run org.porthole.Bench -- /bin/true'"
ASUSER="setpriv --reuid=$BENCH_USER --regid=$BENCH_USER --init-groups"
OURS_USER="sh -c 'HOME=$(getent passwd "$BENCH_USER" | cut -d: -f6) XDG_RUNTIME_DIR=$RT_USER exec $WORK/porthole run org.porthole.Bench -- /bin/true'"

# Sanity: every command must succeed.
for c in "$BWRAP" "$OURS_ROOT" "$ASUSER $BWRAP" "$ASUSER $OURS_USER"; do
  sh -c "$c" || { echo "FAILED: $c" >&2; exit 1; }
done

median() { # hyperfine json -> the medians in ms, one line
  /usr/bin/python3 - "$1" <<'EOF'
import json, sys
print(" ".join(f"{r['median']*1e3:.3f}" for r in json.load(open(sys.argv[1]))["results"]))
EOF
}

echo "# porthole start-up vs bubblewrap  $(date -u +%FT%TZ)"
echo "# $(uname -srm); $(nproc) cores; $(bwrap --version); RUNS=$RUNS"
for who in root user; do
  if [ $who = root ]; then
    T="/bin/true"; B="$BWRAP"; O="$OURS_ROOT"
  else
    T="$ASUSER /bin/true"; B="$ASUSER $BWRAP"; O="$ASUSER $OURS_USER"
  fi
  hyperfine -N -w "$WARMUP" -r "$RUNS" --export-json "$WORK/$who.json" "$T" "$B" "$O" >/dev/null 2>&1
  read -r t b o < <(median "$WORK/$who.json")
  ratio=$(/usr/bin/python3 -c "print(f'{$o/$b:.2f}')")
  printf '%-5s  /bin/true %7.3f ms   bwrap %7.3f ms   porthole %7.3f ms   porthole/bwrap %sx\n' "$who" "$t" "$b" "$o" "$ratio"
done

rss() { # median peak RSS (KiB) of 10 runs
  for i in $(seq 10); do /usr/bin/time -o "$WORK/rss" -f '%M' "$@" >/dev/null 2>&1; tail -1 "$WORK/rss"; done | sort -n | sed -n 5p
}
# shellcheck disable=SC2086
echo "peak RSS (KiB, median of 10): bwrap $(rss bwrap $BASE --seccomp 9 /bin/true 9<"$BLOB")  porthole $(XDG_RUNTIME_DIR=$RT_ROOT rss "$WORK/porthole" run org.porthole.Bench -- /bin/true)"
