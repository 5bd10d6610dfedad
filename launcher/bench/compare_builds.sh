#!/bin/bash
# Two builds of `porthole` side by side in one run, with bwrap as the
# anchor: `porthole run APP_ID -- /bin/true` start-up (medians of ROUNDS
# interleaved rounds, interleave.py, as root and as BENCH_USER) and peak
# RSS (GNU time, medians of RSS_N alternating runs). For a change that
# must not make the launcher slower or bigger: "before" is the build of
# the base commit, "after" the change's.
#
# Usage (as root): compare_builds.sh BEFORE_BIN AFTER_BIN
# Variables: ROUNDS (200), RSS_N (30), BENCH_USER (porthole-test).
# Needs: bubblewrap, time, python3-seccomp (Debian packages).
set -eu
unset DBUS_SESSION_BUS_ADDRESS DBUS_SYSTEM_BUS_ADDRESS
HERE="$(cd "$(dirname "$0")" && pwd)"
[ $# = 2 ] || { echo "usage: $0 BEFORE_BIN AFTER_BIN" >&2; exit 2; }
ROUNDS="${ROUNDS:-200}"
RSS_N="${RSS_N:-30}"
BENCH_USER="${BENCH_USER:-porthole-test}"
GEN="${GEN_SECCOMP:-$HERE/../../../shared/bench/gen_seccomp.py}"
[ "$(id -u)" = 0 ] || { echo "run as root (switches to $BENCH_USER with setpriv)" >&2; exit 2; }
id "$BENCH_USER" >/dev/null 2>&1 || { echo "user $BENCH_USER missing" >&2; exit 2; }

WORK="$(mktemp -d /tmp/porthole-compare.XXXXXX)"
# A tmpfs for the binaries and runtime dirs, as /run/user is on a desktop.
mount -t tmpfs -o mode=755,size=64m porthole-compare "$WORK"
trap 'umount "$WORK"; rmdir "$WORK"' EXIT
cp "$1" "$WORK/before"; cp "$2" "$WORK/after"; chmod 755 "$WORK/before" "$WORK/after"
/usr/bin/python3 "$GEN" "$WORK/filter.bpf" >/dev/null; chmod 644 "$WORK/filter.bpf"
HOME_USER="$(getent passwd "$BENCH_USER" | cut -d: -f6)"
for b in before after; do
  mkdir -m 700 "$WORK/rt-root-$b" "$WORK/rt-user-$b"; chown "$BENCH_USER" "$WORK/rt-user-$b"
done
ASUSER="setpriv --reuid=$BENCH_USER --regid=$BENCH_USER --init-groups"
BASE="--unshare-all --die-with-parent --new-session --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev --tmpfs /tmp"
BWRAP="sh -c 'exec bwrap $BASE --seccomp 9 /bin/true 9<$WORK/filter.bpf'"
ours() { # who build
  if [ "$1" = root ]; then
    echo "sh -c 'XDG_RUNTIME_DIR=$WORK/rt-root-$2 exec $WORK/$2 run org.porthole.Bench -- /bin/true'"
  else
    echo "$ASUSER sh -c 'HOME=$HOME_USER XDG_RUNTIME_DIR=$WORK/rt-user-$2 exec $WORK/$2 run org.porthole.Bench -- /bin/true'"
  fi
}

echo "# porthole before/after vs bubblewrap  $(date -u +%FT%TZ)"
echo "# $(uname -srm); $(nproc) cores; $(bwrap --version); ROUNDS=$ROUNDS RSS_N=$RSS_N"
for who in root user; do
  if [ $who = root ]; then B="$BWRAP"; else B="$ASUSER $BWRAP"; fi
  BF="$(ours $who before)"; AF="$(ours $who after)"
  for c in "$B" "$BF" "$AF"; do sh -c "$c" || { echo "FAILED: $c" >&2; exit 1; }; done
  read -r b bf af < <(/usr/bin/python3 "$HERE/interleave.py" "$ROUNDS" 10 "$B" "$BF" "$AF")
  /usr/bin/python3 -c "print(f'$who start-up ms: bwrap $b  before $bf ({$bf/$b:.2f}x)  after $af ({$af/$b:.2f}x)  after/before {$af/$bf:.3f}')"
done
for i in $(seq "$RSS_N"); do
  for b in before after; do
    XDG_RUNTIME_DIR="$WORK/rt-root-$b" /usr/bin/time -o "$WORK/r" -f '%M' "$WORK/$b" run org.porthole.Bench -- /bin/true >/dev/null 2>&1
    echo "$b $(tail -1 "$WORK/r")"
  done
  # shellcheck disable=SC2086
  /usr/bin/time -o "$WORK/r" -f '%M' bwrap $BASE --seccomp 9 /bin/true 9<"$WORK/filter.bpf" >/dev/null 2>&1
  echo "bwrap $(tail -1 "$WORK/r")"
done > "$WORK/rss"
/usr/bin/python3 - "$WORK/rss" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
m = {k: statistics.median(int(v) for n, v in rows if n == k) for k in ("bwrap", "before", "after")}
print(f"peak RSS KiB (root, medians): bwrap {m['bwrap']:.0f}  before {m['before']:.0f}  after {m['after']:.0f}  after/before {m['after']/m['before']:.3f}")
PY
