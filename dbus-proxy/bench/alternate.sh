#!/bin/bash
# Benchmark (not a test): short runs alternated many times, for a figure
# that load from other processes skews less than bench.sh's long runs.
#
#   alternate.sh ping|bulk [PROXY_BINARY...]
#
# Starts the anchor's echo service on a private bus and each proxy binary
# (default: ours and xdg-dbus-proxy) with --filter --talk=org.example.Echo,
# then does ROUNDS rounds of: direct, each proxy in turn (N pings, or N
# 1 MiB Bulk calls). Prints per target the median, 25th percentile and
# minimum of the per-run median latencies, and the added latency
# (proxied - direct) at each. Two builds of ours can be compared by
# passing both. Variables: ROUNDS (25), N (3000 ping, 60 bulk),
# ANCHOR_DIR (/work/shared/bench).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ANCHOR_DIR="${ANCHOR_DIR:-/work/shared/bench}"
TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/../../target}"
MODE="${1:-ping}"; shift
[ $# -gt 0 ] || set -- "$TARGET_DIR/release/porthole-dbus-proxy" xdg-dbus-proxy
ROUNDS="${ROUNDS:-25}"
if [ "$MODE" = bulk ]; then N="${N:-60}"; else N="${N:-3000}"; fi
. "$ANCHOR_DIR/lib_bus.sh"
anchor_init proxyalt
mkdir -p "$WORK/bin"
cc -O2 -Wall -o "$WORK/bin/echo_server" "$ANCHOR_DIR/src/echo_server.c" $(pkg-config --cflags --libs libsystemd) || exit 1
cc -O2 -Wall -o "$WORK/bin/echo_client" "$ANCHOR_DIR/src/echo_client.c" $(pkg-config --cflags --libs dbus-1) || exit 1
C="$WORK/bin/echo_client"
anchor_start_bus
"$WORK/bin/echo_server" >"$WORK/echo.log" 2>&1 &
anchor_track $!
anchor_wait_name org.example.Echo || exit 1
NAMES=(direct); ADDRS=("$BUS_ADDRESS"); i=0
for b in "$@"; do
  "$b" "$BUS_ADDRESS" "$WORK/p$i.sock" --filter --talk=org.example.Echo >"$WORK/p$i.log" 2>&1 &
  anchor_track $!
  anchor_wait_socket "$WORK/p$i.sock" || exit 1
  NAMES+=("$b"); ADDRS+=("unix:path=$WORK/p$i.sock"); i=$((i+1))
done
echo "# $MODE: $ROUNDS rounds of N=$N, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$WORK/raw"
for ((r = 0; r < ROUNDS; r++)); do
  for ((j = 0; j < ${#NAMES[@]}; j++)); do
    if [ "$MODE" = bulk ]; then l="$("$C" "${ADDRS[$j]}" bulk "$N" 1048576)"; else l="$("$C" "${ADDRS[$j]}" ping "$N")"; fi || { echo "FAIL ${NAMES[$j]}"; exit 1; }
    echo "$j $(echo "$l" | sed 's/.*median_us=\([0-9.]*\).*/\1/')" >>"$WORK/raw"
  done
done
stats() { awk -v j="$1" '$1==j{print $2}' "$WORK/raw" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)], a[int((NR+3)/4)], a[1]}'; }
read -r dm dq dn < <(stats 0)
for ((j = 0; j < ${#NAMES[@]}; j++)); do
  read -r m q n < <(stats "$j")
  awk -v t="${NAMES[$j]}" -v m="$m" -v q="$q" -v n="$n" -v dm="$dm" -v dq="$dq" -v dn="$dn" 'BEGIN{
    printf "%-40s median %8.1f p25 %8.1f min %8.1f us | added %+7.1f %+7.1f %+7.1f us\n", t, m, q, n, m-dm, q-dq, n-dn}'
done
