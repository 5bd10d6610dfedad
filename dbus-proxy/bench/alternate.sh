#!/bin/bash
# Benchmark (not a test): short runs alternated many times, for a figure
# that load from other processes skews less than bench.sh's long runs.
#
#   alternate.sh ping|bulk|par8 [PROXY_BINARY...]
#
# Starts the anchor's echo service on a private bus and each proxy binary
# (default: ours and xdg-dbus-proxy) with --filter --talk=org.example.Echo,
# then does ROUNDS rounds of: direct, each proxy in turn (N pings, N
# 1 MiB Bulk calls, or par8: 8 clients doing N pings at once, for which
# only the aggregate calls/s means something). Prints per target the median, 25th percentile and
# minimum of the per-run median latencies and the added latency
# (proxied - direct) at each; the same paired by round (the median over
# rounds of proxied - direct and of the calls/s ratio, each against the
# direct run of its own round: load from elsewhere changes over minutes,
# less over a second); and each proxy's CPU time per call (utime+stime of
# the proxy process from /proc/PID/stat over all rounds, divided by the
# calls made; a proxy can buy latency with CPU by busy-polling). Two
# builds of ours can be compared by passing both; an argument with spaces
# is a binary and its extra options ("path/porthole-dbus-proxy
# --busy-poll"). Variables: ROUNDS (25), N (3000 ping, 60 bulk),
# ANCHOR_DIR (/work/shared/bench).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ANCHOR_DIR="${ANCHOR_DIR:-/work/shared/bench}"
TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/../../target}"
MODE="${1:-ping}"; shift
[ $# -gt 0 ] || set -- "$TARGET_DIR/release/porthole-dbus-proxy" xdg-dbus-proxy
ROUNDS="${ROUNDS:-25}"
case "$MODE" in bulk) N="${N:-60}" ;; par8) N="${N:-1500}" ;; *) N="${N:-3000}" ;; esac
. "$ANCHOR_DIR/lib_bus.sh"
anchor_init proxyalt
mkdir -p "$WORK/bin"
cc -O2 -Wall -o "$WORK/bin/echo_server" "$ANCHOR_DIR/src/echo_server.c" $(pkg-config --cflags --libs libsystemd) || exit 1
cc -O2 -Wall -o "$WORK/bin/echo_client" "$ANCHOR_DIR/src/echo_client.c" $(pkg-config --cflags --libs dbus-1) || exit 1
C="$WORK/bin/echo_client"
# par8 ADDRESS: 8 clients at once, printed as the client's fields
par8() {
  local a="$1" i t0 t1 pids=()
  t0=$(date +%s.%N)
  for i in 1 2 3 4 5 6 7 8; do "$C" "$a" ping "$N" >/dev/null & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i" || return 1; done
  t1=$(date +%s.%N)
  awk -v n=$((8 * N)) -v a="$t0" -v b="$t1" 'BEGIN{printf "median_us=0 calls_per_s=%.1f\n", n/(b-a)}'
}
anchor_start_bus
"$WORK/bin/echo_server" >"$WORK/echo.log" 2>&1 &
anchor_track $!
anchor_wait_name org.example.Echo || exit 1
NAMES=(direct); ADDRS=("$BUS_ADDRESS"); PIDS=(0); i=0
for b in "$@"; do
  read -ra cmd <<<"$b"
  "${cmd[@]}" "$BUS_ADDRESS" "$WORK/p$i.sock" --filter --talk=org.example.Echo >"$WORK/p$i.log" 2>&1 &
  anchor_track $!; PIDS+=($!)
  anchor_wait_socket "$WORK/p$i.sock" || exit 1
  NAMES+=("$b"); ADDRS+=("unix:path=$WORK/p$i.sock"); i=$((i+1))
done
echo "# $MODE: $ROUNDS rounds of N=$N, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# ns of utime+stime of a process (/proc/PID/stat fields 14 and 15, in
# clock ticks, counted after the ")" that ends the command name).
HZ=$(getconf CLK_TCK)
cpu_ns() { sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$HZ" '{printf "%.0f\n", ($12 + $13) * 1e9 / hz}'; }
CPU0=(0); for ((j = 1; j < ${#PIDS[@]}; j++)); do CPU0[$j]=$(cpu_ns "${PIDS[$j]}"); done
: >"$WORK/raw"
for ((r = 0; r < ROUNDS; r++)); do
  # Each round starts at another target, so none always runs first after
  # the pause between rounds.
  for ((k = 0; k < ${#NAMES[@]}; k++)); do
    j=$(( (r + k) % ${#NAMES[@]} ))
    case "$MODE" in
      bulk) l="$("$C" "${ADDRS[$j]}" bulk "$N" 1048576)" ;;
      par8) l="$(par8 "${ADDRS[$j]}")" ;;
      *) l="$("$C" "${ADDRS[$j]}" ping "$N")" ;;
    esac || { echo "FAIL ${NAMES[$j]}"; exit 1; }
    echo "$j $(echo "$l" | sed 's/.*median_us=\([0-9.]*\).*calls_per_s=\([0-9.]*\).*/\1 \2/') $r" >>"$WORK/raw"
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
stats() { awk -v j="$1" '$1==j{print $2}' "$WORK/raw" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)], a[int((NR+3)/4)], a[1]}'; }
read -r dm dq dn < <(stats 0)
for ((j = 0; j < ${#NAMES[@]}; j++)); do
  read -r m q n < <(stats "$j"); MED[$j]=$m
  awk -v t="${NAMES[$j]}" -v m="$m" -v q="$q" -v n="$n" -v dm="$dm" -v dq="$dq" -v dn="$dn" 'BEGIN{
    printf "%-40s median %8.1f p25 %8.1f min %8.1f us | added %+7.1f %+7.1f %+7.1f us\n", t, m, q, n, m-dm, q-dq, n-dn}'
done
# median, p25, p75 of stdin
PER=1; [ "$MODE" = par8 ] && PER=8
pct() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)], a[int((NR+3)/4)], a[int((3*NR+1)/4)]}'; }
# per round, proxy j against direct: f=add (latency us) or ratio (calls/s)
pair() { awk -v j="$1" -v f="$2" '$1==0{dl[$4]=$2; dc[$4]=$3} $1==j{pl[$4]=$2; pc[$4]=$3}
  END{for (r in pl) print (f == "add" ? pl[r] - dl[r] : pc[r] / dc[r])}' "$WORK/raw" | pct; }
for ((j = 1; j < ${#NAMES[@]}; j++)); do
  read -r am aq a3 < <(pair "$j" add); read -r cm cq c3 < <(pair "$j" ratio)
  c=$(( $(cpu_ns "${PIDS[$j]}") - CPU0[$j] ))
  awk -v t="${NAMES[$j]}" -v am="$am" -v aq="$aq" -v a3="$a3" -v cm="$cm" -v cq="$cq" -v c3="$c3" \
      -v c="$c" -v n=$((ROUNDS * (N + 10) * PER)) -v m="${MED[$j]}" 'BEGIN{
    printf "%-40s paired: added %+6.1f us (p25..p75 %+.1f..%+.1f), calls/s %.2fx direct (%.2f..%.2f); CPU %.1f us per call (%.0f%% of a CPU)\n",
      t, am, aq, a3, cm, cq, c3, c/n/1000, (m > 0 ? 100*c/n/1000/m : 0)}'
done
