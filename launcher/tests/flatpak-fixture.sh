#!/bin/sh
# Builds and installs, offline, the Flatpak app the launcher's Flatpak tests
# and benchmark run under both `flatpak run` and `porthole run`.
#
#   flatpak-fixture.sh build WORK PROBE SHARED
#       WORK/repo: a local, unsigned ostree repo holding
#         runtime/org.porthole.TestPlatform/ARCH/1: a trimmed copy of the
#           debootstrapped tree's /usr (bin, sbin, lib, lib64; no share),
#           exported with `flatpak build-export --runtime`;
#         app/org.porthole.FlatpakTest/ARCH/stable: built with build-init,
#           a shell script as its command (`fptest`, which reports what the
#           app sees), the probe, and build-finish permissions on SHARED.
#   flatpak-fixture.sh install WORK BASE
#       BASE/{user,system,config}: a private installation (FLATPAK_USER_DIR
#       and friends) with the runtime and the app from WORK/repo. Run it as
#       the user who will run the app.
#
# Nothing here uses the network: remote-add and install read WORK/repo.
set -eu
RUNTIME_TREE=${PORTHOLE_RUNTIME_TREE:-/var/tmp/porthole-runtime-bookworm}
APP=org.porthole.FlatpakTest
RUNTIME=org.porthole.TestPlatform
ARCH=$(flatpak --default-arch)

flatpak_env() {
    export FLATPAK_USER_DIR="$1/user" FLATPAK_SYSTEM_DIR="$1/system" FLATPAK_CONFIG_DIR="$1/config"
}

# A throw-away installation need not survive a crash: ostree skips its
# fsync calls (seconds each install on a busy disk).
no_fsync() {
    sed -i 's/^\[core\]$/[core]\nfsync=false/' "$1"
}

# extension ID BRANCH OF_REF: exports a runtime ref ID holding a marker file
# (an [ExtensionOf] runtime is exported from files/, like an extension).
extension() {
    mkdir -p "ext-$1/usr" "ext-$1/files/lib" "ext-$1/files/merged"
    echo "$1" >"ext-$1/files/marker"
    echo "$1" >"ext-$1/files/merged/$1.conf"
    printf '[Runtime]\nname=%s\n\n[ExtensionOf]\nref=%s\n' "$1" "$3" >"ext-$1/metadata"
    flatpak build-export --runtime --no-update-summary --disable-fsync repo "ext-$1" "$2" >/dev/null
}

case "$1" in
build)
    work=$(readlink -f "$2") probe=$(readlink -f "$3") shared=$4
    [ -d "$work/repo" ] && exit 0
    rm -rf "$work/tmp" && mkdir -p "$work/tmp"
    cd "$work/tmp"
    # The runtime: build-export --runtime commits usr/ (files/ must exist).
    mkdir -p rt/usr/etc rt/files
    for d in bin sbin lib lib64; do
        cp -a --reflink=auto "$RUNTIME_TREE/usr/$d" rt/usr/
    done
    # What the app never uses goes (a third of the size, so of the time).
    rm -rf rt/usr/lib/x86_64-linux-gnu/gconv rt/usr/lib/x86_64-linux-gnu/perl-base \
        rt/usr/bin/perl* rt/usr/lib/apt rt/usr/lib/x86_64-linux-gnu/libapt-* \
        rt/usr/lib/x86_64-linux-gnu/libdb-*
    cp "$RUNTIME_TREE/etc/ld.so.cache" rt/usr/etc/
    # The runtime's own etc: a file, a directory, a link (shown in /etc).
    echo runtime >rt/usr/etc/fptest.conf
    mkdir -p rt/usr/etc/xdg && echo runtime >rt/usr/etc/xdg/fptest-xdg
    ln -s ../lib/os-release rt/usr/etc/os-release
    # Extension points: one installed (Ext), one not (Missing, skipped).
    mkdir -p rt/usr/lib/porthole-ext rt/usr/lib/missing-ext
    cat >rt/metadata <<EOF
[Runtime]
name=$RUNTIME
runtime=$RUNTIME/$ARCH/1
sdk=$RUNTIME/$ARCH/1

[Extension $RUNTIME.Ext]
directory=lib/porthole-ext
add-ld-path=lib
no-autodownload=true

[Extension $RUNTIME.Missing]
directory=lib/missing-ext
no-autodownload=true
EOF
    flatpak build-export --runtime --no-update-summary --disable-fsync repo rt 1 >/dev/null
    # The runtime's extension, and a plugin of the app (a subdirectory
    # extension: /app/plugins/one), each a runtime ref of its own.
    extension "$RUNTIME.Ext" 1 "runtime/$RUNTIME/$ARCH/1"
    extension "$APP.Plugin.one" stable "app/$APP/$ARCH/stable"
    flatpak build-update-repo repo >/dev/null
    # build-init looks the SDK up among installed runtimes.
    flatpak_env "$work/tmp/build-inst"
    flatpak --user remote-add --no-gpg-verify build "file://$work/tmp/repo"
    no_fsync "$FLATPAK_USER_DIR/repo/config"
    flatpak --user install -y --noninteractive build "runtime/$RUNTIME/$ARCH/1" >/dev/null
    flatpak build-init app "$APP" "$RUNTIME" "$RUNTIME" 1 >/dev/null
    mkdir -p app/files/bin app/files/share/fptest app/files/lib app/files/plugins
    strip -o app/files/bin/porthole-probe "$probe"
    echo hello >app/files/share/fptest/hello
    # The app reports what it sees, one line per fact, for the test to
    # compare between `flatpak run` and `porthole run`.
    cat >app/files/bin/fptest <<'EOF'
