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
# added latency (proxied - direct) and ours/xdg of it, each proxy's CPU
# time per forwarded call (utime+stime of the proxy process from
# /proc/PID/stat around each run, summed over the repeats, divided by the
# calls made, the 10 warm-up calls and Hello included) and ours/xdg of it,
# and peak RSS (VmHWM).
#
# Build ours first: cargo build --release -p porthole-dbus-proxy
# Variables: OURS (default target/release/porthole-dbus-proxy under
#   $CARGO_TARGET_DIR or /work/main/target), XDG (xdg-dbus-proxy),
#   ANCHOR_DIR (/work/shared/bench), N_CALLS (20000), BULK_N (200),
#   N_PAR (5000), REPEATS (5), SYSCALLS (1: also count each proxy's
#   syscalls per round trip with strace, a figure other load cannot skew),
#   OURS_ARGS (extra arguments for ours, e.g. --busy-poll), BASE (another
#   build of ours, e.g. an older commit's, run as target "base" with
#   BASE_ARGS)
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
OURS_ARGS="${OURS_ARGS:-}"
BASE="${BASE:-}"
BASE_ARGS="${BASE_ARGS:-}"
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
# shellcheck disable=SC2086 # OURS_ARGS/BASE_ARGS: words on purpose
"$OURS" $OURS_ARGS "$BUS_ADDRESS" "$WORK/ours.sock" --filter --talk=org.example.Echo >"$WORK/ours.log" 2>&1 &
P_OURS=$!; anchor_track $P_OURS
anchor_wait_socket "$WORK/xdg.sock" || exit 1
anchor_wait_socket "$WORK/ours.sock" || exit 1

declare -A ADDR=([direct]="$BUS_ADDRESS" [xdg]="unix:path=$WORK/xdg.sock" [ours]="unix:path=$WORK/ours.sock")
declare -A PID=([direct]=0 [xdg]=$P_XDG [ours]=$P_OURS)
TARGETS=(direct xdg ours)
if [ -n "$BASE" ]; then
  # shellcheck disable=SC2086
  "$BASE" $BASE_ARGS "$BUS_ADDRESS" "$WORK/base.sock" --filter --talk=org.example.Echo >"$WORK/base.log" 2>&1 &
  PID[base]=$!; anchor_track "${PID[base]}"
  anchor_wait_socket "$WORK/base.sock" || exit 1
  ADDR[base]="unix:path=$WORK/base.sock"; TARGETS+=(base)
fi
PROXIES=("${TARGETS[@]:1}")
RAW="$WORK/raw"; : >"$RAW"

