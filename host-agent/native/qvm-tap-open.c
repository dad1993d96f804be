/*
 * qvm-tap-open IFNAME FD -- COMMAND...: opens the existing tap device IFNAME, puts the open
 * descriptor at FD and execs COMMAND, which inherits it.
 *
 * A jailed VMM has no /dev/net/tun and no privilege to attach to a tap, so qvmd runs this (as
 * root) around the VMM's command: QEMU gets the tap as `-netdev tap,fd=FD` and never opens
 * anything itself. It execs, so the pid qvmd records is the VMM's. It only attaches to a device
 * that already exists: it never creates, configures or keeps one. No IFF_VNET_HDR: QEMU probes
 * the descriptor (TUNGETIFF) and uses plain frames without it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *ifname, const char *what) {
  fprintf(stderr, "qvm-tap-open: %s: %s\n", ifname, what);
  return 1;
}

int main(int argc, char **argv) {
  char *end = NULL;
  long target = argc >= 5 ? strtol(argv[2], &end, 10) : -1;
  if (argc < 5 || strcmp(argv[3], "--") != 0 || end == argv[2] || *end != '\0' || target < 3 || target > 1023 ||
      strlen(argv[1]) == 0 || strlen(argv[1]) >= IFNAMSIZ) {
    fprintf(stderr, "usage: qvm-tap-open IFNAME FD -- COMMAND [ARG...]   (FD 3-1023)\n");
    return 2;
  }
  const char *ifname = argv[1];
  if (if_nametoindex(ifname) == 0) {
    fprintf(stderr, "qvm-tap-open: no network device %s in this network namespace: make it with `ip tuntap add dev %s mode tap`\n", ifname, ifname);
    return 1;
  }
  int fd = open("/dev/net/tun", O_RDWR); /* no O_CLOEXEC: COMMAND inherits it */
  if (fd < 0) return fail("/dev/net/tun", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    if (errno == EINVAL) return fail(ifname, "not a tap device (ip tuntap add dev NAME mode tap makes one)");
    if (errno == EBUSY) return fail(ifname, "in use: another process holds this tap");
    return fail(ifname, strerror(errno));
  }
  /* TUNSETIFF creates a device it does not find: if the one checked above went away meanwhile,
     this one is new and not persistent, and closing it removes it. */
  if (ioctl(fd, TUNGETIFF, &ifr) != 0) return fail(ifname, strerror(errno));
  if (!(ifr.ifr_flags & IFF_PERSIST)) return fail(ifname, "disappeared while being opened");
  if (fd != target) {
    if (dup2(fd, (int)target) < 0) return fail(ifname, strerror(errno));
    close(fd);
  }
  execvp(argv[4], argv + 4);
  fprintf(stderr, "qvm-tap-open: cannot run %s: %s\n", argv[4], strerror(errno));
  return 127;
}
