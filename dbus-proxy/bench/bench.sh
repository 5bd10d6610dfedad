#!/bin/bash
# Benchmark (not a test): porthole-dbus-proxy vs xdg-dbus-proxy vs direct.
#
# Uses the anchor's C echo service (sd-bus) and client (libdbus) from
# /work/shared/bench/src and its bus helper, so the figures compare with
# bench_dbus_proxy.sh. Both proxies run with the same policy:
#   PROXY ADDRESS SOCKET --filter --talk=org.example.Echo
# Targets are interleaved, REPEATS times:
#   ping  N_CALLS        empty round trips (one client)
#   bulk  BULK_N         Bulk(1 MiB) round trips (one client)
#   par8  N_PAR each     8 clients doing ping at once: aggregate calls/s
# Prints per target the median [min..max] over repeats, ratios vs direct
# (of the medians, and paired: the median of each repeat's ratio),
# added latency (proxied - direct) and ours/xdg of it, and peak RSS (VmHWM).
#
# Build ours first: cargo build --release -p porthole-dbus-proxy
# Variables: OURS (default target/release/porthole-dbus-proxy under
#   $CARGO_TARGET_DIR or /work/main/target), XDG (xdg-dbus-proxy),
#   ANCHOR_DIR (/work/shared/bench), N_CALLS (20000), BULK_N (200),
#   N_PAR (5000), REPEATS (5), SYSCALLS (1: also count each proxy's
#   syscalls per round trip with strace, a figure other load cannot skew)
# Debian packages: dbus, xdg-dbus-proxy, libdbus-1-dev, libsystemd-dev,
#   libglib2.0-bin (gdbus), gcc, pkg-config.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ANCHOR_DIR="${ANCHOR_DIR:-/work/shared/bench}"
TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/../../target}"
OURS="${OURS:-$TARGET_DIR/release/porthole-dbus-proxy}"
XDG="${XDG:-xdg-dbus-proxy}"
N_CALLS="${N_CALLS:-20000}"
BULK_N="${BULK_N:-200}"
N_PAR="${N_PAR:-5000}"
REPEATS="${REPEATS:-5}"
SYSCALLS="${SYSCALLS:-1}"
. "$ANCHOR_DIR/lib_bus.sh"
[ -x "$OURS" ] || { echo "build first: cargo build --release -p porthole-dbus-proxy ($OURS)" >&2; exit 1; }

anchor_init proxybench
mkdir -p "$WORK/bin"
cc -O2 -Wall -o "$WORK/bin/echo_server" "$ANCHOR_DIR/src/echo_server.c" $(pkg-config --cflags --libs libsystemd) || exit 1
cc -O2 -Wall -o "$WORK/bin/echo_client" "$ANCHOR_DIR/src/echo_client.c" $(pkg-config --cflags --libs dbus-1) || exit 1
CLIENT="$WORK/bin/echo_client"

anchor_start_bus
"$WORK/bin/echo_server" >"$WORK/echo.log" 2>&1 &
anchor_track $!
anchor_wait_name org.example.Echo || exit 1
"$XDG" "$BUS_ADDRESS" "$WORK/xdg.sock" --filter --talk=org.example.Echo >"$WORK/xdg.log" 2>&1 &
P_XDG=$!; anchor_track $P_XDG
"$OURS" "$BUS_ADDRESS" "$WORK/ours.sock" --filter --talk=org.example.Echo >"$WORK/ours.log" 2>&1 &
P_OURS=$!; anchor_track $P_OURS
anchor_wait_socket "$WORK/xdg.sock" || exit 1
anchor_wait_socket "$WORK/ours.sock" || exit 1

declare -A ADDR=([direct]="$BUS_ADDRESS" [xdg]="unix:path=$WORK/xdg.sock" [ours]="unix:path=$WORK/ours.sock")
TARGETS=(direct xdg ours)
RAW="$WORK/raw"; : >"$RAW"

