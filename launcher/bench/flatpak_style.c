/* The baseline of bench_startup_dbus.sh: bwrap plus xdg-dbus-proxy started
 * the way Flatpak starts them (common/flatpak-run-dbus.c, flatpak-run.c):
 * a sync pipe whose write end goes to the proxy as --fd=N, the proxy's
 * arguments through --args=N (a memfd), wait for the proxy's ready byte,
 * then exec bwrap with the read end as --sync-fd, so the proxy lives as
 * long as the sandbox and exits when it ends.
 *
 * Usage: flatpak-style PROXY BUS_ADDRESS SOCKET UID -- BWRAP_ARGS...
 * (PROXY's policy is Flatpak's default for org.porthole.Bench.) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <signal.h>

int main(int argc, char **argv) {
  if (argc < 6 || strcmp(argv[5], "--") != 0) {
    fprintf(stderr, "usage: %s PROXY ADDRESS SOCKET UID -- BWRAP_ARGS...\n", argv[0]);
    return 2;
  }
  const char *proxy = argv[1], *address = argv[2], *socket = argv[3], *uid = argv[4];
  const char *policy[] = {
    "--filter", "--own=org.porthole.Bench", "--own=org.porthole.Bench.*",
    "--talk=org.freedesktop.portal.*", "--call=org.freedesktop.portal.*=*",
    "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*", NULL };
  int args_fd = memfd_create("dbus-proxy-args", MFD_CLOEXEC);
  if (args_fd < 0) { perror("memfd_create"); return 1; }
  dprintf(args_fd, "%s%c%s%c", address, 0, socket, 0);
  for (int i = 0; policy[i]; i++) dprintf(args_fd, "%s%c", policy[i], 0);
  lseek(args_fd, 0, SEEK_SET);
  int sync_fds[2];
  if (pipe2(sync_fds, O_CLOEXEC) < 0) { perror("pipe2"); return 1; }
  unlink(socket);
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) {
    char fd_arg[32], args_arg[32];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    fcntl(sync_fds[1], F_SETFD, 0);
    fcntl(args_fd, F_SETFD, 0);
    snprintf(fd_arg, sizeof fd_arg, "--fd=%d", sync_fds[1]);
    snprintf(args_arg, sizeof args_arg, "--args=%d", args_fd);
    execl(proxy, proxy, fd_arg, args_arg, (char *)NULL);
    _exit(127);
  }
  close(sync_fds[1]);
  close(args_fd);
  char b;
  if (read(sync_fds[0], &b, 1) != 1) { fprintf(stderr, "proxy failed\n"); return 1; }
  /* bwrap ARGS... with the bus bound and --sync-fd inserted first. */
  int n = argc - 6;
  char **av = calloc(n + 16, sizeof *av);
  char sync_arg[16], dest[64], env[80];
  snprintf(sync_arg, sizeof sync_arg, "%d", sync_fds[0]);
  snprintf(dest, sizeof dest, "/run/user/%s/bus", uid);
  snprintf(env, sizeof env, "unix:path=%s", dest);
  int k = 0;
  av[k++] = "bwrap";
  av[k++] = "--sync-fd"; av[k++] = sync_arg;
  av[k++] = "--bind"; av[k++] = (char *)socket; av[k++] = dest;
  av[k++] = "--setenv"; av[k++] = "DBUS_SESSION_BUS_ADDRESS"; av[k++] = env;
  for (int i = 0; i < n; i++) av[k++] = argv[6 + i];
  av[k] = NULL;
  fcntl(sync_fds[0], F_SETFD, 0);
  execvp("bwrap", av);
  perror("bwrap");
  return 127;
}