#!/bin/sh
printf 'ARGS'; for a in "$@"; do printf ' [%s]' "$a"; done; echo
env | LC_ALL=C sort | sed 's/^/ENV /'
shared=$(sed -n 's/^SHARED=//p' /app/share/fptest/where)
uid=$(id -u)
for p in /app/share/fptest/hello /app/bin/porthole-probe /usr/bin/env /usr/sbin/ldconfig \
         /etc/passwd /.flatpak-info "$HOME" "$HOME/.var/app/$FLATPAK_ID" \
         "$HOME/.fptest-persist" "$shared/ro/file" "$shared/rw/file" \
         "$shared/hidden/file" "/run/user/$uid/bus" /var/lib/flatpak /root/.ssh \
         /usr/lib/porthole-ext/marker /usr/lib/missing-ext/marker /app/plugins/one/marker \
         "/app/plugins/merged/$FLATPAK_ID.Plugin.one.conf" "/run/user/$uid/fptest-run/file" \
         /etc/resolv.conf /etc/hosts /etc/timezone /var/db/zoneinfo /var/run/user \
         /var/cache /var/data /var/config /etc/fptest.conf /etc/xdg/fptest-xdg /etc/os-release \
         "/tmp/.X11-unix/X${DISPLAY#:}" /run/host/fonts /run/host/font-dirs.xml /run/host/os-release /run/host/share/icons /sys/class "/run/user/$uid/app/$FLATPAK_ID" "/run/user/$uid/flatpak-info"; do
    if [ -e "$p" ]; then echo "PATH $p yes"; else echo "PATH $p no"; fi
done
for d in "$shared/ro" "$shared/rw" "$shared/hidden" "$HOME/.fptest-persist" /var/cache /var/config \
         "/run/user/$uid/app/$FLATPAK_ID"; do
    # A name of its own: the root and the user test run at once on the
    # same shared directories, and neither may open the other's file.
    if f=$(mktemp "$d/written-by-app.XXXXXX" 2>/dev/null); then
        echo "WRITE ${d##*/} yes"; rm -f "$f"
    else
        echo "WRITE ${d##*/} no"
    fi
done
sed 's/^/INFO /' /.flatpak-info
sed 's/^/FONTDIRS /' /run/host/font-dirs.xml
if [ -n "${XAUTHORITY:-}" ]; then echo "XAUTH $(od -An -tx1 -v "$XAUTHORITY" | tr -d ' \n')"; fi
/app/bin/porthole-probe dbus-battery "$FLATPAK_ID" org.example.Granted org.example.Hidden \
    org.freedesktop.portal.Desktop </dev/null | grep '"\(REACH\|P22\)\.'
EOF
    chmod 755 app/files/bin/fptest
    echo "SHARED=$shared" >app/files/share/fptest/where
    flatpak build-finish app --command=fptest --share=network --socket=wayland \
        --filesystem="$shared/ro:ro" --filesystem="$shared/rw" \
        --talk-name=org.example.Granted --env=FPTEST_VAR=from-metadata \
        --persist=.fptest-persist \
        --extension="$APP.Plugin=directory=plugins" \
        --extension="$APP.Plugin=subdirectories=true" \
        --extension="$APP.Plugin=merge-dirs=merged" >/dev/null
    flatpak build-export --no-update-summary --disable-fsync repo app stable >/dev/null
    flatpak build-update-repo repo >/dev/null
    chmod -R a+rX repo
    mv repo "$work/repo"
    cd "$work" && rm -rf "$work/tmp"
    ;;
install)
    work=$2 base=$3
    flatpak_env "$base"
    mkdir -p "$base/user" "$base/config"
    # Flatpak asks the system bus about parental controls when a user
    # other than root installs an app; there is no system bus here. Its
    # own test suite skips the check with this variable.
    export FLATPAK_SYSTEM_HELPER_ON_SESSION=1
    flatpak --user remote-add --no-gpg-verify test "file://$work/repo"
    no_fsync "$FLATPAK_USER_DIR/repo/config"
    flatpak --user install -y --noninteractive test "runtime/$RUNTIME/$ARCH/1" \
        "runtime/$RUNTIME.Ext/$ARCH/1" "runtime/$APP.Plugin.one/$ARCH/stable" \
        "app/$APP/$ARCH/stable" >/dev/null
    ;;
*)
    echo "usage: $0 build WORK PROBE SHARED | install WORK BASE" >&2
    exit 2
    ;;
esac
