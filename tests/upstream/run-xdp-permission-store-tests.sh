#!/usr/bin/env bash
# Peer check: run xdg-desktop-portal's own tests/test_permission_store.py
# (tag 1.20.4, the last one that runs on Debian 12's GLib 2.74) against
# porthole-permission-store, or with --anchor against Debian's
# /usr/libexec/xdg-permission-store.  Exits non-zero if any test fails.
#
#   XDP_CHECKOUT=/work/xdp-1.20.4 XDP_VENV=/work/xdp-venv \
#     tests/upstream/run-xdp-permission-store-tests.sh [--anchor]
#
# One-time setup (nothing from the checkout is copied into this repo):
#   git --git-dir=<xdg-desktop-portal.git> archive 1.20.4 | tar -x -C "$XDP_CHECKOUT"
#   apt-get install python3-gi python3-dbus gir1.2-umockdev-1.0 libumockdev0 \
#     umockdev xdg-desktop-portal gcc     # umockdev ships libumockdev-preload.so
#   /usr/bin/python3 -m venv --system-site-packages "$XDP_VENV"   # not pyenv's python3
#   "$XDP_VENV"/bin/pip install python-dbusmock==0.38 pytest pytest-timeout
# Override the store binary with STORE=...; default is the debug build.
set -euo pipefail
: "${XDP_CHECKOUT:?set XDP_CHECKOUT to an xdg-desktop-portal 1.20.4 work tree}"
: "${XDP_VENV:?set XDP_VENV to the venv described above}"
here=$(cd "$(dirname "$0")/../.." && pwd)
store=${STORE:-$here/target/debug/porthole-permission-store}
[[ ${1:-} == --anchor ]] && store=/usr/libexec/xdg-permission-store
[[ -x $store ]] || { echo "missing $store (cargo build -p porthole-permission-store)" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# The 1.20.4 harness stops the frontend with SIGHUP and asserts exit status 0;
# Debian's 1.16 frontend has no SIGHUP handler and dies of the signal, which
# fails every test's teardown.  This shim runs Debian's frontend unchanged and
# turns our SIGHUP into SIGTERM for it, exiting 0.  (It must be an ELF binary:
# conftest runs ldd on it.)  The permission store itself is not wrapped.
cc -x c -o "$tmp/frontend" - <<'EOF'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static pid_t child;
static void on_hup(int s) { (void) s; kill(child, SIGTERM); }
int main(void) {
  int st;
  signal(SIGHUP, on_hup);
  if ((child = fork()) == 0) {
    signal(SIGHUP, SIG_DFL);
    execl("/usr/libexec/xdg-desktop-portal", "xdg-desktop-portal", (char *) 0);
    _exit(127);
  }
  while (waitpid(child, &st, 0) < 0) ;
  return WIFSIGNALED(st) ? (WTERMSIG(st) == SIGTERM ? 0 : 1) : WEXITSTATUS(st);
}
EOF

export XDG_PERMISSION_STORE_PATH=$store
export XDG_DESKTOP_PORTAL_PATH=$tmp/frontend
export XDG_DOCUMENT_PORTAL_PATH=/usr/libexec/xdg-document-portal  # unused here
export XDP_VALIDATE_ICON=/usr/libexec/xdg-desktop-portal-validate-icon
export XDP_VALIDATE_SOUND=/bin/true   # must be set; unused by these tests
py=$XDP_VENV/bin/python
cd "$XDP_CHECKOUT"

# One pytest process per test: a hung test (Debian's 1.16 store aborts in
# test_delete_race, leaving the test waiting forever) is killed by
# pytest-timeout's thread method, which exits the whole process; running each
# test in its own process group lets us reap whatever it left behind.
pass=0 fail=0
for t in $("$py" -m pytest -p no:cacheprovider --collect-only -q tests/test_permission_store.py | grep '::'); do
  setsid "$py" -m pytest -p no:cacheprovider -q -rA --timeout=30 --timeout-method=thread "$t" >"$tmp/log" 2>&1 &
  pid=$!
  if wait $pid; then pass=$((pass + 1)); echo "PASS $t"
  else fail=$((fail + 1)); echo "FAIL $t"; sed 's/^/    /' "$tmp/log"; fi
  kill -- -$pid 2>/dev/null || true   # stray dbus-daemons etc. of that test
done
echo "store=$store: $pass passed, $fail failed"
[[ $fail -eq 0 && $pass -gt 0 ]]
