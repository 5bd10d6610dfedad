# Sourced by the benchmark scripts: one private session bus per identity,
# owned by it. Needs BENCH_USER, ASUSER (the command prefix that runs as
# BENCH_USER) and PIDS (the pids to stop at exit, appended to).

start_bus() { # WHO DIR
  local who=$1 dir=$2
  mkdir -m 700 "$dir"
  cat > "$dir/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path=$dir/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
EOF
  if [ "$who" = user ]; then
    chown -R "$BENCH_USER" "$dir"
    $ASUSER dbus-daemon --config-file="$dir/bus.conf" --nofork >/dev/null 2>&1 &
  else
    dbus-daemon --config-file="$dir/bus.conf" --nofork >/dev/null 2>&1 &
  fi
  PIDS="$PIDS $!"
  for _ in $(seq 100); do [ -S "$dir/bus" ] && return 0; sleep 0.05; done
  echo "dbus-daemon did not start in $dir" >&2; exit 1
}