# utime+stime of a process in clock ticks (/proc/PID/stat fields 14 and
# 15, counted after the ")" that ends the command name); 0 for direct.
ticks() { [ "$1" = 0 ] && { echo 0; return; }; sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
HZ=$(getconf CLK_TCK)

par8() { # addr -> aggregate calls/s of 8 concurrent ping clients
  local a="$1" i t0 t1 pids=()
  t0=$(date +%s.%N)
  for i in 1 2 3 4 5 6 7 8; do "$CLIENT" "$a" ping "$N_PAR" >/dev/null & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || return 1; done
  t1=$(date +%s.%N)
  awk -v n=$((8 * N_PAR)) -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", n/(b-a)}'
}

echo "# porthole-dbus-proxy benchmark $(date -u +%FT%TZ); $(uname -r); $(nproc) cores"
echo "# xdg: $XDG ($("$XDG" --version 2>&1 | head -1)); ours: $OURS $OURS_ARGS${BASE:+; base: $BASE $BASE_ARGS}"
echo "# ping N=$N_CALLS, bulk N=$BULK_N x 1 MiB, par8 8 x $N_PAR pings; REPEATS=$REPEATS interleaved"
for ((r=1; r<=REPEATS; r++)); do
  # Each repeat starts at another target, so none always runs first.
  for ((k=0; k<${#TARGETS[@]}; k++)); do
    t="${TARGETS[$(( (r + k) % ${#TARGETS[@]} ))]}"
    a="${ADDR[$t]}"
    p="${PID[$t]}"
    k0=$(ticks "$p"); l="$("$CLIENT" "$a" ping "$N_CALLS")" || { echo "FAIL $t ping"; exit 1; }
    echo "$t ping $l r=$r ticks=$(( $(ticks "$p") - k0 )) calls=$((N_CALLS + 11))" >>"$RAW"
    k0=$(ticks "$p"); l="$("$CLIENT" "$a" bulk "$BULK_N" 1048576)" || { echo "FAIL $t bulk"; exit 1; }
    echo "$t bulk $l r=$r ticks=$(( $(ticks "$p") - k0 )) calls=$((BULK_N + 11))" >>"$RAW"
    k0=$(ticks "$p"); c="$(par8 "$a")" || { echo "FAIL $t par8"; exit 1; }
    echo "$t par8 calls_per_s=$c r=$r ticks=$(( $(ticks "$p") - k0 )) calls=$((8 * (N_PAR + 11)))" >>"$RAW"
  done
done

field() { awk -v t="$1" -v m="$2" -v f="$3" '$1==t && $2==m { for(i=3;i<=NF;i++){split($i,kv,"="); if(kv[1]==f) print kv[2]} }' "$RAW"; }
med() { field "$1" "$2" "$3" | anchor_median_stats; }
# CPU us per forwarded call of target's proxy in mode: all repeats' ticks
# over all their calls.
cpu_per_call() {
  awk -v t="$1" -v m="$2" -v hz="$HZ" '$1==t && $2==m { for(i=3;i<=NF;i++){split($i,kv,"="); if(kv[1]=="ticks") k+=kv[2]; if(kv[1]=="calls") c+=kv[2]} }
    END{ if (c > 0) printf "%.1f", k * 1e6 / hz / c; else print "-" }' "$RAW"
}
echo
printf '%-7s %-5s %24s %30s %10s %12s\n' target mode "latency us med [min..max]" "calls/s med [min..max]" "ratio c/s" "CPU us/call"
for m in ping bulk par8; do
  read -r dt _ < <(med direct "$m" calls_per_s)
  for t in "${TARGETS[@]}"; do
    read -r cm cmin cmax _ < <(med "$t" "$m" calls_per_s)
    if [ "$m" = par8 ]; then lat="-"; else
      read -r lm lmin lmax _ < <(med "$t" "$m" median_us); lat=$(printf '%7.1f [%6.1f..%6.1f]' "$lm" "$lmin" "$lmax"); fi
    cpu="-"; [ "$t" = direct ] || cpu=$(cpu_per_call "$t" "$m")
    printf '%-7s %-5s %24s %12.0f [%7.0f..%7.0f] %10s %12s\n' "$t" "$m" "$lat" "$cm" "$cmin" "$cmax" \
      "$(awk -v a="$cm" -v b="$dt" 'BEGIN{printf "%.2fx", a/b}')" "$cpu"
  done
done
echo
for m in ping bulk par8; do
  x=$(cpu_per_call xdg "$m")
  for t in "${PROXIES[@]}"; do
    [ "$t" = xdg ] && continue
    awk -v m="$m" -v t="$t" -v x="$x" -v o="$(cpu_per_call "$t" "$m")" 'BEGIN{
      printf "CPU per call %-4s: xdg %.1f us, %s %.1f us, %s/xdg %.2f (target <= 0.70)\n", m, x, t, o, t, (x > 0 ? o/x : 0)}'
  done
done
# Added latency from the medians, and from the fastest run of each target
# (the least disturbed by other load on a shared machine).
for m in ping bulk; do
  read -r d dmin _ < <(med direct "$m" median_us); read -r x xmin _ < <(med xdg "$m" median_us)
  for t in "${PROXIES[@]}"; do
    [ "$t" = xdg ] && continue
    read -r o omin _ < <(med "$t" "$m" median_us)
    awk -v m="$m" -v t="$t" -v d="$d" -v x="$x" -v o="$o" -v dm="$dmin" -v xm="$xmin" -v om="$omin" 'BEGIN{
      printf "added latency %-4s: median xdg %+.1f us, %s %+.1f us, %s/xdg %.2f | fastest run xdg %+.1f us, %s %+.1f us, %s/xdg %.2f (target <= 0.50)\n",
        m, x-d, t, o-d, t, (x-d)!=0 ? (o-d)/(x-d) : 0, xm-dm, t, om-dm, t, (xm-dm)!=0 ? (om-dm)/(xm-dm) : 0}'
  done
done
# Paired by repeat: each proxy's calls/s over direct's in the same repeat
# (load from elsewhere shifts between repeats more than within one).
paired() { # target mode -> median of per-repeat ratios to direct
  awk -v t="$1" -v m="$2" '$2==m { c=""; r=""; for(i=3;i<=NF;i++){split($i,kv,"="); if(kv[1]=="calls_per_s") c=kv[2]; if(kv[1]=="r") r=kv[2]}
      if($1=="direct") d[r]=c; if($1==t) p[r]=c }
    END{ for(r in p) if(d[r]>0) print p[r]/d[r] }' "$RAW" | sort -g | awk '{a[NR]=$1} END{printf "%.2f", a[int((NR+1)/2)]}'
}
for m in ping bulk par8; do
  line="paired calls/s vs direct, $m:"
  for t in "${PROXIES[@]}"; do line="$line $t $(paired "$t" "$m")x,"; done
  echo "${line%,} (median of per-repeat ratios; target for ours >= 0.90)"
done
read -r x _ < <(med xdg par8 calls_per_s); read -r o _ < <(med ours par8 calls_per_s)
awk -v x="$x" -v o="$o" 'BEGIN{printf "8 clients: ours/xdg aggregate calls/s %.2f (target >= 1.00)\n", o/x}'
line="peak RSS (VmHWM):"
for t in "${PROXIES[@]}"; do line="$line $t $(awk '/VmHWM/{print $2,$3}' "/proc/${PID[$t]}/status"),"; done
echo "${line%,}"

if [ "$SYSCALLS" = 1 ] && command -v strace >/dev/null; then
  for t in "${PROXIES[@]}"; do
    timeout 60 strace -c -f -p "${PID[$t]}" -o "$WORK/$t.strace" 2>/dev/null & S=$!
    sleep 0.5
    "$CLIENT" "${ADDR[$t]}" ping 2000 >/dev/null
    kill -INT $S; wait $S 2>/dev/null
    awk -v t="$t" '$NF=="total"{printf "syscalls per ping round trip, %s: %.1f\n", t, $4/2000}' "$WORK/$t.strace"
  done
fi
