#!/usr/bin/env bash
# Peer check: run test files of xdg-desktop-portal's own pytest suite (tag
# 1.20.4, the last one that runs on Debian 12's GLib 2.74) against our
# daemons, or with --anchor against Debian's.  Exits non-zero if any test
# fails.
#
#   XDP_CHECKOUT=/work/xdp-1.20.4 XDP_VENV=/work/xdp-venv \
#     tests/upstream/run-xdp-tests.sh [--anchor] tests/test_documents.py ...
#
# Test files are paths inside the checkout.  tests/test_document_fuse.py is
# skipped upstream by a module-level pytest.skip (a race in their
# multi-thread test when the class runs in one session); it is run here
# anyway from a copy without that line, one test per process as upstream's
# comment says works.
#
# One-time setup (nothing from the checkout is copied into this repo):
#   git --git-dir=<xdg-desktop-portal.git> archive 1.20.4 | tar -x -C "$XDP_CHECKOUT"
#   apt-get install python3-gi python3-dbus gir1.2-umockdev-1.0 libumockdev0 \
#     umockdev xdg-desktop-portal gcc fuse3
#   /usr/bin/python3 -m venv --system-site-packages "$XDP_VENV"   # not pyenv's python3
#   "$XDP_VENV"/bin/pip install python-dbusmock==0.38 pytest pytest-timeout
#
# Binaries: STORE, DOCUMENTS and FRONTEND override the defaults, which are
# our debug builds (each falls back to Debian's daemon when ours is not built).
set -euo pipefail
: "${XDP_CHECKOUT:?set XDP_CHECKOUT to an xdg-desktop-portal 1.20.4 work tree}"
: "${XDP_VENV:?set XDP_VENV to the venv described above}"
here=$(cd "$(dirname "$0")/../.." && pwd)
anchor=false
if [[ ${1:-} == --anchor ]]; then anchor=true; shift; fi
[[ $# -gt 0 ]] || { echo "usage: $0 [--anchor] tests/test_NAME.py ..." >&2; exit 2; }

ours() { [[ -x $here/target/debug/$1 ]] && echo "$here/target/debug/$1"; }
if $anchor; then
  store=${STORE:-/usr/libexec/xdg-permission-store}
  docs=${DOCUMENTS:-/usr/libexec/xdg-document-portal}
  frontend_bin=${FRONTEND:-/usr/libexec/xdg-desktop-portal}
else
  store=${STORE:-$(ours porthole-permission-store || true)}
  docs=${DOCUMENTS:-$(ours porthole-documents || echo /usr/libexec/xdg-document-portal)}
  frontend_bin=${FRONTEND:-$(ours porthole-portals || echo /usr/libexec/xdg-desktop-portal)}
fi
for b in "$store" "$docs" "$frontend_bin"; do
  [[ -x $b ]] || { echo "missing binary ${b:-(store)}: build it (cargo build --workspace --bins)" >&2; exit 2; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# The 1.20.4 harness stops each daemon with SIGHUP and asserts exit status
# 0; Debian's 1.16 daemons have no SIGHUP handler and die of the signal,
# which fails every test's teardown.  This shim runs a Debian daemon
# unchanged and turns SIGHUP into SIGTERM for it, exiting 0.  (It must be an
# ELF binary: conftest runs ldd on it.)  Our daemons are not wrapped.
shim() {  # shim NAME TARGET: prints the path of a shim running TARGET
  cc -x c -o "$tmp/$1" -DTARGET="\"$2\"" - <<'EOF'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static pid_t child;
static void on_hup(int s) { (void) s; kill(child, SIGTERM); }
int main(int argc, char **argv) {
  int st;
  (void) argc;
  signal(SIGHUP, on_hup);
  if ((child = fork()) == 0) {
    signal(SIGHUP, SIG_DFL);
    argv[0] = TARGET;
    execv(TARGET, argv);
    _exit(127);
  }
  while (waitpid(child, &st, 0) < 0) ;
  return WIFSIGNALED(st) ? (WTERMSIG(st) == SIGTERM ? 0 : 1) : WEXITSTATUS(st);
}
EOF
  echo "$tmp/$1"
}
wrap() { case $1 in /usr/libexec/*) shim "$(basename "$1")" "$1" ;; *) echo "$1" ;; esac; }

export XDG_PERMISSION_STORE_PATH=$(wrap "$store")
export XDG_DOCUMENT_PORTAL_PATH=$(wrap "$docs")
export XDG_DESKTOP_PORTAL_PATH=$(wrap "$frontend_bin")
export XDP_VALIDATE_ICON=/usr/libexec/xdg-desktop-portal-validate-icon
export XDP_VALIDATE_SOUND=/bin/true   # must be set; unused by these tests
py=$XDP_VENV/bin/python
cd "$XDP_CHECKOUT"

files=()
for f in "$@"; do
  if [[ $(basename "$f") == test_document_fuse.py ]]; then
    copy=tests/_porthole_run_test_document_fuse.py
    grep -v '^pytest.skip("Test has a race condition' "$f" > "$copy"
    trap 'rm -rf "$tmp" "$XDP_CHECKOUT/$copy"' EXIT
    files+=("$copy")
  else
    files+=("$f")
  fi
done

# One pytest process per test, each in its own process group: a hung test
# is killed by pytest-timeout, and whatever it left behind is reaped.
pass=0 fail=0
# Only whole lines that are one test id: pytest's warnings quote test ids
# inside sentences ("Test: tests/x.py::T::t, argvalues type: generator").
for t in $("$py" -m pytest -p no:cacheprovider --collect-only -q "${files[@]}" | grep -E '^[^ ]+::[^ ]+$'); do
  setsid "$py" -m pytest -p no:cacheprovider -q -rA --timeout=120 --timeout-method=thread "$t" >"$tmp/log" 2>&1 &
  pid=$!
  if wait $pid; then pass=$((pass + 1)); echo "PASS $t"
  else fail=$((fail + 1)); echo "FAIL $t"; sed 's/^/    /' "$tmp/log" | tail -n 40; fi
  kill -- -$pid 2>/dev/null || true
done
echo "store=$store documents=$docs frontend=$frontend_bin: $pass passed, $fail failed"
[[ $fail -eq 0 && $pass -gt 0 ]]