par8() { # addr -> aggregate calls/s of 8 concurrent ping clients
  local a="$1" i t0 t1 pids=()
  t0=$(date +%s.%N)
  for i in 1 2 3 4 5 6 7 8; do "$CLIENT" "$a" ping "$N_PAR" >/dev/null & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || return 1; done
  t1=$(date +%s.%N)
  awk -v n=$((8 * N_PAR)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", n/(b-a)}'
}

echo "# porthole-dbus-proxy benchmark $(date -u +%FT%TZ); $(uname -r); $(nproc) cores"
echo "# xdg: $XDG ($("$XDG" --version 2>&1 | head -1)); ours: $OURS"
echo "# ping N=$N_CALLS, bulk N=$BULK_N x 1 MiB, par8 8 x $N_PAR pings; REPEATS=$REPEATS interleaved"
for ((r=1; r<=REPEATS; r++)); do
  # Each repeat starts at another target, so none always runs first.
  for ((k=0; k<${#TARGETS[@]}; k++)); do
    t="${TARGETS[$(( (r + k) % ${#TARGETS[@]} ))]}"
    a="${ADDR[$t]}"
    l="$("$CLIENT" "$a" ping "$N_CALLS")" || { echo "FAIL $t ping"; exit 1; }; echo "$t ping $l r=$r" >>"$RAW"
    l="$("$CLIENT" "$a" bulk "$BULK_N" 1048576)" || { echo "FAIL $t bulk"; exit 1; }; echo "$t bulk $l r=$r" >>"$RAW"
    c="$(par8 "$a")" || { echo "FAIL $t par8"; exit 1; }; echo "$t par8 calls_per_s=$c r=$r" >>"$RAW"
  done
done

field() { awk -v t="$1" -v m="$2" -v f="$3" '$1==t && $2==m { for(i=3;i<=NF;i++){split($i,kv,"="); if(kv[1]==f) print kv[2]} }' "$RAW"; }
med() { field "$1" "$2" "$3" | anchor_median_stats; }
echo
printf '%-7s %-5s %24s %30s %12s\n' target mode "latency us med [min..max]" "calls/s med [min..max]" "ratio c/s"
for m in ping bulk par8; do
  read -r dt _ < <(med direct "$m" calls_per_s)
  for t in "${TARGETS[@]}"; do
    read -r cm cmin cmax _ < <(med "$t" "$m" calls_per_s)
    if [ "$m" = par8 ]; then lat="-"; else
      read -r lm lmin lmax _ < <(med "$t" "$m" median_us); lat=$(printf '%7.1f [%6.1f..%6.1f]' "$lm" "$lmin" "$lmax"); fi
    printf '%-7s %-5s %24s %12.0f [%7.0f..%7.0f] %12s\n' "$t" "$m" "$lat" "$cm" "$cmin" "$cmax" \
      "$(awk -v a="$cm" -v b="$dt" 'BEGIN{printf "%.2fx", a/b}')"
  done
done
echo
# Added latency from the medians, and from the fastest run of each target
# (the least disturbed by other load on a shared machine).
for m in ping bulk; do
  read -r d dmin _ < <(med direct "$m" median_us); read -r x xmin _ < <(med xdg "$m" median_us); read -r o omin _ < <(med ours "$m" median_us)
  awk -v m="$m" -v d="$d" -v x="$x" -v o="$o" -v dm="$dmin" -v xm="$xmin" -v om="$omin" 'BEGIN{
    printf "added latency %-4s: median xdg %+.1f us, ours %+.1f us, ours/xdg %.2f | fastest run xdg %+.1f us, ours %+.1f us, ours/xdg %.2f (target <= 0.50)\n",
      m, x-d, o-d, (x-d)!=0 ? (o-d)/(x-d) : 0, xm-dm, om-dm, (xm-dm)!=0 ? (om-dm)/(xm-dm) : 0}'
done
# Paired by repeat: each proxy's calls/s over direct's in the same repeat
# (load from elsewhere shifts between repeats more than within one).
paired() { # target mode -> median of per-repeat ratios to direct
  awk -v t="$1" -v m="$2" '$2==m { c=""; r=""; for(i=3;i<=NF;i++){split($i,kv,"="); if(kv[1]=="calls_per_s") c=kv[2]; if(kv[1]=="r") r=kv[2]}
      if($1=="direct") d[r]=c; if($1==t) p[r]=c }
    END{ for(r in p) if(d[r]>0) print p[r]/d[r] }' "$RAW" | sort -g | awk '{a[NR]=$1} END{printf "%.2f", a[int((NR+1)/2)]}'
}
for m in ping bulk par8; do
  echo "paired calls/s vs direct, $m: xdg $(paired xdg $m)x, ours $(paired ours $m)x (median of per-repeat ratios)"
done
read -r x _ < <(med xdg par8 calls_per_s); read -r o _ < <(med ours par8 calls_per_s)
awk -v x="$x" -v o="$o" 'BEGIN{printf "8 clients: ours/xdg aggregate calls/s %.2f (target >= 1.00)\n", o/x}'
echo "peak RSS (VmHWM): xdg $(awk '/VmHWM/{print $2,$3}' /proc/$P_XDG/status), ours $(awk '/VmHWM/{print $2,$3}' /proc/$P_OURS/status)"

if [ "$SYSCALLS" = 1 ] && command -v strace >/dev/null; then
  for t in xdg ours; do
    p=P_XDG; [ $t = ours ] && p=P_OURS
    timeout 60 strace -c -f -p "${!p}" -o "$WORK/$t.strace" 2>/dev/null & S=$!
    sleep 0.5
    "$CLIENT" "${ADDR[$t]}" ping 2000 >/dev/null
    kill -INT $S; wait $S 2>/dev/null
    awk -v t="$t" '$NF=="total"{printf "syscalls per ping round trip, %s: %.1f\n", t, $4/2000}' "$WORK/$t.strace"
  done
fi
